"""`flowplane run` as a subprocess, talking sd_notify to a socket the test owns."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowplane.control import request
from flowplane.testing import write_pcap

from frames import eth_ipv4_udp  # real frames, built with struct

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp: Path, filter_name: str) -> str:
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json, level: info}}
interfaces:
  replay0:
    source: pcap
    file: {tmp}/in.pcap
    family inet:
      filter input: {filter_name}
firewall:
  family inet:
    filter {filter_name}:
      term udp:
        from: {{protocol: [udp]}}
        then: {{count: udp-count, accept: true}}
      term rest:
        then: discard
"""


class Notify:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(msg)
            if needle in msg.split("\n"):
                return msg
        raise AssertionError(f"no {needle} within {timeout}s; got {self.messages}")


@pytest.fixture
def service(tmp_path):
    frames = [eth_ipv4_udp(sport=1000 + i, dport=53) for i in range(300)]
    write_pcap(str(tmp_path / "in.pcap"), frames)
    cfg = tmp_path / "flowplane.yaml"
    cfg.write_text(_config(tmp_path, "first"))
    notify = Notify(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000",
               PYTHONUNBUFFERED="1")
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "stdout.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    try:
        yield proc, notify, cfg, tmp_path, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _events(log) -> list[dict]:
    log.flush()
    log.seek(0)
    return [json.loads(line) for line in log.read().splitlines() if line.startswith("{")]


def _show_firewall(tmp: Path) -> dict:
    reply = request(str(tmp / "control.sock"), ["show", "firewall"], fmt="json")
    assert reply["ok"], reply
    return reply["data"]


def test_ready_reload_bad_reload_stop(service):
    proc, notify, cfg, tmp, log = service
    ready = notify.wait_for("READY=1")
    assert "STATUS=" in ready
    notify.wait_for("WATCHDOG=1")
    # the replay of 300 UDP packets goes through filter "first"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = _show_firewall(tmp)
        if json.dumps(data).count("300"):
            break
        time.sleep(0.1)
    assert "first" in json.dumps(data) and "300" in json.dumps(data)

    # good reload: filter renamed
    cfg.write_text(_config(tmp, "second"))
    proc.send_signal(signal.SIGHUP)
    msg = notify.wait_for("RELOADING=1")
    usec = int([kv for kv in msg.split("\n") if kv.startswith("MONOTONIC_USEC=")][0].split("=")[1])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
    notify.wait_for("READY=1")
    assert "second" in json.dumps(_show_firewall(tmp))

    # bad reload: rejected, old config keeps running
    cfg.write_text(_config(tmp, "third").replace("protocol: [udp]", "protocol: [udpp]"))
    proc.send_signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    notify.wait_for("READY=1")
    fw = json.dumps(_show_firewall(tmp))
    assert "second" in fw and "third" not in fw
    rejected = [e for e in _events(log) if e["event"] == "reload_rejected"]
    assert len(rejected) == 1 and any("udpp" in line for line in rejected[0]["errors"])
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert proc.wait(timeout=30) == 0
    events = [e["event"] for e in _events(log)]
    assert "service_ready" in events and "reload_done" in events and events[-1] == "service_stopped"
    assert not os.path.exists(tmp / "control.sock")


def test_exit_on_eof_prints_reports(tmp_path):
    frames = [eth_ipv4_udp(sport=1000 + i, dport=53) for i in range(50)]
    write_pcap(str(tmp_path / "in.pcap"), frames)
    cfg = tmp_path / "f.yaml"
    cfg.write_text(_config(tmp_path, "only"))
    r = subprocess.run([sys.executable, "-m", "flowplane", "run", "-c", str(cfg), "--exit-on-eof"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Filter: only" in r.stdout
    assert "Service Accounting interface: replay0" in r.stdout
    assert "Packets received: 50, Packets decoded: 50" in r.stdout


def test_bad_config_exits_nonzero_without_ready(tmp_path):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("system:\n  batch-size: nope\n")
    notify = Notify(tmp_path / "n.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "n.sock"))
    r = subprocess.run([sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 1
    assert f"{cfg}:2:3: system batch-size: expected an integer, got 'nope'" in r.stderr
    with pytest.raises(AssertionError):
        notify.wait_for("READY=1", timeout=0.5)

"""A config that validates but cannot be applied on this box: the real service, one clear line, no traceback.

192.0.2.55 (TEST-NET-1) is only ever a bind target here: nothing is sent to it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from flowplane.testing import ServiceProcess, wait_until

UNBINDABLE = "192.0.2.55"


def _write(path: Path, sock: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump({"system": {"control-socket": str(sock)}, **sections}))
    return path


def _run(config: Path, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowplane", *extra, "run", "-c", str(config)] if not extra else
                          [sys.executable, "-m", "flowplane", *extra], capture_output=True, text=True, timeout=timeout)


def _one_line_failure(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _collector(address: str, port: int = 0) -> dict:
    return {"flow-collector": {"listen": [{"address": address, "port": port}]}}


def test_start_that_cannot_bind_exits_with_one_line(tmp_path):
    cfg = _write(tmp_path / "c.yaml", tmp_path / "c.sock", services=_collector(UNBINDABLE, 2055))
    line = _one_line_failure(_run(cfg), "cannot start", f"{UNBINDABLE}:2055/udp")
    assert line.startswith("flowplane: cannot start: flow collector cannot listen on 192.0.2.55:2055/udp")


def test_reload_that_cannot_bind_keeps_the_old_config(tmp_path):
    sock = tmp_path / "c.sock"
    cfg = _write(tmp_path / "c.yaml", sock, services=_collector("127.0.0.1"))
    with ServiceProcess(cfg, sock) as svc:
        svc.wait_ready()
        assert svc.show("services", "flow-collector")["data"]["listeners"][0]["bound"][0] == "127.0.0.1"
        _write(cfg, sock, services=_collector(UNBINDABLE, 2055))
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload_restored" in svc.output(), 20, 0.05, what="the reload to be rejected")
        out = svc.output()
        assert "reload_rejected" in out and f"{UNBINDABLE}:2055/udp" in out
        assert "Traceback" not in out
        assert svc.proc.poll() is None
        listener = svc.show("services", "flow-collector")["data"]["listeners"][0]
        assert listener["listen"] == "udp:127.0.0.1:0" and listener["bound"][0] == "127.0.0.1"
        port = listener["bound"][1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the old listener still collects
            s.sendto(b"\x00\x05" + b"\x00" * 22, ("127.0.0.1", port))
        wait_until(lambda: svc.show("services", "flow-collector")["data"]["datagrams"] >= 1, 10, 0.05,
                   what="the datagram to reach the restored collector")
        # and a good reload afterwards applies
        _write(cfg, sock, services=_collector("127.0.0.1"))
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload_done" in svc.output(), 20, 0.05, what="the good reload")
        assert svc.stop() == 0


def test_control_socket_in_use_is_one_line(tmp_path):
    sock = tmp_path / "c.sock"
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(sock))
    busy.listen()
    try:
        cfg = _write(tmp_path / "c.yaml", sock, services=_collector("127.0.0.1"))
        _one_line_failure(_run(cfg), f"control socket {sock} is in use")
    finally:
        busy.close()


def test_missing_interface_is_one_line(tmp_path):
    cfg = _write(tmp_path / "c.yaml", tmp_path / "c.sock", interfaces={"nosuch9": {"source": "af-packet"}})
    _one_line_failure(_run(cfg), "cannot start", "nosuch9")


def test_twamp_port_in_use_names_the_address(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _write(tmp_path / "c.yaml", tmp_path / "c.sock",
                     services={"rpm": {"twamp": {"server": {"port": port, "listen-address": "127.0.0.1"}}}})
        _one_line_failure(_run(cfg), f"TWAMP server cannot listen on 127.0.0.1:{port}", "in use")


def test_replay_of_a_missing_pcap_is_one_line(tmp_path):
    missing = tmp_path / "nosuch.pcap"
    proc = _run(tmp_path, "replay", "--export", "127.0.0.1:9", str(missing))
    _one_line_failure(proc, f"cannot read {missing}", "No such file")

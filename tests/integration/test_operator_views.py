"""What an operator looks at: `flowplane top` on a running service, and the replay progress bar on a TTY."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

from flowplane.control import request

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "samples" / "sample.pcap"


def test_top_shows_the_biggest_flows(tmp_path):
    cfg = tmp_path / "f.yaml"
    cfg.write_text(f"""\
system:
  control-socket: {tmp_path}/control.sock
  log: {{format: json}}
interfaces:
  replay0: {{source: pcap, file: {SAMPLE}, speed: 0, family any: {{filter input: all}}}}
firewall:
  family any:
    filter all:
      term t:
        then: {{sample: true, accept: true}}
forwarding-options:
  sampling:
    input: {{rate: 1}}
    family inet:
      output:
        flow-server 127.0.0.1: {{port: 9, version: 5}}
        flow-active-timeout: 600
        flow-inactive-timeout: 600
""")
    proc = subprocess.Popen([sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        sock = tmp_path / "control.sock"
        deadline = time.monotonic() + 60
        flows: list = []
        previous = None
        # the replay runs as fast as it can and the timeouts are long, so the cache settles: wait until two
        # snapshots agree, then the biggest flow cannot change under `top` (a busy machine only slows this)
        while time.monotonic() < deadline:
            try:  # the socket file appears at bind(), a moment before listen()
                reply = request(str(sock),
                                ["show", "services", "accounting", "flow-detail", "limit", "5", "order", "bytes"],
                                fmt="json")
            except (FileNotFoundError, ConnectionRefusedError):
                reply = {"ok": False}
            current = reply["data"]["instances"][0]["flows"] if reply["ok"] else None
            if current and current == previous:
                flows = current
                break
            previous = current
            time.sleep(0.3)
        assert flows, "no settled flow cache to show"
        r = subprocess.run([sys.executable, "-m", "flowplane", "top", "--once", "--limit", "5", "-s", str(sock)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("flowplane top — instance (default sampling)")
        assert lines[1].split()[:3] == ["proto", "source", "destination"]
        body = lines[2:7]
        assert 1 <= len([b for b in body if b.strip()]) <= 5
        assert flows[0]["source"] in r.stdout  # the biggest flow is on screen
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_replay_progress_bar_on_a_tty(tmp_path):
    pid, fd = pty.fork()
    if pid == 0:  # child: stderr is the terminal
        os.execv(sys.executable, [sys.executable, "-m", "flowplane", "replay", str(SAMPLE), "--export", "127.0.0.1:9",
                                  "--version", "5", "--speed", "20"])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "[" in text and "%" in text and "100.0%" in text
    assert "20,020 packets" in text

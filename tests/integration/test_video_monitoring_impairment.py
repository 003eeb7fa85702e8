"""Video monitoring under a delay line: DF rises with the hold time and the DF alarm is raised and
cleared at the configured levels.

ffmpeg (Debian) in ns B sends the paced CBR MPEG-TS stream to a delay line in the test (a UDP relay in
ns B, on loopback there), which forwards it over the veth to ns A, where `flowplane run` captures it
(AF_PACKET).  The delay line works like a congested queue: in every 200 ms it holds what arrives during
the first H ms and releases it at once, in order (no loss, no reordering), so DF is about H plus one
datagram.  H steps 0 -> 50 -> 100 -> 0 ms; the test checks the per-interval DF flowplane reports
(``mdi flows detail --json``) and the ``video_monitoring_alarm`` log records (warning at 40 ms,
critical at 80 ms): raised at warning, then critical, and cleared at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowplane.control import request

from netns import NotifySocket

PORT = 5000
RELAY_PORT = 6000
WARNING_MS = 40
CRITICAL_MS = 80

pytestmark = [pytest.mark.netns, pytest.mark.peer,
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")]

FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
          "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-c:v", "mpeg2video", "-b:v", "2M",
          "-minrate", "2M", "-maxrate", "2M", "-bufsize", "500k", "-c:a", "mp2", "-b:a", "128k",
          "-f", "mpegts", "-muxrate", "3M", "-pcr_period", "20", "-flush_packets", "0", "-t", "25",
          f"udp://127.0.0.1:{RELAY_PORT}?pkt_size=1316&bitrate=3000000&burst_bits=10528"]

DELAY_LINE = r"""
import select, socket, sys, time
listen, dst, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
rx.bind(("127.0.0.1", listen))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx.connect((dst, port))
CYCLE = 0.2
hold, queue, forwarded = 0.0, [], 0
print("ready", flush=True)
while True:
    now = time.monotonic()
    phase = now % CYCLE
    release = now - phase + hold
    if queue and (hold == 0 or phase >= hold):
        for d in queue:
            tx.send(d)
        forwarded += len(queue)
        queue = []
    timeout = max(0.0, release - now) if queue else 0.5
    r = select.select([rx, sys.stdin], [], [], timeout)[0]
    if sys.stdin in r:
        line = sys.stdin.readline()
        if not line:
            break
        hold = float(line) / 1000.0
        print("hold", line.strip(), forwarded, flush=True)
    if rx in r:
        d = rx.recv(65535)
        now = time.monotonic()
        if hold > 0 and now % CYCLE < hold:
            queue.append(d)
        else:
            for q in queue:
                tx.send(q)
            forwarded += len(queue)
            queue = []
            tx.send(d)
            forwarded += 1
"""

SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    s.recv(65535)
"""


def _config(tmp: Path, ifname: str) -> str:
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json}}
interfaces:
  {ifname}:
    source: af-packet
    direction: input
    block-timeout: 5
    family inet:
      input-flows video:
        destination-port: {PORT}
        template: t1
services:
  video-monitoring:
    templates t1:
      interval-duration: 1
      inactive-timeout: 30
      rate media: 2972400
      delay-factor threshold:
        warning: {WARNING_MS}
        critical: {CRITICAL_MS}
      media-loss-rate:
        disable: true
      media-rate-variation:
        disable: true
"""


def _intervals(sock: str) -> list[dict]:
    flows = request(sock, ["show", "services", "video-monitoring", "mdi", "flows", "detail"], fmt="json")["data"]
    return flows["flows"][0]["history"] if flows["flows"] else []


def _wait_intervals(sock: str, n: int, timeout: float = 30.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hist = _intervals(sock)
        if len(hist) >= n:
            return hist
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} intervals within {timeout} s: {_intervals(sock)}")


def _wait_line(stream, needle: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if needle in line:
            return
        if not line:
            time.sleep(0.05)
    raise AssertionError(f"no {needle!r}")


def _hold(line, ms: int) -> None:
    line.stdin.write(f"{ms}\n")
    line.stdin.flush()
    _wait_line(line.stdout, f"hold {ms}")


def test_df_follows_the_hold_time_and_the_alarm_is_raised_and_cleared(netns_pair, tmp_path):
    p = netns_pair
    cfg = tmp_path / "flowplane.yaml"
    cfg.write_text(_config(tmp_path, p.veth_a))
    sock = str(tmp_path / "control.sock")
    sink = p.popen(p.ns_a, [sys.executable, "-c", SINK, p.addr_a, str(PORT)])
    line = p.popen(p.ns_b, [sys.executable, "-c", DELAY_LINE, str(RELAY_PORT), p.addr_a, str(PORT)],
                   stdin=subprocess.PIPE)
    notify = NotifySocket(tmp_path / "notify.sock")
    log_path = tmp_path / "out.log"
    log = open(log_path, "w")
    proc = ff = None
    marks = []
    try:
        _wait_line(sink.stdout, "ready")
        _wait_line(line.stdout, "ready")
        proc = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], env=notify.env(),
                       stdout=log, stderr=subprocess.STDOUT)
        notify.wait("READY=1")
        ff = p.popen(p.ns_b, FFMPEG)
        n = len(_wait_intervals(sock, 3))
        for hold in (50, 100, 0):
            _hold(line, hold)
            marks.append(n)
            n = len(_wait_intervals(sock, n + 4))
        hist = _intervals(sock)
        proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        for pr in (ff, proc, sink, line):
            if pr is not None and pr.poll() is None:
                pr.kill()
                pr.wait()
        log.close()
        notify.close()
    df = [round(r["df_ms"], 1) for r in hist]
    print("DF per interval (ms):", df, "hold changes after intervals", marks)
    # the interval in which the hold changes mixes two regimes: judge the ones after it
    clean = df[1:marks[0]]
    h50 = df[marks[0] + 1:marks[1]]
    h100 = df[marks[1] + 1:marks[2]]
    after = df[marks[2] + 1:]
    assert max(clean) < WARNING_MS and max(after) < WARNING_MS, df
    assert all(45 <= x < CRITICAL_MS for x in h50), df
    assert all(95 <= x < 150 for x in h100), df
    assert all(r["mlr"] == 0 for r in hist), [r["mlr"] for r in hist]  # a delay line loses nothing
    events = [json.loads(x) for x in log_path.read_text().splitlines() if "video_monitoring_alarm" in x]
    seq = [(e["action"], e["severity"]) for e in events if e["metric"] == "df"]
    assert seq[0] == ("raised", "warning") and ("raised", "critical") in seq, seq
    assert seq[-1][0] == "cleared", seq
    assert all(e["metric"] == "df" for e in events), events
    critical = next(e for e in events if e["severity"] == "critical")
    assert critical["level"] == "critical" and critical["threshold"] == CRITICAL_MS  # logged at its level

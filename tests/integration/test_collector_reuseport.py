"""Two ``flowplane collect`` worker processes sharing one UDP port (SO_REUSEPORT), and kernel drops shown.

Everything runs on the loopback of a network namespace the test creates
(``netns_pair``; only its ``ns_a`` is used), so the ``Udp`` counters of
``/proc/net/snmp`` there are ours alone.

* Shared port: two workers bind the same port; 32 sender sockets (the kernel
  spreads datagrams by 4-tuple hash) send NetFlow v5 datagrams paced well
  below the workers' rate.  The two workers' datagrams add up to exactly what
  was sent, both got some, and every record was decoded.
* Kernel drops: one worker with the smallest receive buffer is stopped
  (SIGSTOP) while datagrams arrive, then resumed: its summary shows the
  kernel drops (the socket's ``/proc/net/udp`` drops column, kept when the
  socket closes), and datagrams received + kernel drops == datagrams sent ==
  the namespace's ``RcvbufErrors`` delta + received.
"""

from __future__ import annotations

import pickle
import re
import signal
import struct
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLOWPLANE = [sys.executable, "-m", "flowplane"]

SENDER = r"""
import pickle, socket, sys, time
dgrams = pickle.load(open(sys.argv[1], "rb"))
port, sockets, pace = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
for i, d in enumerate(dgrams):
    socks[i % sockets].sendto(d, ("127.0.0.1", port))
    if pace:
        time.sleep(pace)
print(len(dgrams))
"""


def v5_datagrams(n: int, records: int = 30) -> list[bytes]:
    """*n* NetFlow v5 datagrams of *records* records each (sequence numbers consecutive)."""
    out = []
    for i in range(n):
        hdr = struct.pack(">HHIIIIBBH", 5, records, 3_600_000, 1_700_000_000, 0, i * records, 0, 0, 0)
        recs = b"".join(struct.pack(">IIIHHIIIIHHBBBBHHBBH", 0x0A000001 + r, 0xC0A80001 + i, 0, 1, 2, 10, 1000,
                                    3_500_000, 3_599_000, 1024 + r, 80, 0, 0x18, 6, 0, 0, 0, 24, 24, 0)
                        for r in range(records))
        out.append(hdr + recs)
    return out


SUMMARY_RE = re.compile(r"(\d+) datagrams, (\d+) flow records")


def start_worker(p, port: int, *extra: str):
    proc = p.popen(p.ns_a, FLOWPLANE + ["collect", "--listen", f"udp:127.0.0.1:{port}", *extra], cwd=str(REPO))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"worker exited: {proc.wait()} {proc.stderr.read()}")
        if line.startswith("listening on udp:"):
            return proc
    raise AssertionError("worker did not bind in time")


def stop_worker(proc) -> tuple[int, int, int]:
    """SIGTERM; (datagrams, records, kernel drops) from its summary."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    m = SUMMARY_RE.search(out)
    assert m, out
    k = re.search(r"kernel drops: (\d+)", out)
    return int(m.group(1)), int(m.group(2)), int(k.group(1)) if k else 0


def free_port(p) -> int:
    r = p.run(p.ns_a, [sys.executable, "-c",
                       "import socket;s=socket.socket(2,2);s.bind(('127.0.0.1',0));print(s.getsockname()[1])"])
    return int(r.stdout)


def rcvbuf_errors(p) -> int:
    lines = [x.split() for x in p.run(p.ns_a, ["cat", "/proc/net/snmp"]).stdout.splitlines() if x.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def send(p, tmp_path: Path, dgrams: list[bytes], port: int, sockets: int, pace: float) -> None:
    f = tmp_path / "dgrams.pickle"
    f.write_bytes(pickle.dumps(dgrams))
    r = p.run(p.ns_a, [sys.executable, "-c", SENDER, str(f), str(port), str(sockets), str(pace)], timeout=120)
    assert int(r.stdout) == len(dgrams)


@pytest.mark.netns
def test_two_workers_share_a_port_and_get_every_datagram(netns_pair, tmp_path):
    p = netns_pair
    port = free_port(p)
    workers = [start_worker(p, port), start_worker(p, port)]
    try:
        before = rcvbuf_errors(p)
        dgrams = v5_datagrams(3000)
        send(p, tmp_path, dgrams, port, sockets=32, pace=0.0002)
        time.sleep(1.0)
    finally:
        results = [stop_worker(w) for w in workers]
    assert rcvbuf_errors(p) == before
    got = [r[0] for r in results]
    assert sum(got) == len(dgrams)  # exact: nothing lost, nothing twice
    assert all(g > 0 for g in got), got  # the kernel spread the 32 senders over both workers
    assert sum(r[1] for r in results) == 30 * len(dgrams)
    assert all(r[2] == 0 for r in results)


@pytest.mark.netns
def test_kernel_drops_are_counted_and_shown(netns_pair, tmp_path):
    p = netns_pair
    port = free_port(p)
    w = start_worker(p, port, "--receive-buffer", "65536")
    try:
        before = rcvbuf_errors(p)
        w.send_signal(signal.SIGSTOP)  # the worker cannot read: the socket buffer fills, the kernel drops
        try:
            dgrams = v5_datagrams(2000)
            send(p, tmp_path, dgrams, port, sockets=4, pace=0)
        finally:
            w.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        kernel = rcvbuf_errors(p) - before
    finally:
        datagrams, records, drops = stop_worker(w)
    assert drops > 0 and kernel > 0
    assert drops == kernel  # the worker's summary shows what the kernel counted for its socket
    assert datagrams + drops == len(dgrams)  # every datagram is either received or counted as dropped
    assert records == 30 * datagrams

"""TWAMP interop over loopback: nokia/twampy's sender against our Light reflector, our Light sender
(``run_light``) against the twampy responder, and perfSONAR twping against our full server in open,
authenticated and encrypted modes.

twampy is not on PyPI and is never vendored here: the tests copy it from a fetched snapshot to a
temporary directory at run time (``$FLOWPLANE_TWAMPY``, or a mirror under ``/work/.mirror``; see
``tests/bench/bench_twamp.py`` :func:`twampy_source`) and skip cleanly when there is none.  twping is
perfSONAR owamp's C client (neither Debian nor PyPI has it): built by hand from a fetched snapshot
(perfsonar/owamp with perfsonar/i2util as ``I2util``; ``./bootstrap && ./configure && make``, needs
autoconf, automake, libtool) and found through ``$FLOWPLANE_TWPING`` or PATH; skipped otherwise.
Nothing touches the network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.client import run_light
from flowplane.plugins.twamp.config import LightConfig, ServerConfig
from flowplane.plugins.twamp.light import LightReflector
from flowplane.plugins.twamp.server import TwampServer
from flowplane.plugins.twamp.udp import ClockStatus

pytestmark = pytest.mark.peer

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_twamp.py"


def _bench():
    if "bench_twamp" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_twamp", BENCH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_twamp"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_twamp"]


@pytest.fixture(scope="module")
def twampy():
    bt = _bench()
    with bt.twampy_source() as tw:
        if tw is None:
            pytest.skip(f"twampy not available (set ${bt.TWAMPY_ENV} or fetch nokia/twampy)")
        yield tw


def _stats_rows(text: str) -> dict[str, list[str]]:
    """twampy's table: 'Outbound:', 'Inbound:', 'Roundtrip:' rows -> their fields (min max avg jitter loss%)."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*(Outbound|Inbound|Roundtrip):\s+(.*)$", line)
        if m:
            rows[m.group(1)] = re.findall(r"-?[\d.]+\s*(?:min|sec|ms|us|%)", m.group(2))
    return rows


@pytest.mark.parametrize("mode", ["per-sender", "stateless"])
async def test_twampy_sender_against_our_light_reflector(twampy, mode):
    bt = _bench()
    count = 20
    r = LightReflector(LightConfig(port=0, address="127.0.0.1", mode=mode))
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(r.run))[1]
        near = bt.free_udp_port()
        proc = await trio.run_process(
            [*twampy.argv, "sender", f"127.0.0.1:{port}", f"127.0.0.1:{near}", "-c", str(count), "-i", "10",
             "--padding", "27", "-q"], cwd=twampy.cwd, capture_stdout=True, capture_stderr=True, check=False)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = _stats_rows(out)
    assert set(rows) == {"Outbound", "Inbound", "Roundtrip"}, out
    for name, fields in rows.items():
        assert fields[-1].replace(" ", "") == "0.0%", (name, out)  # no loss in any direction, as twampy sees it
    assert r.counters["received"] == r.counters["reflected"] == count
    (sender,) = r.senders.values()
    assert sender.port == near and sender.received == sender.reflected == count and sender.last_ttl == 64
    assert sender.seq == (count if mode == "per-sender" else 0)


async def test_our_light_sender_against_twampy_responder(twampy):
    bt = _bench()
    port = bt.free_udp_port()
    proc = twampy.popen(["responder", f"127.0.0.1:{port}", "-q"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    try:
        res = None
        for _ in range(50):  # until the responder is bound and answers
            res = await run_light("127.0.0.1", port, count=1, interval_ms=1, wait=0.2)
            if res.stats()["received"]:
                break
            assert proc.poll() is None, proc.communicate()
        res = await run_light("127.0.0.1", port, count=20, interval_ms=10, wait=2.0)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    st = res.stats()
    assert (st["sent"], st["received"], st["lost"], st["duplicates"], st["reordered"]) == (20, 20, 0, 0, 0)
    # twampy's responder numbers a new sender address from 0 and sends 38-byte replies (no MBZ/TTL octets)
    assert [s.reflector_seq for s in res.samples] == list(range(20))
    assert all(s.sender_ttl == 0 for s in res.samples)
    assert all(s.t1 <= s.t2 == s.t3 <= s.t4 for s in res.samples)  # one user-space time in T2 and T3
    assert st["rtt_us"]["samples"] == 20 and st["rtt_us"]["min"] > 0
    assert st["reflector_processing_us"]["max"] == 0


async def test_twampy_responder_reply_layout_parses(twampy):
    """twampy's 38-byte reply (the 41-byte layout without MBZ and TTL) read field by field."""
    bt = _bench()
    port = bt.free_udp_port()
    proc = twampy.popen(["responder", f"127.0.0.1:{port}", "-q"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    try:
        t1 = wire.now_ntp()
        pkt = wire.pack_sender(wire.SenderPacket(7, t1, 0x3FFF, bytes(27)))
        data = None
        for _ in range(50):
            await sock.sendto(pkt, ("127.0.0.1", port))
            with trio.move_on_after(0.2):
                data = await sock.recv(2048)
                break
        assert data is not None, "the twampy responder never answered"
    finally:
        sock.close()
        proc.terminate()
        proc.communicate(timeout=10)
    assert len(data) == 38
    r = wire.unpack_reflector(data)
    assert (r.seq, r.sender_seq, r.sender_timestamp, r.sender_error_estimate) == (0, 7, t1, 0x3FFF)
    assert r.timestamp == r.receive_timestamp and r.receive_timestamp >= t1 - (1 << 20)


# -- perfSONAR twping -> our full TWAMP server ----------------------------------------------------------


@pytest.fixture(scope="module")
def twping():
    """perfSONAR's twping (owamp), built from a fetched snapshot: ``$FLOWPLANE_TWPING`` or on PATH."""
    path = os.environ.get("FLOWPLANE_TWPING") or shutil.which("twping")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("perfSONAR twping not available (set $FLOWPLANE_TWPING to a built binary)")
    return path


RAW_FIELDS = "SSEQ STIME SS SERR SRTIME SRS SRERR STTL RSEQ RSTIME RSS RSERR RTIME RS RERR RTTL".split()


@pytest.mark.parametrize("mode", ["O", "A", "E"])
async def test_twping_against_our_server(twping, tmp_path, mode):
    """twping (open, authenticated, encrypted; user alice, passphrase testsecret) against our server:
    every probe reflected, per-session sequence numbers, the TTL it sent (255) copied, T1 <= T2 <= T3
    <= T4 on one host clock, and the S bit / error estimate it reads are our honest ones."""
    pfs = tmp_path / "alice.pfs"
    pfs.write_text("alice\t" + b"testsecret".hex() + "\n")  # I2util's pfstore format: identity TAB hex
    count = 20
    server = TwampServer(ServerConfig(port=0, address="127.0.0.1", modes=7, secrets={"alice": b"testsecret"}))
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(server.run))[1]
        proc = await trio.run_process([twping, "-c", str(count), "-i", "0.01", "-A", mode, "-u", "alice",
                                       "-k", str(pfs), "-R", f"127.0.0.1:{port}"],
                                      capture_stdout=True, capture_stderr=True, check=False)
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = [dict(zip(RAW_FIELDS, line.split())) for line in proc.stdout.decode().splitlines() if line.strip()]
    assert len(rows) == count
    assert [int(r["SSEQ"]) for r in rows] == list(range(count)) == [int(r["RSEQ"]) for r in rows]
    synced = ClockStatus().synchronised
    err_s = ClockStatus().as_dict()["error_seconds"]
    for r in rows:
        t1, t2, t3, t4 = (int(r[k]) for k in ("STIME", "SRTIME", "RSTIME", "RTIME"))
        assert t1 <= t2 <= t3 <= t4
        assert int(r["STTL"]) == 255  # the TTL twping sent, as our reflector received and copied it
        assert int(r["SRS"]) == int(r["RSS"]) == int(synced)
        assert float(r["SRERR"]) == pytest.approx(err_s, rel=0.01)
    (sess,) = server.sessions
    assert sess.reflected == sess.received == count and not sess.dropped
    assert server.counters["start-sessions"] == 1 and server.counters["session-requests"] == 1

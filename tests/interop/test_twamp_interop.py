"""TWAMP Light interop with nokia/twampy over loopback: the twampy sender against our Light reflector,
and our Light sender (``run_light``) against the twampy responder.

twampy is not on PyPI and is never vendored here: the tests copy it from a fetched snapshot to a
temporary directory at run time (``$FLOWPLANE_TWAMPY``, or a mirror under ``/work/.mirror``; see
``tests/bench/bench_twamp.py`` :func:`twampy_source`) and skip cleanly when there is none.  Nothing
touches the network.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.client import run_light
from flowplane.plugins.twamp.config import LightConfig
from flowplane.plugins.twamp.light import LightReflector

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

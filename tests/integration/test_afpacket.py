"""AF_PACKET TPACKET_V3 source on a real veth pair between two network namespaces.

The capture runs in a subprocess inside a namespace (``ip netns exec``): it
starts the source, prints ``READY``, counts the frames that carry our UDP
port and payload sequence numbers, and prints its counters as JSON.  The
sender is another subprocess in the peer namespace sending exactly N
datagrams.  No mocks; all traffic stays inside the two namespaces.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import pytest

from flowplane.interfaces import InterfaceTable
from flowplane.sources import SourceContext

try:  # tests/integration as a package or as a rootdir-inserted directory
    from .netns import make_netns_pair, skip_reason
except ImportError:
    from netns import make_netns_pair, skip_reason

pytestmark = pytest.mark.netns

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N = 5000
PORT = 47001

# Runs inside a namespace: argv = device, config JSON, expected count, port, timeout
CAPTURE = r"""
import importlib, importlib.util, json, os, sys
import numpy as np, trio
from flowplane.interfaces import InterfaceTable
from flowplane.sources import SourceContext

def load():
    try:
        return importlib.import_module("flowplane.plugins.sources.afpacket")
    except ModuleNotFoundError:  # while core/plugins.py shadows the flowplane.plugins package
        spec = importlib.util.spec_from_file_location("_afpacket", os.path.join(ROOT, "plugins/sources/afpacket.py"))
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); return mod

dev, cfg = sys.argv[1], json.loads(sys.argv[2])
expected, port, timeout = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
mod = load()
src = mod.AfPacketSource(SourceContext(name=dev, config=cfg, iface_id=7, interfaces=InterfaceTable(), batch_size=256))
seen = []
dirs = {0: 0, 1: 0}
linktypes = set()

async def main():
    send, recv = trio.open_memory_channel(64)
    async with trio.open_nursery() as nursery:
        await nursery.start(src.run, send)
        print("READY", flush=True)
        with trio.move_on_after(timeout):
            async for b in recv:
                linktypes.add(b.linktype)
                d, o, cap = b.data, b.offset, b.caplen
                ok = cap >= 46
                o = o[ok]
                ipv4 = (d[o + 12] == 8) & (d[o + 13] == 0) & (d[o + 23] == 17) & (d[o + 14] == 0x45)
                o2 = o[ipv4]
                dport = d[o2 + 36].astype(np.int64) * 256 + d[o2 + 37]
                mine = dport == port
                o3 = o2[mine]
                seq = ((d[o3 + 42].astype(np.int64) << 24) | (d[o3 + 43].astype(np.int64) << 16)
                       | (d[o3 + 44].astype(np.int64) << 8) | d[o3 + 45])
                seen.extend(seq.tolist())
                dd = b.direction[ok][ipv4][mine]
                dirs[0] += int((dd == 0).sum()); dirs[1] += int((dd == 1).sum())
                assert int(b.iface[0]) == 7 and b.ts.dtype == np.int64
                if len(seen) >= expected:
                    break
        await trio.sleep(0.2)  # let the stats task run once more after the burst
        nursery.cancel_scope.cancel()

trio.run(main)
snap = src.counters.snapshot()
print(json.dumps({"matched": len(seen), "unique": len(set(seen)), "min": min(seen, default=-1),
                  "max": max(seen, default=-1), "dirs": dirs, "linktypes": sorted(linktypes), **snap}), flush=True)
""".replace("ROOT", repr(ROOT))

SENDER = r"""
import socket, struct, sys, time
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
for i in range(n):
    s.sendto(struct.pack("!I", i) + b"flowplane-afpacket-test", (dst, port))
    if i % 200 == 199:
        time.sleep(0.002)  # stay below the veth backlog; bounded: ~50 ms per 5000
print("SENT", n, flush=True)
"""


def start_capture(pair, ns, dev, cfg, expected, timeout=20.0):
    proc = pair.popen(ns, [sys.executable, "-c", CAPTURE, dev, json.dumps(cfg), str(expected), str(PORT), str(timeout)],
                      cwd=ROOT)
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"capture in {ns} did not start: {line}{out}\n{err}")
    return proc


def promiscuity(pair, ns, dev) -> int:
    out = pair.run(ns, ["ip", "-d", "link", "show", "dev", dev]).stdout
    words = out.split()
    return int(words[words.index("promiscuity") + 1])


def finish(proc, timeout=40):
    try:
        out, err = proc.communicate(timeout=timeout)
    except Exception:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"capture did not finish: {out}\n{err}")
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_capture_exactly_n_udp_frames(netns_pair):
    p = netns_pair
    # receiver: promiscuous, input only; sender side: output only (direction from sll_pkttype)
    rx = start_capture(p, p.ns_a, p.veth_a, {"promiscuous": True, "direction": "input", "ring-size": "8MiB",
                                              "block-size": "256KiB"}, N)
    try:
        tx = start_capture(p, p.ns_b, p.veth_b, {"direction": "output", "fanout": 7}, N)
        try:
            # a packet-socket membership raises the device's promiscuity count (``ip -d link``);
            # the PROMISC flag word only shows what `ip link set promisc on` set
            assert promiscuity(p, p.ns_a, p.veth_a) == 1
            assert promiscuity(p, p.ns_b, p.veth_b) == 0
            # static neighbour: no ARP needed, nothing else on the wire
            mac = p.run(p.ns_a, ["cat", f"/sys/class/net/{p.veth_a}/address"]).stdout.strip()
            p.run(p.ns_b, ["ip", "neigh", "replace", p.addr_a, "lladdr", mac, "dev", p.veth_b, "nud", "permanent"])
            sent = p.run(p.ns_b, [sys.executable, "-c", SENDER, p.addr_a, str(PORT), str(N)], timeout=60)
            assert sent.stdout.strip() == f"SENT {N}"
            txr = finish(tx)
        finally:
            if tx.poll() is None:
                tx.kill()
        rxr = finish(rx)
    finally:
        if rx.poll() is None:
            rx.kill()
    for r in (rxr, txr):
        assert r["matched"] == N and r["unique"] == N and (r["min"], r["max"]) == (0, N - 1), r
        assert r["linktypes"] == [1]
        c = r["counters"]
        assert c["packets"] >= N and c["batches"] >= 1 and c["bytes"] >= N * (14 + 20 + 8 + 27)
        assert c["kernel_packets"] >= N, c
        assert c["kernel_drops"] == 0 and r["drops"] == []
    assert rxr["dirs"] == {"0": N, "1": 0}
    assert txr["dirs"] == {"0": 0, "1": N}
    # promiscuous mode ends with the socket
    assert promiscuity(p, p.ns_a, p.veth_a) == 0


def _load():
    import importlib
    import importlib.util

    try:
        return importlib.import_module("flowplane.plugins.sources.afpacket")
    except ModuleNotFoundError:  # while core/plugins.py shadows the flowplane.plugins package
        spec = importlib.util.spec_from_file_location("_afpacket", os.path.join(ROOT, "plugins/sources/afpacket.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def test_missing_interface_is_a_clear_error():
    afp = _load()
    ctx = SourceContext(name="fpnosuch0", config={"source": "af-packet"}, iface_id=1, interfaces=InterfaceTable())
    with pytest.raises(ValueError, match="'fpnosuch0'.*no such network interface"):
        afp.AfPacketSource(ctx)


def test_validate_and_registration():
    afp = _load()
    path = ("interfaces", "eth1")
    assert afp.validate("eth1", {"promiscuous": True, "direction": "both", "ring-size": "16MiB",
                                 "block-size": "1MiB", "fanout": 3, "batch-size": 512}, path) == []
    bad = afp.validate("eth1", {"promiscuous": "yes", "direction": "sideways", "block-size": 3000,
                                "fanout": -1, "batch-size": 0}, path)
    assert [i.path[-1] for i in bad] == ["promiscuous", "direction", "block-size", "fanout", "batch-size"]
    got = {}
    afp.flowplane_register_sources(lambda name, item: got.__setitem__(name, item))
    st = got["af-packet"]
    assert st.name == "af-packet" and "CAP_NET_RAW" in st.capabilities and st.factory is afp.AfPacketSource


@pytest.mark.skipif(skip_reason() is not None, reason="needs root")
async def test_loopback_in_process():
    """The source in this process on a namespace's loopback: Ethernet-framed, zero MACs, both directions."""
    afp = _load()
    import trio



    with make_netns_pair(tag="fl") as p:
        # enter ns A in a worker thread: setns affects only that thread, sockets keep their netns
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        def open_in_ns():
            fd = os.open(f"/var/run/netns/{p.ns_a}", os.O_RDONLY)
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                assert libc.setns(fd, 0) == 0
                src = afp.AfPacketSource(SourceContext(name="lo", config={"direction": "both"}, iface_id=2,
                                                       interfaces=InterfaceTable(), batch_size=64))
                src.open()
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                for i in range(10):
                    s.sendto(b"hello %d" % i, ("127.0.0.1", PORT))
                s.close()
                return src
            finally:
                libc.setns(own, 0)
                os.close(fd)
                os.close(own)

        src = await trio.to_thread.run_sync(open_in_ns)
        try:
            src.cur = 0
            batches = []
            with trio.fail_after(5):
                while sum(bool(f[23] == 17) for b in batches for f in b.frames()) < 20:
                    await trio.lowlevel.wait_readable(src.sock)
                    batches += src.read_blocks()
        finally:
            src.close()
        rows = [(bytes(b.frame(i)), int(b.direction[i])) for b in batches for i in range(len(b))]
        assert all(f[:12] == b"\0" * 12 and f[12:14] == b"\x08\x00" for f, _ in rows)
        # UDP only (no listener: each datagram also draws an ICMP port unreachable)
        dirs = sorted(d for f, d in rows if f[23] == 17)
        assert dirs == [0] * 10 + [1] * 10  # each datagram seen going out and coming in on lo
        assert {b.linktype for b in batches} == {1}
        assert all(b.caplen.tolist() == b.wirelen.tolist() for b in batches)
        now = time.time_ns()
        assert all(abs(int(t) - now) < 60e9 for b in batches for t in b.ts)

#!/usr/bin/env python3
"""Port mirroring: packets per second of the action, and its send rate against a plain AF_PACKET loop.

Usage (as root)::

    python tests/bench/bench_port_mirroring.py [--seconds 2] [--batch 256] [--sizes 64,512,1500]
        [--cpu N] [--json OUT]

The bench creates two network namespaces joined by a veth pair (tests/integration/netns.py),
runs the measurements *inside* namespace A (a child ``ip netns exec A python THIS --inner``),
sends only on that veth (to B, which drops frames not addressed to it), and deletes both
namespaces at the end.  Each row runs for ``--seconds`` on one CPU (``--cpu``):

* ``plain AF_PACKET loop`` -- ``sock.send(frame)`` per frame from a list of prebuilt ``bytes``:
  the simplest Python send loop, the reference the mirror is compared with;
* ``mirror local sendmmsg`` / ``mirror local sendmsg`` -- the ``port-mirror`` action handler
  (rate 1) on decoded batches, copies out of the veth with one ``sendmmsg`` per batch, and with
  the ``socket.sendmsg`` fallback;
* ``mirror gre`` / ``mirror erspan`` -- the same to a remote analyzer (B's address) over a raw
  IPPROTO_GRE socket;
* ``action rate 1000`` -- the handler when the sampler keeps 1 in 1000 (what the action costs
  when it mostly does not send);
* ``pipeline count-only`` / ``pipeline + port-mirror`` -- ``App.process`` (decode, filter,
  action) on raw batches, without and with the mirror term.

The table prints packets/s offered to the action, copies/s sent, drops by reason, and the ratio
to the plain loop.  The peer's ``rx_packets`` (B's veth) is read before and after and printed,
so "sent" is checked against what arrived.  Figures, not pass/fail:
``test_bench_port_mirroring_smoke.py`` only checks that the machinery runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def frames_of(size: int, n: int, dst_mac: bytes, src_mac: bytes) -> list[bytes]:
    """*n* Ethernet/IPv4/UDP frames of *size* bytes, distinct ports (decodable, to B's MAC)."""
    import socket
    import struct

    out = []
    src, dst = socket.inet_aton("10.99.0.1"), socket.inet_aton("10.99.0.2")
    plen = max(0, size - 14 - 20 - 8)
    for i in range(n):
        udp = struct.pack("!HHHH", 1024 + i % 60000, 9999, 8 + plen, 0) + bytes(plen)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, src, dst)
        out.append(dst_mac + src_mac + b"\x08\x00" + ip + udp)
    return out


# -- inner: runs inside namespace A -------------------------------------------------------------
def _timed(fn, seconds: float) -> tuple[int, float, float]:
    """Call fn() (returns packets done) until *seconds* passed: (packets, wall, cpu)."""
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    end = t0 + seconds
    while True:
        n += fn()
        if time.perf_counter() >= end:
            break
    return n, time.perf_counter() - t0, time.process_time() - c0


def _pm_config(dev: str, analyzer: str, *, rate: int = 1, kind: str = "interface") -> str:
    if kind == "interface":
        out = f"interface: {dev}"
    else:
        extra = ", session-id: 5" if kind == "erspan" else ""
        out = f"ip-address {analyzer}: {{encapsulation: {kind}{extra}}}"
    return f"""
system: {{control-socket: /nonexistent/pm-bench.sock}}
forwarding-options:
  port-mirroring:
    input: {{rate: {rate}}}
    family any:
      output:
        {out}
"""


def _pipeline_config(dev: str, mirror: bool, pcap: str) -> str:
    then = "{port-mirror: true, count: m}" if mirror else "{count: m}"
    text = f"""
system: {{control-socket: /nonexistent/pm-bench.sock}}
interfaces:
  bench0: {{source: pcap, file: {pcap}, family inet: {{filter input: f}}}}
firewall:
  family inet:
    filter f:
      term t:
        then: {then}
"""
    if mirror:
        text += f"""forwarding-options:
  port-mirroring:
    family any: {{output: {{interface: {dev}}}}}
"""
    return text


def inner(args) -> dict:
    import socket

    from flowplane.batch import ActionSelection, PacketBatch
    from flowplane.decode import decode
    from flowplane.plugins.port_mirroring import commands
    from flowplane.plugins.port_mirroring.send import BatchSender
    from flowplane.testing import build_app, config_from, write_pcap

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    dev = args.dev
    dst_mac = bytes.fromhex(args.peer_mac.replace(":", ""))
    src_mac = bytes.fromhex(args.own_mac.replace(":", ""))
    rows = []
    tmpdir = tempfile.mkdtemp(prefix="pm-bench-")
    for size in args.sizes:
        frames = frames_of(size, args.batch, dst_mac, src_mac)

        # plain AF_PACKET send loop
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.bind((dev, 0))
        errors = [0]

        def plain(s=s, frames=frames, errors=errors) -> int:
            send = s.send
            for f in frames:
                try:
                    send(f)
                except OSError:
                    errors[0] += 1
            return len(frames)

        n, wall, cpu = _timed(plain, args.seconds)
        s.close()
        rows.append({"size": size, "what": "plain AF_PACKET loop", "offered": n, "sent": n - errors[0],
                     "wall": wall, "cpu": cpu, "drops": {"error": errors[0]} if errors[0] else {}})

        batch = PacketBatch.from_frames(frames)
        decode(batch)
        sel = [ActionSelection("f", "t", "port-mirror", None, batch)]
        cases = [("mirror local sendmmsg", "interface", 1, True), ("mirror local sendmsg", "interface", 1, False),
                 ("mirror gre sendmmsg", "gre", 1, True), ("mirror erspan sendmmsg", "erspan", 1, True),
                 ("action rate 1000 (local)", "interface", 1000, True)]
        for what, kind, rate, mmsg in cases:
            app = build_app(config_from(_pm_config(dev, args.analyzer, rate=rate, kind=kind)))
            pm = app.pm.get_plugin(commands.PLUGIN_OBJECT)
            for d in pm.destinations():
                d.sender = BatchSender(use_sendmmsg=mmsg)

            def act(pm=pm, sel=sel, batch=batch) -> int:
                pm.on_port_mirror(sel)
                return len(batch)

            n, wall, cpu = _timed(act, args.seconds)
            [d] = pm.destinations()
            rows.append({"size": size, "what": what, "offered": n, "sent": d.counters["packets"],
                         "wall": wall, "cpu": cpu, "drops": {r: c for (_, r), c in d.counters.drops.items()}})
            app.pm.hook.flowplane_shutdown(app=app)

        # the whole per-batch path: decode, filter, action (the pcap only names a source for the filter binding)
        pcap = write_pcap(os.path.join(tmpdir, f"bench{size}.pcap"), frames[:1])
        for what, mirror in (("pipeline count-only", False), ("pipeline + port-mirror", True)):
            app = build_app(config_from(_pipeline_config(dev, mirror, pcap)))
            iid = app.interfaces.id("bench0")
            raw = [PacketBatch.from_frames(frames, iface=iid) for _ in range(8)]
            k = [0]

            def pipe(raw=raw, k=k, app=app) -> int:
                b = raw[k[0] % len(raw)]
                k[0] += 1
                fresh = b.select(slice(None))  # undecoded copy of the columns: decode runs every time
                fresh.decoded = False
                app.process(fresh)
                return len(b)

            n, wall, cpu = _timed(pipe, args.seconds)
            sent, drops = 0, {}
            pm = app.pm.get_plugin(commands.PLUGIN_OBJECT)
            if pm is not None:
                [d] = pm.destinations()
                sent, drops = d.counters["packets"], {r: c for (_, r), c in d.counters.drops.items()}
                app.pm.hook.flowplane_shutdown(app=app)
            rows.append({"size": size, "what": what, "offered": n, "sent": sent, "wall": wall, "cpu": cpu,
                         "drops": drops})
    shutil.rmtree(tmpdir, ignore_errors=True)
    return {"rows": rows}


# -- outer: namespaces, child, table --------------------------------------------------------------
def _rx_packets(ns: str, dev: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", dev], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    return json.loads(out)[0]["address"]


def run(seconds: float, batch: int, sizes: list[int], cpu: int | None) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from netns import make_netns_pair

    with make_netns_pair(tag="pmb") as p:
        rx0 = _rx_packets(p.ns_b, p.veth_b)
        argv = [sys.executable, str(Path(__file__).resolve()), "--inner", "--dev", p.veth_a,
                "--analyzer", p.addr_b, "--peer-mac", _mac(p.ns_b, p.veth_b), "--own-mac", _mac(p.ns_a, p.veth_a),
                "--seconds", str(seconds), "--batch", str(batch), "--sizes", ",".join(map(str, sizes))]
        if cpu is not None:
            argv += ["--cpu", str(cpu)]
        # the analyzer's MAC is static: no ARP resolution in the timed loops
        subprocess.run(["ip", "-n", p.ns_a, "neigh", "replace", p.addr_b, "lladdr", _mac(p.ns_b, p.veth_b),
                        "dev", p.veth_a, "nud", "permanent"], check=True, capture_output=True, timeout=30)
        r = p.run(p.ns_a, argv, check=False, timeout=600 + 20 * seconds * len(sizes))
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["peer_rx_packets"] = _rx_packets(p.ns_b, p.veth_b) - rx0
        res["sent_total"] = sum(row["sent"] for row in res["rows"])
    return res


def table(res: dict) -> str:
    """Rates per wall second and per CPU second (the box is shared: CPU seconds are the steadier figure)."""
    rows = res["rows"]
    base = {r["size"]: r["sent"] / r["cpu"] for r in rows if r["what"] == "plain AF_PACKET loop" and r["cpu"]}
    lines = [f"{'size':>5}  {'what':<26}{'offered/s':>13}{'sent/s':>12}{'sent/cpu-s':>12}{'vs plain':>9}"
             f"{'cpu %':>7}  drops", "-" * 100]
    for r in rows:
        sent_pps = r["sent"] / r["wall"] if r["wall"] else 0.0
        per_cpu = r["sent"] / r["cpu"] if r["cpu"] else 0.0
        ratio = per_cpu / base[r["size"]] if base.get(r["size"]) and r["sent"] else float("nan")
        drops = ", ".join(f"{k} {v}" for k, v in r["drops"].items()) or "-"
        lines.append(f"{r['size']:>5}  {r['what']:<26}{r['offered'] / r['wall']:>13,.0f}{sent_pps:>12,.0f}"
                     f"{per_cpu:>12,.0f}{ratio:>9.2f}{100 * r['cpu'] / r['wall']:>7.0f}  {drops}")
    lines.append("-" * 100)
    lines.append(f"frames sent in all rows: {res['sent_total']:,}; received by the peer veth: "
                 f"{res['peer_rx_packets']:,} (more when GRE/ERSPAN copies of frames near the MTU leave as "
                 "two IPv4 fragments)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sizes", default="64,512,1500")
    ap.add_argument("--cpu", type=int, default=None, help="pin the measuring process to this CPU")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dev", help=argparse.SUPPRESS)
    ap.add_argument("--analyzer", help=argparse.SUPPRESS)
    ap.add_argument("--peer-mac", help=argparse.SUPPRESS)
    ap.add_argument("--own-mac", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.sizes = [int(x) for x in str(a.sizes).split(",") if x]
    if a.inner:
        print(json.dumps(inner(a)))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces, AF_PACKET, raw sockets)", file=sys.stderr)
        return 2
    res = run(a.seconds, a.batch, a.sizes, a.cpu)
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

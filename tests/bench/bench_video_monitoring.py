#!/usr/bin/env python3
"""Video monitoring: MPEG-TS datagrams analysed per second on one core, beside tstools' ``pcapreport``.

Usage::

    python tests/bench/bench_video_monitoring.py [--streams 100] [--seconds 2] [--batch-size 1024]
        [--runs 3] [--cpu N]

A capture of N paced 3 Mb/s MPEG-TS-over-UDP streams (7 TS packets per datagram, about 285 datagrams/s
each; every 500th datagram of each stream lost, so continuity counting has work to do) is written as a
classic pcap and measured in one run:

(a) ``App.process``: decode, flow selection, TS parsing, CC, intervals (the whole data path);
(b) the video-monitoring hook alone on batches decoded beforehand;
(c) Debian tstools ``pcapreport -a`` reading the same pcap (a C program that checks and reports on
    every TS stream it finds, by destination: packet sanity, PCR timing), when installed.

The goal of issue 12: at least 100 concurrent 3 Mb/s streams (~28,000 datagrams/s) on one core with
room to spare.  Figures, not pass/fail: ``test_bench_video_monitoring_smoke.py`` runs the machinery on a
few streams and checks the counts only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from flowplane.batch import PacketBatch
from flowplane.decode import decode
from flowplane.testing import build_app, write_pcap

NS = 1_000_000_000
RATE = 2972400
DATAGRAM = 7 * 188
LOSS_EVERY = 500

CONFIG = """\
interfaces:
  cap:
    source: pcap
    file: {pcap}
    family inet:
      input-flows video:
        destination-port: 5000
        template: t1
services:
  video-monitoring:
    templates t1:
      rate media: {rate}
"""


def _checksum(b: bytes) -> int:
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF


def frame(stream: int, payload: bytes) -> bytes:
    src = bytes([10, 1, stream >> 8, stream & 0xFF])
    udp = struct.pack("!HHHH", 20000 + stream, 5000, 8 + len(payload), 0) + payload
    group = bytes([232, 1, stream >> 8, (stream & 0xFF)])  # one group per stream: pcapreport splits by destination
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, group)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("01005e010101") + bytes.fromhex("020000000001") + b"\x08\x00" + ip + udp


def generate(streams: int, seconds: float) -> tuple[list[bytes], list[int], int]:
    """Frames, timestamps and the payload TS packets lost (by CC) of *streams* interleaved paced streams."""
    per = int(seconds * RATE / (DATAGRAM * 8))
    gap = DATAGRAM * 8 / RATE
    cc = [[0, 0] for _ in range(streams)]
    out: list[tuple[int, bytes]] = []
    lost = 0
    for s in range(streams):
        offset = s * gap / streams
        for i in range(per):
            body = b""
            for k in range(7):
                if k == 6:
                    body += b"\x47\x1f\xff\x10" + bytes(184)  # null packet
                    continue
                p = k % 2
                pid = 256 + p
                body += bytes([0x47, pid >> 8, pid & 0xFF, 0x10 | cc[s][p]]) + bytes(184)
                cc[s][p] = (cc[s][p] + 1) & 15
            if i % LOSS_EVERY == LOSS_EVERY - 1:
                lost += 6
                continue
            out.append((10 * NS + int((offset + i * gap) * NS), frame(s, body)))
    out.sort(key=lambda x: x[0])
    return [f for _, f in out], [t for t, _ in out], lost


def measure(streams: int, seconds: float, batch_size: int, runs: int) -> dict:
    frames, ts, lost = generate(streams, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = write_pcap(os.path.join(tmp, "video.pcap"), frames, ts_ns=ts)
        n = len(frames)
        res: dict = {"streams": streams, "datagrams": n, "lost_ts": lost, "batch_size": batch_size,
                     "runs": {"a": [], "b": [], "c": []}}
        for _ in range(runs):
            app = build_app(CONFIG.format(pcap=pcap, rate=RATE))
            iid = app.interfaces.id("cap")
            batches = [PacketBatch.from_frames(frames[i:i + batch_size], ts=ts[i:i + batch_size], iface=iid)
                       for i in range(0, n, batch_size)]
            t0 = time.perf_counter()
            for b in batches:
                app.process(b)
            res["runs"]["a"].append(n / (time.perf_counter() - t0))
            mon = app.pm.get_plugin("video-monitor")
            res["counts"] = {"flows": len(mon.flows), "datagrams": mon.stats()["packets"],
                             "cc_lost": sum(f.totals[1] + f.counts[1] for f in mon.flows.values())}
            app2 = build_app(CONFIG.format(pcap=pcap, rate=RATE))
            iid = app2.interfaces.id("cap")
            batches = [PacketBatch.from_frames(frames[i:i + batch_size], ts=ts[i:i + batch_size], iface=iid)
                       for i in range(0, n, batch_size)]
            for b in batches:
                decode(b)
            mon2 = app2.pm.get_plugin("video-monitor")
            t0 = time.perf_counter()
            for b in batches:
                mon2.flowplane_process_batch(b)
            res["runs"]["b"].append(n / (time.perf_counter() - t0))
            peer = shutil.which("pcapreport")
            if peer:
                t0 = time.perf_counter()
                subprocess.run([peer, "-a", pcap], capture_output=True, cwd=tmp, timeout=600)
                res["runs"]["c"].append(n / (time.perf_counter() - t0))
    return res


def table(results: list[dict]) -> str:
    lines = []
    for r in results:
        c = r["counts"]
        lines.append(f"video monitoring, {r['streams']} streams, {r['datagrams']} datagrams "
                     f"(batch size {r['batch_size']}): flows {c['flows']}, datagrams {c['datagrams']}, "
                     f"TS lost by CC {c['cc_lost']} (injected {r['lost_ts']})")
        names = {"a": "(a) App.process (decode + video monitoring)", "b": "(b) video monitoring hook only",
                 "c": "(c) tstools pcapreport -a"}
        best = {k: max(v) for k, v in r["runs"].items() if v}
        for k, name in names.items():
            if k not in best:
                lines.append(f"  {name:<46} not installed")
                continue
            lines.append(f"  {name:<46} {best[k]:>12,.0f} datagrams/s  {best[k] * 7:>13,.0f} TS packets/s"
                         f"  ({best[k] / 285:,.0f} x 3 Mb/s streams)")
        if "c" in best:
            lines.append(f"  ratio (a)/(c): {best['a'] / best['c']:.2f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(table([measure(args.streams, args.seconds, args.batch_size, args.runs)]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

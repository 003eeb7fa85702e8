#!/usr/bin/env python3
"""Inline monitoring: how many packets per second the ``inline-monitoring-instance`` action sustains.

Usage::

    python tests/bench/bench_inline_monitoring.py [--packets 200000] [--batch-size 1024] [--clip 128,256]
        [--runs 3] [--cpu N] [--json OUT]

Measured in one run, pinned to one CPU, on decoded batches of Ethernet/IPv4/UDP frames of
60..1514 bytes (the action's input, as the firewall hands it over):

(a) **encode only**: ``InlineMonitor.on_action`` of an App built from a real config (1 in 1
    sampling, loop guard, clip, IPFIX records, MTU packing, sequence numbers) with the
    collector's transport not started, so each message is dropped (and counted) at the
    transport instead of sent;
(b) **encode + send**: the same with the UDP transport running, sending every message to a
    UDP socket on 127.0.0.1 that is never read (the kernel drops what overflows it);
(c) **plain UDP send loop**: the very messages (b) produced, sent again by a bare
    ``sock.send`` loop on a connected UDP socket: the ceiling of any Python exporter here;
(d) **plain AF_PACKET send loop**: the same messages as Ethernet/IPv4/UDP frames sent on
    ``lo`` by a bare AF_PACKET ``send`` loop (needs CAP_NET_RAW; skipped otherwise).

The table prints packets/s (monitored packets, i.e. records), messages/s, MB/s of IPFIX and
the ratio of (b)'s message rate to (c) and (d).  Figures, not pass/fail:
``test_bench_inline_monitoring_smoke.py`` runs the machinery on a few thousand packets and
checks the counts only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from flowplane.batch import ActionSelection, PacketBatch  # noqa: E402
from flowplane.decode import decode  # noqa: E402
from flowplane.testing import build_app, config_from, write_pcap  # noqa: E402

CONFIG = """\
system:
  hardware-profile: {profile}
  control-socket: {tmp}/control.sock
interfaces:
  bench0:
    source: pcap
    file: {pcap}
services:
  inline-monitoring:
    template t1: {{}}
    instance i1:
      template-name: t1
{clip}      collector c1:
        destination-address: 127.0.0.1
        destination-port: {port}
        sampling-rate: 1
"""


def make_frames(n: int, seed: int = 1) -> list[bytes]:
    """n Ethernet/IPv4/UDP frames of 60..1514 bytes (mean ~ 500), distinct ports and payload bytes."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.exponential(450, n).astype(int) + 60, 60, 1514)
    out = []
    for i, size in enumerate(sizes.tolist()):
        payload = bytes([i % 256]) * (size - 42)
        udp = struct.pack(">HHHH", 1024 + i % 60000, 53, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([10, 0, i >> 8 & 255, i & 255]),
                         bytes([192, 0, 2, 1]))
        out.append(b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp)
    return out


def make_batches(frames: list[bytes], batch_size: int, iface: int) -> list[PacketBatch]:
    out = []
    for i in range(0, len(frames), batch_size):
        b = PacketBatch.from_frames(frames[i:i + batch_size], iface=iface)
        decode(b)
        out.append(b)
    return out


class Rig:
    """An App with one inline-monitoring instance exporting to an unread UDP socket on loopback."""

    def __init__(self, tmp: str, clip: int | None, profile: str = "generic-linux") -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        pcap = write_pcap(os.path.join(tmp, "one.pcap"), make_frames(1))
        clip_line = f"      clip-length: {clip}\n" if clip else ""
        self.app = build_app(config_from(CONFIG.format(profile=profile, tmp=tmp, pcap=pcap, clip=clip_line,
                                                       port=self.sink.getsockname()[1])))
        self.monitor = self.app.pm.get_plugin("inline-monitor")
        [self.collector] = self.monitor.collectors()
        self.iface = self.app.interfaces.id("bench0")

    def run_action(self, batches: list[PacketBatch]) -> float:
        on_action = self.monitor.on_action
        sels = [[ActionSelection("f", "t", "inline-monitoring-instance", "i1", b)] for b in batches]
        t0 = time.perf_counter()
        for s in sels:
            on_action(s)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sink.close()


def capture_messages(rig: Rig, batches: list[PacketBatch]) -> list[bytes]:
    """The messages the action produces for *batches* (by a transport stand-in that keeps them)."""
    kept: list[bytes] = []
    t = rig.collector.transport
    real = t.send_nowait
    t.send_nowait = kept.extend  # type: ignore[method-assign]
    try:
        rig.run_action(batches)
    finally:
        t.send_nowait = real  # type: ignore[method-assign]
    return kept


def udp_send_loop(messages: list[bytes], port: int) -> float:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(("127.0.0.1", port))
    send = s.send
    t0 = time.perf_counter()
    for m in messages:
        while True:
            try:
                send(m)
                break
            except (BlockingIOError, InterruptedError):
                continue
    dt = time.perf_counter() - t0
    s.close()
    return dt


def afpacket_send_loop(messages: list[bytes], port: int) -> float | None:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("lo", 0))
    except (PermissionError, OSError):
        return None
    frames = []
    for m in messages:
        udp = struct.pack(">HHHH", 40000, port, 8 + len(m), 0) + m
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, socket.inet_aton("127.0.0.1"),
                         socket.inet_aton("127.0.0.1"))
        frames.append(bytes(12) + b"\x08\x00" + ip + udp)
    send = s.send
    t0 = time.perf_counter()
    for f in frames:
        while True:
            try:
                send(f)
                break
            except (BlockingIOError, InterruptedError):
                continue
    dt = time.perf_counter() - t0
    s.close()
    return dt


async def _encode_and_send(rig: Rig, batches: list[PacketBatch]) -> float:
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.collector.transport.run)
        dt = rig.run_action(batches)
        await rig.collector.transport.flush(5.0)
        nursery.cancel_scope.cancel()
    return dt


def measure(packets: int, batch_size: int, clip: int | None, runs: int, profile: str = "generic-linux") -> dict:
    frames = make_frames(packets)
    with tempfile.TemporaryDirectory() as tmp:
        rows: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
        counts: dict = {}
        for _ in range(runs):
            # (a) encode only: the transport never started, every message dropped as not_ready (counted)
            rig = Rig(tmp, clip, profile)
            batches = make_batches(frames, batch_size, rig.iface)
            rows["a"].append(rig.run_action(batches))
            snap = rig.monitor.snapshot()["instances"][0]["collectors"][0]
            counts["a"] = {"records": snap["records_exported"], "messages": snap["messages"],
                           "bytes": snap["bytes"], "not_ready": snap["dropped"]}
            rig.close()
            # (b) encode + send over the real UDP transport
            rig = Rig(tmp, clip, profile)
            batches = make_batches(frames, batch_size, rig.iface)
            rows["b"].append(trio.run(_encode_and_send, rig, batches))
            snap = rig.monitor.snapshot()["instances"][0]["collectors"][0]
            counts["b"] = {"records": snap["records_exported"], "messages": snap["messages"],
                           "sent": snap["sent_datagrams"], "dropped": snap["dropped"], "bytes": snap["bytes"]}
            port = rig.sink.getsockname()[1]
            # (c) / (d) the same messages through bare send loops
            msgs = capture_messages(Rig(tmp, clip, profile), make_batches(frames, batch_size, rig.iface))
            counts["messages_c"] = len(msgs)
            rows["c"].append(udp_send_loop(msgs, port))
            d = afpacket_send_loop(msgs, port)
            if d is not None:
                rows["d"].append(d)
            rig.close()
        return {"packets": packets, "batch_size": batch_size, "clip": clip, "profile": profile, "runs": rows,
                "counts": counts, "mean_frame": sum(map(len, frames)) / len(frames)}


def table(results: list[dict]) -> str:
    lines = [f"{'clip':>5} {'batch':>6}  {'stage':<34} {'pkts/s':>10} {'msgs/s':>9} {'MB/s':>7} {'vs UDP loop':>11} "
             f"{'vs AF_PACKET':>12}"]
    for r in results:
        c = r["counts"]
        msgs = c["b"]["messages"]
        mbytes = c["b"]["bytes"] / 1e6
        best = {k: min(v) for k, v in r["runs"].items() if v}
        base_c = msgs / best["c"]
        base_d = msgs / best["d"] if "d" in best else None
        for key, label, n_pk in (("a", "(a) action, encode only", r["packets"]),
                                 ("b", "(b) action, encode + UDP send", r["packets"]),
                                 ("c", "(c) plain UDP send loop (same msgs)", None),
                                 ("d", "(d) plain AF_PACKET send loop (lo)", None)):
            if key not in best:
                lines.append(f"{r['clip'] or '-':>5} {r['batch_size']:>6}  {label:<34} {'n/a (needs CAP_NET_RAW)':>10}")
                continue
            dt = best[key]
            mps = msgs / dt
            pps = f"{n_pk / dt:>10,.0f}" if n_pk else f"{'-':>10}"
            vs_c = f"{mps / base_c:>11.2f}"
            vs_d = f"{mps / base_d:>12.2f}" if base_d else f"{'-':>12}"
            lines.append(f"{r['clip'] or '-':>5} {r['batch_size']:>6}  {label:<34} {pps} {mps:>9,.0f} "
                         f"{mbytes / dt:>7.1f} {vs_c} {vs_d}")
        lines.append(f"      records {c['b']['records']}, messages {msgs}, sent {c['b']['sent']}, "
                     f"transport drops {c['b']['dropped']}, mean frame {r['mean_frame']:.0f} B")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--batch-size", default="1024")
    ap.add_argument("--clip", default="128,256")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    results = []
    for bs in (int(x) for x in args.batch_size.split(",")):
        for clip in (int(x) for x in args.clip.split(",")):
            results.append(measure(args.packets, bs, clip, args.runs))
    load = os.getloadavg()[0]
    print(f"inline monitoring, {args.packets} packets, best of {args.runs}, CPU {cpu}, load {load:.2f}")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from flowplane.logging import configure as configure_logging

    configure_logging("console", "warning")  # the figures, not one 'exporter_started' line per rig
    sys.exit(main())


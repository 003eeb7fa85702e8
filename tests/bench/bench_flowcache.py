#!/usr/bin/env python3
"""FlowCache throughput, memory per flow and a count check against the pcap's truth.

Usage::

    python tests/bench/bench_flowcache.py [--packets 1200000] [--batch-size 4096] [--runs 3]
        [--max-flows 200000] [--mem-flows 1000000] [--cpu N] [--profile]

1. Reads (or generates with gen_pcap.py, cached under tests/bench/data/) the synthetic pcap,
   decodes it into batches of ``--batch-size`` with ``flowplane.decode.decode`` (not timed).
2. throughput: ``FlowCache.update`` over every batch (pinned to one CPU), twice:
   update only (timeouts beyond the capture) and update + ``expire(clock_ns)`` once per
   second of packet time with the default timeouts (60 s active, 15 s inactive).
   Prints packets/s and ns/packet (best and median of ``--runs``).
3. truth: flows in the cache after all batches (no expiry) against ``unidirectional_5tuple_keys``,
   and exported packets/bytes (after flush) against ``ip_packets`` / ``ip_bytes`` and the
   per-protocol figures.
4. memory: ``--mem-flows`` distinct flows (random IPv4 5-tuples, batches of 4096) in a cache of
   that size; prints ``memory_bytes() / len`` and the tracemalloc delta / len (numpy reports
   its allocations to tracemalloc), and the update rate while the cache fills.

Not a pass/fail test: figures to compare with softflowd (~0.86 Mpps for the whole pipeline,
~180 bytes per flow).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from flowplane.batch import PacketBatch  # noqa: E402
from flowplane.decode import decode  # noqa: E402
from flowplane.flowcache import FlowCache  # noqa: E402

from bench_pipeline import ensure_pcap, warm  # noqa: E402

S = 1_000_000_000
PROTO = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "GRE": 47}


def load_batches(path: Path, batch_size: int) -> list[PacketBatch]:
    from flowplane.plugins.sources.pcapfile import open_capture

    reader = open_capture(str(path))
    out = []
    for lt, _idb, off, cap, wl, ts in reader.chunks(batch_size, 0):
        b = PacketBatch(reader.data, off, cap, wl, ts, linktype=lt, iface=0)
        decode(b)
        out.append(b)
    return out


def run_updates(batches, *, expire: bool, max_flows: int, profile=None):
    if expire:
        cache = FlowCache(max_flows=max_flows, active_timeout_s=60, inactive_timeout_s=15)
    else:
        cache = FlowCache(max_flows=max_flows, active_timeout_s=1e6, inactive_timeout_s=1e6)
    exported = []
    n = 0
    next_tick = None
    gc.collect()
    if profile:
        profile.enable()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for b in batches:
        n += len(b)
        for recs, _ in cache.update(b):
            exported.append(recs)
        if expire:
            clock = cache.clock_ns
            if next_tick is None:
                next_tick = clock + S
            elif clock >= next_tick:
                exported += [r for r, _ in cache.expire(clock)]
                next_tick = clock + S
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if profile:
        profile.disable()
    return cache, exported, n, dt, cpu


def throughput(batches, args, say):
    for expire, max_flows in ((False, args.max_flows), (True, args.max_flows), (True, 2048)):
        walls, cpus = [], []
        for _ in range(args.runs):
            cache, exported, n, dt, cpu = run_updates(batches, expire=expire, max_flows=max_flows)
            walls.append(dt)
            cpus.append(cpu)
        exported.append(cache.flush())
        pk = sum(int(r.data["packets"].sum()) for r in exported)
        assert pk == cache.counters["packets"], (pk, cache.counters["packets"])
        best, med = min(walls), statistics.median(walls)
        label = "update + expire() every 1 s (60/15 s)" if expire else "update only (no expiry)"
        if max_flows < 10_000:
            label = f"same, cache full (max_flows {max_flows})"
        say(f"{label:<40} {n:,} packets: best {n / best / 1e6:6.3f} Mpps ({best / n * 1e9:5.0f} ns/pkt)  "
            f"median {n / med / 1e6:6.3f} Mpps ({med / n * 1e9:5.0f} ns/pkt)  "
            f"per CPU-s {n / statistics.median(cpus) / 1e6:6.3f} M   "
            f"flows created {cache.counters['flows_created']:,} max active {cache.counters['max_active']:,}"
            + (f" expired full {cache.counters['expired_full']:,}" if max_flows < 10_000 else "")
            + f"; exported packets (after flush) {pk:,}")


def truth_check(batches, truth, args, say):
    cache, exported, n, dt, cpu = run_updates(batches, expire=False, max_flows=max(args.max_flows, 400_000))
    flows = len(cache)
    fin = cache.flush()
    d = np.concatenate([r.data for r in exported] + [fin.data])
    rows = [("flows (no expiry) vs unidirectional_5tuple_keys", flows, truth["unidirectional_5tuple_keys"]),
            ("packets", int(d["packets"].sum()), truth["ip_packets"]),
            ("bytes", int(d["bytes"].sum()), truth["ip_bytes"]),
            ("counters packets", cache.counters["packets"], truth["ip_packets"]),
            ("ipv4 packets", int(d["packets"][d["af"] == 4].sum()), truth["ipv4_packets"]),
            ("ipv6 packets", int(d["packets"][d["af"] == 6].sum()), truth["ipv6_packets"])]
    for name, p in PROTO.items():
        sel = d["proto"] == p
        rows.append((f"{name} packets", int(d["packets"][sel].sum()), truth["packets_by_protocol"][name]))
        rows.append((f"{name} bytes", int(d["bytes"][sel].sum()), truth["bytes_by_protocol"][name]))
    bad = 0
    say("truth comparison (flowplane / truth):")
    for name, got, want in rows:
        ok = "ok" if got == want else "DIFF"
        bad += got != want
        say(f"  {name:<50} {got:>14,} {want:>14,}  {ok}")
    # does tos or vlan split a 5-tuple?  (our key has tos and iface in addition)
    k5 = np.stack([d["src_hi"], d["src_lo"], d["dst_hi"], d["dst_lo"],
                   d["sport"].astype(np.uint64) << np.uint64(24) | d["dport"].astype(np.uint64) << np.uint64(8)
                   | d["proto"]], axis=1)
    say(f"  distinct 5-tuples among records: {len(np.unique(k5, axis=0)):,}; distinct tos values: "
        f"{np.unique(d['tos']).tolist()}")
    return bad


def memory(args, say):
    n = args.mem_flows
    bs = 4096
    rng = np.random.default_rng(1)
    tmpl = PacketBatch.from_frames([bytes(60)] * bs)
    decode(tmpl)
    # a decoded template whose columns we overwrite with random distinct IPv4 UDP 5-tuples
    for name in ("status", "af", "proto", "ip_len", "src_hi", "dst_hi", "src_lo", "dst_lo", "sport", "dport"):
        setattr(tmpl, name, getattr(tmpl, name).copy())
    tmpl.status[:] = 0
    tmpl.af[:] = 4
    tmpl.proto[:] = 17
    tmpl.ip_len[:] = 100
    ids = rng.permutation(n).astype(np.uint64)
    base = np.uint64(0xFFFF_0000_0000)
    batches = []
    for i in range(0, n, bs):
        b = tmpl.select(slice(0, min(bs, n - i)))
        k = ids[i:i + bs]
        b.src_lo = base | (np.uint64(0x0A00_0000) + (k >> np.uint64(8)))
        b.dst_lo = base | (np.uint64(0xC612_0000) + (k & np.uint64(0xFF)))
        b.sport = ((k * np.uint64(7919)) & np.uint64(0xFFFF)).astype(np.uint16)
        b.dport = np.full(len(k), 443, dtype=np.uint16)
        b.ts = np.full(len(k), i * 1000, dtype=np.int64)
        batches.append(b)
    gc.collect()
    t0 = time.perf_counter()
    cache = FlowCache(max_flows=n)
    for b in batches:
        cache.update(b)
    dt = time.perf_counter() - t0
    assert len(cache) == n, (len(cache), n)
    say(f"filling a {n:,}-flow cache (every packet a new flow): {n / dt / 1e6:.3f} M flows/s "
        f"({dt / n * 1e9:.0f} ns/flow, growth and rehash included)")
    del cache
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = FlowCache(max_flows=n)
    for b in batches:
        cache.update(b)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    say(f"memory at {len(cache):,} concurrent flows: memory_bytes() {cache.memory_bytes() / len(cache):.1f} B/flow, "
        f"tracemalloc delta {(after - before) / len(cache):.1f} B/flow (hash table "
        f"{cache._table.nbytes / len(cache):.1f}); "
        f"key_fields mpls / bridge: {_mem_of('mpls', n):.1f} / {_mem_of('bridge', n):.1f} B/flow")
    # a second pass over the same keys: all hits at 1 M flows
    t0 = time.perf_counter()
    for b in batches:
        cache.update(b)
    dt = time.perf_counter() - t0
    say(f"  second pass, every packet a hit in a 1 M-flow table: {n / dt / 1e6:.3f} Mpps ({dt / n * 1e9:.0f} ns/pkt)")


def _mem_of(key_fields: str, n: int) -> float:
    c = FlowCache(max_flows=n, key_fields=key_fields)
    c._alloc(n)  # the arrays a full cache of n flows holds
    return c.memory_bytes() / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_200_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-flows", type=int, default=200_000)
    ap.add_argument("--mem-flows", type=int, default=1_000_000)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of throughput,truth,memory to skip")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    say = lambda s: print(s, flush=True)  # noqa: E731
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    say(f"# flowcache bench, CPU {cpu}, numpy {np.__version__}")
    if not {"throughput", "truth"} <= skip or args.profile:
        path, truth, _ = ensure_pcap(args.packets, seed=args.seed)
        warm(path)
        t0 = time.perf_counter()
        batches = load_batches(path, args.batch_size)
        say(f"# {path.name}: {sum(len(b) for b in batches):,} frames in {len(batches)} batches of "
            f"{args.batch_size} (read + decode {time.perf_counter() - t0:.1f} s, not timed below)")
        if args.profile:
            prof = cProfile.Profile()
            run_updates(batches, expire=True, max_flows=args.max_flows, profile=prof)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        if "throughput" not in skip:
            throughput(batches, args, say)
        if "truth" not in skip:
            truth_check(batches, truth, args, say)
    if "memory" not in skip:
        memory(args, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The compiled kernels against their Python twins, in one process, runs interleaved.

Usage::

    python tests/bench/bench_kernels.py [--packets 1200000] [--batch-size 4096,256] [--runs 5] [--cpu N]
                                        [--pcap FILE] [--json OUT]

For every batch size and every implementation that can run here (``flowplane.kernels.implementations()``):

* **read**: the pcap source's reader over the whole file (``open_capture(..., impl).chunks``): the record
  walk kernel plus the per-batch numpy gathers, i.e. stage (a) of bench_pipeline.py without batch objects;
* **flowcache**: ``FlowCache.update`` over the decoded batches (decode not timed), cache large enough for
  every flow, then ``flush``: the hash table lookup/insert kernels plus the numpy grouping and aggregation.

Runs alternate between implementations, so load that comes and goes on a shared box hits both alike; the
table gives the median packets/s, ns/packet and packets per CPU-second, and the compiled/Python ratio.
Both implementations must give the same frame count and the same flow, packet and byte totals (exit 1 if not).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from flowplane import kernels  # noqa: E402
from flowplane.batch import PacketBatch  # noqa: E402
from flowplane.decode import decode  # noqa: E402
from flowplane.flowcache import FlowCache  # noqa: E402
from flowplane.plugins.sources.pcapfile import open_capture  # noqa: E402

from bench_pipeline import ensure_pcap, warm  # noqa: E402


def read_pass(path: Path, impl, batch_size: int) -> int:
    reader = open_capture(str(path), None, impl)
    n = 0
    for chunk in reader.chunks(batch_size, 0):
        n += len(chunk[2])
    return n


def decoded(path: Path, batch_size: int) -> list[PacketBatch]:
    reader = open_capture(str(path))
    out = []
    for lt, _idb, off, cap, wl, ts in reader.chunks(batch_size, 0):
        b = PacketBatch(reader.data, off, cap, wl, ts, linktype=lt, iface=0)
        decode(b)
        out.append(b)
    return out


def cache_pass(batches, impl) -> tuple[int, tuple[int, int, int]]:
    cache = FlowCache(max_flows=1_000_000, active_timeout_s=1e6, inactive_timeout_s=1e6, impl=impl)
    n = 0
    for b in batches:
        n += len(b)
        cache.update(b)
    flows = len(cache)
    rec = cache.flush().data
    return n, (flows, int(rec["packets"].sum()), int(rec["bytes"].sum()))


def timed(fn):
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    return res, time.perf_counter() - t0, time.process_time() - c0


def bench(args) -> tuple[list[dict], int]:
    say = lambda s: print(s, flush=True)  # noqa: E731
    if args.pcap:
        path = Path(args.pcap)
    else:
        path, _truth, _ = ensure_pcap(args.packets)
    warm(path)
    impls = kernels.implementations()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    say(f"# {path.name}; pinned to CPU {cpu}; implementations: {', '.join(impls)}; active: "
        f"{kernels.IMPLEMENTATION} ({kernels.REASON}); {args.runs} interleaved runs; loadavg {os.getloadavg()}")
    rows, bad = [], 0
    for bs in args.batch_sizes:
        batches = decoded(path, bs)
        for stage, fn in (("read", lambda impl, bs=bs: read_pass(path, impl, bs)),
                          ("flowcache", lambda impl, batches=batches: cache_pass(batches, impl))):
            walls = {k: [] for k in impls}
            cpus = {k: [] for k in impls}
            results = {}
            for _ in range(args.runs):
                for name, impl in impls.items():
                    res, wall, cpu_s = timed(lambda fn=fn, impl=impl: fn(impl))
                    walls[name].append(wall)
                    cpus[name].append(cpu_s)
                    results[name] = res
            if len(set(map(repr, results.values()))) != 1:
                say(f"MISMATCH {stage} batch {bs}: {results}")
                bad += 1
            n = results["python"] if stage == "read" else results["python"][0]
            for name in impls:
                med, cmed = statistics.median(walls[name]), statistics.median(cpus[name])
                rows.append({"stage": stage, "batch": bs, "impl": name, "packets": n, "median_s": med,
                             "pps": n / med, "ns_per_pkt": med / n * 1e9, "pkts_per_cpu_s": n / cmed})
    say("| stage | batch | kernels | median pps | ns/pkt | pkts/CPU-s | compiled / python (CPU) |")
    say("|---|---|---|---|---|---|---|")
    for r in rows:
        py = next(x for x in rows if x["stage"] == r["stage"] and x["batch"] == r["batch"] and x["impl"] == "python")
        ratio = r["pkts_per_cpu_s"] / py["pkts_per_cpu_s"]
        say(f"| {r['stage']} | {r['batch']} | {r['impl']} | {r['pps']:,.0f} | {r['ns_per_pkt']:,.0f} | "
            f"{r['pkts_per_cpu_s']:,.0f} | {ratio:.2f} |")
    say(f"# loadavg {os.getloadavg()}")
    return rows, bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_200_000)
    ap.add_argument("--batch-size", default="4096,256")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--pcap", help="use this pcap instead of the generated one")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    args.batch_sizes = [int(x) for x in args.batch_size.split(",")]
    rows, bad = bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Packets per second of the ``discard accounting NAME`` action beside plain ``sample``, same run.

Usage::

    python tests/bench/bench_discard_accounting.py [--pcap FILE | --packets N] [--batch-sizes 256,4096]
        [--repeat 5] [--json OUT]

The capture (default ``etc/samples/sample.pcap``; ``--packets N`` generates a synthetic one
with bench_pipeline's generator) is decoded once into batches.  One in-process App holds two
interfaces: ``samp0``'s filter says ``then {sample; accept;}`` (sampling instance, rate 1) and
``disc0``'s says ``then discard accounting acc`` (accounting group); both feed an IPFIX flow
cache with timeouts longer than the capture, so what is timed is metering, not export
(``bench_flow_export.py`` measures export).  For each batch size and action two figures:

* ``handler``: the action handler alone (``FlowMonitor.on_sample`` / ``on_discard_accounting``)
  on the whole batch, as the pipeline hands it an :class:`ActionSelection`;
* ``pipeline``: ``App.process`` -- filter evaluation, action routing and the handler.

Each figure is the best of ``--repeat`` passes over every batch after one warm-up pass (the
caches then hold every flow, as on a long-running box).  Not a pass/fail test;
``test_bench_discard_accounting_smoke.py`` runs it on a few hundred packets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLE = ROOT / "etc" / "samples" / "sample.pcap"
ACTIONS = ("sample", "discard accounting")
IFACE = {"sample": "samp0", "discard accounting": "disc0"}


def _bench_module(name: str):
    """Another bench script as a module (they live outside any package)."""
    if name not in sys.modules:
        sys.path.insert(0, str(HERE))
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def config(pcap: Path, workdir: Path) -> dict:
    server = {"flow-server 127.0.0.1": {"port": 9, "version-ipfix": {"template": "t"}}}
    timeouts = {"flow-active-timeout": 1800, "flow-inactive-timeout": 1800}
    out = {"output": {**timeouts, **server}}
    terms = {"sample": {"t": {"then": ["sample", "accept"]}},
             "discard accounting": {"t": {"then": "discard accounting acc"}}}
    filters = {f"f-{IFACE[a]}": {"term": terms[a]} for a in ACTIONS}
    return {
        "system": {"control-socket": str(workdir / "control.sock")},
        "interfaces": {IFACE[a]: {"source": "pcap", "file": str(pcap),
                                  "family": {"any": {"filter": {"input": f"f-{IFACE[a]}"}}}} for a in ACTIONS},
        "firewall": {"family": {"any": {"filter": filters}}},
        "forwarding-options": {"sampling": {"input": {"rate": 1}, "family": {"inet": out, "inet6": out}},
                               "accounting": {"acc": out}},
        "services": {"flow-monitoring": {"version-ipfix": {"template": {"t": {"ipv4-template": True,
                                                                             "ipv6-template": True}}}}},
    }


def build(pcap: Path, workdir: Path):
    from flowplane.testing import build_app

    app = build_app(config(pcap, workdir))
    return app, app.pm.get_plugin("flow-monitor")


def batches_for(app, pcap: Path, batch_size: int, limit: int | None = None) -> dict[str, list]:
    """Decoded batches of *pcap*, one copy per action with that action's interface id."""
    decoded = _bench_module("bench_flow_export").load_decoded(pcap, batch_size)
    if limit is not None:
        decoded = _limit(decoded, limit)
    out = {}
    for action in ACTIONS:
        iid = app.interfaces.id(IFACE[action])
        copies = []
        for b in decoded:
            c = b.select(slice(None))
            c.iface = np.full(len(c), iid, dtype=b.iface.dtype)  # select(slice) shares the column: never write it
            copies.append(c)
        out[action] = copies
    return out


def _limit(batches: list, n: int) -> list:
    out, left = [], n
    for b in batches:
        if left <= 0:
            break
        out.append(b if len(b) <= left else b.select(slice(0, left)))
        left -= len(out[-1])
    return out


def _best_rate(fn, batches: list, repeat: int) -> float:
    packets = sum(len(b) for b in batches)
    for b in batches:  # warm-up: every flow in the cache
        fn(b)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - t0)
    return packets / best if best > 0 else float("inf")


def measure(pcap: Path, batch_sizes: list[int], repeat: int, limit: int | None = None) -> dict:
    from flowplane.batch import ActionSelection

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for bs in batch_sizes:
            app, fm = build(pcap, Path(d))
            batches = batches_for(app, pcap, bs, limit)
            handlers = {"sample": fm.on_sample, "discard accounting": fm.on_discard_accounting}
            row = {"batch_size": bs, "packets": sum(len(b) for b in batches["sample"]),
                   "ip_packets": sum(int((b.status == 0).sum()) for b in batches["sample"])}
            for action in ACTIONS:
                h = handlers[action]
                arg = "acc" if action != "sample" else None
                name = "discard-accounting" if action != "sample" else "sample"
                row[action] = {
                    "handler_pps": _best_rate(lambda b, h=h, name=name,
                                              arg=arg: h([ActionSelection("f", "t", name, arg, b)]),
                                              batches[action], repeat),
                    "pipeline_pps": _best_rate(app.process, batches[action], repeat),
                }
            # what each path metered (the smoke test checks these): every pass saw every packet
            passes = 2 * (1 + repeat)
            row["metered"] = {
                "sample": fm.engines["(default sampling)"].counters["sampled"],
                "discard accounting": fm.accounting["acc"].counters["discarded_packets"],
            }
            row["passes"] = passes
            rows.append(row)
    return {"pcap": str(pcap), "repeat": repeat, "rows": rows}


def table(res: dict, say=print) -> None:
    say(f"discard accounting vs sample, {res['pcap']} (best of {res['repeat']}; packets/s, higher is better)")
    say(f"{'batch':>6} {'action':<20} {'handler pkt/s':>15} {'pipeline pkt/s':>15} {'handler vs sample':>18}")
    for r in res["rows"]:
        base = r["sample"]["handler_pps"]
        for action in ACTIONS:
            x = r[action]
            say(f"{r['batch_size']:>6} {action:<20} {x['handler_pps']:>15,.0f} {x['pipeline_pps']:>15,.0f} "
                f"{x['handler_pps'] / base:>17.2f}x")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pcap", type=Path, help=f"capture to replay (default {SAMPLE.relative_to(ROOT)})")
    p.add_argument("--packets", type=int, help="generate a synthetic capture of N packets instead")
    p.add_argument("--batch-sizes", default="256,4096")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--limit", type=int, help="use only the first N packets")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    pcap = args.pcap or SAMPLE
    if args.packets:
        pcap, _truth, _ = _bench_module("bench_pipeline").ensure_pcap(args.packets, quiet=True)
    res = measure(pcap, [int(x) for x in args.batch_sizes.split(",")], args.repeat, args.limit)
    table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()

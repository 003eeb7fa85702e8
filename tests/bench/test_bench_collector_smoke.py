"""Smoke test of bench_collector.py's machinery with tiny parameters (counts only, no timings).

It builds the datagram pools, runs the paced sender process against ``flowplane collect``
(one worker and two sharing the port) and, when installed, nfcapd -- in a namespace of its own
when root -- and checks that figures come out and add up: at a low rate every offered record
is received by every receiver, the two workers together got them all, and the table prints.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    if "bench_collector" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_collector", HERE / "bench_collector.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_collector"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_collector"]


bc = _load()


def test_pool_oracle_counts_match_v5_headers():
    pool = bc.build_pool(5, streams=2, records_per_stream=100)
    assert pool.records == 200
    for st, counts in zip(pool.streams, pool.counts):
        assert [int.from_bytes(d[2:4], "big") for d in st] == counts


def test_bench_runs_and_produces_figures(capsys):
    args = bc.parse_args(["--formats", "10,5", "--rates", "500", "--duration", "0.5", "--streams", "4",
                          "--records-per-stream", "300", "--workers", "1,2"])
    lines: list[str] = []
    res = bc.bench(args, say=lines.append)
    bc.table(res, args, say=lines.append)
    have_nfcapd = shutil.which("nfcapd") is not None and shutil.which("nfdump") is not None
    receivers = {"flowplane x1", "flowplane x2"} | ({"nfcapd"} if have_nfcapd else set())
    assert {p["receiver"] for p in res.points} == receivers
    assert {p["format"] for p in res.points} == {10, 5}
    for p in res.points:
        assert p["offered_datagrams"] == 250
        assert p["offered_records"] > 250
        assert p["received"] == p["offered_records"], p  # 500 datagrams/s is far below every receiver's limit
        assert p["kernel_drops"] == 0 and p["lossless"]
        if p["receiver"] == "flowplane x2":
            assert len(p["per_worker"]) == 2 and sum(p["per_worker"]) == p["received"]
    for v in (10, 5):
        assert res.decode[v]["records_per_cpu_s"] > 0
    text = "\n".join(lines)
    assert "highest lossless records/s" in text and "decode only" in text
    if have_nfcapd:
        assert "flowplane x1/nfcapd" in text

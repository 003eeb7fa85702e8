"""Smoke test of bench_rpm.py: a tiny run checks that the figures come out and the counts add up -- never
timings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    if "bench_rpm" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_rpm", HERE / "bench_rpm.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_rpm"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_rpm"]


def test_bench_runs_tiny_and_reports_figures():
    br = _load()
    out = br.run_bench(["udp", "icmp"], tests=20, interval=0.05, duration=0.5, ping_count=15, log=lambda *_: None)
    for r in out["results"]:
        assert r["tests"] == 20 and r["offered_pps"] == 400.0
        assert r["probes"] > 0 and r["achieved_pps"] > 0 and r["cpu_us_per_probe"] > 0
        assert 0 <= r["loss_percent"] <= 100 and r["rtt_p50_us"] <= r["rtt_p99_us"]
        assert r["type"] in out["table"]
    ts = out["timestamp_error"]
    assert ts["flowplane"]["samples"] == 15 and ts["flowplane"]["min_us"] > 0
    assert "timestamp error" in out["table"]

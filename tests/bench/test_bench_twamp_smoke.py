"""Smoke test of bench_twamp.py: a tiny run against every reflector it knows (ours always, twampy when a
snapshot is available) checks that the figures come out and the counts add up -- never timings."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    if "bench_twamp" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_twamp", HERE / "bench_twamp.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_twamp"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_twamp"]


bt = _load()


def test_bench_runs_tiny_and_reports_figures():
    cpus = sorted(os.sched_getaffinity(0))
    out = bt.run_bench(["light", "session", "twampy"], [2000.0], duration=0.1, padding=27,
                       reflector_cpu=cpus[-1], sender_cpu=cpus[0], count=200, log=lambda *_: None)
    got = {r["target"]: r for r in out["results"]}
    assert {"flowplane light", "flowplane session"} <= set(got)
    assert ("twampy responder" in got) != ("twampy" in out["skipped"])  # run, or skipped with a reason
    for name, r in got.items():
        assert r["sent"] == 200 and 0 < r["replies"] <= 200, name
        assert r["loss_percent"] == round(100.0 * (200 - r["replies"]) / 200, 2)
        assert r["rtt_p50_us"] is not None and 0 < r["rtt_p50_us"] <= r["rtt_p99_us"], name
        assert r["proc_p50_us"] is not None and 0 <= r["proc_p50_us"] <= r["proc_p99_us"], name
        assert r["cpu_us_per_packet"] is not None and r["cpu_us_per_packet"] >= 0
        assert name in out["table"]
    for name in ("flowplane light", "flowplane session"):
        assert got[name]["proc_p50_us"] > 0  # our reflectors stamp T2 (kernel) and T3 (just before sendto)
    if "twampy responder" in got:
        assert got["twampy responder"]["proc_p50_us"] == 0  # twampy writes one time into T2 and T3


def test_twampy_is_only_ever_a_temporary_copy(tmp_path, monkeypatch):
    """$FLOWPLANE_TWAMPY pointing at a twampy.py file: run from a temporary copy, gone afterwards."""
    fake = tmp_path / "twampy.py"
    fake.write_text("print('twampy')\n")
    monkeypatch.setenv(bt.TWAMPY_ENV, str(fake))
    with bt.twampy_source() as tw:
        assert tw is not None and Path(tw.cwd) != tmp_path
        copied = Path(tw.argv[-1])
        assert copied.read_text() == fake.read_text() and copied.parent == Path(tw.cwd)
    assert not copied.exists()
    monkeypatch.setenv(bt.TWAMPY_ENV, str(tmp_path / "missing"))
    monkeypatch.setattr(bt, "MIRROR_GLOB", str(tmp_path / "none" / "*"))
    with bt.twampy_source() as tw:
        assert tw is None

"""Smoke test of bench_nat_logging.py: a tiny run checks that the figures come out and add up -- never timings."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from netns import skip_reason  # noqa: E402


def _load():
    if "bench_nat_logging" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_nat_logging", HERE / "bench_nat_logging.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_nat_logging"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_nat_logging"]


@pytest.mark.netns
def test_bench_runs_tiny_and_reports_figures():
    reason = skip_reason() or (None if shutil.which("nft") and shutil.which("conntrack") else "needs nft and conntrack")
    if reason:
        pytest.skip(reason)
    out = _load().run_bench(200, [2000.0], log=lambda *_: None)
    got = {r["logger"]: r for r in out["results"]}
    assert "flowplane" in got
    fp = got["flowplane"]
    assert fp["creates"] == fp["deletes"] == 200 and fp["lost"] == 0
    assert fp["received"] == fp["exported"] == 400
    assert fp["create_eps"] > 0 and "flowplane" in out["table"]

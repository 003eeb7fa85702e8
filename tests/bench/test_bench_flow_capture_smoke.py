"""Smoke test of bench_flow_capture.py: it runs on a tiny batch and its figures are sane counts
(no timing is asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    if "bench_flow_capture" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_flow_capture", HERE / "bench_flow_capture.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_flow_capture"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_flow_capture"]


def test_bench_runs_and_prints_a_table(capsys):
    b = _load()
    rows = b.run(64, [10, 40], 0.01)
    assert [r["what"] for r in rows] == ["match/exact", "process/exact", "match/ranges", "process/ranges"] * 2 + \
        ["copy", "sendto loop"]
    assert all(r["pps"] > 0 for r in rows)
    # every tenth criterion is built from a packet of the batch: something matches, not everything
    assert all(0 < r["matched"] < 64 for r in rows[:8])
    copy = rows[8]
    assert copy["matched"] == 64 and copy["send_drops"] == 0
    text = b.table(rows)
    assert text.splitlines()[0].split() == ["what", "criteria", "batch", "matched", "packets/s"]
    assert "copy rate / plain sendto loop" in text

"""Smoke test of bench_port_mirroring.py: the namespaces, the inner child and the table run.

Counts only, never timings: every row offered packets; the mirror rows sent every copy (rate 1)
or exactly 1 in 1000; nothing was dropped; the peer veth received at least what was sent.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
from netns import skip_reason  # noqa: E402


def _load():
    spec = importlib.util.spec_from_file_location("bench_port_mirroring", HERE / "bench_port_mirroring.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bpm = _load()


@pytest.mark.netns
def test_bench_runs_and_counts_add_up():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    res = bpm.run(0.05, 64, [64, 1500], min(os.sched_getaffinity(0)))
    rows = res["rows"]
    whats = {r["what"] for r in rows}
    assert {"plain AF_PACKET loop", "mirror local sendmmsg", "mirror local sendmsg", "mirror gre sendmmsg",
            "mirror erspan sendmmsg", "action rate 1000 (local)", "pipeline count-only",
            "pipeline + port-mirror"} == whats
    assert len(rows) == 2 * len(whats)
    for r in rows:
        assert r["offered"] > 0 and r["offered"] % 64 == 0 and r["wall"] > 0, r
        assert r["drops"] == {}, r
        if r["what"].startswith("action rate 1000"):
            assert r["sent"] == r["offered"] // 1000, r
        elif r["what"] != "pipeline count-only":
            assert r["sent"] == r["offered"], r
    assert res["peer_rx_packets"] >= res["sent_total"] > 0
    text = bpm.table(res)
    assert "plain AF_PACKET loop" in text and "vs plain" in text

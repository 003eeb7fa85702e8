"""Smoke test of bench_inline_monitoring.py's machinery on a few thousand packets (counts only, no timings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    if "bench_inline_monitoring" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_inline_monitoring", HERE / "bench_inline_monitoring.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_inline_monitoring"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_inline_monitoring"]


bim = _load()


def test_measure_counts_every_packet_and_message():
    r = bim.measure(3000, 512, 128, 1)
    c = r["counts"]
    # (a) the transport never ran: every message counted as dropped, none lost silently
    assert c["a"]["records"] == 3000 and c["a"]["not_ready"] == c["a"]["messages"] > 0
    # (b) every message went out through the UDP transport
    assert c["b"]["records"] == 3000 and c["b"]["sent"] == c["b"]["messages"] and c["b"]["dropped"] == 0
    # (c)/(d) replay exactly the messages (b) produced
    assert c["messages_c"] == c["b"]["messages"]
    assert all(len(r["runs"][k]) == 1 and r["runs"][k][0] > 0 for k in "abc")
    text = bim.table([r])
    assert "(a) action, encode only" in text and "(c) plain UDP send loop" in text
    assert f"records 3000, messages {c['b']['messages']}" in text


def test_main_prints_a_table(capsys):
    assert bim.main(["--packets", "1500", "--runs", "1", "--clip", "256", "--batch-size", "256"]) == 0
    out = capsys.readouterr().out
    assert "inline monitoring, 1500 packets" in out and "(b) action, encode + UDP send" in out

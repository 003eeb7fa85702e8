"""Smoke test of bench_video_monitoring.py's machinery on a few streams (counts only, no timings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    if "bench_video_monitoring" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_video_monitoring", HERE / "bench_video_monitoring.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_video_monitoring"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_video_monitoring"]


bvm = _load()


def test_measure_counts_every_datagram_and_every_injected_loss():
    r = bvm.measure(4, 2.0, 256, 1)
    c = r["counts"]
    assert c["flows"] == 4 and c["datagrams"] == r["datagrams"]
    assert c["cc_lost"] == r["lost_ts"] == 4 * 6  # one lost datagram per stream: 3 + 3 payload TS packets
    assert len(r["runs"]["a"]) == len(r["runs"]["b"]) == 1


def test_main_prints_a_table(capsys):
    assert bvm.main(["--streams", "3", "--seconds", "1", "--runs", "1", "--batch-size", "256"]) == 0
    out = capsys.readouterr().out
    assert "video monitoring, 3 streams" in out and "(b) video monitoring hook only" in out
    assert "(c) tstools pcapreport -a" in out

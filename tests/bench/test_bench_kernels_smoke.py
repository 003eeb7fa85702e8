"""Smoke test of bench_kernels.py on the committed sample pcap (figures produced, implementations agree)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[1] / "etc" / "samples" / "sample.pcap"


def test_bench_kernels_smoke(tmp_path, capsys):
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location("bench_kernels", HERE / "bench_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "rows.json"
    assert mod.main(["--pcap", str(SAMPLE), "--batch-size", "1024,97", "--runs", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    from flowplane import kernels

    assert len(rows) == 2 * 2 * len(kernels.implementations())
    assert {r["packets"] for r in rows} == {20_020}
    assert all(r["pps"] > 0 for r in rows)
    assert "| read | 1024 | python |" in capsys.readouterr().out

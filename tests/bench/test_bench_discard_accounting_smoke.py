"""Smoke test of bench_discard_accounting.py on a few hundred packets (counts only, no timings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load():
    name = "bench_discard_accounting"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_bench_runs_and_meters_every_packet_of_each_action(capsys, tmp_path):
    bench = _load()
    out = tmp_path / "r.json"
    res = bench.main(["--limit", "700", "--batch-sizes", "64,512", "--repeat", "1", "--json", str(out)])
    assert [r["batch_size"] for r in res["rows"]] == [64, 512]
    for r in res["rows"]:
        assert r["packets"] == 700 and 0 < r["ip_packets"] <= 700
        # each path saw every packet on every pass: accounting counts each discarded row, sampling
        # at rate 1 each IP row (non-IP rows are counted apart, as 'not_ip')
        assert r["metered"] == {"sample": r["ip_packets"] * r["passes"],
                                "discard accounting": r["packets"] * r["passes"]}
        for action in bench.ACTIONS:
            assert r[action]["handler_pps"] > 0 and r[action]["pipeline_pps"] > 0
    text = capsys.readouterr().out
    assert "discard accounting vs sample" in text and text.count("discard accounting ") >= 2
    assert out.read_text().startswith("{")

"""Smoke test of the benchmark machinery (bench_pipeline.py) on a tiny pcap.

Counts only, never timings (timed tests flake): the frames the pcap source hands out,
the frames decode saw (per Reason, against the generator's truth), the firewall's
term totals (terminating terms + implicit discard == every decoded IP packet), the
plugin action's packets, the `flowplane run --exit-on-eof` subprocess and the
profile grouping.
"""

from __future__ import annotations

import cProfile
import importlib.util
import pstats
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load():
    spec = importlib.util.spec_from_file_location("bench_pipeline", HERE / "bench_pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_pipeline", mod)
    spec.loader.exec_module(mod)
    return mod


bp = _load()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    # malformed frames exercise the scalar decode path and the failure reasons
    pcap, truth, _ = bp.ensure_pcap(20_000, conversations=1000, seed=42, malformed=0.005, data_dir=d,
                                    max_payload=256, quiet=True)
    return pcap, truth, d


def _assert_checks(checks: dict) -> None:
    assert checks
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    assert not bad, bad


@pytest.mark.parametrize("batch_size", [1024, 97])
def test_stage_counts(tiny, batch_size):
    pcap, truth, d = tiny
    assert truth["frames"] == 20_020 and truth["malformed"]["total"] == 100
    for stage in ("a", "b", "c"):
        res, app, plugin = bp.run_stage(stage, pcap, batch_size, d)
        assert res.packets == truth["frames"]
        checks = bp.check_counts(stage, res, app, plugin, truth)
        _assert_checks(checks)
        if stage == "c":
            # spelled out: every decoded IP packet is decided exactly once per family filter
            from flowplane.decode import Reason

            counts = app.decode_counts[app.interfaces.id(bp.IFACE)]
            assert int(counts.sum()) == truth["frames"]
            assert int(counts[Reason.OK]) == truth["ip_packets"]
            decided = 0
            for f in app.graph.firewall:
                c = f.counters()
                decided += sum(v["packets"] for t, v in c["terms"].items() if t not in bp.NON_TERMINATING_TERMS)
                decided += c["implicit_discard"]["packets"]
            assert decided == truth["ip_packets"]
            v4 = app.graph.firewall.get("inet", "edge-v4").counters()
            assert v4["implicit_discard"]["packets"] > 0  # syslog, ssh replies
            assert plugin.packets == v4["terms"]["syn-to-servers"]["packets"] > 0
            assert all(v["packets"] > 0 for t, v in v4["terms"].items() if t not in ("bogons", "ssh-mgmt"))


def test_e2e_flowplane_run(tiny):
    pcap, truth, d = tiny
    res = bp.run_e2e(pcap, 512, d, truth)
    assert res.packets == truth["frames"]
    _assert_checks(res.checks)


def test_profile_groups(tiny):
    pcap, truth, d = tiny
    prof = cProfile.Profile()
    res, _app, _plugin = bp.run_stage("c", pcap, 1024, d, profile=prof)
    groups, rows = bp.profile_groups(pstats.Stats(prof))
    for g in ("read", "decode (vector)", "filter"):
        assert groups.get(g, 0) > 0, groups
    assert rows and rows[0][0] >= rows[-1][0]


def test_bench_driver_table(tiny, capsys):
    pcap, truth, d = tiny
    args = bp.parse_args(["--pcap", str(pcap), "--runs", "1", "--batch-size", "1024", "--stages", "a,b,c",
                          "--cpu", str(sorted(__import__("os").sched_getaffinity(0))[0])])
    import os

    before = os.sched_getaffinity(0)
    try:
        out = bp.bench(args)
    finally:
        os.sched_setaffinity(0, before)
    assert not out["failures"]
    assert [r["stage"] for r in out["results"]] == ["a", "b", "c"]
    assert all(r["packets"] == truth["frames"] for r in out["results"])
    text = capsys.readouterr().out
    assert "(c) read + decode + 10-term filter" in text and "packets/s" in text

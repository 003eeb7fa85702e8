"""Smoke test of bench_flow_export.py's machinery on a tiny pcap (counts only, no timings).

`flowplane replay` as the bench runs it (pinned subprocess, UDP sink counting datagrams), the
in-process replay App the profile uses, the 1-packet-per-flow pcap writer and FlowCache
memory figure, the profile grouping, and -- when nfdump is installed -- nfcapd's totals
against the generator's truth.
"""

from __future__ import annotations

import cProfile
import importlib.util
import os
import pstats
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def _load():
    for name in ("bench_pipeline", "bench_flow_export"):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
    return sys.modules["bench_flow_export"]


fe = _load()
CPU = max(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("fe")
    pcap, truth, _ = sys.modules["bench_pipeline"].ensure_pcap(4000, conversations=300, seed=7, data_dir=d,
                                                             max_payload=200, quiet=True)
    return pcap, truth, d


@pytest.mark.parametrize("version", [10, 5])
def test_replay_subprocess_exports_every_flow(tiny, version):
    pcap, truth, d = tiny
    sink = fe.UdpSink()
    try:
        r = fe.one_run("flowplane", pcap, version, CPU, sink, 1800, d)
    finally:
        sink.close()
    assert r.datagrams > 0 and r.extra["dropped"] == 0
    assert r.extra["sent_datagrams"] == r.datagrams  # every datagram flowplane sent reached the sink
    if version == 5:
        # v5 headers count their records: IPv4 flows only, every one received
        assert r.extra["v5_records_received"] == r.flows_reported < truth["unidirectional_5tuple_keys"]
    else:
        assert r.flows_reported == truth["unidirectional_5tuple_keys"]
    assert r.wall > 0 and r.cpu > 0


def test_inprocess_replay_totals_equal_truth(tiny):
    pcap, truth, d = tiny
    sink = fe.UdpSink()
    prof = cProfile.Profile()
    try:
        r = fe.run_inprocess(pcap, 10, sink.port, 1800, d, batch_size=97, profile=prof)
        sink.settle()
    finally:
        sink.close()
    assert r["frames"] == truth["frames"]
    assert r["cache_packets"] == truth["ip_packets"]
    assert r["records"] == r["flushed"] == truth["unidirectional_5tuple_keys"]
    assert r["dropped"] == 0 and r["datagrams"] == sink.datagrams > 0
    groups, rows = fe.profile_groups(pstats.Stats(prof))
    for area in ("read", "decode", "filter", "flowcache update", "encode", "transport"):
        assert groups.get(area, 0) > 0, (area, groups)
    assert rows and sum(groups.values()) > 0


def test_flows_pcap_and_flowcache_memory(tmp_path):
    n = 5000
    path = fe.write_flows_pcap(tmp_path / "f.pcap", n, n)
    assert path.stat().st_size == 24 + n * 58
    batches = fe.load_decoded(path, 4096)
    b = batches[0]
    assert (b.status == 0).all() and (b.proto == 17).all()
    keys = np.concatenate([np.stack([x.src_lo, x.sport.astype(np.uint64)], 1) for x in batches])
    assert len(np.unique(keys, axis=0)) == n  # one distinct flow per packet
    d = fe.flowcache_memory(path, n, lambda *a, **k: None)
    assert d["flows"] == n and 50 < d["memory_bytes_per_flow"] < 1000


@pytest.mark.peer
@pytest.mark.skipif(not fe.have_nfdump(), reason="nfdump not installed")
def test_nfcapd_totals_equal_truth(tiny):
    pcap, truth, d = tiny
    t = fe.check_run("flowplane", pcap, 9, CPU, 1800, d)
    lost = t.pop("rcvbuf_errors")
    assert t == fe.expected_totals(truth, 9), (t, lost)

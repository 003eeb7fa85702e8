"""sFlow v5 in the collector (plugins/collector/decode_sflow.py) on the corpus's captures, sample counts
cross-checked with tshark."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from flowplane.plugins.collector.decode_sflow import SFLOW_VERSION
from flowplane.plugins.collector.decoder import Decoder
from flowplane.plugins.collector.pcap import udp_payloads

from corpus import FLOWS, needs_corpus

# file -> (records, flow samples, counter samples); sample counts as tshark -d udp.port==6343,sflow shows them
CORPUS = {
    "akvorado_sflow_data-1140": (5, 5, 0),
    "akvorado_sflow_data-encap-vxlan": (1, 1, 0),
    "akvorado_sflow_data-icmpv6": (1, 1, 0),
    "akvorado_sflow_data-qinq": (1, 1, 0),
    "akvorado_sflow_data-sflow-expanded-sample": (1, 1, 0),
    "akvorado_sflow_data-sflow-ipv4-data": (1, 1, 0),
    "ndpi_sflow": (1, 1, 8),
}


def replay(name: str):
    dec = Decoder()
    flows = []
    for d in udp_payloads(str(FLOWS / f"{name}.pcap")):
        dec.feed(d.payload, d.src, d.ts_ns)
        flows += dec.flush()
    return dec, flows, [r for f in flows for r in f.rows()]


@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_counts_and_no_errors(name):
    if not (FLOWS / f"{name}.pcap").exists():
        pytest.skip(f"{name} not in corpus")
    dec, flows, rows = replay(name)
    records, flow_samples, counter_samples = CORPUS[name]
    assert len(rows) == records
    assert dec.counters["sflow-flow-samples"] == flow_samples
    assert dec.counters["sflow-counter-samples"] == counter_samples
    assert not any(k[0] == "decode" for k in dec.counters.drops), dict(dec.counters.drops)
    assert all(f.version == SFLOW_VERSION for f in flows)
    assert all(r["packets"] == 1 and r["bytes"] > 0 and r["first"] == r["last"] for r in rows)


@needs_corpus
def test_corpus_fields():
    _, _, (q,) = replay("akvorado_sflow_data-qinq")
    assert (q["src"], q["dst"], q["sport"], q["dport"], q["proto"]) == ("49.49.49.2", "49.49.49.109", 32017, 443, 6)
    assert q["vlan"] == 1062 and q["dot1qCustomerVlanId"] == 1493
    assert q["exporter"] == "172.17.128.58" and q["domain"] == 100 and q["sampling_interval"] == 4096
    assert q["bytes"] == 80 and q["tcp_flags"] == 0x10 and q["droppedPackets"] == 30
    assert (q["in_if"], q["out_if"]) == (369098852, 369098851)

    _, _, (i6,) = replay("akvorado_sflow_data-icmpv6")
    assert i6["proto"] == 58 and i6["icmp_type"] == 135 and i6["icmp_code"] == 0 and i6["dport"] == 135 << 8
    assert i6["src"] == "fe80::d05b:45ff:feee:5ecf" and i6["bytes"] == 72

    _, _, (vx,) = replay("akvorado_sflow_data-encap-vxlan")
    assert (vx["src"], vx["dst"], vx["proto"], vx["dport"]) == ("192.168.108.40", "192.168.15.14", 17, 4789)

    _, _, (v4,) = replay("akvorado_sflow_data-sflow-ipv4-data")
    assert v4["bytes"] == 1344 and v4["proto"] == 17 and v4["postVlanId"] == 3001  # frame 1390, stripped 1262

    _, _, rows = replay("akvorado_sflow_data-1140")
    assert {r["src"] for r in rows} >= {"2a0c:8880:2:0:185:21:130:38", "104.26.8.24"}
    assert all(r["sampling_interval"] == 1024 for r in rows)

    _, _, (p,) = replay("ndpi_sflow")
    assert p["proto"] == 1 and p["icmp_type"] == 8 and p["sampling_interval"] == 2048 and p["vlan"] == 32


@needs_corpus
@pytest.mark.peer
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_sample_counts_match_tshark(name):
    if shutil.which("tshark") is None:
        pytest.skip("missing tshark")
    out = subprocess.run(["tshark", "-r", str(FLOWS / f"{name}.pcap"), "-d", "udp.port==6343,sflow", "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=,", "-e", "sflow_245.sampletype"],
                         capture_output=True, text=True, timeout=60).stdout
    types = [int(t) for line in out.split() for t in line.split(",") if t]
    _, flow_samples, counter_samples = CORPUS[name]
    assert sum(t in (1, 3) for t in types) == flow_samples
    assert sum(t in (2, 4) for t in types) == counter_samples

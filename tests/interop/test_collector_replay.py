"""Collector against other software: flowplane's own exporter (``flowplane replay``) and nfcapd/nfdump.

* Round trip: ``flowplane replay etc/samples/sample.pcap --export 127.0.0.1:PORT --version 5|9|10`` into
  a running collector gives back exactly the flows exported (count from replay's own summary) and,
  for v9/IPFIX with big timeouts, the capture's IP packet and byte totals.
* nfdump: the corpus NetFlow/IPFIX captures replayed to nfcapd and to our collector store the same
  record counts (skipped when nfcapd/nfdump are missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.plugins.collector.pcap import udp_payloads
from flowplane.service import Service
from flowplane.testing import free_port

from corpus import EXPECTED, corpus_groups, needs_corpus

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "etc" / "samples" / "sample.pcap"
TRUTH = json.loads((REPO / "etc" / "samples" / "sample.pcap.truth.json").read_text())
FLOWPLANE = [sys.executable, "-m", "flowplane"]


async def _collector(make_app, nursery):
    cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "flow-ring": 100}}}
    app = make_app(cfg, plugins=[(collector_plugin, "collector")])
    service = Service(app, control=False)
    nursery.start_soon(service.serve)
    await service.ready.wait()
    return app, service, app.pm.get_plugin("flow-collector")


@pytest.mark.parametrize("version", [5, 9, 10])
async def test_round_trip_flowplane_replay(make_app, version):
    got = {"packets": 0, "bytes": 0, "flows": 0, "v4_packets": 0}

    def count(flows):
        for f in flows:
            got["flows"] += len(f)
            got["packets"] += int(f.data["packets"].sum())
            got["bytes"] += int(f.data["bytes"].sum())
            got["v4_packets"] += int(f.data["packets"][f.data["af"] == 4].sum())

    async with trio.open_nursery() as nursery:
        app, service, c = await _collector(make_app, nursery)
        c.subscribers.append(count)
        port = c.listeners[0].port
        r = await trio.run_process(FLOWPLANE + ["replay", str(SAMPLE), "--export", f"127.0.0.1:{port}",
                                                "--version", str(version), "--active-timeout", "600",
                                                "--inactive-timeout", "600", "--tcp-end-grace", "600"],
                                   capture_stdout=True, capture_stderr=True, check=False)
        assert r.returncode == 0, r.stderr.decode()
        m = re.search(r"(\d+) flows in (\d+) datagrams", r.stderr.decode())
        assert m, r.stderr.decode()
        flows, dgrams = int(m.group(1)), int(m.group(2))
        with trio.fail_after(10):
            while c.counters["datagrams"] < dgrams:
                await trio.sleep(0.05)
        await trio.sleep(0.1)
        c.tick()
        await service.stop()
    assert c.counters["datagrams"] == dgrams
    assert not [k for k in c.counters.drops if k[0] == "decode"], dict(c.counters.drops)
    assert got["flows"] == flows
    if version == 5:
        assert got["packets"] == got["v4_packets"] == TRUTH["ipv4_packets"]
    else:
        assert got["packets"] == TRUTH["ip_packets"]
        assert got["bytes"] == TRUTH["ip_bytes"]


# ---------------------------------------------------------------------------
# nfcapd / nfdump on the same corpus replay


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (apt-get install -y nfdump)")


def _nfcapd_store(tmp_path, payloads: list[bytes]) -> Path:
    """Replay *payloads* to a fresh nfcapd on loopback; the directory it stored them in."""
    port = free_port()
    d = tmp_path / f"nfc{port}"
    d.mkdir()
    p = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(d), "-t", "3600"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for x in payloads:
                s.sendto(x, ("127.0.0.1", port))
                time.sleep(0.001)
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    return d


def _nfcapd_count(tmp_path, payloads: list[bytes]) -> int:
    d = _nfcapd_store(tmp_path, payloads)
    r = subprocess.run(["nfdump", "-R", str(d), "-q", "-o", "csv"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TZ": "UTC"})
    rows = [x for x in r.stdout.splitlines() if x and x[0].isdigit()]
    return len(rows)


def _nfdump_json(tmp_path, payloads: list[bytes]) -> list[dict]:
    """What nfdump stores from the replay, as ``nfdump -o json`` records (times in UTC)."""
    d = _nfcapd_store(tmp_path, payloads)
    r = subprocess.run(["nfdump", "-R", str(d), "-o", "json"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TZ": "UTC"}, check=True)
    return json.loads(r.stdout)


@pytest.mark.peer
@needs_corpus
@pytest.mark.parametrize("name", ["akvorado_nfv5", "akvorado_nat", "pmacct_100-IPFIXv10-CISCO",
                                  "pmacct_101-NFv9-CISCO-cust_primitives",
                                  "pmacct_104-IPFIXv10-IPv6-CISCO-sampling_option", "ndpi_netflowv9"])
def test_same_counts_as_nfdump(tmp_path, name):
    _need("nfcapd", "nfdump")
    from test_collector import make_collector

    payloads = [d.payload for f in corpus_groups()[name] for d in udp_payloads(str(f))]
    ours = make_collector()
    n = sum(len(x) for p in payloads for x in ours.handle([(p, "127.0.0.1")]))
    assert n == EXPECTED[name]
    assert _nfcapd_count(tmp_path, payloads) == n


# ---------------------------------------------------------------------------
# field by field against nfdump: NAT events (v9) and MPLS label stacks (IPFIX)


def _ours(name: str) -> tuple[list[dict], list]:
    """Our rows and CollectedFlows for a corpus capture, decoded in replay order."""
    from test_collector import make_collector

    ours = make_collector()
    flows = []
    for f in corpus_groups()[name]:
        for d in udp_payloads(str(f)):
            flows += ours.handle([(d.payload, "127.0.0.1")], now_ns=d.ts_ns)
    return [r for f in flows for r in f.rows()], flows


def _ms(iso: str) -> str:
    """``2025-06-04T15:09:00.450Z`` (ours) and ``2025-06-04T15:09:00.450`` (nfdump, TZ=UTC) alike."""
    return iso.rstrip("Z")


def _addr(nf: dict, side: str) -> str:
    return nf.get(f"{side}4_addr") or nf.get(f"{side}6_addr")


def _pair(ours: list[dict], theirs: list[dict], key) -> list[tuple[dict, dict]]:
    assert len(ours) == len(theirs) > 0
    a, b = sorted(ours, key=key[0]), sorted(theirs, key=key[1])
    assert [key[0](x) for x in a] == [key[1](x) for x in b]  # the same records, whatever the order
    return list(zip(a, b))


@pytest.mark.peer
@needs_corpus
def test_nat_fields_equal_nfdump(tmp_path):
    """akvorado_nat: NAT events (natEvent, postNAT addresses, postNAPT ports, VRF, event time) record by record."""
    _need("nfcapd", "nfdump")
    payloads = [d.payload for f in corpus_groups()["akvorado_nat"] for d in udp_payloads(str(f))]
    rows, _ = _ours("akvorado_nat")
    theirs = _nfdump_json(tmp_path, payloads)
    assert {x["type"] for x in theirs} == {"EVENT"}
    pairs = _pair(rows, theirs, (lambda r: (r["src"], r["dst"], r["sport"], r["dport"], r["proto"], _ms(r["first"])),
                                 lambda n: (_addr(n, "src"), _addr(n, "dst"), n["src_port"], n["dst_port"],
                                            n["proto"], n["t_event"])))
    for ours, nf in pairs:
        assert ours["postNATSourceIPv4Address"] == nf["src4_xlt_ip"]
        assert ours["postNATDestinationIPv4Address"] == nf["dst4_xlt_ip"]
        assert str(ours["postNAPTSourceTransportPort"]) == nf["src_xlt_port"]
        assert str(ours["postNAPTDestinationTransportPort"]) == nf["dst_xlt_port"]
        assert str(ours["natEvent"]) == nf["nat_event_id"]
        assert str(ours["ingressVRFID"]) == nf["ingress_vrf"]
        assert (ours["packets"], ours["bytes"]) == (nf["in_packets"], nf["in_bytes"])
        # the event time is observationTimeMilliseconds (no flow start/end in these templates)
        assert _ms(ours["first"]) == _ms(ours["last"]) == nf["t_event"]
    assert {r["natEvent"] for r in rows} == {1, 2}  # creates and deletes both checked


def _labels(entry: int) -> str:
    """A 3-byte MPLS label stack entry as nfdump prints it: label-exp-bos."""
    return f"{entry >> 4}-{(entry >> 1) & 7}-{entry & 1}"


@pytest.mark.peer
@needs_corpus
def test_mpls_fields_equal_nfdump(tmp_path):
    """akvorado_mpls: IPv6 addresses, ports, packets, bytes, start/end, interfaces and all ten label entries."""
    _need("nfcapd", "nfdump")
    payloads = [d.payload for f in corpus_groups()["akvorado_mpls"] for d in udp_payloads(str(f))]
    rows, flows = _ours("akvorado_mpls")
    theirs = _nfdump_json(tmp_path, payloads)
    assert {x["type"] for x in theirs} == {"FLOW"}
    pairs = _pair(rows, theirs, (lambda r: (r["src"], r["dst"], r["sport"], r["dport"], r["first"]),
                                 lambda n: (_addr(n, "src"), _addr(n, "dst"), n["src_port"], n["dst_port"],
                                            n["first"] + "Z")))
    stacks = 0
    for ours, nf in pairs:
        assert (ours["proto"], ours["packets"], ours["bytes"]) == (nf["proto"], nf["in_packets"], nf["in_bytes"])
        assert (_ms(ours["first"]), _ms(ours["last"])) == (nf["first"], nf["last"])
        assert (ours["in_if"], ours["out_if"], ours["direction"]) == (nf["input_snmp"], nf["output_snmp"],
                                                                    nf["direction"])
        assert (ours["src_mask"], ours["dst_mask"], ours["src_as"], ours["dst_as"]) == (
            nf["src_mask"], nf["dst_mask"], nf["src_as"], nf["dst_as"])
        entries = [ours.get("mpls1", 0), ours.get("mpls2", 0), ours.get("mpls3", 0)] + [
            ours[f"mplsLabelStackSection{k}"] for k in range(4, 11)]
        assert [_labels(e) for e in entries] == [nf[f"mpls_{k}"] for k in range(1, 11)]
        stacks += sum(1 for e in entries if e)
        assert str(ours["egressVRFID"]) == nf["egress_vrf"]
    assert stacks >= 2 * len(pairs)  # real stacks (two labels each), not zeros compared with zeros
    depth = np.concatenate([f.data["mpls_depth"] for f in flows])
    assert depth.min() >= 2

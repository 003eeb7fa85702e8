"""Discard accounting on the wire: a capture is replayed through filters that sample TCP and discard
UDP with 'discard accounting'; the accounting group exports to one nfcapd and the sampling instance
to another.  Every discarded packet appears in the group's collector, with exact packet and byte
totals (taken from tshark's reading of the capture, not from flowplane), and nowhere else; the
group's cache is flushed at shutdown (timeouts are longer than the capture)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_replay_nfdump import SAMPLE, Nfcapd

pytestmark = pytest.mark.peer
needs_tools = pytest.mark.skipif(not (shutil.which("nfcapd") and shutil.which("nfdump") and shutil.which("tshark")),
                                 reason="nfdump or tshark not installed")

#: well-formed, unencapsulated packets of one protocol; IPv6 counts payload + 40 like IPFIX octetDeltaCount
WELL_FORMED = "!gre && !icmp && !icmpv6 && !_ws.malformed && !_ws.expert.severity >= error"


def tshark_totals(proto: str) -> tuple[int, int]:
    out = subprocess.run(["tshark", "-r", str(SAMPLE), "-Y", f"{proto} && {WELL_FORMED}", "-T", "fields",
                          "-e", "ip.len", "-e", "ipv6.plen"], capture_output=True, text=True, check=True).stdout
    packets = octets = 0
    for line in out.splitlines():
        ip_len, plen = (line.split("\t") + [""])[:2]
        packets += 1
        octets += int(ip_len) if ip_len else int(plen) + 40
    return packets, octets


def config(version: int, sampled_port: int, group_port: int) -> str:
    server = "version9: {template: t}" if version == 9 else "version-ipfix: {template: t}"
    tmpl = "version9" if version == 9 else "version-ipfix"
    split = """\
      term web:
        from: {protocol: tcp}
        then: [sample, accept]
      term junk:
        from: {protocol: udp}
        then: "discard accounting junk"
      term rest:
        then: accept
"""
    return f"""\
interfaces:
  replay0:
    source: pcap
    file: {SAMPLE}
    family inet: {{filter input: split}}
    family inet6: {{filter input: split6}}
firewall:
  family inet:
    filter split:
{split}  family inet6:
    filter split6:
{split}forwarding-options:
  sampling:
    input: {{rate: 1}}
    family inet:
      output:
        flow-active-timeout: 1800
        flow-inactive-timeout: 1800
        flow-server 127.0.0.1: {{port: {sampled_port}, {server}}}
    family inet6:
      output:
        flow-active-timeout: 1800
        flow-inactive-timeout: 1800
        flow-server 127.0.0.1: {{port: {sampled_port}, {server}}}
  accounting:
    junk:
      output:
        flow-active-timeout: 1800
        flow-inactive-timeout: 1800
        flow-server 127.0.0.1: {{port: {group_port}, {server}}}
services:
  flow-monitoring:
    {tmpl}:
      template t: {{ipv4-template: true, ipv6-template: true}}
"""


@needs_tools
@pytest.mark.parametrize("version", [9, 10])
def test_discarded_packets_reach_only_the_accounting_group(tmp_path, version):
    group, sampled = Nfcapd(tmp_path, "group"), Nfcapd(tmp_path, "sampled")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config(version, sampled.port, group.port))
    try:
        run = subprocess.run([sys.executable, "-m", "flowplane", "run", "-c", str(cfg), "--exit-on-eof", "--json",
                              "--log-level", "warning", "--report", "show services accounting flow",
                              "--report", "show firewall"], capture_output=True, text=True, timeout=180)
    finally:
        group.stop()
        sampled.stop()
    assert run.returncode == 0, run.stderr
    udp, tcp = tshark_totals("udp"), tshark_totals("tcp")
    assert udp[0] > 1000 and tcp[0] > 1000  # the capture has both in bulk

    g, s = group.totals(), sampled.totals()
    assert (g["Packets"], g["Bytes"]) == udp
    assert (s["Packets"], s["Bytes"]) == tcp
    if version == 9:  # IPFIX: nfdump counts options data apart from the sequence (see plugins/encoders/ipfix.py)
        assert (g["Sequence failures"], s["Sequence failures"]) == (0, 0)
    # nowhere else: the group holds nothing but UDP, the sampling instance no UDP at all
    assert group.flows("not proto udp") == {}
    assert sampled.flows("proto udp") == {}
    assert {k[0] for k in group.flows()} == {"17"}  # -N: protocol numbers

    reports = _reports(run.stdout)
    flow = {i["name"]: i for i in reports["show services accounting flow"]["instances"]}
    junk = flow["junk"]
    assert junk["kind"] == "accounting"
    assert junk["discarded_packets"] == udp[0] and junk["flow_packets"] == udp[0]
    # the timeouts outlast the capture: every flow of the group left the cache at shutdown
    assert junk["expired"] == {"shutdown": g["Flows"]} and junk["active_flows"] == 0
    assert flow["(default sampling)"]["flow_packets"] == tcp[0]
    counters = {f["filter"]: f for f in reports["show firewall"]["filters"]}
    assert counters["split"]["terms"]["junk"]["packets"] + counters["split6"]["terms"]["junk"]["packets"] == udp[0]


def _reports(stdout: str) -> dict:
    """The --json reports (one JSON document per command, in order), told apart by their keys."""
    docs, dec, i = [], json.JSONDecoder(), 0
    while i < len(stdout):
        if stdout[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(stdout, i)
        docs.append(doc)
    return {"show services accounting flow": next(d for d in docs if isinstance(d, dict) and "instances" in d),
            "show firewall": next(d for d in docs if isinstance(d, dict) and "filters" in d)}


if __name__ == "__main__":  # pragma: no cover - run by hand: prints the truth tshark reads
    print(tshark_totals("udp"), tshark_totals("tcp"), Path(SAMPLE))

"""tests/bench/gen_pcap.py cross-checked with tshark: frame counts, protocol mix and checksums of what it writes."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from test_gen_pcap import CONVERSATIONS, MALFORMED, PACKETS, SEED, gen, read_pcap, summarize


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "t.pcap"
    gen.generate(str(out), PACKETS, CONVERSATIONS, SEED, MALFORMED)
    truth = json.loads(Path(str(out) + ".truth.json").read_text())
    frames = read_pcap(out)
    return out, truth, frames, summarize(frames)


def _tshark_fields(pcap: Path, *fields: str, opts: tuple[str, ...] = ()) -> list[list[str]]:
    cmd = ["tshark", "-r", str(pcap), *opts, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in r.stdout.splitlines()]


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_agrees(tmp_path):
    out = tmp_path / "ts.pcap"
    truth = gen.generate(str(out), PACKETS, CONVERSATIONS, SEED, 0.0)
    rows = _tshark_fields(out, "frame.protocols", "vlan.id")
    assert len(rows) == truth["frames"]
    outer = collections.Counter()
    vlan = arp = 0
    for protos, vid in rows:
        layers = protos.split(":")
        vlan += bool(vid)
        arp += "arp" in layers
        for i, layer in enumerate(layers):
            if layer in ("ip", "ipv6"):
                outer[(layer, layers[i + 1])] += 1
                break
    assert sum(v for (l3, _), v in outer.items() if l3 == "ip") == truth["ipv4_packets"]
    assert sum(v for (l3, _), v in outer.items() if l3 == "ipv6") == truth["ipv6_packets"]
    mine = collections.Counter()
    for (_l3, l4), v in outer.items():
        mine[{"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmpv6": "ICMPv6", "gre": "GRE"}[l4]] += v
    assert dict(mine) == {k: v for k, v in truth["packets_by_protocol"].items() if v}
    assert vlan == truth["vlan_tagged_frames"] and arp == truth["arp_frames"]

    # every checksum tshark can verify is good (1 = Good, 0 = Bad, 2 = Unverified)
    opts = ("-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE")
    statuses = collections.Counter()
    for row in _tshark_fields(out, "ip.checksum.status", "tcp.checksum.status", "udp.checksum.status",
                              "icmp.checksum.status", "icmpv6.checksum.status", opts=opts):
        for cell in row:
            for v in filter(None, cell.split(",")):
                statuses[v] += 1
    assert statuses["1"] > truth["ip_packets"] and set(statuses) == {"1"}


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_counts_frames_with_malformed(sample):
    out, truth, _frames, _s = sample
    rows = _tshark_fields(out, "frame.number")
    assert len(rows) == truth["frames"]

"""flowplane.decode on the corpus's real captures: both decode paths agree, and the fields match tshark's."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowplane.batch import PacketBatch

import frames as F
from corpus import FLOWS as CORPUS
from test_decode import decoded


def read_capture(path: Path) -> tuple[int, list[bytes], list[int]]:
    """(linktype, frames, wirelens) of a classic pcap or a single-interface pcapng."""
    raw = path.read_bytes()
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        return _read_pcapng(raw)
    end = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack_from(end + "I", raw, 20)[0]
    frames, wire, pos = [], [], 24
    while pos + 16 <= len(raw):
        _, _, incl, orig = struct.unpack_from(end + "IIII", raw, pos)
        frames.append(raw[pos + 16:pos + 16 + incl])
        wire.append(orig)
        pos += 16 + incl
    return linktype & 0xFFFF, frames, wire


def _read_pcapng(raw: bytes) -> tuple[int, list[bytes], list[int]]:
    end = "<" if raw[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    linktypes, frames, wire, pos = [], [], [], 0
    while pos + 12 <= len(raw):
        btype, blen = struct.unpack_from(end + "II", raw, pos)
        if btype == 1:
            linktypes.append(struct.unpack_from(end + "H", raw, pos + 8)[0])
        elif btype == 6:
            _, _, _, incl, orig = struct.unpack_from(end + "IIIII", raw, pos + 8)
            frames.append(raw[pos + 28:pos + 28 + incl])
            wire.append(orig)
        pos += blen
    assert len(set(linktypes)) == 1
    return linktypes[0], frames, wire


def corpus_batch(name: str) -> PacketBatch:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    linktype, frames, wire = read_capture(path)
    return decoded(frames, linktype, wire)


def test_capture_vlan():
    b = corpus_batch("nokia_20_eth_802.1q_ipv4_Network_2MB.pcap")
    ok = b.status == 0
    assert ok.mean() > 0.99
    assert (b.vlan[ok] > 0).all() and (b.af[ok] == 4).all() and (b.l3_off[ok] == 18).all()


def test_capture_mpls():
    b = corpus_batch("nokia_02_eth_mpls_ipv4_udp_gtp_ipv4_5MB.pcap")
    mpls = np.isin(b.ethertype, [0x0800]) & (b.mpls_depth > 0)
    assert mpls.mean() > 0.99
    assert (b.status[mpls] == 0).all() and (b.af[mpls] == 4).all() and (b.mpls_depth[mpls] >= 1).all()
    assert (b.proto[mpls] == 17).mean() > 0.99 and (b.mpls1[mpls] & 1).sum() < mpls.sum()


def test_capture_qinq_pppoe():
    b = corpus_batch("ndpi_dns.pcap")
    assert (b.status == 0).all()
    assert (b.vlan_inner > 0).any() and (b.vlan > 0).any()
    assert ((b.sport == 53) | (b.dport == 53)).all()


def test_capture_ipv6():
    b = corpus_batch("ndpi_http_ipv6.pcap")
    assert (b.status == 0).all() and (b.af == 6).all() and np.isin(b.proto, [6, 17]).all()
    tcp = b.proto == 6
    assert tcp.mean() > 0.5 and np.isin(np.minimum(b.sport[tcp], b.dport[tcp]), [80, 443]).all()
    assert ((b.src_hi >> 61) == 1).any() and (b.l4_off == 54).all()  # 2000::/3 global unicast


def test_capture_raw_and_sll_links():
    raw = corpus_batch("nokia_52_rtp.pcap")
    assert (raw.status == 0).all() and (raw.proto == 17).all() and (raw.l3_off == 0).all()
    sll = corpus_batch("pmacct_112-IPFIXv10-CISCO-options-map-reassignment.pcap")
    assert (sll.status == 0).all() and (sll.l3_off == 16).all() and (sll.proto == 17).all()


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.pcap*")) if CORPUS.exists() else [])
def test_every_capture_decodes_the_same_on_both_paths(name):
    b = corpus_batch(name)
    assert b.decoded


# -- tshark cross-check ---------------------------------------------------------------------------------
TSHARK_FIELDS = ("eth.src", "vlan.id", "mpls.label", "ip.src", "ip.dst", "ip.proto", "ip.ttl", "ip.len",
                 "ipv6.src", "ipv6.dst", "ipv6.hlim", "ipv6.plen",
                 "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.flags")


def _tshark_rows(path: Path) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for field in TSHARK_FIELDS:
        cmd += ["-e", field]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("name", ["nokia_20_eth_802.1q_ipv4_Network_2MB.pcap", "nokia_10_http.pcap",
                                  "nokia_02_eth_mpls_ipv4_udp_gtp_ipv4_5MB.pcap", "ndpi_http_ipv6.pcap"])
def test_fields_match_tshark(name):
    b = corpus_batch(name)
    rows = _tshark_rows(CORPUS / name)
    assert len(rows) == len(b)
    checked = 0
    for i, t in enumerate(rows):
        f = dict(zip(TSHARK_FIELDS, t))
        if b.status[i] != 0 or not (f["ip.src"] or f["ipv6.src"]) or b.frag[i] == 2:
            continue
        assert f["eth.src"].replace(":", "") == f"{int(b.src_mac[i]):012x}"
        assert int(f["vlan.id"] or 0) == b.vlan[i]
        assert int(f["mpls.label"] or 0) == b.mpls1[i] >> 4
        if f["ip.src"]:
            assert F.ip4(f["ip.src"]) == int(b.src_lo[i]) & 0xFFFF_FFFF
            assert F.ip4(f["ip.dst"]) == int(b.dst_lo[i]) & 0xFFFF_FFFF
            assert (int(f["ip.proto"]), int(f["ip.ttl"]), int(f["ip.len"])) == (b.proto[i], b.ttl[i], b.ip_len[i])
        else:
            assert F.ip6(f["ipv6.src"]) == (b.src_hi[i], b.src_lo[i])
            assert F.ip6(f["ipv6.dst"]) == (b.dst_hi[i], b.dst_lo[i])
            assert (int(f["ipv6.hlim"]), int(f["ipv6.plen"]) + 40) == (b.ttl[i], b.ip_len[i])
        l4 = {6: "tcp", 17: "udp"}.get(int(b.proto[i]))  # tunnels: tshark's tcp.* may be the inner packet
        if l4:
            assert (int(f[f"{l4}.srcport"]), int(f[f"{l4}.dstport"])) == (b.sport[i], b.dport[i])
        if l4 == "tcp":
            assert int(f["tcp.flags"], 16) & 0xFF == b.tcp_flags[i]
        checked += 1
    assert checked > 0.9 * len(b)

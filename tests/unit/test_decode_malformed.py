"""Malformed corpus: truncations at every length, lying lengths, endless stacks, random bytes.

Each case runs through :func:`decode` (fast path + deferred rows) and
:func:`decode_scalar`; both must agree, nothing may raise, the counts must
add up and every frame must get the reason the case expects.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from flowplane.batch import (
    DECODED_COLUMNS,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    PacketBatch,
)
from flowplane.decode import Reason, decode, decode_scalar

import frames as F

R = Reason
HTS, TRUNC, BAD_EXT = R.HEADER_TOO_SMALL, R.TRUNCATED_L4, R.BAD_EXTENSION_HEADER


def decode_both(frames: list[bytes], linktype: int = LINKTYPE_ETHERNET, wirelen=None) -> PacketBatch:
    fast = PacketBatch.from_frames(frames, linktype=linktype, wirelen=wirelen)
    slow = PacketBatch.from_frames(frames, linktype=linktype, wirelen=wirelen)
    counts = decode(fast)
    assert counts.sum() == len(frames)
    np.testing.assert_array_equal(counts, decode_scalar(slow))
    np.testing.assert_array_equal(counts, np.bincount(fast.status, minlength=len(Reason)))
    for name in DECODED_COLUMNS:
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert_failed_rows_are_clean(fast)
    return fast


def assert_failed_rows_are_clean(b: PacketBatch) -> None:
    """Failed rows carry nothing past their failing layer."""
    bad = b.status != 0
    for name in ("sport", "dport", "tcp_flags", "icmp_type", "icmp_code", "gre_proto"):
        assert not getattr(b, name)[bad].any(), name
    assert (b.payload_off[bad] == -1).all()
    not_l4 = bad & ~np.isin(b.status, [R.TRUNCATED_L4, R.BAD_TCP_HEADER_LENGTH])
    for name in ("af", "proto", "ttl", "ip_len", "src_lo", "dst_lo", "ip_hlen", "frag"):
        assert not getattr(b, name)[not_l4].any(), name
    assert (b.l4_off[not_l4] == -1).all()


def expected_reason(cut: int, thresholds: list[tuple[int, Reason]], final: Reason) -> Reason:
    for limit, reason in thresholds:
        if cut < limit:
            return reason
    return final


# (name, linktype, frame, [(cut below, reason), ...], reason for longer cuts) for snap-length cuts
SNAP_CASES = [
    ("eth-ipv4-tcp", LINKTYPE_ETHERNET, F.eth_ipv4_tcp(), [(34, HTS), (54, TRUNC)], R.OK),
    ("eth-ipv4-tcp-options-payload", LINKTYPE_ETHERNET,
     F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(options=b"\x02\x04\x05\xb4" * 3, payload=b"x" * 10))),
     [(34, HTS), (54, TRUNC)], R.OK),
    ("eth-ipv4-options-udp", LINKTYPE_ETHERNET, F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(), options=b"\x01" * 8)),
     [(34, HTS), (42, R.BAD_IP_HEADER_LENGTH), (50, TRUNC)], R.OK),
    ("eth-ipv4-icmp", LINKTYPE_ETHERNET, F.eth(F.ETH_IPV4, F.ipv4(F.ICMP, F.icmp(payload=b"p" * 8))),
     [(34, HTS), (42, TRUNC)], R.OK),
    ("eth-ipv4-gre", LINKTYPE_ETHERNET, F.eth(F.ETH_IPV4, F.ipv4(F.GRE, F.gre(key=1, payload=F.ipv4()))),
     [(34, HTS), (38, TRUNC)], R.OK),
    ("eth-ipv4-sctp", LINKTYPE_ETHERNET, F.eth(F.ETH_IPV4, F.ipv4(F.SCTP, F.sctp())), [(34, HTS), (46, TRUNC)], R.OK),
    ("eth-ipv4-later-fragment", LINKTYPE_ETHERNET, F.eth(F.ETH_IPV4, F.ipv4(F.TCP, b"d" * 16, frag_off=2)),
     [(34, HTS)], R.OK),
    ("vlan-ipv4-udp", LINKTYPE_ETHERNET, F.eth_vlan([10], F.ETH_IPV4, F.ipv4(F.UDP, F.udp())),
     [(38, HTS), (46, TRUNC)], R.OK),
    ("qinq-ipv6-udp", LINKTYPE_ETHERNET, F.eth_vlan([10, 20], F.ETH_IPV6, F.ipv6(F.UDP, F.udp())),
     [(62, HTS), (70, TRUNC)], R.OK),
    ("qinq-arp", LINKTYPE_ETHERNET, F.eth_vlan([10, 20], F.ETH_ARP, b"a" * 28), [(22, HTS)], R.NOT_IP),
    ("mpls2-ipv4-udp", LINKTYPE_ETHERNET, F.eth(F.ETH_MPLS, F.mpls_stack([5, 6]) + F.ipv4(F.UDP, F.udp())),
     [(42, HTS), (50, TRUNC)], R.OK),
    ("vlan-mpls1-ipv6-tcp", LINKTYPE_ETHERNET,
     F.eth_vlan([7], F.ETH_MPLS, F.mpls_stack([5]) + F.ipv6(F.TCP, F.tcp())), [(62, HTS), (82, TRUNC)], R.OK),
    ("pppoe-ipv4-udp", LINKTYPE_ETHERNET, F.eth(F.ETH_PPPOE, F.pppoe_session(0x21, F.ipv4(F.UDP, F.udp()))),
     [(42, HTS), (50, TRUNC)], R.OK),
    ("eth-ipv6-tcp", LINKTYPE_ETHERNET, F.eth_ipv6_tcp(), [(54, HTS), (74, TRUNC)], R.OK),
    ("eth-ipv6-hbh-ah-udp", LINKTYPE_ETHERNET,
     F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.AH, size=16) + F.v6_ah(F.UDP) + F.udp())),
     [(54, HTS), (82, BAD_EXT), (90, TRUNC)], R.OK),
    ("eth-ipv6-later-fragment", LINKTYPE_ETHERNET,
     F.eth(F.ETH_IPV6, F.ipv6(F.FRAGMENT, F.v6_frag(F.TCP, offset=9) + b"f" * 8)), [(54, HTS), (62, BAD_EXT)], R.OK),
    ("eth-arp", LINKTYPE_ETHERNET, F.arp(), [(14, HTS)], R.NOT_IP),
    ("sll-ipv4-udp", LINKTYPE_LINUX_SLL, F.sll(F.ETH_IPV4, F.ipv4(F.UDP, F.udp())), [(36, HTS), (44, TRUNC)], R.OK),
    ("sll-vlan-ipv4-udp", LINKTYPE_LINUX_SLL, F.sll(0x8100, F.vlan_tag(3, F.ETH_IPV4) + F.ipv4(F.UDP, F.udp())),
     [(40, HTS), (48, TRUNC)], R.OK),
    ("raw-ipv4-tcp", LINKTYPE_RAW, F.ipv4(F.TCP, F.tcp()), [(20, HTS), (40, TRUNC)], R.OK),
    ("raw-ipv6-icmpv6", LINKTYPE_RAW, F.ipv6(F.ICMPV6, F.icmp(128)), [(40, HTS), (48, TRUNC)], R.OK),
    ("ipv6-link-udp", LINKTYPE_IPV6, F.ipv6(F.UDP, F.udp()), [(40, HTS), (48, TRUNC)], R.OK),
]


@pytest.mark.parametrize("name,linktype,frame,thresholds,final", SNAP_CASES, ids=[c[0] for c in SNAP_CASES])
def test_snap_length_cut_at_every_length(name, linktype, frame, thresholds, final):
    cuts = [frame[:n] for n in range(len(frame) + 1)]
    b = decode_both(cuts, linktype, wirelen=[len(frame)] * len(cuts))
    want = [expected_reason(n, thresholds, final) for n in range(len(frame) + 1)]
    assert [Reason(s) for s in b.status] == want


# frames really that short on the wire (wirelen == caplen): the IP length lies
WIRE_CASES = [
    ("eth-ipv4-tcp", F.eth_ipv4_tcp(), 34, 54),
    ("vlan-ipv4-udp", F.eth_vlan([10], F.ETH_IPV4, F.ipv4(F.UDP, F.udp(payload=b"z" * 5))), 38, 51),
    ("eth-ipv6-hbh-tcp", F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.TCP) + F.tcp())), 54, 82),
    ("mpls-ipv4-udp", F.eth(F.ETH_MPLS, F.mpls_stack([9]) + F.ipv4(F.UDP, F.udp())), 38, 46),
]


@pytest.mark.parametrize("name,frame,ip_min,ip_end", WIRE_CASES, ids=[c[0] for c in WIRE_CASES])
def test_wire_truncated_frames_have_a_bad_total_length(name, frame, ip_min, ip_end):
    cuts = [frame[:n] for n in range(len(frame) + 1)] + [frame + b"\0" * 10]  # last: Ethernet padding
    b = decode_both(cuts)
    want = [HTS if n < ip_min else R.BAD_TOTAL_LENGTH if n < ip_end else R.OK for n in range(len(frame) + 1)]
    assert [Reason(s) for s in b.status] == want + [R.OK]


WIRELEN = 2000  # the corpus frames are snap-length cuts of 2000-byte packets unless a length lies


def _v4(**kw) -> bytes:
    return F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(), **kw))


MALFORMED = [
    *[(f"ihl-{i}", _v4(ihl=i), R.BAD_IP_HEADER_LENGTH) for i in range(5)],
    ("ihl-past-capture", _v4(ihl=15), R.BAD_IP_HEADER_LENGTH),
    ("total-below-ihl", _v4(total=12), R.BAD_TOTAL_LENGTH),
    ("total-zero-tso", _v4(total=0), R.BAD_TOTAL_LENGTH),
    ("total-past-wire", _v4(total=WIRELEN), R.BAD_TOTAL_LENGTH),
    ("total-leaves-no-udp", _v4(total=24), TRUNC),
    ("v4-version-6", _v4(version=6), R.BAD_IP_VERSION),
    ("v4-version-0", _v4(version=0), R.BAD_IP_VERSION),
    ("v6-version-4", F.eth(F.ETH_IPV6, F.ipv6(F.UDP, F.udp(), version=4)), R.BAD_IP_VERSION),
    ("v6-plen-past-wire", F.eth(F.ETH_IPV6, F.ipv6(F.UDP, F.udp(), plen=WIRELEN)), R.BAD_TOTAL_LENGTH),
    ("v6-plen-short", F.eth(F.ETH_IPV6, F.ipv6(F.UDP, F.udp(), plen=4)), TRUNC),
    *[(f"tcp-doff-{d}", F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(data_offset=d))), R.BAD_TCP_HEADER_LENGTH)
      for d in range(5)],
    ("tcp-doff-past-ip", F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(data_offset=15))), TRUNC),
    ("endless-vlan", F.eth(0x8100, F.vlan_tag(1, 0x8100) * 10), R.VLAN_TOO_DEEP),
    ("three-tags", F.eth_vlan([1, 2, 3], F.ETH_IPV4, _v4()[14:], tpids=[0x9100, 0x88A8, 0x8100]), R.VLAN_TOO_DEEP),
    ("vlan-cut", F.eth(0x8100, b"\0\1"), HTS),
    ("mpls-no-bos", F.eth(F.ETH_MPLS, F.mpls_stack(list(range(20)), bos=False)), R.MPLS_TOO_DEEP),
    ("mpls-nine", F.eth(F.ETH_MPLS, F.mpls_stack(list(range(9))) + _v4()[14:]), R.MPLS_TOO_DEEP),
    ("mpls-no-bos-short", F.eth(F.ETH_MPLS, F.mpls_stack([1, 2], bos=False)), HTS),
    ("mpls-empty-payload", F.eth(F.ETH_MPLS, F.mpls_stack([1])), HTS),
    ("mpls-control-word", F.eth(F.ETH_MPLS, F.mpls_stack([1]) + b"\0" * 30), R.NOT_IP),
    ("mpls-bad-ipv4", F.eth(F.ETH_MPLS, F.mpls_stack([1]) + F.ipv4(F.UDP, F.udp(), ihl=3)),
     R.BAD_IP_HEADER_LENGTH),
    ("v6-ext-loop", F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.HOP_BY_HOP) * 40)), BAD_EXT),
    ("v6-ext-cut", F.eth(F.ETH_IPV6, F.ipv6(F.ROUTING, F.v6_ext(F.UDP, size=32) + F.udp()))[:74], BAD_EXT),
    ("v6-ext-past-plen", F.eth(F.ETH_IPV6, F.ipv6(F.DEST_OPTS, F.v6_ext(F.UDP, size=40) + F.udp(), plen=24)),
     BAD_EXT),
    ("v6-ext-header-only-bytes", F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, b"\x06\x00\x00")), BAD_EXT),
    ("v6-ah-cut", F.eth(F.ETH_IPV6, F.ipv6(F.AH, F.v6_ah(F.TCP, size=24) + F.tcp()))[:70], BAD_EXT),
    ("empty", b"", HTS),
    ("runt", b"\xff" * 13, HTS),
    ("ethertype-only", F.eth(F.ETH_IPV4), HTS),
    ("llc-length-field", F.eth(0x0026, b"\x42\x42\x03" + b"\0" * 35), R.NOT_IP),
]


def test_malformed_corpus_gets_the_expected_reasons():
    names, frames_, want = zip(*MALFORMED)
    b = decode_both(list(frames_), wirelen=[WIRELEN] * len(frames_))
    got = {n: Reason(s) for n, s in zip(names, b.status)}
    assert got == dict(zip(names, want))


def test_malformed_rows_in_a_batch_of_good_ones():
    good = [F.eth_ipv4_tcp(), F.eth_ipv6_tcp(), F.eth_vlan([4], F.ETH_IPV4, _v4()[14:])]
    mixed = [f for case in MALFORMED for f in (case[1], *good)]
    b = decode_both(mixed, wirelen=[WIRELEN] * len(mixed))
    assert (b.status[1::4] == 0).all() and (b.status[2::4] == 0).all() and (b.status[3::4] == 0).all()
    assert [Reason(s) for s in b.status[::4]] == [case[2] for case in MALFORMED]


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, LINKTYPE_IPV6, 999])
def test_random_bytes_never_raise(linktype):
    rnd = random.Random(linktype)
    frames_ = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 120))) for _ in range(3000)]
    # bias towards deeper layers: random bytes behind real headers
    heads = [F.eth(F.ETH_IPV4), F.eth(F.ETH_IPV6), F.eth(F.ETH_MPLS), F.eth(0x8100), b"\x45", b"\x60"]
    frames_ += [rnd.choice(heads) + f for f in frames_[:2000]]
    b = decode_both(frames_, linktype)
    if linktype == 999:
        assert (b.status == R.UNSUPPORTED_LINKTYPE).all()


def test_caplen_beyond_the_buffer_is_clipped():
    frame = F.eth_ipv4_tcp()
    data = np.frombuffer(frame, dtype=np.uint8)
    b = PacketBatch(data, np.array([0, 40, len(frame), -5]), np.array([len(frame) + 100, 100, 7, 10]),
                    np.array([100] * 4), np.zeros(4))
    counts = decode(b)
    assert counts.sum() == 4
    assert b.status.tolist() == [0, R.NOT_IP, HTS, HTS]  # row 1: 14 bytes left in the buffer

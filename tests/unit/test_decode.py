"""flowplane.decode: every layer and field against known values, both paths (real captures: tests/interop)."""

from __future__ import annotations

import numpy as np
import pytest

from flowplane.batch import (
    DECODED_COLUMNS,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    PacketBatch,
)
from flowplane.decode import REASON_TEXT, Reason, decode, decode_scalar

import frames as F

V4M = 0x0000_FFFF_0000_0000


# -- helpers -------------------------------------------------------------------
def decoded(frames: list[bytes], linktype: int = LINKTYPE_ETHERNET, wirelen=None) -> PacketBatch:
    """Decode through both paths, check they agree, return the fast-path batch."""
    fast = PacketBatch.from_frames(frames, linktype=linktype, wirelen=wirelen)
    slow = PacketBatch.from_frames(frames, linktype=linktype, wirelen=wirelen)
    counts = decode(fast)
    assert_same_columns(fast, slow, decode_scalar(slow), counts)
    return fast


def assert_same_columns(fast: PacketBatch, slow: PacketBatch, slow_counts, fast_counts) -> None:
    assert fast.decoded and slow.decoded
    np.testing.assert_array_equal(fast_counts, slow_counts)
    for name, dtype in DECODED_COLUMNS.items():
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype), name
        bad = np.flatnonzero(a != b)
        assert bad.size == 0, f"{name} differs at rows {bad[:5]}: fast {a[bad[:5]]} scalar {b[bad[:5]]}"


def row(frame: bytes, linktype: int = LINKTYPE_ETHERNET, wirelen: int | None = None) -> dict[str, int]:
    b = decoded([frame], linktype, None if wirelen is None else [wirelen])
    return {name: int(getattr(b, name)[0]) for name in DECODED_COLUMNS}


def check(frame: bytes, linktype: int = LINKTYPE_ETHERNET, **expected) -> dict[str, int]:
    r = row(frame, linktype)
    got = {k: r[k] for k in expected}
    assert got == expected
    return r


# -- API -------------------------------------------------------------------------
def test_reason_text_covers_every_reason():
    assert set(REASON_TEXT) == set(Reason)
    assert Reason.OK == 0 and Reason.UNSUPPORTED_LINKTYPE == 10


def test_empty_batch():
    b = PacketBatch.empty()
    counts = decode(b)
    assert counts.tolist() == [0] * len(Reason) and b.decoded
    for name, dtype in DECODED_COLUMNS.items():
        assert getattr(b, name).dtype == np.dtype(dtype) and len(getattr(b, name)) == 0


def test_counts_and_columns_for_a_mixed_batch():
    frames = [F.eth_ipv4_tcp(), F.arp(), b"\x00" * 5, F.eth_ipv6_tcp()]
    b = decoded(frames)
    counts = decode(b)
    assert counts.sum() == 4 and counts[Reason.OK] == 2 and counts[Reason.NOT_IP] == 1
    assert counts[Reason.HEADER_TOO_SMALL] == 1
    assert b.status.tolist() == [0, Reason.NOT_IP, Reason.HEADER_TOO_SMALL, 0]


def test_unsupported_linktype_marks_every_row():
    b = decoded([F.eth_ipv4_tcp(), b""], linktype=147)
    assert b.status.tolist() == [Reason.UNSUPPORTED_LINKTYPE] * 2
    assert b.l3_off.tolist() == [-1, -1] and b.src_mac.tolist() == [0, 0]


# -- link layer ---------------------------------------------------------------------
def test_ethernet_ipv4_tcp_fields():
    f = F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(40000, 443, flags=F.SYN | F.ACK, payload=b"hello"),
                                 src="10.1.2.3", dst="192.0.2.200", tos=0xB8, ttl=57, ident=0xBEEF))
    check(f, status=0, af=4, ethertype=0x0800, dst_mac=F.mac_int(F.DST_MAC), src_mac=F.mac_int(F.SRC_MAC),
          vlan=0, vlan_inner=0, mpls_depth=0, l3_off=14, l4_off=34, payload_off=54,
          src_hi=0, src_lo=V4M | F.ip4("10.1.2.3"), dst_hi=0, dst_lo=V4M | F.ip4("192.0.2.200"),
          proto=6, tos=0xB8, ttl=57, ip_len=45, ip_id=0xBEEF, ip_hlen=20, frag=0, frag_off=0,
          sport=40000, dport=443, tcp_flags=0x12, icmp_type=0, icmp_code=0, gre_proto=0)


def test_not_ip_keeps_link_columns():
    check(F.arp(), status=Reason.NOT_IP, af=0, ethertype=0x0806, src_mac=F.mac_int(F.SRC_MAC),
          l3_off=-1, l4_off=-1, payload_off=-1, proto=0)


@pytest.mark.parametrize("tpid", [0x8100, 0x88A8, 0x9100])
def test_single_vlan_tag(tpid):
    f = F.eth_vlan([100], F.ETH_IPV4, F.ipv4(F.UDP, F.udp(5000, 53)), tpids=[tpid])
    check(f, status=0, vlan=100, vlan_inner=0, ethertype=0x0800, l3_off=18, l4_off=38,
          payload_off=46, sport=5000, dport=53, proto=17)


def test_qinq_outer_and_inner_vlan():
    f = F.eth_vlan([300, 4001], F.ETH_IPV6, F.ipv6(F.TCP, F.tcp(1, 2)))
    check(f, status=0, vlan=300, vlan_inner=4001, ethertype=0x86DD, l3_off=22, af=6, sport=1, dport=2)


def test_vlan_priority_bits_are_not_part_of_the_id():
    f = F.eth(0x8100, F.vlan_tag(7, F.ETH_IPV4, pcp=5) + F.ipv4(F.UDP, F.udp()))
    check(f, status=0, vlan=7)


def test_three_vlan_tags_are_too_deep():
    f = F.eth_vlan([1, 2, 3], F.ETH_IPV4, F.ipv4(F.UDP, F.udp()), tpids=[0x88A8, 0x8100, 0x8100])
    check(f, status=Reason.VLAN_TOO_DEEP, vlan=0, ethertype=0, src_mac=F.mac_int(F.SRC_MAC), l3_off=-1)


def test_vlan_non_ip_payload():
    check(F.eth_vlan([5], F.ETH_ARP, b"\0" * 28), status=Reason.NOT_IP, vlan=5, ethertype=0x0806)


def test_mpls_stack_of_two_over_ipv4():
    f = F.eth(F.ETH_MPLS, F.mpls_stack([16, 299792], exp=5) + F.ipv4(F.UDP, F.udp(2152, 2152)))
    check(f, status=0, mpls_depth=2, mpls1=F.mpls_lse(16, exp=5), mpls2=F.mpls_lse(299792, exp=5, bos=True),
          mpls3=0, ethertype=0x0800, af=4, l3_off=22, l4_off=42, sport=2152, dport=2152)


def test_mpls_keeps_top_three_of_a_deeper_stack():
    f = F.eth(F.ETH_MPLS, F.mpls_stack([1, 2, 3, 4, 5]) + F.ipv6(F.UDP, F.udp()))
    check(f, status=0, mpls_depth=5, mpls1=F.mpls_lse(1), mpls2=F.mpls_lse(2), mpls3=F.mpls_lse(3),
          af=6, l3_off=14 + 20, ethertype=0x86DD)


def test_mpls_under_vlan_with_non_ip_payload():
    f = F.eth_vlan([42], F.ETH_MPLS, F.mpls_stack([100]) + b"\x00\x00\x00\x00" + F.eth(F.ETH_IPV4))
    check(f, status=Reason.NOT_IP, vlan=42, mpls_depth=1, mpls1=F.mpls_lse(100, bos=True),
          ethertype=0x8847, l3_off=-1)


def test_mpls_too_deep_and_without_bottom():
    deep = F.eth(F.ETH_MPLS, F.mpls_stack(list(range(9))) + F.ipv4(F.UDP, F.udp()))
    check(deep, status=Reason.MPLS_TOO_DEEP, mpls_depth=0, mpls1=0)
    eight = F.eth(F.ETH_MPLS, F.mpls_stack(list(range(8))) + F.ipv4(F.UDP, F.udp()))
    check(eight, status=0, mpls_depth=8)
    no_bos = F.eth(F.ETH_MPLS, F.mpls_stack(list(range(12)), bos=False))
    check(no_bos, status=Reason.MPLS_TOO_DEEP)


def test_pppoe_session_ipv4():
    f = F.eth(F.ETH_PPPOE, F.pppoe_session(0x0021, F.ipv4(F.UDP, F.udp(68, 67))))
    check(f, status=0, af=4, ethertype=0x0800, l3_off=22, sport=68, dport=67)
    lcp = F.eth(F.ETH_PPPOE, F.pppoe_session(0xC021, b"\x01\x01\x00\x04"))
    check(lcp, status=Reason.NOT_IP, ethertype=F.ETH_PPPOE)


def test_linux_sll():
    f = F.sll(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(22, 50000)))
    check(f, LINKTYPE_LINUX_SLL, status=0, dst_mac=0, src_mac=F.mac_int(F.SRC_MAC), l3_off=16,
          l4_off=36, sport=22, dport=50000, ethertype=0x0800)
    tagged = F.sll(0x8100, F.vlan_tag(9, F.ETH_IPV6) + F.ipv6(F.UDP, F.udp()))
    check(tagged, LINKTYPE_LINUX_SLL, status=0, vlan=9, l3_off=20, af=6)
    check(F.sll(F.ETH_IPV4, b"", addr=b"\1\2\3\4"), LINKTYPE_LINUX_SLL, status=Reason.HEADER_TOO_SMALL,
          src_mac=0, l3_off=16)
    check(b"\0" * 15, LINKTYPE_LINUX_SLL, status=Reason.HEADER_TOO_SMALL, l3_off=-1)


def test_raw_links():
    v4 = F.ipv4(F.UDP, F.udp(1, 2))
    v6 = F.ipv6(F.UDP, F.udp(3, 4))
    check(v4, LINKTYPE_RAW, status=0, af=4, ethertype=0x0800, l3_off=0, l4_off=20, sport=1)
    check(v6, LINKTYPE_RAW, status=0, af=6, ethertype=0x86DD, l3_off=0, l4_off=40, sport=3)
    check(b"\x50" + v4[1:], LINKTYPE_RAW, status=Reason.BAD_IP_VERSION, l3_off=0, ethertype=0)
    check(b"", LINKTYPE_RAW, status=Reason.HEADER_TOO_SMALL, l3_off=-1)
    check(v4, LINKTYPE_IPV4, status=0, af=4, l3_off=0, dport=2)
    check(v6, LINKTYPE_IPV6, status=0, af=6, l3_off=0, dport=4)
    check(v6, LINKTYPE_IPV4, status=Reason.BAD_IP_VERSION, l3_off=0, af=0)
    check(b"", LINKTYPE_IPV6, status=Reason.HEADER_TOO_SMALL, l3_off=0)


# -- IPv4 ----------------------------------------------------------------------------------
def test_ipv4_options_move_l4():
    f = F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(7, 8), options=b"\x94\x04\x00\x00" * 2))
    check(f, status=0, ip_hlen=28, l4_off=42, payload_off=62, sport=7, dport=8)


def test_ipv4_fragments():
    first = F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(9, 10, b"x" * 16), mf=True))
    check(first, status=0, frag=1, frag_off=0, l4_off=34, sport=9, dport=10)
    later = F.eth(F.ETH_IPV4, F.ipv4(F.UDP, b"y" * 24, frag_off=3, mf=True))
    check(later, status=0, frag=2, frag_off=3, l4_off=-1, payload_off=-1, sport=0, dport=0, proto=17)
    last = F.eth(F.ETH_IPV4, F.ipv4(F.TCP, b"z" * 4, frag_off=185))
    check(last, status=0, frag=2, frag_off=185, l4_off=-1)
    tiny_first = F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp()[:8], mf=True))
    check(tiny_first, status=Reason.TRUNCATED_L4, frag=1, l4_off=34, sport=0)


def test_ipv4_lengths():
    check(F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(), ihl=4)), status=Reason.BAD_IP_HEADER_LENGTH, l3_off=14, af=0)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.UDP, b"", ihl=15)), status=Reason.BAD_IP_HEADER_LENGTH)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(), total=19)), status=Reason.BAD_TOTAL_LENGTH,
          ethertype=0x0800, l3_off=14, src_lo=0)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(), total=0)), status=Reason.BAD_TOTAL_LENGTH)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(), total=29)), status=Reason.BAD_TOTAL_LENGTH)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.UDP, F.udp(), total=27)), status=Reason.TRUNCATED_L4, l4_off=34,
          ip_len=27, sport=0, payload_off=-1)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(data_offset=4))), status=Reason.BAD_TCP_HEADER_LENGTH)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(data_offset=6))), status=Reason.TRUNCATED_L4)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(), version=6)), status=Reason.BAD_IP_VERSION)


def test_ipv4_padding_and_snaplen():
    padded = F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(flags=F.ACK))) + b"\0" * 6  # 60-byte minimum frame
    check(padded, status=0, ip_len=40, payload_off=54)
    full = F.eth(F.ETH_IPV4, F.ipv4(F.TCP, F.tcp(options=b"\x01" * 12, payload=b"p" * 100)))
    r = row(full[:60], wirelen=len(full))  # snaplen cuts TCP options: fine, payload_off past caplen
    assert r["status"] == 0 and r["payload_off"] == 66 and r["sport"] == 1234
    assert row(full[:53], wirelen=len(full))["status"] == Reason.TRUNCATED_L4
    assert row(full[:33], wirelen=len(full))["status"] == Reason.HEADER_TOO_SMALL


def test_unknown_wire_length_counts_as_the_captured_length():
    f = F.eth_ipv4_tcp()
    b = decoded([f, f[:40]], wirelen=[0, 0])
    assert b.status.tolist() == [0, Reason.BAD_TOTAL_LENGTH]  # whole frame fine; the cut one is short


# -- IPv6 --------------------------------------------------------------------------------
def test_ipv6_fields():
    f = F.eth(F.ETH_IPV6, F.ipv6(F.UDP, F.udp(546, 547, b"abcd"), src="fe80::1:2:3:4", dst="ff02::1:2",
                                 tc=0xAB, flow=0x12345, hops=1))
    shi, slo = F.ip6("fe80::1:2:3:4")
    dhi, dlo = F.ip6("ff02::1:2")
    check(f, status=0, af=6, tos=0xAB, ttl=1, ip_len=52, ip_hlen=40, proto=17, src_hi=shi, src_lo=slo,
          dst_hi=dhi, dst_lo=dlo, l3_off=14, l4_off=54, payload_off=62, sport=546, dport=547, ip_id=0)


def test_ipv6_extension_headers_are_skipped():
    # each builder takes the *next* header: HBH -> routing -> AH -> dest-opts -> mobility -> TCP
    chain = (F.v6_ext(F.ROUTING) + F.v6_ext(F.AH, size=24) + F.v6_ah(F.DEST_OPTS, size=16)
             + F.v6_ext(F.MOBILITY) + F.v6_ext(F.TCP))
    f = F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, chain + F.tcp(5, 6, flags=F.FIN)))
    check(f, status=0, proto=6, ip_hlen=40 + 64, l4_off=14 + 104, payload_off=138, sport=5, dport=6,
          tcp_flags=1)


def test_ipv6_fragment_header():
    first = F.eth(F.ETH_IPV6, F.ipv6(F.FRAGMENT, F.v6_frag(F.UDP, more=True, ident=77) + F.udp(1, 2)))
    check(first, status=0, frag=1, frag_off=0, ip_id=77, proto=17, ip_hlen=48, l4_off=62, sport=1)
    later = F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.FRAGMENT) + F.v6_frag(F.TCP, offset=100)
                                     + b"q" * 40))
    check(later, status=0, frag=2, frag_off=100, ip_id=0xDEADBEEF, proto=6, ip_hlen=56, l4_off=-1, sport=0)
    atomic = F.eth(F.ETH_IPV6, F.ipv6(F.FRAGMENT, F.v6_frag(F.UDP) + F.udp(3, 4)))
    check(atomic, status=0, frag=0, sport=3)


def test_ipv6_bad_extension_chains():
    loop = F.eth(F.ETH_IPV6, F.ipv6(F.DEST_OPTS, F.v6_ext(F.DEST_OPTS) * 9 + F.udp()))
    check(loop, status=Reason.BAD_EXTENSION_HEADER, l3_off=14, af=0, proto=0)
    ok = F.eth(F.ETH_IPV6, F.ipv6(F.DEST_OPTS, F.v6_ext(F.DEST_OPTS) * 7 + F.v6_ext(F.UDP) + F.udp()))
    check(ok, status=0, ip_hlen=40 + 64)
    long_hdr = F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.UDP, size=64)[:30]))
    check(long_hdr, status=Reason.BAD_EXTENSION_HEADER)
    past_plen = F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.UDP, size=16) + F.udp(), plen=8))
    check(past_plen, status=Reason.BAD_EXTENSION_HEADER)


def test_ipv6_lengths_and_no_next_header():
    check(F.eth(F.ETH_IPV6, F.ipv6(F.NO_NEXT)), status=0, l4_off=-1, payload_off=-1, proto=59)
    check(F.eth(F.ETH_IPV6, F.ipv6(F.TCP, F.tcp(), plen=10)), status=Reason.TRUNCATED_L4, l4_off=54)
    check(F.eth(F.ETH_IPV6, F.ipv6(F.TCP, F.tcp(), plen=21)), status=Reason.BAD_TOTAL_LENGTH)
    check(F.eth(F.ETH_IPV6, F.ipv6(F.TCP, F.tcp())[:39]), status=Reason.HEADER_TOO_SMALL, l3_off=14)
    check(F.eth(F.ETH_IPV6, F.ipv4(F.TCP, F.tcp())), status=Reason.BAD_IP_VERSION)


# -- transport -------------------------------------------------------------------------------
def test_icmp_and_icmpv6():
    check(F.eth(F.ETH_IPV4, F.ipv4(F.ICMP, F.icmp(3, 4, b"x" * 28))), status=0, icmp_type=3, icmp_code=4,
          sport=0, dport=0, payload_off=42)
    check(F.eth(F.ETH_IPV6, F.ipv6(F.ICMPV6, F.icmp(135, 0, b"t" * 16))), status=0, icmp_type=135,
          icmp_code=0, payload_off=62)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.ICMP, F.icmp()[:4])), status=Reason.TRUNCATED_L4, icmp_type=0)


def test_sctp_udplite_and_unknown_protocol():
    check(F.eth(F.ETH_IPV4, F.ipv4(F.SCTP, F.sctp(3868, 3869))), status=0, sport=3868, dport=3869,
          payload_off=46)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.UDPLITE, F.udp(11, 12))), status=0, sport=11, payload_off=42)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.ESP, b"\0" * 16)), status=0, proto=50, l4_off=34, payload_off=-1,
          sport=0)


def test_gre():
    inner = F.ipv4(F.UDP, F.udp())
    check(F.eth(F.ETH_IPV4, F.ipv4(F.GRE, F.gre(0x0800, inner))), status=0, gre_proto=0x0800,
          l4_off=34, payload_off=38, sport=0)
    check(F.eth(F.ETH_IPV4, F.ipv4(F.GRE, F.gre(0x6558, inner, key=5, seq=1, checksum=True))), status=0,
          gre_proto=0x6558, payload_off=34 + 16)
    check(F.eth(F.ETH_IPV6, F.ipv6(F.GRE, F.gre(0x88BE, inner, seq=9))), status=0, gre_proto=0x88BE,
          payload_off=54 + 8)


# -- both paths agree on whole batches ------------------------------------------------------------
def test_fast_and_scalar_paths_agree_on_a_mixed_batch():
    mixed = [F.eth_ipv4_tcp(), F.eth_ipv6_tcp(), F.arp(), F.eth(F.ETH_MPLS, F.mpls_stack([3]) + F.ipv4()),
             F.eth_vlan([1, 2], F.ETH_IPV4, F.ipv4(F.ICMP, F.icmp())),
             F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.UDP) + F.udp()))]
    frames = [f[:cut] for f in mixed for cut in range(len(f) + 1)] * 2
    decoded(frames)

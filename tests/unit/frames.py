"""Build real test frames with struct: Ethernet, VLAN, MPLS, SLL, IPv4/IPv6, L4.

Every builder returns ``bytes``; compose them outside-in, e.g.::

    eth(ethertype=0x0800, payload=ipv4(proto=6, payload=tcp(1234, 80)))

Checksums are left at zero (the decoder does not check them).
"""

from __future__ import annotations

import ipaddress
import struct

DST_MAC = bytes.fromhex("001122334455")
SRC_MAC = bytes.fromhex("66778899aabb")

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_MPLS = 0x8847
ETH_PPPOE = 0x8864

TCP, UDP, ICMP, GRE, ICMPV6, SCTP, UDPLITE, NO_NEXT = 6, 17, 1, 47, 58, 132, 136, 59
HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS, AH, MOBILITY, ESP = 0, 43, 44, 60, 51, 135, 50

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def mac_int(mac: bytes) -> int:
    return int.from_bytes(mac, "big")


# -- link layer ---------------------------------------------------------------
def eth(ethertype: int = ETH_IPV4, payload: bytes = b"", *, dst: bytes = DST_MAC, src: bytes = SRC_MAC) -> bytes:
    return dst + src + struct.pack(">H", ethertype) + payload


def vlan_tag(vid: int, ethertype: int, *, pcp: int = 0) -> bytes:
    """The 4 bytes after a TPID: TCI and the next ethertype."""
    return struct.pack(">HH", pcp << 13 | vid, ethertype)


def eth_vlan(vids: list[int], ethertype: int, payload: bytes, *, tpids: list[int] | None = None) -> bytes:
    """Ethernet with one tag per vid (outer first); TPIDs 0x88a8 outer, 0x8100 inner by default."""
    if tpids is None:
        tpids = [ETH_QINQ] * (len(vids) - 1) + [ETH_VLAN] if len(vids) > 1 else [ETH_VLAN]
    body = b""
    nexts = tpids[1:] + [ethertype]
    for vid, nxt in zip(vids, nexts):
        body += vlan_tag(vid, nxt)
    return eth(tpids[0], body + payload)


def mpls_entry(label: int, *, exp: int = 0, bos: bool = False, ttl: int = 64) -> bytes:
    return struct.pack(">I", label << 12 | exp << 9 | int(bos) << 8 | ttl)


def mpls_stack(labels: list[int], *, bos: bool = True, exp: int = 0) -> bytes:
    """Label stack; the last entry carries bottom-of-stack unless bos=False."""
    return b"".join(mpls_entry(lab, exp=exp, bos=bos and i == len(labels) - 1) for i, lab in enumerate(labels))


def mpls_lse(label: int, *, exp: int = 0, bos: bool = False) -> int:
    """The decoder's 24-bit view of an entry: label<<4 | exp<<1 | bos."""
    return label << 4 | exp << 1 | int(bos)


def pppoe_session(ppp_proto: int, payload: bytes, *, session: int = 1) -> bytes:
    return struct.pack(">BBHHH", 0x11, 0, session, len(payload) + 2, ppp_proto) + payload


def sll(ethertype: int, payload: bytes, *, addr: bytes = SRC_MAC, pkttype: int = 0) -> bytes:
    """Linux cooked capture v1 header (16 bytes)."""
    return struct.pack(">HHH", pkttype, 1, len(addr)) + addr.ljust(8, b"\0") + struct.pack(">H", ethertype) + payload


# -- network layer --------------------------------------------------------------
def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ip6(text: str) -> tuple[int, int]:
    v = int(ipaddress.IPv6Address(text))
    return v >> 64, v & 0xFFFF_FFFF_FFFF_FFFF


def ipv4(proto: int = TCP, payload: bytes = b"", *, src: str = "10.0.0.1", dst: str = "192.0.2.2",
         tos: int = 0, ttl: int = 64, ident: int = 0x1234, options: bytes = b"", ihl: int | None = None,
         total: int | None = None, mf: bool = False, frag_off: int = 0, version: int = 4) -> bytes:
    """IPv4 header (+ options, padded to 4 bytes) and payload; lengths may lie."""
    options = options + b"\0" * (-len(options) % 4)
    if ihl is None:
        ihl = 5 + len(options) // 4
    if total is None:
        total = 20 + len(options) + len(payload)
    fragword = (0x2000 if mf else 0) | frag_off
    hdr = struct.pack(">BBHHHBBH4s4s", version << 4 | ihl, tos, total, ident, fragword, ttl, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr + options + payload


def ipv6(nh: int = TCP, payload: bytes = b"", *, src: str = "2001:db8::1", dst: str = "2001:db8::2",
         tc: int = 0, flow: int = 0, hops: int = 64, plen: int | None = None, version: int = 6) -> bytes:
    if plen is None:
        plen = len(payload)
    word0 = version << 28 | tc << 20 | flow
    return (struct.pack(">IHBB", word0, plen, nh, hops) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + payload)


def v6_ext(nh: int, *, size: int = 8) -> bytes:
    """Generic extension header (hop-by-hop, routing, dest-opts, mobility): size multiple of 8."""
    return struct.pack(">BB", nh, size // 8 - 1) + b"\x01" + b"\0" * (size - 3)


def v6_ah(nh: int, *, size: int = 12) -> bytes:
    """Authentication header: length in 4-byte units minus 2."""
    return struct.pack(">BBH", nh, size // 4 - 2, 0) + b"\0" * (size - 4)


def v6_frag(nh: int, *, offset: int = 0, more: bool = False, ident: int = 0xDEADBEEF) -> bytes:
    return struct.pack(">BBHI", nh, 0, offset << 3 | int(more), ident)


# -- transport layer --------------------------------------------------------------
def tcp(sport: int = 1234, dport: int = 80, *, flags: int = SYN, options: bytes = b"",
        data_offset: int | None = None, payload: bytes = b"") -> bytes:
    options = options + b"\0" * (-len(options) % 4)
    if data_offset is None:
        data_offset = 5 + len(options) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, data_offset << 4, flags, 65535, 0, 0) + options + payload


def udp(sport: int = 5353, dport: int = 53, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(icmp_type: int = 8, code: int = 0, payload: bytes = b"") -> bytes:
    return struct.pack(">BBHHH", icmp_type, code, 0, 1, 1) + payload


def sctp(sport: int = 2905, dport: int = 2905, payload: bytes = b"") -> bytes:
    return struct.pack(">HHI", sport, dport, 0) + b"\0" * 4 + payload


def gre(proto: int = ETH_IPV4, payload: bytes = b"", *, key: int | None = None, seq: int | None = None,
        checksum: bool = False) -> bytes:
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    out = struct.pack(">HH", flags, proto)
    if checksum:
        out += b"\0" * 4
    if key is not None:
        out += struct.pack(">I", key)
    if seq is not None:
        out += struct.pack(">I", seq)
    return out + payload


# -- common whole frames --------------------------------------------------------------
def eth_ipv4_tcp(sport: int = 1234, dport: int = 80, **kw) -> bytes:
    return eth(ETH_IPV4, ipv4(TCP, tcp(sport, dport, flags=kw.pop("flags", SYN)), **kw))


def eth_ipv4_udp(sport: int = 5353, dport: int = 53, payload: bytes = b"", **kw) -> bytes:
    return eth(ETH_IPV4, ipv4(UDP, udp(sport, dport, payload), **kw))


def eth_ipv6_tcp(sport: int = 1234, dport: int = 443, **kw) -> bytes:
    return eth(ETH_IPV6, ipv6(TCP, tcp(sport, dport), **kw))


def arp() -> bytes:
    return eth(ETH_ARP, struct.pack(">HHBBH", 1, ETH_IPV4, 6, 4, 1) + SRC_MAC + bytes(4) + bytes(6) + bytes(4))

"""Per-packet decoder path: every layout, one frame at a time.

The vectorised path (:mod:`flowplane.decode_vector`) sends the rows it does
not handle (MPLS stacks deeper than three, PPPoE, VLAN tags after an SLL
header, IPv6 extension headers) here.  This path decodes *any* frame, so it is also the reference
the vectorised path is tested against.  The rules are in
:mod:`flowplane.decode`.
"""

from __future__ import annotations

import struct

import numpy as np

from .batch import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, V4_MAPPED
from .decode_common import (
    CLEARED_ON_FAILURE,
    COLUMN_NAMES,
    DEFAULTS,
    ETH_HLEN,
    ETH_IPV4,
    ETH_IPV6,
    ETH_PPPOE_SESSION,
    ICMP_PROTOS,
    IPPROTO_AH,
    IPPROTO_FRAGMENT,
    IPPROTO_GRE,
    IPPROTO_NONE,
    IPPROTO_TCP,
    L4_MIN_HEADER,
    MAX_MPLS_DEPTH,
    MAX_V6_EXT_HEADERS,
    MAX_VLAN_TAGS,
    MPLS_ETHERTYPES,
    PORT_PROTOS,
    PPP_IPV4,
    PPP_IPV6,
    PPPOE_HLEN,
    SLL_HLEN,
    V6_EXT_BITS,
    V6_EXT_ESP,
    V6_EXT_FRA0,
    V6_EXT_FRA1,
    V6_EXT_HEADERS,
    VLAN_TAG_LEN,
    VLAN_TPIDS,
    Reason,
    Stage,
    frame_bounds,
)

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_MAC = struct.Struct(">HI").unpack_from
_V4_MAPPED = int(V4_MAPPED)


class _Stop(Exception):
    """Raised inside the per-packet path when a row cannot decode further."""

    def __init__(self, reason: Reason, stage: Stage) -> None:
        self.reason = reason
        self.stage = stage


def decode_rows(batch, rows: np.ndarray, cols: dict[str, np.ndarray]) -> None:
    """Decode the frames at index *rows* one by one into *cols*."""
    if rows.size == 0:
        return
    off, cap = frame_bounds(batch)
    data = memoryview(np.ascontiguousarray(batch.data)).cast("B")
    linktype = batch.linktype
    out = [decode_frame(bytes(data[o:o + c]), linktype, w)
           for o, c, w in zip(off[rows].tolist(), cap[rows].tolist(), batch.wirelen[rows].tolist())]
    for name, values in zip(COLUMN_NAMES, zip(*out)):
        column = cols[name]
        column[rows] = np.fromiter(values, dtype=column.dtype, count=rows.size)


def decode_frame(buf: bytes, linktype: int, wirelen: int) -> tuple[int, ...]:
    """Decode one frame; returns the values of ``COLUMN_NAMES`` in order."""
    wirelen = max(wirelen, len(buf))  # the wire carried at least what was captured
    r = dict(DEFAULTS)
    try:
        et, l3 = _link(buf, linktype, r)
        if et == ETH_IPV4:
            proto, l4, avail = _ipv4(buf, l3, wirelen, r)
        elif et == ETH_IPV6:
            proto, l4, avail = _ipv6(buf, l3, wirelen, r)
        else:
            raise _Stop(Reason.NOT_IP, Stage.NET)
        if l4 >= 0:
            _transport(buf, proto, l4, avail, r)
    except _Stop as stop:
        r["status"] = stop.reason
        for name in CLEARED_ON_FAILURE[stop.stage]:
            r[name] = DEFAULTS[name]
    return tuple(r.values())


# -- link layer ---------------------------------------------------------------
def _link(buf: bytes, linktype: int, r: dict) -> tuple[int, int]:
    """Decode the link header; returns (innermost ethertype, L3 offset)."""
    if linktype == LINKTYPE_ETHERNET:
        if len(buf) < ETH_HLEN:
            raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
        hi, lo = _MAC(buf, 0)
        r["dst_mac"] = hi << 32 | lo
        hi, lo = _MAC(buf, 6)
        r["src_mac"] = hi << 32 | lo
        return _ethertype_chain(buf, _U16(buf, 12)[0], ETH_HLEN, r)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(buf) < SLL_HLEN:
            raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
        if _U16(buf, 4)[0] == 6:
            hi, lo = _MAC(buf, 6)
            r["src_mac"] = hi << 32 | lo
        return _ethertype_chain(buf, _U16(buf, 14)[0], SLL_HLEN, r)
    if linktype == LINKTYPE_RAW:
        if not buf:
            raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
        version = buf[0] >> 4
        if version not in (4, 6):
            r["l3_off"] = 0
            raise _Stop(Reason.BAD_IP_VERSION, Stage.NET)
        r["ethertype"] = ETH_IPV4 if version == 4 else ETH_IPV6
        return r["ethertype"], 0
    if linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        r["ethertype"] = ETH_IPV4 if linktype == LINKTYPE_IPV4 else ETH_IPV6
        return r["ethertype"], 0
    raise _Stop(Reason.UNSUPPORTED_LINKTYPE, Stage.LINK)


def _ethertype_chain(buf: bytes, et: int, pos: int, r: dict) -> tuple[int, int]:
    """Follow VLAN tags, then an MPLS stack or a PPPoE session header."""
    tags = 0
    while et in VLAN_TPIDS:
        if tags == MAX_VLAN_TAGS:
            raise _Stop(Reason.VLAN_TOO_DEEP, Stage.LINK)
        if len(buf) < pos + VLAN_TAG_LEN:
            raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
        tci, et = struct.unpack_from(">HH", buf, pos)
        r["vlan_inner" if tags else "vlan"] = tci & 0x0FFF
        tags += 1
        pos += VLAN_TAG_LEN
    r["ethertype"] = et
    if et in MPLS_ETHERTYPES:
        et, pos = _mpls(buf, pos, r)
    elif et == ETH_PPPOE_SESSION:
        et, pos = _pppoe(buf, pos)
    if et in (ETH_IPV4, ETH_IPV6):
        r["ethertype"] = et
    return et, pos


def _mpls(buf: bytes, pos: int, r: dict) -> tuple[int, int]:
    """Walk the label stack; guess the payload from its first nibble."""
    depth = 0
    while True:
        if depth == MAX_MPLS_DEPTH:
            raise _Stop(Reason.MPLS_TOO_DEEP, Stage.LINK)
        if len(buf) < pos + 4:
            raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
        entry = _U32(buf, pos)[0]
        depth += 1
        pos += 4
        if depth <= 3:
            r[f"mpls{depth}"] = entry >> 8
        if entry & 0x100:
            break
    r["mpls_depth"] = depth
    if len(buf) < pos + 1:
        raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
    version = buf[pos] >> 4
    return {4: ETH_IPV4, 6: ETH_IPV6}.get(version, 0), pos


def _pppoe(buf: bytes, pos: int) -> tuple[int, int]:
    """PPPoE session header plus the PPP protocol field."""
    if len(buf) < pos + PPPOE_HLEN:
        raise _Stop(Reason.HEADER_TOO_SMALL, Stage.LINK)
    ppp = _U16(buf, pos + 6)[0]
    return {PPP_IPV4: ETH_IPV4, PPP_IPV6: ETH_IPV6}.get(ppp, 0), pos + PPPOE_HLEN


# -- network layer --------------------------------------------------------------
def _ipv4(buf: bytes, l3: int, wirelen: int, r: dict) -> tuple[int, int, int]:
    """IPv4 header; returns (proto, L4 offset or -1, bytes after the header)."""
    r["l3_off"] = l3
    if len(buf) < l3 + 20:
        raise _Stop(Reason.HEADER_TOO_SMALL, Stage.NET)
    vihl, tos, total, ip_id, fragword, ttl, proto = struct.unpack_from(">BBHHHBB", buf, l3)
    if vihl >> 4 != 4:
        raise _Stop(Reason.BAD_IP_VERSION, Stage.NET)
    hlen = (vihl & 15) * 4
    if hlen < 20 or len(buf) < l3 + hlen:
        raise _Stop(Reason.BAD_IP_HEADER_LENGTH, Stage.NET)
    if total < hlen or total > wirelen - l3:
        raise _Stop(Reason.BAD_TOTAL_LENGTH, Stage.NET)
    src, dst = struct.unpack_from(">II", buf, l3 + 12)
    frag_off = fragword & 0x1FFF
    frag = 2 if frag_off else (1 if fragword & 0x2000 else 0)
    r.update(af=4, tos=tos, ttl=ttl, proto=proto, ip_len=total, ip_id=ip_id, ip_hlen=hlen,
             frag=frag, frag_off=frag_off, src_lo=_V4_MAPPED | src, dst_lo=_V4_MAPPED | dst)
    l4 = -1 if frag == 2 or proto == IPPROTO_NONE else l3 + hlen
    return proto, l4, total - hlen


def _ipv6(buf: bytes, l3: int, wirelen: int, r: dict) -> tuple[int, int, int]:
    """IPv6 header and extension headers; same return as :func:`_ipv4`."""
    r["l3_off"] = l3
    if len(buf) < l3 + 40:
        raise _Stop(Reason.HEADER_TOO_SMALL, Stage.NET)
    word0, plen, nh, hops = struct.unpack_from(">IHBB", buf, l3)
    if word0 >> 28 != 6:
        raise _Stop(Reason.BAD_IP_VERSION, Stage.NET)
    if plen + 40 > wirelen - l3:
        raise _Stop(Reason.BAD_TOTAL_LENGTH, Stage.NET)
    pos, nh, frag = _v6_extensions(buf, l3, plen, nh, r)
    src_hi, src_lo, dst_hi, dst_lo = struct.unpack_from(">QQQQ", buf, l3 + 8)
    hlen = pos - l3
    r.update(af=6, tos=(word0 >> 20) & 0xFF, ttl=hops, proto=nh, ip_len=plen + 40, ip_hlen=hlen,
             src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi, dst_lo=dst_lo)
    l4 = -1 if frag == 2 or nh == IPPROTO_NONE else pos
    return nh, l4, plen + 40 - hlen


def _v6_extensions(buf: bytes, l3: int, plen: int, nh: int, r: dict) -> tuple[int, int, int]:
    """Skip extension headers; returns (upper-layer offset, protocol, frag)."""
    pos = l3 + 40
    end = pos + plen
    frag = 0
    count = 0
    while nh in V6_EXT_HEADERS and frag != 2:
        count += 1
        if count > MAX_V6_EXT_HEADERS or len(buf) < pos + 8:
            raise _Stop(Reason.BAD_EXTENSION_HEADER, Stage.NET)
        nxt, hdr_len = buf[pos], buf[pos + 1]
        if nh == IPPROTO_FRAGMENT:
            size = 8
            fragword, ip_id = struct.unpack_from(">HI", buf, pos + 2)
            frag_off = fragword >> 3
            frag = 2 if frag_off else (1 if fragword & 1 else 0)
            r.update(frag=frag, frag_off=frag_off, ip_id=ip_id)
            r["ip6_ext"] |= V6_EXT_FRA1 if frag_off else V6_EXT_FRA0
        elif nh == IPPROTO_AH:
            size = (hdr_len + 2) * 4
            r["ip6_ext"] |= V6_EXT_BITS[nh]
        else:
            size = (hdr_len + 1) * 8
            r["ip6_ext"] |= V6_EXT_BITS[nh]
        if len(buf) < pos + size or pos + size > end:
            raise _Stop(Reason.BAD_EXTENSION_HEADER, Stage.NET)
        pos += size
        nh = nxt
    if nh == 50:
        r["ip6_ext"] |= V6_EXT_ESP
    return pos, nh, frag


# -- transport layer --------------------------------------------------------------
def _transport(buf: bytes, proto: int, l4: int, avail: int, r: dict) -> None:
    """Transport header at *l4*; *avail* is what the IP length leaves for it."""
    r["l4_off"] = l4
    need = L4_MIN_HEADER.get(proto, 0)
    if need == 0:
        return
    if len(buf) < l4 + need or avail < need:
        raise _Stop(Reason.TRUNCATED_L4, Stage.TRANSPORT)
    hlen = need
    if proto in PORT_PROTOS:
        r["sport"], r["dport"] = struct.unpack_from(">HH", buf, l4)
    if proto == IPPROTO_TCP:
        hlen = (buf[l4 + 12] >> 4) * 4
        if hlen < 20:
            raise _Stop(Reason.BAD_TCP_HEADER_LENGTH, Stage.TRANSPORT)
        if hlen > avail:
            raise _Stop(Reason.TRUNCATED_L4, Stage.TRANSPORT)
        r["tcp_flags"] = buf[l4 + 13]
    elif proto in ICMP_PROTOS:
        r["icmp_type"], r["icmp_code"] = buf[l4], buf[l4 + 1]
    elif proto == IPPROTO_GRE:
        flags, r["gre_proto"] = struct.unpack_from(">HH", buf, l4)
        hlen = gre_header_length(flags)
    r["payload_off"] = l4 + hlen


def gre_header_length(flags: int) -> int:
    """GRE header bytes implied by the flags word (RFC 2784/2890, PPTP)."""
    words = 1 + bool(flags & 0xC000) + bool(flags & 0x2000) + bool(flags & 0x1000)
    if flags & 0x0007 == 1 and flags & 0x0080:  # enhanced GRE (v1) acknowledgment
        words += 1
    return words * 4

"""Vectorised decoder path: the common layouts for a whole batch at once.

Handles Ethernet with up to two VLAN tags, MPLS stacks of up to three labels,
Linux SLL, raw IPv4/IPv6 links, IPv4 (any IHL), IPv6 without extension
headers and TCP/UDP/UDP-Lite/ICMP/ICMPv6/SCTP/GRE with numpy gathers: each layer takes a fixed-width window of
bytes per row (``np.take(..., mode="clip")`` so no index leaves the buffer),
reinterprets it as big-endian words and checks caplen once per layer.
Garbage read past a short frame is never trusted: every layer checks the
caplen before its fields count, and failed rows are reset at the end.

Rows it does not handle (MPLS stacks deeper than three, PPPoE, tags after
SLL, IPv6 extension headers) are *deferred*; :func:`decode_vectorised` returns their indices
for :func:`flowplane.decode_scalar.decode_rows`.
"""

from __future__ import annotations

import numpy as np

from .batch import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, V4_MAPPED
from .decode_common import (
    CLEARED_ON_FAILURE,
    DECODED_COLUMNS,
    DEFAULTS,
    ETH_IPV4,
    ETH_IPV6,
    ETH_PPPOE_SESSION,
    ICMP_PROTOS,
    IPPROTO_GRE,
    IPPROTO_NONE,
    IPPROTO_TCP,
    L4_MIN_HEADER,
    MPLS_ETHERTYPES,
    PORT_PROTOS,
    V6_EXT_HEADERS,
    VLAN_TPIDS,
    Reason,
    Stage,
    frame_bounds,
)

# Ethertype classes (one 64 KiB lookup instead of a chain of comparisons).
_OTHER, _V4, _V6, _TAG, _DEFER, _MPLS = 0, 1, 2, 3, 4, 5


def _ethertype_classes() -> np.ndarray:
    table = np.full(65536, _OTHER, dtype=np.uint8)
    table[ETH_IPV4] = _V4
    table[ETH_IPV6] = _V6
    table[list(VLAN_TPIDS)] = _TAG
    table[list(MPLS_ETHERTYPES)] = _MPLS
    table[ETH_PPPOE_SESSION] = _DEFER
    table.setflags(write=False)
    return table


def _proto_table(values: dict[int, int], dtype=np.int64) -> np.ndarray:
    table = np.zeros(256, dtype=dtype)
    for proto, value in values.items():
        table[proto] = value
    table.setflags(write=False)
    return table


_ET_CLASS = _ethertype_classes()
_L4_NEED = _proto_table(L4_MIN_HEADER, np.int32)
# transport header length for protocols whose length is fixed (TCP/GRE: computed)
_L4_FIXED_HLEN = _proto_table({p: n for p, n in L4_MIN_HEADER.items() if p not in (IPPROTO_TCP, IPPROTO_GRE)},
                               np.int32)
_HAS_PORTS = _proto_table(dict.fromkeys(PORT_PROTOS, 1), np.bool_)
_IS_ICMP = _proto_table(dict.fromkeys(ICMP_PROTOS, 1), np.bool_)
_IS_V6_EXT = _proto_table(dict.fromkeys(V6_EXT_HEADERS, 1), np.bool_)
_ONE_BYTE = np.zeros(1, dtype=np.uint8)
_COLUMNS = np.arange(64, dtype=np.int64)
_MPLS_COLUMNS = ("mpls_depth", "mpls1", "mpls2", "mpls3")
_MPLS_SHIFT = np.uint32(8)


class _Verdict:
    """Per-row status, the stage a row failed at, and which rows are live."""

    __slots__ = ("status", "stage", "alive", "deferred")

    def __init__(self, n: int) -> None:
        self.status = np.zeros(n, dtype=np.uint8)
        self.stage = np.zeros(n, dtype=np.uint8)
        self.alive = np.ones(n, dtype=np.bool_)
        self.deferred = np.zeros(n, dtype=np.bool_)

    def fail(self, cond: np.ndarray, reason: Reason, stage: Stage) -> None:
        hit = cond & self.alive
        if hit.any():
            self.status[hit] = reason
            self.stage[hit] = stage
            self.alive &= ~hit

    def defer(self, cond: np.ndarray) -> None:
        hit = cond & self.alive
        self.deferred |= hit
        self.alive &= ~hit


def _gather(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``data[starts[i] + k]`` for k < width as a fresh (n, width) uint8 array.

    Each row is one item of a ``V{width}`` view that slides over ``data`` byte
    by byte, so numpy copies whole windows (a few ns per row).  Rows whose
    window would leave the buffer (the first/last frame) fall back to a
    clipped byte gather; their out-of-frame bytes are never trusted.
    """
    limit = data.size - width
    if limit < 0:
        return np.take(data, starts[:, None] + _COLUMNS[:width], mode="clip")
    windows = np.ndarray(shape=(limit + 1,), dtype=f"V{width}", buffer=data, strides=(1,))
    safe = np.clip(starts, 0, limit)
    out = windows[safe].view(np.uint8).reshape(-1, width)
    edge = np.flatnonzero(safe != starts)
    if edge.size:
        out[edge] = np.take(data, starts[edge, None] + _COLUMNS[:width], mode="clip")
    return out


def decode_vectorised(batch) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decode *batch*; returns (columns, indices of rows left to the scalar path)."""
    n = len(batch)
    off, cap = frame_bounds(batch)
    data = np.ascontiguousarray(batch.data) if batch.data.size else _ONE_BYTE
    v = _Verdict(n)
    cols: dict[str, np.ndarray] = {name: np.zeros(n, dtype=DECODED_COLUMNS[name]) for name in _MPLS_COLUMNS}
    link = _LINK_DECODERS.get(batch.linktype)
    if link is None or n == 0:
        cols = {name: np.full(n, DEFAULTS[name], dtype=dt) for name, dt in DECODED_COLUMNS.items()}
        cols["status"][:] = Reason.UNSUPPORTED_LINKTYPE if link is None else 0
        return cols, np.zeros(0, dtype=np.int64)
    cls, l3, l3_seen = link(data, off, cap, v, cols)
    mpls = np.flatnonzero(v.alive & (cls == _MPLS))
    if mpls.size:
        l3_seen = _mpls(data, off, cap, mpls, cls, l3, v, cols)
    v.defer(cls == _DEFER)
    v.fail(cls == _OTHER, Reason.NOT_IP, Stage.NET)
    wire = np.maximum(batch.wirelen, cap)  # the wire carried at least what was captured
    proto, l4, avail, l4_seen = _network(data, off, cap, wire, cls, l3, v, cols)
    cols["l3_off"] = np.where(l3_seen, l3, -1)
    _transport(data, off, cap, proto, l4, avail, l4_seen & v.alive, v, cols)
    cols["status"] = v.status
    cols["ip6_ext"] = np.zeros(n, dtype=np.uint16)  # rows with extension headers take the scalar path
    _reset_failed(cols, v.stage)
    return _normalise(cols), np.flatnonzero(v.deferred)


# -- link layer ---------------------------------------------------------------
def _ethernet(data, off, cap, v: _Verdict, cols) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ethernet + up to two VLAN tags.  Returns (ethertype class, l3 offset, l3 seen)."""
    m = _gather(data, off - 2, 24)  # two pad bytes so the MACs land on 64-bit words
    m[:, :2] = 0
    macs = m[:, :16].view(">u8").astype(np.uint64)
    words = m[:, 14:24].view(">u2").astype(np.uint16)  # et0, tci1, et1, tci2, et2
    has_mac = cap >= 14
    short = ~has_mac
    if short.any():
        macs[short] = 0
        v.fail(short, Reason.HEADER_TOO_SMALL, Stage.LINK)
    cols["dst_mac"] = macs[:, 0]
    cols["src_mac"] = macs[:, 1] >> 16
    et = words[:, 0]
    cls = _ET_CLASS[et]
    t1 = cls == _TAG
    n = len(off)
    cols["vlan"] = np.zeros(n, dtype=np.uint16)
    cols["vlan_inner"] = np.zeros(n, dtype=np.uint16)
    l3 = np.full(n, 14, dtype=np.int32)
    if t1.any():
        c1 = _ET_CLASS[words[:, 2]]
        t2 = t1 & (c1 == _TAG)
        v.fail(t1 & (cap < 18), Reason.HEADER_TOO_SMALL, Stage.LINK)
        v.fail(t2 & (cap < 22), Reason.HEADER_TOO_SMALL, Stage.LINK)
        v.fail(t2 & (_ET_CLASS[words[:, 4]] == _TAG), Reason.VLAN_TOO_DEEP, Stage.LINK)
        cols["vlan"] = (words[:, 1] & 0x0FFF) * t1
        cols["vlan_inner"] = (words[:, 3] & 0x0FFF) * t2
        et = np.where(t2, words[:, 4], np.where(t1, words[:, 2], et))
        cls = _ET_CLASS[et]
        l3 += 4 * t1 + 4 * t2
    cols["ethertype"] = et
    return cls, l3, v.alive & ((cls == _V4) | (cls == _V6))


def _linux_sll(data, off, cap, v: _Verdict, cols):
    """Linux cooked capture (v1): 16-byte header, VLAN tags deferred."""
    m = _gather(data, off - 2, 24)
    w8 = m.view(">u8")
    w2 = m.view(">u2")
    has_hdr = cap >= 16
    v.fail(~has_hdr, Reason.HEADER_TOO_SMALL, Stage.LINK)
    cols["dst_mac"] = np.zeros(len(off), dtype=np.uint64)
    cols["src_mac"] = np.where(has_hdr & (w2[:, 3] == 6), w8[:, 1] >> 16, 0)
    et = w2[:, 8]
    cls = _ET_CLASS[et]
    cols["ethertype"] = et
    v.defer(cls == _TAG)
    _no_tags(cols, len(off))
    return cls, np.full(len(off), 16, dtype=np.int32), v.alive & ((cls == _V4) | (cls == _V6))


def _raw(data, off, cap, v: _Verdict, cols):
    """Raw IP: the version nibble picks the family."""
    v.fail(cap < 1, Reason.HEADER_TOO_SMALL, Stage.LINK)
    version = np.take(data, off, mode="clip") >> 4
    seen = v.alive.copy()
    cls = np.where(version == 4, _V4, np.where(version == 6, _V6, _OTHER)).astype(np.uint8)
    v.fail(cls == _OTHER, Reason.BAD_IP_VERSION, Stage.NET)
    return _fixed_family(cls, cols, len(off)) + (seen,)


def _ipv4_link(data, off, cap, v: _Verdict, cols):
    return _fixed_family(np.full(len(off), _V4, dtype=np.uint8), cols, len(off)) + (v.alive.copy(),)


def _ipv6_link(data, off, cap, v: _Verdict, cols):
    return _fixed_family(np.full(len(off), _V6, dtype=np.uint8), cols, len(off)) + (v.alive.copy(),)


def _fixed_family(cls: np.ndarray, cols, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Link columns for links without a MAC header; L3 at offset 0."""
    cols["ethertype"] = np.where(cls == _V4, ETH_IPV4, np.where(cls == _V6, ETH_IPV6, 0))
    cols["dst_mac"] = np.zeros(n, dtype=np.uint64)
    cols["src_mac"] = np.zeros(n, dtype=np.uint64)
    _no_tags(cols, n)
    return cls, np.zeros(n, dtype=np.int32)


def _no_tags(cols, n: int) -> None:
    cols["vlan"] = np.zeros(n, dtype=np.uint16)
    cols["vlan_inner"] = np.zeros(n, dtype=np.uint16)


_LINK_DECODERS = {
    LINKTYPE_ETHERNET: _ethernet,
    LINKTYPE_LINUX_SLL: _linux_sll,
    LINKTYPE_RAW: _raw,
    LINKTYPE_IPV4: _ipv4_link,
    LINKTYPE_IPV6: _ipv6_link,
}


def _mpls(data, off, cap, rows: np.ndarray, cls, l3, v: _Verdict, cols) -> np.ndarray:
    """Label stacks of up to three entries (deeper ones are deferred).

    Updates *cls*, *l3* and the link columns of *rows* in place; returns the
    new "l3 seen" mask.  The payload family comes from its first nibble.
    """
    start = l3[rows]
    m = _gather(data, off[rows] + start, 16)
    entries = m[:, :12].view(">u4").astype(np.uint32)
    bos = (entries & 0x100) != 0
    depth = np.where(bos[:, 0], 1, np.where(bos[:, 1], 2, np.where(bos[:, 2], 3, 0))).astype(np.int32)
    end = start + 4 * depth
    nibble = m[np.arange(rows.size), 4 * depth] >> 4
    cls[rows] = np.where(nibble == 4, _V4, np.where(nibble == 6, _V6, _OTHER))
    cls[rows[depth == 0]] = _DEFER
    l3[rows] = end
    on = np.zeros(len(off), dtype=np.bool_)
    on[rows] = cap[rows] < end + 1  # the stack or the payload's first byte is cut
    v.fail(on & (cls != _DEFER), Reason.HEADER_TOO_SMALL, Stage.LINK)
    labels = entries >> _MPLS_SHIFT
    cols["mpls_depth"][rows] = depth
    cols["mpls1"][rows] = labels[:, 0]
    cols["mpls2"][rows] = labels[:, 1] * (depth >= 2)
    cols["mpls3"][rows] = labels[:, 2] * (depth >= 3)
    ethertype = cols["ethertype"].astype(np.uint16)
    ethertype[rows] = np.where(nibble == 4, ETH_IPV4, np.where(nibble == 6, ETH_IPV6, ethertype[rows]))
    cols["ethertype"] = ethertype
    return v.alive & ((cls == _V4) | (cls == _V6))


# -- network layer --------------------------------------------------------------
def _network(data, off, cap, wire, cls, l3, v: _Verdict, cols):
    """IPv4 and plain IPv6 headers.  Returns (proto, l4 offset, bytes left, l4 seen).

    Every row is read with the IPv4 layout first; IPv6 rows are then patched.
    Rows that are not live IP carry garbage here and are reset at the end.
    """
    is4 = v.alive & (cls == _V4)
    is6 = v.alive & (cls == _V6)
    is_ip = is4 | is6
    m = _gather(data, off + l3, 40)
    w2 = m[:, :8].view(">u2").astype(np.uint16)  # ver/tos, total, id, fragword
    addrs = m[:, 12:20].view(">u4").astype(np.uint64)
    version = m[:, 0] >> 4
    hmin = np.full(len(off), 20, dtype=np.int32)
    hlen = (m[:, 0] & 15).astype(np.int32) << 2
    ip_len = w2[:, 1].astype(np.int32)
    proto, tos, ttl = m[:, 9].copy(), m[:, 1].copy(), m[:, 8].copy()
    ip_id, fragword = w2[:, 2], w2[:, 3]
    af = np.full(len(off), 4, dtype=np.uint8)
    src_hi = np.zeros(len(off), dtype=np.uint64)
    dst_hi = np.zeros(len(off), dtype=np.uint64)
    src_lo = addrs[:, 0] | V4_MAPPED
    dst_lo = addrs[:, 1] | V4_MAPPED
    i6 = np.flatnonzero(is6)
    if i6.size:
        m6 = m[i6]
        af[i6] = 6
        hmin[i6] = hlen[i6] = 40
        ip_len[i6] = w2[i6, 2].astype(np.int32) + 40
        proto[i6], ttl[i6] = m6[:, 6], m6[:, 7]
        tos[i6] = (w2[i6, 0] >> 4) & 0xFF
        ip_id[i6] = fragword[i6] = 0
        a6 = m6[:, 8:40].view(">u8").astype(np.uint64)
        src_hi[i6], src_lo[i6], dst_hi[i6], dst_lo[i6] = a6[:, 0], a6[:, 1], a6[:, 2], a6[:, 3]
    v.fail(is_ip & (cap < l3 + hmin), Reason.HEADER_TOO_SMALL, Stage.NET)
    v.fail(is_ip & (version != af), Reason.BAD_IP_VERSION, Stage.NET)  # af is the expected version
    v.fail(is4 & ((hlen < 20) | (cap < l3 + hlen)), Reason.BAD_IP_HEADER_LENGTH, Stage.NET)
    v.fail(is_ip & ((ip_len < hlen) | (ip_len > wire - l3)), Reason.BAD_TOTAL_LENGTH, Stage.NET)
    if i6.size:
        v.defer(is6 & _IS_V6_EXT[proto])
    frag_off = fragword & 0x1FFF
    frag = ((fragword >> 13) & 1).astype(np.uint8)
    frag[frag_off > 0] = 2
    cols.update(af=af, proto=proto, tos=tos, ttl=ttl, ip_len=ip_len, ip_id=ip_id, ip_hlen=hlen,
                frag=frag, frag_off=frag_off, src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi, dst_lo=dst_lo)
    l4_seen = is_ip & (frag != 2) & (proto != IPPROTO_NONE)
    return proto, l3 + hlen, ip_len - hlen, l4_seen


# -- transport layer --------------------------------------------------------------
def _transport(data, off, cap, proto, l4, avail, live, v: _Verdict, cols) -> None:
    """Fixed part of the transport header; *live* rows have one to decode."""
    need = _L4_NEED[proto]
    v.fail(live & ((cap < l4 + need) | (avail < need)), Reason.TRUNCATED_L4, Stage.TRANSPORT)
    m = _gather(data, off + l4, 16)
    w2 = m[:, :4].view(">u2").astype(np.uint16)  # sport, dport | GRE flags, protocol
    is_tcp = live & (proto == IPPROTO_TCP)
    tcp_hlen = (m[:, 12] >> 4).astype(np.int32) << 2
    v.fail(is_tcp & (tcp_hlen < 20), Reason.BAD_TCP_HEADER_LENGTH, Stage.TRANSPORT)
    v.fail(is_tcp & (tcp_hlen > avail), Reason.TRUNCATED_L4, Stage.TRANSPORT)
    is_gre = live & (proto == IPPROTO_GRE)
    hlen = np.where(is_tcp, tcp_hlen, _L4_FIXED_HLEN[proto])
    if is_gre.any():
        hlen = np.where(is_gre, _gre_header_length(w2[:, 0]), hlen)
    ports = live & _HAS_PORTS[proto]
    icmp = live & _IS_ICMP[proto]
    cols["l4_off"] = np.where(live, l4, -1)
    cols["payload_off"] = np.where(live & (hlen > 0), l4 + hlen, -1)
    cols["sport"] = w2[:, 0] * ports
    cols["dport"] = w2[:, 1] * ports
    cols["tcp_flags"] = m[:, 13] * is_tcp
    cols["icmp_type"] = m[:, 0] * icmp
    cols["icmp_code"] = m[:, 1] * icmp
    cols["gre_proto"] = w2[:, 1] * is_gre


def _gre_header_length(flags: np.ndarray) -> np.ndarray:
    """Vector form of :func:`flowplane.decode_scalar.gre_header_length`."""
    flags = flags.astype(np.int32)
    words = (1 + ((flags & 0xC000) != 0) + ((flags & 0x2000) != 0) + ((flags & 0x1000) != 0)
             + (((flags & 0x0007) == 1) & ((flags & 0x0080) != 0)))
    return words * 4


# -- finishing --------------------------------------------------------------------
def _reset_failed(cols, stage: np.ndarray) -> None:
    """Reset what a failed row must not carry (see CLEARED_ON_FAILURE)."""
    if not stage.any():
        return
    for failed_at, names in CLEARED_ON_FAILURE.items():
        rows = np.flatnonzero(stage == failed_at)
        if rows.size:
            for name in names:
                cols[name][rows] = DEFAULTS[name]


def _normalise(cols) -> dict[str, np.ndarray]:
    """Native-endian arrays of the documented dtypes, in DECODED_COLUMNS order."""
    return {name: np.ascontiguousarray(cols[name], dtype=dt) for name, dt in DECODED_COLUMNS.items()}

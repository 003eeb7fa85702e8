"""nfnetlink / ctnetlink wire format: netlink headers, conntrack attributes, the dump request.

Only what NAT event logging reads: the original and reply tuples (addresses, protocol, ports, ICMP id),
status bits, id, zone, mark, timestamps (``nf_conntrack_timestamp``) and counters (``nf_conntrack_acct``).
Every parser here takes untrusted bytes: a short or inconsistent message raises :class:`Malformed`
(the listener counts it and goes on), never anything else.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
# netlink message types and flags
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
# nfnetlink: subsystem 1 = ctnetlink; messages NEW 0, GET 1, DELETE 2
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
# multicast groups (bit = 1 << (group - 1))
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
# attributes
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS = 1, 2, 3
CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_ID, CTA_ZONE, CTA_TIMESTAMP = 8, 9, 10, 12, 18, 20
CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_TUPLE_ZONE = 1, 2, 3
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID = 4, 7
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2
NLA_TYPE_MASK = 0x3FFF
# conntrack status bits
IPS_SRC_NAT, IPS_DST_NAT = 1 << 4, 1 << 5

NLMSGHDR = struct.Struct("=IHHII")  # host byte order
NFGENMSG = struct.Struct("=BBH")
NLATTR = struct.Struct("=HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Malformed(ValueError):
    """A netlink message that cannot be read (counted by the listener, never fatal)."""


@dataclass(frozen=True, slots=True)
class Tuple:
    """One direction of a conntrack entry."""

    family: int  # socket.AF_INET / AF_INET6
    src: str
    dst: str
    proto: int
    sport: int  # the ICMP id for ICMP / ICMPv6
    dport: int


@dataclass(slots=True)
class CtMessage:
    """One ctnetlink message: ``kind`` is ``new``, ``update`` or ``destroy``."""

    kind: str
    orig: Tuple
    reply: Tuple
    status: int = 0
    ct_id: int = 0
    zone: int = 0
    mark: int = 0
    start_ns: int = 0  # CTA_TIMESTAMP_START (wall clock ns), 0 when timestamps are off
    stop_ns: int = 0
    packets: int = 0  # both directions, DESTROY with nf_conntrack_acct
    bytes: int = 0


def attrs(data: bytes | memoryview, off: int, end: int) -> dict[int, memoryview]:
    """The netlink attributes in ``data[off:end]`` by type (nested and byte-order flags masked)."""
    mv = memoryview(data)
    out: dict[int, memoryview] = {}
    while off + 4 <= end:
        ln, typ = NLATTR.unpack_from(mv, off)
        if ln < 4 or off + ln > end:
            raise Malformed(f"attribute length {ln} at offset {off} overruns the message")
        out[typ & NLA_TYPE_MASK] = mv[off + 4:off + ln]
        off += (ln + 3) & ~3
    return out


def _be(v: memoryview | None, fmt: struct.Struct, what: str) -> int:
    if v is None:
        return 0
    if len(v) < fmt.size:
        raise Malformed(f"{what}: {len(v)} bytes, expected {fmt.size}")
    return fmt.unpack_from(v)[0]


def parse_tuple(v: memoryview) -> Tuple:
    """CTA_TUPLE_ORIG / CTA_TUPLE_REPLY."""
    t = attrs(v, 0, len(v))
    ip, proto = t.get(CTA_TUPLE_IP), t.get(CTA_TUPLE_PROTO)
    if ip is None or proto is None:
        raise Malformed("tuple without CTA_TUPLE_IP or CTA_TUPLE_PROTO")
    a = attrs(ip, 0, len(ip))
    if CTA_IP_V4_SRC in a and CTA_IP_V4_DST in a and len(a[CTA_IP_V4_SRC]) == 4 == len(a[CTA_IP_V4_DST]):
        fam = socket.AF_INET
        src, dst = socket.inet_ntop(fam, bytes(a[CTA_IP_V4_SRC])), socket.inet_ntop(fam, bytes(a[CTA_IP_V4_DST]))
    elif CTA_IP_V6_SRC in a and CTA_IP_V6_DST in a and len(a[CTA_IP_V6_SRC]) == 16 == len(a[CTA_IP_V6_DST]):
        fam = socket.AF_INET6
        src, dst = socket.inet_ntop(fam, bytes(a[CTA_IP_V6_SRC])), socket.inet_ntop(fam, bytes(a[CTA_IP_V6_DST]))
    else:
        raise Malformed("tuple without a source and destination address")
    p = attrs(proto, 0, len(proto))
    num = p.get(CTA_PROTO_NUM)
    if num is None or len(num) < 1:
        raise Malformed("tuple without CTA_PROTO_NUM")
    pnum = num[0]
    sport = _be(p.get(CTA_PROTO_SRC_PORT), _U16, "source port")
    dport = _be(p.get(CTA_PROTO_DST_PORT), _U16, "destination port")
    icmp_id = p.get(CTA_PROTO_ICMP_ID) or p.get(CTA_PROTO_ICMPV6_ID)
    if icmp_id is not None:
        sport = _be(icmp_id, _U16, "icmp id")
    return Tuple(fam, src, dst, pnum, sport, dport)


def parse_ct(kind: str, data: bytes | memoryview, off: int, end: int) -> CtMessage:
    """The conntrack entry in one ctnetlink message body (after the netlink header)."""
    if end - off < NFGENMSG.size:
        raise Malformed("ctnetlink message shorter than its nfgenmsg header")
    a = attrs(data, off + NFGENMSG.size, end)
    orig, reply = a.get(CTA_TUPLE_ORIG), a.get(CTA_TUPLE_REPLY)
    if orig is None or reply is None:
        raise Malformed("conntrack message without its original and reply tuples")
    msg = CtMessage(kind, parse_tuple(orig), parse_tuple(reply),
                    status=_be(a.get(CTA_STATUS), _U32, "status"), ct_id=_be(a.get(CTA_ID), _U32, "id"),
                    zone=_be(a.get(CTA_ZONE), _U16, "zone"), mark=_be(a.get(CTA_MARK), _U32, "mark"))
    ts = a.get(CTA_TIMESTAMP)
    if ts is not None:
        t = attrs(ts, 0, len(ts))
        msg.start_ns = _be(t.get(CTA_TIMESTAMP_START), _U64, "timestamp start")
        msg.stop_ns = _be(t.get(CTA_TIMESTAMP_STOP), _U64, "timestamp stop")
    for key in (CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY):
        c = a.get(key)
        if c is not None:
            ca = attrs(c, 0, len(c))
            msg.packets += _be(ca.get(CTA_COUNTERS_PACKETS), _U64, "packets")
            msg.bytes += _be(ca.get(CTA_COUNTERS_BYTES), _U64, "bytes")
    return msg


def messages(data: bytes, *, stats: dict | None = None) -> tuple[list[CtMessage], bool, int]:
    """Every conntrack message in one datagram: (messages, done, errno).

    *done* is true on NLMSG_DONE (the end of a dump); *errno* is the (positive) error of an
    NLMSG_ERROR, 0 otherwise.  A malformed message is skipped and counted in ``stats["malformed"]``;
    a header that cannot be trusted ends the datagram.
    """
    out: list[CtMessage] = []
    off, n, done, err = 0, len(data), False, 0
    while off + NLMSGHDR.size <= n:
        ln, typ, flags, _seq, _pid = NLMSGHDR.unpack_from(data, off)
        if ln < NLMSGHDR.size or off + ln > n:
            if stats is not None:
                stats["malformed"] = stats.get("malformed", 0) + 1
            break
        body, end = off + NLMSGHDR.size, off + ln
        if typ == NLMSG_DONE:
            done = True
        elif typ == NLMSG_ERROR:
            if end - body >= 4:
                code = struct.unpack_from("=i", data, body)[0]
                err = -code if code < 0 else err
        elif typ in (CT_NEW, CT_DELETE):
            kind = "destroy" if typ == CT_DELETE else "new" if flags & (NLM_F_CREATE | NLM_F_EXCL) else "update"
            try:
                out.append(parse_ct(kind, data, body, end))
            except (Malformed, struct.error, ValueError) as exc:
                if stats is not None:
                    stats["malformed"] = stats.get("malformed", 0) + 1
                    stats["last_error"] = str(exc)
        off += (ln + 3) & ~3
    return out, done, err


def dump_request(seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """IPCTNL_MSG_CT_GET with NLM_F_DUMP: every conntrack entry (of *family*; AF_UNSPEC: all)."""
    body = NFGENMSG.pack(family, 0, 0)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def groups(*, new: bool = True, update: bool = False, destroy: bool = True) -> int:
    """The bind() group mask for the conntrack events asked for."""
    mask = 0
    for on, g in ((new, NFNLGRP_CONNTRACK_NEW), (update, NFNLGRP_CONNTRACK_UPDATE),
                  (destroy, NFNLGRP_CONNTRACK_DESTROY)):
        if on:
            mask |= 1 << (g - 1)
    return mask


# -- building messages (tests and fuzzing use these to make what the kernel sends) -------------
def nla(typ: int, payload: bytes, *, nested: bool = False) -> bytes:
    ln = NLATTR.size + len(payload)
    return NLATTR.pack(ln, typ | (0x8000 if nested else 0)) + payload + b"\0" * (-ln % 4)


def build_tuple(t: Tuple) -> bytes:
    src, dst = socket.inet_pton(t.family, t.src), socket.inet_pton(t.family, t.dst)
    if t.family == socket.AF_INET:
        ip = nla(CTA_IP_V4_SRC, src) + nla(CTA_IP_V4_DST, dst)
    else:
        ip = nla(CTA_IP_V6_SRC, src) + nla(CTA_IP_V6_DST, dst)
    proto = nla(CTA_PROTO_NUM, bytes([t.proto]))
    if t.proto in (1, 58):
        proto += nla(CTA_PROTO_ICMP_ID if t.proto == 1 else CTA_PROTO_ICMPV6_ID, _U16.pack(t.sport))
    else:
        proto += nla(CTA_PROTO_SRC_PORT, _U16.pack(t.sport)) + nla(CTA_PROTO_DST_PORT, _U16.pack(t.dport))
    return nla(CTA_TUPLE_IP, ip, nested=True) + nla(CTA_TUPLE_PROTO, proto, nested=True)


def build_ct(msg: CtMessage, seq: int = 0) -> bytes:
    """The netlink message the kernel sends for *msg* (event NEW/UPDATE/DESTROY)."""
    body = NFGENMSG.pack(msg.orig.family, 0, 0)
    body += nla(CTA_TUPLE_ORIG, build_tuple(msg.orig), nested=True)
    body += nla(CTA_TUPLE_REPLY, build_tuple(msg.reply), nested=True)
    body += nla(CTA_STATUS, _U32.pack(msg.status)) + nla(CTA_ID, _U32.pack(msg.ct_id))
    if msg.zone:
        body += nla(CTA_ZONE, _U16.pack(msg.zone))
    if msg.mark:
        body += nla(CTA_MARK, _U32.pack(msg.mark))
    if msg.start_ns or msg.stop_ns:
        ts = nla(CTA_TIMESTAMP_START, _U64.pack(msg.start_ns))
        if msg.stop_ns:
            ts += nla(CTA_TIMESTAMP_STOP, _U64.pack(msg.stop_ns))
        body += nla(CTA_TIMESTAMP, ts, nested=True)
    typ = CT_DELETE if msg.kind == "destroy" else CT_NEW
    flags = NLM_F_CREATE | NLM_F_EXCL if msg.kind == "new" else 0
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), typ, flags, seq, 0) + body

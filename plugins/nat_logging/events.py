"""NAT events: what a conntrack message means for the NAT log, and the three natEvent numberings.

A conntrack entry has an original tuple (as the subscriber sent it) and a reply tuple (as the
answer comes back).  Source NAT (masquerade, snat) shows as a reply destination that differs from
the original source; destination NAT (dnat, redirect) as a reply source that differs from the
original destination.  The post-NAT source is the reply tuple's destination, the post-NAT
destination the reply tuple's source.  An entry whose original and reply families differ is a
NAT64 translation.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .netlink import CtMessage

# event kinds (the words of show output, syslog message ids and the numbering tables)
NAT44_CREATE, NAT44_DELETE = "nat44-session-create", "nat44-session-delete"
NAT64_CREATE, NAT64_DELETE = "nat64-session-create", "nat64-session-delete"
KINDS = (NAT44_CREATE, NAT44_DELETE, NAT64_CREATE, NAT64_DELETE)

# natEvent values per numbering: RFC 8158 (IANA), the MX table (draft-ietf-behave-ipfix-nat-logging-02),
# Cisco NEL (1 create, 2 delete)
NUMBERINGS: dict[str, dict[str, int]] = {
    "rfc8158": {NAT44_CREATE: 4, NAT44_DELETE: 5, NAT64_CREATE: 6, NAT64_DELETE: 7},
    "junos": {NAT44_CREATE: 1, NAT44_DELETE: 2, NAT64_CREATE: 4, NAT64_DELETE: 5},
    "cisco-nel": {NAT44_CREATE: 1, NAT44_DELETE: 2, NAT64_CREATE: 1, NAT64_DELETE: 2},
}
DEFAULT_NUMBERING = "rfc8158"

# what translation a session shows
SNAT, DNAT, BOTH, NONE = "source", "destination", "source+destination", "none"
REALM_PRIVATE, REALM_PUBLIC = 1, 2  # natOriginatingAddressRealm


@dataclass(slots=True)
class NatEvent:
    """One NAT log event, ready to encode (IPFIX, v9) or print (syslog, show)."""

    kind: str  # one of KINDS
    translation: str  # SNAT, DNAT, BOTH or NONE
    time_ms: int  # observationTimeMilliseconds
    proto: int
    src: str  # pre-NAT (the subscriber's view)
    sport: int
    dst: str
    dport: int
    post_src: str  # post-NAT
    post_sport: int
    post_dst: str
    post_dport: int
    zone: int = 0  # conntrack zone, exported as ingressVRFID
    ct_id: int = 0
    packets: int = 0
    bytes: int = 0
    resync: bool = False  # found by a conntrack dump after an overrun, not by an event

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.src else socket.AF_INET

    @property
    def post_family(self) -> int:
        return socket.AF_INET6 if ":" in self.post_src else socket.AF_INET

    @property
    def layout(self) -> str:
        """The template this event uses: ``nat44``, ``nat64`` or ``nat66``."""
        if self.family == socket.AF_INET:
            return "nat44"
        return "nat64" if self.post_family == socket.AF_INET else "nat66"

    @property
    def realm(self) -> int:
        """natOriginatingAddressRealm: private for a subscriber's outbound session, public for a DNAT-only one."""
        return REALM_PUBLIC if self.translation == DNAT else REALM_PRIVATE

    @property
    def create(self) -> bool:
        return self.kind.endswith("create")


def translation(msg: CtMessage) -> str:
    """SNAT, DNAT, BOTH or NONE for a conntrack entry."""
    o, r = msg.orig, msg.reply
    snat = r.dst != o.src or r.dport != o.sport
    dnat = r.src != o.dst or r.sport != o.dport
    if o.proto in (1, 58):  # ICMP: the id is both "ports"; only addresses and the id tell
        snat = r.dst != o.src or r.sport != o.sport
        dnat = r.src != o.dst
    if snat and dnat:
        return BOTH
    return SNAT if snat else DNAT if dnat else NONE


def classify(msg: CtMessage, now_ns: int, *, log_no_nat: bool = False, resync: bool = False) -> NatEvent | None:
    """The NAT event of a NEW or DESTROY conntrack message, or None (UPDATE, or no NAT and not asked for)."""
    if msg.kind == "update":
        return None
    tr = translation(msg)
    if tr == NONE and not log_no_nat:
        return None
    o, r = msg.orig, msg.reply
    nat64 = o.family != r.family
    create = msg.kind == "new"
    if nat64:
        kind = NAT64_CREATE if create else NAT64_DELETE
    else:
        kind = NAT44_CREATE if create else NAT44_DELETE
    stamp = (msg.start_ns if create else msg.stop_ns) or now_ns
    icmp = o.proto in (1, 58)
    return NatEvent(kind, tr, stamp // 1_000_000, o.proto, o.src, o.sport, o.dst, o.dport,
                    r.dst, r.sport if icmp else r.dport, r.src, r.sport if not icmp else 0,
                    zone=msg.zone, ct_id=msg.ct_id, packets=msg.packets, bytes=msg.bytes, resync=resync)


PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 33: "dccp", 136: "udplite", 47: "gre"}


def proto_name(p: int) -> str:
    return PROTO_NAMES.get(p, str(p))

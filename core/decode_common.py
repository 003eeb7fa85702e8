"""Constants shared by the vectorised and the per-packet decoder paths.

Import :class:`Reason` and :data:`REASON_TEXT` from :mod:`flowplane.decode`;
they live here only so both decoder paths can use them without an import
cycle.  See :mod:`flowplane.decode` for the decoding rules.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from .batch import DECODED_COLUMNS


class Reason(IntEnum):
    OK = 0
    NOT_IP = 1  # ARP, LLDP, ... (Junos: "Packets dropped (not IP)")
    HEADER_TOO_SMALL = 2  # frame shorter than the L2 or IP header needs
    BAD_IP_VERSION = 3  # version nibble does not match the ethertype
    BAD_IP_HEADER_LENGTH = 4  # IPv4 IHL < 5 or beyond the captured bytes
    BAD_TOTAL_LENGTH = 5  # IP total/payload length shorter than the header
    TRUNCATED_L4 = 6  # transport header cut off by the capture or the IP length
    BAD_EXTENSION_HEADER = 7  # IPv6 extension header chain truncated or too long
    MPLS_TOO_DEEP = 8  # label stack deeper than we follow, or no bottom-of-stack
    VLAN_TOO_DEEP = 9  # more than two VLAN tags
    UNSUPPORTED_LINKTYPE = 10
    BAD_TCP_HEADER_LENGTH = 11  # TCP data offset < 5


REASON_TEXT = {
    Reason.OK: "decoded",
    Reason.NOT_IP: "not IP",
    Reason.HEADER_TOO_SMALL: "header too small",
    Reason.BAD_IP_VERSION: "bad IP version",
    Reason.BAD_IP_HEADER_LENGTH: "bad IP header length",
    Reason.BAD_TOTAL_LENGTH: "bad IP total length",
    Reason.TRUNCATED_L4: "truncated transport header",
    Reason.BAD_EXTENSION_HEADER: "bad IPv6 extension header",
    Reason.MPLS_TOO_DEEP: "MPLS label stack too deep",
    Reason.VLAN_TOO_DEEP: "too many VLAN tags",
    Reason.UNSUPPORTED_LINKTYPE: "unsupported link type",
    Reason.BAD_TCP_HEADER_LENGTH: "bad TCP header length",
}


class Stage(IntEnum):
    """The layer a row stopped at; decides which columns survive a failure."""

    DONE = 0
    LINK = 1
    NET = 2
    TRANSPORT = 3


# -- protocol numbers -------------------------------------------------------
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
MPLS_ETHERTYPES = (0x8847, 0x8848)
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

ETH_HLEN = 14
SLL_HLEN = 16
VLAN_TAG_LEN = 4
PPPOE_HLEN = 8  # PPPoE session header (6) + PPP protocol (2)
MAX_VLAN_TAGS = 2
MAX_MPLS_DEPTH = 8
MAX_V6_EXT_HEADERS = 8

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_GRE = 47
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_FRAGMENT = 44
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136

#: IPv6 extension headers skipped to reach the upper-layer protocol.
V6_EXT_HEADERS = frozenset({0, 43, IPPROTO_FRAGMENT, 60, IPPROTO_AH, 135})

#: ipv6ExtensionHeaders (IPFIX IE 64) bit per extension header; the fragment
#: header sets FRA0 (0x10) on a first fragment and FRA1 (0x40) on a later one.
V6_EXT_BITS = {60: 0x1, 0: 0x2, 43: 0x20, IPPROTO_AH: 0x4000, 135: 0x1000}
V6_EXT_FRA0, V6_EXT_FRA1, V6_EXT_ESP = 0x10, 0x40, 0x2000

#: Fixed transport header bytes that must be captured (and inside the IP
#: length) for the transport layer to decode.  TCP options and GRE optional
#: fields are not read, so a snap length that cuts them is not an error.
L4_MIN_HEADER = {
    IPPROTO_TCP: 20,
    IPPROTO_UDP: 8,
    IPPROTO_UDPLITE: 8,
    IPPROTO_ICMP: 8,
    IPPROTO_ICMPV6: 8,
    IPPROTO_SCTP: 12,
    IPPROTO_GRE: 4,
}
PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_SCTP})
ICMP_PROTOS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})

# -- column groups ----------------------------------------------------------
LINK_COLUMNS = ("ethertype", "dst_mac", "src_mac", "vlan", "vlan_inner",
                "mpls_depth", "mpls1", "mpls2", "mpls3")
NET_COLUMNS = ("ip6_ext", "af", "l3_off", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "tos",
               "ttl", "ip_len", "ip_id", "ip_hlen", "frag", "frag_off")
TRANSPORT_COLUMNS = ("l4_off", "payload_off", "sport", "dport", "tcp_flags",
                     "icmp_type", "icmp_code", "gre_proto")
OFFSET_COLUMNS = ("l3_off", "l4_off", "payload_off")

COLUMN_NAMES = tuple(DECODED_COLUMNS)
DEFAULTS = {name: (-1 if name in OFFSET_COLUMNS else 0) for name in COLUMN_NAMES}

#: Columns reset to their default when a row fails at a stage.  What
#: survives: the MAC addresses (set once the link header was captured) on a
#: link failure; the link columns and ``l3_off`` on a network failure; the
#: link and network columns and ``l4_off`` on a transport failure.
CLEARED_ON_FAILURE = {
    Stage.LINK: tuple(c for c in LINK_COLUMNS + NET_COLUMNS + TRANSPORT_COLUMNS
                      if c not in ("dst_mac", "src_mac")),
    Stage.NET: tuple(c for c in NET_COLUMNS + TRANSPORT_COLUMNS if c != "l3_off"),
    Stage.TRANSPORT: tuple(c for c in TRANSPORT_COLUMNS if c != "l4_off"),
}

assert set(LINK_COLUMNS + NET_COLUMNS + TRANSPORT_COLUMNS + ("status",)) == set(COLUMN_NAMES)


def new_columns(n: int) -> dict[str, np.ndarray]:
    """Decoded columns for *n* rows, all at their defaults (0, offsets -1)."""
    return {name: (np.full(n, -1, dtype=dt) if name in OFFSET_COLUMNS else np.zeros(n, dtype=dt))
            for name, dt in DECODED_COLUMNS.items()}


def frame_bounds(batch) -> tuple[np.ndarray, np.ndarray]:
    """(offset, usable caplen) per row; caplen clipped to the buffer so a
    malformed batch cannot make the decoder read outside ``data``."""
    off = batch.offset.astype(np.int64, copy=False)
    cap = batch.caplen.astype(np.int32, copy=False)
    if off.size and (off.min() < 0 or (off + cap).max() > batch.data.size or cap.min() < 0):
        room = np.clip(np.int64(batch.data.size) - off, 0, np.iinfo(np.int32).max)
        cap = np.clip(cap, 0, room).astype(np.int32)
        cap[off < 0] = 0
    return off, cap

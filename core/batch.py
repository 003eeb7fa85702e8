"""Columnar packet batches: the only thing that crosses data-plane hooks.

A :class:`PacketBatch` holds up to a few thousand frames as one contiguous
byte buffer plus numpy columns (offsets, lengths, timestamps, interface,
direction).  The core decoder (:mod:`flowplane.decode`) fills the decoded
columns listed in :data:`DECODED_COLUMNS` once per packet; every plugin reuses
them.  Plugins must treat the columns as read-only.

Conventions
-----------
* ``data`` is a 1-D ``uint8`` array; frame *i* is
  ``data[offset[i] : offset[i] + caplen[i]]``.  Sources may hand in a view
  on an ``mmap`` or a ring (zero copy); a batch that outlives its source's
  buffer must be :meth:`PacketBatch.compact`-ed first.
* Timestamps are ``int64`` nanoseconds: packet time for a pcap replay,
  wall-clock time for live capture (DESIGN.md "Two clocks").
* Addresses are 128-bit, split in two big-endian-valued ``uint64`` halves
  (``*_hi``, ``*_lo``).  IPv4 is stored IPv4-mapped (``::ffff:a.b.c.d``):
  ``hi == 0`` and ``lo == 0x0000_ffff_0000_0000 | addr``, so one prefix
  matcher serves both families; ``af`` tells them apart.
* Offsets of decoded layers (``l3_off``, ``l4_off``, ``payload_off``) are
  relative to the frame start; ``-1`` means absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Link types (pcap LINKTYPE_* values) the decoder understands.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6, version from the first nibble
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

DIR_INPUT = 0
DIR_OUTPUT = 1

V4_MAPPED = np.uint64(0x0000_FFFF_0000_0000)

#: Columns every source fills, with their dtypes.
RAW_COLUMNS: dict[str, type] = {
    "offset": np.int64,  # start of the frame in ``data``
    "caplen": np.int32,  # captured bytes
    "wirelen": np.int32,  # bytes on the wire
    "ts": np.int64,  # nanoseconds
    "iface": np.int32,  # interface id (see flowplane.interfaces.InterfaceTable)
    "direction": np.int8,  # DIR_INPUT / DIR_OUTPUT
}

#: Columns the core decoder fills, with their dtypes and meaning.
DECODED_COLUMNS: dict[str, type] = {
    "status": np.uint8,  # 0 = decoded; else a flowplane.decode.Reason code
    "af": np.uint8,  # 0 (not IP), 4, 6
    "ethertype": np.uint16,  # innermost ethertype after VLAN/MPLS (0x0800, 0x86dd, 0x8847, ...)
    "dst_mac": np.uint64,  # 48-bit, 0 when the link has no MAC header
    "src_mac": np.uint64,
    "vlan": np.uint16,  # outer 802.1Q/802.1ad VLAN id, 0 if none
    "vlan_inner": np.uint16,  # inner (QinQ) VLAN id, 0 if none
    "mpls_depth": np.uint8,  # number of MPLS labels in the stack
    "mpls1": np.uint32,  # top three label stack entries as 24-bit
    "mpls2": np.uint32,  #   label<<4 | exp<<1 | bottom-of-stack (IPFIX 70-72 layout)
    "mpls3": np.uint32,
    "l3_off": np.int32,  # offset of the IP header in the frame, -1 if none
    "l4_off": np.int32,  # offset of the transport header, -1 if none/non-first fragment
    "payload_off": np.int32,  # offset after the transport header, -1 if unknown
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "proto": np.uint8,  # upper-layer protocol (after IPv6 extension headers)
    "tos": np.uint8,  # IPv4 ToS / IPv6 traffic class; DSCP = tos >> 2
    "ttl": np.uint8,  # IPv4 TTL / IPv6 hop limit
    "ip_len": np.uint32,  # L3 length from the IP header (total / payload+40)
    "ip_id": np.uint32,  # IPv4 id, IPv6 fragment id
    "ip_hlen": np.uint16,  # IPv4 header length (options) / IPv6 40 + extension headers
    "frag": np.uint8,  # 0 not a fragment, 1 first fragment, 2 later fragment
    "frag_off": np.uint16,  # fragment offset in 8-byte units
    "sport": np.uint16,  # TCP/UDP/SCTP ports, 0 otherwise
    "dport": np.uint16,
    "tcp_flags": np.uint8,  # FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80
    "icmp_type": np.uint8,  # ICMP / ICMPv6 type and code (0 otherwise)
    "icmp_code": np.uint8,
    "gre_proto": np.uint16,  # GRE protocol type, 0 if not GRE
    "ip6_ext": np.uint16,  # IPv6 extension headers seen, IPFIX ipv6ExtensionHeaders (IE 64) bits:
    #   DST 0x1, HOP 0x2, UNK 0x8, FRA0 0x10 (first fragment), RH 0x20, FRA1 0x40 (later fragment),
    #   MOB 0x1000, ESP 0x2000, AH 0x4000
}

_ALL_COLUMNS = tuple(RAW_COLUMNS) + tuple(DECODED_COLUMNS)


class PacketBatch:
    """A batch of frames in columns.  Data only: no behaviour beyond views.

    Build with :meth:`from_frames` (tests, rare paths) or directly from a
    source's buffer and columns.  ``decoded`` is False until the core decoder
    ran; after that every name in :data:`DECODED_COLUMNS` is an attribute.
    """

    __slots__ = ("data", "linktype", "source", "decoded", "meta") + _ALL_COLUMNS

    def __init__(
        self,
        data: np.ndarray,
        offset: np.ndarray,
        caplen: np.ndarray,
        wirelen: np.ndarray,
        ts: np.ndarray,
        *,
        linktype: int = LINKTYPE_ETHERNET,
        iface: np.ndarray | int = 0,
        direction: np.ndarray | int = DIR_INPUT,
        source: str = "",
    ) -> None:
        n = len(offset)
        self.data = data
        self.offset = np.asarray(offset, dtype=np.int64)
        self.caplen = np.asarray(caplen, dtype=np.int32)
        self.wirelen = np.asarray(wirelen, dtype=np.int32)
        self.ts = np.asarray(ts, dtype=np.int64)
        self.iface = _column(iface, n, np.int32)
        self.direction = _column(direction, n, np.int8)
        self.linktype = linktype
        self.source = source
        self.decoded = False
        self.meta: dict = {}

    def __len__(self) -> int:
        return len(self.offset)

    def __repr__(self) -> str:
        return f"<PacketBatch n={len(self)} source={self.source!r} linktype={self.linktype} decoded={self.decoded}>"

    # -- construction ----------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        frames: list[bytes],
        *,
        ts: list[int] | np.ndarray | None = None,
        wirelen: list[int] | None = None,
        linktype: int = LINKTYPE_ETHERNET,
        iface: np.ndarray | int = 0,
        direction: np.ndarray | int = DIR_INPUT,
        source: str = "",
    ) -> PacketBatch:
        """Copy a list of frames into one buffer (for tests and rare paths)."""
        lens = np.fromiter((len(f) for f in frames), dtype=np.int32, count=len(frames))
        offs = np.zeros(len(frames), dtype=np.int64)
        if len(frames):
            np.cumsum(lens[:-1], out=offs[1:])
        data = np.frombuffer(b"".join(frames), dtype=np.uint8)
        if ts is None:
            ts = np.zeros(len(frames), dtype=np.int64)
        wl = lens if wirelen is None else np.asarray(wirelen, dtype=np.int32)
        return cls(data, offs, lens, wl, np.asarray(ts, dtype=np.int64), linktype=linktype,
                   iface=iface, direction=direction, source=source)

    @classmethod
    def empty(cls, *, linktype: int = LINKTYPE_ETHERNET, source: str = "") -> PacketBatch:
        return cls.from_frames([], linktype=linktype, source=source)

    # -- views ------------------------------------------------------------
    def frame(self, i: int) -> memoryview:
        """Bytes of frame *i* (zero copy).  For rare per-packet paths only."""
        o = int(self.offset[i])
        return memoryview(self.data[o : o + int(self.caplen[i])])

    def frames(self) -> Iterator[memoryview]:
        """Per-packet view; the slow path, never for bulk traffic."""
        for i in range(len(self)):
            yield self.frame(i)

    def select(self, sel: np.ndarray) -> PacketBatch:
        """A new batch of the rows in *sel* (bool mask or index array).

        Shares ``data``; copies the (small) columns.  Decoded columns are
        carried over, so the result needs no second decode.
        """
        out = PacketBatch.__new__(PacketBatch)
        out.data = self.data
        out.linktype = self.linktype
        out.source = self.source
        out.decoded = self.decoded
        out.meta = self.meta
        names = _ALL_COLUMNS if self.decoded else tuple(RAW_COLUMNS)
        for name in names:
            setattr(out, name, getattr(self, name)[sel])
        return out

    def compact(self) -> PacketBatch:
        """Copy the frames into a private buffer (before the source reuses its own)."""
        n = len(self)
        if n == 0:
            out = self.select(np.zeros(0, dtype=np.int64))
            out.data = np.zeros(0, dtype=np.uint8)
            return out
        lens = self.caplen.astype(np.int64)
        new_off = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=new_off[1:])
        total = int(lens.sum())
        # gather all bytes in one fancy-index: index = offset[i] + (0..caplen[i])
        starts = np.repeat(self.offset - new_off, lens)
        idx = starts + np.arange(total, dtype=np.int64)
        out = self.select(slice(None))
        out.data = self.data[idx]
        out.offset = new_off
        return out

    def bytes_in(self, sel: np.ndarray | None = None) -> int:
        """Sum of wire lengths (all rows or the rows in *sel*)."""
        w = self.wirelen if sel is None else self.wirelen[sel]
        return int(w.sum(dtype=np.int64))


def _column(value: np.ndarray | int, n: int, dtype: type) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(dtype, copy=False)
    return np.full(n, value, dtype=dtype)


@dataclass(frozen=True, slots=True)
class ActionSelection:
    """The rows of a batch that one firewall term sent to one action.

    ``arg`` is the action's configured argument (``None`` for a bare action,
    e.g. ``sample``; the instance name for ``inline-monitoring-instance X``).
    """

    filter: str
    term: str
    action: str
    arg: object
    batch: PacketBatch

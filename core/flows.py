"""Flow records: the columnar unit that leaves flow caches and enters encoders.

A :class:`FlowRecords` wraps one numpy structured array of :data:`FLOW_DTYPE`
rows plus what an encoder needs to know about where they came from (the
instance, its sampling interval and algorithm, the cache's clock origin).

Conventions
-----------
* Addresses as in :mod:`flowplane.batch`: 128-bit in two uint64 halves,
  IPv4 stored IPv4-mapped (``hi == 0``, ``lo == 0xffff_0000_0000 | addr``);
  ``af`` is 4 or 6.
* Times are int64 nanoseconds on the cache's clock: packet time for a pcap
  replay, wall-clock (``time.time_ns()``) for live capture.
* ICMP/ICMPv6 flows carry ``sport = 0`` and ``dport = type << 8 | code``
  (the NetFlow convention nfdump and softflowd use); ``icmp_type`` and
  ``icmp_code`` are set too.
* ``packets``/``bytes`` are as counted (sampled); an encoder scales them only
  if the instance asks (``FlowRecords.scaled`` tells whether they already are).
* ``bytes`` counts IP bytes (the IP total length), as NetFlow does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: One flow record.  Field order is by alignment (8, 4, 2, 1 bytes) to keep it packed.
FLOW_DTYPE = np.dtype([
    ("src_hi", "u8"), ("src_lo", "u8"), ("dst_hi", "u8"), ("dst_lo", "u8"),
    ("nexthop_hi", "u8"), ("nexthop_lo", "u8"),
    ("packets", "u8"), ("bytes", "u8"),
    ("first_ns", "i8"), ("last_ns", "i8"),
    ("src_mac", "u8"), ("dst_mac", "u8"),
    ("in_if", "u4"), ("out_if", "u4"),
    ("mpls1", "u4"), ("mpls2", "u4"), ("mpls3", "u4"),  # 24-bit label<<4|exp<<1|bos, as in PacketBatch
    ("src_as", "u4"), ("dst_as", "u4"),
    ("sport", "u2"), ("dport", "u2"),
    ("vlan", "u2"),
    ("ip6_ext", "u2"),  # OR of ipv6ExtensionHeaders bits (IPFIX IE 64) over the flow's packets
    ("proto", "u1"), ("tos", "u1"), ("tcp_flags", "u1"), ("af", "u1"),
    ("icmp_type", "u1"), ("icmp_code", "u1"),
    ("src_mask", "u1"), ("dst_mask", "u1"),
    ("mpls_depth", "u1"), ("direction", "u1"),  # 0 ingress, 1 egress
    ("end_reason", "u1"),  # END_* below (IPFIX flowEndReason values)
    ("frag", "u1"),  # bit 0: some packet was a fragment (IPv4 MF/offset or IPv6 fragment header)
])

# IPFIX flowEndReason (IE 136)
END_IDLE = 1
END_ACTIVE = 2
END_TCP = 3  # end of flow detected (FIN/RST)
END_FORCED = 4  # shutdown / flush
END_LACK_OF_RESOURCES = 5  # cache full

REASON_TO_END = {"idle": END_IDLE, "active": END_ACTIVE, "tcp": END_TCP, "shutdown": END_FORCED,
                 "full": END_LACK_OF_RESOURCES}

# IPFIX samplingAlgorithm / v9 SAMPLING_ALGORITHM
SAMPLING_DETERMINISTIC = 1
SAMPLING_RANDOM = 2


@dataclass(slots=True)
class FlowRecords:
    """Expired flows of one cache, in columns.

    :param data: ``np.ndarray`` of :data:`FLOW_DTYPE`.
    :param instance: the sampling instance / accounting group / monitoring group name.
    :param sampling_interval: 1 in N packets was sampled (1 = every packet).
    :param sampling_algorithm: :data:`SAMPLING_DETERMINISTIC` or :data:`SAMPLING_RANDOM`.
    :param scaled: True if ``packets``/``bytes`` were already multiplied by the interval.
    :param boot_ns: the cache clock's origin (first packet, or start-up for live capture);
        NetFlow v5/v9 express times as milliseconds since this ("sysUptime").
    """

    data: np.ndarray
    instance: str = ""
    sampling_interval: int = 1
    sampling_algorithm: int = SAMPLING_DETERMINISTIC
    scaled: bool = False
    boot_ns: int = 0

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def empty(cls, n: int = 0, **kw) -> FlowRecords:
        return cls(np.zeros(n, dtype=FLOW_DTYPE), **kw)

    def select(self, sel) -> FlowRecords:
        return FlowRecords(self.data[sel], self.instance, self.sampling_interval, self.sampling_algorithm,
                           self.scaled, self.boot_ns)

"""Core packet decoder (columnar).  PLACEHOLDER: being written by the decoder helper.

Public API (fixed):

* ``class Reason(IntEnum)`` -- status codes; ``REASON_TEXT[reason]`` is the
  Junos-style phrase ``show services accounting errors`` prints.
* ``decode(batch) -> np.ndarray`` -- fills every column of
  ``flowplane.batch.DECODED_COLUMNS`` on *batch*, sets ``batch.decoded = True``
  and returns ``np.bincount(batch.status, minlength=len(Reason))`` (packets
  per reason, index 0 = decoded fine).  Never raises on packet content.
"""

from __future__ import annotations

from enum import IntEnum


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
}

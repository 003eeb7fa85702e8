"""Wire layouts of the flow export formats, shared by the encoders that write them and the collector
that reads them: NetFlow v5 (header and record), the NetFlow v9 and IPFIX message headers.
"""

from __future__ import annotations

import struct

import numpy as np

#: NetFlow v5 header (24 bytes); ``count`` and ``flow_sequence`` vary per datagram.
NETFLOW_V5_HEADER = np.dtype([
    ("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
    ("unix_nsecs", ">u4"), ("flow_sequence", ">u4"), ("engine_type", "u1"), ("engine_id", "u1"),
    ("sampling_interval", ">u2"),
])
#: NetFlow v5 flow record (48 bytes).
NETFLOW_V5_RECORD = np.dtype([
    ("srcaddr", ">u4"), ("dstaddr", ">u4"), ("nexthop", ">u4"), ("input", ">u2"), ("output", ">u2"),
    ("dPkts", ">u4"), ("dOctets", ">u4"), ("First", ">u4"), ("Last", ">u4"),
    ("srcport", ">u2"), ("dstport", ">u2"), ("pad1", "u1"), ("tcp_flags", "u1"), ("prot", "u1"),
    ("tos", "u1"), ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"),
    ("pad2", ">u2"),
])
assert NETFLOW_V5_HEADER.itemsize == 24 and NETFLOW_V5_RECORD.itemsize == 48
#: The most records a NetFlow v5 datagram carries (Cisco's limit; collectors refuse more).
NETFLOW_V5_MAX_RECORDS = 30

#: NetFlow v9 header (RFC 3954): version, count, sysUptime ms, unix secs, package sequence, source id.
NETFLOW_V9_HEADER = struct.Struct(">HHIIII")
#: IPFIX message header (RFC 7011): version 10, length, export time s, sequence, observation domain.
IPFIX_HEADER = struct.Struct(">HHIII")
IPFIX_VERSION = 10

_U32 = 0xFFFF_FFFF


def ipfix_header(length: int, export_s: int, sequence: int, domain: int) -> bytes:
    """The 16-byte IPFIX message header; the 32-bit fields wrap."""
    return IPFIX_HEADER.pack(IPFIX_VERSION, length, export_s & _U32, sequence & _U32, domain & _U32)


def netflow_v9_header(count: int, uptime_ms: int, unix_s: int, sequence: int, source_id: int) -> bytes:
    """The 20-byte NetFlow v9 packet header; the 32-bit fields wrap."""
    return NETFLOW_V9_HEADER.pack(9, count, uptime_ms & _U32, unix_s & _U32, sequence & _U32, source_id & _U32)

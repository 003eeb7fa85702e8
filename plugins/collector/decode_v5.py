"""NetFlow v5 datagrams (Cisco "NetFlow Export Datagram Format"): a 24-byte header and 48-byte records.

Records of a batch are grouped per exporter engine and decoded with one
``np.frombuffer``.  Times: ``First``/``Last`` are sysUptime milliseconds; the
absolute time is ``unix time of the header - (sysUptime - First)`` with the
difference taken modulo 2**32 as a signed 32-bit number (uptime wraps after
49.7 days).  ``sampling_interval``: low 14 bits (0 = unsampled); it becomes
the records' sampling interval.  The domain is ``engine_type << 8 | engine_id``.
Errors: ``short-header``, ``bad-count`` (0 or more than 30 records),
``count-mismatch`` (the datagram holds fewer records than the header says; the
complete ones are decoded).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from flowplane.api import FLOW_DTYPE

from .decode_v9ipfix import _sequence
from .templates import MAPPED, NS, Ctx

if TYPE_CHECKING:  # pragma: no cover
    from .decoder import Decoder

_HDR = struct.Struct(">HHIIIIBBH")
V5_RECORD = np.dtype([
    ("srcaddr", ">u4"), ("dstaddr", ">u4"), ("nexthop", ">u4"), ("input", ">u2"), ("output", ">u2"),
    ("dPkts", ">u4"), ("dOctets", ">u4"), ("First", ">u4"), ("Last", ">u4"),
    ("srcport", ">u2"), ("dstport", ">u2"), ("pad1", "u1"), ("tcp_flags", "u1"), ("prot", "u1"),
    ("tos", "u1"), ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"),
    ("pad2", ">u2"),
])
MAX_RECORDS = 30


class V5Layout:
    """The fixed v5 'template': what the decoder groups v5 records by."""

    template_id = 0
    options = False
    varlen = False
    record_length = 48
    dtype = V5_RECORD

    def convert(self, arr: np.ndarray, ctx: Ctx, varvals=None, sampling=None):
        n = len(arr)
        out = np.zeros(n, dtype=FLOW_DTYPE)
        out["af"] = 4
        out["src_lo"] = MAPPED | arr["srcaddr"].astype(np.uint64)
        out["dst_lo"] = MAPPED | arr["dstaddr"].astype(np.uint64)
        nh = arr["nexthop"].astype(np.uint64)
        out["nexthop_lo"] = np.where(nh != 0, MAPPED | nh, 0)
        out["in_if"] = arr["input"]
        out["out_if"] = arr["output"]
        out["packets"] = arr["dPkts"]
        out["bytes"] = arr["dOctets"]
        out["sport"] = arr["srcport"]
        out["dport"] = arr["dstport"]
        out["tcp_flags"] = arr["tcp_flags"]
        out["proto"] = arr["prot"]
        out["tos"] = arr["tos"]
        out["src_as"] = arr["src_as"]
        out["dst_as"] = arr["dst_as"]
        out["src_mask"] = arr["src_mask"]
        out["dst_mask"] = arr["dst_mask"]
        icmp = out["proto"] == 1
        if icmp.any():
            out["icmp_type"] = np.where(icmp, out["dport"] >> 8, 0)
            out["icmp_code"] = np.where(icmp, out["dport"] & 0xFF, 0)
        export_ms = ctx.export_ns // 1_000_000
        for src, dst in (("First", "first_ns"), ("Last", "last_ns")):
            diff = ((ctx.uptime_ms - arr[src].astype(np.int64)) & 0xFFFF_FFFF).astype(np.uint32).view(np.int32)
            out[dst] = (export_ms - diff.astype(np.int64)) * 1_000_000
        rate = sampling(None) if sampling else np.ones(n, np.uint32)
        return out, rate, {}, {}


V5 = V5Layout()


def decode_v5(dec: Decoder, exp, mv: memoryview) -> None:
    if len(mv) < 24:
        dec.error(exp, "short-header")
        return
    _v, count, uptime, secs, nsecs, seq, etype, eid, sampling = _HDR.unpack_from(mv, 0)
    if count == 0 or count > MAX_RECORDS:
        dec.error(exp, "bad-count")
        return
    avail = (len(mv) - 24) // 48
    if count > avail:
        dec.error(exp, "count-mismatch")
        count = avail
        if count == 0:
            return
    dom = exp.domain(dec, 5, (etype << 8) | eid)
    if dom is None:
        return
    dom.default_rate = (sampling & 0x3FFF) or 1
    _sequence(dec, dom, seq, count)
    dec.group(dom, V5, mv[24:24 + 48 * count], count, secs * NS + min(nsecs, NS - 1), uptime, None)

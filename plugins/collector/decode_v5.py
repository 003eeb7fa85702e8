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

from flowplane.api import FLOW_DTYPE, NETFLOW_V5_HEADER, NETFLOW_V5_MAX_RECORDS, NETFLOW_V5_RECORD

from .decode_v9ipfix import _sequence
from .templates import MAPPED, NS, Ctx

if TYPE_CHECKING:  # pragma: no cover
    from .decoder import Decoder

_HDR = struct.Struct(">HHIIIIBBH")
assert _HDR.size == NETFLOW_V5_HEADER.itemsize
V5_RECORD = NETFLOW_V5_RECORD
MAX_RECORDS = NETFLOW_V5_MAX_RECORDS


#: flow record column <- v5 record field, copied as they are
_COPIED = (("in_if", "input"), ("out_if", "output"), ("packets", "dPkts"), ("bytes", "dOctets"),
           ("sport", "srcport"), ("dport", "dstport"), ("tcp_flags", "tcp_flags"), ("proto", "prot"), ("tos", "tos"),
           ("src_as", "src_as"), ("dst_as", "dst_as"), ("src_mask", "src_mask"), ("dst_mask", "dst_mask"))


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
        for dst, src in _COPIED:
            out[dst] = arr[src]
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

"""sFlow version 5 datagrams (sflow.org "sFlow Version 5", 2004): one flow record per sampled packet.

Datagram: version 5, agent address (type 1 IPv4 / 2 IPv6), sub-agent id,
sequence, uptime, sample count, samples.  Samples (enterprise 0 only, others
skipped by their length): flow sample (format 1, compact interfaces) and
expanded flow sample (format 3) give the sampling rate, sample pool, drops and
input/output interfaces; counter samples (2, 4) are counted
(``sflow-counter-samples``), not stored.  Flow records: raw packet header
(format 1; header protocol 1 Ethernet, 11 IPv4, 12 IPv6), extended switch
(1001: VLANs), sampled IPv4/IPv6 (3/4, used only when a sample has no raw
header); anything else is skipped by its length (``sflow-records-skipped``).

The raw headers of a whole batch are decoded together at ``flush``: one
:class:`flowplane.batch.PacketBatch` per header protocol and one
:func:`flowplane.decode.decode` call, which gives addresses, ports, protocol,
ToS, TCP flags, VLANs, MPLS and the IP length.

Each sampled packet becomes one record: ``packets`` 1, ``bytes`` the IP length
(the frame length when the header has no IP layer),
``sampling_interval`` the sample's rate, ``first``/``last`` the datagram's
arrival, exporter the *agent address* (not the datagram's source), domain the
sub-agent id, version :data:`SFLOW_VERSION`.  Extras: ``samplePool``,
``droppedPackets`` (per sample), ``postVlanId`` (1001 destination VLAN) and
``dot1qCustomerVlanId`` (inner QinQ tag) when any record has them.

Errors (``decode`` drops, never raised): ``short-header``, ``sflow-bad-agent``
(unknown address type), ``sflow-bad-sample-length`` / ``sflow-bad-record-length``
(a length that runs past its container), ``sflow-bad-sample`` (a flow sample
shorter than its fixed part), ``sflow-bad-header-length`` (header bytes
longer than their record), ``sflow-bad-record`` (a known record shorter than
its fixed part), ``sflow-count-mismatch`` (fewer samples/records than
announced; the complete ones are kept), ``sflow-too-many-samples``.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING

import numpy as np

from flowplane.api import FLOW_DTYPE, PacketBatch
from flowplane.api import decode as decode_packets

from .decode_v9ipfix import Exporter, _sequence
from .templates import MAPPED, Ctx

if TYPE_CHECKING:  # pragma: no cover
    from .decoder import Decoder

SFLOW_VERSION = 105  # "sFlow 5" in CollectedFlows.version / exporter versions, apart from NetFlow v5
MAX_SAMPLES = 4096
MAX_RECORDS = 4096
MAX_EXPORTERS = 65536  # as decoder.MAX_EXPORTERS (agents count as exporters)

LINKTYPES = {1: 1, 11: 228, 12: 229}  # sFlow header_protocol -> pcap linktype

_U32 = struct.Struct(">I")
_HDR = struct.Struct(">IIII")  # sub-agent, sequence, uptime, samples
_FLOW = struct.Struct(">IIIIIIII")  # seq, source id, rate, pool, drops, input, output, records
_XFLOW = struct.Struct(">IIIIIIIIIII")  # seq, id type, id index, rate, pool, drops, in fmt/val, out fmt/val, records
_REC = struct.Struct(">II")
_RAW = struct.Struct(">IIII")  # protocol, frame length, stripped, header length
_SW = struct.Struct(">IIII")  # src vlan, src prio, dst vlan, dst prio
_S4 = struct.Struct(">II4s4sIIII")  # length, protocol, src, dst, sport, dport, tcp flags, tos
_S6 = struct.Struct(">II16s16sIIII")

KIND_NONE, KIND_HEADER, KIND_SAMPLED = 0, 1, 2

ROW = np.dtype([
    ("rate", "<u4"), ("pool", "<u4"), ("drops", "<u4"), ("in_if", "<u4"), ("out_if", "<u4"),
    ("frame_len", "<u4"), ("stripped", "<u4"), ("hproto", "<u4"), ("src_vlan", "<u4"), ("dst_vlan", "<u4"),
    ("s_len", "<u4"), ("s_proto", "<u4"), ("s_sport", "<u4"), ("s_dport", "<u4"), ("s_flags", "<u4"),
    ("s_tos", "<u4"), ("s_src_hi", "<u8"), ("s_src_lo", "<u8"), ("s_dst_hi", "<u8"), ("s_dst_lo", "<u8"),
    ("kind", "u1"), ("s_af", "u1"), ("pad", "u2"),
])
_ROW = struct.Struct("<" + "I" * 16 + "QQQQ" + "BBH")
assert _ROW.size == ROW.itemsize


def _addr16(b: bytes) -> tuple[int, int]:
    v = int.from_bytes(b, "big")
    return v >> 64, v & 0xFFFF_FFFF_FFFF_FFFF


class SFlowLayout:
    """What the decoder groups sFlow records by (one per agent/sub-agent); converts a batch's rows."""

    template_id = 0
    options = False
    varlen = True  # the raw headers travel beside the fixed rows
    record_length = ROW.itemsize
    dtype = ROW

    def convert(self, arr: np.ndarray, ctx: Ctx, varvals=None, sampling=None):
        n = len(arr)
        out = np.zeros(n, dtype=FLOW_DTYPE)
        headers = (varvals or {}).get(0, [b""] * n)
        kind = arr["kind"]
        wire = arr["frame_len"].astype(np.int64)  # includes what was stripped (FCS, or a cut payload)
        out["packets"] = 1
        out["bytes"] = wire.astype(np.uint64)
        out["first_ns"] = ctx.export_ns
        out["last_ns"] = ctx.export_ns
        out["in_if"] = arr["in_if"]
        out["out_if"] = arr["out_if"]
        out["vlan"] = (arr["src_vlan"] & 0xFFF).astype(np.uint16)
        inner = np.zeros(n, np.uint16)
        # sampled IPv4/IPv6 records (no raw header)
        s = kind == KIND_SAMPLED
        if s.any():
            out["af"][s] = arr["s_af"][s]
            for col in ("src_hi", "src_lo", "dst_hi", "dst_lo"):
                out[col][s] = arr["s_" + col][s]
            out["proto"][s] = arr["s_proto"][s]
            out["sport"][s] = arr["s_sport"][s]
            out["dport"][s] = arr["s_dport"][s]
            out["tcp_flags"][s] = arr["s_flags"][s]
            out["tos"][s] = arr["s_tos"][s]
            out["bytes"][s] = arr["s_len"][s]
        # raw headers: one batch decode per header protocol
        h = kind == KIND_HEADER
        for proto in np.unique(arr["hproto"][h]).tolist():
            idx = np.nonzero(h & (arr["hproto"] == proto))[0]
            linktype = LINKTYPES.get(int(proto))
            if linktype is None:
                continue
            frames = [bytes(headers[i]) for i in idx.tolist()]
            caplen = np.fromiter((len(f) for f in frames), np.int64, len(frames))
            wl = np.minimum(np.maximum(wire[idx], caplen), 0x7FFF_FFFF).astype(np.int32)
            batch = PacketBatch.from_frames(frames, wirelen=wl, linktype=linktype)
            decode_packets(batch)
            ip = batch.af != 0
            sel = idx[ip]
            for col in ("af", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "tos", "tcp_flags", "sport",
                        "dport", "icmp_type", "icmp_code", "mpls1", "mpls2", "mpls3", "mpls_depth", "ip6_ext"):
                out[col][sel] = getattr(batch, col)[ip]
            out["frag"][sel] = (batch.frag[ip] != 0)
            out["bytes"][sel] = np.where(batch.ip_len[ip] > 0, batch.ip_len[ip], wire[sel])
            out["src_mac"][idx] = batch.src_mac
            out["dst_mac"][idx] = batch.dst_mac
            v = batch.vlan != 0
            out["vlan"][idx[v]] = batch.vlan[v]
            inner[idx] = batch.vlan_inner
        icmp = (out["proto"] == 1) | (out["proto"] == 58)
        if icmp.any():
            hdr = icmp & (kind == KIND_HEADER)
            out["dport"][hdr] = (out["icmp_type"][hdr].astype(np.uint16) << 8) | out["icmp_code"][hdr]
            smp = icmp & (kind == KIND_SAMPLED)  # sampled IPv4/6: dport already type<<8|code by convention
            out["icmp_type"][smp] = out["dport"][smp] >> 8
            out["icmp_code"][smp] = out["dport"][smp] & 0xFF
            out["sport"][icmp] = 0
        rate = np.maximum(arr["rate"], 1).astype(np.uint32)
        extra = {"samplePool": arr["pool"].astype(np.uint64), "droppedPackets": arr["drops"].astype(np.uint64)}
        if (arr["dst_vlan"] != 0).any():
            extra["postVlanId"] = (arr["dst_vlan"] & 0xFFF).astype(np.uint64)
        if inner.any():
            extra["dot1qCustomerVlanId"] = inner.astype(np.uint64)
        return out, rate, extra, {k: "u" for k in extra}


SFLOW = SFlowLayout()


def _agent_exporter(dec: Decoder, exp: Exporter, agent: str) -> Exporter | None:
    if agent == exp.address:
        return exp
    a = dec.exporters.get(agent)
    if a is None:
        if len(dec.exporters) >= MAX_EXPORTERS:
            dec.error(exp, "exporter-limit")
            return None
        a = dec.exporters[agent] = Exporter(agent, dec.now_ns, None)
    a.last_seen_ns = dec.now_ns
    a.versions.add(SFLOW_VERSION)
    return a


def decode_sflow(dec: Decoder, exp: Exporter, mv: memoryview) -> None:
    end = len(mv)
    if end < 8:
        dec.error(exp, "short-header")
        return
    atype = _U32.unpack_from(mv, 4)[0]
    if atype == 1:
        alen = 4
    elif atype == 2:
        alen = 16
    else:
        dec.error(exp, "sflow-bad-agent")
        return
    o = 8 + alen
    if end < o + 16:
        dec.error(exp, "short-header")
        return
    raw = bytes(mv[8:o])
    agent = str(ipaddress.IPv4Address(raw) if alen == 4 else ipaddress.IPv6Address(raw))
    sub_agent, seq, uptime, nsamples = _HDR.unpack_from(mv, o)
    o += 16
    if nsamples > MAX_SAMPLES:
        dec.error(exp, "sflow-too-many-samples")
        return
    aexp = _agent_exporter(dec, exp, agent)
    if aexp is None:
        return
    dom = aexp.domain(dec, SFLOW_VERSION, sub_agent)
    _sequence(dec, dom, seq, 1)
    rows: list[bytes] = []
    headers: list[bytes] = []
    counters = dec.counters
    for fmt, body, body_end in _tlvs(dec, exp, mv, o, end, nsamples, "sflow-bad-sample-length"):
        enterprise, fmt = fmt >> 12, fmt & 0xFFF
        if enterprise != 0:
            counters.inc("sflow-samples-skipped")
        elif fmt in (1, 3):
            counters.inc("sflow-flow-samples")
            _flow_sample(dec, exp, mv, body, body_end, fmt == 3, rows, headers)
        elif fmt in (2, 4):
            counters.inc("sflow-counter-samples")
        else:
            counters.inc("sflow-samples-skipped")
    if rows:
        dec.group(dom, SFLOW, b"".join(rows), len(rows), dec.now_ns, uptime, {0: headers})


def _tlvs(dec, exp, mv, o: int, end: int, count: int, bad_length: str):
    """``(format, body start, body end)`` of *count* format/length-prefixed structures from *o*; a
    structure past *end* is counted as ``sflow-count-mismatch`` or *bad_length* and ends the walk."""
    for _ in range(count):
        if o + 8 > end:
            dec.error(exp, "sflow-count-mismatch")
            return
        fmt, length = _REC.unpack_from(mv, o)
        body, o = o + 8, o + 8 + length
        if o > end:
            dec.error(exp, bad_length)
            return
        yield fmt, body, o


def _flow_sample(dec, exp, mv, o: int, end: int, expanded: bool, rows: list, headers: list) -> None:
    if expanded:
        if o + _XFLOW.size > end:
            dec.error(exp, "sflow-bad-sample")
            return
        _seq, _t, _i, rate, pool, drops, in_fmt, in_val, out_fmt, out_val, nrec = _XFLOW.unpack_from(mv, o)
        o += _XFLOW.size
    else:
        if o + _FLOW.size > end:
            dec.error(exp, "sflow-bad-sample")
            return
        _seq, _src, rate, pool, drops, inp, outp, nrec = _FLOW.unpack_from(mv, o)
        o += _FLOW.size
        in_fmt, in_val, out_fmt, out_val = inp >> 30, inp & 0x3FFF_FFFF, outp >> 30, outp & 0x3FFF_FFFF
    in_if = in_val if in_fmt == 0 else 0
    out_if = out_val if out_fmt == 0 else 0  # 1: discarded (value = reason), 2: several interfaces
    if nrec > MAX_RECORDS:
        dec.error(exp, "sflow-bad-sample")
        return
    header = None
    hdr_fields = (0, 0, 0)
    sampled = None
    src_vlan = dst_vlan = 0
    for fmt, body, body_end in _tlvs(dec, exp, mv, o, end, nrec, "sflow-bad-record-length"):
        rlen = body_end - body
        if fmt == 1:
            if rlen < _RAW.size:
                dec.error(exp, "sflow-bad-record")
                continue
            hproto, flen, stripped, hlen = _RAW.unpack_from(mv, body)
            if hlen > rlen - _RAW.size:
                dec.error(exp, "sflow-bad-header-length")
                continue
            if header is None:
                header = bytes(mv[body + _RAW.size:body + _RAW.size + hlen])
                hdr_fields = (flen, stripped, hproto)
        elif fmt == 1001:
            if rlen < _SW.size:
                dec.error(exp, "sflow-bad-record")
                continue
            src_vlan, _p, dst_vlan, _q = _SW.unpack_from(mv, body)
        elif fmt == 3:
            if rlen < _S4.size:
                dec.error(exp, "sflow-bad-record")
                continue
            ln, pr, s, d, sp, dp, fl, tos = _S4.unpack_from(mv, body)
            sampled = (4, ln, pr, (0, int(MAPPED) | int.from_bytes(s, "big")),
                       (0, int(MAPPED) | int.from_bytes(d, "big")), sp, dp, fl, tos)
        elif fmt == 4:
            if rlen < _S6.size:
                dec.error(exp, "sflow-bad-record")
                continue
            ln, pr, s, d, sp, dp, fl, tc = _S6.unpack_from(mv, body)
            sampled = (6, ln, pr, _addr16(s), _addr16(d), sp, dp, fl, tc)
        else:
            dec.counters.inc("sflow-records-skipped")
    if header is not None:
        kind = KIND_HEADER
    elif sampled is not None:
        kind = KIND_SAMPLED
    else:
        dec.counters.inc("sflow-samples-without-header")
        return
    flen, stripped, hproto = hdr_fields
    if sampled is None:
        sampled = (0, 0, 0, (0, 0), (0, 0), 0, 0, 0, 0)
    s_af, s_len, s_pr, (sh, sl), (dh, dl), sp, dp, fl, tos = sampled
    rows.append(_ROW.pack(rate, pool, drops, in_if, out_if, flen, stripped, hproto,
                          src_vlan & 0xFFFF_FFFF, dst_vlan & 0xFFFF_FFFF, s_len, s_pr & 0xFF, sp & 0xFFFF,
                          dp & 0xFFFF, fl & 0xFF, tos & 0xFF, sh, sl, dh, dl, kind, s_af, 0))
    headers.append(header or b"")

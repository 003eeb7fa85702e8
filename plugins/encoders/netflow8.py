"""NetFlow v8 encoder: Cisco router-based aggregation export.

``register("v8", EncoderType("v8", (8,), factory))``; config ``version 8``
with ``EncoderOptions.aggregation`` naming the scheme (Junos ``aggregation
{ autonomous-system | protocol-port | source-prefix | destination-prefix |
source-destination-prefix }``).

Header, 28 bytes, big-endian: version=8 count sysUptime unix_secs unix_nsecs
flow_sequence engine_type engine_id aggregation agg_version=2 reserved(4).

Every record starts with ``flows dPkts dOctets First Last`` (5 x uint32);
then, per scheme (sizes and maxima per datagram as in Cisco's format; field
order as Wireshark's ``packet-cflow.c`` ``dissect_v8_aggpdu`` decodes it)::

    1 as                         28 B, 51/dgram  src_as dst_as input output
    2 protocol-port              28 B, 51/dgram  prot pad(1) reserved(2) srcport dstport
    3 source-prefix              32 B, 44/dgram  src_prefix src_mask pad(1) src_as input reserved(2)
    4 destination-prefix         32 B, 44/dgram  dst_prefix dst_mask pad(1) dst_as output reserved(2)
    5 source-destination-prefix  40 B, 35/dgram  src_prefix dst_prefix src_mask dst_mask reserved(2)
                                                 src_as dst_as input output

(flow-tools' ``ftrec_v8_5`` puts ``dst_mask`` before ``src_mask`` in scheme 5;
Wireshark -- the one decoder of v8 left -- and cflowd read ``src_mask`` first,
which is what we write.)

Choices:

* **Aggregation window = one ``encode()`` call.**  The input flows of the call
  are grouped by the scheme's key (vectorised: ``np.lexsort`` + boundaries +
  ``np.add.reduceat`` / ``np.minimum.reduceat`` / ``np.maximum.reduceat``):
  ``flows`` = number of input flows, ``dPkts``/``dOctets`` = sums, ``First`` =
  earliest first, ``Last`` = latest last.  Records leave sorted by key.  The
  caller's expiry batches set the window, as an aggregation cache's export
  timer would.
* **Keys use the exported 16-bit values**: AS > 65535 -> 23456 (AS_TRANS),
  interface index > 65535 -> 65535, so flows that export identically merge.
* **Prefixes**: the address masked with the record's ``src_mask``/``dst_mask``.
  We have no routing table (Junos takes the mask from the route lookup), so a
  mask of 0 (unknown) -- or anything above 32 -- means a host route: /32 and
  the full address.
* **IPv4 only**: other rows are counted as ``counters["not_ipv4"]``.
* **Sums above 2**32-1 are split** into several records with the same key
  and times, ``flows``, ``dPkts`` and ``dOctets`` each divided as evenly as
  integers allow (so a piece may carry 0 flows); totals are exact.
  ``counters["split_records"]`` counts the extra records.
* **flow_sequence** = aggregated records sent by this encoder before the
  datagram (mod 2**32).  Times as in v5 (ms since ``records.boot_ns``, mod 2**32).
* ``scale_counts`` as in v5.  The v8 header has no sampling field.
* ``templates()``/``options_data()`` return ``[]``; ``reset_templates()`` does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowplane.api import Counters, EncoderOptions, EncoderType, FlowRecords, hookimpl

from .netflow5 import (
    _LOW32,
    HeaderRecordsEncoder,
    as16,
    check_header_options,
    if16,
    ipv4_rows,
    records_per_datagram,
    scale_factor,
    split_plan,
    uptime_ms,
)

VERSION = 8
AGG_VERSION = 2

V8_HEADER = np.dtype([
    ("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
    ("unix_nsecs", ">u4"), ("flow_sequence", ">u4"), ("engine_type", "u1"), ("engine_id", "u1"),
    ("aggregation", "u1"), ("agg_version", "u1"), ("reserved", ">u4"),
])
assert V8_HEADER.itemsize == 28

_COMMON = [("flows", ">u4"), ("dPkts", ">u4"), ("dOctets", ">u4"), ("First", ">u4"), ("Last", ">u4")]


@dataclass(frozen=True)
class Scheme:
    name: str
    number: int
    dtype: np.dtype
    max_records: int
    keys: tuple[str, ...]  # record fields that form the aggregation key (taken from the key columns)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("as", 1, np.dtype(_COMMON + [
        ("src_as", ">u2"), ("dst_as", ">u2"), ("input", ">u2"), ("output", ">u2")]),
        51, ("src_as", "dst_as", "input", "output")),
    Scheme("protocol-port", 2, np.dtype(_COMMON + [
        ("prot", "u1"), ("pad", "u1"), ("reserved", ">u2"), ("srcport", ">u2"), ("dstport", ">u2")]),
        51, ("prot", "srcport", "dstport")),
    Scheme("source-prefix", 3, np.dtype(_COMMON + [
        ("src_prefix", ">u4"), ("src_mask", "u1"), ("pad", "u1"), ("src_as", ">u2"), ("input", ">u2"),
        ("reserved", ">u2")]),
        44, ("src_prefix", "src_mask", "src_as", "input")),
    Scheme("destination-prefix", 4, np.dtype(_COMMON + [
        ("dst_prefix", ">u4"), ("dst_mask", "u1"), ("pad", "u1"), ("dst_as", ">u2"), ("output", ">u2"),
        ("reserved", ">u2")]),
        44, ("dst_prefix", "dst_mask", "dst_as", "output")),
    Scheme("source-destination-prefix", 5, np.dtype(_COMMON + [
        ("src_prefix", ">u4"), ("dst_prefix", ">u4"), ("src_mask", "u1"), ("dst_mask", "u1"),
        ("reserved", ">u2"), ("src_as", ">u2"), ("dst_as", ">u2"), ("input", ">u2"), ("output", ">u2")]),
        35, ("src_prefix", "dst_prefix", "src_mask", "dst_mask", "src_as", "dst_as", "input", "output")),
)}
assert [s.dtype.itemsize for s in SCHEMES.values()] == [28, 28, 32, 32, 40]

ALIASES = {
    "autonomous-system": "as", "as-matrix": "as", "1": "as",
    "proto-port": "protocol-port", "protocol-port-matrix": "protocol-port", "2": "protocol-port",
    "src-prefix": "source-prefix", "3": "source-prefix",
    "dst-prefix": "destination-prefix", "4": "destination-prefix",
    "prefix": "source-destination-prefix", "source-destination-prefix-matrix": "source-destination-prefix",
    "5": "source-destination-prefix",
}


def scheme_of(name: str) -> Scheme:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in SCHEMES:
        raise ValueError(f"v8 aggregation must be one of {', '.join(SCHEMES)}; got {name!r}")
    return SCHEMES[key]


def prefix_of(addr: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prefix, mask) with mask 0 or > 32 meaning /32 (no route table: a host route)."""
    m = np.where((mask == 0) | (mask > 32), 32, mask).astype(np.uint64)
    netmask = (_LOW32 << (np.uint64(32) - m)) & _LOW32
    return (addr.astype(np.uint64) & netmask).astype(np.uint32), m.astype(np.uint8)


def key_columns(d: np.ndarray, scheme: Scheme) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for k in scheme.keys:
        if k == "src_as":
            cols[k] = as16(d["src_as"])
        elif k == "dst_as":
            cols[k] = as16(d["dst_as"])
        elif k == "input":
            cols[k] = if16(d["in_if"])
        elif k == "output":
            cols[k] = if16(d["out_if"])
        elif k == "prot":
            cols[k] = d["proto"]
        elif k == "srcport":
            cols[k] = d["sport"]
        elif k == "dstport":
            cols[k] = d["dport"]
        elif k == "src_prefix":
            cols["src_prefix"], cols["src_mask"] = prefix_of(d["src_lo"] & _LOW32, d["src_mask"])
        elif k == "dst_prefix":
            cols["dst_prefix"], cols["dst_mask"] = prefix_of(d["dst_lo"] & _LOW32, d["dst_mask"])
    return cols


def aggregate(d: np.ndarray, scheme: Scheme, factor: int = 1):
    """Group rows of FLOW_DTYPE by the scheme's key.

    Returns ``(keys, flows, packets, octets, first_ns, last_ns)``: ``keys`` a
    dict of key columns (one entry per group), the rest uint64/int64 arrays.
    """
    cols = key_columns(d, scheme)
    names = list(scheme.keys)
    n = len(d)
    order = np.lexsort([cols[k] for k in reversed(names)])
    sc = {k: cols[k][order] for k in names}
    change = np.zeros(max(n - 1, 0), dtype=bool)
    for k in names:
        change |= sc[k][1:] != sc[k][:-1]
    starts = np.flatnonzero(np.concatenate(([True], change)))
    flows = np.diff(np.append(starts, n)).astype(np.uint64)
    pk = d["packets"][order]
    by = d["bytes"][order]
    packets = np.add.reduceat(pk, starts).astype(np.uint64)
    octets = np.add.reduceat(by, starts).astype(np.uint64)
    if factor != 1:
        packets *= np.uint64(factor)
        octets *= np.uint64(factor)
    first = np.minimum.reduceat(d["first_ns"][order], starts)
    last = np.maximum.reduceat(d["last_ns"][order], starts)
    keys = {k: sc[k][starts] for k in names}
    return keys, flows, packets, octets, first, last


class NetFlowV8Encoder(HeaderRecordsEncoder):
    """See the module docstring.  ``counters``: datagrams, records, flows, not_ipv4, split_records."""

    version = VERSION

    def __init__(self, options: EncoderOptions | None = None, counters: Counters | None = None) -> None:
        self.options = options or EncoderOptions(version=8, aggregation="as")
        check_header_options(self.options)
        self.scheme = scheme_of(self.options.aggregation or "")
        self.counters = counters if counters is not None else Counters("encoder-v8")
        self.sequence = 0
        self.per_datagram = records_per_datagram(self.options, V8_HEADER.itemsize, self.scheme.dtype.itemsize,
                                                 self.scheme.max_records)

    def records(self, records: FlowRecords) -> np.ndarray:
        d = ipv4_rows(records, self.counters)
        s = self.scheme
        if len(d) == 0:
            return np.zeros(0, dtype=s.dtype)
        self.counters.inc("flows", len(d))
        keys, flows, packets, octets, first, last = aggregate(d, s, scale_factor(records, self.options))
        rows, (pk32, by32, fl32) = split_plan(packets, octets, flows)
        if rows is not None:
            self.counters.inc("split_records", len(rows) - len(flows))
            keys = {k: v[rows] for k, v in keys.items()}
            first, last = first[rows], last[rows]
        out = np.zeros(len(pk32), dtype=s.dtype)
        out["flows"] = fl32
        out["dPkts"] = pk32
        out["dOctets"] = by32
        out["First"] = uptime_ms(first, records.boot_ns)
        out["Last"] = uptime_ms(last, records.boot_ns)
        for k, v in keys.items():
            out[k] = v
        return out

    def header(self, records: FlowRecords, now_ns: int) -> np.ndarray:
        h = self.base_header(V8_HEADER, records, now_ns)
        h["aggregation"] = self.scheme.number
        h["agg_version"] = AGG_VERSION
        return h



def factory(options: EncoderOptions) -> NetFlowV8Encoder:
    return NetFlowV8Encoder(options)


ENCODER_TYPE = EncoderType("v8", (8,), factory,
                           help="NetFlow v8 router-based aggregation: as, protocol-port, source-prefix, "
                                "destination-prefix, source-destination-prefix")


@hookimpl
def flowplane_register_encoders(register):
    register("v8", ENCODER_TYPE)

"""NetFlow v5 encoder (Cisco "NetFlow Export Datagram Format", version 5).

``register("v5", EncoderType("v5", (5,), factory))``; config ``version 5``.

Datagram: a 24-byte header and 1..30 48-byte records, all big-endian::

    header  version=5 count sysUptime unix_secs unix_nsecs flow_sequence
            engine_type engine_id sampling_interval
    record  srcaddr dstaddr nexthop input output dPkts dOctets First Last
            srcport dstport pad1 tcp_flags prot tos src_as dst_as
            src_mask dst_mask pad2

Choices (the format leaves them to the exporter):

* **IPv4 only.**  IPv6 records cannot be expressed; they are not encoded and
  are counted as ``counters["not_ipv4"]`` (Junos ``show services accounting
  errors``: "Packets dropped (not IPv4)").
* **Times.**  ``sysUptime`` is ``(now_ns - records.boot_ns) // 1e6``; ``First``
  and ``Last`` are ms on the same clock (a time before ``boot_ns`` becomes 0).
  All three wrap modulo 2**32 like a router's uptime after 49.7 days.
  ``unix_secs``/``unix_nsecs`` are ``now_ns``.
* **flow_sequence** is the number of records this encoder sent before the
  datagram (modulo 2**32); an encoder instance is one export stream.
* **Counters over 2**32-1 are split, never clipped**: a flow whose packets or
  bytes do not fit in 32 bits becomes ``k`` consecutive records with the same
  key and times, counts divided as evenly as integers allow (the first
  ``total % k`` pieces carry one more), so a collector's totals are exact.
  ``counters["split_records"]`` counts the extra records.
* **sampling_interval** field: 0 when unsampled (interval 1).  Otherwise the
  top two bits are the mode -- ``01`` deterministic (Cisco "packet interval")
  and ``10`` random (what Wireshark labels "random sampling mode") -- and the
  low 14 bits the interval, clipped to 16383.  When the exported counts are
  already scaled (``EncoderOptions.scale_counts`` or ``FlowRecords.scaled``) the
  field is 0: collectors such as nfdump multiply by it, and would scale twice.
* **scale_counts**: packets and bytes are multiplied by the records' sampling
  interval (``FlowRecords.sampling_interval``, else the options') unless
  ``FlowRecords.scaled`` says they already are.
* 16-bit fields: AS numbers above 65535 become 23456 (AS_TRANS, RFC 6793);
  interface indexes above 65535 are clipped to 65535; the next hop is 0 unless
  it is IPv4.
* Records leave in input order (only IPv4 ones), 30 per datagram, fewer if the
  MTU (``options.mtu - 28``, ``- 48`` over IPv6) cannot hold 30.
* ``templates()``/``options_data()`` return ``[]``; ``reset_templates()`` does nothing.

Everything is vectorised: one structured big-endian numpy array is filled
column-wise; Python loops only over datagrams.
"""

from __future__ import annotations

import numpy as np

from flowplane.api import (
    NETFLOW_V5_HEADER,
    NETFLOW_V5_MAX_RECORDS,
    NETFLOW_V5_RECORD,
    SAMPLING_RANDOM,
    Counters,
    EncoderOptions,
    EncoderType,
    FlowRecords,
    TemplatelessEncoder,
    hookimpl,
)

VERSION = 5
MAX_RECORDS = NETFLOW_V5_MAX_RECORDS
U32_MAX = 0xFFFF_FFFF
AS_TRANS = 23456

V5_HEADER = NETFLOW_V5_HEADER
V5_RECORD = NETFLOW_V5_RECORD

_MAPPED = np.uint64(0xFFFF_0000_0000)
_LOW32 = np.uint64(0xFFFF_FFFF)


# --------------------------------------------------------------------------
# helpers shared with the v8 encoder
# --------------------------------------------------------------------------

def check_header_options(options: EncoderOptions) -> None:
    for name in ("engine_type", "engine_id"):
        v = getattr(options, name)
        if not isinstance(v, int) or not 0 <= v <= 255:
            raise ValueError(f"{name} must be 0..255, got {v!r}")


def datagram_limit(options: EncoderOptions) -> int:
    """Largest datagram payload: MTU minus IPv4/IPv6 + UDP headers (65507 on a stream)."""
    if options.stream:
        return 65507
    return max(0, int(options.mtu) - (48 if options.ipv6_transport else 28))


def records_per_datagram(options: EncoderOptions, header: int, record: int, cisco_max: int) -> int:
    return max(1, min(cisco_max, (datagram_limit(options) - header) // record))


def ipv4_rows(records: FlowRecords, counters: Counters) -> np.ndarray:
    """The rows that are IPv4 (af 4 and IPv4-mapped addresses); the rest are counted as not_ipv4."""
    d = records.data
    ok = ((d["af"] == 4) & (d["src_hi"] == 0) & (d["dst_hi"] == 0)
          & ((d["src_lo"] & ~_LOW32) == _MAPPED) & ((d["dst_lo"] & ~_LOW32) == _MAPPED))
    bad = len(d) - int(np.count_nonzero(ok))
    if bad:
        counters.inc("not_ipv4", bad)
    return d if bad == 0 else d[ok]


def scale_factor(records: FlowRecords, options: EncoderOptions) -> int:
    """What packets/bytes are multiplied by (1 unless scale_counts and not already scaled)."""
    if not options.scale_counts or records.scaled:
        return 1
    n = records.sampling_interval if records.sampling_interval > 1 else options.sampling_interval
    return max(1, int(n))


def uptime_ms(t_ns, boot_ns: int) -> np.ndarray:
    """Milliseconds since boot_ns as uint32 (negative -> 0, wraps modulo 2**32)."""
    ms = (np.asarray(t_ns, dtype=np.int64) - np.int64(boot_ns)) // 1_000_000
    return (np.maximum(ms, 0) & 0xFFFF_FFFF).astype(np.uint32)


def as16(a: np.ndarray) -> np.ndarray:
    return np.where(a > 0xFFFF, AS_TRANS, a).astype(np.uint16)


def if16(i: np.ndarray) -> np.ndarray:
    return np.minimum(i, 0xFFFF).astype(np.uint16)


def nexthop4(d: np.ndarray) -> np.ndarray:
    lo = d["nexthop_lo"]
    ok = (d["nexthop_hi"] == 0) & ((lo & ~_LOW32) == _MAPPED)
    return np.where(ok, lo & _LOW32, 0).astype(np.uint32)


def split_plan(packets: np.ndarray, octets: np.ndarray, *more: np.ndarray):
    """How many 32-bit records each row needs, and the counts of each piece.

    Returns ``(rows, pieces)`` where ``rows`` indexes the input row of every
    output record (a row repeated ``k`` times when it needs ``k`` pieces) and
    ``pieces`` the list of per-record uint32 count columns for ``packets``,
    ``octets`` and ``more``.  ``rows`` is None when nothing needs splitting.
    """
    cols = (packets, octets) + more
    big = np.zeros(len(packets), dtype=bool)
    for c in cols:
        big |= c > U32_MAX
    if not big.any():
        return None, [c.astype(np.uint32) for c in cols]
    k = np.ones(len(packets), dtype=np.uint64)
    for c in cols:
        k = np.maximum(k, (c + np.uint64(U32_MAX - 1)) // np.uint64(U32_MAX))
    rows = np.repeat(np.arange(len(packets)), k.astype(np.int64))
    # index of each piece within its row: 0..k-1
    starts = np.cumsum(k.astype(np.int64)) - k.astype(np.int64)
    idx = (np.arange(len(rows), dtype=np.int64) - np.repeat(starts, k.astype(np.int64))).astype(np.uint64)
    kr = k[rows]
    pieces = []
    for c in cols:
        cr = c[rows]
        q, r = cr // kr, cr % kr
        pieces.append((q + (idx < r).astype(np.uint64)).astype(np.uint32))
    return rows, pieces


def pack(header: np.ndarray, body: np.ndarray, per: int, first_seq: int) -> tuple[list[bytes], int]:
    """Cut ``body`` (structured records) into datagrams of ``per`` records.

    ``header`` is a one-element header array with everything but count and
    flow_sequence filled in.  Returns the datagrams and the next sequence.
    """
    n = len(body)
    if n == 0:
        return [], first_seq
    npk = -(-n // per)
    hdrs = np.repeat(header, npk)
    counts = np.full(npk, per, dtype=np.int64)
    counts[-1] = n - per * (npk - 1)
    hdrs["count"] = counts
    hdrs["flow_sequence"] = (first_seq + np.arange(npk, dtype=np.int64) * per) & 0xFFFF_FFFF
    hb = hdrs.tobytes()
    rb = body.tobytes()
    hs, rs = header.dtype.itemsize, body.dtype.itemsize
    out = [hb[i * hs:(i + 1) * hs] + rb[i * per * rs:(i * per + int(counts[i])) * rs] for i in range(npk)]
    return out, (first_seq + n) & 0xFFFF_FFFF


# --------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------

class HeaderRecordsEncoder(TemplatelessEncoder):
    """Shared shell of the template-less formats (v5, v8): ``header()`` + ``records()`` packed
    ``per_datagram`` records at a time; no templates or options data to send."""

    def encode(self, records: FlowRecords, now_ns: int) -> list[bytes]:
        body = self.records(records)
        out, self.sequence = pack(self.header(records, now_ns), body, self.per_datagram, self.sequence)
        self.counters.inc("records", len(body))
        self.counters.inc("datagrams", len(out))
        return out

    def base_header(self, dtype: np.dtype, records: FlowRecords, now_ns: int) -> np.ndarray:
        """A one-element header of *dtype* with the fields v5 and v8 share (version, clocks, engine)."""
        h = np.zeros(1, dtype=dtype)
        h["version"] = self.version
        h["sys_uptime"] = uptime_ms(now_ns, records.boot_ns)
        h["unix_secs"] = (now_ns // 1_000_000_000) & 0xFFFF_FFFF
        h["unix_nsecs"] = now_ns % 1_000_000_000
        h["engine_type"] = self.options.engine_type
        h["engine_id"] = self.options.engine_id
        return h


class NetFlowV5Encoder(HeaderRecordsEncoder):
    """See the module docstring.  ``counters``: datagrams, records, not_ipv4, split_records."""

    version = VERSION

    def __init__(self, options: EncoderOptions | None = None, counters: Counters | None = None) -> None:
        self.options = options or EncoderOptions(version=5)
        check_header_options(self.options)
        self.counters = counters if counters is not None else Counters("encoder-v5")
        self.sequence = 0  # records sent so far (mod 2**32)
        self.per_datagram = records_per_datagram(self.options, V5_HEADER.itemsize, V5_RECORD.itemsize, MAX_RECORDS)

    def sampling_field(self, records: FlowRecords) -> int:
        o = self.options
        if (o.scale_counts or records.scaled):
            return 0
        interval = records.sampling_interval if records.sampling_interval > 1 else o.sampling_interval
        if interval <= 1:
            return 0
        algo = records.sampling_algorithm if records.sampling_interval > 1 else o.sampling_algorithm
        mode = 2 if algo == SAMPLING_RANDOM else 1
        return (mode << 14) | min(int(interval), 0x3FFF)

    def records(self, records: FlowRecords) -> np.ndarray:
        """The V5_RECORD rows for *records* (IPv4 only, split where counts exceed 32 bits)."""
        d = ipv4_rows(records, self.counters)
        f = scale_factor(records, self.options)
        pk, by = d["packets"], d["bytes"]
        if f != 1:
            pk, by = pk * np.uint64(f), by * np.uint64(f)
        rows, (pk32, by32) = split_plan(pk, by)
        if rows is not None:
            self.counters.inc("split_records", len(rows) - len(d))
            d = d[rows]
        out = np.zeros(len(d), dtype=V5_RECORD)
        out["srcaddr"] = d["src_lo"] & _LOW32
        out["dstaddr"] = d["dst_lo"] & _LOW32
        out["nexthop"] = nexthop4(d)
        out["input"] = if16(d["in_if"])
        out["output"] = if16(d["out_if"])
        out["dPkts"] = pk32
        out["dOctets"] = by32
        out["First"] = uptime_ms(d["first_ns"], records.boot_ns)
        out["Last"] = uptime_ms(d["last_ns"], records.boot_ns)
        out["srcport"] = d["sport"]
        out["dstport"] = d["dport"]
        out["tcp_flags"] = d["tcp_flags"]
        out["prot"] = d["proto"]
        out["tos"] = d["tos"]
        out["src_as"] = as16(d["src_as"])
        out["dst_as"] = as16(d["dst_as"])
        out["src_mask"] = np.minimum(d["src_mask"], 32)
        out["dst_mask"] = np.minimum(d["dst_mask"], 32)
        return out

    def header(self, records: FlowRecords, now_ns: int) -> np.ndarray:
        h = self.base_header(V5_HEADER, records, now_ns)
        h["sampling_interval"] = self.sampling_field(records)
        return h



def factory(options: EncoderOptions) -> NetFlowV5Encoder:
    return NetFlowV5Encoder(options)


ENCODER_TYPE = EncoderType("v5", (5,), factory,
                           help="NetFlow v5: IPv4 only, 30 records/datagram, 32-bit counters split")


@hookimpl
def flowplane_register_encoders(register):
    register("v5", ENCODER_TYPE)

"""Template machinery shared by the NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) encoders.

A :class:`Template` is a list of :class:`Field` (information element id,
length, value source).  It compiles to a numpy structured dtype with
big-endian members; :meth:`Template.fill` writes whole columns of a
:data:`~flowplane.flows.FLOW_DTYPE` array into it, and ``.tobytes()`` is the
wire form of all data records at once -- there is no per-record Python loop.
Odd widths (3-byte MPLS label stack entries, 6-byte MAC addresses) are
``u1`` sub-arrays filled from a big-endian ``u8`` view; 16-byte IPv6
addresses are two ``>u8`` halves.

:class:`TemplateEncoder` does what v9 and IPFIX share: routing records to a
template family, the template / options refresh schedule, MTU-bounded
packing of many records per datagram across several sets, padding each set
to 4 bytes, and the counters.  The subclasses supply the header, the set ids
and the (options) template record layouts.

Routing (``route``):

* ``mpls_depth > 0`` and IPv4 -> ``mpls-ipv4`` if configured, else ``mpls``;
  ``mpls_depth > 0`` and IPv6 (or no IP) -> ``mpls``;
* otherwise IPv4 -> ``ipv4``, IPv6 -> ``ipv6``;
* a record whose template is not configured falls back: MPLS records to
  their plain IP family, anything left to ``bridge`` if configured (so a
  bridge-only exporter sends every record with the bridge template);
* what still has no template is dropped and counted
  (``counters.drops[("encode", "no-template")]``).

Exporter address (``EncoderOptions.exporter_address``, off by default; the
collector's re-export turns it on): every data template gets
exporterIPv4Address (130, 4 bytes) appended, and each family gets a twin
template with exporterIPv6Address (131, 16 bytes) instead, id
``template_ids[family + "/exporter6"]`` (default: the family's id +
:data:`EXPORTER6_ID_OFFSET`).  The address is the records' ``exporter``
attribute (:class:`flowplane.export.ReexportRecords`, one exporter per
batch; a batch without one gets 0.0.0.0); an IPv6 exporter's batch goes out
with the twins.  With the option off the templates are exactly as before.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowplane.api import FLOW_DTYPE, SAMPLING_RANDOM, Counters, EncoderOptions, FlowRecords

FAMILIES = ("ipv4", "ipv6", "mpls", "mpls-ipv4", "bridge")
EXPORTER6_ID_OFFSET = 16  # default id of a family's exporterIPv6Address twin: its id + 16
EXPORTER6 = "/exporter6"  # suffix of the twins' family names

_U8 = np.uint64
_MASK32 = _U8(0xFFFF_FFFF)


@dataclass(slots=True)
class Ctx:
    """What a value source needs besides the rows."""

    scale: int = 1  # multiply packets/bytes by this
    boot_ns: int = 0
    exporter: int = 0  # the original exporter's address (EncoderOptions.exporter_address)


Source = Callable[[np.ndarray, Ctx], object]


@dataclass(frozen=True)
class Field:
    """One template field: IANA information element *ie*, *length* bytes, value *source*.

    *source(rows, ctx)* returns an integer column, or ``(hi, lo)`` uint64
    columns for 16-byte fields.
    """

    ie: int
    length: int
    source: Source
    name: str = ""


def _member(i: int, f: Field):
    name = f"f{i}"
    if f.length in (1, 2, 4, 8):
        return (name, f">u{f.length}")
    if f.length == 16:
        return (name, ">u8", (2,))
    return (name, "u1", (f.length,))


class Template:
    """A data template: id, fields, and the numpy record dtype they compile to."""

    def __init__(self, family: str, template_id: int, fields: list[Field]) -> None:
        self.family = family
        self.template_id = template_id
        self.fields = tuple(fields)
        self.dtype = np.dtype([_member(i, f) for i, f in enumerate(self.fields)])
        self.record_length = self.dtype.itemsize
        assert self.record_length == sum(f.length for f in self.fields)

    def fill(self, rows: np.ndarray, ctx: Ctx) -> np.ndarray:
        out = np.empty(len(rows), dtype=self.dtype)
        for i, f in enumerate(self.fields):
            name = f"f{i}"
            v = f.source(rows, ctx)
            if f.length == 16:
                hi, lo = v
                out[name][:, 0] = hi
                out[name][:, 1] = lo
            elif f.length in (1, 2, 4, 8):
                out[name] = v  # numpy casts and byte-swaps into the big-endian member
            else:
                be = np.asarray(v).astype(">u8").view(np.uint8).reshape(-1, 8)
                out[name] = be[:, 8 - f.length:]
        return out

    def field_spec(self) -> list[tuple[int, int]]:
        return [(f.ie, f.length) for f in self.fields]


# ---------------------------------------------------------------------------
# value sources


def col(name: str, mask: int | None = None) -> Source:
    def get(d, ctx):
        return d[name] if mask is None else d[name] & mask
    return get


def ipv4(name: str) -> Source:
    def get(d, ctx):
        return (d[name] & _MASK32).astype(np.uint32)
    return get


def ipv6(prefix: str) -> Source:
    def get(d, ctx):
        return d[prefix + "_hi"], d[prefix + "_lo"]
    return get


def scaled(name: str) -> Source:
    def get(d, ctx):
        return d[name] * _U8(ctx.scale) if ctx.scale != 1 else d[name]
    return get


def abs_ms(name: str) -> Source:
    """IPFIX dateTimeMilliseconds from ns."""
    def get(d, ctx):
        return np.maximum(d[name], 0) // 1_000_000
    return get


def uptime_ms(name: str) -> Source:
    """v9 FIRST/LAST_SWITCHED: ms since the clock origin, uint32 (clipped at 0, wraps like a router's).

    Computed as ``t // 1e6 - boot // 1e6`` so that a collector adding it to
    the boot time it derives from the header (see ``NetFlowV9Encoder``) gets
    exactly ``t // 1e6``.
    """
    def get(d, ctx):
        rel = d[name] // 1_000_000 - ctx.boot_ns // 1_000_000
        return (np.maximum(rel, 0).astype(np.uint64) & _MASK32).astype(np.uint32)
    return get


def icmp_typecode(d, ctx):
    return (d["icmp_type"].astype(np.uint16) << 8) | d["icmp_code"]


def frag_flags(d, ctx):
    """fragmentFlags (IE 197): the MF bit (0x20) for flows that saw a fragment."""
    return np.where(d["frag"] & 1, np.uint8(0x20), np.uint8(0))


def exporter_v4(d, ctx):
    return np.full(len(d), ctx.exporter & 0xFFFF_FFFF, dtype=np.uint32)


def exporter_v6(d, ctx):
    return (np.full(len(d), ctx.exporter >> 64, dtype=np.uint64),
            np.full(len(d), ctx.exporter & 0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64))


def exporter_int(address) -> tuple[int, bool]:
    """(address as an int, is IPv6) of a records' ``exporter``; ``(0, False)`` when absent or not an address.

    An IPv4-mapped IPv6 address counts as IPv4 (a dual-stack socket's view of an IPv4 exporter).
    """
    if not address:
        return 0, False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return 0, False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return int(ip), ip.version == 6


# ---------------------------------------------------------------------------
# field lists per family (IANA IPFIX ids; v9 shares ids 1-79)


def ports_proto() -> list[Field]:
    return [
        Field(7, 2, col("sport"), "sourceTransportPort"),
        Field(11, 2, col("dport"), "destinationTransportPort"),
        Field(4, 1, col("proto"), "protocolIdentifier"),
        Field(5, 1, col("tos"), "ipClassOfService"),
        Field(6, 1, col("tcp_flags"), "tcpControlBits"),
    ]


def counts_ifs() -> list[Field]:
    return [
        Field(2, 8, scaled("packets"), "packetDeltaCount"),
        Field(1, 8, scaled("bytes"), "octetDeltaCount"),
        Field(10, 4, col("in_if"), "ingressInterface"),
        Field(14, 4, col("out_if"), "egressInterface"),
        Field(61, 1, col("direction"), "flowDirection"),
    ]


def times(ipfix: bool) -> list[Field]:
    if ipfix:
        return [Field(152, 8, abs_ms("first_ns"), "flowStartMilliseconds"),
                Field(153, 8, abs_ms("last_ns"), "flowEndMilliseconds"),
                Field(136, 1, col("end_reason"), "flowEndReason")]
    return [Field(22, 4, uptime_ms("first_ns"), "FIRST_SWITCHED"),
            Field(21, 4, uptime_ms("last_ns"), "LAST_SWITCHED")]


def ipv4_fields(ipfix: bool) -> list[Field]:
    return [
        Field(8, 4, ipv4("src_lo"), "sourceIPv4Address"),
        Field(12, 4, ipv4("dst_lo"), "destinationIPv4Address"),
        *ports_proto(), *counts_ifs(),
        Field(32, 2, icmp_typecode, "icmpTypeCodeIPv4"),
        Field(15, 4, ipv4("nexthop_lo"), "ipNextHopIPv4Address"),
        Field(16, 4, col("src_as"), "bgpSourceAsNumber"),
        Field(17, 4, col("dst_as"), "bgpDestinationAsNumber"),
        Field(9, 1, col("src_mask"), "sourceIPv4PrefixLength"),
        Field(13, 1, col("dst_mask"), "destinationIPv4PrefixLength"),
        *times(ipfix),
        Field(197, 1, frag_flags, "fragmentFlags"),
    ]


def ipv6_fields(ipfix: bool) -> list[Field]:
    return [
        Field(27, 16, ipv6("src"), "sourceIPv6Address"),
        Field(28, 16, ipv6("dst"), "destinationIPv6Address"),
        *ports_proto(), *counts_ifs(),
        # v9 has one ICMP_TYPE (32) for both families; IPFIX has icmpTypeCodeIPv6
        Field(139 if ipfix else 32, 2, icmp_typecode, "icmpTypeCodeIPv6" if ipfix else "ICMP_TYPE"),
        Field(62, 16, ipv6("nexthop"), "ipNextHopIPv6Address"),
        Field(16, 4, col("src_as"), "bgpSourceAsNumber"),
        Field(17, 4, col("dst_as"), "bgpDestinationAsNumber"),
        Field(29, 1, col("src_mask"), "sourceIPv6PrefixLength"),
        Field(30, 1, col("dst_mask"), "destinationIPv6PrefixLength"),
        *times(ipfix),
        Field(197, 1, frag_flags, "fragmentFlags"),
        Field(64, 4, col("ip6_ext"), "ipv6ExtensionHeaders" if ipfix else "IPV6_OPTION_HEADERS"),
    ]


def mpls_labels() -> list[Field]:
    return [
        Field(70, 3, col("mpls1"), "mplsTopLabelStackSection"),
        Field(71, 3, col("mpls2"), "mplsLabelStackSection2"),
        Field(72, 3, col("mpls3"), "mplsLabelStackSection3"),
    ]


def mpls_fields(ipfix: bool) -> list[Field]:
    return [*mpls_labels(), Field(60, 1, col("af"), "ipVersion"), *counts_ifs(), *times(ipfix)]


def mpls_ipv4_fields(ipfix: bool) -> list[Field]:
    return [*mpls_labels(), *ipv4_fields(ipfix)]


def bridge_fields(ipfix: bool) -> list[Field]:
    return [
        Field(56, 6, col("src_mac"), "sourceMacAddress"),
        Field(80, 6, col("dst_mac"), "destinationMacAddress"),
        Field(58, 2, col("vlan"), "vlanId"),
        Field(60, 1, col("af"), "ipVersion"),
        Field(4, 1, col("proto"), "protocolIdentifier"),
        *counts_ifs(), *times(ipfix),
    ]


FIELD_LISTS = {"ipv4": ipv4_fields, "ipv6": ipv6_fields, "mpls": mpls_fields,
               "mpls-ipv4": mpls_ipv4_fields, "bridge": bridge_fields}


def build_templates(options: EncoderOptions, ipfix: bool) -> dict[str, Template]:
    out: dict[str, Template] = {}
    for fam in options.templates:
        if fam not in FIELD_LISTS:
            raise ValueError(f"unknown template family {fam!r} (known: {', '.join(FAMILIES)})")
        tid = options.template_ids.get(fam)
        if tid is None or not 256 <= tid <= 65535:
            raise ValueError(f"template id for {fam!r} must be 256..65535, got {tid!r}")
        fields = FIELD_LISTS[fam](ipfix)
        if not options.exporter_address:
            out[fam] = Template(fam, tid, fields)
            continue
        out[fam] = Template(fam, tid, [*fields, Field(130, 4, exporter_v4, "exporterIPv4Address")])
        tid6 = options.template_ids.get(fam + EXPORTER6, tid + EXPORTER6_ID_OFFSET)
        if not 256 <= tid6 <= 65535:
            raise ValueError(f"template id for {fam + EXPORTER6!r} must be 256..65535, got {tid6!r}")
        out[fam + EXPORTER6] = Template(fam + EXPORTER6, tid6,
                                        [*fields, Field(131, 16, exporter_v6, "exporterIPv6Address")])
    ids = [t.template_id for t in out.values()] + [options.options_template_id]
    if len(set(ids)) != len(ids):
        raise ValueError(f"template ids must be distinct: {ids}")
    if not 256 <= options.options_template_id <= 65535:
        raise ValueError(f"options template id must be 256..65535, got {options.options_template_id}")
    return out


def route(d: np.ndarray, configured) -> tuple[dict[str, np.ndarray], int]:
    """Index arrays per configured family, and how many rows have no template."""
    af, depth = d["af"], d["mpls_depth"]
    mpls = depth > 0
    v4, v6 = af == 4, af == 6
    taken = np.zeros(len(d), dtype=bool)
    sel: dict[str, np.ndarray] = {}

    def take(fam, mask):
        nonlocal taken
        if fam in configured:
            m = mask & ~taken
            sel[fam] = m
            taken |= m

    take("mpls-ipv4", mpls & v4)
    take("mpls", mpls)
    take("ipv4", v4)
    take("ipv6", v6)
    take("bridge", np.ones(len(d), dtype=bool))
    out = {f: np.flatnonzero(m) for f, m in sel.items()}
    return {f: ix for f, ix in out.items() if len(ix)}, int(len(d) - taken.sum())


# ---------------------------------------------------------------------------
# the encoder


def pad4(n: int) -> int:
    return (-n) % 4


def datagram_limit(options: EncoderOptions) -> int:
    if options.stream:
        return 65535
    return options.mtu - (48 if options.ipv6_transport else 28)


def selector_algorithm(sampling_algorithm: int) -> int:
    """PSAMP selectorAlgorithm (IE 304): 1 systematic count-based, 3 random n-out-of-N."""
    return 3 if sampling_algorithm == SAMPLING_RANDOM else 1


class TemplateEncoder:
    """Base of the v9 and IPFIX encoders (see the module docstring)."""

    version = 0
    header_length = 0
    template_set_id = 0
    options_template_set_id = 0
    ipfix = False
    name = ""

    def __init__(self, options: EncoderOptions | None = None, counters: Counters | None = None) -> None:
        self.options = options = options if options is not None else EncoderOptions(version=self.version)
        self.counters = counters if counters is not None else Counters(f"encoder-{self.name}")
        self.data_templates = build_templates(options, self.ipfix)
        self.limit = datagram_limit(options)
        if self.limit < 256:
            raise ValueError(f"datagram limit {self.limit} too small (mtu {options.mtu})")
        self.boot_ns = 0
        self.packets_sent = 0  # export packets (v9 header sequence)
        self.data_records_sent = 0  # data + options data records (IPFIX header sequence)
        self._tmpl_due = True
        self._tmpl_pkts = 0  # export packets since templates were last sent
        self._tmpl_ns: int | None = None
        self._opt_pkts = 0
        self._opt_ns: int | None = None
        self._options_template_sent = False
        self._template_block = self._build_template_block()
        sets = self._template_block
        opt_len = len(self._options_record())
        if self.header_length + len(sets) + 4 + pad4(opt_len) + opt_len > self.limit:
            raise ValueError("templates do not fit in one datagram")

    # -- subclass hooks -------------------------------------------------

    def header(self, count: int, length: int, now_ns: int, data_records: int) -> bytes:
        raise NotImplementedError

    def options_template_record(self) -> bytes:
        raise NotImplementedError

    def options_values(self) -> list[tuple[int, int, int]]:
        """(ie, length, value) of the options data record, scope first."""
        raise NotImplementedError

    # -- template and options sets ---------------------------------------

    def template_record(self, t: Template) -> bytes:
        spec = t.field_spec()
        return struct.pack(f">HH{2 * len(spec)}H", t.template_id, len(spec), *[x for p in spec for x in p])

    def _set(self, set_id: int, body: bytes) -> bytes:
        n = 4 + len(body)
        return struct.pack(">HH", set_id, n + pad4(n)) + body + bytes(pad4(n))

    def _build_template_block(self) -> bytes:
        body = b"".join(self.template_record(t) for t in self.data_templates.values())
        out = self._set(self.template_set_id, body) if body else b""
        return out + self._set(self.options_template_set_id, self.options_template_record())

    @property
    def template_record_count(self) -> int:
        return len(self.data_templates) + 1

    def _options_record(self) -> bytes:
        vals = self.options_values()
        out = bytearray()
        for _ie, length, value in vals:
            out += int(value).to_bytes(length, "big")
        return bytes(out)

    def _options_set(self) -> bytes:
        return self._set(self.options.options_template_id, self._options_record())

    # -- schedule ---------------------------------------------------------

    def _due(self, pkts: int, last_ns: int | None, every_pkts: int, every_s: int, now_ns: int) -> bool:
        if last_ns is None:
            return True
        if every_pkts > 0 and pkts >= every_pkts:
            return True
        return every_s > 0 and now_ns - last_ns >= every_s * 1_000_000_000

    def templates_due(self, now_ns: int) -> bool:
        o = self.options
        return self._tmpl_due or self._due(self._tmpl_pkts, self._tmpl_ns, o.template_refresh_packets,
                                           o.template_refresh_seconds, now_ns)

    def options_due(self, now_ns: int) -> bool:
        o = self.options
        return self._due(self._opt_pkts, self._opt_ns, o.option_refresh_packets, o.option_refresh_seconds, now_ns)

    def reset_templates(self) -> None:
        self._tmpl_due = True

    # -- packing -----------------------------------------------------------

    def _start(self, now_ns: int, with_templates: bool, with_options: bool):
        parts: list[bytes] = []
        count = data = 0
        if with_templates:
            parts.append(self._template_block)
            count += self.template_record_count
            self._options_template_sent = True
        if with_options:
            parts.append(self._options_set())
            count += 1
            data += 1
        return parts, count, data

    def _emit(self, out: list[bytes], parts: list[bytes], count: int, data: int, now_ns: int,
              sent_templates: bool, sent_options: bool) -> None:
        length = self.header_length + sum(len(p) for p in parts)
        assert length <= self.limit, (length, self.limit)
        out.append(self.header(count, length, now_ns, data) + b"".join(parts))
        self.packets_sent += 1
        self.data_records_sent += data
        self.counters.inc("datagrams")
        self.counters.inc("bytes", length)
        if sent_templates:
            self._tmpl_due = False
            self._tmpl_pkts = 0
            self._tmpl_ns = now_ns
            self.counters.inc("template-refreshes")
        if sent_options:
            self._opt_pkts = 0
            self._opt_ns = now_ns
        self._tmpl_pkts += 1
        self._opt_pkts += 1

    def _pack(self, chunks: list[tuple[Template, bytes, int]], now_ns: int, *, force_templates: bool = False,
              force_options: bool = False) -> list[bytes]:
        out: list[bytes] = []
        ci = off = 0
        while True:
            with_t = force_templates or self.templates_due(now_ns)
            with_o = with_t or force_options or self.options_due(now_ns)
            force_templates = force_options = False
            if not with_t and with_o and not self._options_template_sent:
                with_t = True
            parts, count, data = self._start(now_ns, with_t, with_o)
            size = self.header_length + sum(len(p) for p in parts)
            added = 0
            while ci < len(chunks):
                t, buf, n = chunks[ci]
                L = t.record_length
                room = self.limit - size
                k = min(n - off, (room - 4) // L)
                while k > 0 and 4 + k * L + pad4(4 + k * L) > room:
                    k -= 1
                if k <= 0:
                    break
                set_len = 4 + k * L
                p = pad4(set_len)
                parts.append(struct.pack(">HH", t.template_id, set_len + p))
                parts.append(buf[off * L:(off + k) * L])
                if p:
                    parts.append(bytes(p))
                size += set_len + p
                count += k
                data += k
                added += k
                off += k
                if off == n:
                    ci += 1
                    off = 0
            if not parts:
                if ci < len(chunks):  # pragma: no cover - limit >= 256 fits any record
                    raise ValueError("a record does not fit in a datagram")
                break
            self._emit(out, parts, count, data, now_ns, with_t, with_o)
            if ci >= len(chunks):
                break
        return out

    # -- the Encoder contract ------------------------------------------------

    def scale_for(self, records: FlowRecords) -> int:
        if self.options.scale_counts and not records.scaled:
            return max(1, int(records.sampling_interval))
        return 1

    def chunks(self, records: FlowRecords) -> list[tuple[Template, bytes, int]]:
        d = records.data
        if d.dtype != FLOW_DTYPE:
            d = d.astype(FLOW_DTYPE)
        sel, dropped = route(d, self.data_templates)
        if dropped:
            self.counters.drop("encode", "no-template", dropped)
        ctx = Ctx(scale=self.scale_for(records), boot_ns=records.boot_ns)
        v6_exporter = False
        if self.options.exporter_address:
            ctx.exporter, v6_exporter = exporter_int(getattr(records, "exporter", None))
        out = []
        for fam, t in self.data_templates.items():
            ix = sel.get(fam)
            if ix is None:
                continue
            if v6_exporter:
                t = self.data_templates[fam + EXPORTER6]
            rows = d if len(ix) == len(d) else d[ix]
            out.append((t, t.fill(rows, ctx).tobytes(), len(ix)))
        self.counters.inc("records", sum(c[2] for c in out))
        return out

    def encode(self, records: FlowRecords, now_ns: int) -> list[bytes]:
        """Datagrams (messages) for *records*; templates / options data included when due.

        With no records, returns a templates datagram only if templates are
        due (first call, reset, refresh interval), else nothing.
        """
        self.boot_ns = records.boot_ns
        if len(records) == 0:
            if self.templates_due(now_ns):
                return self._pack([], now_ns, force_templates=True)
            return []
        return self._pack(self.chunks(records), now_ns)

    def templates(self, now_ns: int) -> list[bytes]:
        """All templates, the options template and options data in one message (e.g. on TCP connect)."""
        return self._pack([], now_ns, force_templates=True, force_options=True)

    def options_data(self, now_ns: int) -> list[bytes]:
        """The options data record alone (with the options template if never sent)."""
        return self._pack([], now_ns, force_options=True)

"""NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) messages, and the template store they share.

State is kept per exporter address and, inside it, per domain (v9 source id,
IPFIX observation domain id): templates and options templates, sampling
rates learnt from options data, systemInitTimeMilliseconds, data sets held
until their template arrives, and the export sequence.

Bounds (a hostile exporter cannot exhaust memory, nor lock its own real
domains out): at most ``max_templates`` templates per exporter address (over
all its domains) and ``MAX_DOMAINS_PER_EXPORTER`` domains, each table
evicting its least recently used entry (counted ``templates-evicted`` /
``domains-evicted``) for a new one; domains idle for ``DOMAIN_IDLE_S`` with
no template left (templates age out by ``template-timeout``) are forgotten;
``MAX_PENDING_SETS`` sets held per domain for at most
``pending_timeout`` seconds.

Every problem is counted by reason (``Decoder.counters.drops[("decode", reason)]``)
and never raises.  Reasons used here:

``short-header``, ``length-mismatch`` (IPFIX length beyond the datagram),
``short-set``/``set-length`` (a set length that lies), ``reserved-set-id``,
``template-truncated``, ``zero-length-template``, ``bad-template-id``
(< 256), ``bad-options-template``,
``bad-varlen`` (a variable-length field past the set), ``bad-sampling-rate``
(an options record's interval beyond 2^32 - 1: that record is ignored), ``no-template``
(held data whose template never came), ``pending-overflow``.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

import numpy as np

from flowplane.api import IPFIX_HEADER, NETFLOW_V9_HEADER

from .fields import IPFIX_OPTIONS_TEMPLATE, IPFIX_TEMPLATE, V9_OPTIONS_TEMPLATE, V9_TEMPLATE
from .sequence import account
from .templates import Template, int_column

if TYPE_CHECKING:  # pragma: no cover
    from .decoder import Decoder

MAX_PENDING_SETS = 256
MAX_RATE = 0xFFFF_FFFF  # a sampling interval is a 32-bit 1-in-N
MAX_DOMAINS_PER_EXPORTER = 256
DOMAIN_IDLE_S = 3600  # a domain that sent nothing this long is forgotten (templates, rates, sequence)
MAX_INTERFACES_PER_EXPORTER = 65536  # interface-table entries learnt from options data
IF_NAME, IF_DESCRIPTION = 82, 83
V9_SCOPE_INTERFACE = 0x10000 | 2  # v9 options scope type 2 (interface), as the template parser marks it
_HDR9 = NETFLOW_V9_HEADER
_HDR10 = IPFIX_HEADER
_SET = struct.Struct(">HH")


class Domain:
    """Per (exporter address, domain id) state."""

    __slots__ = ("exporter", "key", "last_ns", "domain_id", "version", "templates", "sampler_rates", "default_rate",
                 "sysinit_ms", "pending", "next_seq", "alt_seq", "lost", "records", "options_records")

    def __init__(self, exporter: Exporter, domain_id: int, version: int) -> None:
        self.exporter = exporter
        self.key = (5 if version == 5 else 9 if version == 9 else 10 if version == 10 else version, domain_id)
        self.last_ns = exporter.last_seen_ns
        self.domain_id = domain_id
        self.version = version
        self.templates: dict[int, Template] = {}
        self.sampler_rates: dict[int, int] = {}
        self.default_rate: int | None = None
        self.sysinit_ms: int | None = None
        self.pending: deque = deque()  # (template id, body bytes, export_ns, uptime_ms, arrival_ns)
        self.next_seq: int | None = None
        self.alt_seq: int | None = None  # where a message that came behind the sequence would continue
        self.lost = 0
        self.records = 0
        self.options_records = 0

    def sampling(self, sampler_ids: np.ndarray | None, n: int) -> np.ndarray:
        base = self.default_rate or 1
        if sampler_ids is None or not self.sampler_rates:
            return np.full(n, base, dtype=np.uint32)
        out = np.full(n, base, dtype=np.uint32)
        for sid, rate in self.sampler_rates.items():
            out[sampler_ids == sid] = rate
        return out


class Exporter:
    """Per exporter address: domains, counters, the template budget."""

    __slots__ = ("address", "domains", "template_count", "template_lru", "counters", "versions", "first_seen_ns",
                 "last_seen_ns", "session", "interfaces")

    def __init__(self, address: str, now_ns: int, session: str | None = None) -> None:
        self.address = address
        self.session = session  # a TCP connection ("tcp:[addr]:port"): its own templates, no expiry by age
        self.domains: OrderedDict[tuple[int, int], Domain] = OrderedDict()  # (version family, id); LRU first
        self.template_count = 0
        self.template_lru: OrderedDict[tuple, None] = OrderedDict()  # (domain key, template id); LRU first
        self.counters = {"datagrams": 0, "bytes": 0, "records": 0, "errors": 0, "lost": 0, "pending": 0,
                         "sequence_failures": 0}
        self.versions: set[int] = set()
        self.first_seen_ns = now_ns
        self.last_seen_ns = now_ns
        self.interfaces: dict[int, tuple[str | None, str | None]] = {}  # ifindex -> (name, description)

    def domain(self, dec: Decoder, version: int, domain_id: int) -> Domain | None:
        key = (5 if version == 5 else 9 if version == 9 else 10 if version == 10 else version, domain_id)
        d = self.domains.get(key)
        if d is None:
            if len(self.domains) >= MAX_DOMAINS_PER_EXPORTER:
                self.evict_domain(dec, next(iter(self.domains)))
                dec.counters.inc("domains-evicted")
            d = self.domains[key] = Domain(self, domain_id, version)
        else:
            self.domains.move_to_end(key)
        d.last_ns = dec.now_ns
        return d

    def evict_domain(self, dec: Decoder, key: tuple) -> None:
        """Forget domain *key*: its templates give their budget back, data held for them is ``no-template``."""
        d = self.domains.pop(key)
        for tid in d.templates:
            self.template_lru.pop((key, tid), None)
        self.template_count -= len(d.templates)
        if d.pending:
            self.counters["pending"] -= len(d.pending)
            dec.counters.drop("decode", "no-template", len(d.pending))

    def touch(self, dom: Domain, tid: int, now_ns: int) -> None:
        """*dom* and its template *tid* were just used (the recency the limits evict by)."""
        dom.last_ns = now_ns
        self.domains.move_to_end(dom.key)
        k = (dom.key, tid)
        if k in self.template_lru:
            self.template_lru.move_to_end(k)


# ---------------------------------------------------------------------------------------
# templates


def _add_template(dec: Decoder, dom: Domain, t: Template) -> None:
    exp = dom.exporter
    old = dom.templates.get(t.template_id)
    lru_key = (dom.key, t.template_id)
    if old is not None and old.signature == t.signature:
        old.seen_ns = dec.now_ns
        exp.template_lru.move_to_end(lru_key)
        dec.counters.inc("template-refreshes")
        return  # unchanged: keep the compiled object
    if old is None:
        while exp.template_count >= dec.max_templates and exp.template_lru:
            _evict_template(dec, exp)
        exp.template_count += 1
        exp.template_lru[lru_key] = None
    else:
        exp.template_lru.move_to_end(lru_key)
        dec.counters.inc("template-changes")
    t.seen_ns = dec.now_ns
    dom.templates[t.template_id] = t
    dec.counters.inc("options-templates" if t.options else "templates")
    if dom.pending:
        _resolve_pending(dec, dom, t)


def _evict_template(dec: Decoder, exp: Exporter) -> None:
    """The exporter's template store is full: its least recently defined, refreshed or used template goes."""
    (dkey, tid), _ = exp.template_lru.popitem(last=False)
    d = exp.domains.get(dkey)
    if d is not None and d.templates.pop(tid, None) is not None:
        exp.template_count -= 1
    dec.counters.inc("templates-evicted")


def _withdraw(dec: Decoder, dom: Domain, tid: int, set_id: int) -> None:
    exp = dom.exporter
    if tid == set_id:  # withdraw all (options) templates of the domain
        doomed = [k for k, t in dom.templates.items() if t.options == (set_id == IPFIX_OPTIONS_TEMPLATE)]
    else:
        doomed = [tid] if tid in dom.templates else []
    for k in doomed:
        del dom.templates[k]
        exp.template_lru.pop((dom.key, k), None)
        exp.template_count -= 1
    dec.counters.inc("template-withdrawals", max(1, len(doomed)))


def _resolve_pending(dec: Decoder, dom: Domain, t: Template) -> None:
    keep = deque()
    for item in dom.pending:
        if item[0] == t.template_id:
            dec.counters.inc("pending-resolved")
            dom.exporter.counters["pending"] -= 1
            uptime = item[3]
            if dom.version == 10 and uptime < 0 and dom.sysinit_ms is not None:
                uptime = dom.sysinit_ms  # no init time known when it came: the one learnt since
            _data_set(dec, dom, t, item[1], item[2], uptime)
        else:
            keep.append(item)
    dom.pending = keep


def _parse_templates(dec: Decoder, dom: Domain, body: memoryview, set_id: int, ipfix: bool) -> None:
    exp = dom.exporter
    o, end = 0, len(body)
    options = set_id in (V9_OPTIONS_TEMPLATE, IPFIX_OPTIONS_TEMPLATE)
    version = 10 if ipfix else 9
    while end - o >= 4:
        if ipfix:
            if options:
                if end - o < 6:
                    # a withdrawal is 4 bytes (id, count 0); anything else shorter than 6 is padding
                    tid, count = _SET.unpack_from(body, o)
                    if count == 0 and (tid >= 256 or tid == set_id):
                        _withdraw(dec, dom, tid, set_id)
                    return
                tid, count, scope = struct.unpack_from(">HHH", body, o)
                if count == 0:
                    _withdraw(dec, dom, tid, set_id)
                    o += 4
                    continue
                o += 6
            else:
                tid, count = _SET.unpack_from(body, o)
                o += 4
                scope = 0
                if count == 0:
                    if tid == 0 and not any(body[o - 4:]):
                        return  # padding
                    _withdraw(dec, dom, tid, set_id)
                    continue
            fields = []
            for _ in range(count):
                if end - o < 4:
                    dec.error(exp, "template-truncated")
                    return
                ie, length = _SET.unpack_from(body, o)
                o += 4
                pen = 0
                if ie & 0x8000:
                    if end - o < 4:
                        dec.error(exp, "template-truncated")
                        return
                    pen = struct.unpack_from(">I", body, o)[0]
                    o += 4
                    ie &= 0x7FFF
                fields.append((ie, length, pen))
            if options and (scope == 0 or scope > count):
                dec.error(exp, "bad-options-template")
                continue
        else:
            if options:
                if end - o < 6:
                    return  # padding
                tid, scope_len, opt_len = struct.unpack_from(">HHH", body, o)
                o += 6
                if scope_len % 4 or opt_len % 4 or scope_len + opt_len == 0:
                    dec.error(exp, "bad-options-template")
                    return
                if end - o < scope_len + opt_len:
                    dec.error(exp, "template-truncated")
                    return
                fields = [(*_SET.unpack_from(body, o + k), 0) for k in range(0, scope_len + opt_len, 4)]
                # v9 scope types (1 system, 2 interface, ...) are not IEs: mark them apart
                fields = [(0x10000 | ie, ln, 0) if k < scope_len // 4 else (ie, ln, 0)
                          for k, (ie, ln, _) in enumerate(fields)]
                scope = scope_len // 4
                count = len(fields)
                o += scope_len + opt_len
                # the rest of an options template set is padding (one record per set in practice)
                if tid < 256:
                    dec.error(exp, "bad-template-id")
                    return
                if sum(ln for _, ln, _ in fields) == 0:
                    dec.error(exp, "zero-length-template")
                    return
                _add_template(dec, dom, Template(tid, fields, version=version, options=True, scope_count=scope))
                continue
            tid, count = _SET.unpack_from(body, o)
            o += 4
            if count == 0:
                if tid == 0 and not any(body[o - 4:]):
                    return  # padding
                dec.error(exp, "zero-length-template")
                continue
            if end - o < 4 * count:
                dec.error(exp, "template-truncated")
                return
            fields = [(*_SET.unpack_from(body, o + 4 * k), 0) for k in range(count)]
            o += 4 * count
            scope = 0
        if tid < 256:
            dec.error(exp, "bad-template-id")
            continue
        if all(ln == 0 for _, ln, _ in fields):
            dec.error(exp, "zero-length-template")
            continue
        if sum(ln for _, ln, _ in fields if ln != 65535) > 65535:
            dec.error(exp, "bad-template-length")
            continue
        _add_template(dec, dom, Template(tid, fields, version=version, options=options, scope_count=scope))


# ---------------------------------------------------------------------------------------
# data


def _hold(dec: Decoder, dom: Domain, tid: int, body: bytes, export_ns: int, uptime: int) -> None:
    if len(dom.pending) >= MAX_PENDING_SETS:
        dom.pending.popleft()
        dom.exporter.counters["pending"] -= 1
        dec.error(dom.exporter, "pending-overflow")
    dom.pending.append((tid, body, export_ns, uptime, dec.now_ns))
    dom.exporter.counters["pending"] += 1
    dec.counters.inc("pending-sets")


def _data_set(dec: Decoder, dom: Domain, t: Template, body, export_ns: int, uptime: int) -> None:
    if t.options:
        _options_data(dec, dom, t, body)
        return
    if t.varlen:
        fixed, n, var, ok = _split(dec, t, body)
        if not ok:
            dec.error(dom.exporter, "bad-varlen")
        if n:
            dec.group(dom, t, fixed, n, export_ns, uptime, var)
        return
    rl = t.record_length
    n = len(body) // rl
    if n:
        dec.group(dom, t, body[:n * rl], n, export_ns, uptime, None)


def _split(dec, t, body):
    from .templates import split_varlen

    return split_varlen(t, memoryview(body))


def _options_data(dec: Decoder, dom: Domain, t: Template, body) -> None:
    _var: dict = {}
    if t.varlen:
        fixed, n, _var, ok = _split(dec, t, body)
        if not ok:
            dec.error(dom.exporter, "bad-varlen")
        buf = fixed
    else:
        n = len(body) // t.record_length
        buf = bytes(body[:n * t.record_length])
    if n == 0:
        return
    arr = np.frombuffer(buf, dtype=t.dtype, count=n) if t.dtype.names else None
    dom.options_records += n
    dec.seq_records += n
    dec.counters.inc("options-records", n)
    if arr is None:
        return
    vals: dict[int, list[int]] = {}
    for i in t.fixed_index:
        ie, length, pen = t.fields[i]
        if pen or length > 8 or ie in vals:
            continue
        vals[ie] = int_column(arr, f"f{i}", length).tolist()
    texts = _interface_texts(t, arr, _var)
    for r in range(n):
        get = {ie: v[r] for ie, v in vals.items()}.get
        if texts:
            _interface_entry(dom.exporter, get, texts, r)
        rate = None
        if get(34):
            rate = get(34)
        elif get(50):
            rate = get(50)
        elif get(305) is not None and get(306) is not None and get(305):
            rate = (get(305) + get(306)) // get(305)
        elif get(309) and get(310):  # samplingSize n out of samplingPopulation N (Cisco)
            rate = max(1, get(310) // get(309))
        sampler = get(48) if get(48) is not None else get(302)
        if rate is not None and not 0 < rate <= MAX_RATE:
            dec.error(dom.exporter, "bad-sampling-rate")  # this options record's rate only; the domain goes on
            rate = None
        if rate:
            if sampler is not None:
                if sampler in dom.sampler_rates or len(dom.sampler_rates) < 1024:
                    dom.sampler_rates[sampler] = rate
            else:
                dom.default_rate = rate
            dec.counters.inc("sampling-options")
        if get(160):
            dom.sysinit_ms = get(160)


def _interface_texts(t: Template, arr: np.ndarray, var: dict) -> dict[int, list]:
    """interfaceName / interfaceDescription columns of options records, as text per record."""
    out: dict[int, list] = {}
    for i, (ie, length, pen) in enumerate(t.fields):
        if pen or ie not in (IF_NAME, IF_DESCRIPTION) or ie in out:
            continue
        if length == 65535:
            raw = var.get(i, [])
        elif i in t.fixed_index:
            raw = [r.tobytes() for r in arr[f"f{i}"].reshape(len(arr), -1)]
        else:
            continue
        out[ie] = [bytes(x).rstrip(b"\0").decode("utf-8", "replace") or None for x in raw]
    return out


def _interface_entry(exp: Exporter, get, texts: dict[int, list], r: int) -> None:
    """One interface-table record: scope ifindex (IPFIX ingress/egressInterface, v9 scope 'interface')."""
    ifindex = next((v for v in (get(10), get(V9_SCOPE_INTERFACE), get(14), get(252)) if v is not None), None)
    if ifindex is None:
        return
    name = texts[IF_NAME][r] if r < len(texts.get(IF_NAME, ())) else None
    descr = texts[IF_DESCRIPTION][r] if r < len(texts.get(IF_DESCRIPTION, ())) else None
    if ifindex in exp.interfaces or len(exp.interfaces) < MAX_INTERFACES_PER_EXPORTER:
        exp.interfaces[ifindex] = (name, descr)


def _sets(dec: Decoder, dom: Domain, mv: memoryview, o: int, end: int, export_ns: int, uptime: int,
          ipfix: bool) -> int:
    """Walk the sets of one message; returns data records seen (for the sequence check)."""
    exp = dom.exporter
    records = 0
    tmpl_ids = (IPFIX_TEMPLATE, IPFIX_OPTIONS_TEMPLATE) if ipfix else (V9_TEMPLATE, V9_OPTIONS_TEMPLATE)
    while end - o >= 4:
        set_id, length = _SET.unpack_from(mv, o)
        if length < 4:
            if not ipfix and set_id == 0 and length == 0 and not any(mv[o:end]):
                break  # v9 trailing zero padding
            dec.error(exp, "short-set")
            break
        if length > end - o:
            dec.error(exp, "set-length")
            break
        body = mv[o + 4:o + length]
        o += length
        if set_id in tmpl_ids:
            _parse_templates(dec, dom, body, set_id, ipfix)
        elif set_id >= 256:
            if ipfix:  # IPFIX has no header uptime: carry the domain's systemInitTimeMilliseconds as it is now
                uptime = -1 if dom.sysinit_ms is None else dom.sysinit_ms
            t = dom.templates.get(set_id)
            if t is None:
                _hold(dec, dom, set_id, bytes(body), export_ns, uptime)
                records = -1 if ipfix else records  # unknown record count: skip the next sequence check
            else:
                before = dec.seq_records
                exp.touch(dom, set_id, dec.now_ns)
                _data_set(dec, dom, t, body, export_ns, uptime)
                if records >= 0:
                    records += dec.seq_records - before
        else:
            dec.error(exp, "reserved-set-id")
    if end - o > 0 and any(mv[o:end]):
        dec.error(exp, "trailing-bytes")
    return records


def _sequence(dec: Decoder, dom: Domain, seq: int, advance: int) -> None:
    account(dec, dom, seq, advance)


def decode_v9(dec: Decoder, exp, mv: memoryview) -> None:
    if len(mv) < 20:
        dec.error(exp, "short-header")
        return
    _v, _count, uptime, secs, seq, source_id = _HDR9.unpack_from(mv, 0)
    dom = exp.domain(dec, 9, source_id)
    if dom is None:
        return
    _sets(dec, dom, mv, 20, len(mv), secs * 1_000_000_000, uptime, False)
    _sequence(dec, dom, seq, 1)


def decode_ipfix(dec: Decoder, exp, mv: memoryview) -> None:
    o = 0
    while len(mv) - o >= 2:
        if len(mv) - o < 16:
            dec.error(exp, "short-header")
            return
        version, length, export_s, seq, domain_id = _HDR10.unpack_from(mv, o)
        if version != 10:
            dec.error(exp, "bad-version")
            return
        if length < 16:
            dec.error(exp, "short-header")
            return
        if length > len(mv) - o:
            dec.error(exp, "length-mismatch")
            length = len(mv) - o  # decode what is there, sets are checked one by one
        dom = exp.domain(dec, 10, domain_id)
        if dom is None:
            return
        n = _sets(dec, dom, mv, o + 16, o + length, export_s * 1_000_000_000, -1, True)
        if n < 0:
            dom.next_seq = None
        else:
            _sequence(dec, dom, seq, n)
        o += length


def expire_pending(dec: Decoder, dom: Domain, now_ns: int, timeout_ns: int) -> None:
    while dom.pending and now_ns - dom.pending[0][4] >= timeout_ns:
        dom.pending.popleft()
        dom.exporter.counters["pending"] -= 1
        dec.error(dom.exporter, "no-template")

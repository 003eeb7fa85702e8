"""The decoder: datagrams in, :class:`~.records.CollectedFlows` out, every problem counted.

Use::

    dec = Decoder(max_templates=1024, pending_timeout=10.0)
    for payload, address in datagrams:
        dec.feed(payload, address, now_ns)
    for flows in dec.flush():       # one CollectedFlows per (domain, template) of the batch
        ...
    dec.expire(now_ns)              # held data sets past their time -> no-template; UDP templates by age
    dec.feed(msg, address, now_ns, session="tcp:[::1]:40000")   # state of one TCP connection
    dec.close_session("tcp:[::1]:40000")                        # its templates go with it

``feed`` never raises: malformed input is counted by reason in
``dec.counters.drops[("decode", reason)]`` (and per exporter).  Data sets of
one template are gathered over the whole batch and decoded together at
``flush`` (one ``np.frombuffer`` per template per batch).
"""

from __future__ import annotations

import time
import traceback

import numpy as np
import structlog

from flowplane.api import Counters

from .decode_sflow import SFLOW_VERSION, decode_sflow
from .decode_v5 import MAX_RECORDS as V5_MAX
from .decode_v5 import V5, decode_v5
from .decode_v9ipfix import DOMAIN_IDLE_S, Exporter, decode_ipfix, decode_v9, expire_pending
from .records import CollectedFlows
from .sequence import restarted
from .templates import NS, Ctx, expire_templates

log = structlog.get_logger("flowplane.collector")

MAX_EXPORTERS = 65536
INTERNAL_LOG_BURST_S = 60.0  # one log line per kind of internal error per burst (repeats counted in the next)
VECTOR_MIN = 8  # datagrams of one length from one exporter decoded as one block (Decoder._run)
RUN_RETRIES = 4  # sequence breaks in one run of datagrams decoded around (each costs a scalar decode)
TEMPLATE_SCAN_MAX_NS = 60 * NS  # template expiry is checked at least this often (timeout/8 when shorter)


class Decoder:
    def __init__(self, *, max_templates: int = 1024, pending_timeout: float = 10.0,
                 counters: Counters | None = None, template_timeout: float = 1800.0, scale: bool = False) -> None:
        self.max_templates = max_templates
        self.scale = scale  # multiply packets and bytes by the sampling interval that applies
        self.pending_timeout_ns = int(pending_timeout * NS)
        self.template_timeout_ns = int(template_timeout * NS)  # 0: UDP templates never expire
        self.next_template_scan_ns = 0
        self.counters = counters if counters is not None else Counters("collector")
        self.exporters: dict[str, Exporter] = {}
        self.now_ns = 0
        self.records_in_batch = 0
        self.seq_records = 0
        self._groups: dict[tuple[int, int], list] = {}
        self._internal_logged: dict[tuple, list] = {}  # (stage, cause, place) -> [last log time, repeats since]

    # -- input ------------------------------------------------------------------------

    def feed(self, data: bytes, address: str, now_ns: int | None = None, session: str | None = None) -> None:
        """Decode one datagram (or IPFIX message stream chunk) from *address*.

        *session* names a TCP connection: its state (templates, sequence) is its own,
        apart from the exporter's UDP state and from its other connections (RFC 7011 section 8.1).
        """
        self.now_ns = now_ns if now_ns is not None else time.time_ns()
        key = session or address
        exp = self.exporters.get(key)
        if exp is None:
            if len(self.exporters) >= MAX_EXPORTERS:
                self.counters.drop("decode", "exporter-limit")
                return
            exp = self.exporters[key] = Exporter(address, self.now_ns, session)
        exp.last_seen_ns = self.now_ns
        exp.counters["datagrams"] += 1
        exp.counters["bytes"] += len(data)
        self.counters.inc("datagrams")
        self.counters.inc("bytes", len(data))
        mv = memoryview(data)
        if len(mv) < 2:
            self.error(exp, "short-header")
            return
        version = (mv[0] << 8) | mv[1]
        try:
            if version == 5:
                decode_v5(self, exp, mv)
            elif version == 9:
                decode_v9(self, exp, mv)
            elif version == 10:
                decode_ipfix(self, exp, mv)
            elif version == 0 and len(mv) >= 4 and mv[2] == 0 and mv[3] == 5:  # sFlow: 32-bit version 5
                version = SFLOW_VERSION
                decode_sflow(self, exp, mv)
            else:
                self.error(exp, "bad-version")
                return
        except Exception as exc:  # a decoder bug must not take the listener down: count and log it
            self.internal_error(exp, "datagram", exc)
            return
        exp.versions.add(version)

    def feed_many(self, datagrams, now_ns: int) -> None:
        """``feed`` for a batch of ``(payload, address)``: the same records, counters and errors, faster.

        Datagrams are taken per exporter, in their order.  A run of at least
        :data:`VECTOR_MIN` datagrams of one length from a known exporter
        (full datagrams: exporters fill them to the MTU) is checked and cut
        into records with a handful of numpy operations over the whole run
        (:meth:`_run`): same version, domain and data set in every header,
        a known fixed-length template, sequence numbers in order.  Other
        datagrams take a per-datagram fast path (:meth:`_one`): one data set
        of a known template, in sequence.  Anything else -- templates,
        options, several sets, padding, gaps, errors -- goes through
        :meth:`feed`.  Measured figures: docs/collector.md.
        """
        self.now_ns = now_ns
        exporters = self.exporters
        by_addr: dict[str, list] = {}
        for data, address in datagrams:
            lst = by_addr.get(address)
            if lst is None:
                by_addr[address] = [data]
            else:
                lst.append(data)
        one = self._one
        for address, datas in by_addr.items():
            exp = exporters.get(address)
            k = len(datas)
            if exp is None or k < VECTOR_MIN:
                for d in datas:
                    one(d, address, exp)
                    exp = exporters.get(address)
                continue
            lengths = [len(d) for d in datas]
            i = 0
            while i < k:
                ln = lengths[i]
                j = i + 1
                while j < k and lengths[j] == ln:
                    j += 1
                retries = RUN_RETRIES
                while i < j:
                    took = self._run(exp, datas[i:j], ln) if j - i >= VECTOR_MIN else 0
                    if took > 0:  # the whole run, or the part before a sequence break
                        i += took
                    elif took < 0 and retries:  # a sequence break near the start: those one by one, then on
                        retries -= 1
                        for d in datas[i:i - took]:
                            one(d, address, exp)
                        i -= took
                    else:
                        for d in datas[i:j]:
                            one(d, address, exp)
                        i = j

    def _run(self, exp: Exporter, datas: list, ln: int) -> int:
        """Decode *datas* (same exporter, same length *ln*) as one block; returns how many were decoded:
        all of them, the ones before a sequence break, 0 (nothing done) if any header differs from the
        common case (the caller decodes them one by one), -m if the first is out of sequence (m = 1) or the
        sequence breaks after m < VECTOR_MIN (the caller decodes those m one by one -- a gap, a restart, a
        replay -- and tries the rest again)."""
        k = len(datas)
        if ln < 24:
            return 0
        a = np.frombuffer(b"".join(datas), np.uint8).reshape(k, ln)
        head = a[0]
        version = int(head[0]) << 8 | int(head[1])
        if version == 10:
            hdr, dom_at, seq_at, set_at = 20, slice(12, 16), 8, 16
        elif version == 9:
            hdr, dom_at, seq_at, set_at = 24, slice(16, 20), 12, 20
        elif version == 5:
            hdr, dom_at, seq_at, set_at = 24, slice(20, 22), 16, 2  # set_at: the count field
        else:
            return 0
        # every header alike: version, domain, set id and length (v5: the record count)
        for sl in (slice(0, 2), dom_at, slice(set_at, set_at + 4 if version != 5 else set_at + 2)):
            if not (a[:, sl] == head[sl]).all():
                return 0
        if version == 10 and (int(head[2]) << 8 | int(head[3])) != ln:
            return 0
        dom_id = int.from_bytes(head[dom_at].tobytes(), "big")
        dom = exp.domains.get((version, dom_id))
        if dom is None or dom.next_seq is None:
            return 0
        if version == 5:
            n = int(head[2]) << 8 | int(head[3])
            t, rl = V5, 48
            if not 0 < n <= V5_MAX or ln < hdr + 48 * n:
                return 0
        else:
            set_len = int(head[set_at + 2]) << 8 | int(head[set_at + 3])
            t = dom.templates.get(int(head[set_at]) << 8 | int(head[set_at + 1]))
            if t is None or t.options or t.varlen or set_len != ln - set_at:
                return 0
            rl = t.record_length
            n = (ln - hdr) // rl
            if n == 0 or a[:, hdr + n * rl:].any():
                return 0
        seq = np.ascontiguousarray(a[:, seq_at:seq_at + 4]).view(">u4").ravel().astype(np.int64)
        step = 1 if version == 9 else n
        if int(seq[0]) != dom.next_seq and not restarted(self, dom, int(seq[0])):
            return -1
        if k > 1:
            chained = (np.diff(seq) & 0xFFFF_FFFF) == step
            if not chained.all():
                m = int(np.argmin(chained)) + 1  # datagrams before the break
                return self._run(exp, datas[:m], ln) if m >= VECTOR_MIN else -m
        dom.next_seq = (int(seq[-1]) + step) & 0xFFFF_FFFF

        def u32(at: int) -> np.ndarray:
            return np.ascontiguousarray(a[:, at:at + 4]).view(">u4").ravel().astype(np.int64)

        if version == 10:
            exports, uptimes = (u32(4) * NS).tolist(), [-1 if dom.sysinit_ms is None else dom.sysinit_ms] * k
        elif version == 9:
            exports, uptimes = (u32(8) * NS).tolist(), u32(4).tolist()
        else:
            exports = (u32(8) * NS + np.minimum(u32(12), NS - 1)).tolist()
            uptimes = u32(4).tolist()
            dom.default_rate = ((int(a[-1, 22]) << 8 | int(a[-1, 23])) & 0x3FFF) or 1
        body = a[:, hdr:hdr + n * rl].tobytes()
        if version != 5:
            exp.touch(dom, t.template_id, self.now_ns)
        else:
            dom.last_ns = self.now_ns
            exp.domains.move_to_end(dom.key)
        key = (id(dom), id(t))
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = [dom, t, [], [], [], [], None, self.now_ns, 0]
        g[8] += n * k
        g[2].append(body)
        g[3].extend([n] * k)
        g[4].extend(exports)
        g[5].extend(uptimes)
        self.records_in_batch += n * k
        self.seq_records += n * k
        c = exp.counters
        c["datagrams"] += k
        c["bytes"] += k * ln
        exp.last_seen_ns = self.now_ns
        self.counters.inc("datagrams", k)
        self.counters.inc("bytes", k * ln)
        return k

    def _one(self, data, address: str, exp: Exporter | None) -> None:
        """One datagram: the fast path when it is the common case, else :meth:`feed`."""
        now_ns = self.now_ns
        feed = self.feed
        ln = len(data)
        if exp is None or ln < 24:
            feed(data, address, now_ns)
            return
        version = data[1] if data[0] == 0 else -1
        if version == 10:
            if (data[2] << 8 | data[3]) != ln or data[16] == 0 and data[17] < 4:
                feed(data, address, now_ns)
                return
            dom = exp.domains.get((10, int.from_bytes(data[12:16], "big")))
            t = dom.templates.get(data[16] << 8 | data[17]) if dom is not None else None
            if t is None or t.options or t.varlen or (data[18] << 8 | data[19]) != ln - 16:
                feed(data, address, now_ns)
                return
            rl = t.record_length
            n = (ln - 20) // rl
            seq = int.from_bytes(data[8:12], "big")
            if n == 0 or (ln - 20) % rl and any(data[20 + n * rl:]) or dom.next_seq != seq:
                feed(data, address, now_ns)
                return
            dom.next_seq = (seq + n) & 0xFFFF_FFFF
            export_ns = int.from_bytes(data[4:8], "big") * NS
            uptime = -1 if dom.sysinit_ms is None else dom.sysinit_ms  # IPFIX: the init time as it arrived
            body = memoryview(data)[20:20 + n * rl]
        elif version == 9:
            if (data[20] << 8 | data[21]) < 256 or (data[22] << 8 | data[23]) != ln - 20:
                feed(data, address, now_ns)
                return
            dom = exp.domains.get((9, int.from_bytes(data[16:20], "big")))
            t = dom.templates.get(data[20] << 8 | data[21]) if dom is not None else None
            seq = int.from_bytes(data[12:16], "big")
            if t is None or t.options or t.varlen or dom.next_seq != seq:
                feed(data, address, now_ns)
                return
            rl = t.record_length
            n = (ln - 24) // rl
            if n == 0 or (ln - 24) % rl and any(data[24 + n * rl:]):
                feed(data, address, now_ns)
                return
            dom.next_seq = (seq + 1) & 0xFFFF_FFFF
            export_ns, uptime = int.from_bytes(data[8:12], "big") * NS, int.from_bytes(data[4:8], "big")
            body = memoryview(data)[24:24 + n * rl]
        elif version == 5:
            n = data[3] if data[2] == 0 else 0
            dom = exp.domains.get((5, data[20] << 8 | data[21]))
            seq = int.from_bytes(data[16:20], "big")
            if not 0 < n <= V5_MAX or ln < 24 + 48 * n or dom is None or dom.next_seq != seq:
                feed(data, address, now_ns)
                return
            dom.next_seq = (seq + n) & 0xFFFF_FFFF
            dom.default_rate = ((data[22] << 8 | data[23]) & 0x3FFF) or 1
            t = V5
            export_ns = int.from_bytes(data[8:12], "big") * NS + min(int.from_bytes(data[12:16], "big"), NS - 1)
            uptime = int.from_bytes(data[4:8], "big")
            body = memoryview(data)[24:24 + 48 * n]
        else:
            feed(data, address, now_ns)
            return
        exp.touch(dom, t.template_id, now_ns)  # v5: no template store, the domain's recency only
        key = (id(dom), id(t))
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = [dom, t, [], [], [], [], None, now_ns, 0]
        g[8] += n
        g[2].append(body)
        g[3].append(n)
        g[4].append(export_ns)
        g[5].append(uptime)
        self.records_in_batch += n
        self.seq_records += n
        c = exp.counters
        c["datagrams"] += 1
        c["bytes"] += ln
        exp.last_seen_ns = now_ns
        self.counters.inc("datagrams")
        self.counters.inc("bytes", ln)

    def error(self, exp: Exporter | None, reason: str) -> None:
        self.counters.drop("decode", reason)
        if exp is not None:
            exp.counters["errors"] += 1

    def internal_error(self, exp: Exporter | None, stage: str, exc: BaseException, **ctx) -> None:
        """A decoder bug met on some input: counted ``internal-error`` and logged with its cause, once per
        burst of the same cause (the repeats are counted and reported with the next line)."""
        self.error(exp, "internal-error")
        tb = traceback.extract_tb(exc.__traceback__)
        place = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
        key = (stage, type(exc).__name__, place)
        now = time.monotonic()
        seen = self._internal_logged.get(key)
        if seen is not None and now - seen[0] < INTERNAL_LOG_BURST_S:
            seen[1] += 1
            return
        if len(self._internal_logged) > 1024:
            self._internal_logged.clear()
        repeats = seen[1] if seen is not None else 0
        self._internal_logged[key] = [now, 0]
        log.error("collector_decode_internal_error", stage=stage, error=f"{type(exc).__name__}: {exc}", at=place,
                  exporter=exp.session or exp.address if exp is not None else None, repeats_since_last=repeats,
                  **ctx)

    def group(self, dom, t, buf, n: int, export_ns: int, uptime: int, var: dict | None) -> None:
        key = (id(dom), id(t))
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = [dom, t, [], [], [], [], {} if t.varlen else None, self.now_ns, 0]
        g[8] += n
        g[2].append(buf)
        g[3].append(n)
        g[4].append(export_ns)
        g[5].append(uptime)
        if var is not None:
            for i, vals in var.items():
                g[6].setdefault(i, []).extend(vals)
        self.records_in_batch += n
        self.seq_records += n

    # -- output -----------------------------------------------------------------------

    def flush(self, min_records: int = 0, max_age_ns: int | None = None,
              now_ns: int | None = None) -> list[CollectedFlows]:
        """Decode the data gathered since the last flush.

        With *min_records* / *max_age_ns* only the groups (exporter domain, template) that hold at
        least that many records or whose first data came that long ago are decoded; the others wait
        for more (one numpy conversion per group costs ~100-300 us, whatever its size)."""
        if min_records <= 0 and max_age_ns is None:
            groups, self._groups = self._groups, {}
        else:
            now = self.now_ns if now_ns is None else now_ns
            groups, keep = {}, {}
            for key, g in self._groups.items():
                if g[8] >= min_records or max_age_ns is not None and now - g[7] >= max_age_ns:
                    groups[key] = g
                else:
                    keep[key] = g
            self._groups = keep
        self.records_in_batch = sum(g[8] for g in self._groups.values())
        out: list[CollectedFlows] = []
        for dom, t, bufs, counts, exports, uptimes, var, _first, _n in groups.values():
            try:
                out.append(self._decode_group(dom, t, bufs, counts, exports, uptimes, var))
            except Exception as exc:
                self.internal_error(dom.exporter, "conversion", exc, template=t.template_id)
        return out

    def _decode_group(self, dom, t, bufs, counts, exports, uptimes, var) -> CollectedFlows:
        n = sum(counts)
        if t.dtype.names:
            buf = bufs[0] if len(bufs) == 1 else b"".join(bufs)
            arr = np.frombuffer(buf, dtype=t.dtype, count=n)
        else:
            arr = np.zeros(n, dtype=t.dtype)
        # per datagram: export time and v9 sysUptime, or (IPFIX) the systemInitTimeMilliseconds known on arrival
        if len(counts) == 1:
            export_ns = np.full(n, exports[0], dtype=np.int64)
            per = np.full(n, uptimes[0], dtype=np.int64)
        else:
            c = np.asarray(counts)
            export_ns = np.repeat(np.asarray(exports, dtype=np.int64), c)
            per = np.repeat(np.asarray(uptimes, dtype=np.int64), c)
        ctx = Ctx(export_ns, None, per) if dom.version == 10 else Ctx(export_ns, per, None)
        data, rate, extra, kinds = t.convert(arr, ctx, var, lambda ids: dom.sampling(ids, n))
        dom.records += n
        dom.exporter.counters["records"] += n
        self.counters.inc("records", n)
        if dom.exporter.interfaces:
            interface_names(dom.exporter.interfaces, data, extra, kinds)
        scaled = False
        if self.scale and (rate != 1).any():
            r64 = rate.astype(np.uint64)
            data["packets"] = data["packets"] * r64
            data["bytes"] = data["bytes"] * r64
            scaled = True
        return CollectedFlows(data, rate, dom.exporter.address, dom.domain_id, dom.version, t.template_id,
                              extra, kinds, scaled)

    def expire(self, now_ns: int | None = None) -> None:
        """Drop held data sets older than the pending timeout (counted ``no-template``), and
        UDP templates not refreshed for the template timeout (counted ``templates-expired``)."""
        now = now_ns if now_ns is not None else time.time_ns()
        for exp in self.exporters.values():
            if exp.counters["pending"]:
                for dom in exp.domains.values():
                    expire_pending(self, dom, now, self.pending_timeout_ns)
        timeout = self.template_timeout_ns
        if now < self.next_template_scan_ns:
            return
        self.next_template_scan_ns = now + min(TEMPLATE_SCAN_MAX_NS, timeout // 8 if timeout > 0 else NS * 60)
        if timeout > 0:
            gone = 0
            for exp in self.exporters.values():
                if exp.session is None and exp.template_count:
                    for dom in exp.domains.values():
                        if dom.templates:
                            gone += expire_templates(dom, now, timeout)
            if gone:
                self.counters.inc("templates-expired", gone)
        self._expire_domains(now)

    def _expire_domains(self, now: int) -> None:
        """Forget the domains of UDP exporters that sent nothing for DOMAIN_IDLE_S and hold no template."""
        idle = DOMAIN_IDLE_S * NS
        gone = 0
        for exp in self.exporters.values():
            if exp.session is not None:
                continue
            for key, dom in list(exp.domains.items()):  # least recently used first
                if now - dom.last_ns < idle:
                    break
                if not dom.templates:  # templates age out by template-timeout (or never), then their domain
                    exp.evict_domain(self, key)
                    gone += 1
        if gone:
            self.counters.inc("domains-expired", gone)

    def close_session(self, session: str) -> None:
        """A TCP connection ended: forget its templates; data still held for one is ``no-template``."""
        exp = self.exporters.pop(session, None)
        if exp is None:
            return
        held = exp.counters["pending"]
        if held:
            self.counters.drop("decode", "no-template", held)
        self.counters.inc("sessions-closed")

    def clear(self) -> None:
        """Forget counters (templates and state are kept: they are needed to decode)."""
        self.counters.clear()
        for exp in self.exporters.values():
            for k in exp.counters:
                if k != "pending":
                    exp.counters[k] = 0
            for dom in exp.domains.values():
                dom.records = dom.options_records = dom.lost = 0


def interface_names(table: dict, data: np.ndarray, extra: dict, kinds: dict) -> None:
    """``in_if_name`` / ``out_if_name`` extra columns from an exporter's interface table (options data)."""
    for col, name in (("in_if", "in_if_name"), ("out_if", "out_if_name")):
        u, inv = np.unique(data[col], return_inverse=True)
        look = [(table.get(int(x)) or (None, None))[0] for x in u.tolist()]
        if any(look):
            enc = [None if x is None else x.encode() for x in look]
            extra[name] = [enc[j] for j in inv.tolist()]
            kinds[name] = "s"

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

import numpy as np

from flowplane.stats import Counters

from .decode_sflow import SFLOW_VERSION, decode_sflow
from .decode_v5 import decode_v5
from .decode_v9ipfix import Exporter, decode_ipfix, decode_v9, expire_pending
from .records import CollectedFlows
from .templates import NS, Ctx, expire_templates

MAX_EXPORTERS = 65536
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
        except Exception:  # a decoder bug must not take the listener down: count it
            self.error(exp, "internal-error")
            return
        exp.versions.add(version)

    def error(self, exp: Exporter | None, reason: str) -> None:
        self.counters.drop("decode", reason)
        if exp is not None:
            exp.counters["errors"] += 1

    def group(self, dom, t, buf, n: int, export_ns: int, uptime: int, var: dict | None) -> None:
        key = (id(dom), id(t))
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = [dom, t, [], [], [], [], {} if t.varlen else None]
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

    def flush(self) -> list[CollectedFlows]:
        """Decode the data gathered since the last flush."""
        groups, self._groups = self._groups, {}
        self.records_in_batch = 0
        out: list[CollectedFlows] = []
        for dom, t, bufs, counts, exports, uptimes, var in groups.values():
            try:
                out.append(self._decode_group(dom, t, bufs, counts, exports, uptimes, var))
            except Exception:
                self.error(dom.exporter, "internal-error")
        return out

    def _decode_group(self, dom, t, bufs, counts, exports, uptimes, var) -> CollectedFlows:
        n = sum(counts)
        if t.dtype.names:
            buf = bufs[0] if len(bufs) == 1 else b"".join(bufs)
            arr = np.frombuffer(buf, dtype=t.dtype, count=n)
        else:
            arr = np.zeros(n, dtype=t.dtype)
        if len(counts) == 1:
            export_ns = np.full(n, exports[0], dtype=np.int64)
            uptime = np.full(n, uptimes[0], dtype=np.int64) if dom.version != 10 else None
        else:
            c = np.asarray(counts)
            export_ns = np.repeat(np.asarray(exports, dtype=np.int64), c)
            uptime = np.repeat(np.asarray(uptimes, dtype=np.int64), c) if dom.version != 10 else None
        ctx = Ctx(export_ns, uptime, dom.sysinit_ms)
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
        if timeout > 0 and now >= self.next_template_scan_ns:
            self.next_template_scan_ns = now + min(TEMPLATE_SCAN_MAX_NS, timeout // 8)
            gone = 0
            for exp in self.exporters.values():
                if exp.session is None and exp.template_count:
                    for dom in exp.domains.values():
                        if dom.templates:
                            gone += expire_templates(dom, now, timeout)
            if gone:
                self.counters.inc("templates-expired", gone)

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

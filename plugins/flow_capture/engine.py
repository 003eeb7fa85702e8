"""The dynamic flow capture engine: DTCP requests, criteria, the batch data path, expiry.

One :class:`FlowCapture` per config, registered by ``flowplane_configure``
while ``services dynamic-flow-capture`` is configured.  It is three things:

* the **DTCP request handler** (:meth:`FlowCapture.handle`): authenticate
  (source address, HMAC-SHA1 in constant time, ±256 sequence window), then
  ADD / DELETE / LIST / REFRESH / NOOP for the requesting control source
  only (a source never sees or changes another source's criteria);
* the **data path** (``flowplane_process_batch``): match each decoded batch
  against the active criteria (numpy, :class:`.criteria.CriteriaTable`),
  enforce packet and byte limits, and copy matches to content destinations
  (:class:`.copier.Copier`);
* the **timers** (:meth:`FlowCapture.sweep`, run by the background task):
  total and idle timeouts, queued notifications, periodic Duplicates-Dropped.

Every change of criteria (add, delete, refresh, expire, flush) writes one
``dfc_audit`` log event.  The listeners live in :mod:`.server`.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from flowplane.api import InterfaceTable, hookimpl

from . import dtcp
from .config import CaptureGroup, ControlSource, DfcConfig
from .copier import Copier
from .criteria import CriteriaTable, Criterion, from_headers
from .dtcp import DtcpError, SequenceWindow

log = structlog.get_logger("flowplane.flow_capture")

PLUGIN_OBJECT = "dynamic-flow-capture"
UDP_REPLY_MAX = 60000  # bytes: a LIST reply over UDP is cut (TRUNCATED header) to fit one datagram
PENDING_MAX = 10_000  # queued notifications (the sweep sends them every sweep_interval)
TIMEOUT_REASONS = ("total-time", "idle-time", "packet-limit", "byte-limit")


class Refused(Exception):
    """A request refused with a DTCP status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class SourceState:
    """Run-time state of one control source: sequence window, counters, notification sequence."""

    def __init__(self, cfg: ControlSource) -> None:
        self.cfg = cfg
        self.window = SequenceWindow()
        self.counters: Counter[str] = Counter()
        self.notify_seq = 0


class GroupState:
    """Run-time state of one capture group: criteria, compiled table, copiers, counters."""

    def __init__(self, cfg: CaptureGroup, iface_id: Callable[[str], int], criteria_max: int) -> None:
        self.cfg = cfg
        #: criteria this group may hold: pic-memory-threshold percent of the profile's dfc_criteria_max
        self.capacity = max(1, criteria_max * cfg.memory_threshold_pct // 100)
        self.iface_id = iface_id
        self.criteria: dict[int, Criterion] = {}
        self.copiers = {name: Copier(cd) for name, cd in cfg.destinations.items()}
        self.counters: Counter[str] = Counter()
        self.iface_ids = np.array([iface_id(n) for n in cfg.interfaces], dtype=np.int32)
        self._table: CriteriaTable | None = None
        self._targets: list[tuple[str, int]] = []
        self._target_matrix: np.ndarray | None = None
        self.rate_window_start: float | None = None
        self.rate_window_packets = 0
        self.input_rate = 0.0
        self.over_input_threshold = False
        self.dups_unreported = 0
        self.last_dups_report: float | None = None

    def invalidate(self) -> None:
        self._table = None

    def compiled(self) -> tuple[CriteriaTable, list[tuple[str, int]], np.ndarray]:
        """The criteria table, the copy targets (destination, port) and the criteria x targets matrix."""
        if self._table is None:
            crit = sorted(self.criteria.values(), key=lambda c: (c.priority, c.id))
            self._table = CriteriaTable(crit, self.iface_id)
            targets: list[tuple[str, int]] = []
            for c in crit:  # best priority first: max-duplicates keeps the first targets
                for d in c.destinations:
                    t = (d, c.dest_port or self.cfg.destinations[d].port)
                    if t not in targets:
                        targets.append(t)
            tm = np.zeros((len(crit), len(targets)), dtype=np.int32)
            for i, c in enumerate(crit):
                for d in c.destinations:
                    tm[i, targets.index((d, c.dest_port or self.cfg.destinations[d].port))] = 1
            self._targets, self._target_matrix = targets, tm
        assert self._target_matrix is not None
        return self._table, self._targets, self._target_matrix


class FlowCapture:
    """``services dynamic-flow-capture`` at run time.  See the module docstring."""

    def __init__(self, cfg: DfcConfig, *, interfaces: Any = None, clock: Callable[[], float] = time.monotonic,
                 sweep_interval: float = 0.25) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sweep_interval = sweep_interval
        self.interfaces = interfaces if interfaces is not None else InterfaceTable()
        self.groups = {n: GroupState(g, self.interfaces.id, cfg.criteria_max) for n, g in cfg.groups.items()}
        self.sources = {s.name: SourceState(s) for g in cfg.groups.values() for s in g.sources.values()}
        self.stats: Counter[str] = Counter()
        self.pending: list[tuple[str, str, list[tuple[str, object]]]] = []  # (source, type, headers)
        self.next_id = 1
        self.bound: dict[int, int] = {}  # configured service port -> bound port (UDP and TCP)
        self.port_hints: dict[int, int] = {}  # after a reload: the ports the previous engine had bound
        self.notify_socks: dict[int, socket.socket] = {}
        self.started_at = time.time()

    # -- hooks ------------------------------------------------------------------------------
    @hookimpl
    def flowplane_process_batch(self, batch) -> None:
        self.process(batch)

    @hookimpl
    def flowplane_background_tasks(self, app):
        from .server import run_service

        async def run(*, task_status):
            await run_service(self, task_status=task_status)

        return [run]

    @hookimpl
    def flowplane_shutdown(self, app) -> None:
        self.flush("shutdown")
        self.close()

    # -- life cycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open the copy and notification sockets (before the listeners start)."""
        for g in self.groups.values():
            for cp in g.copiers.values():
                if cp.sock is None:
                    cp.open()
                    if cp.open_error:
                        log.error("dfc_destination_socket_failed", capture_group=g.cfg.name,
                                  content_destination=cp.cd.name, error=cp.open_error)
        for fam in (socket.AF_INET, socket.AF_INET6):
            if fam in self.notify_socks:
                continue
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.setblocking(False)
            except OSError:
                continue
            self.notify_socks[fam] = s

    def close(self) -> None:
        for g in self.groups.values():
            for cp in g.copiers.values():
                cp.close()
        for s in self.notify_socks.values():
            s.close()
        self.notify_socks.clear()

    def adopt(self, old: FlowCapture) -> None:
        """Take over criteria, sequence windows and ids from the engine a reload replaces."""
        self.next_id = max(self.next_id, old.next_id)
        self.stats.update(old.stats)
        for name, st in old.sources.items():
            new = self.sources.get(name)
            if new is not None and new.cfg.key == st.cfg.key:
                new.window, new.counters, new.notify_seq = st.window, st.counters, st.notify_seq
        for gname, og in old.groups.items():
            ng = self.groups.get(gname)
            for c in og.criteria.values():
                ok = (ng is not None and c.source in ng.cfg.sources
                      and all(d in ng.cfg.destinations for d in c.destinations))
                if ok and ng is not None:
                    ng.criteria[c.id] = c
                    ng.invalidate()
                else:
                    self._audit("delete", c, reason="reload")
            og.criteria = {}  # moved: the old engine's shutdown must not flush them
            og.invalidate()
        self.port_hints = dict(old.bound)  # port 0: keep the port the clients already use

    def flush(self, reason: str) -> None:
        """Drop every criterion (shutdown), one audit line each."""
        for g in self.groups.values():
            for c in list(g.criteria.values()):
                self._audit("flush", c, reason=reason)
            g.criteria.clear()
            g.invalidate()

    # -- audit -----------------------------------------------------------------------------------
    def _audit(self, action: str, c: Criterion, **extra: Any) -> None:
        log.info("dfc_audit", source=c.source, action=action, criteria_id=c.id, capture_group=c.group,
                 destinations=list(c.destinations), priority=c.priority, static=c.static, fields=dict(c.fields),
                 packets=c.packets, bytes=c.bytes, **extra)

    # -- DTCP requests --------------------------------------------------------------------------
    def handle(self, raw: bytes, peer: str, transport: str = "udp") -> bytes | None:
        """One request from *peer*; returns the reply bytes, or None to stay silent."""
        st = self.stats
        st["control_packets"] += 1
        try:
            msg = dtcp.parse(raw)
        except DtcpError as exc:
            st[f"drops.{exc.kind}"] += 1
            return dtcp.response(exc.code, [("ERROR", str(exc))])
        if not msg.method or msg.method == "NOTIFY":
            st["drops.bad_request"] += 1
            return None  # a reply or a notification sent to us: never answer those
        name = msg.get("csource-id")
        if not name:
            st["drops.bad_request"] += 1
            return dtcp.response(400, [("ERROR", "the request has no Csource-ID header")])
        src = self.sources.get(name)
        if src is None:
            st["drops.unknown_control_source"] += 1
            return None
        if not src.cfg.allows_address(peer):
            st["drops.unauthorized_control_source"] += 1
            src.counters["refused.address"] += 1
            return None
        if not dtcp.verify(src.cfg.key, msg):
            st["drops.bad_authentication"] += 1
            src.counters["refused.authentication"] += 1
            return dtcp.response(401, [("CSOURCE-ID", name), ("ERROR", "bad or missing Authentication-Info")])
        key = src.cfg.key
        method = msg.method.lower()
        try:
            seq = msg.seq
        except DtcpError as exc:
            st["drops.bad_request"] += 1
            src.counters[f"failed.{method}"] += 1
            return dtcp.response(400, [("CSOURCE-ID", name), ("ERROR", str(exc))], key)
        verdict = src.window.check(seq)
        if verdict != "ok":
            st[f"drops.sequence_{verdict}"] += 1
            src.counters[f"refused.sequence_{verdict}"] += 1
            return dtcp.response(409, [("SEQ", seq), ("CSOURCE-ID", name),
                                       ("ERROR", f"sequence {seq} {verdict.replace('_', ' ')}; highest seen "
                                                 f"{src.window.highest}")], key)
        src.window.accept(seq)
        src.counters[f"requests.{method}"] += 1
        st[f"requests.{method}"] += 1
        head: list[tuple[str, object]] = [("SEQ", seq), ("TIMESTAMP", int(time.time())), ("CSOURCE-ID", name)]
        try:
            extra = getattr(self, f"_do_{method}")(src, msg, peer, transport)
        except (Refused, DtcpError) as exc:
            code = exc.code
            src.counters[f"failed.{method}"] += 1
            st[f"failed.{method}"] += 1
            log.info("dfc_request_refused", source=name, method=msg.method, code=code, error=str(exc), peer=peer)
            return dtcp.response(code, head + [("ERROR", str(exc))], key)
        return dtcp.response(200, head + extra, key)

    def _group_of(self, src: SourceState) -> GroupState:
        return self.groups[src.cfg.group]

    def _ids(self, src: SourceState, msg: dtcp.Message) -> list[Criterion]:
        g = self._group_of(src)
        raw = msg.get("criteria-id")
        if raw is None:
            raise Refused(400, "the request needs a Criteria-ID header (an id, a list of ids, or '*')")
        mine = [c for c in g.criteria.values() if c.source == src.cfg.name]
        if raw.strip() == "*":
            return mine
        out = []
        for part in raw.split(","):
            try:
                cid = int(part.strip())
            except ValueError:
                raise Refused(400, f"Criteria-ID {part.strip()!r} is not an integer") from None
            c = g.criteria.get(cid)
            if c is None or c.source != src.cfg.name:  # another source's criteria do not exist for this one
                raise Refused(404, f"no criteria {cid} for control source {src.cfg.name}")
            out.append(c)
        return out

    def _do_noop(self, src, msg, peer, transport):
        return []

    def _do_add(self, src: SourceState, msg: dtcp.Message, peer: str, transport: str):
        g = self._group_of(src)
        cs = src.cfg
        raw = msg.get("cdest-id")
        if not raw:
            raise Refused(400, "ADD needs a Cdest-ID header")
        dests = tuple(d.strip() for d in raw.split(",") if d.strip())
        for d in dests:
            if d not in g.cfg.destinations:
                raise Refused(400, f"no content destination {d!r} in capture group {g.cfg.name}")
            if cs.allowed_destinations and d not in cs.allowed_destinations:
                raise Refused(403, f"content destination {d!r} is not in the allowed-destinations of {cs.name}")
        prio_raw = msg.get("priority")
        prio = cs.minimum_priority
        if prio_raw is not None:
            try:
                prio = int(prio_raw)
            except ValueError:
                raise Refused(400, f"Priority {prio_raw!r} is not an integer") from None
            if not 0 <= prio <= 255:
                raise Refused(400, f"Priority {prio} is out of 0-255")
        if prio < cs.minimum_priority:
            raise Refused(403, f"Priority {prio} is better than the minimum-priority {cs.minimum_priority} "
                               f"of control source {cs.name}")
        if len(g.criteria) >= g.capacity:
            g.counters["add_refused_capacity"] += 1
            raise Refused(503, f"capture group {g.cfg.name} holds {len(g.criteria)} criteria, its limit "
                               f"(dfc_criteria_max x pic-memory-threshold)")
        c = from_headers(msg.headers, names=msg.names, cid=self.next_id, source=cs.name, group=g.cfg.name,
                         destinations=dests, priority=prio, now=self.clock())
        port_raw = msg.get("x-jtap-cdest-dest-port")
        if port_raw is not None:
            try:
                c.dest_port = int(port_raw)
            except ValueError:
                raise Refused(400, f"X-JTap-Cdest-Dest-Port {port_raw!r} is not a port") from None
            if not 1 <= c.dest_port <= 65535:
                raise Refused(400, f"X-JTap-Cdest-Dest-Port {c.dest_port} is out of 1-65535")
        for d in dests:
            cd = g.cfg.destinations[d]
            for header, want in (("x-jtap-cdest-dest-address", cd.address), ("x-jtap-cdest-ttl", cd.ttl),
                                 ("x-jtap-cdest-source-address", cd.source_address),
                                 ("x-jtap-cdest-source-port", cd.source_port or None)):
                got = msg.get(header)
                if got is not None and got.strip() != str(want):
                    raise Refused(400, f"{msg.names[header]} {got.strip()} differs from content destination "
                                       f"{d} ({want}), which the configuration fixes")
            if not (c.dest_port or cd.port):
                raise Refused(400, f"content destination {d} has no port configured; give X-JTap-Cdest-Dest-Port")
        if c.iface is not None and self.interfaces.lookup(c.iface) is None:
            raise Refused(400, f"X-JTap-Input-Interface {c.iface!r} is not a configured interface")
        self.next_id += 1
        g.criteria[c.id] = c
        g.invalidate()
        src.counters["criteria_added"] += 1
        self._audit("add", c, peer=peer, transport=transport)
        return [("CRITERIA-ID", c.id)]

    def _do_delete(self, src, msg, peer, transport):
        g = self._group_of(src)
        gone = self._ids(src, msg)
        for c in gone:
            del g.criteria[c.id]
            src.counters["criteria_deleted.request"] += 1
            self._audit("delete", c, peer=peer, transport=transport)
        g.invalidate()
        return [("CRITERIA-COUNT", len(gone))]

    def _do_refresh(self, src, msg, peer, transport):
        now = self.clock()
        items = self._ids(src, msg)
        updates: dict[str, int] = {}
        names: dict[str, str] = {}
        for header, attr in (("total-timeout", "total_timeout"), ("timeout", "total_timeout"),
                             ("idle-timeout", "idle_timeout")):
            v = msg.get(header)
            if v is not None:
                names[attr] = "Idle-Timeout" if attr == "idle_timeout" else "Total-Timeout"
                try:
                    updates[attr] = int(v)
                except ValueError:
                    raise Refused(400, f"{msg.names[header]} {v!r} is not an integer") from None
                if not 1 <= updates[attr] <= 2**31:
                    raise Refused(400, f"{msg.names[header]} {v} is out of 1-{2**31}")
        if updates and any(c.static for c in items):
            raise Refused(400, "a STATIC criterion takes no timeouts")
        for c in items:
            c.refreshed = c.last_match = now
            for attr, v in updates.items():
                setattr(c, attr, float(v))
                if attr == "total_timeout":
                    c.fields.pop("Timeout", None)
                c.fields[names[attr]] = str(v)
            self._audit("refresh", c, peer=peer, transport=transport, **updates)
        return [("CRITERIA-COUNT", len(items))]

    def _do_list(self, src, msg, peer, transport):
        g = self._group_of(src)
        items = self._ids(src, msg) if msg.get("criteria-id") is not None else \
            [c for c in g.criteria.values() if c.source == src.cfg.name]
        flags = {f.strip().lower() for f in (msg.get("flags") or "criteria").split(",")}
        if flags - {"criteria"}:
            raise Refused(400, f"LIST Flags {msg.get('flags')!r}: expected Criteria")
        want = msg.get("cdest-id")
        if want:
            names = {d.strip() for d in want.split(",")}
            items = [c for c in items if names & set(c.destinations)]
        items.sort(key=lambda c: c.id)
        out: list[tuple[str, object]] = [("CRITERIA-COUNT", len(items))]
        size = 200
        for i, c in enumerate(items):
            line = c.describe()
            size += len(line) + 12
            if transport == "udp" and size > UDP_REPLY_MAX:
                out.append(("TRUNCATED", len(items) - i))
                break
            out.append(("CRITERIA", line))
        return out

    # -- notifications -----------------------------------------------------------------------------
    def queue_notification(self, source: str, ntype: str, headers: list[tuple[str, object]]) -> None:
        """Queue a notification for the next sweep (bounded: the oldest is dropped and counted)."""
        if len(self.pending) >= PENDING_MAX:
            self.pending.pop(0)
            self.stats["notifications_dropped"] += 1
        self.pending.append((source, ntype, headers))

    def send_notifications(self) -> int:
        """Send what is queued to each source's notification targets (non-blocking); returns datagrams sent."""
        pending, self.pending = self.pending, []
        sent = 0
        for name, ntype, headers in pending:
            src = self.sources.get(name)
            if src is None:
                continue
            src.notify_seq += 1
            msg = dtcp.request("NOTIFY", [("Csource-ID", name), ("Notification-Type", ntype), *headers,
                                          ("Timestamp", int(time.time())), ("Seq", src.notify_seq)], src.cfg.key)
            src.counters[f"notifications.{ntype.lower()}"] += 1
            for t in src.cfg.notification_targets:
                fam = socket.AF_INET6 if ":" in t.address else socket.AF_INET
                s = self.notify_socks.get(fam)
                try:
                    if s is None:
                        raise OSError("no socket")
                    s.sendto(msg, (t.address, t.port))
                    sent += 1
                except OSError:
                    src.counters["notification_send_errors"] += 1
        return sent

    # -- timers ---------------------------------------------------------------------------------------
    def expire(self, g: GroupState, c: Criterion, reason: str) -> None:
        """Remove *c* (a limit or timeout was reached), audit it and queue a Timeout notification."""
        if g.criteria.pop(c.id, None) is None:
            return
        g.invalidate()
        c.expired = reason
        src = self.sources.get(c.source)
        if src is not None:
            src.counters[f"criteria_deleted.{reason}"] += 1
        self._audit("expire", c, reason=reason)
        self.queue_notification(c.source, "Timeout", [("Criteria-ID", c.id), ("Reason", reason),
                                                      ("Packets", c.packets), ("Bytes", c.bytes)])

    def sweep(self, now: float | None = None) -> None:
        """Expire total/idle timeouts, report duplicates dropped, send queued notifications."""
        now = self.clock() if now is None else now
        for g in self.groups.values():
            for c in list(g.criteria.values()):
                if c.static:
                    continue
                if c.total_timeout and now - c.refreshed >= c.total_timeout:
                    self.expire(g, c, "total-time")
                elif c.idle_timeout and now - c.last_match >= c.idle_timeout:
                    self.expire(g, c, "idle-time")
            per = g.cfg.duplicates_periodicity
            if per:
                if g.last_dups_report is None:
                    g.last_dups_report = now
                elif now - g.last_dups_report >= per:
                    g.last_dups_report = now
                    if g.dups_unreported:
                        for name in g.cfg.sources:
                            self.queue_notification(name, "Duplicates-Dropped", [("Count", g.dups_unreported)])
                        g.dups_unreported = 0
        if self.pending:
            self.send_notifications()

    # -- data path ---------------------------------------------------------------------------------------
    def process(self, batch) -> None:
        """Match *batch* against every group's criteria and copy what matches (sync, no logging per packet)."""
        n = len(batch)
        if not n:
            return
        now = self.clock()
        ipok = None
        for g in self.groups.values():
            if len(g.iface_ids):
                mine = np.isin(batch.iface, g.iface_ids)
                seen = int(mine.sum())
            else:
                mine = None
                seen = n
            if seen:
                self._input_rate(g, seen, now)
            if not g.criteria or not seen:
                continue
            if ipok is None:
                ipok = (batch.status == 0) & (batch.af != 0) & (batch.l3_off >= 0)
            mask = ipok if mine is None else ipok & mine
            rows = np.flatnonzero(mask)
            if rows.size:
                self._match_and_copy(g, batch, rows, now)

    def _input_rate(self, g: GroupState, seen: int, now: float) -> None:
        g.counters["packets_seen"] += seen
        thr = g.cfg.input_rate_threshold
        if not thr:
            return
        if g.rate_window_start is None:
            g.rate_window_start = now
        g.rate_window_packets += seen
        elapsed = now - g.rate_window_start
        if elapsed < 1.0:
            return
        g.input_rate = g.rate_window_packets / elapsed
        g.rate_window_start, g.rate_window_packets = now, 0
        if g.input_rate > thr and not g.over_input_threshold:
            g.over_input_threshold = True
            g.counters["input_rate_threshold_exceeded"] += 1
            log.warning("dfc_input_rate_threshold_exceeded", capture_group=g.cfg.name, rate_pps=round(g.input_rate),
                        threshold_pps=thr)
        elif g.input_rate <= thr and g.over_input_threshold:
            g.over_input_threshold = False
            log.info("dfc_input_rate_threshold_cleared", capture_group=g.cfg.name, rate_pps=round(g.input_rate),
                     threshold_pps=thr)

    def _match_and_copy(self, g: GroupState, batch, rows: np.ndarray, now: float) -> None:
        table, targets, tmatrix = g.compiled()
        rows = table.candidates(batch, rows)
        if not rows.size:
            return
        m = table.match(batch, rows)
        hit = m.any(axis=1)
        if not hit.any():
            return
        rows = rows[hit]
        m = m[hit]
        l3 = batch.l3_off[rows].astype(np.int64)
        avail = batch.caplen[rows].astype(np.int64) - l3
        iplen = batch.ip_len[rows].astype(np.int64)
        size = np.where((iplen > 0) & (iplen < avail), iplen, avail)
        crit = table.criteria
        allowed = m
        if table.packet_limited.any() or table.byte_limited.any():
            allowed = m.copy()
            cols = np.flatnonzero(table.packet_limited)
            if cols.size:
                sub = m[:, cols].astype(np.int64)
                before = np.cumsum(sub, axis=0) - sub
                have = np.array([crit[i].packets for i in cols], dtype=np.int64)
                lim = np.array([crit[i].packet_limit for i in cols], dtype=np.int64)
                allowed[:, cols] &= (have + before) < lim
            cols = np.flatnonzero(table.byte_limited)
            if cols.size:
                sub = m[:, cols].astype(np.int64) * size[:, None]
                before = np.cumsum(sub, axis=0) - sub
                have = np.array([crit[i].bytes for i in cols], dtype=np.int64)
                lim = np.array([crit[i].byte_limit for i in cols], dtype=np.int64)
                allowed[:, cols] &= (have + before) < lim
        pk = allowed.sum(axis=0)
        by = size @ allowed.astype(np.int64)
        g.counters["packets_matched"] += int(allowed.any(axis=1).sum())
        for i in np.flatnonzero(pk).tolist():
            c = crit[i]
            c.packets += int(pk[i])
            c.bytes += int(by[i])
            c.last_match = now
            if c.packet_limit and c.packets >= c.packet_limit:
                self.expire(g, c, "packet-limit")
            elif c.byte_limit and c.bytes >= c.byte_limit:
                self.expire(g, c, "byte-limit")
        copies = (allowed.astype(np.int32) @ tmatrix) > 0  # packets x targets
        maxd = g.cfg.max_duplicates
        if maxd and copies.shape[1] > maxd:
            keep = np.cumsum(copies, axis=1) <= maxd
            dropped = int((copies & ~keep).sum())
            if dropped:
                g.counters["duplicates_dropped"] += dropped
                g.dups_unreported += dropped
                copies &= keep
        data = memoryview(batch.data)
        starts_all = batch.offset[rows] + l3
        for j, (dname, port) in enumerate(targets):
            r = np.flatnonzero(copies[:, j])
            if not r.size:
                continue
            cp = g.copiers[dname]
            k = cp.admit(size[r], now)
            event = None
            if k:
                r = r[:k]
                sent, nbytes = cp.send(data, starts_all[r], size[r], port)
                g.counters["packets_copied"] += sent
                g.counters["bytes_copied"] += nbytes
                event = cp.measure((nbytes + cp.overhead * sent) * 8, now)
            if event:
                self._congestion(g, cp, event)

    def _congestion(self, g: GroupState, cp: Copier, event: str) -> None:
        fields = dict(capture_group=g.cfg.name, content_destination=cp.cd.name, rate_bps=round(cp.rate_bps),
                      soft_limit_bps=cp.cd.soft_limit)
        if event == "congested":
            log.warning("dfc_soft_limit_exceeded", **fields)
        else:
            log.info("dfc_soft_limit_cleared", **fields)
        users = sorted({c.source for c in g.criteria.values() if cp.cd.name in c.destinations})
        for name in users:
            self.queue_notification(name, "Congestion", [("Cdest-ID", cp.cd.name), ("State", event),
                                                         ("Rate", round(cp.rate_bps))])

    # -- views for show ----------------------------------------------------------------------------------
    def destination_rows(self) -> list[dict]:
        out = []
        for g in self.groups.values():
            for name, cp in g.copiers.items():
                cd = cp.cd
                active = sum(1 for c in g.criteria.values() if name in c.destinations)
                errors = {k[7:]: v for k, v in cp.counters.items() if k.startswith("errors.")}
                out.append({"capture_group": g.cfg.name, "content_destination": name, "address": cd.address,
                            "port": cd.port, "ttl": cd.ttl, "source_address": cd.source_address,
                            "active_criteria": active, "packets": cp.counters["packets"],
                            "bytes": cp.counters["bytes"], "hard_limit": cd.hard_limit, "soft_limit": cd.soft_limit,
                            "soft_limit_clear": cd.soft_limit_clear,
                            "hard_limit_drops": cp.counters["hard_limit_drops"],
                            "send_drops": cp.counters["send_drops"], "errors": errors,
                            "congested": cp.congested, "congestion_events": cp.counters["congestion_events"],
                            "rate_bps": round(cp.rate_bps), "socket_error": cp.open_error})
        return out

    def source_rows(self, detail: bool = False) -> list[dict]:
        now = self.clock()
        out = []
        for name, st in self.sources.items():
            g = self.groups[st.cfg.group]
            mine = [c for c in g.criteria.values() if c.source == name]
            c = st.counters
            row = {"capture_group": g.cfg.name, "control_source": name, "service_port": st.cfg.service_port,
                   "bound_port": self.bound.get(st.cfg.service_port),
                   "source_addresses": [str(n) for n in st.cfg.networks],
                   "criteria_added": c["criteria_added"], "criteria_add_failed": c["failed.add"],
                   "active_criteria": len(mine), "static_criteria": sum(1 for x in mine if x.static),
                   "dynamic_criteria": sum(1 for x in mine if not x.static),
                   "requests": {m: c[f"requests.{m}"] for m in ("add", "delete", "list", "refresh", "noop")},
                   "failed": {m: c[f"failed.{m}"] for m in ("add", "delete", "list", "refresh", "noop")},
                   "refused": {k[8:]: v for k, v in c.items() if k.startswith("refused.")},
                   "notifications": {t: c[f"notifications.{t}"] for t in
                                     ("restart", "timeout", "congestion", "duplicates-dropped")},
                   "notification_send_errors": c["notification_send_errors"],
                   "criteria_deleted": {r: c[f"criteria_deleted.{r}"] for r in ("request",) + TIMEOUT_REASONS},
                   "sequence_number": st.window.highest}
            if detail:
                row["criteria"] = [x.as_dict(now) for x in sorted(mine, key=lambda x: x.id)]
            out.append(row)
        return out

    def statistics(self) -> dict:
        s = self.stats
        drops = {k[6:]: v for k, v in s.items() if k.startswith("drops.")}
        groups = []
        for g in self.groups.values():
            c = g.counters
            groups.append({"capture_group": g.cfg.name, "active_criteria": len(g.criteria),
                           "criteria_capacity": g.capacity, "packets_seen": c["packets_seen"],
                           "packets_matched": c["packets_matched"], "packets_copied": c["packets_copied"],
                           "bytes_copied": c["bytes_copied"], "duplicates_dropped": c["duplicates_dropped"],
                           "hard_limit_drops": sum(cp.counters["hard_limit_drops"] for cp in g.copiers.values()),
                           "send_drops": sum(cp.counters["send_drops"] for cp in g.copiers.values()),
                           "add_refused_capacity": c["add_refused_capacity"],
                           "input_rate_pps": round(g.input_rate),
                           "input_rate_threshold_exceeded": c["input_rate_threshold_exceeded"]})
        other = {k: v for k, v in s.items() if not k.startswith(("drops.", "requests.", "failed."))
                 and k != "control_packets"}
        return {"control_packets": s["control_packets"], "drops": drops, "other": other,
                "requests": {m: s[f"requests.{m}"] for m in ("add", "delete", "list", "refresh", "noop")},
                "failed": {m: s[f"failed.{m}"] for m in ("add", "delete", "list", "refresh", "noop")},
                "listeners": {str(k): v for k, v in self.bound.items()}, "groups": groups}

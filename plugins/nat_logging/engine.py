"""The NAT logger: conntrack events in, NAT events out to collectors and syslog hosts.

:class:`NatLogger` is the stateful object ``flowplane_configure`` registers while
``services jflow-log`` is configured.  Per batch of conntrack messages it classifies each one
(:func:`.events.classify`), keeps the table of open translated sessions, applies the
``message-rate-limit`` and hands the events to every output in one call: one core
:class:`flowplane.api.Exporter` per (template profile, collector) with a :class:`.encoder.NatEncoder`,
one per syslog host with a :class:`.syslog.SyslogEncoder`.

An overrun (events the kernel could not queue) starts a resync: a conntrack dump is compared with
the table of open sessions; sessions the dump shows that the table lacks are logged as created,
sessions the table holds that the dump lacks (and that were open before the dump began) as
deleted, both marked ``resync``.  Nothing is silently lost: every event not exported is counted
by reason (``rate_limit``, the transports' ``queue_full`` / ``refused`` / ``not_ready``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import structlog
import trio

from flowplane.api import SHUTDOWN_GRACE_S, Counters, Exporter, TransportOptions, flush_exporters, hookimpl

from . import conntrack
from .config import Collector, JflowLogConfig, SyslogHost, TemplateProfile
from .encoder import NatEncoder, NatEncoderOptions
from .events import KINDS, NatEvent, classify
from .netlink import CtMessage
from .syslog import SyslogEncoder

log = structlog.get_logger("flowplane.nat_logging")

PLUGIN_OBJECT = "nat-logger"
SYSCTLS = ("/proc/sys/net/netfilter/nf_conntrack_timestamp", "/proc/sys/net/netfilter/nf_conntrack_acct")


def _key(m: CtMessage) -> tuple:
    o = m.orig
    return (m.ct_id, o.proto, o.src, o.sport, o.dst, o.dport, m.zone)


class Output:
    """One destination: a collector of a template profile, or a syslog host."""

    def __init__(self, kind: str, name: str, label: str, exporter: Exporter, detail: dict) -> None:
        self.kind = kind  # "ipfix", "v9" or "syslog"
        self.name = name
        self.label = label
        self.exporter = exporter
        self.detail = detail

    def snapshot(self) -> dict:
        s = self.exporter.stats()
        tc = self.exporter.transport.counters
        enc = self.exporter.encoder
        return {"name": self.name, "kind": self.kind, "destination": self.label, **self.detail,
                "events": s["records"], "messages": s["datagrams"], "sent": s["sent"], "bytes": s["bytes"],
                "dropped": s["dropped"], "encode_errors": s["encode_errors"],
                "sequence": getattr(enc, "sequence", None),
                "drops": [{"stage": st, "reason": r, "count": n} for (st, r), n in sorted(tc.drops.items())]}


class RateLimit:
    """A token bucket of *rate* events per second (burst: one second's worth); 0 = unlimited."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.at = time.monotonic()

    def take(self, n: int) -> int:
        """How many of *n* events may go now."""
        if not self.rate:
            return n
        now = time.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        k = min(n, int(self.tokens))
        self.tokens -= k
        return k


class NatLogger:
    """The object registered while ``services jflow-log`` is configured."""

    def __init__(self, app: Any, cfg: JflowLogConfig) -> None:
        self.app = app
        self.cfg = cfg
        self.counters = Counters("nat-logging")
        self.listener_counters = Counters("nat-logging/conntrack")
        self.by_kind: Counters = Counters("nat-logging/events")
        self.rate = RateLimit(cfg.rate_limit)
        self.outputs: list[Output] = []
        for p in cfg.profiles:
            for c in p.collectors:
                self.outputs.append(self._collector_output(p, c))
        for h in cfg.syslog_hosts:
            self.outputs.append(self._syslog_output(h))
        self.active: dict[tuple, tuple[NatEvent, int]] = {}  # open translated sessions -> (create event, generation)
        self.generation = 0
        self.resync_requested = trio.Event()
        self._resync_destroyed: set | None = None
        self.resync_deleted: set = set()  # keys of sessions the last resync logged as deleted
        self.started_ns = time.time_ns()
        self.listener = conntrack.ConntrackListener(self.handle, self.request_resync, counters=self.listener_counters,
                                                    rcvbuf=cfg.conntrack.receive_buffer,
                                                    update=cfg.conntrack.update_events)
        old = app.previous(NatLogger)
        if old is not None:
            self._adopt(old)

    # -- outputs ------------------------------------------------------------------------
    def _transport(self, name: str, ttype_name: str, host: str, port: int, source: str | None, dscp: int = 0,
                   options: dict | None = None) -> Any:
        tt = self.app.registries.transports.get(ttype_name)
        if tt is None:
            raise RuntimeError(f"jflow-log {name}: no plugin provides transport {ttype_name} (is it disabled?)")
        return tt, tt.factory(TransportOptions(host, port, source, name=name, dscp=dscp, options=options or {}))

    def _collector_output(self, p: TemplateProfile, c: Collector) -> Output:
        name = f"jflow-log/{p.name}/{c.name}"
        tt, transport = self._transport(name, c.transport, c.address, c.port, c.source, c.dscp,
                                        dict(c.transport_options))
        enc = NatEncoder(NatEncoderOptions(version=p.version, observation_domain_id=p.observation_domain_id,
                                           numbering=p.numbering, refresh_packets=p.refresh_packets,
                                           refresh_seconds=p.refresh_seconds, mtu=p.mtu,
                                           ipv6_transport=":" in c.address, stream=tt.stream))
        kind = "ipfix" if p.version == 10 else "v9"
        return Output(kind, f"{p.name}/{c.name}", c.label, Exporter(name, enc, transport),
                      {"template_profile": p.name, "collector": c.name, "version": kind, "numbering": p.numbering,
                       "transport": c.transport, "observation_domain_id": p.observation_domain_id})

    def _syslog_output(self, h: SyslogHost) -> Output:
        label = f"[{h.address}]:{h.port}" if ":" in h.address else f"{h.address}:{h.port}"
        name = f"jflow-log/syslog/{label}"
        tt, transport = self._transport(name, h.transport, h.address, h.port, h.source)
        enc = SyslogEncoder(facility=h.facility, prefix=h.prefix, stream=tt.stream)
        return Output("syslog", f"syslog/{label}", label, Exporter(name, enc, transport),
                      {"transport": h.transport, "facility": h.facility})

    def _adopt(self, old: NatLogger) -> None:
        """A reload: counters and the table of open sessions carry over (exports start afresh)."""
        self.counters, self.listener_counters, self.by_kind = old.counters, old.listener_counters, old.by_kind
        self.listener.counters = self.listener_counters
        self.active, self.generation = old.active, old.generation

    # -- the data path (sync) ---------------------------------------------------------------
    def handle(self, msgs: list[CtMessage], *, resync: bool = False) -> int:
        """Classify a batch of conntrack messages, track open sessions and export; the events exported."""
        now = time.time_ns()
        events: list[NatEvent] = []
        no_nat = self.cfg.conntrack.log_no_nat
        destroyed = self._resync_destroyed
        c = self.counters
        for m in msgs:
            if m.kind == "update":
                c.inc("updates")
                continue
            ev = classify(m, now, log_no_nat=no_nat, resync=resync)
            if ev is None:
                c.inc("ignored_no_nat")
                continue
            key = _key(m)
            if ev.create:
                if key in self.active:  # already logged by a resync that read it before this queued event
                    c.inc("duplicates_after_resync")
                    continue
                self.generation += 1
                self.active[key] = (ev, self.generation)
            else:
                if destroyed is not None:
                    destroyed.add(key)
                if self.active.pop(key, None) is None:
                    if key in self.resync_deleted:  # a resync logged this delete already
                        self.resync_deleted.discard(key)
                        c.inc("duplicates_after_resync")
                        continue
                    c.inc("delete_without_create")
            events.append(ev)
        return self.emit(events)

    def emit(self, events: list[NatEvent]) -> int:
        if not events:
            return 0
        c = self.counters
        for ev in events:
            self.by_kind.inc(ev.kind)
        k = self.rate.take(len(events))
        if k < len(events):
            c.drop("rate-limit", "rate_limit", len(events) - k)
            events = events[:k]
        if not events:
            return 0
        c.inc("events", len(events))
        now = time.time_ns()
        for o in self.outputs:
            o.exporter.export(events, now)
        if self.cfg.structured_log:
            for ev in events:
                # log-events: nat44_session_create nat44_session_delete nat64_session_create nat64_session_delete
                log.info(ev.kind.replace("-", "_"), protocol=ev.proto, source=f"{ev.src}:{ev.sport}",
                         destination=f"{ev.dst}:{ev.dport}", nat_source=f"{ev.post_src}:{ev.post_sport}",
                         nat_destination=f"{ev.post_dst}:{ev.post_dport}", zone=ev.zone, resync=ev.resync)
        return len(events)

    # -- resync ----------------------------------------------------------------------------------
    def request_resync(self) -> None:
        self.resync_requested.set()

    async def resync(self, *, initial: bool = False) -> dict:
        """Compare a conntrack dump with the open-session table and log the difference.

        *initial* (at start): the sessions the dump shows are taken into the table without a create
        event (their delete events follow as usual).
        """
        mark = self.generation
        self._resync_destroyed = set()
        try:
            entries = await conntrack.dump(self.listener_counters,
                                           rcvbuf=max(self.cfg.conntrack.receive_buffer, 1 << 22))
        except OSError as exc:
            self.counters.inc("resync_failures")
            log.warning("conntrack_dump_failed", error=str(exc))
            self._resync_destroyed = None
            return {"created": 0, "deleted": 0}
        destroyed, self._resync_destroyed = self._resync_destroyed, None
        now = time.time_ns()
        seen = set()
        created: list[NatEvent] = []
        for m in entries:
            key = _key(m)
            seen.add(key)
            if key in self.active or key in destroyed:
                continue
            ev = classify(m, now, log_no_nat=self.cfg.conntrack.log_no_nat, resync=True)
            if ev is None:
                continue
            self.generation += 1
            self.active[key] = (ev, self.generation)
            if not initial:
                ev.time_ms = now // 1_000_000 if not m.start_ns else ev.time_ms
                created.append(ev)
        deleted: list[NatEvent] = []
        self.resync_deleted = set()  # the delete events still queued in the socket for these are duplicates
        for key, (ev, gen) in list(self.active.items()):
            if gen <= mark and key not in seen:
                del self.active[key]
                self.resync_deleted.add(key)
                deleted.append(_deleted(ev, now))
        if initial:
            self.counters.inc("sessions_at_start", len(self.active))
        else:
            self.counters.inc("resyncs")
            self.counters.inc("resync_created", len(created))
            self.counters.inc("resync_deleted", len(deleted))
            log.warning("conntrack_resynced", overruns=self.listener_counters["overruns"], created=len(created),
                        deleted=len(deleted), entries=len(entries))
        self.emit(created + deleted)
        return {"created": len(created), "deleted": len(deleted)}

    async def _resync_loop(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.resync_requested.wait()
            self.resync_requested = trio.Event()
            await self.resync()

    async def _listen(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.cfg.conntrack.enable_timestamps:
            _enable_sysctls(self.counters)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.listener.run)  # subscribed first: nothing between the dump and the events
            await self.resync(initial=True)
            await nursery.start(self._resync_loop)
            task_status.started()

    async def _tick(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Once a second: templates that are due by time go out even with no events."""
        task_status.started()
        while True:
            await trio.sleep(1.0)
            now = time.time_ns()
            for o in self.outputs:
                o.exporter.tick(now, [])

    # -- hooks -------------------------------------------------------------------------------------
    @hookimpl
    def flowplane_background_tasks(self, app):
        return [o.exporter.run for o in self.outputs] + [self._listen, self._tick]

    @hookimpl
    def flowplane_shutdown(self, app):
        exporters = [o.exporter for o in self.outputs]

        async def drain() -> None:
            self.listener.drain()  # what the kernel queued before the stop
            await flush_exporters(exporters, min(SHUTDOWN_GRACE_S, float(app.setting("drain-timeout"))))

        return drain

    # -- show --------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        c, lc = self.counters, self.listener_counters
        table = Counter(c.drops)
        table.update(lc.drops)
        for o in self.outputs:
            table.update(o.exporter.transport.counters.drops)
        drops = [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(table.items())]
        return {
            "events": {k: self.by_kind[k] for k in KINDS},
            "events_total": sum(self.by_kind[k] for k in KINDS),
            "exported": c["events"], "rate_limited": c.drops[("rate-limit", "rate_limit")],
            "rate_limit": self.cfg.rate_limit,
            "ignored_no_nat": c["ignored_no_nat"], "updates": c["updates"],
            "delete_without_create": c["delete_without_create"], "active_sessions": len(self.active),
            "sessions_at_start": c["sessions_at_start"],
            "conntrack": {"datagrams": lc["datagrams"], "messages": lc["messages"], "batches": lc["batches"],
                          "overruns": lc["overruns"], "malformed": lc["malformed"], "recv_errors": lc["recv_errors"],
                          "handler_errors": lc["handler_errors"],
                          "receive_buffer": self.listener.rcvbuf_effective},
            "resyncs": c["resyncs"], "resync_created": c["resync_created"], "resync_deleted": c["resync_deleted"],
            "resync_failures": c["resync_failures"], "duplicates_after_resync": c["duplicates_after_resync"],
            "sysctl_failures": c["sysctl_failures"],
            "dropped": sum(table.values()),
            "drops": drops,
            "outputs": [o.snapshot() for o in self.outputs],
        }

    def clear(self) -> None:
        for c in (self.counters, self.listener_counters, self.by_kind):
            c.clear()
        for o in self.outputs:
            o.exporter.counters.clear()
            o.exporter.transport.counters.clear()


def _deleted(ev: NatEvent, now_ns: int) -> NatEvent:
    kind = ev.kind.replace("create", "delete")
    return NatEvent(kind, ev.translation, now_ns // 1_000_000, ev.proto, ev.src, ev.sport, ev.dst, ev.dport,
                    ev.post_src, ev.post_sport, ev.post_dst, ev.post_dport, zone=ev.zone, ct_id=ev.ct_id, resync=True)


def _enable_sysctls(counters: Counters) -> None:
    """nf_conntrack_timestamp=1 (start/stop times) and nf_conntrack_acct=1 (counters in DESTROY), this namespace."""
    for path in SYSCTLS:
        try:
            with open(path) as fh:
                if fh.read().strip() == "1":
                    continue
            with open(path, "w") as fh:
                fh.write("1\n")
        except OSError as exc:
            counters.inc("sysctl_failures")
            log.warning("conntrack_sysctl_failed", path=path, error=str(exc))

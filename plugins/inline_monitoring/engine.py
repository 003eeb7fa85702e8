"""The inline-monitoring data path and timers.

:class:`InlineMonitor` is the stateful object ``flowplane_configure``
registers while ``services inline-monitoring`` has instances.  The
``inline-monitoring-instance NAME`` action handler gets the rows the firewall
terms selected, per batch:

1. rows that are the exporter's own IPFIX packets (a monitored interface that
   carries the export traffic: the loop the Junos guide warns about) are dropped and
   counted as ``own_export`` -- never exported again;
2. 1-in-N systematic sampling, per collector (``sampling_rate_scope
   per-collector``) or once per instance (``per-instance``), the phase carried
   across batches, so N consecutive candidates always give exactly one sample;
3. the sampled frames are clipped to the instance's clip length and encoded as
   IPFIX data records in one numpy pass (:mod:`.encoder`), packed into
   MTU-sized messages and handed to the collector's UDP transport, which never
   blocks (its drops are counted).

Background tasks: every collector's transport (socket bound to
``source-address``, DSCP set) and one timer per instance, which sends the
templates at start (so at once after a config change, which builds a new
object) and every ``template-refresh-rate`` seconds, and the options template
with its options data record every ``option-template-refresh-rate`` seconds,
whether or not packets flow.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import structlog
import trio

from flowplane.api import (
    DIR_OUTPUT,
    SHUTDOWN_GRACE_S,
    V4_MAPPED,
    Counters,
    Exporter,
    PacketBatch,
    Sampler,
    TransportOptions,
    hookimpl,
)

from .config import EXPORT_MTU, Collector, InlineConfig, Instance
from .encoder import HEADER, Records, Session, build_records, datagram_limit, pack_sets

log = structlog.get_logger("flowplane.inline_monitoring")

PLUGIN_OBJECT = "inline-monitor"


def pick(sampler: Sampler, n: int) -> np.ndarray | None:
    """Indices of the sampled candidates among ``0..n-1`` (deterministic 1-in-N, phase carried across
    batches); None means all of them (1 in 1: no index work)."""
    return None if sampler.rate == 1 else sampler.select(n)


class SessionEncoder:
    """The collector's IPFIX session as an encoder of the core exporter: the records are packed data sets
    (:func:`.encoder.pack_sets`), the templates the session's template and options messages."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def encode(self, packed: list[tuple[bytes, int]], now_ns: int) -> list[bytes]:
        return self.session.data_messages(packed)

    def templates(self, now_ns: int) -> list[bytes]:
        return [self.session.control_message(templates=True, options=True)]

    def options_data(self, now_ns: int) -> list[bytes]:
        return [self.session.control_message(templates=False, options=True)]

    def reset_templates(self) -> None:
        """Templates go out from the instance's refresh timer, which a new config restarts."""


class CollectorExport:
    """One collector: its session (sequence numbers), sampler, exporter (session + transport) and counters."""

    def __init__(self, inst: Instance, col: Collector, transport_type: Any, scope: str) -> None:
        self.instance = inst.name
        self.col = col
        self.name = f"{inst.name}/{col.name}"
        self.counters = Counters(self.name)
        t = inst.template
        self.session = Session(template_id=t.template_id, option_template_id=t.option_template_id,
                               observation_domain_id=t.observation_domain_id, sampling_interval=col.sampling_rate)
        self.sampler = Sampler(col.sampling_rate) if scope == "per-collector" else None
        self.limit = datagram_limit(EXPORT_MTU, ipv6=col.family == "inet6")
        name = f"inline-monitoring/{self.name}"
        transport = transport_type.factory(TransportOptions(col.destination, col.port, col.source, name=name,
                                                            dscp=col.dscp))
        self.exporter = Exporter(name, SessionEncoder(self.session), transport)

    @property
    def transport(self) -> Any:
        return self.exporter.transport

    def send_records(self, packed: list[tuple[bytes, int]], records: int) -> None:
        before = self.exporter.counters["datagrams"]
        if not self.exporter.export(packed, time.time_ns(), count=records):
            self.counters.drop("export", "encode_error", records)
            return
        c = self.counters
        c.inc("records", records)
        c.inc("messages", self.exporter.counters["datagrams"] - before)
        c.inc("bytes", sum(HEADER.size + len(s) for s, _ in packed))

    def send_control(self, *, templates: bool, options: bool) -> None:
        msg = self.session.control_message(templates=templates, options=options)
        c = self.counters
        if templates:
            c.inc("template_messages")
        if options:
            c.inc("option_messages")
        c.inc("messages")
        c.inc("bytes", len(msg))
        self.exporter.send([msg])

    def adopt(self, old: CollectorExport) -> None:
        """Keep the counters of the same collector across a reload.

        The export starts afresh: new templates and sequence numbers.
        """
        self.counters = old.counters
        self.transport.counters = old.transport.counters

    def snapshot(self) -> dict:
        t = self.transport
        tc = t.counters
        drops = [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(tc.drops.items())]
        drops += [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(self.counters.drops.items())]
        local = getattr(t, "local_address", None)
        c = self.counters
        return {
            "name": self.col.name, "destination": self.col.label,
            "source": f"{local[0]}:{local[1]}" if local else self.col.source,
            "sampling_rate": self.col.sampling_rate, "dscp": self.col.dscp,
            "forwarding_class": self.col.forwarding_class,
            "packets_sampled": c["sampled"], "records_exported": c["records"], "messages": c["messages"],
            "bytes": c["bytes"], "template_messages": c["template_messages"], "option_messages": c["option_messages"],
            "sequence": self.session.sequence,
            "sent_datagrams": tc["packets"], "sent_bytes": tc["bytes"], "dropped": tc["dropped"],
            "drops": drops,
        }


class InstanceEngine:
    """One inline-monitoring instance: candidates in, records to each collector out."""

    def __init__(self, inst: Instance, transport_type: Any, scope: str) -> None:
        self.inst = inst
        self.scope = scope
        self.counters = Counters(inst.name)
        self.collectors = [CollectorExport(inst, c, transport_type, scope) for c in inst.collectors.values()]
        self.sampler = Sampler(inst.sampling_rate or 1) if scope == "per-instance" else None

    # -- data path ---------------------------------------------------------------
    def process(self, batch: PacketBatch, ingress: np.ndarray, egress: np.ndarray) -> None:
        """Sample, clip, encode and send the candidate rows of *batch* (loop-guarded already)."""
        n = len(batch)
        clip = self.inst.clip_length
        if self.sampler is not None:
            idx = pick(self.sampler, n)
            recs, packed = self._encode(batch, idx, ingress, egress, clip,
                                        self.collectors[0].limit if self.collectors else 1472)
            for c in self.collectors:
                c.counters.inc("sampled", len(recs))
                if len(recs):
                    c.send_records(packed, len(recs))
            return
        prev_idx: Any = False
        prev: tuple[Records, list] | None = None
        prev_limit = 0
        for c in self.collectors:
            idx = pick(c.sampler, n)  # type: ignore[arg-type]
            if prev is not None and prev_limit == c.limit and _same(idx, prev_idx):  # equal rates: encode once
                recs, packed = prev
            else:
                recs, packed = self._encode(batch, idx, ingress, egress, clip, c.limit)
                prev, prev_idx, prev_limit = (recs, packed), idx, c.limit
            c.counters.inc("sampled", len(recs))
            if len(recs):
                c.send_records(packed, len(recs))

    def _encode(self, batch: PacketBatch, idx: np.ndarray | None, ingress: np.ndarray, egress: np.ndarray,
                clip: int, limit: int) -> tuple[Records, list]:
        if idx is None:
            recs = build_records(batch.data, batch.offset, batch.caplen, batch.wirelen, ingress, egress,
                                 batch.direction, clip)
        elif len(idx) == 0:
            return Records(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)), []
        else:
            recs = build_records(batch.data, batch.offset[idx], batch.caplen[idx], batch.wirelen[idx], ingress[idx],
                                 egress[idx], batch.direction[idx], clip)
        return recs, pack_sets(recs, self.inst.template.template_id, limit)

    # -- timers ---------------------------------------------------------------------
    def send_control(self, *, templates: bool, options: bool) -> None:
        for c in self.collectors:
            c.send_control(templates=templates, options=options)

    async def refresh(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Templates now and every template-refresh-rate s; options data every option-template-refresh-rate s."""
        t = self.inst.template
        task_status.started()
        self.send_control(templates=True, options=True)
        now = trio.current_time()
        next_t, next_o = now + t.template_refresh_s, now + t.option_refresh_s
        while True:
            await trio.sleep_until(min(next_t, next_o))
            now = trio.current_time()
            due_t, due_o = now >= next_t, now >= next_o
            self.send_control(templates=due_t, options=due_o)
            if due_t:
                next_t += t.template_refresh_s
            if due_o:
                next_o += t.option_refresh_s


def _same(a: np.ndarray | None, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return isinstance(b, np.ndarray) and np.array_equal(a, b)


class InlineMonitor:
    """The object registered while inline-monitoring instances are configured."""

    def __init__(self, app: Any, cfg: InlineConfig) -> None:
        self.app = app
        self.cfg = cfg
        transport_type = app.registries.transports.get("udp")
        if transport_type is None:
            raise RuntimeError("inline-monitoring needs the 'udp' transport plugin (is it disabled?)")
        self.engines = {name: InstanceEngine(inst, transport_type, cfg.sampling_scope)
                        for name, inst in cfg.instances.items()}
        self.counters = Counters("inline-monitoring")
        self._ifindex: dict[int, int] = {}
        self._guard_key: tuple = ()
        self._guard: tuple[np.ndarray, list[tuple[int, int, int, int, int, int]]] | None = None
        self.started_ns = time.time_ns()
        log.info("inline_monitoring_configured", profile=app.profile.name, scope=cfg.sampling_scope,
                 instances=len(self.engines), collectors=len(self.collectors()))
        old = app.previous(InlineMonitor)
        if old is not None:
            self._adopt(old)

    def _adopt(self, old: InlineMonitor) -> None:
        self.counters = old.counters
        for name, e in self.engines.items():
            o = old.engines.get(name)
            if o is None:
                continue
            e.counters = o.counters
            olds = {c.col.name: c for c in o.collectors}
            for c in e.collectors:
                oc = olds.get(c.col.name)
                if oc is not None and (oc.col.destination, oc.col.port) == (c.col.destination, c.col.port):
                    c.adopt(oc)

    def collectors(self) -> list[CollectorExport]:
        return [c for e in self.engines.values() for c in e.collectors]

    # -- the action handler ------------------------------------------------------------
    def on_action(self, selections) -> None:
        """``then inline-monitoring-instance NAME``: the selected rows of each batch."""
        for sel in selections:
            batch = sel.batch
            n = len(batch)
            if not n:
                continue
            engine = self.engines.get(str(sel.arg))
            if engine is None:  # validation prevents it; a stale filter during a reload could not
                self.counters.drop("action", "unknown_instance", n)
                continue
            engine.counters.inc("packets", n)
            own = self._own_export(batch)
            if own is not None:
                k = int(own.sum())
                engine.counters.drop("loop-guard", "own_export", k)
                if k == n:
                    continue
                batch = batch.select(~own)
            ingress, egress = self._interfaces(batch)
            engine.process(batch, ingress, egress)

    def _interfaces(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """ingressInterface / egressInterface columns: the capture interface's ifindex (0 if unknown).

        Ingress rows: (ifindex, 0).  Egress rows: (ifindex, ifindex) -- the
        monitored interface in both, as the Junos guide's AE/IRB tables have it for
        egress (logical interface, then the member it leaves by).
        """
        iface = batch.iface
        first = int(iface[0])
        if (iface == first).all():
            ingress = np.full(len(batch), self.ifindex(first), dtype=np.uint32)
        else:
            ids, inv = np.unique(iface, return_inverse=True)
            ingress = np.array([self.ifindex(int(i)) for i in ids], dtype=np.uint32)[inv]
        egress = np.where(batch.direction == DIR_OUTPUT, ingress, np.uint32(0)).astype(np.uint32)
        return ingress, egress

    def ifindex(self, iface_id: int) -> int:
        v = self._ifindex.get(iface_id)
        if v:
            return v
        name = self.app.interfaces.name(iface_id)
        v = int(getattr(self.app.sources.get(name), "ifindex", 0) or 0)
        if v:
            self._ifindex[iface_id] = v
        return v

    # -- loop guard ----------------------------------------------------------------------
    def _guard_table(self):
        """(ports, keys) of our own export sockets: (dst_hi, dst_lo, src_hi, src_lo, sport, dport)."""
        key = tuple((getattr(c.transport, "local_address", None), getattr(c.transport, "peer_address", None))
                    for c in self.collectors())
        if key != self._guard_key:
            self._guard_key = key
            keys = []
            for local, peer in key:
                if not local or not peer:
                    continue
                dh, dl = _addr128(peer[0])
                sh, sl = _addr128(local[0])
                keys.append((dh, dl, sh, sl, int(local[1]), int(peer[1])))
            self._guard = (np.array(sorted({k[5] for k in keys}), dtype=np.uint16), keys) if keys else None
        return self._guard

    def _own_export(self, batch: PacketBatch) -> np.ndarray | None:
        """Mask of rows that are this exporter's own IPFIX packets, or None if there are none."""
        guard = self._guard_table()
        if guard is None or not batch.decoded:
            return None
        ports, keys = guard
        cand = (batch.status == 0) & (batch.proto == 17)
        if not cand.any():
            return None
        cand &= np.isin(batch.dport, ports)
        if not cand.any():
            return None
        hit = np.zeros(len(batch), dtype=bool)
        for dh, dl, sh, sl, sport, dport in keys:
            hit |= cand & (batch.dport == dport) & (batch.sport == sport) & (batch.dst_lo == dl) & \
                (batch.dst_hi == dh) & (batch.src_lo == sl) & (batch.src_hi == sh)
        return hit if hit.any() else None

    # -- life cycle ------------------------------------------------------------------------
    @hookimpl
    def flowplane_background_tasks(self, app):
        tasks = [c.exporter.run for c in self.collectors()]
        tasks += [e.refresh for e in self.engines.values()]
        return tasks

    @hookimpl
    def flowplane_shutdown(self, app):
        collectors = self.collectors()

        async def drain() -> None:
            deadline = min(SHUTDOWN_GRACE_S, float(app.setting("drain-timeout")))
            for c in collectors:
                left = await c.exporter.flush(deadline)
                if left:
                    c.transport.counters.inc("dropped", left)
                    c.transport.counters.drop("transport", "shutdown", left)

        return drain

    # -- show ------------------------------------------------------------------------------
    def snapshot(self, instance: str | None = None) -> dict:
        out = []
        for name, e in self.engines.items():
            if instance is not None and name != instance:
                continue
            t = e.inst.template
            out.append({
                "name": name, "template": t.name, "template_id": t.template_id,
                "option_template_id": t.option_template_id, "observation_domain_id": t.observation_domain_id,
                "template_refresh_rate": t.template_refresh_s, "option_template_refresh_rate": t.option_refresh_s,
                "clip_length": e.inst.clip_length, "sampling_scope": e.scope,
                "sampling_rate": e.inst.sampling_rate,
                "packets_seen": e.counters["packets"],
                "drops": [{"stage": s, "reason": r, "count": k} for (s, r), k in sorted(e.counters.drops.items())],
                "collectors": [c.snapshot() for c in e.collectors],
            })
        return {"instances": out,
                "drops": [{"stage": s, "reason": r, "count": k} for (s, r), k in sorted(self.counters.drops.items())]}

    def clear(self, instance: str | None = None) -> list[str]:
        cleared = []
        for name, e in self.engines.items():
            if instance is not None and name != instance:
                continue
            e.counters.clear()
            for c in e.collectors:
                c.counters.clear()
                c.transport.counters.clear()
            cleared.append(name)
        if instance is None:
            self.counters.clear()
        return cleared


def _addr128(text: str) -> tuple[int, int]:
    """(hi, lo) as the decoder stores addresses: IPv4 is IPv4-mapped."""
    import ipaddress

    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if ip.version == 4:
        return 0, int(V4_MAPPED) | int(ip)
    v = int(ip)
    return v >> 64, v & 0xFFFF_FFFF_FFFF_FFFF

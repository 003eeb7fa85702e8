"""The flow engine of one sampling instance: sampler -> per-family flow caches -> exporters.

The same :class:`InstanceEngine` serves the three kinds of flow metering, each
with its own caches and exporters so their traffic never mixes: sampling
instances (fed by ``then sample``), passive monitoring groups (fed by what
the filters accept on monitoring-only interfaces) and discard accounting
groups (fed by ``then discard accounting NAME``; rate 1).

Everything here is synchronous and batch-shaped: the ``sample`` action
handler meters a batch, expiry runs at most once per second of the cache
clock, and exported records are encoded and handed to transports that never
block.  The async parts (transport sockets, the 1 s timer) run as the
instance's background tasks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import structlog
import trio

from flowplane.api import (
    Counters,
    EncoderOptions,
    Exporter,
    FlowCache,
    FlowRecords,
    PacketBatch,
    Sampler,
    TransportOptions,
    flush_exporters,
    hookimpl,
)

from .config import FamilyOutput, FlowServer, Instance
from .metrics import families as metric_families

log = structlog.get_logger("flowplane.flow_monitoring")

NS = 1_000_000_000
KEY_FIELDS = {"inet": "ip", "inet6": "ip", "mpls": "mpls"}


class ServerExporter(Exporter):
    """One flow server: the core exporter plus NetFlow v8's aggregate export hold."""

    def __init__(self, app: Any, inst: Instance, fam: FamilyOutput, server: FlowServer, *,
                 families: list[str] | None = None) -> None:
        self.server = server
        self.families = families or [fam.family]
        name = f"{inst.name}/{server.label}"
        enc_type = app.registries.encoders.for_version(server.version)
        trans_type = app.registries.transports.get(server.transport)
        if enc_type is None or trans_type is None:
            missing = f"version {server.version}" if enc_type is None else f"transport {server.transport}"
            raise RuntimeError(f"flow server {server.label}: no plugin provides {missing} (is it disabled?)")
        t = server.template
        opts = EncoderOptions(
            version=server.version,
            engine_type=fam.engine_type,
            engine_id=fam.engine_id,
            sampling_interval=inst.rate,
            sampling_algorithm=inst.algorithm,
            mtu=server.mtu,
            ipv6_transport=":" in server.host,
            stream=trans_type.stream,
            aggregation=server.aggregation,
            scale_counts=fam.scale_counts,
        )
        if t is not None:
            opts.templates = tuple(dict.fromkeys(k for f in self.families for k in _template_kinds(t.kinds, f)))
            opts.template_refresh_packets, opts.template_refresh_seconds = t.refresh_packets, t.refresh_seconds
            opts.option_refresh_packets = t.option_refresh_packets
            opts.option_refresh_seconds = t.option_refresh_seconds
            if t.observation_domain_id is not None:
                opts.observation_domain_id = t.observation_domain_id
            if t.template_id is not None:
                kinds = ("ipv4", "ipv6", "mpls", "mpls-ipv4", "bridge")
                opts.template_ids = {k: t.template_id + i for i, k in enumerate(kinds)}
            if t.options_template_id is not None:
                opts.options_template_id = t.options_template_id
        transport = trans_type.factory(TransportOptions(server.host, server.port, server.source_address, name=name,
                                                        dscp=server.dscp, options=dict(server.transport_options)))
        super().__init__(name, enc_type.factory(opts), transport)
        # v8 'aggregate-export-interval': records are held and aggregated into one export per interval
        self.hold_ns = int(fam.aggregate_export_interval * NS) if server.version == 8 else 0
        self._held: list[FlowRecords] = []
        self._held_count = 0
        self._held_since = 0

    def export(self, records: FlowRecords, now_ns: int, *, count: int | None = None) -> bool:
        if self.hold_ns and len(records):
            if not self._held:
                self._held_since = now_ns
            self._held.append(records)
            self._held_count += len(records)
            if self._held_count < HOLD_MAX_RECORDS:
                return True
            records = self._take_held()  # bounded memory: a full hold is exported at once
        return super().export(records, now_ns, count=count)

    def _take_held(self) -> FlowRecords:
        held, self._held, self._held_count = self._held, [], 0
        return dataclasses.replace(held[0], data=np.concatenate([r.data for r in held]))

    def release(self, now_ns: int) -> None:
        """Export what the aggregate export timer holds (timer expiry, shutdown)."""
        if self._held:
            super().export(self._take_held(), now_ns)

    def tick(self, now_ns: int, empty: Any = None) -> None:
        """Periodic: the aggregate export timer, then templates / options data that are due, flows or not."""
        if self._held and now_ns - self._held_since >= self.hold_ns:
            self.release(now_ns)
        super().tick(now_ns, empty)


class InstanceEngine:
    """A sampling instance, monitoring group or accounting group: a sampler, a flow cache per
    family, exporters per family.  *kind* is ``sampling``, ``monitoring`` or ``accounting``."""

    def __init__(self, app: Any, inst: Instance, *, live: bool, routes=None, kind: str = "sampling") -> None:
        self.app = app
        self.inst = inst
        self.kind = kind
        self.routes = routes  # RouteTable: next hop / AS / masks filled at export, once per batch of records
        self.live = live  # live sources: wall clock; pcap replay: packet clock
        self.counters = Counters(inst.name)
        self.sampler = Sampler(inst.rate, run_length=inst.run_length, max_pps=inst.max_pps,
                               algorithm=inst.algorithm, counters=self.counters)
        self.caches: dict[str, FlowCache] = {}
        self.exporters: dict[str, list[ServerExporter]] = {}
        self.size_hist = np.zeros(len(SIZE_EDGES), dtype=np.int64)
        # inet and inet6 share one cache when their settings agree: one update per batch instead of two
        self.cache_of: dict[str, str] = {}
        for family, fam in inst.families.items():
            name = family
            if family in ("inet", "inet6"):
                other = inst.families.get("inet6" if family == "inet" else "inet")
                if other is not None and _cache_settings(other) == _cache_settings(fam):
                    name = "ip"
            self.cache_of[family] = name
            if name not in self.caches:
                self.caches[name] = FlowCache(
                    max_flows=inst.flow_table_size, active_timeout_s=fam.active_timeout,
                    inactive_timeout_s=fam.inactive_timeout, key_fields=KEY_FIELDS[family],
                    tcp_end_grace_s=fam.tcp_end_grace, instance=inst.name, sampling_interval=inst.rate,
                    sampling_algorithm=inst.algorithm, scale=fam.scale_counts)
        self.families_of = {c: [f for f, n in self.cache_of.items() if n == c] for c in self.caches}
        # one exporter per flow server of the instance, shared by the families that name it: one
        # sequence space and one template set per (collector, observation domain), as collectors expect
        shared: dict[tuple, ServerExporter] = {}
        for family, fam in inst.families.items():
            self.exporters[family] = []
            for s in fam.servers:
                key = _server_key(s)
                if key not in shared:
                    fams = [f for f, o in inst.families.items() if any(_same(x, s) for x in o.servers)]
                    shared[key] = ServerExporter(app, inst, fam, s, families=fams)
                self.exporters[family].append(shared[key])
        self.all_exporters = list(shared.values())
        # per cache: (exporter, the af values it takes from that cache's records)
        self.routes_of = {c: [(e, _afs([f for f in fams if e in self.exporters[f]]))
                              for e in dict.fromkeys(x for f in fams for x in self.exporters[f])]
                          for c, fams in self.families_of.items()}
        self._last_expiry: dict[str, int] = {c: 0 for c in self.caches}
        self.started_ns = time.time_ns()

    # -- data path --------------------------------------------------------------
    def meter(self, batch: PacketBatch) -> None:
        """Sample and meter the rows of *batch* (all sent here by 'then sample')."""
        ip = batch.status == 0
        if not ip.all():
            self.counters.inc("not_ip", int((~ip).sum()))
            batch = batch.select(ip)
        idx = self.sampler.select(len(batch), batch.ts)
        if len(idx) == 0:
            return
        if len(idx) != len(batch):
            batch = batch.select(idx)
        self.size_hist += np.bincount(np.searchsorted(SIZE_EDGES, batch.ip_len, side="right") - 1,
                                      minlength=len(SIZE_EDGES))[: len(SIZE_EDGES)]
        routed = np.zeros(len(batch), dtype=bool)
        if "mpls" in self.caches:
            m = batch.mpls_depth > 0
            if m.any():
                self._update("mpls", batch, m)
                routed |= m
        if "ip" in self.caches:
            m = ((batch.af == 4) | (batch.af == 6)) & ~routed
            if m.all():
                self._update("ip", batch, None)  # the common case: no mask work in the cache
                routed[:] = True
            elif m.any():
                self._update("ip", batch, m)
                routed |= m
        else:
            for family, af in (("inet", 4), ("inet6", 6)):
                if family in self.caches:
                    m = (batch.af == af) & ~routed
                    if m.any():
                        self._update(family, batch, m)
                        routed |= m
        left = int((~routed).sum())
        if left:
            self.counters.inc("no_family_output", left)

    def _update(self, name: str, batch: PacketBatch, rows: np.ndarray | None) -> None:
        cache = self.caches[name]
        for records, reason in cache.update(batch, rows):
            self._export(name, records, reason)
        if not self.live:
            now = cache.clock_ns
            if now - self._last_expiry[name] >= NS:
                self.expire(name, now)

    def expire(self, name: str, now_ns: int) -> None:
        self._last_expiry[name] = now_ns
        for records, reason in self.caches[name].expire(now_ns):
            self._export(name, records, reason)

    def _export(self, name: str, records: FlowRecords, reason: str) -> None:
        """Records leaving cache *name* go to the exporters of the families it serves (one call each)."""
        if not len(records):
            return
        self.counters.inc(f"flows_{reason}", len(records))
        if self.routes is not None:
            self.routes.annotate(records)
        now = self.caches[name].clock_ns if not self.live else time.time_ns()
        af = records.data["af"] if name == "ip" else None
        for exp, afs in self.routes_of[name]:
            if af is None or len(afs) == 2:
                exp.export(records, now)
            else:
                sel = af == afs[0]
                if sel.any():
                    exp.export(records.select(sel), now)
        self.app.graph.flows_expired(records=records, reason=reason)

    # -- time --------------------------------------------------------------------
    def tick(self) -> None:
        """Once a second: live caches expire on the wall clock; every exporter gets its refresh."""
        now = time.time_ns()
        if self.live:
            for name in self.caches:
                self.expire(name, now)
        for exp in self.all_exporters:
            exp.tick(now if self.live else max((c.clock_ns for c in self.caches.values()), default=0) or now)

    def flush(self) -> int:
        total = 0
        for name, cache in self.caches.items():
            records = cache.flush()
            total += len(records)
            self._export(name, records, "shutdown")
        now = time.time_ns() if self.live else max((c.clock_ns for c in self.caches.values()), default=0)
        for exp in self.all_exporters:
            exp.release(now or time.time_ns())
        return total

    # -- tasks ---------------------------------------------------------------------
    def transports(self) -> list:
        return [e.transport for e in self.all_exporters]


HOLD_MAX_RECORDS = 65_536  # records an aggregate export timer holds at most before it exports early
SIZE_EDGES = np.array([0, 64, 96, 128, 256, 512, 1024, 1518, 4096, 9216], dtype=np.int64)


def _cache_settings(fam: FamilyOutput) -> tuple:
    return (fam.active_timeout, fam.inactive_timeout, fam.tcp_end_grace, fam.scale_counts)


def _afs(families: list[str]) -> tuple[int, ...]:
    """The address families (4, 6) an exporter takes from a shared inet+inet6 cache."""
    return tuple(sorted({4 if f == "inet" else 6 for f in families if f in ("inet", "inet6")})) or (4, 6)


def _server_key(s: FlowServer) -> tuple:
    return (s.host, s.port, s.version, s.transport, s.template.name if s.template else None, s.aggregation,
            s.transport_options)


def _same(a: FlowServer, b: FlowServer) -> bool:
    return _server_key(a) == _server_key(b)


def _template_kinds(kinds: tuple[str, ...], family: str) -> tuple[str, ...]:
    """The data templates an exporter of *family* needs, from the template's kinds."""
    want = {"inet": ("ipv4",), "inet6": ("ipv6",), "mpls": ("mpls", "mpls-ipv4")}[family]
    chosen = tuple(k for k in kinds if k in want or k == "bridge")
    return chosen or want


class LoadMeter:
    """CPU load of this process over the last N seconds, from getrusage samples taken once a second."""

    def __init__(self, keep: int = 61) -> None:
        self.samples: list[tuple[float, float]] = []
        self.keep = keep

    def sample(self) -> None:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.samples.append((time.monotonic(), ru.ru_utime + ru.ru_stime))
        del self.samples[: -self.keep]

    def percent(self, seconds: float) -> float:
        self.sample()
        now_t, now_cpu = self.samples[-1]
        older = [s for s in self.samples if now_t - s[0] <= seconds + 0.5]
        t0, c0 = older[0]
        return 100.0 * (now_cpu - c0) / (now_t - t0) if now_t > t0 else 0.0


class FlowMonitor:
    """The stateful object registered while sampling is configured: all instances."""

    def __init__(self, app: Any, sampling, routes=None) -> None:
        self.app = app
        self.sampling = sampling
        self.routes = routes
        live = not app.packet_clock  # the sources' declared clock: wall for live capture, packet time for replay
        self.engines = {name: InstanceEngine(app, inst, live=live,
                                             routes=routes) for name, inst in sampling.instances.items()}
        self.default = self.engines.get("(default sampling)")
        self.iface_engine = {app.interfaces.id(i): self.engines[n] for i, n in sampling.interface_instance.items()}
        # passive monitoring groups: every accepted packet of their monitoring-only interfaces
        self.groups = {name: InstanceEngine(app, inst, live=live, routes=routes, kind="monitoring")
                       for name, inst in sampling.groups.items()}
        # discard accounting groups: what 'then discard accounting NAME' discards, never sampled traffic
        self.accounting = {name: InstanceEngine(app, inst, live=live, routes=routes, kind="accounting")
                           for name, inst in sampling.accounting.items()}
        self.group_of_iface = {app.interfaces.id(i): self.groups[g] for g, ifs in sampling.group_interfaces.items()
                               for i in ifs}
        self.counters = Counters("flow-monitoring")
        self.load = LoadMeter()

    # the 'sample' action handler
    def on_sample(self, selections) -> None:
        for sel in selections:
            batch = sel.batch
            engine = self.iface_engine.get(int(batch.iface[0])) if len(batch) else None
            engine = engine or self.default
            if engine is None:
                self.counters.drop("sample", "no_instance", len(batch))
                continue
            engine.meter(batch)

    # the 'discard-accounting' action handler ('then discard accounting NAME')
    def on_discard_accounting(self, selections) -> None:
        for sel in selections:
            engine = self.accounting.get(sel.arg)
            if engine is None:  # validation makes this unreachable; never a silent loss all the same
                self.counters.drop("discard-accounting", "no_group", len(sel.batch))
                continue
            engine.counters.inc("discarded_packets", len(sel.batch))
            engine.counters.inc("discarded_bytes", sel.batch.bytes_in())
            engine.meter(sel.batch)

    @hookimpl
    def flowplane_process_batch(self, batch) -> None:
        """Passive monitoring: meter what the filters accepted on a monitoring-only interface."""
        if self.group_of_iface and len(batch):
            engine = self.group_of_iface.get(int(batch.iface[0]))
            if engine is not None:
                engine.meter(batch)

    def all_engines(self) -> list[InstanceEngine]:
        return [*self.engines.values(), *self.groups.values(), *self.accounting.values()]

    @hookimpl
    def flowplane_metrics(self, app):
        return metric_families(self)

    @hookimpl
    def flowplane_background_tasks(self, app):
        tasks = [exp.run for engine in self.all_engines() for exp in engine.all_exporters]
        tasks.append(self._timer)
        return tasks

    async def _timer(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(1.0)
            self.load.sample()
            for engine in self.all_engines():
                engine.tick()

    @hookimpl
    def flowplane_shutdown(self, app):
        flushed = sum(e.flush() for e in self.all_engines())
        log.info("flows_flushed", flows=flushed)
        exporters = [x for e in self.all_engines() for x in e.all_exporters]

        async def drain() -> None:
            # a connected collector gets the drain deadline; one that is away gets a short grace to come
            # back, then what is still queued is counted as lost (never a silent loss, never a hang)
            await flush_exporters(exporters, float(app.setting("drain-timeout")))

        return drain

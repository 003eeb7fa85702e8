"""The collector's stateful object: listeners -> decoder -> ring / JSON lines / subscribers.

Registered by ``flowplane_configure`` (as :data:`PLUGIN_OBJECT`) while
``services flow-collector`` is configured.  Its ``flowplane_background_tasks``
are the UDP listeners (each binds before it reports started, so READY comes
only after every socket is bound) and a one-second timer that expires data
held for a template that never came.  ``flowplane_shutdown`` decodes what is
gathered, closes (and rotates) the output files, then gives the forwarders' transports
the rest of the drain time to send what they hold (see output.py, forward.py).  On a reload the new object takes
the old one's decoder (templates, sampling rates, counters) and ring, and keeps every listener
whose address, port, protocol and receive buffer did not change: the UDP socket stays open (nothing
queued on it is lost) and TCP exporters stay connected with their templates (listener.py ``adopt``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import structlog
import trio

from flowplane.api import Counters, hookimpl

from .config import CollectorConfig
from .decoder import Decoder
from .listener import UdpListener
from .listener_tcp import TcpListener
from .metrics import families as metric_families
from .output import FlowRing, Outputs
from .rates import RateWindow
from .records import CollectedFlows

log = structlog.get_logger("flowplane.collector")

PLUGIN_OBJECT = "flow-collector"


DEFER_RECORDS = 4096  # a template's records are converted once this many are gathered ...
DEFER_S = 0.2  # ... or once the first of them waited this long (else at the next one-second tick)
DEFER_MIN_BATCH = 64  # only while busy: smaller batches decode everything gathered at once
SHUTDOWN_READ_S = 2.0  # at most this long reading what is still queued on the sockets at shutdown


class Collector:
    def __init__(self, cfg: CollectorConfig, previous: Collector | None = None, *, registries=None) -> None:
        self.cfg = cfg
        if previous is not None:
            self.counters = previous.counters
            self.decoder = previous.decoder
            self.decoder.max_templates = cfg.max_templates
            self.decoder.pending_timeout_ns = int(cfg.pending_timeout * 1e9)
            self.decoder.template_timeout_ns = int(cfg.template_timeout * 1e9)
            self.decoder.scale = cfg.scale
            self.ring = previous.ring
            self.ring.size = cfg.flow_ring
        else:
            self.counters = Counters("flow-collector")
            self.decoder = Decoder(max_templates=cfg.max_templates, pending_timeout=cfg.pending_timeout,
                                   counters=self.counters, template_timeout=cfg.template_timeout,
                                   scale=cfg.scale)
            self.ring = FlowRing(cfg.flow_ring)
        ocfg = cfg.output
        if cfg.jsonl and not ocfg.jsonl:  # the short form CollectorConfig(jsonl=PATH)
            ocfg = dataclasses.replace(ocfg, jsonl=cfg.jsonl)
        self.outputs = Outputs(ocfg, self.counters, registries=registries)  # files (rotated) and forwarders
        self.jsonl = self.outputs.jsonl
        kept = {}  # listeners a reload keeps: same address, port, protocol and receive buffer
        if previous is not None and previous.cfg.receive_buffer == cfg.receive_buffer:
            kept = {lst.listen: lst for lst in previous.listeners if lst.sock is not None and lst.listen.port != 0}
        self.listeners = []
        for listen in cfg.listen:
            old = kept.get(listen)
            if old is not None and listen.protocol == "tcp":
                old.adopt(self.handle_session, self.close_session, cfg.max_connections, cfg.tcp_idle_timeout)
                self.listeners.append(old)
            elif old is not None:
                old.adopt(self.handle_live)
                self.listeners.append(old)
            elif listen.protocol == "tcp":
                self.listeners.append(TcpListener(listen, self.handle_session, self.counters,
                                                  max_connections=cfg.max_connections, on_close=self.close_session,
                                                  rcvbuf=cfg.receive_buffer, idle_timeout=cfg.tcp_idle_timeout))
            else:
                self.listeners.append(UdpListener(listen, self.handle_live, cfg.receive_buffer, self.counters))
        self.kept_listeners = sum(1 for x in self.listeners if x.handover)
        self.subscribers: list[Callable[[list[CollectedFlows]], None]] = []
        self.rates = previous.rates if previous is not None else RateWindow(start_s=time.monotonic())
        self.started_ns = time.time_ns()
        self.cleared_ns = self.started_ns

    # -- data path ------------------------------------------------------------------

    def handle(self, datagrams: list[tuple[bytes, str]], now_ns: int | None = None,
               defer: bool = False) -> list[CollectedFlows]:
        """Decode a batch of ``(payload, exporter address)``; returns the flows it gave.

        *defer* (the UDP listeners): data of a template with fewer than :data:`DEFER_RECORDS`
        records gathered, first seen less than :data:`DEFER_S` ago, waits for the next batch or
        the one-second timer, so that a busy collector with many exporters still converts
        thousands of records at a time."""
        now = now_ns if now_ns is not None else time.time_ns()
        self.decoder.feed_many(datagrams, now)
        self.counters.inc("batches")
        if defer:
            flows = self.decoder.flush(DEFER_RECORDS, int(DEFER_S * 1e9), now)
        else:
            flows = self.decoder.flush()
        if flows:
            self.emit(flows)
        return flows

    def handle_live(self, datagrams: list[tuple[bytes, str]]) -> list[CollectedFlows]:
        """What the UDP listeners call: :meth:`handle`, with small groups deferred while busy (a batch
        of at least :data:`DEFER_MIN_BATCH` datagrams); a quiet collector decodes at once."""
        return self.handle(datagrams, defer=len(datagrams) >= DEFER_MIN_BATCH)

    def handle_session(self, messages: list, address: str, session: str,
                       now_ns: int | None = None) -> list[CollectedFlows]:
        """Decode a batch of IPFIX messages of one TCP connection (its own templates); the flows it gave."""
        now = now_ns if now_ns is not None else time.time_ns()
        feed = self.decoder.feed
        for data in messages:
            feed(data, address, now, session)
        self.counters.inc("batches")
        flows = self.decoder.flush()
        if flows:
            self.emit(flows)
        return flows

    def close_session(self, session: str) -> None:
        """A TCP connection closed: its templates (and data held for them) are forgotten."""
        self.decoder.close_session(session)

    def emit(self, flows: list[CollectedFlows]) -> None:
        for f in flows:
            self.ring.add(f)
        self.outputs.write(flows)
        for sub in self.subscribers:
            try:
                sub(flows)
            except Exception as exc:  # a subscriber must not stop the listener
                self.counters.drop("output", "subscriber-failed")
                log.error("collector_subscriber_failed", error=f"{type(exc).__name__}: {exc}")

    def tick(self, now_ns: int | None = None) -> None:
        self.decoder.expire(now_ns)
        flows = self.decoder.flush()
        if flows:
            self.emit(flows)

    # -- hooks ----------------------------------------------------------------------

    @hookimpl
    def flowplane_metrics(self, app):
        return metric_families(self)

    @hookimpl
    def flowplane_background_tasks(self, app):
        return self.outputs.tasks(app) + [lst.run for lst in self.listeners] + [self._timer]

    async def _timer(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        bound = [lst.label for lst in self.cfg.listen]
        log.info("collector_listening", listeners=bound,
                 rcvbuf=[lst.rcvbuf for lst in self.listeners])
        task_status.started()
        while True:
            await trio.sleep(1.0)
            self.tick()
            self.outputs.tick()
            self.rates.sample(time.monotonic(), self.rate_values())

    def rate_values(self) -> dict[str, int]:
        """The running totals 'show' turns into per-second rates."""
        c = self.counters
        decode = sum(n for (s, _r), n in c.drops.items() if s == "decode")
        other = sum(n for (s, _r), n in c.drops.items() if s != "decode")
        kernel = sum(lst.kernel_drops() or 0 for lst in self.listeners)
        return {"datagrams": c["datagrams"], "records": c["records"], "bytes": c["bytes"],
                "decode_errors": decode, "drops": other, "kernel_drops": kernel}

    @hookimpl(trylast=True)
    def flowplane_shutdown(self, app):
        """Stop last: exporters in this same process (a replay to a local collector) flush first,
        then what reached our sockets is read and decoded before the outputs close."""

        async def drain() -> None:
            quiet = 0
            with trio.move_on_after(SHUTDOWN_READ_S):
                while quiet < 3:  # three empty polls in a row: nothing is in flight on loopback
                    await trio.sleep(0.02)
                    got = sum(lst.drain_now() for lst in self.listeners if not lst.handover)  # kept: read on
                    quiet = 0 if got else quiet + 1
            self.tick(0)  # nothing expires at time 0; decode what is gathered
            self.outputs.close_files()
            await self.outputs.flush_forwarders(float(app.setting("drain-timeout")))
            log.info("collector_stopped", datagrams=self.counters["datagrams"], records=self.counters["records"],
                     errors=sum(self.counters.drops.values()))

        return drain

    def clear(self) -> None:
        self.decoder.clear()
        self.ring.clear()
        for lst in self.listeners:
            lst.datagrams = 0
            lst.drops_at_clear += lst.kernel_drops() or 0
            if hasattr(lst, "rxq_at_clear"):
                lst.rxq_at_clear = lst.rxq_drops
        self.rates.clear(time.monotonic())
        self.cleared_ns = time.time_ns()

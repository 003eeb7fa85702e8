"""The trio graph: sources -> bounded ingest channel -> pipeline task.

Each source runs in its own cancel scope (so a reload can restart only the
sources whose config changed) and sends :class:`PacketBatch` objects into one
bounded channel.  The pipeline task drains it and calls ``App.process`` per
batch (decode, filters, actions, feature plugins).  ``drain()`` stops the
sources, lets the pipeline finish what is queued, then calls the
``flowplane_shutdown`` hooks so features flush what is in flight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from .app import App
from .config import Config
from .pluginmanager import call_each
from .sources import SourceContext

log = structlog.get_logger("flowplane.pipeline")


@dataclass
class _RunningSource:
    name: str
    section: dict
    source: Any
    scope: trio.CancelScope
    done: trio.Event


class Pipeline:
    """Runs the data path of an :class:`App` inside a nursery."""

    def __init__(self, app: App, *, speed: float = 0.0) -> None:
        self.app = app
        self.speed = speed
        queue = int(app.setting("ingest-queue"))
        self._send, self._recv = trio.open_memory_channel(queue)
        self.running: dict[str, _RunningSource] = {}
        self.last_beat = trio.current_time()
        self.beats = 0
        self.drained = trio.Event()
        self.finite_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._graph_scopes: dict[int, list[trio.CancelScope]] = {}

    # -- start ------------------------------------------------------------------
    async def start(self, nursery: trio.Nursery) -> None:
        """Start the pipeline task, every background task, then every source; return once all are up."""
        self._nursery = nursery
        await nursery.start(self._pipeline_task)
        # listeners and exporters first, then the packets: nothing a source feeds finds them not ready
        configured = {id(o) for o in self.app.graph.configured}
        for impl in reversed(self.app.pm.hook.flowplane_background_tasks.get_hookimpls()):
            if id(impl.plugin) in configured:
                continue  # tasks of per-config objects live and die with their graph
            for fn in _tasks_of(impl.plugin_name, impl.function, self.app):
                await nursery.start(fn)
        await self.start_graph_tasks()
        await self._start_sources(self.app.config)
        self._check_finite()

    async def start_graph_tasks(self) -> None:
        """Start the background tasks of the current graph's stateful objects in a scope of their own."""
        assert self._nursery is not None
        graph = self.app.graph
        scopes = self._graph_scopes.setdefault(id(graph), [])
        for obj in graph.configured:
            fn = getattr(obj, "flowplane_background_tasks", None)
            if fn is None:
                continue
            for task in _tasks_of(type(obj).__name__, fn, self.app):
                scope = trio.CancelScope()
                scopes.append(scope)
                await self._nursery.start(self._scoped, scope, task)

    @staticmethod
    async def _scoped(scope: trio.CancelScope, fn, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await fn(task_status=task_status)

    async def retire(self, graph) -> None:
        """After a reload: flush the replaced graph's objects, then stop their tasks."""
        for obj in graph.configured:
            fn = getattr(obj, "flowplane_shutdown", None)
            if fn is not None:
                await _await_maybe(fn(app=self.app), log, deadline_s=float(self.app.setting("drain-timeout")))
        for scope in self._graph_scopes.pop(id(graph), []):
            scope.cancel()

    async def _start_sources(self, config: Config) -> None:
        for name, section in config.section("interfaces").items():
            await self._start_source(name, section or {})

    async def _start_source(self, name: str, section: dict) -> None:
        assert self._nursery is not None
        driver = self.app.registries.sources[section.get("source", "af-packet")]
        ctx = SourceContext(
            name=name,
            config=section,
            iface_id=self.app.interfaces.id(name),
            interfaces=self.app.interfaces,
            batch_size=self._batch_size(driver, section),
            speed=self.speed,
            log=log.bind(source=name),
            base_dir=self.app.config.base_dir,
        )
        source = driver.factory(ctx)
        scope = trio.CancelScope()
        done = trio.Event()
        send = self._send.clone()
        rs = _RunningSource(name, section, source, scope, done)
        self.running[name] = rs
        self.app.sources[name] = source
        await self._nursery.start(self._run_source, rs, send)
        log.info("source_started", source=name, driver=driver.name, finite=getattr(source, "finite", False))

    def _batch_size(self, driver, section: dict) -> int:
        """Interface setting, else ``system batch-size`` if set, else the driver's preference, else 256."""
        if "batch-size" in section:
            return int(section["batch-size"])
        explicit = self.app.config.get("system", "batch-size")
        if explicit is not None:
            return int(explicit)
        size = driver.batch_size or int(self.app.setting("batch-size"))
        return min(size, self.app.limits.max_batch)

    async def _run_source(self, rs: _RunningSource, send: trio.MemorySendChannel, *,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
        status = _StartedFlag(task_status)
        try:
            async with send:
                with rs.scope:
                    await rs.source.run(send, task_status=status)
        except Exception as exc:
            if not status.started_called:
                raise  # start-up fails with the source's own error (missing interface, bad file)
            # a source failing later is logged and counted; the rest of the appliance runs on
            self.app.counters["pipeline"].inc(f"source_errors.{rs.name}")
            log.error("source_failed", source=rs.name, error=f"{type(exc).__name__}: {exc}", exc_info=True)
        finally:
            rs.done.set()
            if getattr(rs.source, "finite", False) and not rs.scope.cancel_called:
                log.info("source_finished", source=rs.name, **_counter_fields(rs.source))
            self._check_finite()

    def _check_finite(self) -> None:
        """Set ``finite_done`` once every source is finite and finished."""
        if self.running and all(getattr(r.source, "finite", False) and r.done.is_set() for r in self.running.values()):
            self.finite_done.set()

    # -- the pipeline task ------------------------------------------------------------
    async def _pipeline_task(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        recv = self._recv
        app = self.app
        while True:
            with trio.move_on_after(1.0):
                try:
                    batch = await recv.receive()
                except trio.EndOfChannel:
                    break
                app.process(batch)
            self.beats += 1
            self.last_beat = trio.current_time()
            # let other tasks (control socket, exporters) run between batches
            await trio.lowlevel.checkpoint_if_cancelled()
        self.drained.set()

    # -- reload ----------------------------------------------------------------------------
    async def reload(self, new: Config) -> None:
        """Restart sources whose config changed, stop removed ones, start new ones."""
        old_ifaces = {n: r.section for n, r in self.running.items()}
        new_ifaces = {n: (s or {}) for n, s in new.section("interfaces").items()}
        for name, rs in list(self.running.items()):
            if name not in new_ifaces or new_ifaces[name] != old_ifaces[name]:
                rs.scope.cancel()
                await rs.done.wait()
                del self.running[name]
                self.app.sources.pop(name, None)
                log.info("source_stopped", source=name, reason="reload")
        for name, section in new_ifaces.items():
            if name not in self.running:
                await self._start_source(name, section)

    # -- drain -------------------------------------------------------------------------------
    async def drain(self, deadline_s: float) -> bool:
        """Stop sources, process what is queued, run shutdown hooks; True if it finished in time."""
        self._stopping = True
        with trio.move_on_after(deadline_s) as scope:
            for rs in self.running.values():
                rs.scope.cancel()
            for rs in self.running.values():
                await rs.done.wait()
            await self._send.aclose()
            await self.drained.wait()
            for plugin, flusher in call_each(self.app.pm, "flowplane_shutdown", app=self.app):
                await _await_maybe(flusher, log, deadline_s=deadline_s, plugin=plugin)
        if scope.cancelled_caught:
            log.error("drain_timeout", deadline_s=deadline_s)
            return False
        return True

    def status(self) -> dict:
        stats = self._send.statistics()
        return {
            "queue_used": stats.current_buffer_used,
            "queue_size": stats.max_buffer_size if stats.max_buffer_size != math.inf else -1,
            "beats": self.beats,
            "sources": {n: {"finite": getattr(r.source, "finite", False), "done": r.done.is_set(),
                            **_counter_fields(r.source)} for n, r in self.running.items()},
        }


def _tasks_of(plugin: str, fn, app) -> list:
    try:
        return list(fn(app=app) or [])
    except Exception as exc:
        from .errors import PluginError

        raise PluginError(f"plugin {plugin!r} failed in flowplane_background_tasks: {exc}") from exc


async def _await_maybe(result, logger, *, deadline_s: float, plugin: str = "") -> None:
    """A shutdown hook may return an async callable (flush network buffers): await it, bounded."""
    if result is None or not callable(result):
        return
    with trio.move_on_after(deadline_s) as scope:
        try:
            await result()
        except Exception as exc:
            logger.error("plugin_failed", plugin=plugin, hook="flowplane_shutdown",
                         error=f"{type(exc).__name__}: {exc}")
    if scope.cancelled_caught:
        logger.error("flush_timeout", plugin=plugin, deadline_s=deadline_s)


class _StartedFlag:
    """Wraps a task_status to remember whether ``started()`` was called."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.started_called = False

    def started(self, value=None) -> None:
        self.started_called = True
        self.inner.started(value)


def _counter_fields(source: Any) -> dict:
    c = getattr(source, "counters", None)
    return dict(c.values) if c is not None else {}

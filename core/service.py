"""``flowplane run``: the top nursery, signals, sd_notify, watchdog, reload, drain.

Life cycle (STYLE.md convention 12)::

    start control socket, pipeline, sources, background tasks
    READY=1                              (only after every nursery.start returned)
    SIGHUP  -> RELOADING=1 + MONOTONIC_USEC, validate new file, swap, READY=1
               (a bad file: reload_rejected logged, old config keeps running)
    SIGTERM -> STOPPING=1, stop sources, drain under a deadline, flush, exit 0
               (app.request_stop(reason) from a task in the service does the same)
    WATCHDOG=1 every WATCHDOG_USEC/2 while the pipeline heartbeat advances
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import structlog
import trio

from .app import App
from .config import Config
from .control import ControlServer
from .errors import ConfigError, PluginError
from .metrics import MetricsEndpoint
from .pipeline import Pipeline
from .sdnotify import Notifier

log = structlog.get_logger("flowplane.service")


class Service:
    """One running appliance: an App, its pipeline and its control socket."""

    def __init__(self, app: App, *, notifier: Notifier | None = None, speed: float = 0.0,
                 exit_on_eof: bool = False, control: bool = True) -> None:
        self.app = app
        self.notifier = notifier or Notifier(None)
        self.speed = speed
        self.exit_on_eof = exit_on_eof
        self.control = control
        self.pipeline: Pipeline | None = None
        self.metrics = MetricsEndpoint(app, self)
        self.reloads = 0
        self.reloads_rejected = 0
        self.ready = trio.Event()
        self._events_send, self._events_recv = trio.open_memory_channel(16)
        self._stop_requested = trio.Event()
        self._stop_reason = ""
        self.stopped_by: str | None = None  # "SIGTERM", "SIGINT", "EOF" or "request:REASON", once stopping

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> int:
        """Run until SIGTERM/SIGINT (or end of input with ``exit_on_eof``); return the exit code."""
        app = self.app
        app.stop_handler = self.request_stop  # app.request_stop(), for tasks and plugins
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                if self.control:
                    path = str(app.setting("control-socket"))
                    mode = int(str(app.setting("control-socket-mode")), 8)
                    await nursery.start(ControlServer(app, path, mode).run)
                app.metrics = self.metrics  # for 'show system metrics'
                await nursery.start(self.metrics.run)
                self.pipeline = Pipeline(app, speed=self.speed)
                app.pipeline = self.pipeline  # for status commands
                await self.pipeline.start(nursery)
                nursery.start_soon(self._signal_task, signals)
                nursery.start_soon(self._stop_task)
                if self.exit_on_eof:
                    nursery.start_soon(self._eof_task)
                period = self.notifier.watchdog_period()
                if period:
                    nursery.start_soon(self._watchdog_task, period)
                self.notifier.ready(self._status_line())
                self.ready.set()
                log.info("service_ready", profile=app.profile.name, sources=sorted(self.pipeline.running),
                         watchdog_s=period)
                task_status.started()
                code = await self._event_loop()
                nursery.cancel_scope.cancel()
        return code

    async def _signal_task(self, signals) -> None:
        async for signum in signals:
            await self._events_send.send(signal.Signals(signum).name)

    def request_stop(self, reason: str = "requested") -> None:
        """Stop as SIGTERM does (drain, flush, exit 0); call from a task in the service's trio loop."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()

    async def _stop_task(self) -> None:
        await self._stop_requested.wait()
        await self._events_send.send(f"request:{self._stop_reason}")

    async def _eof_task(self) -> None:
        assert self.pipeline is not None
        await self.pipeline.finite_done.wait()
        await self._events_send.send("EOF")

    async def _event_loop(self) -> int:
        async for event in self._events_recv:
            if event == "SIGHUP":
                await self.reload()
                continue
            self.stopped_by = event
            self.notifier.stopping()
            log.info("service_stopping", reason=event)
            return await self.drain()
        return 0

    async def stop(self, reason: str = "SIGTERM") -> None:
        """Stop as SIGTERM does: stop sources, drain under the deadline, flush; :meth:`serve` then returns."""
        await self._events_send.send(reason)

    async def reload(self) -> bool:
        """Re-read the config file; swap in the new config only if it validates and applies."""
        app = self.app
        assert self.pipeline is not None
        self.notifier.reloading()
        old = app.config
        log.info("reload_started", path=old.path)
        old_graph = app.graph
        try:
            new = Config.load(old.path)
            graph = app.build_graph(new)
            app.apply(graph)
        except (ConfigError, PluginError) as exc:
            self.reloads_rejected += 1
            lines = exc.lines if isinstance(exc, ConfigError) else [str(exc)]
            log.error("reload_rejected", path=old.path, errors=lines)
            self.notifier.ready(self._status_line("reload rejected; running the previous config"))
            return False
        try:  # binding listeners and opening sources is part of applying a config
            await self.pipeline.retire(old_graph)  # old stateful objects flush, their tasks stop
            await self.pipeline.start_graph_tasks()
            await self.pipeline.reload(new)
            await self.metrics.reload(new)
        except Exception as exc:
            reason = describe_failure(exc)
            if reason is None:
                raise
            self.reloads_rejected += 1
            log.error("reload_rejected", path=old.path, errors=[f"cannot apply: {reason}"])
            await self._restore(old)
            self.notifier.ready(self._status_line(f"reload rejected ({reason}); running the previous config"))
            return False
        self.reloads += 1
        log.info("reload_done", path=new.path, reloads=self.reloads)
        self.notifier.ready(self._status_line())
        return True

    async def _restore(self, config: Config) -> None:
        """After a reload that validated but could not apply: run *config* again (its listeners rebind)."""
        assert self.pipeline is not None
        app = self.app
        failed = app.graph
        graph = app.build_graph(config)
        app.apply(graph)
        if failed is not None and failed is not graph:
            await self.pipeline.retire(failed)
        await self.pipeline.start_graph_tasks()
        await self.pipeline.reload(config)
        log.info("reload_restored", path=config.path)

    async def drain(self) -> int:
        assert self.pipeline is not None
        deadline = float(self.app.setting("drain-timeout"))
        ok = await self.pipeline.drain(deadline)
        pipe = self.app.counters["pipeline"]
        log.info("service_stopped", drained=ok, packets=pipe["packets"], batches=pipe["batches"])
        return 0 if ok else 1

    async def _watchdog_task(self, period: float) -> None:
        assert self.pipeline is not None
        last = -1
        while True:
            await trio.sleep(period)
            beats = self.pipeline.beats
            if beats != last:  # the pipeline loop advanced (it beats at least once a second)
                self.notifier.watchdog()
                last = beats
            else:
                log.warning("watchdog_withheld", reason="pipeline heartbeat did not advance")

    def _status_line(self, extra: str = "") -> str:
        n = len(self.pipeline.running) if self.pipeline else 0
        base = f"{n} source(s), profile {self.app.profile.name}"
        return f"{base}; {extra}" if extra else base


#: What a start or reload meets when the box cannot do what the config asks (bind, open an interface or file).
APPLY_ERRORS = (OSError, PluginError, ValueError)


def describe_failure(exc: BaseException) -> str | None:
    """One line for a failure to apply a config (an exception group is searched for its first cause);
    None when *exc* is not such a failure (a bug, which should keep its traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        if not leaves or not all(isinstance(e, APPLY_ERRORS) for e in leaves):
            return None
        exc = leaves[0]
    if not isinstance(exc, APPLY_ERRORS):
        return None
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _leaves(group: BaseExceptionGroup):
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e


class StartFailed(Exception):
    """The service could not start (a listener could not bind, a source could not open); one line."""


def run_service(app: App, *, notifier: Notifier, speed: float = 0.0, exit_on_eof: bool = False,
                after: Callable[[App], None] | None = None) -> int:
    """Blocking entry point for the CLI; :class:`StartFailed` when the config cannot be applied."""
    service = Service(app, notifier=notifier, speed=speed, exit_on_eof=exit_on_eof)
    try:
        code = trio.run(service.serve)
    except BaseException as exc:
        reason = describe_failure(exc)
        if reason is None or service.ready.is_set():
            raise
        raise StartFailed(reason) from None
    if after is not None:
        after(app)
    return code

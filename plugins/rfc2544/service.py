"""The ``services rpm rfc2544-benchmarking`` state: runs by test id, start/stop, results across reloads.

``test services rpm rfc2544-benchmarking test NAME start`` gives the run a new test id and starts it in
the service's nursery: an initiator runs its profile in a worker thread and ends ``completed`` (or
``failed`` with the reason, or ``stopped``); a reflector runs until stopped and logs
``rfc2544_reflector_idle`` when it has seen no test frame ``REFLECTOR_IDLE_WARN`` seconds after it started
(Junos: start the reflector first, or the first frames are lost).  A reload keeps the results and the
test-id counter; runs in flight are stopped with the reason.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict

import structlog
import trio

from flowplane.api import hookimpl, suggest

from .config import BenchmarkingConfig, TestConfig
from .initiator import Initiator, TestRefused
from .reflector import ReflectorEngine

log = structlog.get_logger("flowplane.rfc2544")

PLUGIN_OBJECT = "rfc2544-benchmarking"
REFLECTOR_IDLE_WARN = 10.0
HISTORY = 100  # results kept (oldest dropped first)


class TestRun:
    """One start of a configured test: state, reason, and the engine with its results."""

    __test__ = False

    def __init__(self, test_id: int, cfg: TestConfig) -> None:
        self.id, self.cfg = test_id, cfg
        self.state = "idle"
        self.reason = ""
        self.started = self.ended = 0.0
        self.stop_event = threading.Event()
        self.initiator: Initiator | None = None
        self.reflector: ReflectorEngine | None = None
        self.warning = ""
        self.progress = ""

    @property
    def active(self) -> bool:
        return self.state == "running"

    def summary(self) -> dict:
        cfg = self.cfg
        prof = cfg.profile
        d = {"test_id": self.id, "test_name": cfg.name, "mode": cfg.mode, "family": cfg.family,
             "interface": cfg.interface, "state": self.state, "reason": self.reason, "warning": self.warning,
             "test_type": prof.test_type if prof else None,
             "packet_sizes": list(prof.packet_sizes) if prof else [],
             "started": self.started or None, "ended": self.ended or None,
             "elapsed": round((self.ended or time.time()) - self.started, 1) if self.started else 0.0}
        if self.initiator is not None:
            d["trials"] = self.initiator.trials
            d["results"] = [s.as_dict() for s in self.initiator.sizes]
            d["progress"] = self.progress
        if self.reflector is not None:
            d["reflector"] = self.reflector.status()
        return d

    def detail(self) -> dict:
        d = self.summary()
        cfg, prof = self.cfg, self.cfg.profile
        d["configuration"] = {"source_address": cfg.source_address, "destination_address": cfg.destination_address,
                              "source_udp_port": cfg.source_port, "destination_udp_port": cfg.destination_port,
                              "test_iterator_duration": cfg.trial_seconds,
                              "test_iterator_pass_threshold": cfg.pass_threshold,
                              "test_finish_wait_duration": cfg.wait_seconds, "iteration_count": cfg.iterations}
        if prof is not None:
            d["configuration"].update({"test_profile": prof.name, "bandwidth_kbps": prof.bandwidth_kbps,
                                       "step_percent": prof.step_percent, "test_duration": prof.test_duration,
                                       "resolution_percent": prof.resolution_percent})
        return d


class Rfc2544Service:
    """Registered by ``flowplane_configure`` while the section is configured."""

    def __init__(self, cfg: BenchmarkingConfig) -> None:
        self.cfg = cfg
        self.runs: OrderedDict[int, TestRun] = OrderedDict()
        self.ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    def adopt(self, old: Rfc2544Service) -> None:
        """A reload replaced *old*: keep its results and test ids."""
        self.runs, self.ids = old.runs, old.ids
        for run in self.runs.values():
            if run.active:
                run.stop_event.set()
                run.state, run.reason, run.ended = "stopped", "configuration reloaded", time.time()

    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self.run]

    @hookimpl
    def flowplane_shutdown(self, app):
        for run in self.runs.values():
            if run.active:
                run.stop_event.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(sorted(self.cfg.tests))
                await trio.sleep_forever()
        finally:
            for r in self.runs.values():
                r.stop_event.set()

    # -- requests ----------------------------------------------------------------------------------

    def test(self, name: str) -> TestConfig:
        if name not in self.cfg.tests:
            raise KeyError(f"no test-name {name!r}{suggest(name, self.cfg.tests)}; configured: "
                           f"{', '.join(sorted(self.cfg.tests)) or 'none'}")
        return self.cfg.tests[name]

    def running(self, name: str) -> TestRun | None:
        return next((r for r in self.runs.values() if r.cfg.name == name and r.active), None)

    def start(self, name: str) -> dict:
        cfg = self.test(name)
        if self.running(name) is not None:
            raise ValueError(f"test {name} is already running (test-id {self.running(name).id})")
        if self._nursery is None:
            raise ValueError("the rfc2544-benchmarking service is not running")
        run = TestRun(next(self.ids), cfg)
        self.runs[run.id] = run
        while len(self.runs) > HISTORY:
            self.runs.popitem(last=False)
        run.state, run.started = "running", time.time()
        self._nursery.start_soon(self._reflect if cfg.mode == "reflect" else self._initiate, run)
        log.info("rfc2544_test_started", test=name, test_id=run.id, mode=cfg.mode)
        return {"test_id": run.id, "test_name": name, "state": run.state}

    def stop(self, name: str) -> dict:
        self.test(name)
        run = self.running(name)
        if run is None:
            raise ValueError(f"test {name} is not running")
        run.stop_event.set()
        run.state, run.reason, run.ended = "stopped", "stopped by request", time.time()
        log.info("rfc2544_test_stopped", test=name, test_id=run.id)
        return {"test_id": run.id, "test_name": name, "state": run.state}

    def get(self, test_id: int) -> TestRun:
        if test_id not in self.runs:
            raise KeyError(f"no test-id {test_id}; known: {', '.join(map(str, self.runs)) or 'none'}")
        return self.runs[test_id]

    # -- runs --------------------------------------------------------------------------------------

    def _finish(self, run: TestRun, state: str, reason: str = "") -> None:
        if run.state == "running":  # a stop request already set the state
            run.state, run.reason, run.ended = state, reason, time.time()
        event = {"completed": "rfc2544_test_completed", "failed": "rfc2544_test_failed"}.get(run.state,
                                                                                           "rfc2544_test_stopped")
        (log.warning if run.state == "failed" else log.info)(event, test=run.cfg.name, test_id=run.id,
                                                              reason=run.reason)

    async def _initiate(self, run: TestRun) -> None:
        def progress(text: str) -> None:
            run.progress = text

        run.initiator = Initiator(run.cfg, stop=run.stop_event, progress=progress)
        try:
            await trio.to_thread.run_sync(run.initiator.run, abandon_on_cancel=True)
        except TestRefused as exc:
            self._finish(run, "failed", str(exc))
        except OSError as exc:
            self._finish(run, "failed", f"{exc.strerror or exc}")
        except Exception as exc:  # never take the service down
            self._finish(run, "failed", f"{type(exc).__name__}: {exc}")
        else:
            self._finish(run, "stopped" if run.stop_event.is_set() else "completed",
                         "" if not run.stop_event.is_set() else "stopped")
        finally:
            run.stop_event.set()

    async def _reflect(self, run: TestRun) -> None:
        run.reflector = engine = ReflectorEngine(run.cfg)
        started = threading.Event()

        async def watch() -> None:
            await trio.sleep(REFLECTOR_IDLE_WARN)
            if not engine.received and run.active:
                run.warning = f"no test frames seen in {REFLECTOR_IDLE_WARN:g} s"
                log.warning("rfc2544_reflector_idle", test=run.cfg.name, test_id=run.id,
                            interface=run.cfg.interface, seconds=REFLECTOR_IDLE_WARN, ignored=engine.ignored)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.to_thread.run_sync(engine.run, run.stop_event, started, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()
        except OSError as exc:
            self._finish(run, "failed", f"{exc.strerror or exc}")
        except Exception as exc:
            self._finish(run, "failed", f"{type(exc).__name__}: {exc}")
        else:
            self._finish(run, "stopped", "stopped")
        finally:
            run.stop_event.set()

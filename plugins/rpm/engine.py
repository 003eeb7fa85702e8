"""Running tests: ``probe-count`` probes every ``probe-interval``, then ``test-interval`` until the next test.

:func:`run_test` runs one test of a :class:`TestRunner`: every probe is its own task started at its slot
(test start + n × probe-interval), so a slow answer never delays the next probe; the test ends when the last
probe is answered or timed out.  :class:`TestRunner` loops over tests for the service, holding one token of
the ``probe-limit`` limiter while a test runs.
"""

from __future__ import annotations

import time

import structlog
import trio

from .config import HTTP_TYPES, PORT_TYPES, TestConfig
from .events import ThresholdState
from .probes import Outcome, make_prober
from .results import Collection, TestResults

log = structlog.get_logger("flowplane.rpm")

SOCKET_ERROR_LOG_INTERVAL_S = 60.0


class TestRunner:
    """One configured test: its results, threshold state and counters, and the loop that runs it."""

    __test__ = False  # not a pytest class

    def __init__(self, cfg: TestConfig) -> None:
        self.cfg = cfg
        self.results = TestResults(cfg.history_size, cfg.moving_average_size)
        self.state = ThresholdState(cfg.owner, cfg.name, cfg.target, cfg.thresholds, cfg.traps)
        self.counters: dict[str, int] = {}
        self.seq = 0
        self.running = False
        self.description: dict = {}
        self.last_error = ""
        self._error_logged = 0.0

    def adopt(self, old: TestRunner) -> None:
        """Keep what an unchanged test measured before a reload."""
        self.results = old.results
        self.results.resize(self.cfg.history_size, self.cfg.moving_average_size)
        st = self.state
        st.exceeded, st.counts, st.recent = old.state.exceeded, old.state.counts, old.state.recent
        self.counters, self.seq = old.counters, old.seq

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    async def run(self, limiter: trio.CapacityLimiter | None = None, tests: int = 0, delay: float = 0.0) -> None:
        """Run tests until cancelled (or *tests* of them, when non-zero), the first after *delay* seconds."""
        if delay:
            await trio.sleep(delay)
        done = 0
        while True:
            pause = self.cfg.test_interval
            try:
                if limiter is not None:
                    async with limiter:
                        await run_test(self)
                else:
                    await run_test(self)
            except Exception as exc:  # a fault in one test must not stop the others, nor the appliance
                self.count("test-faults")
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("rpm_test_fault", owner=self.cfg.owner, test=self.cfg.name)
                pause = max(pause, 1.0)
            done += 1
            if tests and done >= tests:
                return
            await trio.sleep(pause)

    def status(self) -> dict:
        c = self.cfg
        return {"owner": c.owner, "test": c.name, "probe_type": c.probe_type, "target": c.target,
                "target_address": c.address, "url": c.url,
                "port": c.port if c.probe_type in PORT_TYPES + HTTP_TYPES else None,
                "source_address": c.source_address, "routing_instance": c.routing_instance,
                "test_size": c.probe_count, "probe_interval": c.probe_interval, "test_interval": c.test_interval,
                "probe_timeout": c.probe_timeout, "history_size": c.history_size,
                "moving_average_size": c.moving_average_size, "running": self.running,
                "hardware_timestamps": False, **self.description, "counters": dict(self.counters),
                "last_error": self.last_error or None, "thresholds": dict(c.thresholds.values),
                "threshold_state": self.state.as_dict(), **self.results.as_dict()}


async def run_test(runner: TestRunner) -> Collection:
    """One test; returns its collection (also kept as the runner's last test)."""
    cfg = runner.cfg
    res = runner.results
    test = res.start_test()
    runner.running = True
    prober = make_prober(cfg, runner.counters)
    try:
        try:
            prober.open()
        except OSError as exc:  # no socket: every probe of the test fails with the reason
            runner.count("socket-errors")
            runner.last_error = str(exc.strerror or exc) if not exc.args[1:] else str(exc.args[1])
            now = time.monotonic()
            if now - runner._error_logged > SOCKET_ERROR_LOG_INTERVAL_S:
                runner._error_logged = now
                log.error("rpm_probe_socket_failed", owner=cfg.owner, test=cfg.name, error=runner.last_error)
            for _ in range(cfg.probe_count):
                t = time.time_ns()
                _finish(runner, test, Outcome(runner.seq, t, t, "error", runner.last_error))
                runner.seq += 1
            return _complete(runner, test)
        runner.description = prober.description
        async with trio.open_nursery() as outer:
            if prober.datagram:
                outer.start_soon(prober.receive)
            async with trio.open_nursery() as probes:
                start = trio.current_time()
                for i in range(cfg.probe_count):
                    await trio.sleep_until(start + i * cfg.probe_interval)
                    probes.start_soon(_one, runner, prober, test, runner.seq)
                    runner.seq += 1
                    runner.count("probes-sent")
            outer.cancel_scope.cancel()
        return _complete(runner, test)
    finally:
        prober.close()
        runner.running = False


async def _one(runner: TestRunner, prober, test: int, seq: int) -> None:
    try:
        outcome = await prober.probe(seq)
    except Exception as exc:  # counted as a failed probe with the reason, never fatal
        runner.count("probe-faults")
        t = time.time_ns()
        outcome = Outcome(seq, t, t, "error", f"internal error: {type(exc).__name__}: {exc}")
        log.exception("rpm_probe_fault", owner=runner.cfg.owner, test=runner.cfg.name, probe=seq)
    _finish(runner, test, outcome)


def _finish(runner: TestRunner, test: int, outcome: Outcome) -> None:
    entry = runner.results.add_probe(test, outcome)
    if outcome.status != "response":
        runner.count(f"probes-{outcome.status}")
    runner.state.probe_done(entry, runner.results.successive_lost, runner.results)


def _complete(runner: TestRunner, test: int) -> Collection:
    done = runner.results.complete_test(time.time_ns())
    runner.state.test_done(test, done)
    return done

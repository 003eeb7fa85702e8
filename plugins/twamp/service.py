"""The configured TWAMP client (``services rpm twamp client``) with Junos semantics.

:class:`TwampClientService` is registered by ``flowplane_configure`` while a client is configured; its
background task runs one :class:`ControlConnectionRunner` per ``control-connection``.  A runner:

* connects (TCP keepalive from ``tcp-keep*``), then runs tests one after the other, each test starting
  ``test-interval`` seconds after the previous one started (absolute deadlines).  A test is, for every
  ``test-session`` at once: Request-TW-Session, Start-Sessions, ``probe-count`` probes every
  ``probe-interval`` seconds, up to ``probe-timeout`` seconds for the last replies, Stop-Sessions;
* stops after ``test-count`` tests (0 = forever);
* auto-restart (Junos 19.1+): with ``test-count 0``, when the connection fails or is refused, or the server
  closes it, or keepalive declares it dead, it tries again every ``test-interval`` until the server answers,
  counting retries.  With a non-zero test-count a failure stops the client (``failed``) until
  ``request services rpm twamp start client NAME``, as Junos does;
* ``persistent-results``: the statistics and history survive reconnections and config changes; without it
  they restart when the connection comes back (and with a new config);
* thresholds: after every test, each configured threshold is compared with the test's value;
  ``twamp_threshold_exceeded`` is logged when one is crossed and ``twamp_threshold_cleared`` when a later
  test is back under it.
"""

from __future__ import annotations

import time

import structlog
import trio

from flowplane.api import hookimpl

from . import wire
from .client import SENDER_TTL, ControlClient, Result, SessionSender, SessionSpec, TwampError
from .config import ClientConfig, ControlConnectionConfig, TestSessionConfig
from .results import SessionResults, stats_of_test, threshold_values
from .udp import open_udp

log = structlog.get_logger("flowplane.twamp")

PLUGIN_OBJECT = "twamp-client"
FAILURE_LOG_INTERVAL_S = 60.0  # repeated connect failures of one outage: one log line a minute


class SessionState:
    """One test session of a control connection: its config, results and the test in flight."""

    def __init__(self, cfg: TestSessionConfig, sizes: tuple[int, int]) -> None:
        self.cfg = cfg
        self.sizes = sizes  # (history-size, moving-average-size)
        self.results = SessionResults(*sizes)
        self.current = None  # client.Result of the test in flight
        self.current_test = 0
        self.reflector_port = 0
        self.threshold_events = 0

    def reset(self) -> None:
        self.results = SessionResults(*self.sizes)
        self.threshold_events = 0

    def adopt(self, old: SessionState) -> None:
        """Carry results over from the object a config change replaced (persistent-results)."""
        self.results = old.results
        self.results.history_size, self.results.moving_average_size = self.sizes
        self.results.__post_init__()  # the ring sizes of the new config
        self.threshold_events = old.threshold_events

    def current_stats(self) -> dict | None:
        r = self.current
        if r is None:
            return None
        d = stats_of_test(list(r.samples), r.sent, r.synced).as_dict()
        d["test"] = self.current_test
        return d


class ControlConnectionRunner:
    """Keeps one ``control-connection`` running: connect, test, reconnect (see the module docstring)."""

    def __init__(self, cfg: ControlConnectionConfig) -> None:
        self.cfg = cfg
        self.sessions = {s.name: SessionState(s, (cfg.history_size, cfg.moving_average_size)) for s in cfg.sessions}
        self.state = "idle"
        self.scope: trio.CancelScope | None = None
        self.running = False
        self.generation = 0
        self.connected = False
        self.connects = 0
        self.retries = 0  # Junos: Number-Of-Retries-With-TWAMP-Server
        self.tests_done = 0
        self.aborted_tests = 0
        self.last_error = ""
        self.connected_since = 0.0
        self.local = ""
        self.server = ""
        self._last_logged = -FAILURE_LOG_INTERVAL_S
        self._last_logged_reason = ""
        self._suppressed = 0

    def _should_log_failure(self, reason: str) -> bool:
        """The first failure of an outage, a new reason, then at most one line a minute (the rest are counted)."""
        now = time.monotonic()
        if reason != self._last_logged_reason or now - self._last_logged >= FAILURE_LOG_INTERVAL_S:
            self._last_logged, self._last_logged_reason = now, reason
            return True
        self._suppressed += 1
        return False

    @property
    def log(self):
        return log.bind(control_connection=self.cfg.name)

    @property
    def active(self) -> bool:
        """Running and not asked to stop (a stopped task may still be closing its connection)."""
        return self.running and self.scope is not None and not self.scope.cancel_called

    def launch(self, nursery: trio.Nursery) -> None:
        """Start a fresh run (``test-count`` tests) in *nursery*; synchronous, so commands can call it."""
        self.generation += 1
        self.scope = trio.CancelScope()
        self.running = True
        nursery.start_soon(self.run, self.scope, self.generation)

    async def run(self, scope: trio.CancelScope, generation: int) -> None:
        cfg = self.cfg
        self.tests_done = 0
        try:
            with scope:
                while True:
                    attempt = trio.current_time()
                    try:
                        if cfg.control_type == "light":
                            await self._light()
                        else:
                            await self._connected()
                        self.state = "completed"
                        self.log.info("twamp_client_completed", tests=self.tests_done)
                        return
                    except Exception as exc:  # any failure: log it, then retry or stop (never crash the service)
                        reason = _describe(exc)
                        self.last_error = reason
                        if self.connected or self.state == "connected":
                            self.log.warning("twamp_client_connection_lost", server=cfg.destination_address,
                                             port=cfg.destination_port, reason=reason, tests=self.tests_done)
                        elif self._should_log_failure(reason):
                            self.log.warning("twamp_client_connect_failed", server=cfg.destination_address,
                                             port=cfg.destination_port, reason=reason, retries=self.retries,
                                             suppressed=self._suppressed)
                            self._suppressed = 0
                        self.connected = False
                    if cfg.test_count != 0:  # Junos: no auto-restart unless test-count is 0
                        self.state = "failed"
                        self.log.warning("twamp_client_stopped", reason="connection failed and test-count is "
                                         f"{cfg.test_count}: start it again with 'request services rpm twamp "
                                         f"start client {cfg.name}'")
                        return
                    self.state = "retrying"
                    self.retries += 1
                    await trio.sleep_until(attempt + cfg.test_interval)
        finally:
            if generation == self.generation:  # not already replaced by a newer start
                self.running = False
                self.connected = False
                for st in self.sessions.values():
                    st.current = None
                if scope.cancelled_caught and self.state not in ("completed", "failed"):
                    self.state = "stopped"

    async def _connected(self) -> None:
        cfg = self.cfg
        self.state = "connecting"
        ctl = await ControlClient.connect(cfg.destination_address, cfg.destination_port, mode=cfg.mode,
                                          key_id=cfg.key_id, secret=cfg.secret, source=cfg.source_address,
                                          keepalive=cfg.keepalive, timeout=max(5.0, cfg.test_interval))
        try:
            self.connects += 1
            self.connected, self.state = True, "connected"
            self.connected_since = time.time()
            self._last_logged_reason = ""
            self.local, self.server = ctl.local, ctl.server
            self.log.info("twamp_client_connected", server=ctl.server, port=cfg.destination_port,
                          local=ctl.local, mode=wire.MODE_NAMES.get(cfg.mode, str(cfg.mode)), retries=self.retries)
            if self.connects > 1 and not cfg.persistent_results:  # the network is back: results start over
                for st in self.sessions.values():
                    st.reset()
            next_start = trio.current_time()
            while cfg.test_count == 0 or self.tests_done < cfg.test_count:
                await self._one_test(ctl)
                self.tests_done += 1
                if cfg.test_count and self.tests_done >= cfg.test_count:
                    break
                next_start = max(next_start + cfg.test_interval, trio.current_time())
                await self._watched(ctl, trio.sleep_until, next_start)
            self.connected = False
        finally:
            self.connected = False
            await ctl.aclose()

    async def _light(self) -> None:
        """control-type light: every test sends each session's probes straight to target:destination-port."""
        cfg = self.cfg
        self.state = "light"
        self.local, self.server = cfg.source_address or "", cfg.destination_address
        next_start = trio.current_time()
        while cfg.test_count == 0 or self.tests_done < cfg.test_count:
            test_no = self.tests_done + 1
            started = []
            try:
                for st in self.sessions.values():
                    c = st.cfg
                    bind = cfg.source_address or ("::" if ":" in c.target_address else "0.0.0.0")
                    sock = open_udp(bind, 0, ttl=SENDER_TTL, tos=c.dscp << 2)
                    sender = SessionSender(sock, (c.target_address, cfg.destination_port), False, None, c.data_size,
                                           Result(c.target_address, cfg.destination_port, cfg.destination_port,
                                                  "light", 0))
                    st.current, st.current_test, st.reflector_port = sender.result, test_no, cfg.destination_port
                    started.append((st, sender))
                async with trio.open_nursery() as nursery:
                    for st, sender in started:
                        nursery.start_soon(sender.run, st.cfg.probe_count, st.cfg.probe_interval, st.cfg.probe_timeout)
            finally:
                for st, sender in started:
                    sender.sock.close()
                    st.current = None
            self._completed(started, test_no)
            self.tests_done += 1
            if cfg.test_count and self.tests_done >= cfg.test_count:
                break
            next_start = max(next_start + cfg.test_interval, trio.current_time())
            await trio.sleep_until(next_start)

    def _completed(self, started: list, test_no: int) -> None:
        for st, sender in started:
            r = sender.result
            last = st.results.complete(test_no, r.samples, r.sent, r.synced)
            st.current = None
            self._thresholds(st, last, test_no)
        self.log.debug("twamp_client_test_done", test=test_no,
                       sessions={st.cfg.name: {"sent": st.results.last_test["sent"],
                                               "received": st.results.last_test["received"]}
                                 for st, _ in started})

    async def _one_test(self, ctl: ControlClient) -> None:
        test_no = self.tests_done + 1
        timeout = max(5.0, self.cfg.test_interval)
        started = []
        try:
            for st in self.sessions.values():
                c = st.cfg
                sender = await ctl.request(SessionSpec(c.probe_count, c.probe_interval, c.data_size, c.dscp,
                                                       c.probe_timeout, c.target_address), timeout)
                st.current, st.current_test, st.reflector_port = sender.result, test_no, sender.dest[1]
                started.append((st, sender))
            await ctl.start(timeout)

            async def send_all() -> None:
                async with trio.open_nursery() as nursery:
                    for st, sender in started:
                        nursery.start_soon(sender.run, st.cfg.probe_count, st.cfg.probe_interval,
                                           st.cfg.probe_timeout)

            await self._watched(ctl, send_all)
            with trio.fail_after(timeout):
                await ctl.stop()
        except BaseException:
            if started:
                self.aborted_tests += 1
            for st, _ in started:
                st.current = None
            raise
        self._completed(started, test_no)

    async def _watched(self, ctl: ControlClient, fn, *args) -> None:
        """Run ``fn(*args)`` while reading the control connection; a lost connection cancels it and raises."""
        lost: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            async def watcher() -> None:
                try:
                    await ctl.watch()
                except Exception as exc:
                    lost.append(exc)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watcher)
            await fn(*args)
            nursery.cancel_scope.cancel()
        if lost:
            raise lost[0]

    def _thresholds(self, st: SessionState, last: dict, test_no: int) -> None:
        values = threshold_values(last)
        for name, limit in st.cfg.thresholds.items():
            value = values[name]
            if value is None:  # no replies: delay and jitter thresholds cannot be judged (loss ones can)
                continue
            over = value > limit
            fields = dict(test_session=st.cfg.name, threshold=name, value=value, limit=limit, test=test_no)
            if over and name not in st.results.exceeded:
                st.results.exceeded.add(name)
                st.threshold_events += 1
                self.log.warning("twamp_threshold_exceeded", **fields)
            elif not over and name in st.results.exceeded:
                st.results.exceeded.discard(name)
                st.threshold_events += 1
                self.log.info("twamp_threshold_cleared", **fields)

    def status(self) -> dict:
        cfg = self.cfg
        return {"name": cfg.name, "control_type": cfg.control_type, "server": cfg.destination_address,
                "port": cfg.destination_port,
                "local": self.local or cfg.source_address or "", "mode": wire.MODE_NAMES.get(cfg.mode, str(cfg.mode)),
                "state": self.state, "connected": self.connected,
                "connected_seconds": round(time.time() - self.connected_since, 1) if self.connected else 0.0,
                "tests_done": self.tests_done, "test_count": cfg.test_count, "test_interval": cfg.test_interval,
                "connects": self.connects, "retries": self.retries, "aborted_tests": self.aborted_tests,
                "last_error": self.last_error, "persistent_results": cfg.persistent_results,
                "keepalive": {"idle": cfg.keepalive.idle, "interval": cfg.keepalive.interval,
                              "count": cfg.keepalive.count},
                "sessions": [{"name": st.cfg.name, "target": st.cfg.target_address, "reflector_port": st.reflector_port,
                              "current_test": st.current_test if st.current is not None else None,
                              "probes_sent": st.current.sent if st.current is not None else 0,
                              "tests": st.results.all_tests.tests,
                              "thresholds_exceeded": sorted(st.results.exceeded)}
                             for st in self.sessions.values()]}

    def probe_results(self, session: str | None = None, history: bool = False) -> list[dict]:
        out = []
        for st in self.sessions.values():
            if session is not None and st.cfg.name != session:
                continue
            d = {"control_connection": self.cfg.name, "test_session": st.cfg.name,
                 "server": self.cfg.destination_address,
                 "port": self.cfg.destination_port, "client": self.local, "target": st.cfg.target_address,
                 "reflector_port": st.reflector_port, "data_size": st.cfg.data_size, "dscp": st.cfg.dscp,
                 "probe_count": st.cfg.probe_count, "probe_interval": st.cfg.probe_interval,
                 "state": self.state, "current_test": st.current_stats(), "last_test": st.results.last_test,
                 "all_tests": st.results.all_tests.as_dict(),
                 "thresholds": dict(st.cfg.thresholds.items()), "thresholds_exceeded": sorted(st.results.exceeded),
                 "threshold_events": st.threshold_events, "history_size": self.cfg.history_size,
                 "moving_average_us": st.results.moving_average()}
            if history:
                d["history"] = list(st.results.history)
            out.append(d)
        return out


def _describe(exc: BaseException) -> str:
    """A one-line reason, looking inside exception groups and through ``raise ... from``."""
    def unwrap(e: BaseException) -> BaseException:
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        return e

    exc = unwrap(exc)
    if isinstance(exc, TwampError):  # already worded for the operator
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return "timed out waiting for the server"
    root = exc
    while root.__cause__ is not None:
        root = unwrap(root.__cause__)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
    if root is not exc and isinstance(root, OSError) and root.strerror:
        return root.strerror if isinstance(exc, trio.BrokenResourceError) else f"{root.strerror} ({text})"
    return text


class TwampClientService:
    """The ``services rpm twamp client`` state: one runner per control connection, start/stop, results."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self.runners = {c.name: ControlConnectionRunner(c) for c in cfg.connections}
        self._nursery: trio.Nursery | None = None

    def adopt(self, old: TwampClientService) -> None:
        """A config change replaced *old*: keep the results of connections that ask for persistent-results."""
        for name, runner in self.runners.items():
            prev = old.runners.get(name)
            if prev is None or not runner.cfg.persistent_results:
                continue
            runner.retries = prev.retries
            for sname, st in runner.sessions.items():
                if sname in prev.sessions:
                    st.adopt(prev.sessions[sname])

    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self.run]

    @hookimpl
    def flowplane_shutdown(self, app):
        for runner in self.runners.values():
            if runner.scope is not None:
                runner.scope.cancel()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for runner in self.runners.values():
                runner.launch(nursery)
            task_status.started([r.cfg.name for r in self.runners.values()])
            await trio.sleep_forever()

    def runner(self, name: str) -> ControlConnectionRunner:
        from flowplane.api import suggest

        if name not in self.runners:
            raise KeyError(f"no control-connection {name!r}{suggest(name, self.runners)}; configured: "
                           f"{', '.join(self.runners) or 'none'}")
        return self.runners[name]

    def start(self, name: str) -> dict:
        runner = self.runner(name)
        if runner.active:
            raise ValueError(f"control-connection {name} is already running ({runner.state})")
        if self._nursery is None:
            raise ValueError("the TWAMP client service is not running")
        runner.state = "starting"
        runner.launch(self._nursery)
        log.info("twamp_client_started", control_connection=name)
        return {"control_connection": name, "state": "starting"}

    def stop(self, name: str) -> dict:
        runner = self.runner(name)
        if not runner.active:
            raise ValueError(f"control-connection {name} is not running ({runner.state})")
        runner.scope.cancel()
        runner.state = "stopped"
        log.info("twamp_client_stopped", control_connection=name, reason="request")
        return {"control_connection": name, "state": "stopped"}

    def status(self) -> dict:
        return {"control_connections": [r.status() for r in self.runners.values()]}

    def probe_results(self, connection: str | None = None, session: str | None = None,
                      history: bool = False) -> dict:
        runners = [self.runner(connection)] if connection is not None else list(self.runners.values())
        out = []
        for r in runners:
            if session is not None and session not in r.sessions:
                if connection is not None:
                    from flowplane.api import suggest

                    raise KeyError(f"no test-session {session!r} in control-connection {r.cfg.name}"
                                   f"{suggest(session, r.sessions)}")
                continue
            out += r.probe_results(session, history)
        if session is not None and not out:
            raise KeyError(f"no test-session {session!r} in any control-connection")
        return {"results": out}

"""The configured RPM probes and probe servers (``services rpm probe | probe-server | probe-limit``).

:class:`RpmService` is registered by ``flowplane_configure`` while any of them is configured.  Its background
task runs one :class:`~.engine.TestRunner` per test (at most ``probe-limit`` tests at a time; the first tests
start spread over up to a second so that many tests do not send in one burst) and one
:class:`~.server.ProbeServer` per ``probe-server`` protocol.  On a reload, a test whose configuration is
that still measures the same thing (type, target, source, payload, DSCP) keeps its results, history and
threshold state; thresholds, intervals and sizes may change.
"""

from __future__ import annotations

import trio

from flowplane.api import hookimpl, suggest

from .config import RpmConfig
from .engine import TestRunner
from .server import ProbeServer

PLUGIN_OBJECT = "rpm-probes"


class RpmService:
    def __init__(self, cfg: RpmConfig) -> None:
        self.cfg = cfg
        self.runners = {t.key: TestRunner(t) for t in cfg.tests}
        self.servers = [ProbeServer(s) for s in cfg.servers]
        self.limiter: trio.CapacityLimiter | None = None

    def adopt(self, old: RpmService) -> None:
        for key, runner in self.runners.items():
            prev = old.runners.get(key)
            if prev is not None and prev.cfg.identity == runner.cfg.identity:
                runner.adopt(prev)

    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self.run]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.limiter = trio.CapacityLimiter(self.cfg.probe_limit)
        async with trio.open_nursery() as nursery:
            bound = [await nursery.start(s.run) for s in self.servers]
            n = len(self.runners)
            for i, runner in enumerate(self.runners.values()):  # first tests spread out: no burst at start
                spread = min(1.0, runner.cfg.probe_interval) * i / n
                nursery.start_soon(runner.run, self.limiter, 0, spread)
            task_status.started(bound)

    # -- show -------------------------------------------------------------------------------------------------
    def select(self, owner: str | None = None, test: str | None = None) -> list[TestRunner]:
        out = [r for (o, t), r in self.runners.items() if (owner is None or o == owner) and (test is None or t == test)]
        if not out and (owner is not None or test is not None):
            owners = sorted({o for o, _ in self.runners})
            if owner is not None and owner not in owners:
                raise KeyError(f"no probe owner {owner!r}{suggest(owner, owners)}; "
                               f"configured: {', '.join(owners) or 'none'}")
            tests = sorted({t for o, t in self.runners if owner is None or o == owner})
            raise KeyError(f"no test {test!r}{suggest(str(test), tests)}"
                           + (f" of owner {owner}" if owner else "") + f"; configured: {', '.join(tests) or 'none'}")
        return out

    def probe_results(self, owner: str | None = None, test: str | None = None) -> dict:
        return {"probe_limit": self.cfg.probe_limit, "tests": [r.status() for r in self.select(owner, test)]}

    def history(self, owner: str | None = None, test: str | None = None, since: int = 0) -> dict:
        """The kept probes of the selected tests; *since* (ns since the epoch): those received from then on."""
        return {"tests": [{"owner": r.cfg.owner, "test": r.cfg.name, "target": r.cfg.target,
                           "probe_type": r.cfg.probe_type,
                           "probes": [e.as_dict() for e in r.results.history if e.received >= since]}
                          for r in self.select(owner, test)]}

    def active_servers(self) -> dict:
        return {"servers": [s.status() for s in self.servers]}

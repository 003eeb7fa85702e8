"""The plugin manager (one per App, never module-global) and compiled batch hooks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
import structlog

from . import ENTRYPOINT_GROUP, PROJECT, hookspecs
from .errors import PluginError
from .stats import Counters

DISABLED_ENV = "FLOWPLANE_DISABLED_PLUGINS"

#: The built-in plugins, by entry-point name.  They are *loaded* through the
#: ``flowplane.plugins`` entry points like any third-party distribution; this
#: tuple only lets a test check pyproject.toml and lets `plugins` mark them.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "generic-linux",
    "mx-mpc",
    "ptx-evo",
    "pcap",
    "af-packet",
    "core-commands",
    "flow-monitoring",
    "v5",
    "v8",
    "v9",
    "ipfix",
    "udp",
    "tcp",
    "collector",
    "twamp",
    "inline-monitoring",
    "port-mirroring",
    "flow-capture",
    "rfc2544",
    "video-monitoring",
    "nat-logging",
    "rpm",
)


def blocked_from_env(environ: dict | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [n.strip() for n in env.get(DISABLED_ENV, "").split(",") if n.strip()]


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    plugins: Iterable[tuple[object, str]] = (),
) -> pluggy.PluginManager:
    """A fresh plugin manager: hookspecs, entry-point plugins, extra plugins.

    :param load_entrypoints: load every ``flowplane.plugins`` entry point
        (built-ins included).
    :param blocked: plugin names never to load (config ``system plugins
        disable`` plus ``FLOWPLANE_DISABLED_PLUGINS``).
    :param plugins: extra ``(plugin, name)`` pairs, e.g. from tests.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        _load_entrypoints(pm)
    for plugin, name in plugins:
        if pm.is_blocked(name) or pm.get_plugin(name) is plugin:
            continue  # blocked, or the same module already loaded through its entry point
        pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    """Import and register every ``flowplane.plugins`` entry point not blocked.

    One by one (not pluggy's ``load_setuptools_entrypoints``) so that a
    plugin that fails to import is named with its distribution.
    """
    seen: set[str] = set()
    # kept on the manager itself: no module-level state
    versions = pm.flowplane_versions = {}  # type: ignore[attr-defined]
    dists = pm.flowplane_dists = {}  # type: ignore[attr-defined]
    for ep in sorted(metadata.entry_points(group=ENTRYPOINT_GROUP), key=lambda e: e.name):
        if ep.name in seen or pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist else "?"
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} (distribution {dist!r}, {ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}; "
                              f"block it with FLOWPLANE_DISABLED_PLUGINS={ep.name}") from exc
        pm.register(plugin, name=ep.name)
        versions[ep.name] = ep.dist.version if ep.dist else "?"
        dists[ep.name] = dist


def plugin_versions(pm: pluggy.PluginManager) -> dict[str, str]:
    """``plugin name -> distribution version`` for entry-point plugins."""
    return dict(getattr(pm, "flowplane_versions", {}))


def plugin_dists(pm: pluggy.PluginManager) -> dict[str, str]:
    """``plugin name -> distribution name`` for entry-point plugins."""
    return dict(getattr(pm, "flowplane_dists", {}))


def call_each(pm: pluggy.PluginManager, hook: str, *, before: Callable[[str], None] | None = None,
              **kwargs: Any) -> list[tuple[str, Any]]:
    """Call a rare hook implementation by implementation, in pluggy's order.

    Returns ``(plugin_name, result)`` pairs.  An exception is re-raised as a
    :class:`PluginError` naming the plugin (start-up or reload fails).
    *before*, if given, is called with each plugin's name before its implementation runs.
    """
    out = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        args = {a: kwargs[a] for a in impl.argnames}
        if before is not None:
            before(impl.plugin_name)
        try:
            out.append((impl.plugin_name, impl.function(**args)))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc
    return out


#: Consecutive failures after which a batch hook implementation or a term-action handler is disabled.
MAX_CONSECUTIVE_FAILURES = 100


@dataclass(slots=True)
class Guarded:
    """One data-path callable of one plugin, with its failure record.

    A failure is counted under *counter* in the owner's :class:`Counters`, logged as ``plugin_failed``
    for the first failure of a burst (then every 1000th: never a line per batch), and after
    ``max_consecutive`` failures in a row the callable is disabled (``plugin_disabled``).  A success
    ends the burst.  A reload compiles fresh, enabled callables.
    """

    plugin: str
    fn: Callable
    argnames: tuple[str, ...] = ()
    consecutive: int = 0
    failures: int = 0
    disabled: bool = False

    def failed(self, exc: Exception, *, counters: Counters, counter: str, log: Any, max_consecutive: int,
               **context: str) -> None:
        self.failures += 1
        self.consecutive += 1
        counters.inc(counter)
        if self.consecutive == 1 or self.failures % 1000 == 0:
            log.error("plugin_failed", plugin=self.plugin, **context, error=f"{type(exc).__name__}: {exc}",
                      failures=self.failures, exc_info=self.consecutive == 1)
        if self.consecutive >= max_consecutive:
            self.disabled = True
            log.error("plugin_disabled", plugin=self.plugin, **context, consecutive_failures=self.consecutive)

    def status(self) -> dict:
        return {"plugin": self.plugin, "failures": self.failures, "disabled": self.disabled}


@dataclass
class BatchHook:
    """A data-plane hook compiled to a list of guarded calls.

    Order is pluggy's call order (``reversed(get_hookimpls())``).  Each
    implementation runs in its own ``try`` (:class:`Guarded`): a failure is
    counted (``plugin_errors.PLUGIN`` in *counters*), logged once per failure
    burst as ``plugin_failed``, and after ``max_consecutive`` failures in a
    row the implementation is disabled (``plugin_disabled``).
    """

    name: str
    impls: list[Guarded]
    counters: Counters
    max_consecutive: int = MAX_CONSECUTIVE_FAILURES
    log: Any = field(default=None)

    @classmethod
    def compile(cls, pm: pluggy.PluginManager, name: str, counters: Counters, *,
                max_consecutive: int = MAX_CONSECUTIVE_FAILURES) -> BatchHook:
        caller = getattr(pm.hook, name)
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {impl.plugin_name!r}: {name} is a batch hook and cannot be a wrapper")
            impls.append(Guarded(impl.plugin_name, impl.function, tuple(impl.argnames)))
        return cls(name, impls, counters, max_consecutive, structlog.get_logger("flowplane.plugins"))

    @property
    def order(self) -> list[str]:
        return [i.plugin for i in self.impls]

    def __call__(self, **kwargs: Any) -> None:
        for impl in self.impls:
            if impl.disabled:
                continue
            try:
                impl.fn(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:
                impl.failed(exc, counters=self.counters, counter=f"plugin_errors.{impl.plugin}", log=self.log,
                            max_consecutive=self.max_consecutive, hook=self.name)
            else:
                impl.consecutive = 0

    def status(self) -> list[dict]:
        return [i.status() for i in self.impls]


@dataclass
class ActionHandler:
    """A term-action handler bound with ``app.bind_action``, guarded like a batch hook implementation.

    A failure is counted (``action_errors.ACTION`` in *counters*), logged once per burst as
    ``plugin_failed`` with the action and plugin, and after ``max_consecutive`` failures in a row the
    handler is disabled (``plugin_disabled``); the data path then counts what terms send to the action
    as dropped (``action`` stage, reason ``disabled:ACTION``).
    """

    action: str
    guarded: Guarded
    counters: Counters
    max_consecutive: int = MAX_CONSECUTIVE_FAILURES
    log: Any = field(default_factory=lambda: structlog.get_logger("flowplane.plugins"))

    @property
    def disabled(self) -> bool:
        return self.guarded.disabled

    @property
    def plugin(self) -> str:
        return self.guarded.plugin

    def __call__(self, selections: list) -> None:
        g = self.guarded
        try:
            g.fn(selections)
        except Exception as exc:  # one failing handler never stops the pipeline
            g.failed(exc, counters=self.counters, counter=f"action_errors.{self.action}", log=self.log,
                     max_consecutive=self.max_consecutive, action=self.action)
        else:
            g.consecutive = 0

    def status(self) -> dict:
        return {"action": self.action, **self.guarded.status()}


def monotonic_ns() -> int:
    return time.monotonic_ns()

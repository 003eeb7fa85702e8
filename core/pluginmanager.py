"""The plugin manager (one per App, never module-global) and compiled batch hooks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

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
    # historic: every plugin registered from now on gets to add its own hookspecs
    pm.hook.flowplane_addhooks.call_historic(kwargs=dict(pluginmanager=pm))
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
                              f"{type(exc).__name__}: {exc}; block it with FLOWPLANE_DISABLED_PLUGINS={ep.name}") from exc
        pm.register(plugin, name=ep.name)
        versions[ep.name] = ep.dist.version if ep.dist else "?"
        dists[ep.name] = dist


def plugin_versions(pm: pluggy.PluginManager) -> dict[str, str]:
    """``plugin name -> distribution version`` for entry-point plugins."""
    return dict(getattr(pm, "flowplane_versions", {}))


def plugin_dists(pm: pluggy.PluginManager) -> dict[str, str]:
    """``plugin name -> distribution name`` for entry-point plugins."""
    return dict(getattr(pm, "flowplane_dists", {}))


def entrypoint_names(group: str = ENTRYPOINT_GROUP, dist: str | None = None) -> list[str]:
    eps = metadata.entry_points(group=group)
    return sorted(ep.name for ep in eps if dist is None or (ep.dist and ep.dist.name == dist))


def call_each(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call a rare hook implementation by implementation, in pluggy's order.

    Returns ``(plugin_name, result)`` pairs.  An exception is re-raised as a
    :class:`PluginError` naming the plugin (start-up or reload fails).
    """
    out = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        args = {a: kwargs[a] for a in impl.argnames}
        try:
            out.append((impl.plugin_name, impl.function(**args)))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc
    return out


@dataclass(slots=True)
class _Impl:
    plugin: str
    fn: Callable
    argnames: tuple[str, ...]
    consecutive: int = 0
    failures: int = 0
    disabled: bool = False


@dataclass
class BatchHook:
    """A data-plane hook compiled to a list of guarded calls.

    Order is pluggy's call order (``reversed(get_hookimpls())``).  Each
    implementation runs in its own ``try``: a failure is counted
    (``plugin_errors`` in *counters*), logged once per failure burst as
    ``plugin_failed``, and after ``max_consecutive`` failures in a row the
    implementation is disabled (``plugin_disabled``).
    """

    name: str
    impls: list[_Impl]
    counters: Counters
    max_consecutive: int = 100
    log: Any = field(default=None)

    @classmethod
    def compile(cls, pm: pluggy.PluginManager, name: str, counters: Counters, *, max_consecutive: int = 100) -> "BatchHook":
        caller = getattr(pm.hook, name)
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {impl.plugin_name!r}: {name} is a batch hook and cannot be a wrapper")
            impls.append(_Impl(impl.plugin_name, impl.function, tuple(impl.argnames)))
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
                self._failed(impl, exc)
            else:
                impl.consecutive = 0

    def _failed(self, impl: _Impl, exc: Exception) -> None:
        impl.failures += 1
        impl.consecutive += 1
        self.counters.inc(f"plugin_errors.{impl.plugin}")
        # one line for the first failure of a burst, then every 1000th: never a line per batch
        if impl.consecutive == 1 or impl.failures % 1000 == 0:
            self.log.error("plugin_failed", plugin=impl.plugin, hook=self.name, error=f"{type(exc).__name__}: {exc}",
                           failures=impl.failures, exc_info=impl.consecutive == 1)
        if impl.consecutive >= self.max_consecutive:
            impl.disabled = True
            self.log.error("plugin_disabled", plugin=impl.plugin, hook=self.name, consecutive_failures=impl.consecutive)

    def status(self) -> list[dict]:
        return [{"plugin": i.plugin, "failures": i.failures, "disabled": i.disabled} for i in self.impls]


def monotonic_ns() -> int:
    return time.monotonic_ns()

"""The application object: config, plugin manager, registries, and the current data-path state.

``App`` is wiring: it builds the plugin manager (no module-level global), collects every plugin's
registrations, and applies a config: :mod:`flowplane.validate` checks it, :mod:`flowplane.graph`
compiles it into a :class:`Graph`, plugins configure their features, and :mod:`flowplane.datapath`
runs each batch through it.  A reload builds a new Graph and swaps it in only if everything validated,
compiled and configured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import pluggy

from . import __version__
from .actions import CORE_ACTIONS
from .batch import ActionSelection, PacketBatch
from .config import Config
from .datapath import process as process_batch
from .errors import ConfigError, PluginError
from .graph import Graph, compile_batch_hooks, compile_graph, hook_status
from .interfaces import InterfaceTable
from .pluginmanager import ActionHandler, Guarded, blocked_from_env, call_each, make_plugin_manager, plugin_versions
from .profiles import HardwareProfile, Limits
from .registries import Registries
from .sources import interface_source
from .stats import Counters
from .validate import claimed_family_keys, validate_config

T = TypeVar("T")

__all__ = ["App", "Graph", "Registries", "DEFAULTS"]

DEFAULTS = {
    "batch-size": 256,
    "ingest-queue": 64,
    "control-socket": "/run/flowplane/control.sock",
    "control-socket-mode": "0660",
    "drain-timeout": 30.0,  # systemd TimeoutStopSec=45s leaves a margin
}


class App:
    """flowplane's application: create with :meth:`App.create`."""

    def __init__(self, config: Config, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.config = config
        self.registries = Registries()
        self.interfaces = InterfaceTable()
        self.counters = {"pipeline": Counters("pipeline"), "plugins": Counters("plugins")}
        self.decode_counts: dict[int, np.ndarray] = {}
        self.started_at = time.time()
        self.graph: Graph | None = None
        self.sources: dict[str, Any] = {}  # interface name -> running Source (filled by the pipeline)
        self.pipeline: Any = None  # the running flowplane.pipeline.Pipeline, if any
        self.previous_graph: Graph | None = None  # during a reload's configure: the graph being replaced
        self._configuring_plugin: str | None = None  # the plugin whose flowplane_configure is running
        self._collect_registrations()

    # -- construction -------------------------------------------------------
    @classmethod
    def create(
        cls,
        config: Config,
        *,
        load_entrypoints: bool = True,
        plugins: Iterable[tuple[object, str]] = (),
        environ: dict | None = None,
    ) -> App:
        """Build the plugin manager (blocking config- and env-disabled plugins) and the registries."""
        blocked = list(config.get("system", "plugins", "disable", default=[]) or [])
        blocked += blocked_from_env(environ)
        pm = make_plugin_manager(load_entrypoints=load_entrypoints, blocked=[str(b) for b in blocked], plugins=plugins)
        return cls(config, pm)

    def _collect_registrations(self) -> None:
        for action in CORE_ACTIONS:
            self.registries.actions.current_plugin = "flowplane"
            self.registries.actions.register(action.name, action)
        for hook, reg in (
            ("flowplane_register_profiles", self.registries.profiles),
            ("flowplane_register_sources", self.registries.sources),
            ("flowplane_register_encoders", self.registries.encoders),
            ("flowplane_register_transports", self.registries.transports),
            ("flowplane_register_actions", self.registries.actions),
            ("flowplane_register_control_commands", self.registries.commands),
            ("flowplane_register_limits", self.registries.limits),
            ("flowplane_register_capabilities", self.registries.capabilities),
            ("flowplane_register_config_sections", self.registries.sections),  # a claim may declare both
        ):
            for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
                reg.current_plugin = impl.plugin_name
                try:
                    impl.function(**{a: reg for a in impl.argnames})
                except Exception as exc:
                    raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: {exc}") from exc
            reg.current_plugin = "?"
        partial = any(p is None for _, p in self.pm.list_name_plugin())  # a disabled plugin declares nothing
        errors = self.registries.check_profiles(partial=partial)
        if errors:
            raise PluginError("; ".join(errors))

    # -- properties ----------------------------------------------------------
    def setting(self, key: str, config: Config | None = None) -> Any:
        cfg = config or self.config
        return cfg.get("system", key, default=DEFAULTS.get(key))

    def profile_for(self, config: Config) -> HardwareProfile | None:
        return self.registries.profile_for(config)

    @property
    def profile(self) -> HardwareProfile:
        assert self.graph is not None
        return self.graph.profile

    @property
    def limits(self) -> Limits:
        """The active hardware profile's limits (every declared field)."""
        assert self.graph is not None
        return self.graph.limits

    # -- validation ----------------------------------------------------------
    def validate(self, config: Config | None = None) -> list[str]:
        """Every problem in *config* (default: the current one), formatted with file:line:col."""
        return validate_config(config or self.config, self.registries, self.pm)

    # -- building the data-path state ---------------------------------------
    def build_graph(self, config: Config) -> Graph:
        """Validate and compile *config* into a Graph (does not run plugin configure)."""
        errors = self.validate(config)
        if errors:
            raise ConfigError(errors)
        profile = self.profile_for(config)
        assert profile is not None
        return compile_graph(config, profile, self.registries.limits_of(profile), self.registries.actions,
                             self.interfaces)

    def apply(self, graph: Graph) -> None:
        """Run plugin configure for *graph*, compile batch hooks, and make it current."""
        old = self.graph
        if old is not None:
            for obj in old.configured:
                if self.pm.is_registered(obj):
                    self.pm.unregister(obj)
        before = set(map(id, self.pm.get_plugins()))
        self.previous_graph = old  # configure may carry state over from old.configured objects
        self.config = graph.config
        self.graph = graph
        try:
            call_each(self.pm, "flowplane_configure", app=self, before=self._configuring)
        except Exception:
            for obj in self.pm.get_plugins():
                if id(obj) not in before:
                    self.pm.unregister(obj)
            self.graph, self.config = old, old.config if old else graph.config
            if old is not None:
                for obj in old.configured:
                    self.pm.register(obj)
            raise
        finally:
            self._configuring_plugin = None
        graph.configured = [p for p in self.pm.get_plugins() if id(p) not in before]
        if old is not None:  # Junos keeps the counters of filters that did not change
            graph.firewall.adopt_counters(old.firewall)
        compile_batch_hooks(graph, self.pm, self.counters["plugins"])

    def configure(self) -> None:
        """Validate, compile and apply the current config (start-up)."""
        self.apply(self.build_graph(self.config))

    def _configuring(self, plugin: str) -> None:
        self._configuring_plugin = plugin

    def bind_action(self, name: str, handler: Callable[[list[ActionSelection]], None]) -> None:
        """Route batches that terms send to action *name* to *handler* (call from flowplane_configure).

        The handler runs guarded: a failure is counted (``action_errors.NAME``), logged once per burst
        (``plugin_failed``), and after repeated consecutive failures the handler is disabled until the
        next reload; the other actions and plugins keep running.
        """
        if name not in self.registries.actions:
            raise PluginError(f"bind_action: no term action {name!r} is registered")
        assert self.graph is not None
        plugin = self._configuring_plugin or self.registries.actions.owner(name)
        self.graph.action_handlers[name] = handler
        self.graph.guarded_actions[name] = ActionHandler(name, Guarded(plugin, handler), self.counters["plugins"])

    def previous(self, cls: type[T]) -> T | None:
        """During a reload's ``flowplane_configure``: the replaced graph's configured object of type
        *cls* (whose state the new one may take over), else None."""
        if self.previous_graph is None:
            return None
        return next((o for o in self.previous_graph.configured if isinstance(o, cls)), None)

    def register_configured(self, obj: object, name: str) -> None:
        """Register a feature's stateful object from ``flowplane_configure``; during a reload it first
        takes over the state of the object of its class it replaces (``obj.adopt(previous)``)."""
        old = self.previous(type(obj))
        if old is not None:
            obj.adopt(old)  # type: ignore[attr-defined]
        self.pm.register(obj, name=name)

    # -- the per-batch data path ---------------------------------------------
    def process(self, batch: PacketBatch) -> None:
        """Decode, filter, route actions and run feature plugins on one batch (sync)."""
        process_batch(self, batch)

    # -- introspection --------------------------------------------------------
    def plugin_table(self) -> list[dict]:
        """What ``flowplane plugins`` prints: every plugin, version, hooks and registrations."""
        versions = plugin_versions(self.pm)
        failures = self._failures()
        rows = []
        for plugin in self.pm.get_plugins():
            name = self.pm.get_name(plugin) or "?"
            hooks = sorted(h.name for h in (self.pm.get_hookcallers(plugin) or []))
            regs = {kind: reg.by_owner(name) for kind, reg in self.registries.all().items()}
            rows.append({
                "name": name,
                "version": versions.get(name, __version__ if name.startswith("flowplane") else "-"),
                "module": getattr(plugin, "__name__", type(plugin).__name__),
                "hooks": hooks,
                "registered": {k: v for k, v in regs.items() if v},
                "failures": failures.get(name, {}),
            })
        core_regs = {kind: reg.by_owner("flowplane") for kind, reg in self.registries.all().items()}
        rows.append({"name": "flowplane", "version": __version__, "module": "flowplane (core)", "hooks": [],
                     "registered": {k: v for k, v in core_regs.items() if v}})
        blocked = [n for n, p in self.pm.list_name_plugin() if p is None]
        for name in blocked:
            rows.append({"name": name, "version": "-", "module": "-", "hooks": [], "registered": {}, "blocked": True})
        return sorted(rows, key=lambda r: r["name"])

    def _failures(self) -> dict[str, dict[str, dict]]:
        """``plugin -> {hook or "action NAME": {failures, disabled}}`` of the data-path callables that failed."""
        out: dict[str, dict[str, dict]] = {}
        if self.graph is None:
            return out
        for name, rows in hook_status(self.graph).items():
            for row in rows:
                if row["failures"]:
                    what = f"action {row['action']}" if "action" in row else name
                    out.setdefault(row["plugin"], {})[what] = {"failures": row["failures"], "disabled": row["disabled"]}
        return out

    def claimed_family_keys(self) -> tuple[str, ...]:
        """Keys plugins claimed under ``interfaces IF family FAM`` (section claims ``"interfaces family KEY"``)."""
        return claimed_family_keys(self.registries.sections)

    @property
    def packet_clock(self) -> bool:
        """True when every configured interface's source type runs on packet time (``SourceType.clock``,
        a file replay): flow timeouts then follow the packets' timestamps instead of the wall clock."""
        for sec in (self.config.section("interfaces") or {}).values():
            st = self.registries.sources.get(interface_source(sec))
            if st is None or st.clock != "packet":
                return False
        return True

    # -- stopping -------------------------------------------------------------
    def request_stop(self, reason: str = "requested") -> None:
        """Stop the running service as SIGTERM does: sources stop, the pipeline drains, flow caches
        flush, and ``flowplane run`` exits 0.  For one-shot tools that decide when they are done
        (``--count N``); call it from a task in the service's trio loop.

        :raises RuntimeError: no service is running this app.
        """
        handler = getattr(self, "stop_handler", None)  # set by the running Service
        if handler is None:
            raise RuntimeError("no service is running this app")
        handler(reason)

    def uptime(self) -> float:
        return time.time() - self.started_at

    def pid(self) -> int:
        return os.getpid()

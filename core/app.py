"""The application object: config, profile, plugin manager, registries, and
the per-config data-path state (compiled filters, bindings, batch hooks).

``App`` owns the plugin manager (no module-level global).  A reload builds a
new :class:`Graph` from the new config and swaps it in only if everything
validated and compiled.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
import pluggy
import structlog

from . import __version__
from .actions import CORE_ACTIONS, TermAction
from .batch import DIR_INPUT, DIR_OUTPUT, ActionSelection, PacketBatch
from .commands import CommandRegistry
from .config import Config, check_bool, check_int, check_keys, check_mapping, check_number, check_str, suggest
from .decode import Reason
from .errors import ConfigError, ConfigIssue, PluginError
from .interfaces import InterfaceTable
from .pluginmanager import BatchHook, blocked_from_env, call_each, make_plugin_manager, plugin_versions
from .profiles import DEFAULT_PROFILE, HardwareProfile, Limits
from .registry import Registry, SectionRegistry
from .sources import SourceType
from .stats import Counters

log = structlog.get_logger("flowplane.app")

T = TypeVar("T")

#: Top-level sections; the ones in CLAIMABLE hold plugin-owned subsections.
TOP_LEVEL = ("system", "interfaces", "firewall", "policy-options", "forwarding-options", "services", "chassis",
             "routing-options")
CLAIMABLE = ("forwarding-options", "services", "chassis", "routing-options")

SYSTEM_KEYS = ("hardware-profile", "batch-size", "ingest-queue", "control-socket", "control-socket-mode",
               "drain-timeout", "plugins", "log", "watchdog")
INTERFACE_KEYS = ("source", "description", "family", "monitoring-only")
FAMILIES = ("inet", "inet6", "any")
FAMILY_KEYS = ("filter",)
#: A section claim ``"interfaces family KEY"`` lets a plugin own KEY under ``interfaces IF family FAM``
#: (``input-flows`` of video monitoring); the plugin validates what is under it.
FAMILY_CLAIM = ("interfaces", "family")

DEFAULTS = {
    "batch-size": 256,
    "ingest-queue": 64,
    "control-socket": "/run/flowplane/control.sock",
    "control-socket-mode": "0660",
    "drain-timeout": 30.0,  # systemd TimeoutStopSec=45s leaves a margin
}


class Registries:
    """Every named thing plugins registered, by kind."""

    def __init__(self) -> None:
        self.profiles: Registry[HardwareProfile] = Registry("hardware profile")
        self.sources: Registry[SourceType] = Registry("source")
        self.encoders: Registry[Any] = Registry("encoder")
        self.transports: Registry[Any] = Registry("transport")
        self.actions: Registry[TermAction] = Registry("term action")
        self.commands = CommandRegistry()
        self.sections: SectionRegistry = SectionRegistry()

    def all(self) -> dict[str, Registry]:
        return {"profiles": self.profiles, "sources": self.sources, "encoders": self.encoders,
                "transports": self.transports, "actions": self.actions, "commands": self.commands,
                "config sections": self.sections}


@dataclass
class Graph:
    """Per-config data-path state, rebuilt on reload and swapped in whole."""

    config: Config
    profile: HardwareProfile
    firewall: Any  # flowplane.firewall.FilterSet
    bindings: dict[tuple[int, int], dict[str, Any]]  # (iface id, direction) -> {family: CompiledFilter}
    action_handlers: dict[str, Callable[[list[ActionSelection]], None]] = field(default_factory=dict)
    configured: list[object] = field(default_factory=list)  # stateful plugin objects registered by configure
    process_batch: BatchHook | None = None
    flows_expired: BatchHook | None = None


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
    ) -> "App":
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
            ("flowplane_register_config_sections", self.registries.sections),
        ):
            for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
                reg.current_plugin = impl.plugin_name
                try:
                    impl.function(**{a: reg for a in impl.argnames})
                except Exception as exc:
                    raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: {exc}") from exc
            reg.current_plugin = "?"

    # -- properties ----------------------------------------------------------
    def setting(self, key: str, config: Config | None = None) -> Any:
        cfg = config or self.config
        return cfg.get("system", key, default=DEFAULTS.get(key))

    def profile_for(self, config: Config) -> HardwareProfile | None:
        name = config.get("system", "hardware-profile", default=DEFAULT_PROFILE)
        return self.registries.profiles.get(name) if isinstance(name, str) else None

    @property
    def profile(self) -> HardwareProfile:
        assert self.graph is not None
        return self.graph.profile

    @property
    def limits(self) -> Limits:
        return self.profile.limits

    # -- validation ----------------------------------------------------------
    def validate(self, config: Config | None = None) -> list[str]:
        """Every problem in *config* (default: the current one), formatted with file:line:col."""
        from .firewall import validate_firewall

        cfg = config or self.config
        issues: list[ConfigIssue] = []
        profile = self.profile_for(cfg)
        if profile is None:
            name = cfg.get("system", "hardware-profile")
            issues.append(ConfigIssue(("system", "hardware-profile"),
                                      f"unknown hardware profile {name!r}{suggest(str(name), self.registries.profiles)}; "
                                      f"expected one of: {', '.join(self.registries.profiles)}"))
            profile = self.registries.profiles.get(DEFAULT_PROFILE) or HardwareProfile(DEFAULT_PROFILE, "built-in defaults")
        limits = profile.limits
        issues += self._validate_top(cfg)
        issues += self._validate_capabilities(cfg, profile)
        issues += self._validate_system(cfg, limits)
        issues += self._validate_interfaces(cfg)
        issues += validate_firewall(cfg.data, self.registries.actions)
        for plugin, result in call_each(self.pm, "flowplane_config_validate", config=cfg, limits=limits):
            for item in result or []:
                if isinstance(item, ConfigIssue):
                    issues.append(item)
                else:
                    issues.append(ConfigIssue((), f"{item} (from plugin {plugin})"))
        return cfg.format_issues(issues)

    def _validate_top(self, cfg: Config) -> list[ConfigIssue]:
        issues = check_keys(cfg.data, TOP_LEVEL, (), "section")
        claimed: dict[str, list[str]] = {}
        for words in self.registries.sections:
            parts = words.split()
            claimed.setdefault(parts[0], []).append(parts[1] if len(parts) > 1 else "")
        for top in CLAIMABLE:
            section = cfg.get(top)
            issues += check_mapping(section, (top,), f"{top} subsections")
            if isinstance(section, dict):
                known = [k for k in claimed.get(top, []) if k]
                for key in section:
                    if key not in known:
                        hint = suggest(key, known)
                        issues.append(ConfigIssue((top, key), f"no enabled plugin handles '{top} {key}'{hint}"
                                                  + (f"; known: {', '.join(sorted(known))}" if known else "")))
        return issues

    def _validate_capabilities(self, cfg: Config, profile: HardwareProfile) -> list[ConfigIssue]:
        """A configured section whose claim names a capability the hardware profile lacks is an error."""
        issues = []
        for words, capability in sorted(self.registries.sections.capabilities.items()):
            path = tuple(words.split())
            if cfg.get(*path) is not None and capability not in profile.capabilities:
                has = ", ".join(sorted(profile.capabilities)) or "none"
                issues.append(ConfigIssue(path, f"hardware profile {profile.name!r} has no {capability!r} capability "
                                                f"(it has: {has}); pick another system hardware-profile or remove "
                                                f"'{words}'"))
        return issues

    def claimed_family_keys(self) -> tuple[str, ...]:
        """Keys plugins claimed under ``interfaces IF family FAM`` (section claims ``"interfaces family KEY"``)."""
        n = len(FAMILY_CLAIM)
        return tuple(sorted(w.split()[n] for w in self.registries.sections
                            if tuple(w.split()[:n]) == FAMILY_CLAIM and len(w.split()) == n + 1))

    def _validate_system(self, cfg: Config, limits: Limits) -> list[ConfigIssue]:
        sysconf = cfg.get("system")
        p = ("system",)
        issues = check_mapping(sysconf, p, "system settings")
        if not isinstance(sysconf, dict):
            return issues
        issues += check_keys(sysconf, SYSTEM_KEYS, p)
        if "batch-size" in sysconf:
            issues += check_int(sysconf["batch-size"], p + ("batch-size",), 1, limits.max_batch, limit="max_batch")
        if "ingest-queue" in sysconf:
            issues += check_int(sysconf["ingest-queue"], p + ("ingest-queue",), 1, limits.max_queue, limit="max_queue")
        if "control-socket" in sysconf:
            issues += check_str(sysconf["control-socket"], p + ("control-socket",))
        if "control-socket-mode" in sysconf:
            mode = sysconf["control-socket-mode"]
            if not (isinstance(mode, str) and len(mode) in (3, 4) and all(c in "01234567" for c in mode)):
                issues.append(ConfigIssue(p + ("control-socket-mode",), f"expected an octal mode string like \"0660\", got {mode!r}"))
        if "drain-timeout" in sysconf:
            issues += check_number(sysconf["drain-timeout"], p + ("drain-timeout",), 0, 3600)
        plugins = sysconf.get("plugins")
        if plugins is not None:
            issues += check_mapping(plugins, p + ("plugins",), "plugin settings")
            if isinstance(plugins, dict):
                issues += check_keys(plugins, ("disable",), p + ("plugins",))
                dis = plugins.get("disable", [])
                if not isinstance(dis, list) or not all(isinstance(x, str) for x in dis):
                    issues.append(ConfigIssue(p + ("plugins", "disable"), f"expected a list of plugin names, got {dis!r}"))
        logc = sysconf.get("log")
        if logc is not None:
            issues += check_mapping(logc, p + ("log",), "log settings")
            if isinstance(logc, dict):
                issues += check_keys(logc, ("level", "format"), p + ("log",))
                if "level" in logc:
                    issues += check_str(logc["level"], p + ("log", "level"), ("debug", "info", "warning", "error"))
                if "format" in logc:
                    issues += check_str(logc["format"], p + ("log", "format"), ("auto", "json", "console"))
        return issues

    def _validate_interfaces(self, cfg: Config) -> list[ConfigIssue]:
        ifaces = cfg.get("interfaces")
        issues = check_mapping(ifaces, ("interfaces",), "interface name -> settings")
        if not isinstance(ifaces, dict):
            return issues
        fw = cfg.section("firewall", "family")
        family_keys = FAMILY_KEYS + self.claimed_family_keys()
        for name, section in ifaces.items():
            p = ("interfaces", name)
            if section is None:
                section = {}
            if not isinstance(section, dict):
                issues.append(ConfigIssue(p, f"expected the interface's settings as a mapping, got {section!r}"))
                continue
            driver_name = section.get("source", "af-packet")
            driver = self.registries.sources.get(driver_name) if isinstance(driver_name, str) else None
            if driver is None:
                issues.append(ConfigIssue(p + ("source",), f"unknown source {driver_name!r}"
                                          f"{suggest(str(driver_name), self.registries.sources)}; expected one of: "
                                          f"{', '.join(self.registries.sources) or '(no source plugin enabled)'}"))
                driver_keys: tuple[str, ...] = ()
            else:
                driver_keys = driver.keys
                if driver.validate:
                    issues += driver.validate(name, section, p, cfg.base_dir)
            issues += check_keys(section, INTERFACE_KEYS + driver_keys, p)
            if "monitoring-only" in section:
                issues += check_bool(section["monitoring-only"], p + ("monitoring-only",))
            fam = section.get("family")
            issues += check_mapping(fam, p + ("family",), "inet / inet6 / any")
            if not isinstance(fam, dict):
                continue
            issues += check_keys(fam, FAMILIES, p + ("family",), "family")
            for family, fsec in fam.items():
                fp = p + ("family", family)
                if family not in FAMILIES or fsec is None:
                    continue
                if not isinstance(fsec, dict):
                    issues.append(ConfigIssue(fp, f"expected a mapping like {{filter: {{input: NAME}}}}, got {fsec!r}"))
                    continue
                issues += check_keys(fsec, family_keys, fp)
                filt = fsec.get("filter")
                issues += check_mapping(filt, fp + ("filter",), "input / output -> filter name")
                if not isinstance(filt, dict):
                    continue
                issues += check_keys(filt, ("input", "output"), fp + ("filter",), "direction")
                defined = dict((fw.get(family) or {}).get("filter") or {}) if isinstance(fw.get(family), dict) else {}
                if family == "inet":  # Junos shorthand: 'firewall filter X' is family inet
                    top = cfg.get("firewall", "filter")
                    if isinstance(top, dict):
                        defined.update(top)
                for direction, fname in filt.items():
                    if direction not in ("input", "output"):
                        continue
                    if not isinstance(fname, str):
                        issues.append(ConfigIssue(fp + ("filter", direction), f"expected a filter name, got {fname!r}"))
                    elif fname not in defined:
                        issues.append(ConfigIssue(fp + ("filter", direction),
                                                  f"filter {fname!r} is not defined under 'firewall family {family} filter'"
                                                  f"{suggest(fname, defined)}"))
        return issues

    # -- building the data-path state ---------------------------------------
    def build_graph(self, config: Config) -> Graph:
        """Validate and compile *config* into a Graph (does not run plugin configure)."""
        from .firewall import compile_firewall

        errors = self.validate(config)
        if errors:
            raise ConfigError(errors)
        profile = self.profile_for(config)
        assert profile is not None
        firewall = compile_firewall(config.data, self.registries.actions, self.interfaces)
        bindings: dict[tuple[int, int], dict[str, Any]] = {}
        for name, section in (config.section("interfaces")).items():
            iid = self.interfaces.id(name)
            for family, fsec in ((section or {}).get("family") or {}).items():
                for direction, fname in ((fsec or {}).get("filter") or {}).items():
                    d = DIR_INPUT if direction == "input" else DIR_OUTPUT
                    bindings.setdefault((iid, d), {})[family] = firewall.get(family, fname)
        return Graph(config=config, profile=profile, firewall=firewall, bindings=bindings)

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
            call_each(self.pm, "flowplane_configure", app=self)
        except Exception:
            for obj in self.pm.get_plugins():
                if id(obj) not in before:
                    self.pm.unregister(obj)
            self.graph, self.config = old, old.config if old else graph.config
            if old is not None:
                for obj in old.configured:
                    self.pm.register(obj)
            raise
        graph.configured = [p for p in self.pm.get_plugins() if id(p) not in before]
        if old is not None:  # Junos keeps the counters of filters that did not change
            graph.firewall.adopt_counters(old.firewall)
        graph.process_batch = BatchHook.compile(self.pm, "flowplane_process_batch", self.counters["plugins"])
        graph.flows_expired = BatchHook.compile(self.pm, "flowplane_flows_expired", self.counters["plugins"])

    def configure(self) -> None:
        """Validate, compile and apply the current config (start-up)."""
        self.apply(self.build_graph(self.config))

    def bind_action(self, name: str, handler: Callable[[list[ActionSelection]], None]) -> None:
        """Route batches that terms send to action *name* to *handler* (call from flowplane_configure)."""
        if name not in self.registries.actions:
            raise PluginError(f"bind_action: no term action {name!r} is registered")
        assert self.graph is not None
        self.graph.action_handlers[name] = handler

    def previous(self, cls: type[T]) -> T | None:
        """During a reload's ``flowplane_configure``: the replaced graph's configured object of type
        *cls* (whose state the new one may take over), else None."""
        if self.previous_graph is None:
            return None
        return next((o for o in self.previous_graph.configured if isinstance(o, cls)), None)

    # -- the per-batch data path ---------------------------------------------
    def process(self, batch: PacketBatch) -> None:
        """Decode, filter, route actions and run feature plugins on one batch (sync)."""
        from .decode import decode

        graph = self.graph
        assert graph is not None
        pipe = self.counters["pipeline"]
        n = len(batch)
        if n == 0:
            return
        counts = decode(batch)
        iface = int(batch.iface[0])
        acc = self.decode_counts.get(iface)
        if acc is None:
            acc = self.decode_counts[iface] = np.zeros(len(Reason), dtype=np.int64)
        acc[: len(counts)] += counts[: len(acc)]
        pipe.inc("packets", n)
        pipe.inc("batches")
        direction = batch.direction
        d0 = int(direction[0])
        if graph.bindings:
            if (direction != d0).any():
                for d in (DIR_INPUT, DIR_OUTPUT):
                    sel = direction == d
                    if sel.any():
                        self._filter_and_run(graph, batch.select(sel), iface, d)
                return
        self._filter_and_run(graph, batch, iface, d0)

    def _filter_and_run(self, graph: Graph, batch: PacketBatch, iface: int, direction: int) -> None:
        filters = graph.bindings.get((iface, direction))
        hook = graph.process_batch
        if filters:
            alive = self._apply_filters(graph, batch, filters)
            if not (hook and hook.impls):
                return  # nobody consumes accepted packets: skip building the accepted batch
            if not alive.all():
                batch = batch.select(alive)
        if len(batch) and hook is not None and hook.impls:
            hook(batch=batch)

    def _apply_filters(self, graph: Graph, batch: PacketBatch, filters: dict[str, Any]) -> np.ndarray:
        pipe = self.counters["pipeline"]
        alive = np.ones(len(batch), dtype=bool)
        selections: list[ActionSelection] = []
        for family in FAMILIES[::-1]:  # any first, then inet, inet6
            f = filters.get(family)
            if f is None:
                continue
            if family == "any":
                rows = alive
            else:
                rows = alive & (batch.af == (4 if family == "inet" else 6)) & (batch.status == 0)
                if not rows.any():
                    continue
            res = f.evaluate(batch, rows)
            dropped = rows & ~res.accept
            if dropped.any():
                alive &= ~dropped
                pipe.inc("filter_discarded", int((res.discard & rows).sum()))
                pipe.inc("filter_rejected", int((res.reject & rows).sum()))
            for term, action, arg, mask in res.selections:
                selections.append(ActionSelection(f.name, term, action, arg, batch.select(mask)))
        if selections:
            self._route(graph, selections)
        return alive

    def _route(self, graph: Graph, selections: list[ActionSelection]) -> None:
        by_action: dict[str, list[ActionSelection]] = {}
        for s in selections:
            by_action.setdefault(s.action, []).append(s)
        for action, sels in by_action.items():
            handler = graph.action_handlers.get(action)
            if handler is None:
                self.counters["pipeline"].drop("action", f"unbound:{action}", sum(len(s.batch) for s in sels))
                continue
            try:
                handler(sels)
            except Exception as exc:  # one failing action handler never stops the pipeline
                self.counters["plugins"].inc(f"action_errors.{action}")
                log.error("plugin_failed", action=action, error=f"{type(exc).__name__}: {exc}", exc_info=True)

    # -- introspection --------------------------------------------------------
    def plugin_table(self) -> list[dict]:
        """What ``flowplane plugins`` prints: every plugin, version, hooks and registrations."""
        versions = plugin_versions(self.pm)
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
            })
        core_regs = {kind: reg.by_owner("flowplane") for kind, reg in self.registries.all().items()}
        rows.append({"name": "flowplane", "version": __version__, "module": "flowplane (core)", "hooks": [],
                     "registered": {k: v for k, v in core_regs.items() if v}})
        blocked = [n for n, p in self.pm.list_name_plugin() if p is None]
        for name in blocked:
            rows.append({"name": name, "version": "-", "module": "-", "hooks": [], "registered": {}, "blocked": True})
        return sorted(rows, key=lambda r: r["name"])

    def uptime(self) -> float:
        return time.time() - self.started_at

    def pid(self) -> int:
        return os.getpid()

"""The per-config data-path state: compiled filters, their bindings to interfaces, bound term-action
handlers and compiled batch hooks.  A reload builds a new :class:`Graph` and swaps it in whole."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .batch import DIR_INPUT, DIR_OUTPUT, ActionSelection
from .config import Config
from .interfaces import InterfaceTable
from .pluginmanager import ActionHandler, BatchHook
from .profiles import HardwareProfile, Limits
from .registry import Registry
from .stats import Counters

#: ``(interface id, direction) -> {family: CompiledFilter}``
Bindings = dict[tuple[int, int], dict[str, Any]]


@dataclass
class Graph:
    """Per-config data-path state, rebuilt on reload and swapped in whole."""

    config: Config
    profile: HardwareProfile
    limits: Limits  # the profile's values for every declared limit
    firewall: Any  # flowplane.firewall.FilterSet
    bindings: Bindings
    action_handlers: dict[str, Callable[[list[ActionSelection]], None]] = field(default_factory=dict)  # as bound
    guarded_actions: dict[str, ActionHandler] = field(default_factory=dict)  # what the data path calls
    configured: list[object] = field(default_factory=list)  # stateful plugin objects registered by configure
    process_batch: BatchHook | None = None
    flows_expired: BatchHook | None = None


def compile_graph(config: Config, profile: HardwareProfile, limits: Limits, actions: Registry,
                  interfaces: InterfaceTable) -> Graph:
    """Compile the firewall of a validated *config* and bind its filters to interfaces."""
    from .firewall import compile_firewall

    firewall = compile_firewall(config.data, actions, interfaces)
    return Graph(config=config, profile=profile, limits=limits, firewall=firewall,
                 bindings=bind_filters(config, firewall, interfaces))


def bind_filters(config: Config, firewall: Any, interfaces: InterfaceTable) -> Bindings:
    """``interfaces NAME family F filter input|output NAME`` as ``(iface id, direction) -> {family: filter}``."""
    bindings: Bindings = {}
    for name, section in (config.section("interfaces")).items():
        iid = interfaces.id(name)
        for family, fsec in ((section or {}).get("family") or {}).items():
            for direction, fname in ((fsec or {}).get("filter") or {}).items():
                d = DIR_INPUT if direction == "input" else DIR_OUTPUT
                bindings.setdefault((iid, d), {})[family] = firewall.get(family, fname)
    return bindings


def hook_status(graph: Graph) -> dict[str, list[dict]]:
    """Failures and disabled state of every guarded data-path callable: batch hooks and term-action handlers."""
    out = {h.name: h.status() for h in (graph.process_batch, graph.flows_expired) if h}
    out["term actions"] = [h.status() for _, h in sorted(graph.guarded_actions.items())]
    return out


def compile_batch_hooks(graph: Graph, pm: pluggy.PluginManager, counters: Counters) -> None:
    """Compile the batch hooks of the plugins registered now (after configure) into *graph*."""
    graph.process_batch = BatchHook.compile(pm, "flowplane_process_batch", counters)
    graph.flows_expired = BatchHook.compile(pm, "flowplane_flows_expired", counters)

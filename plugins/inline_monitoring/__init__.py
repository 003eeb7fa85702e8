"""Inline monitoring services (IPFIX packet export): ``services inline-monitoring``
and the term action ``inline-monitoring-instance NAME``.

Each sampled packet is exported, clipped to the profile's clip length, as an
IPFIX data record (ingressInterface, egressInterface, flowDirection,
dataLinkFrameSize, dataLinkFrameSection) to the instance's collectors.

Hook implementations only; the state lives in :class:`.engine.InlineMonitor`,
registered by ``flowplane_configure`` while instances are configured.
"""

from __future__ import annotations

from flowplane.api import TermAction, hookimpl, suggest

from . import commands
from .config import LIMITS, parse, section
from .engine import PLUGIN_OBJECT, InlineMonitor
from .loop import ACTION, find_loops


def _instance_exists(arg, config: dict) -> str | None:
    sec = section(config)
    instances = sec.get("instance") if isinstance(sec, dict) else None
    known = list(instances) if isinstance(instances, dict) else []
    if not isinstance(arg, str):
        return f"expected an inline-monitoring instance name, got {arg!r}"
    if arg not in known:
        return (f"inline-monitoring instance {arg!r} is not defined under 'services inline-monitoring instance'"
                f"{suggest(arg, known)}" + (f"; configured: {', '.join(map(str, known))}" if known else ""))
    return None


@hookimpl
def flowplane_register_config_sections(register):
    register("services inline-monitoring", "IPFIX packet export: templates and instances with collectors",
             capability="inline-monitoring", capability_help="services inline-monitoring: IPFIX packet export",
             limits=LIMITS)


@hookimpl
def flowplane_register_actions(register):
    register(ACTION, TermAction(ACTION, arg="required", validate=_instance_exists,
                                help="export the packet, clipped, as IPFIX to the instance's collectors"))


@hookimpl
def flowplane_config_validate(config, limits, registries):
    inline, issues = parse(config.data, limits)
    if not issues:
        issues += find_loops(config.data, inline, sources=registries.sources)
    return issues


@hookimpl
def flowplane_configure(app):
    inline, issues = parse(app.config.data, app.limits)
    if issues or not inline.enabled:
        return
    monitor = InlineMonitor(app, inline)
    app.pm.register(monitor, name=PLUGIN_OBJECT)
    app.bind_action(ACTION, monitor.on_action)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)

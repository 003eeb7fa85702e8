"""Port mirroring: ``forwarding-options port-mirroring`` (default and named
instances) and the term actions ``port-mirror`` / ``port-mirror-instance NAME``.

Matching packets are copied, byte for byte, to local interfaces (AF_PACKET)
or to remote analyzers (GRE / ERSPAN-style encapsulation); the original
packet continues untouched.

Hook implementations only; the state lives in :class:`.engine.PortMirror`,
registered by ``flowplane_configure`` while port mirroring is configured.
"""

from __future__ import annotations

from flowplane.api import ConfigIssue, TermAction, hookimpl, live_interfaces, suggest

from . import commands
from .config import BASE, DEFAULT_INSTANCE, LIMITS, instance_names, parse
from .engine import PortMirror


def _port_mirror_needs_default(arg, config: dict) -> str | None:
    if DEFAULT_INSTANCE not in instance_names(config):
        return ("'port-mirror' needs the default instance: 'forwarding-options port-mirroring' with "
                "'input' and 'family inet|inet6|any output ...' (or use 'port-mirror-instance NAME')")
    return None


def _instance_exists(arg, config: dict) -> str | None:
    names = [n for n in instance_names(config) if n != DEFAULT_INSTANCE]
    if not isinstance(arg, str):
        return f"expected a port-mirroring instance name, got {arg!r}"
    if arg not in names:
        return (f"no port-mirroring instance {arg!r}{suggest(arg, names)}; "
                f"configured under 'forwarding-options port-mirroring instance': {', '.join(names) or 'none'}")
    return None


@hookimpl
def flowplane_register_actions(register):
    register("port-mirror", TermAction("port-mirror", help="copy the packet to the default port-mirroring "
                                                           "instance's destinations",
                                                           validate=_port_mirror_needs_default))
    register("port-mirror-instance",
             TermAction("port-mirror-instance", arg="required",
                        help="copy the packet to a named port-mirroring instance's destinations",
                        validate=_instance_exists))


@hookimpl
def flowplane_register_config_sections(register):
    register("forwarding-options port-mirroring", "copy matching packets to local interfaces or remote analyzers",
             capability="port-mirroring", capability_help="forwarding-options port-mirroring", limits=LIMITS)


def _loops(config: dict, cfg, sources=None) -> list[ConfigIssue]:
    """A mirror interface that flowplane also captures (a ``live`` source type) would capture its own copies."""
    captured = {}
    for name, sec in live_interfaces(config, sources).items():
        captured[str(sec.get("device") or name)] = str(name)
    issues = []
    for inst in cfg.instances.values():
        for d in inst.destinations:
            if d.kind == "interface" and d.target in captured:
                p = BASE if inst.name == DEFAULT_INSTANCE else BASE + ("instance", inst.name)
                issues.append(ConfigIssue(p + ("family",), f"mirror interface {d.target!r} is also captured "
                                                           f"(interfaces {captured[d.target]}): its copies would be "
                                                           "captured and mirrored again; use an interface flowplane "
                                                           "does not capture"))
    return issues


@hookimpl
def flowplane_config_validate(config, limits, registries):
    cfg, issues = parse(config.data, limits)
    if not issues:
        issues += _loops(config.data, cfg, registries.sources)
    return issues


@hookimpl
def flowplane_configure(app):
    cfg, issues = parse(app.config.data, app.limits)
    if issues or not cfg.enabled:
        return
    previous = app.previous(PortMirror)
    pm = PortMirror(app, cfg)
    pm.open(previous)
    app.pm.register(pm, name=commands.PLUGIN_OBJECT)
    app.bind_action("port-mirror", pm.on_port_mirror)
    app.bind_action("port-mirror-instance", pm.on_port_mirror_instance)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)

"""Active and passive flow monitoring and discard accounting: ``forwarding-options sampling``
and ``accounting``, the ``sample`` and ``discard accounting NAME`` term actions, flow caches and
export to flow servers (NetFlow v5/v8/v9, IPFIX).

Hook implementations only; the state lives in :class:`.engine.FlowMonitor`,
registered by ``flowplane_configure`` while sampling is configured.  The
``flowplane replay`` and ``flowplane top`` tools are :mod:`.replay` and :mod:`.top`.
"""

from __future__ import annotations

from flowplane.api import DISCARD_ACCOUNTING, TermAction, hookimpl

from . import commands
from .config import LIMITS, accounting_group_check, parse
from .engine import FlowMonitor
from .routes import parse_routes


def _sample_needs_sampling(arg, config: dict) -> str | None:
    if not ((config.get("forwarding-options") or {}).get("sampling")):
        return "'sample' needs 'forwarding-options sampling' (input rate and family ... output flow-server)"
    return None


@hookimpl
def flowplane_register_actions(register):
    register("sample", TermAction("sample", help="sample the packet into the sampling instance's flow cache",
                                  validate=_sample_needs_sampling))
    register(DISCARD_ACCOUNTING, TermAction(DISCARD_ACCOUNTING, arg="required", terminating=True,
                                            help="'discard accounting NAME': meter discarded packets into "
                                                 "accounting group NAME", validate=accounting_group_check))


@hookimpl
def flowplane_register_config_sections(register):
    register("forwarding-options sampling", "sampling instances: input rate, flow servers, timeouts",
             capability="sampling", capability_help="forwarding-options sampling: sampled flow export",
             limits=LIMITS)
    register("forwarding-options accounting", "discard accounting groups: flow servers, timeouts",
             capability="discard-accounting",
             capability_help="forwarding-options accounting: flows of discarded packets")
    register("services flow-monitoring", "version9 / version-ipfix templates")
    register("chassis fpc", "bind an interface to a sampling instance (fpc IFNAME sampling-instance NAME)")
    register("forwarding-options monitoring", "passive monitoring groups fed by monitoring-only interfaces")
    register("routing-options static", "static routes: next hop, AS and prefix length for flow records")
    register("routing-options autonomous-system", "the local AS number")


@hookimpl
def flowplane_config_validate(config, limits, registries):
    _, issues = parse(config.data, limits, registries)
    _, route_issues = parse_routes(config.data)
    return issues + route_issues


@hookimpl
def flowplane_configure(app):
    sampling, issues = parse(app.config.data, app.limits, app.registries)
    if issues or not sampling.enabled:
        return
    routes, _ = parse_routes(app.config.data)
    fm = FlowMonitor(app, sampling, routes)
    app.pm.register(fm, name=commands.PLUGIN_OBJECT)
    app.bind_action("sample", fm.on_sample)
    app.bind_action(DISCARD_ACCOUNTING, fm.on_discard_accounting)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)


@hookimpl
def flowplane_register_cli_subcommands(register):
    from . import replay, top

    register("replay", replay.add_parser, replay.run_replay)
    register("top", top.add_parser, top.run)

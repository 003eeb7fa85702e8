"""NAT event logging: ``services jflow-log``.

Every translation the Linux NAT (nftables/iptables masquerade, snat, dnat) makes in the namespace
the service runs in shows as a conntrack event; this plugin listens to them over ctnetlink and logs
each NAT session create and delete as IPFIX or NetFlow v9 with RFC 8158 templates to log collectors,
or as RFC 5424 syslog messages.

Hook implementations only; the state lives in :class:`.engine.NatLogger`, registered by
``flowplane_configure`` while ``services jflow-log`` is configured.
"""

from __future__ import annotations

from flowplane.api import config_validator, hookimpl, parsed_config

from . import commands
from .config import parse
from .engine import PLUGIN_OBJECT, NatLogger


@hookimpl
def flowplane_register_config_sections(register):
    register("services jflow-log", "NAT event logging: collectors, collector groups, template profiles, syslog")


flowplane_config_validate = config_validator(parse, registries=True)


@hookimpl
def flowplane_configure(app):
    cfg = parsed_config(app, parse, registries=True)
    if cfg is not None:
        app.pm.register(NatLogger(app, cfg), name=PLUGIN_OBJECT)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)

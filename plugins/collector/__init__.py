"""Flow collection (``services flow-collector``): receive NetFlow v5, v9 and IPFIX over UDP,
decode with one numpy dtype per template, keep the last flows, write JSON lines.

Hook implementations only; the state lives in :class:`.collector.Collector`,
registered by ``flowplane_configure`` while the section is configured.  The
``flowplane collect`` tool is :mod:`.cli`.
"""

from __future__ import annotations

from flowplane.api import config_validator, hookimpl, parsed_config

from . import commands
from .collector import PLUGIN_OBJECT, Collector
from .config import parse


@hookimpl
def flowplane_register_capabilities(register):
    register("flow-collector", "services flow-collector: NetFlow/IPFIX/sFlow collection")


@hookimpl
def flowplane_register_config_sections(register):
    register("services flow-collector", "receive NetFlow v5/v9 and IPFIX: listeners, outputs, template limits")


flowplane_config_validate = config_validator(parse, registries=True)


@hookimpl
def flowplane_configure(app):
    cfg = parsed_config(app, parse, registries=True)
    if cfg is None:
        return
    previous = app.previous(Collector)
    app.pm.register(Collector(cfg, previous, registries=app.registries), name=PLUGIN_OBJECT)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)


@hookimpl
def flowplane_register_cli_subcommands(register):
    from . import cli

    register("collect", cli.add_parser, cli.run_collect)

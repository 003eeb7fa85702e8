"""RFC 2544 benchmarking (``services rpm rfc2544-benchmarking``): initiator and Junos-style reflector.

Hook implementations only.  Config in :mod:`.config`; test frames in :mod:`.frames`; batched AF_PACKET
I/O in :mod:`.packetio`; one trial in :mod:`.trial`; the four tests and self-calibration in
:mod:`.initiator`; the reflector in :mod:`.reflector`; runs, states and results by test id in
:mod:`.service`; operational commands in :mod:`.commands`; ``flowplane rfc2544`` in :mod:`.cli`.
"""

from __future__ import annotations

from flowplane.api import config_validator, hookimpl, parsed_config

from . import commands
from .config import parse
from .service import PLUGIN_OBJECT, Rfc2544Service


@hookimpl
def flowplane_register_config_sections(register):
    register("services rpm rfc2544-benchmarking", "RFC 2544 benchmarking tests: initiator and reflector",
             capability="rfc2544",
             capability_help="services rpm rfc2544-benchmarking: RFC 2544 initiator and reflector")


flowplane_config_validate = config_validator(parse)


@hookimpl
def flowplane_configure(app):
    cfg = parsed_config(app, parse)
    if cfg is not None:
        app.register_configured(Rfc2544Service(cfg), PLUGIN_OBJECT)  # a reload: results and test ids carry over


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)


@hookimpl
def flowplane_register_cli_subcommands(register):
    from . import cli

    register("rfc2544", cli.add_parser, cli.run)

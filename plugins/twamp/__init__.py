"""TWAMP (RFC 5357; control and security from OWAMP, RFC 4656): ``services rpm twamp``.

Hook implementations only.  Wire formats live in :mod:`.wire`, security in :mod:`.crypto`,
the server and Session-Reflector in :mod:`.server` (the stateful :class:`.server.TwampServer`,
registered by ``flowplane_configure`` while ``services rpm twamp server`` is configured), the
client in :mod:`.client`, the TWAMP Light reflector in :mod:`.light`; ``flowplane twamp client|server``
is ``plugins/twamp/cli.py``, added through ``flowplane_register_cli_subcommands``.
"""

from __future__ import annotations

from flowplane.api import config_validator, hookimpl, parsed_config

from . import commands
from .config import parse
from .light import PLUGIN_OBJECT as LIGHT_OBJECT
from .light import LightReflector
from .light import register_commands as register_light_commands
from .server import PLUGIN_OBJECT, TwampServer
from .service import PLUGIN_OBJECT as CLIENT_OBJECT
from .service import TwampClientService


@hookimpl
def flowplane_register_config_sections(register):
    register("services rpm twamp", "TWAMP server and client (RFC 5357)", capability="twamp",
             capability_help="services rpm twamp: TWAMP server and client")


flowplane_config_validate = config_validator(parse)


@hookimpl
def flowplane_configure(app):
    cfg = parsed_config(app, parse)
    if cfg is None:
        return
    if cfg.client is not None and cfg.client.connections:
        # a config change: persistent-results carry over
        app.register_configured(TwampClientService(cfg.client), CLIENT_OBJECT)
    if cfg.server is None:
        return
    app.pm.register(TwampServer(cfg.server), name=PLUGIN_OBJECT)
    if cfg.server.light is not None:  # TWAMP Light (RFC 5357 appendix I): its own UDP reflector task
        app.pm.register(LightReflector(cfg.server.light), name=LIGHT_OBJECT)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)
    commands.register_client(register)
    register_light_commands(register)


@hookimpl
def flowplane_register_cli_subcommands(register):
    from . import cli

    register("twamp", cli.add_parser, cli.run)

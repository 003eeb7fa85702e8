"""RPM probes (Junos real-time performance monitoring): ``services rpm probe | probe-server | probe-limit``.

Hook implementations only.  Configuration is :mod:`.config`; packet formats :mod:`.wire`; one probe of each
type :mod:`.probes`; tests :mod:`.engine`; results :mod:`.results`; thresholds and events :mod:`.events`; the
probe server :mod:`.server`; the stateful :class:`.service.RpmService` (registered by ``flowplane_configure``
while probes or probe servers are configured); ``show services rpm ...`` :mod:`.commands`;
``flowplane rpm ping|udp|tcp|http|server`` :mod:`.cli`.  ``services rpm`` itself is claimed by the twamp
plugin, which shares the section.
"""

from __future__ import annotations

from flowplane.api import config_validator, hookimpl, parsed_config

from . import commands
from .config import parse
from .service import PLUGIN_OBJECT, RpmService


@hookimpl
def flowplane_register_config_sections(register):
    register("services rpm probe", "RPM probes: tests per probe owner (ICMP, UDP, TCP, HTTP)", capability="rpm",
             capability_help="services rpm probe / probe-server: RPM probes and probe servers")
    register("services rpm probe-server", "RPM probe servers (UDP, TCP)", capability="rpm")
    register("services rpm probe-limit", "concurrent RPM probes at most", capability="rpm")


flowplane_config_validate = config_validator(parse)


@hookimpl
def flowplane_configure(app):
    cfg = parsed_config(app, parse)
    if cfg is None or not (cfg.tests or cfg.servers):
        return
    app.register_configured(RpmService(cfg), PLUGIN_OBJECT)  # a reload: the state carries over


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)


@hookimpl
def flowplane_register_cli_subcommands(register):
    from . import cli

    register("rpm", cli.add_parser, cli.run)

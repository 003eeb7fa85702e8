"""flowplane-example: the ``tally`` firewall action (copy me to start a plugin).

Hook implementations only; they are stateless and read the config.  The
state (the counters) lives in a :class:`~flowplane_example.tally.Tally`
object that :func:`flowplane_configure` registers only when the config has a
``services example-tally`` section.

Config::

    services:
      example-tally:
        top-n: 10            # ports listed per bucket by 'show', 1..100
    firewall:
      family inet:
        filter F:
          term web:
            from: {protocol: [tcp], destination-port: [80, 443]}
            then: {tally: web, accept: true}     # bucket 'web'
          term rest:
            then: {tally: true, accept: true}    # bucket 'default'
"""

from __future__ import annotations

from flowplane.api import TermAction, hookimpl

from .settings import SECTION, SECTION_KEY, validate_bucket, validate_section
from .tally import STATE_NAME, Tally, clear_tally, format_tally, show_tally

ACTION = "tally"


@hookimpl
def flowplane_register_actions(register):
    register(ACTION, TermAction(ACTION, arg="optional", validate=validate_bucket,
                                help="count packets, bytes and destination ports in a bucket ('tally: NAME')"))


@hookimpl
def flowplane_register_config_sections(register):
    register(SECTION, "settings of the 'tally' term action (top-n)")


@hookimpl
def flowplane_register_control_commands(register):
    register(f"show {SECTION}", show_tally, help="tally buckets: packets, bytes, top destination ports [bucket NAME]",
             formatter=format_tally)
    register(f"clear {SECTION}", clear_tally, help="reset tally buckets [bucket NAME]")


@hookimpl
def flowplane_config_validate(config, limits):
    return validate_section(config)


@hookimpl
def flowplane_configure(app):
    services = app.config.section("services")
    if SECTION_KEY not in services:
        return  # feature not configured: no object, no handler
    tally = Tally.from_config(services.get(SECTION_KEY) or {})
    app.pm.register(tally, name=STATE_NAME)
    app.bind_action(ACTION, tally.handle)

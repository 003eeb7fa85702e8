"""Dynamic flow capture and FlowTap: ``services dynamic-flow-capture``.

Control sources add, list, refresh and delete capture criteria over DTCP
(HMAC-SHA1 signed, sequence-windowed, on UDP and TCP); packets matching a
criterion are copied, IP/UDP-encapsulated, to the criterion's content
destination.

Hook implementations only.  The wire format is :mod:`.dtcp`, the criteria and
their matcher :mod:`.criteria`, content destinations :mod:`.copier`, the
stateful :class:`.engine.FlowCapture` (registered by ``flowplane_configure``
while the section is configured; it sees every accepted batch through
``flowplane_process_batch``) and its listeners :mod:`.server`.
"""

from __future__ import annotations

from flowplane.api import hookimpl

from . import commands
from .config import LIMITS, parse
from .engine import PLUGIN_OBJECT, FlowCapture


@hookimpl
def flowplane_register_config_sections(register):
    register("services dynamic-flow-capture", "DTCP control sources, content destinations and capture groups",
             capability="dynamic-flow-capture", capability_help="services dynamic-flow-capture (DTCP)",
             limits=LIMITS)


@hookimpl
def flowplane_config_validate(config, limits):
    _, issues = parse(config.data, limits, config.base_dir)
    return issues


@hookimpl
def flowplane_configure(app):
    cfg, issues = parse(app.config.data, app.limits, app.config.base_dir)
    if issues or not cfg.enabled:
        return
    app.register_configured(FlowCapture(cfg, interfaces=app.interfaces), PLUGIN_OBJECT)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)

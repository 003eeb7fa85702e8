"""Inline video monitoring: the Media Delivery Index (RFC 4445) on MPEG-TS over UDP and RTP.

``services video-monitoring templates T`` holds the measurement parameters; flows are chosen under
``interfaces IF family inet|inet6 input-flows|output-flows NAME`` (a key this plugin claims with the
section claim ``"interfaces family input-flows"``).  Hook implementations only; the state lives in
:class:`.engine.VideoMonitor`, registered by ``flowplane_configure`` while flows are selected.
"""

from __future__ import annotations

from flowplane.api import config_validator, hookimpl, parsed_config

from . import commands
from .config import FLOW_KINDS, parse
from .engine import PLUGIN_OBJECT, VideoMonitor


@hookimpl
def flowplane_register_config_sections(register):
    register("services video-monitoring", "inline video monitoring: MDI templates (RFC 4445)",
             capability="video-monitoring",
             capability_help="services video-monitoring: Media Delivery Index on MPEG-TS flows")
    for kind in FLOW_KINDS:
        register(f"interfaces family {kind}", "video flows to monitor with an MDI template")


flowplane_config_validate = config_validator(parse)


@hookimpl
def flowplane_configure(app):
    cfg = parsed_config(app, parse)
    if cfg is None or not cfg.enabled:
        return
    # a reload: the new monitor takes over the flows and totals of the one it replaces
    app.register_configured(VideoMonitor(app, cfg, live=not app.packet_clock), PLUGIN_OBJECT)


@hookimpl
def flowplane_register_control_commands(register):
    commands.register(register)

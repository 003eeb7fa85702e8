"""Inline monitoring services (IPFIX packet export): ``services inline-monitoring``
and the term action ``inline-monitoring-instance NAME``.

Each sampled packet is exported, clipped to the profile's clip length, as an
IPFIX data record (ingressInterface, egressInterface, flowDirection,
dataLinkFrameSize, dataLinkFrameSection) to the instance's collectors.
"""

from __future__ import annotations

from flowplane import hookimpl


@hookimpl
def flowplane_register_config_sections(register):
    register("services inline-monitoring", "IPFIX packet export: templates and instances with collectors")

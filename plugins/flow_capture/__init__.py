"""Dynamic flow capture and FlowTap: ``services dynamic-flow-capture``.

Control sources add, list, refresh and delete capture criteria over DTCP
(HMAC-SHA1 signed, sequence-windowed); packets matching a criterion are
copied, IP/UDP-encapsulated, to the criterion's content destination.
"""

from __future__ import annotations

from flowplane import hookimpl


@hookimpl
def flowplane_register_config_sections(register):
    register("services dynamic-flow-capture", "DTCP control sources, content destinations and capture groups")

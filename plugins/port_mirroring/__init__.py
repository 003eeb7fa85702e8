"""Port mirroring: ``forwarding-options port-mirroring`` (default and named
instances) and the term actions ``port-mirror`` / ``port-mirror-instance NAME``.

Matching packets are copied, byte for byte, to local interfaces (AF_PACKET)
or to remote analyzers (GRE / ERSPAN-style encapsulation); the original
packet continues untouched.
"""

from __future__ import annotations

from flowplane import hookimpl


@hookimpl
def flowplane_register_config_sections(register):
    register("forwarding-options port-mirroring", "copy matching packets to local interfaces or remote analyzers")

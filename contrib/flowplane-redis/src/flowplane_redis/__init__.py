"""flowplane-redis: the ``redis`` export transport (a Redis stream per flow server or forward entry).

Installed, it is selected by config alone::

    flow-server 127.0.0.1: {port: 6379, transport: redis, stream: flows, version-ipfix: {template: t}}
    forward: [{address: 127.0.0.1, port: 6379, transport: redis, stream: reexport}]
"""

from flowplane.api import hookimpl

from .transport import TRANSPORT_TYPE

__version__ = "0.1.0"


@hookimpl
def flowplane_register_transports(register):
    register("redis", TRANSPORT_TYPE)

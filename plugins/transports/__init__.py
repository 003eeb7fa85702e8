"""Flow export transport drivers (``transport udp;`` / ``transport tcp;``).

Each module registers one :class:`flowplane.export.TransportType` through
``flowplane_register_transports``.  A transport is a startable object
(``await nursery.start(t.run)``) whose ``send_nowait(payloads)`` is
synchronous and never blocks the pipeline: whatever cannot be sent is queued
in a bounded buffer or dropped, and every drop is counted.

* :mod:`.udp`: one connected, non-blocking datagram socket per flow server.
* :mod:`.tcp`: one stream per flow server (IPFIX over TCP, RFC 7011 §10.4),
  reconnecting with backoff; templates are resent on every connect.
"""

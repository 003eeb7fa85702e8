"""NAT event outputs over the transports config names: IPFIX and octet-counted syslog over real TCP
connections, and a third-party transport (registered by a plugin, with a config key of its own)."""

from __future__ import annotations

import socket
import struct

import trio

from flowplane.api import Counters, TransportType, hookimpl
from flowplane.plugins.nat_logging import netlink as nl
from flowplane.plugins.nat_logging.engine import PLUGIN_OBJECT
from flowplane.testing import wait_until_async

V4 = socket.AF_INET


def _msgs(n: int, kind: str = "new") -> list[nl.CtMessage]:
    return [nl.CtMessage(kind, nl.Tuple(V4, "192.0.2.2", "198.51.100.2", 6, 40000 + i, 443),
                         nl.Tuple(V4, "198.51.100.2", "198.51.100.1", 6, 443, 50000 + i), ct_id=i + 1)
            for i in range(n)]


class ListTransport:
    """A transport of a third party's: keeps what it is given (its own config key: ``topic``)."""

    made: list[ListTransport] = []

    def __init__(self, options) -> None:
        self.options = options
        self.counters = Counters("list")
        self.on_connect = None
        self.payloads: list[bytes] = []
        ListTransport.made.append(self)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.payloads += self.on_connect() if self.on_connect else []
        await trio.sleep_forever()

    def send_nowait(self, payloads: list[bytes]) -> None:
        self.payloads += payloads
        self.counters.inc("packets", len(payloads))

    async def flush(self, deadline_s: float) -> bool:
        return True


class ListTransportPlugin:
    @hookimpl
    def flowplane_register_transports(self, register):
        register("list", TransportType("list", ListTransport, keys=("topic",)))


async def _server(received: dict, key: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream):
        async for chunk in stream:
            received[key] += chunk

    await trio.serve_listeners(handle, listeners)


async def test_ipfix_and_syslog_over_tcp_and_a_third_party_transport(make_app):
    received = {"ipfix": b"", "syslog": b""}
    async with trio.open_nursery() as nursery:
        p_ipfix = await nursery.start(_server, received, "ipfix")
        p_syslog = await nursery.start(_server, received, "syslog")
        app = make_app(f"""\
services:
  jflow-log:
    collector tcp-c: {{destination-address: 127.0.0.1, destination-port: {p_ipfix}, transport: tcp}}
    collector bus: {{destination-address: 127.0.0.1, destination-port: 1, transport: list, topic: nat}}
    collector-group g: {{collector: [tcp-c, bus]}}
    template-profile t: {{collector-group: g, template-type: nat, version: ipfix, nat-event-numbering: junos}}
    syslog:
      host 127.0.0.1: {{port: {p_syslog}, transport: tcp, log-prefix: lab}}
""", plugins=[(ListTransportPlugin(), "list-transport")])
        nat = app.pm.get_plugin(PLUGIN_OBJECT)
        for o in nat.outputs:
            await nursery.start(o.exporter.run)
        await wait_until_async(lambda: all(o.exporter.connected for o in nat.outputs), what="connected")
        assert nat.handle(_msgs(3)) == 3
        assert nat.handle(_msgs(3, "destroy")) == 3
        await wait_until_async(lambda: received["syslog"].count(b"NAT44_SESSION_") == 6 and
                               len(received["ipfix"]) >= 2 * 16 + 39 * 6, what="all events")
        nursery.cancel_scope.cancel()

    # IPFIX over TCP: the templates first (on connect), then the data records, junos numbering 1/2
    stream, msgs = received["ipfix"], []
    while stream:
        ver, ln = struct.unpack_from(">HH", stream)
        assert ver == 10
        msgs.append(stream[:ln])
        stream = stream[ln:]
    assert struct.unpack_from(">H", msgs[0], 16)[0] == 2
    events = [m[16 + 4 + i * 39 + 8] for m in msgs[1:] for i in range((len(m) - 20) // 39)]
    assert events == [1, 1, 1, 2, 2, 2]
    # syslog over TCP: octet-counted frames (RFC 6587)
    data, frames = received["syslog"], []
    while data:
        n, _, rest = data.partition(b" ")
        frames.append(rest[:int(n)])
        data = rest[int(n):]
    assert len(frames) == 6 and all(f.startswith(b"<142>1 ") for f in frames)
    assert b"lab session created 192.0.2.2/40000->198.51.100.2/443 tcp translated 198.51.100.1/50000" in frames[0]
    # the third party's transport got its key and the same messages
    [t] = [x for x in ListTransport.made if x.options.options == {"topic": "nat"}]
    assert struct.unpack_from(">H", t.payloads[0], 16)[0] == 2 and len(t.payloads) >= 2

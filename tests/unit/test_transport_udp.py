"""UDP export transport: real datagram sockets on 127.0.0.1 / ::1 only."""

from __future__ import annotations

import errno
import inspect
import socket

import pytest
import trio

from flowplane.export import TransportOptions, TransportType
from flowplane.plugins.transports import udp
from flowplane.plugins.transports.udp import UdpTransport


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _receiver(host: str = "127.0.0.1", port: int = 0) -> trio.socket.SocketType:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(fam, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    await sock.bind((host, port))
    return sock


def _free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _payloads(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") + bytes([i & 0xFF]) * (i % 1400) for i in range(n)]


async def _recv_n(sock, n: int, timeout: float = 5.0) -> list[tuple[bytes, tuple]]:
    out = []
    with trio.fail_after(timeout):
        while len(out) < n:
            out.append(await sock.recvfrom(65536))
    return out


def test_registers_udp_transport_type():
    seen = {}
    udp.flowplane_register_transports(register=lambda name, obj: seen.__setitem__(name, obj))
    assert list(seen) == ["udp"]
    tt = seen["udp"]
    assert isinstance(tt, TransportType) and tt.name == "udp"
    t = tt.factory(TransportOptions("127.0.0.1", 2055))
    assert isinstance(t, UdpTransport)
    assert not inspect.iscoroutinefunction(t.send_nowait)
    assert inspect.iscoroutinefunction(t.run) and inspect.iscoroutinefunction(t.flush)


def test_registered_through_the_plugin_manager():
    from flowplane.testing import build_app

    app = build_app("", plugins=[(udp, "transport-udp")], load_entrypoints=False, configure=False)
    assert app.registries.transports["udp"] is udp.TRANSPORT_TYPE
    assert app.registries.transports.owner("udp") == "transport-udp"


async def test_delivers_n_datagrams_intact(nursery):
    rx = await _receiver()
    port = rx.getsockname()[1]
    t = UdpTransport(TransportOptions("127.0.0.1", port, name="test"))
    local = await nursery.start(t.run)
    assert local[0] == "127.0.0.1" and local[1] > 0
    payloads = _payloads(300)
    for i in range(0, len(payloads), 50):
        assert t.send_nowait(payloads[i:i + 50]) is None
    got = await _recv_n(rx, len(payloads))
    assert [d for d, _ in got] == payloads
    assert {a for _, a in got} == {local}
    c = t.counters
    assert c["packets"] == 300 and c["bytes"] == sum(map(len, payloads))
    assert c["dropped"] == 0 and c["refused"] == 0
    assert await t.flush(1.0) is True
    rx.close()


async def test_closed_port_counts_refused_then_retries_when_a_listener_appears(nursery):
    port = _free_udp_port()
    t = UdpTransport(TransportOptions("127.0.0.1", port))
    await nursery.start(t.run)
    # nothing listens: each datagram draws an ICMP port unreachable, the next send reports it
    for i in range(20):
        t.send_nowait([b"lost%d" % i])
        await trio.sleep(0.005)
    c = t.counters
    assert c["refused"] >= 5
    assert c["errors.ECONNREFUSED"] == c["refused"]
    assert c["packets"] + c["dropped"] == 20
    assert c.drops[("transport", "refused")] == c["refused"]
    refused_before = c["refused"]

    rx = await _receiver(port=port)
    payloads = [b"back%d" % i for i in range(10)]
    for p in payloads:
        t.send_nowait([p])
        await trio.sleep(0.005)
    # at most one datagram meets an error left pending from before the listener existed
    assert c["refused"] - refused_before <= 1
    want = 10 - (c["refused"] - refused_before)
    got = [d for d, _ in await _recv_n(rx, want)]
    assert got == payloads[10 - want:]
    rx.close()


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_loopback(nursery):
    rx = await _receiver("::1")
    t = UdpTransport(TransportOptions("::1", rx.getsockname()[1]))
    local = await nursery.start(t.run)
    assert local[0] == "::1"
    t.send_nowait([b"v6-a", b"v6-b"])
    got = await _recv_n(rx, 2)
    assert [d for d, _ in got] == [b"v6-a", b"v6-b"]
    assert got[0][1][:2] == local[:2]
    rx.close()


async def test_source_address_binding_and_dscp_visible_on_the_receiver(nursery):
    rx = await _receiver()
    rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    t = UdpTransport(TransportOptions("127.0.0.1", rx.getsockname()[1], source_address="127.0.0.2", dscp=46))
    local = await nursery.start(t.run)
    assert local[0] == "127.0.0.2"
    t.send_nowait([b"from .2"])
    with trio.fail_after(5):
        data, anc, _flags, addr = await rx.recvmsg(2048, socket.CMSG_SPACE(4))
    assert data == b"from .2"
    assert addr == local
    tos = [d[0] for lvl, typ, d in anc if lvl == socket.IPPROTO_IP and typ == socket.IP_TOS]
    assert tos == [46 << 2]
    rx.close()


async def test_dns_name_resolved_once_at_start(nursery):
    rx = await _receiver()
    t = UdpTransport(TransportOptions("localhost", rx.getsockname()[1], source_address="127.0.0.1"))
    await nursery.start(t.run)
    assert t.peer_address == ("127.0.0.1", rx.getsockname()[1])
    t.send_nowait([b"by name"])
    assert [d for d, _ in await _recv_n(rx, 1)] == [b"by name"]
    rx.close()


def test_send_before_run_drops_and_counts():
    t = UdpTransport(TransportOptions("127.0.0.1", 9))
    t.send_nowait([b"a", b"b"])
    assert t.counters["dropped"] == 2
    assert t.counters.drops[("transport", "not_ready")] == 2


class _FullBuffer:
    """A socket whose send buffer is 'full' for the first *busy* sends (EAGAIN), then the real one."""

    def __init__(self, real: socket.socket, busy: int, err: int = errno.EAGAIN) -> None:
        self.real, self.busy, self.err = real, busy, err

    def send(self, data: bytes) -> int:
        if self.busy > 0:
            self.busy -= 1
            raise OSError(self.err, "buffer full")
        return self.real.send(data)

    def fileno(self) -> int:
        return self.real.fileno()


@pytest.mark.parametrize("err", [errno.EAGAIN, errno.ENOBUFS])
async def test_buffer_full_queues_in_order_and_run_drains(nursery, err):
    rx = await _receiver()
    t = UdpTransport(TransportOptions("127.0.0.1", rx.getsockname()[1]), queue_max=1000)
    await nursery.start(t.run)
    t._sock = _FullBuffer(t._sock, busy=1, err=err)
    payloads = _payloads(50)
    t.send_nowait(payloads)  # first send fails -> it and everything after it wait in the queue, in order
    assert t.queue_length == 50 and t.counters["queued"] == 50
    assert await t.flush(5.0) is True
    got = [d for d, _ in await _recv_n(rx, 50)]
    assert got == payloads
    assert t.counters["packets"] == 50 and t.counters["dropped"] == 0
    rx.close()


async def test_queue_is_bounded_drops_oldest_and_never_blocks(nursery):
    rx = await _receiver()
    t = UdpTransport(TransportOptions("127.0.0.1", rx.getsockname()[1]), queue_max=8)
    await nursery.start(t.run)
    real = t._sock
    t._sock = _FullBuffer(real, busy=10**9)
    payloads = _payloads(100)
    t.send_nowait(payloads)  # sync: returns with everything queued or dropped
    assert t.queue_length == 8
    assert t.counters["dropped"] == 92 and t.counters.drops[("transport", "queue_full")] == 92
    # the socket stays "full": flush gives up at the deadline
    assert await t.flush(0.05) is False
    t._sock = real  # buffer space again: run() drains on writability
    t._queue._wake.set()
    assert await t.flush(5.0) is True
    got = [d for d, _ in await _recv_n(rx, 8)]
    assert got == payloads[-8:]  # the newest survive
    rx.close()


async def test_other_errors_are_counted_by_errno_and_do_not_raise(nursery):
    rx = await _receiver()
    t = UdpTransport(TransportOptions("127.0.0.1", rx.getsockname()[1]))
    await nursery.start(t.run)
    t.send_nowait([b"x" * 70000, b"fits"])  # EMSGSIZE for the first
    assert t.counters["errors.EMSGSIZE"] == 1 and t.counters["dropped"] == 1
    assert t.counters.drops[("transport", "error")] == 1
    assert [d for d, _ in await _recv_n(rx, 1)] == [b"fits"]
    rx.close()

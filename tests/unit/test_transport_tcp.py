"""TCP export transport (IPFIX over TCP): real stream sockets on 127.0.0.1 / ::1 only.

Messages here are self-delimiting like IPFIX: ``!IcI`` = total length, kind
(``T`` template / ``D`` data), sequence number, then filler bytes equal to
``seq & 0xff``, so a corrupted or interleaved stream cannot parse.
"""

from __future__ import annotations

import inspect
import random
import socket
import struct

import pytest
import structlog
import trio

from flowplane.export import TransportOptions, TransportType
from flowplane.plugins.transports import tcp
from flowplane.plugins.transports.tcp import TcpTransport, backoff_delays
from flowplane.testing import wait_until_async

HDR = struct.Struct("!IcI")


def msg(kind: bytes, seq: int, size: int = 64) -> bytes:
    size = max(size, HDR.size)
    return HDR.pack(size, kind, seq) + bytes([seq & 0xFF]) * (size - HDR.size)


def parse(stream: bytes) -> list[tuple[bytes, int]]:
    out, off = [], 0
    while off < len(stream):
        assert len(stream) - off >= HDR.size, "truncated header"
        size, kind, seq = HDR.unpack_from(stream, off)
        assert kind in (b"T", b"D") and size >= HDR.size, f"corrupt stream at {off}"
        body = stream[off + HDR.size: off + size]
        assert len(body) == size - HDR.size, "truncated message"
        assert body == bytes([seq & 0xFF]) * len(body), f"corrupt body at {off}"
        out.append((kind, seq))
        off += size
    return out


def templates(n: int = 2) -> list[bytes]:
    return [msg(b"T", 1000 + i, 40) for i in range(n)]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Conn:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.data = bytearray()
        self.eof = False
        self.scope = trio.CancelScope()

    def close(self) -> None:
        """Close now: with unread data queued the kernel sends a RST."""
        self.scope.cancel()
        self.sock.close()


class Collector:
    """A loopback TCP collector: accepts, reads (unless paused), keeps every connection's bytes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, rcvbuf: int | None = None,
                 reading: bool = True) -> None:
        self.host, self.port, self.rcvbuf = host, port, rcvbuf
        self.conns: list[Conn] = []
        self.reading = reading
        self._resume = trio.Event()
        self._scope = trio.CancelScope()
        self.listener = None

    async def start(self, nursery: trio.Nursery) -> Collector:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        ls = trio.socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)  # inherited by accepted sockets
        await ls.bind((self.host, self.port))
        ls.listen(8)
        self.port = ls.getsockname()[1]
        self.listener = ls
        nursery.start_soon(self._accept_loop, nursery)
        return self

    async def _accept_loop(self, nursery) -> None:
        with self._scope:
            while True:
                sock, _ = await self.listener.accept()
                conn = Conn(sock)
                self.conns.append(conn)
                nursery.start_soon(self._serve, conn)

    async def _serve(self, conn: Conn) -> None:
        with conn.scope:
            try:
                while True:
                    while not self.reading:
                        await self._resume.wait()
                    data = await conn.sock.recv(65536)
                    if not data:
                        conn.eof = True
                        return
                    conn.data += data
            except (OSError, trio.ClosedResourceError):
                conn.eof = True

    def resume(self) -> None:
        self.reading = True
        self._resume.set()

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._scope.cancel()
        self.listener.close()
        for c in self.conns:
            c.close()

    async def wait_messages(self, conn_index: int, n: int, timeout: float = 5.0) -> list[tuple[bytes, int]]:
        with trio.fail_after(timeout):
            while True:
                if len(self.conns) > conn_index:
                    data = bytes(self.conns[conn_index].data)
                    try:
                        got = parse(data)
                    except AssertionError:
                        got = None  # a message still arriving
                    if got is not None and len(got) >= n:
                        return got
                await trio.sleep(0.002)


def opts(port: int, host: str = "127.0.0.1", **kw) -> TransportOptions:
    kw.setdefault("reconnect_s", 0.02)
    kw.setdefault("reconnect_max_s", 0.2)
    return TransportOptions(host, port, **kw)


def D(seqs) -> list[tuple[bytes, int]]:
    return [(b"D", s) for s in seqs]


T2 = [(b"T", 1000), (b"T", 1001)]


# -- registration and the contract --------------------------------------------------------

def test_registers_tcp_transport_type():
    seen = {}
    tcp.flowplane_register_transports(register=lambda name, obj: seen.__setitem__(name, obj))
    assert list(seen) == ["tcp"]
    tt = seen["tcp"]
    assert isinstance(tt, TransportType) and tt.name == "tcp"
    t = tt.factory(TransportOptions("127.0.0.1", 4739))
    assert isinstance(t, TcpTransport)
    assert not inspect.iscoroutinefunction(t.send_nowait)
    assert t.on_connect is None


def test_backoff_doubles_to_the_cap_with_bounded_jitter():
    d = backoff_delays(1.0, 30.0)
    assert [next(d) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    d = backoff_delays(1.0, 30.0, jitter=0.25, rng=random.Random(7))
    nominal = [1, 2, 4, 8, 16, 30, 30, 30]
    got = [next(d) for _ in nominal]
    assert all(0.75 * n <= g <= n for g, n in zip(got, nominal))
    assert len(set(got[-3:])) == 3  # jittered: not in step


# -- delivery -------------------------------------------------------------------------------

async def test_messages_arrive_concatenated_in_order_templates_first(nursery):
    col = await Collector().start(nursery)
    t = TcpTransport(opts(col.port))
    t.on_connect = lambda: templates()
    t.send_nowait([msg(b"D", i, 100 + i) for i in range(5)])  # queued before run(): sent after templates
    await nursery.start(t.run)
    t.send_nowait([msg(b"D", i, 3000) for i in range(5, 200)])
    got = await col.wait_messages(0, 202)
    assert got == T2 + D(range(200))
    assert await t.flush(5.0) is True
    c = t.counters
    assert c["packets"] == 202 and c["templates"] == 2 and c["connects"] == 1
    assert c["bytes"] == len(col.conns[0].data)
    assert c["disconnects"] == 0 and c["dropped_backlog"] == 0


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_and_source_address(nursery):
    col = await Collector("::1").start(nursery)
    t = TcpTransport(opts(col.port, host="::1", source_address="::1"))
    await nursery.start(t.run)
    t.send_nowait([msg(b"D", 1)])
    assert await col.wait_messages(0, 1) == D([1])
    peer = col.conns[0].sock.getpeername()
    assert peer[0] == "::1" and peer[1] == t.local_address[1]


async def test_source_address_binding_visible_on_the_collector(nursery):
    col = await Collector().start(nursery)
    t = TcpTransport(opts(col.port, source_address="127.0.0.3"))
    await nursery.start(t.run)
    t.send_nowait([msg(b"D", 1)])
    assert await col.wait_messages(0, 1) == D([1])
    assert col.conns[0].sock.getpeername() == t.local_address
    assert t.local_address[0] == "127.0.0.3"


# -- reconnect ------------------------------------------------------------------------------

async def test_collector_down_at_start_backoff_then_queued_payloads_after_templates(nursery, autojump_clock):
    port = _free_tcp_port()
    t = TcpTransport(opts(port, reconnect_s=1.0, reconnect_max_s=8.0), jitter=0.0)
    t.on_connect = lambda: templates()
    with structlog.testing.capture_logs() as logs:
        await nursery.start(t.run)
        t.send_nowait([msg(b"D", i) for i in range(10)])
        # record the virtual time of every connection attempt
        times, seen = [], 0
        start = trio.current_time()
        while trio.current_time() - start < 20.0:
            if t.counters["connect_attempts"] != seen:
                seen = t.counters["connect_attempts"]
                times.append(round(trio.current_time() - start, 1))
            await trio.sleep(0.05)
        # attempts at 0, then waits 1, 2, 4, 8 (the cap): 0, 1, 3, 7, 15; next at 23
        assert times == [0.0, 1.0, 3.0, 7.0, 15.0]
        assert t.counters["connect_failures"] == 5 and t.counters["connects"] == 0
        assert t.backlog_length == 10
        col = await Collector(port=port).start(nursery)
        got = await col.wait_messages(0, 12, timeout=30.0)
        assert got == T2 + D(range(10))
        assert trio.current_time() - start == pytest.approx(23.0, abs=0.1)
    events = [e["event"] for e in logs]
    assert events.count("exporter_connect_failed") == 1  # one line per state change, not per attempt
    assert events.count("exporter_connected") == 1
    failed = next(e for e in logs if e["event"] == "exporter_connect_failed")
    assert failed["error"] == "ECONNREFUSED"


async def test_collector_restart_mid_stream_resends_templates_and_continues(nursery):
    col = await Collector().start(nursery)
    port = col.port
    t = TcpTransport(opts(port))
    calls = []
    t.on_connect = lambda: calls.append(1) or templates()
    await nursery.start(t.run)
    with structlog.testing.capture_logs() as logs:
        t.send_nowait([msg(b"D", i, 500) for i in range(50)])
        assert await col.wait_messages(0, 52) == T2 + D(range(50))
        col.stop()
        await wait_until_async(lambda: t.counters["disconnects"] == 1)
        t.send_nowait([msg(b"D", i, 500) for i in range(50, 80)])  # while the collector is away
        await trio.sleep(0.1)  # the collector stays away a moment: time passing on purpose, nothing to wait for
        col2 = await Collector(port=port).start(nursery)
        assert await col2.wait_messages(0, 32) == T2 + D(range(50, 80))
        t.send_nowait([msg(b"D", i, 500) for i in range(80, 100)])
        assert await col2.wait_messages(0, 52) == T2 + D(range(50, 100))
    assert len(calls) == 2
    c = t.counters
    assert c["connects"] == 2 and c["disconnects"] == 1 and c["partial_discarded"] == 0
    assert c["packets"] == 104 and c["dropped_backlog"] == 0
    # one line per state change, never one per payload or per failed reconnect
    assert [e["event"] for e in logs] == ["exporter_connected", "exporter_disconnected", "exporter_connected"]
    disc = next(e for e in logs if e["event"] == "exporter_disconnected")
    assert disc["error"] in ("closed by peer", "ECONNRESET", "EPIPE")


# -- stalled collector, backlog, flush --------------------------------------------------------

async def test_stalled_collector_backlog_bounded_drops_counted_send_nowait_fast(nursery):
    col = await Collector(rcvbuf=4096, reading=False).start(nursery)
    backlog = 8
    t = TcpTransport(opts(col.port, backlog=backlog), sndbuf=4096)
    t.on_connect = lambda: templates()
    await nursery.start(t.run)
    await wait_until_async(lambda: t.connected and col.conns)
    assert not inspect.iscoroutinefunction(t.send_nowait)
    n, size = 2000, 1000
    max_held = 0
    for i in range(n):
        r = t.send_nowait([msg(b"D", i, size)])
        assert r is None  # sync: nothing to await
        assert t.backlog_length <= backlog
        max_held = max(max_held, t.queued_bytes)
        if i % 50 == 0:
            await trio.sleep(0.001)  # let the writer fill the kernel buffers
    c = t.counters
    # never waiting on the socket: bounded memory whatever the collector does (speed is for tests/bench)
    assert max_held <= (backlog + TcpTransport.INFLIGHT_MAX) * size
    assert c["dropped_backlog"] > n // 2
    assert c.drops[("transport", "backlog_full")] == c["dropped_backlog"]
    assert c["disconnects"] == 0 and c["partial_discarded"] == 0
    # every payload is accounted for: written whole, dropped, or still held
    written_data = c["packets"] - 2
    held = t.backlog_length + len(t._inflight)
    assert written_data + c["dropped_backlog"] + held == n

    # the collector does not read: flush gives up at the deadline
    t0 = trio.current_time()
    assert await t.flush(0.2) is False
    assert trio.current_time() - t0 == pytest.approx(0.2, abs=0.1)

    # the collector reads again: flush drains and returns True
    col.resume()
    assert await t.flush(5.0) is True
    sent = c["packets"]
    got = await col.wait_messages(0, sent)
    assert got[:2] == T2
    seqs = [s for k, s in got[2:]]
    assert all(k == b"D" for k, _ in got[2:])
    assert seqs == sorted(seqs) and len(seqs) == n - c["dropped_backlog"]
    assert seqs[-backlog:] == list(range(n - backlog, n))  # oldest dropped, newest kept
    assert c["bytes"] == len(col.conns[0].data)


async def test_flush_true_when_nothing_queued_and_false_while_collector_away(nursery):
    t = TcpTransport(opts(_free_tcp_port()))
    assert await t.flush(0.01) is True
    await nursery.start(t.run)
    t.send_nowait([msg(b"D", 1)])
    assert await t.flush(0.1) is False
    assert t.backlog_length == 1


async def test_half_written_message_at_disconnect_is_discarded_and_counted(nursery):
    col = await Collector(rcvbuf=4096, reading=False).start(nursery)
    t = TcpTransport(opts(col.port), sndbuf=4096)
    t.on_connect = lambda: templates()
    await nursery.start(t.run)
    await wait_until_async(lambda: t.connected and col.conns)
    big = msg(b"D", 7, 1_000_000)
    t.send_nowait([big, msg(b"D", 8, 100)])
    # the big message is partly written, its tail waits for a collector that does not read
    await wait_until_async(lambda: t._inflight and t._inflight[0].data is big and t._inflight[0].off > 0)
    assert t.counters["packets"] == 2  # the templates went out whole
    with structlog.testing.capture_logs() as logs:
        col.resume()
        col.conns[0].close()  # RST: unread data queued
        await wait_until_async(lambda: t.counters["disconnects"] == 1)
        t.send_nowait([msg(b"D", 9, 100)])
        # reconnects to the same listener: templates, then the untouched message and the new one
        got = await col.wait_messages(1, 4)
    assert got == T2 + D([8, 9])
    c = t.counters
    assert c["partial_discarded"] == 1 and c.drops[("transport", "partial_discarded")] == 1
    disc = next(e for e in logs if e["event"] == "exporter_disconnected")
    assert disc["partial_discarded"] == 1
    assert await t.flush(5.0) is True


async def test_on_connect_failure_is_counted_and_data_still_flows(nursery):
    col = await Collector().start(nursery)
    t = TcpTransport(opts(col.port))

    def broken():
        raise RuntimeError("encoder bug")

    t.on_connect = broken
    await nursery.start(t.run)
    t.send_nowait([msg(b"D", 1)])
    assert await col.wait_messages(0, 1) == D([1])
    assert t.counters["on_connect_errors"] == 1

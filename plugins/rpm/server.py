"""The RPM probe server (``services rpm probe-server udp|tcp``): answers udp-ping / tcp-ping probes.

UDP: a datagram carrying the RPM header (see :mod:`.wire`) is returned with the server's kernel receive time
(t2) and its send time (t3) filled in; any other non-empty datagram is echoed unchanged (RFC 862).
TCP: per connection, the first 40 octets are stamped the same way when they are an RPM header; every octet
is echoed.  Connections idle for ``TCP_IDLE_S`` are closed, and at most ``MAX_TCP_CONNECTIONS`` are served at
once (more are closed on accept and counted).  Everything unusual is counted, never fatal.
"""

from __future__ import annotations

import socket
import time

import structlog
import trio

from . import wire
from .config import ServerConfig

log = structlog.get_logger("flowplane.rpm")

TCP_IDLE_S = 10.0
MAX_TCP_CONNECTIONS = 256
RCVBUF = 4 << 20  # asked for; the kernel caps it at net.core.rmem_max


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class ProbeServer:
    """One listener (UDP or TCP) of the probe server, with its counters."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.counters: dict[str, int] = {}
        self.bound: tuple | None = None
        self.connections = 0

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def status(self) -> dict:
        return {"protocol": self.cfg.protocol, "port": self.bound[1] if self.bound else self.cfg.port,
                "address": self.cfg.address, "listening": self.bound is not None, "counters": dict(self.counters),
                "connections": self.connections}

    def _socket(self, kind: int) -> socket.socket:
        fam = _family(self.cfg.address)
        s = socket.socket(fam, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, wire.SO_TIMESTAMPNS, 1)
            if kind == socket.SOCK_DGRAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # bursts of probes from many tests
            s.bind((self.cfg.address, self.cfg.port))
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        kind = socket.SOCK_DGRAM if self.cfg.protocol == "udp" else socket.SOCK_STREAM
        try:
            sock = self._socket(kind)
        except OSError as exc:
            log.error("rpm_probe_server_failed", protocol=self.cfg.protocol, port=self.cfg.port,
                      address=self.cfg.address, error=exc.strerror or str(exc))
            self.count("bind-errors")
            task_status.started(None)
            return
        self.bound = sock.getsockname()[:2]
        log.info("rpm_probe_server_listening", protocol=self.cfg.protocol, address=self.bound[0], port=self.bound[1])
        try:
            if kind == socket.SOCK_DGRAM:
                task_status.started(self.bound)
                await self._udp(sock)
            else:
                sock.listen(128)
                task_status.started(self.bound)
                await self._tcp(trio.socket.from_stdlib_socket(sock))
        finally:
            sock.close()
            self.bound = None

    # -- UDP --------------------------------------------------------------------------------------------------
    async def _udp(self, sock: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(256):  # a batch, then give other tasks a turn
                try:
                    data, anc, flags, peer = sock.recvmsg(65535, wire.ANC_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    self.count("receive-errors")
                    continue
                self.count("received")
                if flags & socket.MSG_TRUNC:
                    self.count("dropped-truncated")
                    continue
                reply = self.answer(data, wire.kernel_time(anc) or time.time_ns())
                if reply is None:
                    continue
                try:
                    sock.sendto(reply, peer)
                    self.count("answered")
                except OSError:
                    self.count("send-errors")
            await trio.sleep(0)

    def answer(self, data: bytes, t2: int) -> bytes | None:
        if not data:
            self.count("dropped-empty")
            return None
        if wire.is_rpm(data):
            self.count("rpm-probes")
            return wire.stamp_reply(data, t2)
        self.count("echoed-not-rpm")
        return data

    # -- TCP --------------------------------------------------------------------------------------------------
    async def _tcp(self, listener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    conn, _peer = await listener.accept()
                except OSError:
                    self.count("accept-errors")
                    await trio.sleep(0.01)
                    continue
                self.count("connections")
                if self.connections >= MAX_TCP_CONNECTIONS:
                    self.count("connections-refused-limit")
                    conn.close()
                    continue
                nursery.start_soon(self._connection, conn)

    async def _connection(self, conn) -> None:
        self.connections += 1
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, wire.SO_TIMESTAMPNS, 1)
            head = b""
            while True:
                got = None
                with trio.move_on_after(TCP_IDLE_S):
                    got = await conn.recvmsg(65536, wire.ANC_SIZE)
                if got is None:
                    self.count("closed-idle")
                    return
                data, anc = got[0], got[1]
                if not data:
                    return
                t2 = wire.kernel_time(anc) or time.time_ns()
                self.count("received-octets", len(data))
                if len(head) < wire.RPM_SIZE:  # the connection's first 40 octets: an RPM header?
                    take = wire.RPM_SIZE - len(head)
                    head += data[:take]
                    if len(head) < wire.RPM_SIZE:
                        continue
                    if wire.is_rpm(head):
                        self.count("rpm-probes")
                        data = wire.stamp_reply(head, t2) + data[take:]
                    else:
                        self.count("echoed-not-rpm")
                        data = head + data[take:]
                while data:
                    sent = await conn.send(data)
                    data = data[sent:]
        except OSError:
            self.count("connection-errors")
        finally:
            self.connections -= 1
            conn.close()

"""IPFIX over TCP (RFC 7011 section 10.4): accept many exporters, frame messages by the header length.

One listening socket per ``listen: {protocol: tcp}`` entry (``SO_REUSEADDR``,
``SO_REUSEPORT``, ``IPV6_V6ONLY`` on IPv6, like the UDP listeners).  ``run``
binds and listens before it reports started, then accepts in a loop; each
connection is one trio task in the listener's nursery.  At most
``max_connections`` are open at once: a connection beyond that is accepted
and closed at once, counted (``tcp connection-limit``), so the exporter sees
the close and retries later instead of waiting in the kernel's backlog.

Framing: the stream is IPFIX messages back to back.  Each read (up to
:data:`READ_SIZE` bytes) is appended to what is left of the previous one;
every complete message in it -- a zero-copy ``memoryview`` slice -- goes to
``handler(messages, address, session)`` in one batch, which is the same
decoder path as the UDP datagrams (``Collector.handle_session``).  A message
split across reads waits for its tail; several messages in one read are one
batch.  A version other than 10 or a length below 16 (the header; the 16-bit
length field cannot exceed 65535) cannot be resynchronised on a stream: the
connection is closed and counted (``tcp bad-version`` / ``tcp bad-length``);
the other connections go on.  A message cut by the end of the connection is
counted ``tcp truncated``.

Template scope: each connection is its own session (``tcp:[addr]:port``) in
the decoder, so templates learnt over it are used only for its data and are
forgotten when it closes (RFC 7011 section 8.1): a new connection from the
same exporter starts with no templates.  Templates over TCP never expire by
age.  TCP gives backpressure: while the decoder is busy the kernel buffers
fill and the exporter's writes wait, nothing is dropped here.

Counters (``show services flow-collector``): ``accepted``, ``refused``,
``closed``, ``errors``, ``messages``, ``bytes``; ``connections`` is the open set.
"""

from __future__ import annotations

import socket
import struct

import structlog
import trio

from .config import Listen
from .listener import _bind, _take_over, shared_socket

log = structlog.get_logger("flowplane.collector")

READ_SIZE = 256 * 1024
IPFIX_HEADER = 16
LISTEN_BACKLOG = 128
_VL = struct.Struct(">HH")


def session_label(host: str, port: int) -> str:
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


class TcpConnection:
    """One exporter's connection: the socket, the unframed tail, its counters."""

    __slots__ = ("sock", "address", "session", "pending", "messages", "bytes", "closed_reason")

    def __init__(self, sock: socket.socket, peer: tuple) -> None:
        self.sock = sock
        self.address = peer[0]
        self.session = session_label(peer[0], peer[1])
        self.pending = b""  # bytes of an incomplete message
        self.messages = 0
        self.bytes = 0
        self.closed_reason: str | None = None


def frame(buf: bytes) -> tuple[list[memoryview], int, str | None]:
    """Complete IPFIX messages at the start of *buf*: (messages, bytes used, framing error or None)."""
    out: list[memoryview] = []
    mv = memoryview(buf)
    o, n = 0, len(buf)
    while n - o >= 4:
        version, length = _VL.unpack_from(buf, o)
        if version != 10:
            return out, o, "bad-version"
        if length < IPFIX_HEADER:
            return out, o, "bad-length"
        if n - o < length:
            break
        out.append(mv[o:o + length])
        o += length
    if n - o >= 2 and (buf[o] << 8 | buf[o + 1]) != 10:
        return out, o, "bad-version"
    return out, o, None


class TcpListener:
    """``listen: {protocol: tcp}``: accept, frame, hand messages to ``handler``; bounded connections."""

    def __init__(self, listen: Listen, handler, counters, *, max_connections: int = 256,
                 on_close=None, rcvbuf: int | None = None, idle_timeout: float = 0.0) -> None:
        self.listen = listen
        self.handler = handler  # handler(list[memoryview], address, session) -> None
        self.on_close = on_close  # on_close(session) -> None: forget the session's templates
        self.counters = counters  # the collector's: drops ("tcp", reason)
        self.max_connections = max_connections
        self.rcvbuf_wanted = rcvbuf
        self.rcvbuf = 0
        self.sock: socket.socket | None = None
        self.bound: tuple | None = None
        self.connections: dict[str, TcpConnection] = {}
        self.accepted = 0
        self.refused = 0
        self.closed = 0
        self.errors = 0
        self.datagrams = 0  # messages, named like the UDP listener's field for 'show'
        self.bytes = 0
        self.drops_at_clear = 0
        self._mark = 0
        self.idle_timeout = idle_timeout  # seconds without data before a connection is closed (0: never)
        self.idle_closed = 0
        self.handover = False  # set by adopt(): the running task leaves sockets open when cancelled
        self._done: trio.Event | None = None

    @property
    def port(self) -> int:
        return self.bound[1] if self.bound else self.listen.port

    def bind(self) -> socket.socket:
        s = shared_socket(self.listen.address, socket.SOCK_STREAM)
        try:
            if self.rcvbuf_wanted:  # inherited by accepted sockets
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(self.rcvbuf_wanted, 4 << 20))
                except OSError:
                    pass
            self.rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            _bind(s, self.listen.address, self.listen.port, "tcp")
            s.listen(LISTEN_BACKLOG)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.bound = s.getsockname()
        return s

    def adopt(self, handler, on_close, max_connections: int, idle_timeout: float) -> None:
        """A reload kept this listener (same address, port, buffer): the listening socket and every
        open connection (with its templates and unframed bytes) go on; messages go to *handler*."""
        self.handler = handler
        self.on_close = on_close
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handover = True

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        s = self.sock if self.sock is not None else self.bind()
        task_status.started()
        await _take_over(self)
        try:
            async with trio.open_nursery() as nursery:
                for c in list(self.connections.values()):  # carried over a reload
                    nursery.start_soon(self._serve, c, True)
                while True:
                    await trio.lowlevel.wait_readable(s)
                    while True:
                        try:
                            conn, peer = s.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as exc:  # ECONNABORTED, EMFILE...: count, keep listening
                            self.errors += 1
                            self.counters.drop("tcp", f"accept-{errno_name(exc)}")
                            break
                        if len(self.connections) >= self.max_connections:
                            self.refused += 1
                            self.counters.drop("tcp", "connection-limit")
                            conn.close()
                            continue
                        conn.setblocking(False)
                        c = TcpConnection(conn, peer)
                        self.connections[c.session] = c
                        self.accepted += 1
                        nursery.start_soon(self._serve, c)
                    await trio.lowlevel.checkpoint()
        finally:
            if not self.handover:
                self.sock = None
                s.close()
            self._done.set()

    async def _serve(self, c: TcpConnection, carried: bool = False) -> None:
        if not carried:
            log.info("collector_tcp_connected", listener=self.listen.label, exporter=c.session)
        reason = "closed by exporter"
        try:
            while True:
                if self.idle_timeout > 0:
                    with trio.move_on_after(self.idle_timeout) as idle:
                        await trio.lowlevel.wait_readable(c.sock)
                    if idle.cancelled_caught:  # the exporter went silent: free the slot (it reconnects)
                        self.idle_closed += 1
                        self.counters.inc("tcp-idle-closed")
                        reason = "idle timeout"
                        break
                else:
                    await trio.lowlevel.wait_readable(c.sock)
                err = self._read(c)
                if err is not None:
                    reason = err
                    break
        finally:
            if not self.handover:  # a reload hands the connection to the next graph's task
                self._close(c, reason)

    def _read(self, c: TcpConnection) -> str | None:
        """Read what is there and decode the complete messages; a reason when the connection must end."""
        try:
            chunk = c.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self.errors += 1
            self.counters.drop("tcp", f"read-{errno_name(exc)}")
            return errno_name(exc)
        if not chunk:
            if c.pending:
                self.counters.drop("tcp", "truncated")
            return "closed by exporter"
        c.bytes += len(chunk)
        self.bytes += len(chunk)
        buf = c.pending + chunk if c.pending else chunk
        msgs, used, err = frame(buf)
        c.pending = buf[used:] if used < len(buf) else b""
        if msgs:
            c.messages += len(msgs)
            self.datagrams += len(msgs)
            self.handler(msgs, c.address, c.session)
        if err is not None:
            self.errors += 1
            self.counters.drop("tcp", err)
            log.warning("collector_tcp_framing", listener=self.listen.label, exporter=c.session, error=err)
            return err
        return None

    def _close(self, c: TcpConnection, reason: str) -> None:
        c.closed_reason = reason
        self.connections.pop(c.session, None)
        self.closed += 1
        try:
            c.sock.close()
        finally:
            if self.on_close is not None:
                self.on_close(c.session)
        log.info("collector_tcp_closed", listener=self.listen.label, exporter=c.session, reason=reason,
                 messages=c.messages)

    def drain_now(self) -> int:
        """Shutdown: the connection tasks keep reading; messages handled since the last call."""
        n = self.datagrams - self._mark
        self._mark = self.datagrams
        return n

    def kernel_drops(self) -> int | None:
        return None  # TCP does not drop: the exporter waits

    def status(self) -> dict:
        return {"connections": sorted(self.connections), "accepted": self.accepted, "refused": self.refused,
                "closed": self.closed, "errors": self.errors, "max_connections": self.max_connections,
                "bytes": self.bytes, "idle_closed": self.idle_closed, "idle_timeout": self.idle_timeout}


def errno_name(exc: OSError) -> str:
    import errno

    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)

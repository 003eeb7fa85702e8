"""TCP flow export transport (``transport tcp;``): IPFIX over TCP, RFC 7011 §10.4.

IPFIX messages carry their own length, so the stream is simply the messages
one after another.  ``run()`` keeps one connection to the collector:

* **Connect** (``connect_timeout_s``, default 5 s; the name is looked up on
  every attempt; ``source_address`` bound, ``dscp`` set, ``TCP_NODELAY``).  On
  success the delay is reset, ``exporter_connected`` is logged, and the
  messages returned by ``on_connect()`` (the encoder's templates and options
  data) are sent **first**, then the backlog, then new payloads.
* **Disconnect** (send error, EOF or error read from the collector):
  ``disconnects`` is counted, ``exporter_disconnected`` logged once with the
  error, and the connection is retried.
* **Backoff.**  Failed attempts and reconnects wait ``reconnect_s``, doubling
  up to ``reconnect_max_s``; each wait is shortened by a random jitter of up
  to ``jitter`` (25 %) so that many exporters do not reconnect in step.  The
  first failure of a series is logged (``exporter_connect_failed``) unless
  ``exporter_disconnected`` just said so; the following ones are only
  counted (``connect_failures``).  So the log holds one line per state change.
* **Backlog.**  ``send_nowait(payloads)`` is synchronous and O(1) per payload:
  it appends to a backlog of at most ``TransportOptions.backlog`` payloads and
  wakes the writer.  When the backlog is full the **oldest** payload is
  dropped (``dropped_backlog``, drop reason ``backlog_full``): after an outage
  the freshest flows are the useful ones, and the collector sees a sequence
  number gap either way.  Payloads queued while disconnected are sent after
  the reconnect, behind the ``on_connect`` messages.  A stalled collector
  (connection open, never reads) fills the kernel send buffer; the writer
  then waits for writability, the backlog fills and drops are counted, and
  the pipeline never waits.  Memory is bounded by ``backlog`` payloads plus
  at most :attr:`TcpTransport.INFLIGHT_MAX` messages being written.
* **Partial writes.**  The writer takes up to ``INFLIGHT_MAX`` messages at a
  time (one ``sendmsg``); a short write keeps the unsent tail, which is
  finished before anything else.  At a disconnect a message of which some but
  not all bytes were written is **discarded** and counted
  (``partial_discarded``): the new connection starts with templates and a
  message tail would corrupt it.  In-flight data messages not yet started go
  back to the head of the backlog; in-flight template messages are dropped
  (``on_connect`` produces fresh ones).  Bytes the kernel had accepted before
  a reset are lost without trace (TCP cannot tell).
* ``flush(deadline_s)`` waits up to *deadline_s* seconds (a duration) until
  the backlog and in-flight messages have been written to the socket and
  returns True if so (False while the collector is away or stalled).  Bytes
  written are delivered by the kernel after the socket is closed.

Data from the collector is read and discarded (an IPFIX collector sends
nothing over the connection); EOF from the collector is a disconnect.

Counters: ``packets`` (messages fully written, templates included),
``bytes``, ``templates`` (``on_connect`` messages queued), ``connects``,
``connect_attempts``, ``connect_failures``, ``disconnects``,
``dropped_backlog``, ``partial_discarded``, ``errors.<ERRNO>``; drops
``(transport, backlog_full|partial_discarded)``.
"""

from __future__ import annotations

import random
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
import trio

from flowplane.api import Counters, TransportOptions, TransportType, hookimpl, host_port

from ._sockopts import errname, prepare, resolve

log = structlog.get_logger("flowplane.export")


class _Msg:
    __slots__ = ("data", "off", "template")

    def __init__(self, data: bytes, template: bool) -> None:
        self.data = data
        self.off = 0
        self.template = template


def backoff_delays(first_s: float, max_s: float, jitter: float = 0.0, rng: random.Random | None = None):
    """Yield reconnect waits: *first_s* doubling up to *max_s*, each shortened by up to *jitter*."""
    d = max(first_s, 0.0)
    rnd = (rng or random).random
    while True:
        yield d * (1.0 - jitter * rnd()) if jitter else d
        d = min(d * 2, max_s)


class TcpTransport:
    """One TCP connection to one collector, kept up by ``run()``.  See the module docstring."""

    INFLIGHT_MAX = 16

    def __init__(self, options: TransportOptions, *, sndbuf: int | None = None,
                 connect_timeout_s: float = 5.0, jitter: float = 0.25,
                 rng: random.Random | None = None) -> None:
        self.options = options
        self.name = options.name or f"tcp/{options.host}:{options.port}"
        self.counters = Counters(f"transport {self.name}")
        self.on_connect: Callable[[], list[bytes]] | None = None
        self.backlog_max = max(1, options.backlog)
        self.sndbuf = sndbuf
        self.connect_timeout_s = connect_timeout_s
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.connected = False
        self.local_address: tuple | None = None
        self._backlog: deque[bytes] = deque()
        self._inflight: deque[_Msg] = deque()
        self._wake = trio.Event()
        self._drained: trio.Event | None = None

    # -- data path (sync, never blocks) ------------------------------------------------
    def send_nowait(self, payloads: list[bytes]) -> None:
        """Append to the bounded backlog (dropping the oldest when full) and wake the writer."""
        b = self._backlog
        dropped = 0
        for data in payloads:
            if not data:
                continue
            if len(b) >= self.backlog_max:
                b.popleft()
                dropped += 1
            b.append(data)
        if dropped:
            self.counters.inc("dropped_backlog", dropped)
            self.counters.drop("transport", "backlog_full", dropped)
        self._wake.set()

    @property
    def backlog_length(self) -> int:
        return len(self._backlog)

    @property
    def queued_bytes(self) -> int:
        """Bytes held by the transport (backlog + unsent in-flight)."""
        return sum(map(len, self._backlog)) + sum(len(m.data) - m.off for m in self._inflight)

    # -- connection loop ---------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, write, reconnect with backoff, forever.  ``started()`` at once (no socket yet)."""
        task_status.started()
        delays = backoff_delays(self.options.reconnect_s, self.options.reconnect_max_s, self.jitter, self.rng)
        failing = False
        while True:
            self.counters.inc("connect_attempts")
            try:
                sock = await self._connect()
            except (OSError, trio.TooSlowError) as exc:
                self.counters.inc("connect_failures")
                wait = next(delays)
                if not failing:
                    failing = True
                    log.warning("exporter_connect_failed", transport="tcp", exporter=self.name,
                                error=errname(exc), retry_in_s=round(wait, 3))
                await trio.sleep(wait)
                continue
            failing = False
            delays = backoff_delays(self.options.reconnect_s, self.options.reconnect_max_s, self.jitter, self.rng)
            self.connected = True
            self.counters.inc("connects")
            try:
                self.local_address = sock.getsockname()
                log.info("exporter_connected", transport="tcp", exporter=self.name,
                         local=_fmt(self.local_address), peer=_fmt(sock.getpeername()))
                reason = await self._session(sock)
            finally:
                self.connected = False
                sock.close()
                discarded = self._abort_inflight()
            self.counters.inc("disconnects")
            failing = True  # already reported down: failed reconnects are only counted
            wait = next(delays)
            log.warning("exporter_disconnected", transport="tcp", exporter=self.name, error=reason,
                        partial_discarded=discarded, backlog=len(self._backlog), retry_in_s=round(wait, 3))
            await trio.sleep(wait)

    async def _connect(self) -> trio.socket.SocketType:
        o = self.options
        family, sockaddr = await resolve(o.host, o.port, socket.SOCK_STREAM, o.source_address)
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            prepare(sock, family, dscp=o.dscp, sndbuf=self.sndbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if o.source_address:
                await sock.bind((o.source_address, 0))
            with trio.fail_after(self.connect_timeout_s):
                await sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _session(self, sock: trio.socket.SocketType) -> str:
        """Write until an error or EOF; return why the connection ended."""
        reason = "closed"

        async with trio.open_nursery() as nursery:
            async def reader() -> None:
                nonlocal reason
                try:
                    while await sock.recv(4096):
                        pass
                    reason = "closed by peer"
                except OSError as exc:
                    reason = errname(exc)
                    self.counters.inc(f"errors.{reason}")
                nursery.cancel_scope.cancel()

            async def writer() -> None:
                nonlocal reason
                try:
                    await self._write(sock)
                except OSError as exc:
                    reason = errname(exc)
                    self.counters.inc(f"errors.{reason}")
                nursery.cancel_scope.cancel()

            nursery.start_soon(reader)
            nursery.start_soon(writer)
        return reason

    def _templates(self) -> list[bytes]:
        if self.on_connect is None:
            return []
        try:
            msgs = [m for m in self.on_connect() if m]
        except Exception as exc:  # an encoder bug must not kill the connection loop
            self.counters.inc("on_connect_errors")
            log.error("exporter_on_connect_failed", transport="tcp", exporter=self.name,
                      error=f"{type(exc).__name__}: {exc}")
            return []
        self.counters.inc("templates", len(msgs))
        return msgs

    async def _write(self, sock: trio.socket.SocketType) -> None:
        templates = deque(self._templates())
        inflight = self._inflight
        backlog = self._backlog
        c = self.counters
        while True:
            while len(inflight) < self.INFLIGHT_MAX and (templates or backlog):
                if templates:
                    inflight.append(_Msg(templates.popleft(), True))
                else:
                    inflight.append(_Msg(backlog.popleft(), False))
            if not inflight:
                self._set_drained()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            first = inflight[0]
            bufs = [memoryview(first.data)[first.off:]]
            bufs.extend(m.data for m in list(inflight)[1:])
            n = await sock.sendmsg(bufs)
            c.inc("bytes", n)
            while n and inflight:
                m = inflight[0]
                rest = len(m.data) - m.off
                if n >= rest:
                    n -= rest
                    inflight.popleft()
                    c.inc("packets")
                else:
                    m.off += n
                    n = 0

    def _abort_inflight(self) -> int:
        """At disconnect: discard a half-written message, requeue unstarted data, drop templates."""
        discarded = 0
        requeue: list[bytes] = []
        for m in self._inflight:
            if m.off:
                discarded += 1
            elif not m.template:
                requeue.append(m.data)
        self._inflight.clear()
        if discarded:
            self.counters.inc("partial_discarded", discarded)
            self.counters.drop("transport", "partial_discarded", discarded)
        b = self._backlog
        b.extendleft(reversed(requeue))
        over = len(b) - self.backlog_max
        if over > 0:
            for _ in range(over):
                b.popleft()
            self.counters.inc("dropped_backlog", over)
            self.counters.drop("transport", "backlog_full", over)
        if not b:
            self._set_drained()
        return discarded

    # -- shutdown ----------------------------------------------------------------------
    def _set_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    def _is_drained(self) -> bool:
        return not self._backlog and not self._inflight

    async def flush(self, deadline_s: float) -> bool:
        """Wait up to *deadline_s* seconds until everything queued is written; True if so."""
        with trio.move_on_after(deadline_s):
            while not self._is_drained():
                self._drained = trio.Event()
                await self._drained.wait()
        return self._is_drained()


def _fmt(addr: Any) -> str:
    if not isinstance(addr, tuple):
        return str(addr)
    return host_port(addr[0], addr[1])


TRANSPORT_TYPE = TransportType(
    name="tcp",
    factory=TcpTransport,
    stream=True,
    help="IPFIX over TCP: reconnect with backoff, templates on connect, bounded backlog (oldest dropped)",
)


@hookimpl
def flowplane_register_transports(register):
    register("tcp", TRANSPORT_TYPE)

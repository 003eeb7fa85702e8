"""UDP flow export transport (``transport udp;``, the default).

One non-blocking datagram socket per flow server, ``connect()``-ed to the
collector so that an ICMP port unreachable comes back as ``ECONNREFUSED`` on a
later send.  Each payload is one datagram.

Behaviour (decisions):

* **Never blocks.**  ``send_nowait(payloads)`` is synchronous and does one
  non-blocking ``send()`` per payload.
* **Address.**  The destination picks IPv4 or IPv6.  A DNS name is resolved
  **once**, when ``run()`` starts (``trio.socket.getaddrinfo``); a changed
  record takes effect on the next start or reload.  ``source_address`` is
  bound (port chosen by the kernel) and restricts the lookup to its family.
  ``dscp`` sets ``IP_TOS`` / ``IPV6_TCLASS``; the send buffer is 4 MiB
  (``SO_SNDBUFFORCE`` with CAP_NET_ADMIN, else capped at ``wmem_max``).
* **Collector down (ECONNREFUSED).**  Counted as ``refused``; the datagram
  that met the error is lost (counted ``dropped``) and the next sends are
  attempted as usual, so export resumes by itself when a collector appears.
  Other errors (``EHOSTUNREACH``, ``ENETUNREACH``, ``EMSGSIZE`` ...) are
  counted the same way under ``errors.<ERRNO>``.  Errors are logged as
  ``exporter_send_error`` at most once a minute per errno (with the count
  since the previous line), never per datagram.
* **Socket buffer full (EAGAIN / ENOBUFS).**  The datagram goes to a small
  bounded queue (:attr:`UdpTransport.QUEUE_MAX`, 256 datagrams by default);
  while the queue is non-empty new payloads are queued behind it, so order is
  kept, and ``run()`` drains it when the socket is writable.  When the queue
  is full the **oldest** queued datagram is dropped (counted
  ``dropped`` / drop reason ``queue_full``): a few ms of burst are absorbed,
  a sustained overload is not.
* ``send_nowait`` before ``run()`` has bound the socket drops (``not_ready``).
* ``flush(deadline_s)`` waits up to *deadline_s* seconds (a duration) for the
  queue to empty and returns True if it did.
* ``on_connect`` is unused: over UDP the encoder refreshes templates by its
  packet / time counters.

Counters (``t.counters``): ``packets`` (datagrams sent), ``bytes``,
``refused``, ``dropped``, ``queued`` (datagrams that went through the queue),
``errors.<ERRNO>``; drops ``(transport, refused|error|queue_full|not_ready)``.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
import trio

from flowplane.api import Counters, SendQueue, TransportOptions, TransportType, hookimpl, host_port

from ._sockopts import DEFAULT_SNDBUF, errname, prepare, resolve

log = structlog.get_logger("flowplane.export")

_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
#: seconds between two ``exporter_send_error`` lines for the same errno
ERROR_LOG_INTERVAL_S = 60.0


class UdpTransport:
    """A connected, non-blocking UDP socket to one collector.  See the module docstring."""

    QUEUE_MAX = 256

    def __init__(self, options: TransportOptions, *, sndbuf: int | None = DEFAULT_SNDBUF,
                 queue_max: int | None = None) -> None:
        self.options = options
        self.name = options.name or f"udp/{options.host}:{options.port}"
        self.counters = Counters(f"transport {self.name}")
        self.on_connect: Callable[[], list[bytes]] | None = None
        self.sndbuf = sndbuf
        self.queue_max = max(1, queue_max if queue_max is not None else self.QUEUE_MAX)
        self.local_address: tuple | None = None
        self.peer_address: tuple | None = None
        self._sock: socket.socket | None = None
        self._queue = SendQueue(self.queue_max, self.counters)
        self._errlog: dict[str, tuple[float, int]] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Resolve, create, bind and connect the socket, ``started(local_address)``, drain the queue."""
        o = self.options
        family, sockaddr = await resolve(o.host, o.port, socket.SOCK_DGRAM, o.source_address)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            prepare(sock, family, dscp=o.dscp, sndbuf=self.sndbuf)
            if o.source_address:
                sock.bind((o.source_address, 0))
            sock.connect(sockaddr)  # UDP: no packet sent, never blocks
            self.local_address = sock.getsockname()
            self.peer_address = sockaddr
            self._sock = sock
            log.info("exporter_started", transport="udp", exporter=self.name,
                     local=_fmt(self.local_address), peer=_fmt(sockaddr))
            task_status.started(self.local_address)
            await self._drain_forever()
        finally:
            self._sock = None
            sock.close()

    async def _drain_forever(self) -> None:
        q = self._queue.items
        while True:
            await self._queue.wait()
            sock = self._sock
            await trio.lowlevel.wait_writable(sock)
            while q:
                data = q[0]
                try:
                    n = sock.send(data)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        break  # wait_writable again
                    if exc.errno == errno.ENOBUFS:  # device queue full: socket stays "writable"
                        await trio.sleep(0.001)
                        break
                    q.popleft()
                    self._error(exc)
                else:
                    q.popleft()
                    self.counters.inc("packets")
                    self.counters.inc("bytes", n)

    # -- data path (sync, never blocks) ----------------------------------------------
    def send_nowait(self, payloads: list[bytes]) -> None:
        """Send each payload as one datagram now, or queue it (bounded), or drop and count it."""
        sock = self._sock
        if sock is None:
            n = len(payloads)
            self.counters.inc("dropped", n)
            self.counters.drop("transport", "not_ready", n)
            return
        q = self._queue.items
        c = self.counters
        for data in payloads:
            if q:
                self._enqueue(data)
                continue
            try:
                n = sock.send(data)
            except OSError as exc:
                if exc.errno in _RETRY_LATER:
                    self._enqueue(data)
                else:
                    self._error(exc)
            else:
                c.inc("packets")
                c.inc("bytes", n)

    def _enqueue(self, data: bytes) -> None:
        self._queue.put((data,))
        self.counters.inc("queued")

    def _error(self, exc: OSError) -> None:
        name = errname(exc)
        c = self.counters
        c.inc(f"errors.{name}")
        c.inc("dropped")
        if exc.errno == errno.ECONNREFUSED:
            c.inc("refused")
            c.drop("transport", "refused")
        else:
            c.drop("transport", "error")
        now = time.monotonic()
        last, count = self._errlog.get(name, (None, 0))
        count += 1
        if last is None or now - last >= ERROR_LOG_INTERVAL_S:
            log.warning("exporter_send_error", transport="udp", exporter=self.name, error=name, count=count)
            self._errlog[name] = (now, 0)
        else:
            self._errlog[name] = (last, count)

    # -- shutdown ----------------------------------------------------------------------
    async def flush(self, deadline_s: float) -> bool:
        """Wait up to *deadline_s* seconds until the queue is empty; True if it is."""
        return await self._queue.flush(deadline_s, draining=lambda: self._sock is not None)

    @property
    def queue_length(self) -> int:
        return len(self._queue)


def _fmt(addr: tuple | None) -> str:
    if not addr:
        return ""
    return host_port(addr[0], addr[1])


TRANSPORT_TYPE = TransportType(
    name="udp",
    factory=UdpTransport,
    help="one connected non-blocking UDP socket per flow server; refused/errors/queue drops counted",
)


@hookimpl
def flowplane_register_transports(register):
    register("udp", TRANSPORT_TYPE)

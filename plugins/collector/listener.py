"""UDP listeners: bind, report started, then drain the socket in batches.

One non-blocking socket per ``listen`` entry: ``SO_REUSEADDR`` and
``SO_REUSEPORT`` (several worker processes may share a port),
``IPV6_V6ONLY`` on IPv6 sockets (so ``0.0.0.0`` and ``::`` can share a port),
a large receive buffer (``SO_RCVBUFFORCE`` with CAP_NET_ADMIN, else
``SO_RCVBUF`` capped by ``net.core.rmem_max``).  Kernel drops are the
socket's ``drops`` column of ``/proc/net/udp`` / ``udp6`` (read on ``show``).

Batching (the hot path): decoding costs a fixed ~100-300 us per conversion
(one numpy conversion per template) plus a few us per datagram, so the batch
must be big.  When idle the task sleeps in ``wait_readable``; once datagrams
come it reads what is queued, and while more keep coming it sleeps
:data:`POLL_S` and reads again -- letting them gather in the socket buffer --
until :data:`BATCH` datagrams are read, the first of them is :data:`GATHER_S`
old, or a read finds the socket empty; then the batch is decoded at once.
Latency added: at most ~``GATHER_S``.  Datagrams read but not yet decoded are
decoded on cancellation (shutdown, reload) and by ``drain_now``: nothing read
is dropped.

Reads (recvmmsg.py): one ``recvmmsg(2)`` call takes up to 64 queued datagrams
into preallocated buffers (``recvfrom`` per datagram where ``recvmmsg`` is not
available).  ``SO_RXQ_OVFL`` is set: the kernel stamps each queued datagram
with the socket's drop count, read from the last datagram of each call
(``rxq_drops``, shown as ``rxq_ovfl``); ``/proc`` stays the exact figure, read
only on ``show``.  A datagram longer than its buffer (only with buffers smaller
than the UDP maximum) is counted ``drops[("receive", "truncated")]``.
Measured figures: docs/collector.md.
"""

from __future__ import annotations

import gc
import os
import socket
import time

import trio

from .config import Listen
from .recvmmsg import SLOT, BatchReceiver

BATCH = 512  # datagrams decoded together at most
GATHER_S = 0.01  # ... or once the first of them waited this long
POLL_S = 0.001  # while datagrams keep coming, read again after this (not one wakeup per datagram)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux


def shared_socket(address: str, kind: int) -> socket.socket:
    """A socket several worker processes can bind to the same port (SO_REUSEADDR/SO_REUSEPORT);
    IPv6 sockets are v6-only so ``0.0.0.0`` and ``::`` can share a port."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(fam, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except BaseException:
        s.close()
        raise
    return s


def _bind(s: socket.socket, address: str, port: int, proto: str) -> None:
    """Bind *s*; an OSError names the collector's address, port and protocol."""
    try:
        s.bind((address, port))
    except OSError as exc:
        where = f"[{address}]" if ":" in address else address
        raise OSError(exc.errno, f"flow collector cannot listen on {where}:{port}/{proto}: "
                                 f"{exc.strerror or exc}") from None


async def _take_over(lst) -> None:
    """Wait until the task of a replaced graph that served *lst* has left it, then own it."""
    prev = lst._done
    if prev is not None:
        await prev.wait()
    lst.handover = False
    lst._done = trio.Event()


class UdpListener:
    def __init__(self, listen: Listen, handler, rcvbuf: int, counters=None, *, use_recvmmsg: bool = True,
                 datagram_buffer: int = SLOT) -> None:
        self.listen = listen
        self.handler = handler  # handler(list[(bytes, address)]) -> None
        self.rcvbuf_wanted = rcvbuf
        self.rcvbuf = 0
        self.sock: socket.socket | None = None
        self.bound: tuple | None = None
        self.inode = 0
        self.datagrams = 0
        self.wakeups = 0
        self.drops_at_clear = 0
        self.closed_drops: int | None = None
        self.handover = False  # set by adopt(): the running task leaves the socket open when cancelled
        self._done: trio.Event | None = None  # set when the task serving the socket has left it
        self._pending: list[tuple[bytes, str]] = []  # read, not yet decoded (at most BATCH)
        self._first = 0.0  # when the first of them was read
        self.rxq = False  # SO_RXQ_OVFL set
        self.rxq_at_clear = 0
        self.counters = counters  # the collector's: truncated datagrams are counted there
        self.use_recvmmsg = use_recvmmsg
        self.datagram_buffer = datagram_buffer  # bytes per datagram read; longer ones: 'truncated'
        self._rx: BatchReceiver | None = None
        self._truncated = 0  # of the receiver's count, already passed to counters

    @property
    def rxq_drops(self) -> int:
        """The kernel's drop count as stamped on the last datagram read (SO_RXQ_OVFL)."""
        return self._rx.rxq_drops if self._rx is not None else 0

    @property
    def read_mode(self) -> str:
        return self._rx.mode if self._rx is not None else "recvmmsg" if self.use_recvmmsg else "recvfrom"

    @property
    def port(self) -> int:
        return self.bound[1] if self.bound else self.listen.port

    def bind(self) -> socket.socket:
        s = shared_socket(self.listen.address, socket.SOCK_DGRAM)
        try:
            try:
                s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), self.rcvbuf_wanted)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf_wanted)
            self.rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self.rxq = True
            except OSError:
                self.rxq = False
            _bind(s, self.listen.address, self.listen.port, "udp")
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self._rx = BatchReceiver(s, rxq=self.rxq, use_recvmmsg=self.use_recvmmsg, slot=self.datagram_buffer)
        self.bound = s.getsockname()
        self.inode = os.fstat(s.fileno()).st_ino
        return s

    def adopt(self, handler) -> None:
        """A reload kept this listener (same address, port, buffer): the socket stays open and
        every datagram queued on it is read; from now on they go to *handler* (the new collector)."""
        self.handler = handler
        self.handover = True

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        s = self.sock if self.sock is not None else self.bind()
        task_status.started()
        await _take_over(self)
        # what start-up built (modules, config, templates) lives on: out of the collector's way, so the
        # full collections the datagram churn triggers do not walk it again and again (stalls of ms)
        gc.freeze()
        try:
            while True:
                if not self._pending:  # idle: sleep until the kernel has something
                    await trio.lowlevel.wait_readable(s)
                got = self._read(s, BATCH - len(self._pending))
                self.wakeups += 1
                pending = self._pending
                if not pending:
                    continue
                if got == 0 or len(pending) >= BATCH or time.monotonic() - self._first >= GATHER_S:
                    self._flush()
                    await trio.lowlevel.checkpoint()
                else:  # more is coming: let it gather in the socket buffer, decode one bigger batch
                    await trio.sleep(POLL_S)
        finally:
            self._flush()  # what was read is decoded, never dropped
            if self.handover:  # a reload kept the listener: the next graph's task goes on with the socket
                self._done.set()
            else:
                self.closed_drops = self._proc_drops()  # kept: 'show' and the summary still report them
                self.sock = None
                s.close()
                self._rx.close()
                self._done.set()

    def _read(self, s: socket.socket, room: int) -> int:
        """Non-blocking reads into the pending batch, at most *room*; returns how many were read."""
        got = self._rx.read(room) if room > 0 else []
        if self._rx.truncated != self._truncated:
            self._count_truncated()
        n = len(got)
        if n:
            if self._pending:
                self._pending += got
            else:
                self._pending = got
                self._first = time.monotonic()
            self.datagrams += n
        return n

    def _count_truncated(self) -> None:
        new = self._rx.truncated - self._truncated
        self._truncated = self._rx.truncated
        if self.counters is not None:
            self.counters.drop("receive", "truncated", new)

    def _flush(self) -> None:
        batch = self._pending
        if batch:
            self._pending = []
            self.handler(batch)

    def drain_now(self) -> int:
        """Decode what was read and read whatever is queued on the socket right now (shutdown);
        returns datagrams read."""
        self._flush()
        s = self.sock
        if s is None:
            return 0
        batch = []
        while True:
            got = self._rx.read(BATCH)
            if not got:
                break
            batch += got
        if self._rx.truncated != self._truncated:
            self._count_truncated()
        if batch:
            self.datagrams += len(batch)
            self.handler(batch)
        return len(batch)

    def rxq_ovfl(self) -> int | None:
        """Kernel drops as last stamped on a datagram (SO_RXQ_OVFL), since clear; None if unsupported."""
        return self.rxq_drops - self.rxq_at_clear if self.rxq else None

    def kernel_drops(self) -> int | None:
        """The socket's drop counter from /proc/net/udp{,6} since clear (None if not found);
        once the socket is closed, the count it had when it closed."""
        raw = self._proc_drops() if self.sock is not None else self.closed_drops
        return None if raw is None else raw - self.drops_at_clear

    def _proc_drops(self) -> int | None:
        if not self.inode:
            return None
        for name in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(name) as fh:
                    next(fh)
                    for line in fh:
                        parts = line.split()
                        if len(parts) >= 13 and parts[9] == str(self.inode):
                            return int(parts[-1])
            except (OSError, StopIteration, ValueError):
                continue
        return None

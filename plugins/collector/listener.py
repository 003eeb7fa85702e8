"""UDP listeners: bind, report started, then drain the socket in batches.

One non-blocking socket per ``listen`` entry: ``SO_REUSEADDR`` and
``SO_REUSEPORT`` (several worker processes may share a port),
``IPV6_V6ONLY`` on IPv6 sockets (so ``0.0.0.0`` and ``::`` can share a port),
a large receive buffer (``SO_RCVBUFFORCE`` with CAP_NET_ADMIN, else
``SO_RCVBUF`` capped by ``net.core.rmem_max``).  Kernel drops are the
socket's ``drops`` column of ``/proc/net/udp`` / ``udp6`` (read on ``show``).

Batching (the hot path): decoding costs a fixed ~100-300 us per batch (one
numpy conversion per template) plus ~4 us per datagram, so the batch must be
big.  When idle the task sleeps in ``wait_readable``; once datagrams come it
reads what is queued (non-blocking ``recvfrom``), and while more keep coming
it sleeps :data:`POLL_S` and reads again -- letting them gather in the socket
buffer -- until :data:`BATCH` datagrams are read, the first of them is
:data:`GATHER_S` old, or a read finds the socket empty; then the batch is
decoded at once.  Latency added: at most ~``GATHER_S``.  Measured (IPFIX,
19 records per datagram, 60k datagrams/s offered on loopback, one process):
a batch per wakeup (~30 datagrams) cost 13 us per datagram of CPU and lost
0.4-1.2 %; gathered batches cost XX us and lost nothing (bench_collector.py).
Datagrams read but not yet decoded are decoded on cancellation (shutdown,
reload) and by ``drain_now``: nothing read is dropped.

``SO_RXQ_OVFL`` is set too: the kernel stamps each queued datagram with the
socket's drop count, delivered as ancillary data by ``recvmsg``.  Measured on
loopback (1400-byte datagrams, CPython 3, one core): ``recvfrom`` 0.79 us per
datagram, ``recvmsg`` 0.99 us, 1.15 us once drops are non-zero (a cmsg on
every datagram) -- +25..45 % on the receive loop, +5..7 % on receive plus
decode (IPFIX decode is ~3.9 us per datagram), and the cost would grow exactly
when the socket is overflowing.  So only the *first* read of each wakeup uses
``recvmsg`` (the rest ``recvfrom``): the live count (``rxq_drops``, shown as
``rxq_ovfl``) costs nothing measurable and lags by at most the datagrams
queued before it; ``/proc`` stays the exact figure, read only on ``show``.
(With gathering, "each wakeup" is each read round.)
"""

from __future__ import annotations

import os
import socket
import sys
import time

import trio

from .config import Listen

BATCH = 512  # datagrams decoded together at most
GATHER_S = 0.01  # ... or once the first of them waited this long
POLL_S = 0.001  # while datagrams keep coming, read again after this (not one wakeup per datagram)
MAX_DATAGRAM = 65535
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux
ANCILLARY = socket.CMSG_SPACE(4)


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


async def _take_over(lst) -> None:
    """Wait until the task of a replaced graph that served *lst* has left it, then own it."""
    prev = lst._done
    if prev is not None:
        await prev.wait()
    lst.handover = False
    lst._done = trio.Event()


class UdpListener:
    def __init__(self, listen: Listen, handler, rcvbuf: int) -> None:
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
        self.rxq_drops = 0  # the kernel's drop count from the last datagram read with recvmsg
        self.rxq_at_clear = 0

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
            s.bind((self.listen.address, self.listen.port))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
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
                self._done.set()

    def _read(self, s: socket.socket, room: int) -> int:
        """Non-blocking reads into the pending batch, at most *room*; returns how many were read."""
        batch = self._pending
        append = batch.append
        before = len(batch)
        if self.rxq and room > 0:  # the first read of a round carries the kernel's drop count
            try:
                data, anc, _flags, addr = s.recvmsg(MAX_DATAGRAM, ANCILLARY)
            except OSError:  # EAGAIN, or e.g. ECONNREFUSED queued: nothing read
                data = None
            if data is not None:
                if anc:
                    self._rxq(anc)
                append((data, addr[0]))
                room -= 1
        recv = s.recvfrom
        for _ in range(room):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. ECONNREFUSED queued on the socket: nothing to read
            append((data, addr[0]))
        n = len(batch) - before
        if n:
            if not before:
                self._first = time.monotonic()
            self.datagrams += n
        return n

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
            try:
                data, addr = s.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            batch.append((data, addr[0]))
        if batch:
            self.datagrams += len(batch)
            self.handler(batch)
        return len(batch)

    def _rxq(self, anc) -> None:
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                self.rxq_drops = int.from_bytes(value[:4], sys.byteorder)

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

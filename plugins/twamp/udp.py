"""UDP sockets for TWAMP-Test: kernel receive timestamps (``SO_TIMESTAMPNS``), the received TTL,
batched non-blocking receive for the reflectors, and the host clock's honest error estimate.

Two ways to use a test socket:

- :func:`open_udp` + :func:`recv`: a trio socket, one datagram per ``await`` (the client).
- :func:`open_udp_raw` + :class:`ReflectorThread`: the reflectors' plain socket, served by a worker
  thread blocked in ``recvmsg`` (woken straight by the kernel, no scheduler round trip per packet);
  trio owns its lifetime (cancel = wake the thread, wait for it, close).

:class:`ClockStatus` reads the kernel's NTP state with ``adjtimex(2)`` (read-only, ``modes = 0``) and
turns it into the RFC 4656 §4.1.2 Error Estimate: the S bit only when the kernel says the clock is
synchronised (not ``TIME_ERROR``, ``STA_UNSYNC`` clear), the error from ``esterror`` then, and from
``maxerror`` (which the kernel grows while nobody disciplines the clock, up to 16 s) otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import time

import trio

from flowplane.api import set_ip_options

from . import wire

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL_CMSG = 2  # cmsg type carrying the TTL (IP_TTL)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_CMSG_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4) + 64
MAX_DATAGRAM = 65535
REFLECTOR_RCVBUF = 4 << 20  # bytes asked for a reflector's receive buffer (bursts at high rates)
_TS = struct.Struct("qq")
_INT = struct.Struct("i")
_NTP = struct.Struct(">Q")


def open_udp_raw(address: str, port: int, *, ttl: int | None = None, tos: int = 0,
                 rcvbuf: int = 0) -> socket.socket:
    """A non-blocking stdlib UDP socket bound to *address*:*port* (0: any free port) asking for kernel
    RX timestamps and the received TTL / hop limit; raises OSError.  *rcvbuf* > 0 asks for a receive
    buffer that size (the kernel caps it at ``net.core.rmem_max``) so a reflector absorbs bursts."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        where = f"[{address}]" if ":" in address else address
        raise OSError(exc.errno, f"cannot bind UDP {where}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        set_ip_options(sock, ttl=ttl, tos=tos)
    except OSError:  # pragma: no cover - options missing on an exotic kernel: user-space stamps
        pass
    return sock


def open_udp(address: str, port: int, *, ttl: int | None = None, tos: int = 0) -> trio.socket.SocketType:
    """:func:`open_udp_raw` wrapped as a trio socket (for ``await sock.sendto`` and :func:`recv`)."""
    return trio.socket.from_stdlib_socket(open_udp_raw(address, port, ttl=ttl, tos=tos))


def _ancillary(anc) -> tuple[int, int]:
    ts = ttl = 0
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = _TS.unpack_from(value)
            ts = sec * 1_000_000_000 + nsec
        elif (level == socket.IPPROTO_IP and kind == IP_TTL_CMSG) or \
                (level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT):
            ttl = _INT.unpack_from(value)[0] if len(value) >= 4 else value[0]
    return ts, ttl


async def recv(sock, size: int = MAX_DATAGRAM) -> tuple[bytes, tuple, int, int]:
    """``(data, source address, receive time ns, TTL or 0)``: the kernel's timestamp when it gave one."""
    data, anc, _flags, addr = await sock.recvmsg(size, _CMSG_SPACE)
    ts, ttl = _ancillary(anc)
    return data, addr, ts or time.time_ns(), ttl


class ReflectorThread:
    """A blocking receive -> reflect -> send loop on a worker thread, for the lowest added latency.

    A trio task waking per datagram costs a trip through the scheduler (epoll re-arm, task switch:
    about 15 µs here); a thread blocked in ``recvmsg`` wakes straight from the kernel.  The thread
    only runs *reflect*; counters are plain attributes (the GIL keeps each update whole).

    *reflect(data, addr, t2_ns, ttl)* returns None (dropped: it counted why) or ``(reply, offset)``:
    the finished reply and where T3 goes, stamped here right before ``sendto`` (``offset < 0``: the
    reply is sealed, T3 already in it).  *sent(addr)*, *send_failed(addr, exc)* and
    *receive_error(exc)* count the outcomes; an exception from *reflect* goes to *internal_error*.

    :meth:`run` returns ``"idle"`` after *idle_timeout* seconds without a datagram (0: never) and
    ``"stopped"`` when cancelled; cancelling wakes the thread (``shutdown``) and waits for it, so the
    caller may close the socket afterwards.
    """

    TICK_S = 0.5  # SO_RCVTIMEO: how often a waiting thread looks at the idle timer

    def __init__(self, sock: socket.socket, reflect, *, sent, send_failed, receive_error, internal_error,
                 idle_timeout: float = 0.0, limiter: trio.CapacityLimiter | None = None) -> None:
        self.sock = sock
        self.reflect = reflect
        self.sent, self.send_failed = sent, send_failed
        self.receive_error, self.internal_error = receive_error, internal_error
        self.idle_timeout = idle_timeout
        self.limiter = limiter
        self._stop = False

    async def run(self) -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_when_cancelled)
            try:
                # not abandoned on cancel: trio waits for the thread, which _stop_when_cancelled woke
                return await trio.to_thread.run_sync(self._loop, limiter=self.limiter)
            finally:
                nursery.cancel_scope.cancel()

    async def _stop_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recvmsg (ENOTCONN on UDP, still wakes)
        except OSError:
            pass

    def _loop(self) -> str:
        sock = self.sock
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(self.TICK_S),
                                                                            int(self.TICK_S % 1 * 1e6)))
        last = time.monotonic()
        reflect = self.reflect
        while not self._stop:
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except BlockingIOError:  # the SO_RCVTIMEO tick
                if self.idle_timeout and time.monotonic() - last >= self.idle_timeout:
                    return "idle"
                continue
            except OSError as exc:
                if self._stop or sock.fileno() < 0:
                    break
                self.receive_error(exc)
                continue
            if addr is None:  # woken by shutdown()
                continue
            ts, ttl = _ancillary(anc)
            t2 = ts or time.time_ns()
            last = time.monotonic()
            try:
                out = reflect(data, addr, t2, ttl)
            except Exception as exc:  # a bug must not take the reflector down
                self.internal_error(exc)
                continue
            if out is None:
                continue
            reply, offset = out
            try:
                if offset >= 0:  # T3 as late as possible: the reply is complete, only sendto follows
                    _NTP.pack_into(reply, offset, wire.ns_to_ntp(max(time.time_ns(), t2)))
                sock.sendto(reply, addr)
            except OSError as exc:
                self.send_failed(addr, exc)
                continue
            self.sent(addr)
        return "stopped"


def close_raw(sock: socket.socket) -> None:
    """Close a socket another task may be waiting on (wakes it with ClosedResourceError)."""
    if sock.fileno() >= 0:
        trio.lowlevel.notify_closing(sock)
        sock.close()


# -- the host clock -------------------------------------------------------------------------------

TIME_ERROR = 5  # adjtimex return value: the clock is not synchronised
STA_UNSYNC = 0x0040
MAX_ERROR_S = 16.0  # the kernel's NTP_PHASE_LIMIT-derived cap on maxerror


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` (linux/timex.h; x86_64 and aarch64 layout)."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


def read_kernel_clock() -> dict | None:
    """The kernel's NTP view of the system clock (``adjtimex`` with ``modes = 0``: read only), or None
    when it cannot be asked: ``{"state", "status", "synchronised", "maxerror_us", "esterror_us"}``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):  # pragma: no cover - not Linux / no libc
        return None
    if state < 0:  # pragma: no cover - e.g. EPERM under a strict seccomp profile
        return None
    synced = state != TIME_ERROR and not tx.status & STA_UNSYNC
    return {"state": state, "status": tx.status, "synchronised": synced,
            "maxerror_us": tx.maxerror, "esterror_us": tx.esterror}


def error_estimate_for(clock: dict | None) -> int:
    """RFC 4656 Error Estimate (16 bits) for a :func:`read_kernel_clock` reading: S set only when the
    kernel says synchronised; the error is ``esterror`` (synchronised) or ``maxerror`` (not), never
    below 1 µs (the timestamps' useful resolution); the 16 s cap when the kernel cannot be asked."""
    if clock is None:
        return wire.ErrorEstimate.for_seconds(MAX_ERROR_S, synced=False).pack()
    us = clock["esterror_us"] if clock["synchronised"] else clock["maxerror_us"]
    seconds = min(max(us, 1) / 1e6, MAX_ERROR_S)
    return wire.ErrorEstimate.for_seconds(seconds, synced=bool(clock["synchronised"])).pack()


class ClockStatus:
    """The Error Estimate a reflector puts in its replies, re-read from the kernel at most every
    *refresh_s* seconds (``adjtimex`` is a system call: never per packet)."""

    def __init__(self, refresh_s: float = 60.0, reader=read_kernel_clock) -> None:
        self.refresh_ns = int(refresh_s * 1e9)
        self.reader = reader
        self.clock: dict | None = None
        self.error_estimate = 0
        self._read_ns = 0
        self.refresh(force=True)

    def refresh(self, now_ns: int | None = None, force: bool = False) -> int:
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        if force or now_ns - self._read_ns >= self.refresh_ns:
            self.clock = self.reader()
            self.error_estimate = error_estimate_for(self.clock)
            self._read_ns = now_ns
        return self.error_estimate

    @property
    def synchronised(self) -> bool:
        return bool(self.error_estimate >> 15)

    def as_dict(self) -> dict:
        ee = wire.ErrorEstimate.unpack(self.error_estimate)
        return {"synchronised": ee.synced, "error_estimate": f"{self.error_estimate:#06x}",
                "error_seconds": ee.seconds}


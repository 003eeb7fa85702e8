"""Batched, non-blocking sends of frame slices: ``sendmmsg(2)`` through ctypes.

:func:`send_batch` sends message *i* = ``header_i + data[start_i : start_i + len_i]``
for a whole batch in one system call per :data:`VLEN` messages, never
blocking (``MSG_DONTWAIT``).  The ``iovec`` and ``mmsghdr`` arrays are
built with numpy straight over the batch buffer (zero copy); the only
Python per call is the loop over ``sendmmsg`` returns.  Where ``sendmmsg``
is not reachable (no libc symbol, unexpected struct layout) the same
contract is kept with a ``socket.sendmsg`` loop.

Every message ends with a status: 0 = sent, or a :data:`REASONS` index
saying why it was dropped.  A full socket buffer or queue, or a down
interface, drops the rest of the batch at once (retrying would block the
pipeline); a message that is too big is skipped alone.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

import numpy as np

from flowplane.api import libc_function, lp64_layout

VLEN = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes

#: drop reasons, by status code (index 0 = sent)
REASONS = ("sent", "send_buffer_full", "interface_down", "too_big", "unreachable", "send_error")
SENT, BUFFER_FULL, IFACE_DOWN, TOO_BIG, UNREACHABLE, SEND_ERROR = range(len(REASONS))
_ERRNO_REASON = {
    errno.EAGAIN: BUFFER_FULL, errno.ENOBUFS: BUFFER_FULL, errno.ENOMEM: BUFFER_FULL,
    errno.ENETDOWN: IFACE_DOWN, errno.ENXIO: IFACE_DOWN, errno.ENODEV: IFACE_DOWN,
    errno.EMSGSIZE: TOO_BIG,
    errno.ENETUNREACH: UNREACHABLE, errno.EHOSTUNREACH: UNREACHABLE, errno.EHOSTDOWN: UNREACHABLE,
    errno.ECONNREFUSED: UNREACHABLE, errno.EADDRNOTAVAIL: UNREACHABLE,
}
#: reasons that only concern the one message (the next may go out)
_PER_MESSAGE = (TOO_BIG,)


def reason_of(err: int) -> int:
    """The status code for an ``errno``."""
    return _ERRNO_REASON.get(err, SEND_ERROR)


def _failed(status: np.ndarray, i: int, code: int) -> int:
    """Record the failure *code* of message *i*: that message alone when the next may go out, else
    it and every later one.  Returns the index to go on from (``len(status)``: stop)."""
    if code in _PER_MESSAGE:
        status[i] = code
        return i + 1
    status[i:] = code
    return len(status)


def sockaddr(family: int, ip: str) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` for *ip*, port 0 (raw sockets)."""
    if family == socket.AF_INET6:
        return struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, ip), 0)
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(ip))


def _load_sendmmsg():
    """libc ``sendmmsg`` if the struct layout is the LP64 one the numpy arrays below assume."""
    if not lp64_layout():
        return None
    return libc_function("sendmmsg", (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int))


class BatchSender:
    """Sends batches of messages on one socket; ``use_sendmmsg=False`` forces the sendmsg loop."""

    def __init__(self, *, use_sendmmsg: bool = True) -> None:
        self._sendmmsg = _load_sendmmsg() if use_sendmmsg else None

    @property
    def method(self) -> str:
        return "sendmmsg" if self._sendmmsg is not None else "sendmsg"

    def send_batch(self, sock: socket.socket, data: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                   headers: np.ndarray | bytes | None = None, address: tuple | None = None) -> np.ndarray:
        """Send ``headers[i] + data[starts[i]:starts[i]+lens[i]]`` for every *i*.

        *address* (an ``(ip, 0)`` tuple) sends every message there on an
        unconnected socket: a connected raw socket would turn the analyzer's
        ICMP errors into send errors that drop whole batches.

        :param data: 1-D uint8 buffer (the batch's ``data``).
        :param headers: None, one ``bytes`` header shared by every message, or
            an ``(n, h)`` uint8 array with one header per message.
        :return: int8 status per message (0 sent, else an index into :data:`REASONS`).
        """
        n = len(starts)
        status = np.zeros(n, dtype=np.int8)
        if n == 0:
            return status
        if self._sendmmsg is None:
            return self._send_loop(sock, data, starts, lens, headers, address, status)
        return self._send_mmsg(sock, data, starts, lens, headers, address, status)

    # -- sendmmsg ---------------------------------------------------------------
    def _send_mmsg(self, sock, data, starts, lens, headers, address, status) -> np.ndarray:
        n = len(starts)
        data = np.ascontiguousarray(data)
        base = data.ctypes.data
        frame_ptr = np.uint64(base) + starts.astype(np.uint64)
        if headers is None:
            iov = np.empty((n, 2), dtype=np.uint64)
            iov[:, 0] = frame_ptr
            iov[:, 1] = lens
            per = 1
        else:
            if isinstance(headers, (bytes, bytearray)):
                hdr = np.frombuffer(bytes(headers), dtype=np.uint8)
                hptr = np.full(n, hdr.ctypes.data, dtype=np.uint64)
                hlen = len(hdr)
            else:
                hdr = np.ascontiguousarray(headers)
                hlen = hdr.shape[1]
                hptr = np.uint64(hdr.ctypes.data) + np.arange(n, dtype=np.uint64) * np.uint64(hlen)
            iov = np.empty((n, 4), dtype=np.uint64)
            iov[:, 0] = hptr
            iov[:, 1] = hlen
            iov[:, 2] = frame_ptr
            iov[:, 3] = lens
            per = 2
        msgs = np.zeros((n, 8), dtype=np.uint64)
        if address is not None:
            name = np.frombuffer(sockaddr(sock.family, address[0]), dtype=np.uint8)
            msgs[:, 0] = name.ctypes.data
            msgs[:, 1] = len(name)
        msgs[:, 2] = np.uint64(iov.ctypes.data) + np.arange(n, dtype=np.uint64) * np.uint64(16 * per)
        msgs[:, 3] = per
        mbase = msgs.ctypes.data
        fd = sock.fileno()
        call = self._sendmmsg
        i = 0
        while i < n:
            ret = call(fd, mbase + 64 * i, min(n - i, VLEN), socket.MSG_DONTWAIT)
            if ret > 0:
                i += ret
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            i = _failed(status, i, reason_of(err))
        # keep the buffers alive until here (their addresses are in msgs / iov)
        del data, iov, msgs, headers, address
        return status

    # -- fallback: one sendmsg per message ------------------------------------------
    def _send_loop(self, sock, data, starts, lens, headers, address, status) -> np.ndarray:
        mv = memoryview(np.ascontiguousarray(data))
        send = sock.sendmsg
        flags = socket.MSG_DONTWAIT
        shared = headers if isinstance(headers, (bytes, bytearray)) else None
        st = starts.tolist()
        ln = lens.tolist()
        n = len(st)
        i = 0
        while i < n:
            frame = mv[st[i]: st[i] + ln[i]]
            if headers is None:
                bufs = [frame]
            elif shared is not None:
                bufs = [shared, frame]
            else:
                bufs = [headers[i], frame]
            try:
                if address is None:
                    send(bufs, (), flags)
                else:
                    send(bufs, (), flags, address)
            except InterruptedError:
                continue
            except OSError as exc:
                i = _failed(status, i, reason_of(exc.errno or 0))
                continue
            i += 1
        return status

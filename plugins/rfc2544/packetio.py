"""AF_PACKET test-interface I/O in batches: ``recvmmsg(2)`` with kernel timestamps, ``sendmmsg(2)``.

One :class:`PacketIO` holds a raw socket bound to the test interface, fixed-size receive slots in a numpy
array (one row per frame), their iovecs and ``SCM_TIMESTAMPNS`` control buffers, all laid out once.  A
receive call fills up to ``slots`` rows in one system call and returns row views, lengths and kernel
receive times (ns, CLOCK_REALTIME); a send call hands a whole array of frames to the kernel in one
system call.  ctypes releases the GIL around both, so a sender and a receiver run in two threads.
Needs CAP_NET_RAW.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

import numpy as np

from flowplane.api import grow_rcvbuf, grow_sndbuf, libc_function, lp64_layout

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35
MSG_WAITFORONE = 0x10000
CTRL = 32  # CMSG_SPACE(sizeof(struct timespec))

_HDR = np.dtype([("name", "u8"), ("namelen", "u4"), ("_p0", "u4"), ("iov", "u8"), ("iovlen", "u8"),
                 ("control", "u8"), ("controllen", "u8"), ("flags", "i4"), ("_p1", "u4"), ("len", "u4"),
                 ("_p2", "u4")])
_IOV = np.dtype([("base", "u8"), ("len", "u8")])
_ARGS = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg = libc_function("recvmmsg", _ARGS)
_sendmmsg = libc_function("sendmmsg", _ARGS[:4])


class PacketIOError(OSError):
    """The test interface cannot be opened or used (message says why)."""


def interface_mtu(ifname: str) -> int:
    try:
        with open(f"/sys/class/net/{ifname}/mtu") as fh:
            return int(fh.read())
    except (OSError, ValueError) as exc:
        raise PacketIOError(errno.ENODEV, f"no interface {ifname!r}") from exc


def interface_mac(ifname: str) -> bytes:
    try:
        with open(f"/sys/class/net/{ifname}/address") as fh:
            return bytes(int(x, 16) for x in fh.read().strip().split(":"))
    except (OSError, ValueError) as exc:
        raise PacketIOError(errno.ENODEV, f"no interface {ifname!r}") from exc


def _check_batched() -> None:
    if not lp64_layout() or _recvmmsg is None or _sendmmsg is None:
        raise PacketIOError(errno.ENOSYS, "recvmmsg/sendmmsg with the LP64 layout are needed (Linux, 64-bit)")


class PacketIO:
    """A raw socket on *ifname*; ``receive`` needs ``rx=True`` (a send-only socket takes in no frames)."""

    def __init__(self, ifname: str, *, rx: bool = True, slots: int = 256, slot_size: int | None = None,
                 timeout: float = 0.1, qdisc_bypass: bool = True, buffer_bytes: int = 16 << 20) -> None:
        _check_batched()
        self.ifname = ifname
        self.mtu = interface_mtu(ifname)
        proto = ETH_P_ALL if rx else 0
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        except PermissionError as exc:
            raise PacketIOError(errno.EPERM, "opening an AF_PACKET socket needs CAP_NET_RAW") from exc
        try:
            self.sock.bind((ifname, proto))
            if qdisc_bypass:
                self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            grow_sndbuf(self.sock, buffer_bytes)
            if rx:
                grow_rcvbuf(self.sock, buffer_bytes)
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sec = int(timeout)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                     struct.pack("ll", sec, int((timeout - sec) * 1e6)))
        except OSError as exc:
            self.sock.close()
            raise PacketIOError(exc.errno, f"cannot use interface {ifname!r}: {exc.strerror}") from exc
        self.fd = self.sock.fileno()
        self.slots = slots
        self.slot_size = slot_size or max(2048, (self.mtu + 64 + 63) // 64 * 64)
        if rx:
            self.buf = np.zeros((slots, self.slot_size), np.uint8)
            self.ctrl = np.zeros((slots, CTRL), np.uint8)
            self._riov = np.zeros(slots, _IOV)
            self._riov["base"] = self.buf.ctypes.data + np.arange(slots, dtype=np.uint64) * self.slot_size
            self._riov["len"] = self.slot_size
            self._rhdr = np.zeros(slots, _HDR)
            self._rhdr["iov"] = self._riov.ctypes.data + np.arange(slots, dtype=np.uint64) * _IOV.itemsize
            self._rhdr["iovlen"] = 1
            self._rhdr["control"] = self.ctrl.ctypes.data + np.arange(slots, dtype=np.uint64) * CTRL
        self._siov = np.zeros(1024, _IOV)
        self._shdr = np.zeros(1024, _HDR)
        self._shdr["iov"] = self._siov.ctypes.data + np.arange(1024, dtype=np.uint64) * _IOV.itemsize
        self._shdr["iovlen"] = 1

    def close(self) -> None:
        self.sock.close()

    def receive(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``slots`` frames: (rows, lengths, kernel receive ns); empty arrays after the timeout."""
        self._rhdr["controllen"] = CTRL
        n = _recvmmsg(self.fd, self._rhdr.ctypes.data, self.slots, MSG_WAITFORONE, None)
        if n <= 0:
            err = ctypes.get_errno()
            if n < 0 and err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, os.strerror(err))
            return self.buf[:0], np.zeros(0, np.int64), np.zeros(0, np.int64)
        lens = self._rhdr["len"][:n].astype(np.int64)
        c = self.ctrl[:n]
        has_ts = (c[:, 12:16].view("<i4")[:, 0] == SO_TIMESTAMPNS) & (self._rhdr["controllen"][:n] >= CTRL)
        ts = c[:, 16:24].view("<i8")[:, 0] * 1_000_000_000 + c[:, 24:32].view("<i8")[:, 0]
        return self.buf[:n], lens, np.where(has_ts, ts, 0)

    def send(self, rows: np.ndarray, lengths: np.ndarray | int) -> int:
        """Send every row (its first ``lengths`` bytes); returns how many the kernel took."""
        total = len(rows)
        done = 0
        base = rows.ctypes.data
        stride = rows.strides[0]
        while done < total:
            k = min(1024, total - done)
            self._siov["base"][:k] = base + (np.arange(done, done + k, dtype=np.uint64) * stride)
            self._siov["len"][:k] = lengths if np.isscalar(lengths) else lengths[done:done + k]
            n = _sendmmsg(self.fd, self._shdr.ctypes.data, k, 0)
            if n <= 0:
                err = ctypes.get_errno()
                if err in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                    return done
                raise OSError(err, os.strerror(err))
            done += n
            if n < k:
                return done
        return done

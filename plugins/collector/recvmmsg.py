"""Batched, non-blocking UDP reads: ``recvmmsg(2)`` through ctypes, ``recvfrom`` where unavailable.

One :class:`BatchReceiver` per socket holds preallocated buffers for
:data:`VLEN` datagrams (one anonymous ``mmap`` of ``VLEN * slot`` bytes:
pages are touched only as datagrams land in them), their source addresses
and one ``SO_RXQ_OVFL`` control buffer each.  :meth:`BatchReceiver.read`
takes up to *room* datagrams with one ``recvmmsg(MSG_DONTWAIT)`` call per
:data:`VLEN`; the per-datagram Python work left is one slice (the copy out
of the slot) and one dict lookup (the source address, cached by its raw
``sockaddr`` bytes).  Lengths, flags and control lengths are read for the
whole batch through numpy views of the ``mmsghdr`` array.

* **Datagram boundaries**: each datagram has its own slot; a datagram longer
  than the slot (``MSG_TRUNC`` in its flags) is not passed on: it is counted
  in :attr:`BatchReceiver.truncated`.  The default slot (65535 bytes) holds any
  IPv4/IPv6 UDP payload, so this only happens with a smaller *slot*.
* **Kernel drops** (``SO_RXQ_OVFL``): the kernel stamps every datagram with
  the socket's drop counter; the last stamped datagram of each call gives
  :attr:`BatchReceiver.rxq_drops`.
* **Fallback**: no libc ``recvmmsg`` or a struct layout other than LP64 Linux
  (checked at load): the same :meth:`read` loops over ``recvmsg`` (first read,
  for the drop count) and ``recvfrom``.  ``use_recvmmsg=False`` forces it.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import sys

import numpy as np

from flowplane.api import IoVec, MMsgHdr, libc_function, lp64_layout

VLEN = 64  # datagrams per recvmmsg call
SLOT = 65535  # bytes per datagram buffer: the largest UDP payload
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux
NAME = 28  # sizeof(struct sockaddr_in6) >= sizeof(struct sockaddr_in)
CONTROL = socket.CMSG_SPACE(4)  # one SO_RXQ_OVFL cmsg (u32)


# numpy view of one mmsghdr (LP64 Linux): the fields written per call
_HDR_DTYPE = np.dtype({"names": ["namelen", "controllen", "flags", "len"],
                       "formats": [np.uint32, np.uint64, np.int32, np.uint32],
                       "offsets": [8, 40, 48, 56], "itemsize": 64})


def load_recvmmsg():
    """libc ``recvmmsg`` if the struct layout is the LP64 one :data:`_HDR_DTYPE` assumes, else None."""
    if not lp64_layout():
        return None
    return libc_function("recvmmsg", (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p))


class BatchReceiver:
    """Reads batches of datagrams from one non-blocking UDP socket as ``[(payload, address)]``."""

    def __init__(self, sock: socket.socket, *, rxq: bool = False, vlen: int = VLEN, slot: int = SLOT,
                 use_recvmmsg: bool = True) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.rxq = rxq  # SO_RXQ_OVFL is set on the socket: read the drop count
        self.rxq_drops = 0  # the kernel's drop count as stamped on the last datagram read
        self.truncated = 0  # datagrams longer than a slot (MSG_TRUNC): not passed on
        self.calls = 0  # recvmmsg / recvfrom calls made
        self.vlen = vlen
        self.slot = slot
        self._addr: dict = {}  # raw source address (u32 for IPv4, bytes for IPv6) -> text, per exporter
        self._recvmmsg = load_recvmmsg() if use_recvmmsg else None
        if self._recvmmsg is not None:
            self._setup()

    @property
    def mode(self) -> str:
        return "recvmmsg" if self._recvmmsg is not None else "recvfrom"

    def _setup(self) -> None:
        v, slot = self.vlen, self.slot
        self._buf = mmap.mmap(-1, v * slot)  # anonymous: zero pages until written
        self._bufaddr = ctypes.addressof(ctypes.c_char.from_buffer(self._buf))
        self._names = ctypes.create_string_buffer(v * NAME)
        self._control = ctypes.create_string_buffer(v * CONTROL)
        self._iov = (IoVec * v)()
        self._msgs = (MMsgHdr * v)()
        names, control = ctypes.addressof(self._names), ctypes.addressof(self._control)
        for i in range(v):
            self._iov[i].base = self._bufaddr + i * slot
            self._iov[i].len = slot
            h = self._msgs[i].hdr
            h.name = names + i * NAME
            h.iov = ctypes.addressof(self._iov[i])
            h.iovlen = 1
            if self.rxq:
                h.control = control + i * CONTROL
        self._view = np.frombuffer(self._msgs, dtype=_HDR_DTYPE)  # shares the ctypes memory
        self._v4 = np.frombuffer(self._names, dtype=np.uint32).reshape(v, NAME // 4)[:, 1]  # sin_addr
        self._ptr = ctypes.addressof(self._msgs)

    def close(self) -> None:
        """Release the buffers (the socket is the caller's)."""
        if self._recvmmsg is not None:
            self._view = None
            self._recvmmsg = None
            try:
                self._buf.close()
            except BufferError:  # a view is still alive somewhere: the GC frees it
                pass

    # -- reading -------------------------------------------------------------------

    def read(self, room: int) -> list[tuple[bytes, str]]:
        """Up to *room* queued datagrams, without waiting (an empty list when none is queued)."""
        if self._recvmmsg is None:
            return self._read_fallback(room)
        out: list[tuple[bytes, str]] = []
        while room > 0:
            got = self._call(min(room, self.vlen), out)
            if got < self.vlen:  # the queue is empty (or room is used up)
                break
            room -= got
        return out

    def _call(self, want: int, out: list) -> int:
        view = self._view
        view["namelen"][:want] = NAME
        if self.rxq:
            view["controllen"][:want] = CONTROL
        n = self._recvmmsg(self.fd, self._ptr, want, MSG_DONTWAIT, None)
        self.calls += 1
        if n <= 0:  # EAGAIN: nothing queued; another error (e.g. ECONNREFUSED queued) is consumed by the call
            return 0
        v = view[:n]
        lens = v["len"].tolist()
        if self.rxq:
            cl = v["controllen"]
            stamped = np.flatnonzero(cl)
            if len(stamped):
                self._rxq_from(int(stamped[-1]))
        buf, slot, cache = self._buf, self.slot, self._addr
        if self.family == socket.AF_INET6:
            raw = self._names.raw  # port skipped: flowinfo, address and scope id
            keys = [raw[p + 4:p + 28] for p in range(0, n * NAME, NAME)]
        else:
            keys = self._v4[:n].tolist()  # the IPv4 source address as a native u32, per datagram
        miss = self._address
        flags = v["flags"]
        if (flags & MSG_TRUNC).any():
            bad = flags & MSG_TRUNC != 0
            self.truncated += int(bad.sum())
            out += [(buf[o:o + ln], cache.get(k) or miss(k))
                    for o, ln, k, b in zip(range(0, n * slot, slot), lens, keys, bad.tolist()) if not b]
        else:
            out += [(buf[o:o + ln], cache.get(k) or miss(k)) for o, ln, k in zip(range(0, n * slot, slot), lens, keys)]
        return n

    def _address(self, key) -> str:
        """The text form of a raw source address (as ``recvfrom`` gives it), cached."""
        if self.family == socket.AF_INET6:
            text = socket.inet_ntop(socket.AF_INET6, key[4:20])
            scope = int.from_bytes(key[20:24], sys.byteorder)
            if scope:
                try:
                    text += "%" + socket.if_indextoname(scope)
                except OSError:
                    text += f"%{scope}"
        else:
            text = socket.inet_ntop(socket.AF_INET, key.to_bytes(4, sys.byteorder))
        if len(self._addr) >= 65536:  # bounded: a flood of spoofed sources cannot grow it forever
            self._addr.clear()
        self._addr[key] = text
        return text

    def _rxq_from(self, i: int) -> None:
        raw = self._control.raw[i * CONTROL:(i + 1) * CONTROL]
        # struct cmsghdr {size_t len; int level; int type;} then the u32 drop count
        level = int.from_bytes(raw[8:12], sys.byteorder, signed=True)
        kind = int.from_bytes(raw[12:16], sys.byteorder, signed=True)
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
            self.rxq_drops = int.from_bytes(raw[16:20], sys.byteorder)

    def _read_fallback(self, room: int) -> list[tuple[bytes, str]]:
        """``recvmsg`` for the first read (the drop count) or for every read when the slot is smaller
        than a UDP payload can be (truncation must be seen), else ``recvfrom``."""
        s = self.sock
        out: list[tuple[bytes, str]] = []
        append = out.append
        slot = self.slot
        careful = (1 if self.rxq else 0) if slot >= SLOT else room
        control = CONTROL if self.rxq else 0
        for k in range(room):
            try:
                if k < careful:
                    data, anc, flags, addr = s.recvmsg(slot, control)
                else:
                    data, addr = s.recvfrom(slot)
                    anc, flags = (), 0
            except OSError:  # EAGAIN, or e.g. ECONNREFUSED queued on the socket: nothing read
                break
            self.calls += 1
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    self.rxq_drops = int.from_bytes(value[:4], sys.byteorder)
            if flags & MSG_TRUNC:
                self.truncated += 1
            else:
                append((data, addr[0]))
        return out

"""The Linux ``struct iovec`` / ``msghdr`` / ``mmsghdr`` layouts and libc lookup for batched
socket calls (``recvmmsg(2)``, ``sendmmsg(2)``) through ctypes.

Callers build their arrays with numpy over these layouts, so they first check
:func:`lp64_layout` (the offsets numpy views assume) and fall back to a
per-message loop when it is false or :func:`libc_function` finds no symbol.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


def lp64_layout() -> bool:
    """True on Linux with the LP64 layout: iovec 16 bytes, mmsghdr 64, msghdr fields at
    name 0, namelen 8, iov 16, iovlen 24, control 32, controllen 40, flags 48, msg_len 56."""
    return (sys.platform.startswith("linux") and ctypes.sizeof(IoVec) == 16 and ctypes.sizeof(MMsgHdr) == 64
            and MsgHdr.namelen.offset == 8 and MsgHdr.iov.offset == 16 and MsgHdr.iovlen.offset == 24
            and MsgHdr.control.offset == 32 and MsgHdr.controllen.offset == 40 and MsgHdr.flags.offset == 48
            and MMsgHdr.len.offset == 56)


def libc_function(name: str, argtypes: tuple, restype=ctypes.c_int):
    """libc's *name* with errno kept (``ctypes.get_errno``), or None where libc lacks it."""
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn

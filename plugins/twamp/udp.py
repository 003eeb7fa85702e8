"""UDP sockets for TWAMP-Test: kernel receive timestamps (``SO_TIMESTAMPNS``) and the received TTL."""

from __future__ import annotations

import socket
import struct
import time

import trio

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL_CMSG = 2  # cmsg type carrying the TTL (IP_TTL)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_CMSG_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4) + 64


def open_udp(address: str, port: int, *, ttl: int | None = None, tos: int = 0) -> trio.socket.SocketType:
    """A UDP socket bound to *address*:*port* (0: any free port) asking for kernel RX timestamps and
    the received TTL / hop limit.  Binding is synchronous (it never blocks); raises OSError."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            if ttl is not None:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if tos:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            if ttl is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            if tos:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    except OSError:  # pragma: no cover - options missing on an exotic kernel: user-space stamps
        pass
    return trio.socket.from_stdlib_socket(sock)


async def recv(sock, size: int = 65535) -> tuple[bytes, tuple, int, int]:
    """``(data, source address, receive time ns, TTL or 0)``: the kernel's timestamp when it gave one."""
    data, anc, _flags, addr = await sock.recvmsg(size, _CMSG_SPACE)
    ts = 0
    ttl = 0
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            ts = sec * 1_000_000_000 + nsec
        elif (level == socket.IPPROTO_IP and kind == IP_TTL_CMSG) or \
                (level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT):
            ttl = struct.unpack("i", value[:4])[0] if len(value) >= 4 else value[0]
    return data, addr, ts or time.time_ns(), ttl

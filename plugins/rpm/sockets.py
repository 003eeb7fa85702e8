"""Probe sockets: kernel receive timestamps, DSCP, TTL, source address, ICMP errors, network namespaces."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading

from flowplane.api import dscp_tos, set_ip_options

from . import wire

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class ProbeSocketError(OSError):
    """A probe socket could not be opened; the message says why and what would fix it."""


def in_namespace(name: str | None, fn):
    """``fn()`` with the calling thread in network namespace *name* (``ip netns``); sockets it opens stay there."""
    if not name:
        return fn()
    path = os.path.join(NETNS_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ProbeSocketError(exc.errno,
                               f"routing-instance {name}: no network namespace {path} ({exc.strerror})") from exc
    box: dict = {}

    def worker() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise ProbeSocketError(err, f"routing-instance {name}: setns: {os.strerror(err)} (needs CAP_SYS_ADMIN)")
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    try:
        t = threading.Thread(target=worker, name=f"netns-{name}")
        t.start()
        t.join()
    finally:
        os.close(fd)
    if "error" in box:
        raise box["error"]
    return box["value"]


SO_ATTACH_FILTER = 26
_BPF = struct.Struct("HBBI")  # struct sock_filter: code, jt, jf, k


def _bpf(program: list[tuple[int, int, int, int]]) -> tuple[ctypes.Array, bytes]:
    buf = ctypes.create_string_buffer(b"".join(_BPF.pack(*ins) for ins in program))
    return buf, struct.pack("HL", len(program), ctypes.addressof(buf))  # struct sock_fprog


def attach_icmp_filter(sock: socket.socket, ident: int, v6: bool) -> None:
    """A classic BPF filter on a raw ICMP socket: only messages with our identifier, and ICMP errors, are
    queued to it.  Every raw socket sees every ICMP message; without the filter, N tests cost N x N."""
    ident &= 0xFFFF
    if v6:  # the data starts at the ICMPv6 header
        program = [(0x28, 0, 0, 4),  # ldh [4]            identifier
                   (0x15, 3, 0, ident),  # jeq ident -> accept
                   (0x30, 0, 0, 0),  # ldb [0]            type
                   (0x15, 1, 0, 1),  # destination unreachable -> accept
                   (0x15, 0, 1, 3),  # time exceeded -> accept, else drop
                   (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
    else:  # the data starts at the IPv4 header
        program = [(0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)   X = IP header length
                   (0x48, 0, 0, 4),  # ldh [x+4]          identifier
                   (0x15, 3, 0, ident),  # jeq ident -> accept
                   (0x50, 0, 0, 0),  # ldb [x+0]          type
                   (0x15, 1, 0, 3),  # destination unreachable -> accept
                   (0x15, 0, 1, 11),  # time exceeded -> accept, else drop
                   (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
    buf, fprog = _bpf(program)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    del buf


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def configure(sock: socket.socket, family: int, *, dscp: int = 0, ttl: int = 0, source: str | None = None,
              recverr: bool = True) -> None:
    """Kernel receive timestamps, DSCP, TTL/hop limit, ICMP errors on the error queue, source address."""
    sock.setsockopt(socket.SOL_SOCKET, wire.SO_TIMESTAMPNS, 1)
    if recverr:  # datagram probes: kernel send times too (read from the error queue)
        try:
            sock.setsockopt(socket.SOL_SOCKET, wire.SO_TIMESTAMPING, wire.TX_TIMESTAMPING)
        except OSError:
            pass  # the send time stays the clock just before send()
    set_ip_options(sock, ttl=ttl or None, tos=dscp_tos(dscp), family=family)
    if recverr and family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, wire.IPV6_RECVERR, 1)
    elif recverr:
        sock.setsockopt(socket.IPPROTO_IP, wire.IP_RECVERR, 1)
    if source:
        sock.bind((source, 0))
    sock.setblocking(False)


def open_icmp(v6: bool, *, raw_only: bool = False, dscp: int = 0, ttl: int = 0, source: str | None = None,
              netns: str | None = None) -> tuple[socket.socket, bool]:
    """An ICMP socket and whether it is raw: an unprivileged ping socket where ``net.ipv4.ping_group_range``
    admits our group, else a raw socket (CAP_NET_RAW); *raw_only* for messages ping sockets refuse."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP

    def make() -> tuple[socket.socket, bool]:
        errors = []
        kinds = (socket.SOCK_RAW,) if raw_only else (socket.SOCK_DGRAM, socket.SOCK_RAW)
        for kind in kinds:
            try:
                s = socket.socket(family, kind, proto)
            except OSError as exc:
                errors.append((kind, exc))
                continue
            try:
                configure(s, family, dscp=dscp, ttl=ttl, source=source)
            except OSError:
                s.close()
                raise
            return s, kind == socket.SOCK_RAW
        why = "; ".join(f"{'raw' if k == socket.SOCK_RAW else 'ping'} socket: {e.strerror}" for k, e in errors)
        need = "CAP_NET_RAW" if raw_only else f"a group in net.ipv{6 if v6 else 4}.ping_group_range or CAP_NET_RAW"
        code = errors[-1][1].errno if errors else errno.EPERM
        raise ProbeSocketError(code, f"cannot open an ICMP{'v6' if v6 else ''} socket ({why}); needs {need}")

    return in_namespace(netns, make)


def open_datagram(address: str, port: int, *, dscp: int = 0, ttl: int = 0, source: str | None = None,
                  netns: str | None = None) -> socket.socket:
    """A UDP socket connected to the target (ICMP errors about it arrive on its error queue)."""
    family = family_of(address)

    def make() -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            configure(s, family, dscp=dscp, ttl=ttl, source=source)
            s.connect((address, port))
        except OSError:
            s.close()
            raise
        return s

    return in_namespace(netns, make)


def open_stream(address: str, *, dscp: int = 0, ttl: int = 0, source: str | None = None,
                netns: str | None = None) -> socket.socket:
    """An unconnected, non-blocking TCP socket with the probe's options set."""
    family = family_of(address)

    def make() -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            configure(s, family, dscp=dscp, ttl=ttl, source=source, recverr=False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            s.close()
            raise
        return s

    return in_namespace(netns, make)

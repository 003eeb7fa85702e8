"""Helpers shared by the UDP and TCP transports (no hooks here)."""

from __future__ import annotations

import errno
import ipaddress
import socket

import trio

from flowplane.api import dscp_tos, grow_sndbuf, set_ip_options

#: Requested send buffer.  ``SO_SNDBUFFORCE`` (CAP_NET_ADMIN, which the unit
#: grants) goes past ``net.core.wmem_max``; without it the kernel caps
#: ``SO_SNDBUF`` at ``wmem_max``.
DEFAULT_SNDBUF = 4 * 1024 * 1024


def errname(exc: BaseException) -> str:
    """``ECONNREFUSED`` for an OSError, the class name otherwise (``TooSlowError``)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def family_of(address: str) -> socket.AddressFamily | None:
    """AF_INET / AF_INET6 for a literal address, None for a name."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


async def resolve(host: str, port: int, socktype: int, source_address: str | None) -> tuple:
    """``(family, sockaddr)`` of the first address of *host* (matching the source's family).

    Literal addresses are not looked up; names go through
    ``trio.socket.getaddrinfo`` (a worker thread).  Raises ``OSError``.
    """
    want = family_of(source_address) if source_address else None
    infos = await trio.socket.getaddrinfo(host, port, want or 0, socktype)
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            return fam, sockaddr
    raise OSError(errno.EADDRNOTAVAIL, f"no IPv4/IPv6 address for {host!r}")


def prepare(sock, family: int, *, dscp: int, sndbuf: int | None) -> None:
    """DSCP (``IP_TOS`` / ``IPV6_TCLASS``) and the send buffer (the caller binds)."""
    set_ip_options(sock, tos=dscp_tos(dscp), family=family)
    if sndbuf:
        grow_sndbuf(sock, sndbuf)

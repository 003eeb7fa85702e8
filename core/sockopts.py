"""Socket options every sender sets the same way: TTL / hop limit, DSCP, larger send and receive buffers."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from .firewall_values import DSCP_NAMES

#: ``SO_SNDBUFFORCE`` (CAP_NET_ADMIN may go past ``net.core.wmem_max``).
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
#: ``SO_RCVBUFFORCE`` (CAP_NET_ADMIN may go past ``net.core.rmem_max``).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def dscp_tos(dscp: int) -> int:
    """The TOS / traffic-class byte carrying DSCP *dscp* (ECN bits zero)."""
    return (dscp & 0x3F) << 2


def parse_dscp(value: Any, aliases: Mapping[str, int] | None = None) -> int | None:
    """A DSCP as config writes it: 0..63, six bits (``"101110"``) or a name (``be``, ``ef``, ``afXY``, ``csN``,
    and the caller's *aliases*, ``{"nc1": 48}``), any case; None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 63 else None
    if isinstance(value, str):
        v = value.strip().lower()
        if len(v) == 6 and set(v) <= {"0", "1"}:
            return int(v, 2)
        return DSCP_NAMES.get(v, (aliases or {}).get(v))
    return None


def set_ip_options(sock: socket.socket, *, ttl: int | None = None, tos: int = 0, family: int | None = None) -> None:
    """Set the TTL (IPv6: unicast hop limit) when *ttl* is given and the TOS byte (IPv6: traffic
    class) when *tos* is non-zero, at the level of *family* (default: the socket's); raises OSError."""
    if (family or sock.family) == socket.AF_INET6:
        level, ttl_opt, tos_opt = socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, socket.IPV6_TCLASS
    else:
        level, ttl_opt, tos_opt = socket.IPPROTO_IP, socket.IP_TTL, socket.IP_TOS
    if ttl is not None:
        sock.setsockopt(level, ttl_opt, ttl)
    if tos:
        sock.setsockopt(level, tos_opt, tos)


def grow_sndbuf(sock: socket.socket, size: int) -> None:
    """Ask for a *size*-byte send buffer: ``SO_SNDBUFFORCE`` where allowed, else ``SO_SNDBUF`` (which
    the kernel caps at ``net.core.wmem_max``); raises OSError when neither is accepted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except OSError:  # no CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def grow_rcvbuf(sock: socket.socket, size: int) -> None:
    """Ask for a *size*-byte receive buffer: ``SO_RCVBUFFORCE`` where allowed, else ``SO_RCVBUF`` (which
    the kernel caps at ``net.core.rmem_max``); raises OSError when neither is accepted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:  # no CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

"""TCP keepalive on TWAMP-Control connections (Junos ``tcp-keepidle``, ``tcp-keepintvl``, ``tcp-keepcnt``).

Keepalive probes only run while the connection is idle; a peer that goes silent while we have
unacknowledged data (a control message in flight) is caught by ``TCP_USER_TIMEOUT`` instead, which we
set to the same budget (idle + interval x count), so a dead control connection is detected within that
time in both cases, on the client and on the server.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


@dataclass(frozen=True)
class Keepalive:
    idle: int = 120  # seconds of silence before the first probe (tcp-keepidle)
    interval: int = 5  # seconds between probes (tcp-keepintvl)
    count: int = 6  # unanswered probes before the connection is dead (tcp-keepcnt)

    @property
    def budget_s(self) -> int:
        """Worst-case seconds from the last sign of life to the connection being declared dead."""
        return self.idle + self.interval * self.count


def set_keepalive(sock, ka: Keepalive) -> None:
    """Enable keepalive with *ka* on a TCP socket (stdlib or trio); options this kernel lacks are skipped."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", ka.idle), ("TCP_KEEPINTVL", ka.interval), ("TCP_KEEPCNT", ka.count)):
        opt = getattr(socket, name, None)
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, int(value))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(ka.budget_s * 1000))
    except OSError:  # pragma: no cover - kernels before 2.6.37
        pass

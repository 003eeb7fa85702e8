"""A peer tool's UDP socket as the kernel shows it (/proc/net/udp{,6}): bound yet, and its receive queue drained."""

from __future__ import annotations


def _rows(port: int):
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                yield f


def udp_bound(port: int) -> bool:
    """Some socket on this host is bound to UDP *port*."""
    return any(True for _ in _rows(port))


def udp_drained(port: int) -> bool:
    """Every socket bound to UDP *port* has handed all queued datagrams to its process (rx_queue 0)."""
    rows = list(_rows(port))
    return bool(rows) and all(int(f[4].split(":")[1], 16) == 0 for f in rows)

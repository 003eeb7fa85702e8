"""Content destinations: send copies IP/UDP-encapsulated, police the bandwidth.

Each :class:`Copier` owns one non-blocking UDP socket (TTL / hop limit from
the config, optional source address and port).  The UDP payload of a copy is
the captured IP packet, byte for byte (no link header, no Ethernet padding);
the kernel adds the outer IP and UDP headers.

Bandwidth (bits/s, counted on the outer datagram: IP + UDP + copy):

* **hard-limit** — a token bucket one second deep; a batch's copies are
  admitted in order while tokens last, the rest are dropped and counted
  (``hard_limit_drops``).
* **soft-limit** — the rate measured over one-second windows; above it the
  destination becomes *congested* (one ``dfc_soft_limit_exceeded`` log line
  and a Congestion notification), and below ``soft-limit-clear`` it clears.

Sends never block: a full socket buffer (EAGAIN/ENOBUFS) drops the copy and
counts it (``send_drops``); other errors count under ``errors.<ERRNO>``.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter

import numpy as np

from flowplane.api import set_ip_options

from .config import ContentDestination

SNDBUF = 4 * 1024 * 1024
_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class Copier:
    """One content destination at run time."""

    def __init__(self, cd: ContentDestination) -> None:
        self.cd = cd
        self.overhead = 28 if cd.family == 4 else 48  # outer IP + UDP bytes
        self.sock: socket.socket | None = None
        self.tokens = float(cd.hard_limit)  # bits
        self.last_refill: float | None = None
        self.window_start: float | None = None
        self.window_bits = 0
        self.rate_bps = 0.0  # last completed window
        self.congested = False
        self.counters: Counter[str] = Counter()
        self.open_error = ""

    # -- socket -------------------------------------------------------------------------
    def open(self) -> None:
        """Create the socket (at start; errors are kept and counted, never raised)."""
        cd = self.cd
        fam = socket.AF_INET6 if cd.family == 6 else socket.AF_INET
        try:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.setblocking(False)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            except OSError:  # pragma: no cover - capped by wmem_max
                pass
            set_ip_options(s, ttl=cd.ttl)
            if cd.source_address or cd.source_port:
                s.bind((cd.source_address or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), cd.source_port))
        except OSError as exc:
            self.open_error = f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror or exc}"
            self.counters["open_errors"] += 1
            return
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- policing -------------------------------------------------------------------------
    def admit(self, sizes: np.ndarray, now: float) -> int:
        """How many of these copies (in order, byte sizes of the inner packets) the hard limit admits."""
        n = len(sizes)
        bits = (sizes.astype(np.int64) + self.overhead) * 8
        limit = self.cd.hard_limit
        if not limit:
            return n
        if self.last_refill is not None:
            self.tokens = min(float(limit), self.tokens + (now - self.last_refill) * limit)
        self.last_refill = now
        csum = np.cumsum(bits)
        k = int(np.searchsorted(csum, self.tokens, side="right"))
        if k:
            self.tokens -= float(csum[k - 1])
        if k < n:
            self.counters["hard_limit_drops"] += n - k
            self.counters["hard_limit_drop_bytes"] += int(sizes[k:].sum())
        return k

    def measure(self, bits: int, now: float) -> str | None:
        """Account *bits* sent; returns "congested" / "cleared" when the soft-limit state changes."""
        if self.window_start is None:
            self.window_start = now
        self.window_bits += bits
        elapsed = now - self.window_start
        if elapsed < 1.0:
            return None
        self.rate_bps = self.window_bits / elapsed
        self.window_start, self.window_bits = now, 0
        soft = self.cd.soft_limit
        if not soft:
            return None
        if not self.congested and self.rate_bps > soft:
            self.congested = True
            self.counters["congestion_events"] += 1
            return "congested"
        if self.congested and self.rate_bps < self.cd.soft_limit_clear:
            self.congested = False
            return "cleared"
        return None

    # -- sending ---------------------------------------------------------------------------
    def send(self, data: memoryview, starts: np.ndarray, lengths: np.ndarray, port: int) -> tuple[int, int]:
        """Send the copies ``data[starts[i] : starts[i] + lengths[i]]`` to the destination; (sent, bytes)."""
        if self.sock is None and not self.open_error:
            self.open()  # a batch before the background task opened the sockets (start-up, reload)
        s = self.sock
        c = self.counters
        if s is None:
            c["send_drops"] += len(starts)
            c["errors.not_open"] += len(starts)
            return 0, 0
        addr = (self.cd.address, port)
        sent = nbytes = 0
        sendto = s.sendto
        for o, n in zip(starts.tolist(), lengths.tolist()):
            try:
                sendto(data[o : o + n], addr)
            except OSError as exc:
                c["send_drops"] += 1
                if exc.errno not in _FULL:
                    c[f"errors.{errno.errorcode.get(exc.errno or 0, 'OSError')}"] += 1
                continue
            sent += 1
            nbytes += n
        c["packets"] += sent
        c["bytes"] += nbytes
        return sent, nbytes

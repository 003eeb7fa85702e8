"""sd_notify(3) without libsystemd: READY / RELOADING / STOPPING / WATCHDOG / STATUS.

Build one ``Notifier`` per process with :meth:`Notifier.from_env`.  It pops
``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` so that children
(peer tools, worker processes) do not talk to systemd in our name.  Outside
systemd every method is a no-op.  Sending never raises and never blocks: a
datagram that cannot be delivered (socket gone, queue full) is counted in
``errors`` and dropped, as a watchdog ping that cannot be sent is no reason
to crash the appliance.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    __slots__ = ("address", "errors", "sent", "_sock", "_watchdog_usec")

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        # "/path" or "@abstract"; anything else (unset, "vsock:...") disables notification.
        if address and len(address) > 1 and address[0] in "/@":
            self.address: str | None = "\0" + address[1:] if address[0] == "@" else address
            self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        else:
            self.address, self._sock = None, None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.sent = 0
        self.errors = 0

    @classmethod
    def from_env(cls, environ: dict | None = None) -> Notifier:
        """Take the notify socket and watchdog settings out of ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None)
        usec, pid = env.pop("WATCHDOG_USEC", None), env.pop("WATCHDOG_PID", None)
        try:
            watchdog = int(usec) if usec and (pid is None or int(pid) == os.getpid()) else None
        except ValueError:
            watchdog = None
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True if it was sent."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode("utf-8"), self.address)
        except OSError:  # ENOENT/ECONNREFUSED: systemd went away; EAGAIN: queue full
            self.errors += 1
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets `systemctl reload` wait for the matching READY=1 (systemd >= 253).
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now}", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(*self._status(text))

    def extend_timeout(self, usec: int) -> bool:
        """Ask for ``usec`` more microseconds before the start/stop timeout fires."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    def watchdog_period(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of WatchdogSec=), or None if off."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        # One line only: a newline would start a new assignment.
        return () if text is None else ("STATUS=" + " ".join(str(text).splitlines()),)

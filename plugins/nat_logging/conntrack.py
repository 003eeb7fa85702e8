"""The ctnetlink event listener and the conntrack dump, on sockets driven by trio.

:class:`ConntrackListener` subscribes to the conntrack NEW and DESTROY groups (UPDATE when asked)
of the network namespace the service runs in, IPv4 and IPv6.  Each time the socket turns readable
it drains every queued datagram (up to :data:`BATCH_MAX`) without blocking and hands the parsed
messages to ``on_batch`` in one call.  When the kernel could not queue an event (the socket buffer
was full) the next ``recv`` fails with ``ENOBUFS``: that overrun is counted and ``on_overrun`` is
called, and the owner resynchronises from a dump (:func:`dump`).  A malformed message is counted
(``malformed``) and skipped.
"""

from __future__ import annotations

import errno
import itertools
import socket
from collections.abc import Callable
from typing import Any

import structlog
import trio

from flowplane.api import Counters, grow_rcvbuf

from .netlink import NETLINK_NETFILTER, CtMessage, dump_request, groups, messages

log = structlog.get_logger("flowplane.nat_logging")

RECV_SIZE = 1 << 16
BATCH_MAX = 512  # datagrams drained per readable wake-up
_seq = itertools.count(1)


def open_socket(group_mask: int, rcvbuf: int | None) -> socket.socket:
    """A non-blocking NETLINK_NETFILTER socket bound to *group_mask* (0: no events, for a dump)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        s.setblocking(False)
        if rcvbuf:
            grow_rcvbuf(s, rcvbuf)  # without CAP_NET_ADMIN: capped at rmem_max
        s.bind((0, group_mask))
    except BaseException:
        s.close()
        raise
    return s


async def dump(counters: Counters | None = None, *, rcvbuf: int = 1 << 22) -> list[CtMessage]:
    """Every conntrack entry of this namespace (NLM_F_DUMP on a socket of its own)."""
    stats: dict = {}
    out: list[CtMessage] = []
    s = open_socket(0, rcvbuf)
    try:
        seq = next(_seq)
        s.sendto(dump_request(seq), (0, 0))
        while True:
            await trio.lowlevel.wait_readable(s)
            while True:
                try:
                    data = s.recv(RECV_SIZE)
                except BlockingIOError:
                    break
                msgs, done, err = messages(data, stats=stats)
                for m in msgs:
                    m.kind = "new"  # dump entries come as IPCTNL_MSG_CT_NEW without NLM_F_CREATE
                out += msgs
                if err:
                    raise OSError(err, f"conntrack dump failed: {errno.errorcode.get(err, err)}")
                if done:
                    return out
    finally:
        s.close()
        if counters is not None and stats.get("malformed"):
            counters.inc("malformed", stats["malformed"])


class ConntrackListener:
    """Conntrack events of this namespace -> ``on_batch(list[CtMessage])``; overruns -> ``on_overrun()``.

    Counters: ``datagrams``, ``messages``, ``batches``, ``overruns``, ``malformed``, ``recv_errors``,
    ``handler_errors`` (a batch ``on_batch`` failed on: counted, logged once, the listener goes on).
    """

    def __init__(self, on_batch: Callable[[list[CtMessage]], Any], on_overrun: Callable[[], Any], *,
                 counters: Counters, rcvbuf: int = 1 << 22, update: bool = False) -> None:
        self.on_batch = on_batch
        self.on_overrun = on_overrun
        self.counters = counters
        self.rcvbuf = rcvbuf
        self.mask = groups(new=True, update=update, destroy=True)
        self.sock: socket.socket | None = None
        self.rcvbuf_effective = 0
        self.overrun_pending = False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        s = open_socket(self.mask, self.rcvbuf)
        self.sock = s
        self.rcvbuf_effective = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        log.info("conntrack_listening", groups=self.mask, receive_buffer=self.rcvbuf_effective)
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(s)
                self.drain()
        finally:
            self.sock = None
            s.close()

    def drain(self) -> int:
        """Read what is queued now (never blocks); the number of datagrams read."""
        s = self.sock
        if s is None:
            return 0
        c = self.counters
        batch: list[CtMessage] = []
        stats: dict = {}
        n = 0
        empty = False
        while n < BATCH_MAX:
            try:
                data = s.recv(RECV_SIZE)
            except BlockingIOError:
                empty = True
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    c.inc("overruns")
                    self.overrun_pending = True
                    continue
                c.inc("recv_errors")
                break
            n += 1
            msgs, _, _ = messages(data, stats=stats)
            batch += msgs
        c.inc("datagrams", n)
        if stats.get("malformed"):
            c.inc("malformed", stats["malformed"])
        if batch:
            c.inc("messages", len(batch))
            c.inc("batches")
            try:
                self.on_batch(batch)
            except Exception as exc:  # a bug on one batch must not stop the listener: counted, logged once
                c.inc("handler_errors")
                c.drop("conntrack", "handler_error", len(batch))
                if c["handler_errors"] == 1:
                    log.error("nat_batch_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        if self.overrun_pending and empty:
            # the queue is empty now, so the kernel has left its congested state: from here on every lost
            # event is reported by a new ENOBUFS, and a dump taken now misses nothing unreported
            self.overrun_pending = False
            self.on_overrun()
        return n

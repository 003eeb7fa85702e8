"""Port-mirroring state: instances, their sampler, and their destinations' sockets.

Everything on the data path is synchronous, batch-shaped and non-blocking:
the ``port-mirror`` handler samples the selected rows, then each
destination sends its copies with one ``sendmmsg`` per batch
(:mod:`.send`).  Nothing is queued, so nothing is in flight at shutdown; a
full socket buffer or a down interface is a counted drop, never a wait.
The one background task reopens destinations whose socket could not be
opened (interface missing, no route) once a second.

The original frame is never touched: copies are read from the batch buffer
(zero copy) and truncated by length only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
import time
from typing import Any

import numpy as np
import structlog
import trio

from flowplane.api import (
    LINKTYPE_ETHERNET,
    Counters,
    PacketBatch,
    Sampler,
    dscp_tos,
    grow_sndbuf,
    hookimpl,
    set_ip_options,
)

from .config import DEFAULT_INSTANCE, Destination, Instance, MirrorConfig
from .encap import OVERHEAD, erspan_headers, gre_header
from .send import IFACE_DOWN, REASONS, SEND_ERROR, UNREACHABLE, BatchSender, reason_of

log = structlog.get_logger("flowplane.port_mirroring")

SO_ATTACH_FILTER = 26
SNDBUF = 4 << 20
REOPEN_INTERVAL = 1.0
#: reasons that mean the destination itself is failing (logged once, until it recovers)
FAILURE_REASONS = frozenset({IFACE_DOWN, UNREACHABLE, SEND_ERROR})
AF_COLUMN = {"inet": 4, "inet6": 6}
IP_MTU_DISCOVER = 10  # <linux/in.h>
IP_PMTUDISC_DONT = 0


def _drop_all_filter(sock: socket.socket) -> None:
    """Attach the one-instruction BPF ``ret #0``: a send-only socket queues nothing it receives."""
    insns = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))
    prog = struct.pack("HL", 1, ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def open_socket(dest: Destination) -> socket.socket:
    """The send socket of *dest*: AF_PACKET bound to the interface, or raw IPPROTO_GRE (unconnected:
    ICMP errors from the analyzer must not turn into send errors)."""
    if dest.kind == "interface":
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    else:
        fam = socket.AF_INET6 if dest.remote_family == 6 else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_GRE)
    try:
        _set_up(sock, dest)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_up(sock: socket.socket, dest: Destination) -> None:
    """Bind an interface socket; give a GRE socket its drop-all filter, TTL, DSCP and source; then a
    larger send buffer where the kernel grants it, non-blocking."""
    if dest.kind == "interface":
        sock.bind((dest.target, 0))
    else:
        _drop_all_filter(sock)
        set_ip_options(sock, ttl=dest.ttl, tos=dscp_tos(dest.dscp))
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)  # fragment big copies
        if dest.source_address:
            sock.bind((dest.source_address, 0))
    with contextlib.suppress(OSError):
        grow_sndbuf(sock, SNDBUF)
    sock.setblocking(False)


class DestinationState:
    """One destination of one instance: its socket, counters and up/down state."""

    def __init__(self, instance: str, dest: Destination, sender: BatchSender) -> None:
        self.instance = instance
        self.dest = dest
        self.sender = sender
        self.counters = Counters(f"{instance}/{dest.label}")
        self.sock: socket.socket | None = None
        self.up = True
        self.last_error = ""
        self.down_since: float | None = None
        self.dropped_while_down = 0
        self.seq = 0  # ERSPAN / GRE sequence number
        self.all_families = "any" in dest.families
        self.afs = tuple(AF_COLUMN[f] for f in dest.families if f in AF_COLUMN)
        self.address = None if dest.kind == "interface" else (dest.target, 0)

    # -- socket ------------------------------------------------------------------
    def open(self) -> bool:
        try:
            self.sock = open_socket(self.dest)
        except OSError as exc:
            self.sock = None
            code = reason_of(exc.errno or 0)
            if self.dest.kind == "interface" and exc.errno in (errno.ENODEV, errno.ENXIO, None):
                code = IFACE_DOWN
            self._fail(code, f"{exc.strerror or exc}")
            return False
        if not self.up:
            self._recover()
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- state -------------------------------------------------------------------
    def _fail(self, code: int, detail: str) -> None:
        reason = REASONS[code]
        self.last_error = f"{reason}: {detail}" if detail else reason
        if self.up:
            self.up = False
            self.down_since = time.time()
            self.dropped_while_down = 0
            log.warning("port_mirror_destination_failed", instance=self.instance, destination=self.dest.label,
                        reason=reason, error=detail)

    def _recover(self) -> None:
        down_for = time.time() - self.down_since if self.down_since else 0.0
        log.info("port_mirror_destination_recovered", instance=self.instance, destination=self.dest.label,
                 down_seconds=round(down_for, 3), dropped_while_down=self.dropped_while_down)
        self.up = True
        self.down_since = None
        self.last_error = ""

    # -- data path ---------------------------------------------------------------
    def rows(self, af: np.ndarray | None) -> np.ndarray | None:
        """Mask of the rows this destination takes (None = all)."""
        if self.all_families:
            return None
        if af is None:
            return np.zeros(0, dtype=bool)
        if len(self.afs) == 1:
            return af == self.afs[0]
        return np.isin(af, self.afs)

    def send(self, batch: PacketBatch, idx: np.ndarray, lens: np.ndarray) -> None:
        """Send copies of rows *idx* of *batch* (*lens* bytes of each)."""
        n = len(idx)
        if n == 0:
            return
        c = self.counters
        if batch.linktype != LINKTYPE_ETHERNET:
            c.drop("send", "not_ethernet", n)
            return
        if self.sock is None:
            code = IFACE_DOWN if self.dest.kind == "interface" else UNREACHABLE
            c.drop("send", REASONS[code], n)
            self.dropped_while_down += n
            return
        starts = batch.offset[idx]
        kind = self.dest.kind
        if kind == "interface":
            headers = None
        elif kind == "gre":
            headers = gre_header()
        else:
            vlan = batch.vlan[idx] if batch.decoded else np.zeros(n, dtype=np.uint16)
            headers = erspan_headers(self.seq, session_id=self.dest.session_id, vlan=vlan, index=batch.iface[idx])
            self.seq = (self.seq + n) & 0xFFFFFFFF
        status = self.sender.send_batch(self.sock, batch.data, starts, lens, headers, self.address)
        ok = status == 0
        sent = int(ok.sum())
        if sent:
            c.inc("packets", sent)
            c.inc("bytes", int(lens[ok].sum(dtype=np.int64)) if sent < n else int(lens.sum(dtype=np.int64)))
            if kind != "interface":
                c.inc("encapsulated_bytes", sent * OVERHEAD[kind])
        if sent < n:
            codes, counts = np.unique(status[~ok], return_counts=True)
            for code, cnt in zip(codes.tolist(), counts.tolist()):
                c.drop("send", REASONS[code], cnt)
            worst = [code for code in codes.tolist() if code in FAILURE_REASONS]
            if worst:
                self._fail(worst[0], _errno_hint(worst[0]))
                self.dropped_while_down += n - sent
                if worst[0] == IFACE_DOWN and self.dest.kind == "interface" and not _iface_exists(self.dest.target):
                    self.close()  # deleted: reopen by name (new ifindex) from the background task
                return
        if sent and not self.up:
            self._recover()

    def snapshot(self) -> dict:
        c = self.counters
        return {
            "destination": self.dest.label,
            "kind": self.dest.kind,
            "target": self.dest.target,
            "families": list(self.dest.families),
            "source_address": self.dest.source_address,
            "session_id": self.dest.session_id if self.dest.kind == "erspan" else None,
            "state": "up" if self.up and self.sock is not None else "down",
            "last_error": self.last_error,
            "packets": c["packets"],
            "bytes": c["bytes"],
            "encapsulated_bytes": c["encapsulated_bytes"],
            "drops": {r: n for (_, r), n in sorted(c.drops.items())},
        }


def _errno_hint(code: int) -> str:
    return {IFACE_DOWN: "interface down or gone", UNREACHABLE: "no route to the analyzer"}.get(code, "send failed")


def _iface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


class InstanceEngine:
    """One port-mirroring instance: the sampler and the destinations."""

    def __init__(self, inst: Instance, sender: BatchSender) -> None:
        self.inst = inst
        self.counters = Counters(inst.name)
        self.sampler = Sampler(inst.rate, run_length=inst.run_length)
        self.destinations = [DestinationState(inst.name, d, sender) for d in inst.destinations]

    def mirror(self, batch: PacketBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        c = self.counters
        c.inc("candidates", n)
        idx = self.sampler.select(n)
        if len(idx) == 0:
            return
        c.inc("sampled", len(idx))
        lens = batch.caplen[idx].astype(np.int64)
        m = self.inst.maximum_packet_length
        if m:
            over = lens > m
            if over.any():
                c.inc("truncated", int(over.sum()))
                np.minimum(lens, m, out=lens)
        af = batch.af[idx] if batch.decoded else None
        for d in self.destinations:
            rows = d.rows(af)
            if rows is None:
                d.send(batch, idx, lens)
            elif rows.any():
                d.send(batch, idx[rows], lens[rows])

    def snapshot(self) -> dict:
        c = self.counters
        return {
            "instance": self.inst.name,
            "rate": self.inst.rate,
            "run_length": self.inst.run_length,
            "maximum_packet_length": self.inst.maximum_packet_length,
            "candidates": c["candidates"],
            "sampled": c["sampled"],
            "truncated": c["truncated"],
            "destinations": [d.snapshot() for d in self.destinations],
        }

    def clear(self) -> None:
        self.counters.clear()
        for d in self.destinations:
            d.counters.clear()


class PortMirror:
    """The stateful object registered while port mirroring is configured."""

    def __init__(self, app: Any, cfg: MirrorConfig, *, use_sendmmsg: bool = True) -> None:
        self.app = app
        self.config = cfg
        self.sender = BatchSender(use_sendmmsg=use_sendmmsg)
        self.engines = {name: InstanceEngine(inst, self.sender) for name, inst in cfg.instances.items()}
        self.counters = Counters("port-mirroring")

    def open(self, previous: PortMirror | None = None) -> None:
        """Open every destination's socket; keep the counters of a replaced object's same destinations."""
        old = {}
        if previous is not None:
            old = {(e.inst.name, d.dest.label): d for e in previous.engines.values() for d in e.destinations}
            for name, e in self.engines.items():
                if name in previous.engines:
                    e.counters = previous.engines[name].counters
        for e in self.engines.values():
            for d in e.destinations:
                prev = old.get((e.inst.name, d.dest.label))
                if prev is not None:
                    d.counters, d.seq = prev.counters, prev.seq
                d.open()
        log.info("port_mirroring_started", instances=len(self.engines), method=self.sender.method,
                 destinations=sum(len(e.destinations) for e in self.engines.values()))

    # -- action handlers -------------------------------------------------------------
    def on_port_mirror(self, selections) -> None:
        engine = self.engines.get(DEFAULT_INSTANCE)
        for sel in selections:
            if engine is None:  # validation prevents it; a counted drop if it happens anyway
                self.counters.drop("port-mirror", "no_instance", len(sel.batch))
                continue
            engine.mirror(sel.batch)

    def on_port_mirror_instance(self, selections) -> None:
        for sel in selections:
            engine = self.engines.get(str(sel.arg))
            if engine is None:
                self.counters.drop("port-mirror-instance", "no_instance", len(sel.batch))
                continue
            engine.mirror(sel.batch)

    # -- tasks ---------------------------------------------------------------------
    def destinations(self) -> list[DestinationState]:
        return [d for e in self.engines.values() for d in e.destinations]

    def reopen_closed(self) -> None:
        for d in self.destinations():
            if d.sock is None:
                d.open()

    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self._reopen_loop]

    async def _reopen_loop(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(REOPEN_INTERVAL)
            self.reopen_closed()

    @hookimpl
    def flowplane_shutdown(self, app):
        # sends are synchronous: nothing is queued in flowplane; the kernel owns what was sent
        totals = [d.snapshot() for d in self.destinations()]
        log.info("port_mirroring_stopped", packets=sum(t["packets"] for t in totals),
                 bytes=sum(t["bytes"] for t in totals),
                 dropped=sum(sum(t["drops"].values()) for t in totals))
        for d in self.destinations():
            d.close()

    def snapshot(self, instance: str | None = None) -> dict:
        return {"method": self.sender.method,
                "instances": [e.snapshot() for n, e in self.engines.items() if instance in (None, n)],
                "drops": {f"{s}:{r}": n for (s, r), n in sorted(self.counters.drops.items())}}

"""The reflector (``mode reflect``): turn the test frames of one stream around on the test interface.

A batch of frames comes in with one ``recvmmsg``; the frames of the configured stream (family, UDP
destination port, and the addresses and source port where configured) are checked and swapped with
numpy over the whole batch, then go back out with one ``sendmmsg``.  Nothing is done per frame in
Python.  Swapping addresses and ports leaves the IPv4 and UDP checksums valid (one's complement sums
do not depend on the order), so none is recomputed.

Drop reasons (counted, never reflected):

* ``truncated``: shorter than the headers and the test payload, or shorter than its IP length says;
* ``bad-signature``: no test signature (unless ``disable-signature-check``);
* ``other-test``: a test frame (signature present) of another stream: other addresses or ports;
* ``oversize``: longer than the interface MTU allows (``check-test-interface-mtu``).

Everything else on the interface (ARP, neighbour discovery, other traffic) is counted as ``ignored``.
"""

from __future__ import annotations

import ipaddress
import threading
import time

import numpy as np

from .config import TestConfig
from .frames import layout, signature_ok, u16, udp_mask
from .packetio import PacketIO

RX_IDLE_S = 0.0002
REASONS = ("truncated", "bad-signature", "other-test", "oversize")


class ReflectorEngine:
    """Counters and the batch logic of one reflect test; :meth:`run` is the blocking loop (a thread)."""

    def __init__(self, cfg: TestConfig) -> None:
        self.cfg = cfg
        self.lay = layout(cfg.family, cfg.reflect_etype)
        self.received = 0  # frames of the stream (before the checks)
        self.reflected = 0
        self.ignored = 0
        self.send_failed = 0
        self.dropped = dict.fromkeys(REASONS, 0)
        self.first_frame = 0.0
        self.last_frame = 0.0
        self.mtu = 0
        ip = self.lay.ip
        if cfg.family == "inet":
            self._src = (ip + 12, ipaddress.IPv4Address(cfg.source_address).packed if cfg.source_address else None)
            self._dst = (ip + 16, ipaddress.IPv4Address(cfg.destination_address).packed
                         if cfg.destination_address else None)
        elif cfg.family == "inet6":
            self._src = (ip + 8, ipaddress.IPv6Address(cfg.source_address).packed if cfg.source_address else None)
            self._dst = (ip + 24, ipaddress.IPv6Address(cfg.destination_address).packed
                         if cfg.destination_address else None)
        else:
            self._src = self._dst = (0, None)

    def process(self, rows: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify and count one batch; return the reflected frames (a new array) and their lengths."""
        cfg, lay = self.cfg, self.lay
        if cfg.family == "bridge":
            ours = (lens >= 14) & (u16(rows, 12) == lay.ethertype)
            stream = ours
        else:
            ours = udp_mask(rows, lens, lay)
            stream = ours & (u16(rows, lay.udp + 2) == cfg.destination_port)
            if cfg.source_port is not None:
                stream &= u16(rows, lay.udp) == cfg.source_port
            for off, want in (self._src, self._dst):
                if want is not None:
                    stream &= np.all(rows[:, off:off + len(want)] == np.frombuffer(want, np.uint8), axis=1)
        sig = signature_ok(rows, lens, lay)
        other = ours & ~stream & sig
        self.dropped["other-test"] += int(other.sum())
        self.ignored += int(len(lens) - stream.sum() - other.sum())
        n = int(stream.sum())
        if not n:
            return rows[:0], lens[:0]
        now = time.time()
        self.first_frame = self.first_frame or now
        self.last_frame = now
        self.received += n
        short = lens < lay.min_frame
        if cfg.family == "inet":
            short |= u16(rows, 16).astype(np.int64) + 14 > lens
        elif cfg.family == "inet6":
            short |= u16(rows, 18).astype(np.int64) + 54 > lens
        trunc = stream & short
        good = stream & ~short
        big = good & (lens > self.mtu + 14) if (cfg.check_mtu and self.mtu) else np.zeros_like(good)
        good &= ~big
        bad = good & ~sig if cfg.signature_check else np.zeros_like(good)
        good &= ~bad
        self.dropped["truncated"] += int(trunc.sum())
        self.dropped["oversize"] += int(big.sum())
        self.dropped["bad-signature"] += int(bad.sum())
        out = rows[good]  # a copy: the receive slots are reused
        out_lens = lens[good]
        if len(out):
            self.swap(out)
        return out, out_lens

    def swap(self, out: np.ndarray) -> None:
        cfg, lay = self.cfg, self.lay
        if cfg.mac_swap:
            out[:, 0:12] = np.concatenate((out[:, 6:12], out[:, 0:6]), axis=1)
        if cfg.ip_swap and cfg.family in ("inet", "inet6"):
            a = 4 if cfg.family == "inet" else 16
            s = lay.ip + (12 if cfg.family == "inet" else 8)
            out[:, s:s + 2 * a] = np.concatenate((out[:, s + a:s + 2 * a], out[:, s:s + a]), axis=1)
        if cfg.port_swap and lay.udp:
            u = lay.udp
            out[:, u:u + 4] = np.concatenate((out[:, u + 2:u + 4], out[:, u:u + 2]), axis=1)

    def run(self, stop: threading.Event, started: threading.Event | None = None) -> None:
        """Reflect until *stop* is set (blocking; run it in a thread)."""
        io = PacketIO(self.cfg.interface, rx=True, timeout=0.1)
        self.mtu = io.mtu
        try:
            if started is not None:
                started.set()
            while not stop.is_set():
                rows, lens, _ = io.receive()
                if len(lens) < io.slots // 8:
                    time.sleep(RX_IDLE_S)  # a short wait turns a trickle into batches (adds at most this delay)
                if not len(lens):
                    continue
                out, out_lens = self.process(rows, lens)
                if len(out):
                    sent = io.send(out, out_lens)
                    self.reflected += sent
                    self.send_failed += len(out) - sent
        finally:
            io.close()

    def status(self) -> dict:
        return {"received": self.received, "reflected": self.reflected, "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()), "ignored": self.ignored,
                "send_failed": self.send_failed,
                "first_frame": self.first_frame or None, "last_frame": self.last_frame or None,
                "settings": {"reflect_mode": "mac-swap" if self.cfg.mac_swap else "no-mac-swap",
                             "ip_swap": self.cfg.ip_swap, "udp_tcp_port_swap": self.cfg.port_swap,
                             "signature_check": self.cfg.signature_check}}

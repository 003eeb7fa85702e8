"""One trial: send frames at a paced rate and count what comes back (blocking; threads).

The sender stamps each batch of rows with sequence numbers and the time, and sends it with one
``sendmmsg`` at absolute deadlines (``t0 + seq / rate``), sleeping when early and spinning for the last
fraction of a millisecond.  The receiver, in its own thread, reads batches with kernel timestamps and
folds them into :class:`Tally` with numpy: received, duplicates, out-of-order (a sequence number below
the highest seen before it), latency min/avg/max.  Frames of an earlier trial carry another tag and are
counted as ``stale``.  After the last frame the receiver waits ``wait`` seconds (RFC 2544: about 2 s)
for frames still in flight.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from .frames import FrameBatch, Stream, line_kbps, signature_ok, u16, u32, u64
from .packetio import PacketIO

RX_IDLE_S = 0.001  # after a small batch the receiver waits this long, so the next call takes many frames


@dataclass
class TrialResult:
    size: int
    offered_fps: float
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    stale: int = 0
    send_failed: int = 0
    latency_min_us: float | None = None
    latency_avg_us: float | None = None
    latency_max_us: float | None = None
    seconds: float = 0.0  # how long sending took

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.received)

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def as_dict(self) -> dict:
        return {"size": self.size, "offered_fps": round(self.offered_fps, 1),
                "offered_kbps": round(line_kbps(self.offered_fps, self.size), 1),
                "achieved_fps": round(self.sent / self.seconds, 1) if self.seconds else 0.0,
                "sent": self.sent, "received": self.received, "lost": self.lost,
                "loss_percent": round(self.loss_percent, 4), "duplicates": self.duplicates,
                "out_of_order": self.out_of_order, "stale": self.stale, "send_failed": self.send_failed,
                "latency_min_us": _r(self.latency_min_us), "latency_avg_us": _r(self.latency_avg_us),
                "latency_max_us": _r(self.latency_max_us)}


def _r(v):
    return None if v is None else round(v, 1)


class Tally:
    """Received test frames of one trial, folded batch by batch."""

    def __init__(self, expected: int, tag: int, lay) -> None:
        self.seen = np.zeros(max(1, expected), np.bool_)
        self.tag, self.lay = tag, lay
        self.received = self.duplicates = self.out_of_order = self.stale = 0
        self.max_seq = -1
        self.lat_n = 0
        self.lat_sum = 0
        self.lat_min: int | None = None
        self.lat_max: int | None = None

    def add(self, rows: np.ndarray, lens: np.ndarray, rx_ns: np.ndarray) -> None:
        lay = self.lay
        ok = signature_ok(rows, lens, lay)
        if lay.udp:
            ok &= u16(rows, 12) == lay.ethertype
        if not ok.any():
            return
        rows, rx_ns = rows[ok], rx_ns[ok]
        tag = u16(rows, lay.payload + 4)
        mine = tag == self.tag
        self.stale += int((~mine).sum())
        rows, rx_ns = rows[mine], rx_ns[mine]
        if not len(rows):
            return
        seq = u32(rows, lay.payload + 6).astype(np.int64)
        tx = u64(rows, lay.payload + 10).astype(np.int64)
        inside = seq < len(self.seen)
        self.stale += int((~inside).sum())
        seq, tx, rx_ns = seq[inside], tx[inside], rx_ns[inside]
        if not len(seq):
            return
        uniq, first = np.unique(seq, return_index=True)
        dup = len(seq) - len(uniq) + int(self.seen[uniq].sum())
        self.duplicates += dup
        self.seen[uniq] = True
        self.received += len(seq) - dup
        running = np.maximum.accumulate(np.concatenate(([self.max_seq], seq)))
        self.out_of_order += int((seq < running[:-1]).sum())
        self.max_seq = int(running[-1])
        has = rx_ns > 0
        if has.any():
            lat = rx_ns[has] - tx[has]
            self.lat_n += len(lat)
            self.lat_sum += int(lat.sum())
            lo, hi = int(lat.min()), int(lat.max())
            self.lat_min = lo if self.lat_min is None else min(self.lat_min, lo)
            self.lat_max = hi if self.lat_max is None else max(self.lat_max, hi)


def _sleep_until(deadline_ns: int) -> None:
    while True:
        left = deadline_ns - time.perf_counter_ns()
        if left <= 0:
            return
        if left > 300_000:
            time.sleep((left - 200_000) / 1e9)


def run_trial(stream: Stream, size: int, fps: float, count: int, *, wait: float, stop: threading.Event,
              tx: PacketIO | None = None, rx: PacketIO | None = None, max_batch: int = 256,
              burst: bool = False) -> TrialResult:
    """Send *count* frames of *size* bytes at *fps* on the stream's interface and count the returns.

    ``burst=True`` sends back to back as fast as the host can (back-to-back frames); *fps* is then only
    recorded.  *tx* / *rx* may be passed in (e.g. loopback for calibration); they are not closed here.
    """
    own_tx, own_rx = tx is None, rx is None
    ifname = getattr(stream, "interface", None)
    tx = tx or PacketIO(ifname, rx=False)
    rx = rx or PacketIO(ifname, rx=True, timeout=0.05)
    fb = FrameBatch(stream, size, min(max_batch, max(1, count)))
    tally = Tally(count, stream.tag, fb.layout)
    result = TrialResult(size, fps)
    rx_done = threading.Event()

    def receive() -> None:
        while not rx_done.is_set():
            rows, lens, ts = rx.receive()
            if len(lens):
                tally.add(rows, lens, ts)
            if len(lens) < rx.slots // 4:
                time.sleep(RX_IDLE_S)  # let a batch gather: kernel timestamps keep the latency exact

    reader = threading.Thread(target=receive, name="rfc2544-rx", daemon=True)
    reader.start()
    try:
        batch = max(1, min(max_batch, int(fps / 2000) or 1))  # about one batch every 0.5 ms
        step_ns = 1e9 / fps if fps > 0 else 0.0
        t0 = time.perf_counter_ns()
        sent = 0
        while sent < count and not stop.is_set():
            if burst:
                n = min(max_batch, count - sent)
            else:
                due = t0 + int(sent * step_ns)
                now = time.perf_counter_ns()
                if now < due:
                    _sleep_until(due)
                    now = due
                behind = int((now - t0) / step_ns) - sent + 1 if step_ns else batch
                n = min(count - sent, max_batch, max(batch, behind))
            rows = fb.stamp(sent, n, time.time_ns())
            took = tx.send(rows, fb.length)
            result.send_failed += n - took
            sent += n
        result.seconds = (time.perf_counter_ns() - t0) / 1e9
        result.sent = sent - result.send_failed
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not stop.is_set():
            if tally.received >= result.sent:
                break  # everything is back: no need to wait the rest
            time.sleep(0.01)
    finally:
        rx_done.set()
        reader.join()
        if own_tx:
            tx.close()
        if own_rx:
            rx.close()
    result.received = tally.received
    result.duplicates, result.out_of_order, result.stale = tally.duplicates, tally.out_of_order, tally.stale
    if tally.lat_n:
        result.latency_min_us = tally.lat_min / 1000
        result.latency_max_us = tally.lat_max / 1000
        result.latency_avg_us = tally.lat_sum / tally.lat_n / 1000
    return result

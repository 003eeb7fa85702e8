"""Per-flow MDI state: the open interval, closed-interval records, last/min/max/average, a 60-interval
history and the alarm level of each metric."""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowplane.api import Moments

from .config import Template
from .mdi import delay_factor, rtp_losses

HISTORY = 60
#: Per-datagram counter columns the engine hands to :meth:`Flow.add`.
COLUMNS = ("ts_packets", "cc_lost", "duplicates", "sync_errors", "tei", "scrambled", "null", "truncated",
           "media_bytes", "rtp")
C = {name: i for i, name in enumerate(COLUMNS)}
METRICS = ("df", "mlr", "mrv")


def address(hi: int, lo: int, af: int) -> str:
    """Text form of a batch address (IPv4 is stored IPv4-mapped)."""
    if af == 4:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


class Summary(Moments):
    """last / min / max / average of one metric over the flow's closed intervals (None: the interval had no
    value for it)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        super().__init__()
        self.last: float | None = None

    def add(self, v: float | None) -> None:
        if v is None:
            return
        self.last = v
        super().add(v)

    def as_dict(self) -> dict:
        if not self.samples:
            return {"last": None, "min": None, "max": None, "avg": None}
        return {"last": self.last, "min": self.lo, "max": self.hi, "avg": self.mean}


@dataclass
class Flow:
    """One monitored video flow (5-tuple, interface, direction)."""

    id: int
    interface: str
    direction: str
    selector: str
    template: Template
    af: int
    src: str
    dst: str
    sport: int
    dport: int
    created_ns: int
    last_seen_ns: int = 0
    interval_no: int = -1  # index of the open interval since created_ns, -1 before the first packet
    chunks_t: list = field(default_factory=list)
    chunks_s: list = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(COLUMNS), dtype=np.int64))
    totals: np.ndarray = field(default_factory=lambda: np.zeros(len(COLUMNS), dtype=np.int64))
    datagrams: int = 0
    total_datagrams: int = 0
    rtp_lost: int = 0
    rtp_late: int = 0
    total_rtp_lost: int = 0
    total_rtp_late: int = 0
    rtp_last: int | None = None
    cc_state: dict = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    summary: dict = field(default_factory=lambda: {m: Summary() for m in METRICS})
    alarm: dict = field(default_factory=lambda: {m: None for m in METRICS})
    intervals: int = 0

    @property
    def interval_ns(self) -> int:
        return int(self.template.interval_s * 1_000_000_000)

    def interval_end_ns(self) -> int:
        return self.created_ns + (self.interval_no + 1) * self.interval_ns

    def label(self) -> str:
        s = f"[{self.src}]:{self.sport}" if self.af == 6 else f"{self.src}:{self.sport}"
        d = f"[{self.dst}]:{self.dport}" if self.af == 6 else f"{self.dst}:{self.dport}"
        return f"{s} -> {d}"

    # -- data path ---------------------------------------------------------------
    def add(self, ts: np.ndarray, size: np.ndarray, counts: np.ndarray, rtp_seq: np.ndarray | None) -> list[dict]:
        """Add one batch's datagrams of this flow (arrival order); return the intervals this closed."""
        closed: list[dict] = []
        self.last_seen_ns = max(self.last_seen_ns, int(ts[-1]))
        if self.interval_no < 0:
            self.interval_no = 0
        if int(ts[-1]) < self.interval_end_ns():  # the common case: all in the open interval
            self._take(ts, size, counts, rtp_seq)
            return closed
        idx = np.maximum((ts - self.created_ns) // self.interval_ns, self.interval_no)
        cuts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        for a, b in zip(cuts, np.r_[cuts[1:], len(ts)]):
            no = int(idx[a])
            if no != self.interval_no:
                rec = self.close()
                if rec is not None:
                    closed.append(rec)
                self.interval_no = no
            self._take(ts[a:b], size[a:b], counts[a:b], None if rtp_seq is None else rtp_seq[a:b])
        return closed

    def _take(self, ts, size, counts, rtp_seq) -> None:
        self.chunks_t.append(ts)
        self.chunks_s.append(size)
        self.counts += counts.sum(axis=0)
        self.datagrams += len(ts)
        if rtp_seq is not None and len(rtp_seq):
            lost, late, self.rtp_last = rtp_losses(rtp_seq, self.rtp_last)
            self.rtp_lost += lost
            self.rtp_late += late

    def close(self) -> dict | None:
        """Close the open interval: compute its MDI record (None when it saw no packet)."""
        if not self.chunks_t:
            return None
        t = self.template
        ts = np.concatenate(self.chunks_t)
        size = np.concatenate(self.chunks_s)
        # datagrams of an interval already closed (their batch came after the wall clock closed it) count here,
        # but cannot be placed in this interval's virtual buffer: DF is computed without them
        on_time = ts >= self.created_ns + self.interval_no * self.interval_ns
        late = len(ts) - int(on_time.sum())
        df_ts, df_size = (ts[on_time], size[on_time]) if late and on_time.any() else (ts, size)
        c = self.counts
        d = float(t.interval_s)
        nominal = t.media_rate_bps
        media_bytes = int(size.sum())
        mr = (nominal / 8.0) if nominal else media_bytes / d
        rate_bps = media_bytes * 8.0 / d
        rtp = c[C["rtp"]] > 0
        per_dg = c[C["ts_packets"]] / self.datagrams if self.datagrams else 0.0
        rtp_lost_ts = int(round(self.rtp_lost * per_dg)) if rtp else None
        lost = rtp_lost_ts if rtp else int(c[C["cc_lost"]])
        expected_pps = t.expected_media_pps
        expected = expected_pps * d if expected_pps else None
        received = int(c[C["ts_packets"]])
        missing = max(0.0, expected - received) if expected is not None else None
        base = expected if expected else received + lost
        rec = {
            "interval": self.interval_no, "start_ns": int(df_ts[0]), "end_ns": self.interval_end_ns(),
            "df_ms": delay_factor(df_ts, df_size, mr), "media_rate_used_bps": mr * 8.0,
            "mlr": lost / d, "mlr_cc": int(c[C["cc_lost"]]) / d,
            "mlr_rtp": None if rtp_lost_ts is None else rtp_lost_ts / d,
            "mlr_expected": None if missing is None else missing / d,
            "lost_packets": lost, "loss_percent": 100.0 * lost / base if base else 0.0,
            "expected_packets": expected, "media_packets": received, "datagrams": self.datagrams,
            "bytes": media_bytes, "rate_bps": rate_bps,
            "mrv_percent": (nominal - rate_bps) / nominal * 100.0 if nominal else None,
            "duplicates": int(c[C["duplicates"]]), "rtp_lost": self.rtp_lost if rtp else None,
            "rtp_late": self.rtp_late if rtp else None, "late_datagrams": late,
        }
        self._to_totals()
        self.history.append(rec)
        self.intervals += 1
        self.summary["df"].add(rec["df_ms"])
        self.summary["mlr"].add(rec["mlr"])
        self.summary["mrv"].add(rec["mrv_percent"])
        return rec

    def drop_open(self) -> None:
        """End the flow mid-interval (eviction, shutdown): its packets stay in the totals, the partial
        interval gives no record (its DF and rates would not be comparable)."""
        self._to_totals()

    def _to_totals(self) -> None:
        """Add the open interval's counts to the totals and empty it."""
        self.totals += self.counts
        self.total_datagrams += self.datagrams
        self.total_rtp_lost += self.rtp_lost
        self.total_rtp_late += self.rtp_late
        self.chunks_t, self.chunks_s = [], []
        self.counts = np.zeros(len(COLUMNS), dtype=np.int64)
        self.datagrams = self.rtp_lost = self.rtp_late = 0

    # -- views --------------------------------------------------------------------
    def snapshot(self, detail: bool = False) -> dict:
        tot = self.totals + self.counts
        out: dict[str, Any] = {
            "id": self.id, "flow": self.label(), "interface": self.interface, "direction": self.direction,
            "name": self.selector, "template": self.template.name, "source_address": self.src,
            "destination_address": self.dst, "source_port": self.sport, "destination_port": self.dport,
            "df": self.summary["df"].as_dict(), "mlr": self.summary["mlr"].as_dict(),
            "mrv": self.summary["mrv"].as_dict(), "intervals": self.intervals,
            "packets": self.total_datagrams + self.datagrams, "media_packets": int(tot[C["ts_packets"]]),
            "bytes": int(tot[C["media_bytes"]]), "rtp": bool(tot[C["rtp"]]),
            "alarms": {m: lvl for m, lvl in self.alarm.items()},
            "created_ns": self.created_ns, "last_seen_ns": self.last_seen_ns,
        }
        if detail:
            out["errors"] = {
                "cc_lost": int(tot[C["cc_lost"]]), "duplicates": int(tot[C["duplicates"]]),
                "rtp_lost": self.total_rtp_lost + self.rtp_lost, "rtp_late": self.total_rtp_late + self.rtp_late,
                "sync_errors": int(tot[C["sync_errors"]]), "tei": int(tot[C["tei"]]),
                "scrambled": int(tot[C["scrambled"]]), "null_packets": int(tot[C["null"]]),
                "truncated_ts": int(tot[C["truncated"]]),
            }
            out["last_interval"] = self.history[-1] if self.history else None
            out["history"] = list(self.history)
        return out


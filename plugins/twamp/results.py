"""TWAMP client results: per-probe samples -> per-test statistics, all-tests statistics, history, thresholds.

Notation (RFC 5357): T1 sender TX, T2 reflector RX, T3 reflector TX, T4 sender RX.

* round-trip time ``(T4 - T1) - (T3 - T2)``; egress (one-way, client -> server) ``T2 - T1``; ingress
  ``T4 - T3``.  One-way delays mix two clocks: they are only meaningful when both ends are synchronised
  (the S bit of the reflector's Error Estimate); ``clock_synchronised`` says so and negative one-way delays
  are counted, never hidden.
* IPDV (RFC 3393): ``D(i) - D(i-1)`` for consecutive sequence numbers both received, signed, per measurement;
  "jitter" statistics are over ``|IPDV|``; the signed minimum / maximum give the negative / positive split.
* RFC 3550 jitter: ``J += (|D(i) - D(i-1)| - J) / 16`` over the same pairs.
* Loss per direction: with a stateful reflector its own sequence numbers show how many of our packets it
  saw; the rest of the loss happened on the way back.  Reordering (RFC 4737): a packet arriving after one
  with a higher sequence number.  Duplicates (RFC 5560): replies beyond the first for one probe.

Every statistic keeps count, sum, sum of squares, min and max exactly; percentiles come from a bounded
reservoir sample (exact while the number of samples fits it, an estimate beyond; the output says which).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from flowplane.api import Moments

RESERVOIR = 4096  # values kept per statistic for percentiles
PERCENTILES = (50, 95, 99)
MEASUREMENTS = ("rtt", "egress", "ingress", "jitter_rtt", "jitter_egress", "jitter_ingress", "ipdv_rtt",
                "ipdv_egress", "ipdv_ingress", "reflector_processing")
LABELS = {"rtt": "Round trip time", "egress": "Egress time", "ingress": "Ingress time",
          "jitter_rtt": "Round trip jitter", "jitter_egress": "Egress jitter", "jitter_ingress": "Ingress jitter",
          "ipdv_rtt": "Round trip IPDV", "ipdv_egress": "Egress IPDV", "ipdv_ingress": "Ingress IPDV",
          "reflector_processing": "Reflector processing"}
ONE_WAY = ("egress", "ingress", "jitter_egress", "jitter_ingress", "ipdv_egress", "ipdv_ingress")


class Stat(Moments):
    """Running min/max/sum/sum of squares of one measurement plus a reservoir sample for percentiles (µs)."""

    __slots__ = ("sample", "_rng")

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.sample: list[float] = []
        self._rng = random.Random(seed)

    def add_many(self, values) -> None:
        seen = self.samples
        for v in super().add_many(values).tolist():  # Algorithm R: every value has the same chance to be kept
            seen += 1
            if len(self.sample) < RESERVOIR:
                self.sample.append(v)
            else:
                j = self._rng.randrange(seen)
                if j < RESERVOIR:
                    self.sample[j] = v

    def summary(self) -> dict:
        if not self.samples:
            return {"samples": 0, "min": None, "max": None, "avg": None, "peak_to_peak": None, "stddev": None,
                    "sum": 0.0, **{f"p{p}": None for p in PERCENTILES}, "percentiles_exact": True}
        pct = np.percentile(np.asarray(self.sample), PERCENTILES).tolist()
        out = {"samples": self.samples, "min": round(self.lo, 3), "max": round(self.hi, 3),
               "avg": round(self.mean, 3), "peak_to_peak": round(self.hi - self.lo, 3),
               "stddev": round(self.stddev, 3), "sum": round(self.total, 3)}
        out.update({f"p{p}": round(v, 3) for p, v in zip(PERCENTILES, pct)})
        out["percentiles_exact"] = self.samples <= RESERVOIR
        return out


@dataclass
class Sample:
    """One probe: timestamps in ns (0 = not seen), the reflector's sequence number and the TTLs."""

    seq: int
    t1: int  # ns, sender TX
    t2: int = 0  # reflector RX
    t3: int = 0  # reflector TX
    t4: int = 0  # sender RX
    reflector_seq: int = -1
    sender_ttl: int = 0  # TTL the reflector saw
    ttl: int = 0  # TTL we saw on the reply
    replies: int = 0

    @property
    def rtt_ns(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)


@dataclass
class Rfc3550:
    """The running RFC 3550 interarrival-jitter estimator of one measurement."""

    value: float = 0.0

    def feed(self, deltas: np.ndarray) -> None:
        j = self.value
        for d in np.abs(deltas).tolist():
            j += (d - j) / 16.0
        self.value = j


@dataclass
class TestStats:
    """Statistics of one test, or accumulated over all tests."""

    __test__ = False  # not a pytest class

    tests: int = 0
    sent: int = 0
    received: int = 0
    lost: int = 0
    forward_lost: int = 0
    backward_lost: int = 0
    unknown_direction_lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    successive_loss: int = 0  # longest run of lost probes
    negative_one_way: int = 0  # one-way delays below zero: the clocks are not synchronised
    clock_synchronised: bool = False
    stats: dict = field(default_factory=lambda: {m: Stat(i) for i, m in enumerate(MEASUREMENTS)})
    rfc3550: dict = field(default_factory=lambda: {m: Rfc3550() for m in ("rtt", "egress", "ingress")})
    started: float = 0.0  # unix time of the first probe
    ended: float = 0.0

    @property
    def loss_percent(self) -> float:
        return round(100.0 * self.lost / self.sent, 3) if self.sent else 0.0

    def absorb(self, samples: list[Sample], sent: int, synced: bool) -> None:
        """Add one test's *samples* (index = sequence number; *sent* of them went out)."""
        samples = samples[:sent]
        self.tests += 1
        self.sent += sent
        if samples and not self.started:
            self.started = samples[0].t1 / 1e9
        self.ended = time.time()
        got = [s for s in samples if s.replies]
        self.received += len(got)
        lost = sent - len(got)
        self.lost += lost
        self.duplicates += sum(max(0, s.replies - 1) for s in samples)
        self.clock_synchronised = synced
        if got:
            # the reflector numbered what it saw of ours; the replies we lack beyond that were lost on the way back
            # compare the highest sequence numbers on both sides, not those of one reply: a probe that
            # overtook an earlier one was numbered lower by the reflector, and that is not a loss
            top_seq = max(s.seq for s in got)
            top_rseq = max(s.reflector_seq for s in got)
            trailing = sent - top_seq - 1  # lost after the last reply: no way to tell the direction
            fwd = min(max(0, top_seq - top_rseq), lost - trailing) if top_rseq >= 0 else 0
            self.forward_lost += fwd
            self.backward_lost += max(0, lost - fwd - trailing)
            self.unknown_direction_lost += trailing
            arrival = [s.seq for s in sorted(got, key=lambda s: s.t4)]
            top = -1
            for q in arrival:
                if q < top:
                    self.reordered += 1
                top = max(top, q)
        else:
            self.unknown_direction_lost += lost
        run = best = 0
        for s in samples:
            run = 0 if s.replies else run + 1
            best = max(best, run)
        self.successive_loss = max(self.successive_loss, best)
        if not got:
            return
        t = np.array([(s.seq, s.t1, s.t2, s.t3, s.t4) for s in got], dtype=np.int64)
        t = t[np.argsort(t[:, 0], kind="stable")]
        seq = t[:, 0]
        delays = {"rtt": ((t[:, 4] - t[:, 1]) - (t[:, 3] - t[:, 2])) / 1e3,
                  "egress": (t[:, 2] - t[:, 1]) / 1e3, "ingress": (t[:, 4] - t[:, 3]) / 1e3}
        self.negative_one_way += int((delays["egress"] < 0).sum() + (delays["ingress"] < 0).sum())
        consecutive = np.diff(seq) == 1  # IPDV pairs: consecutive sequence numbers, both received
        for name, d in delays.items():
            self.stats[name].add_many(d)
            ipdv = np.diff(d)[consecutive]
            self.stats["ipdv_" + name].add_many(ipdv)
            self.stats["jitter_" + name].add_many(np.abs(ipdv))
            self.rfc3550[name].feed(ipdv)
        self.stats["reflector_processing"].add_many((t[:, 3] - t[:, 2]) / 1e3)

    def as_dict(self) -> dict:
        return {"tests": self.tests, "sent": self.sent, "received": self.received, "lost": self.lost,
                "loss_percent": self.loss_percent, "forward_lost": self.forward_lost,
                "backward_lost": self.backward_lost,
                "unknown_direction_lost": self.unknown_direction_lost, "duplicates": self.duplicates,
                "reordered": self.reordered,
                "successive_loss": self.successive_loss, "clock_synchronised": self.clock_synchronised,
                "negative_one_way": self.negative_one_way,
                "rfc3550_jitter_us": {k: round(v.value, 3) for k, v in self.rfc3550.items()},
                "measurements_us": {m: s.summary() for m, s in self.stats.items()},
                "started": self.started, "ended": self.ended}


def stats_of_test(samples: list[Sample], sent: int, synced: bool) -> TestStats:
    ts = TestStats()
    ts.absorb(samples, sent, synced)
    return ts


def threshold_values(d: dict) -> dict[str, float]:
    """The value each threshold is compared with, from one test's :meth:`TestStats.as_dict`."""
    m = d["measurements_us"]

    def mx(name: str) -> float | None:
        return m[name]["max"]

    return {"rtt": mx("rtt"), "egress-time": mx("egress"), "ingress-time": mx("ingress"),
            "jitter-rtt": mx("jitter_rtt"), "jitter-egress": mx("jitter_egress"),
            "jitter-ingress": mx("jitter_ingress"), "std-dev-rtt": m["rtt"]["stddev"],
            "successive-loss": d["successive_loss"], "total-loss": d["lost"], "loss-percent": d["loss_percent"]}


@dataclass
class SessionResults:
    """What ``show ... probe-results`` prints for one test session: current, last and all tests, history."""

    history_size: int = 50
    moving_average_size: int = 0  # Junos moving-average-size: probes in the moving averages (0 = none)
    history: deque = field(default_factory=deque)
    recent: deque = field(default_factory=deque)  # (rtt, egress, ingress) µs of the last replied probes
    all_tests: TestStats = field(default_factory=TestStats)
    last_test: dict | None = None
    exceeded: set = field(default_factory=set)  # thresholds currently exceeded

    def __post_init__(self) -> None:
        self.history = deque(self.history, maxlen=self.history_size)
        self.recent = deque(self.recent, maxlen=self.moving_average_size)

    def moving_average(self) -> dict | None:
        """Averages over the last ``moving_average_size`` replied probes (None when not configured)."""
        if not self.moving_average_size:
            return None
        n = len(self.recent)
        sums = [sum(v[i] for v in self.recent) for i in range(3)]
        return {"samples": n, **{k: (round(sums[i] / n, 3) if n else None)
                                 for i, k in enumerate(("rtt", "egress", "ingress"))}}

    def complete(self, test_no: int, samples: list[Sample], sent: int, synced: bool) -> dict:
        """One test finished: fold it into all tests, remember it as the last test, record its probes."""
        self.all_tests.absorb(samples, sent, synced)
        last = stats_of_test(samples, sent, synced).as_dict()
        last["test"] = test_no
        self.last_test = last
        for s in samples[:sent]:
            self.history.append(probe_record(test_no, s))
            if s.replies and self.moving_average_size:
                self.recent.append((s.rtt_ns / 1e3, (s.t2 - s.t1) / 1e3, (s.t4 - s.t3) / 1e3))
        return last


def probe_record(test_no: int, s: Sample) -> dict:
    ok = bool(s.replies)
    return {"test": test_no, "seq": s.seq, "sent": round(s.t1 / 1e9, 6), "status": "ok" if ok else "lost",
            "rtt_us": round(s.rtt_ns / 1e3, 3) if ok else None,
            "egress_us": round((s.t2 - s.t1) / 1e3, 3) if ok else None,
            "ingress_us": round((s.t4 - s.t3) / 1e3, 3) if ok else None,
            "reflector_seq": s.reflector_seq if ok else None, "duplicates": max(0, s.replies - 1),
            "hops_forward": (255 - s.sender_ttl) if ok and s.sender_ttl else None,
            "hops_backward": (255 - s.ttl) if ok and s.ttl else None}

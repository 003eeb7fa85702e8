"""Per-test results with Junos RPM semantics.

All figures are microseconds.  Per measurement (round trip time, egress time, ingress time) a collection
keeps Samples, Minimum, Maximum, Average (rounded to nearest), Peak to peak, Stddev (population, ÷N) and Sum,
plus the positive and negative jitter sets built from the signed per-probe jitter (this value minus the
previous answered probe's, across test boundaries; 0 counts as positive).  Collections: the current test, the
last completed test, the moving average (the ``moving-average-size`` most recent answered probes) and all tests.
The per-probe interarrival jitter is the RFC 1889 estimator ``J += (|D| - J) / 16``.  ``history-size`` probes
are kept for ``history-results``.  Loss percentage has six decimals.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

from flowplane.api import Moments

MEASUREMENTS = ("rtt", "egress", "ingress")
LABELS = {"rtt": "Round trip time", "egress": "Egress time", "ingress": "Ingress time",
          "rtt+": "Positive round trip jitter", "rtt-": "Negative round trip jitter",
          "egress+": "Positive egress jitter", "egress-": "Negative egress jitter",
          "ingress+": "Positive ingress jitter", "ingress-": "Negative ingress jitter"}


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


class Summary(Moments):
    """Samples, min, max, sum and sum of squares of one measurement set (µs), shown with Junos rounding."""

    __slots__ = ()

    def as_dict(self) -> dict:
        if not self.samples:
            return {"samples": 0, "min": None, "max": None, "avg": None, "peak_to_peak": None, "stddev": None,
                    "sum": 0}
        return {"samples": self.samples, "min": self.lo, "max": self.hi,
                "avg": round_half_up(self.total / self.samples), "peak_to_peak": self.hi - self.lo,
                "stddev": round_half_up(self.stddev), "sum": self.total}


@dataclass
class ProbeEntry:
    """One finished probe as history-results shows it (times: ns since the epoch; values: µs)."""

    test: int
    seq: int
    sent: int
    received: int
    status: str  # response | timeout | error
    reason: str = ""
    rtt: int | None = None
    egress: int | None = None
    ingress: int | None = None
    jitter: dict = field(default_factory=dict)  # measurement -> signed µs vs the previous answered probe
    interarrival: int | None = None  # µs, RFC 1889 estimate after this probe
    timestamp: str = "kernel"
    http_status: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Collection:
    """Sent, received and the measurement sets of one scope (a test, the moving window, all tests)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.sets: dict[str, Summary] = {}
        self.reasons: dict[str, int] = {}

    def summary(self, name: str) -> Summary:
        s = self.sets.get(name)
        if s is None:
            s = self.sets[name] = Summary()
        return s

    def add(self, e: ProbeEntry) -> None:
        self.sent += 1
        if e.status != "response":
            self.reasons[e.reason or e.status] = self.reasons.get(e.reason or e.status, 0) + 1
            return
        self.received += 1
        for m in MEASUREMENTS:
            v = getattr(e, m)
            if v is not None:
                self.summary(m).add(v)
            j = e.jitter.get(m)
            if j is not None:
                self.summary(m + ("+" if j >= 0 else "-")).add(abs(j))

    @property
    def loss_percent(self) -> float:
        return round(100.0 * (self.sent - self.received) / self.sent, 6) if self.sent else 0.0

    def as_dict(self) -> dict:
        sets = {}
        for name in LABELS:
            if name in self.sets or name in ("rtt", "rtt+", "rtt-"):
                sets[name] = self.summary(name).as_dict() if name in self.sets else Summary().as_dict()
        return {"probes_sent": self.sent, "probes_received": self.received, "loss_percentage": self.loss_percent,
                "failures": dict(self.reasons), "measurements": sets}


class TestResults:
    """Everything one ``probe OWNER test NAME`` has measured; kept across a reload of an unchanged test."""

    __test__ = False  # not a pytest class

    def __init__(self, history_size: int = 50, moving_average_size: int = 0) -> None:
        self.history: deque[ProbeEntry] = deque(maxlen=history_size)
        self.moving: deque[ProbeEntry] = deque(maxlen=moving_average_size or None)
        self.moving_average_size = moving_average_size
        self.tests_started = 0
        self.tests_completed = 0
        self.current: Collection | None = None
        self.last: Collection | None = None
        self.last_completed = 0  # ns since the epoch
        self.all = Collection()
        self.last_probe: ProbeEntry | None = None
        self._previous: dict[str, int] = {}  # measurement -> last answered value, for the signed jitter
        self._interarrival = 0.0
        self.successive_lost = 0

    def resize(self, history_size: int, moving_average_size: int) -> None:
        self.history = deque(self.history, maxlen=history_size)
        self.moving = deque(self.moving, maxlen=moving_average_size or None)
        self.moving_average_size = moving_average_size

    def start_test(self) -> int:
        self.tests_started += 1
        self.current = Collection()
        return self.tests_started

    def add_probe(self, test: int, outcome) -> ProbeEntry:
        """Record one finished probe (an :class:`~.probes.Outcome`) and return its history entry."""
        def us(ns):
            return None if ns is None else round_half_up(ns / 1000)

        e = ProbeEntry(test, outcome.seq, outcome.sent, outcome.received, outcome.status, outcome.reason,
                       us(outcome.rtt), us(outcome.egress), us(outcome.ingress), timestamp=outcome.timestamp,
                       http_status=outcome.http_status)
        if e.status == "response":
            self.successive_lost = 0
            for m in MEASUREMENTS:
                v = getattr(e, m)
                if v is None:
                    continue
                if m in self._previous:
                    e.jitter[m] = v - self._previous[m]
                self._previous[m] = v
            if "rtt" in e.jitter:
                self._interarrival += (abs(e.jitter["rtt"]) - self._interarrival) / 16.0
            e.interarrival = round_half_up(self._interarrival)
            self.moving.append(e)
        else:
            self.successive_lost += 1
        if self.current is not None:
            self.current.add(e)
        self.all.add(e)
        self.history.append(e)
        self.last_probe = e
        return e

    def complete_test(self, when_ns: int) -> Collection:
        done = self.current or Collection()
        self.last, self.current = done, None
        self.tests_completed += 1
        self.last_completed = when_ns
        return done

    def moving_average(self) -> Collection | None:
        if not self.moving_average_size:
            return None
        c = Collection()
        for e in self.moving:
            c.add(e)
        return c

    def as_dict(self) -> dict:
        mov = self.moving_average()
        return {"tests_started": self.tests_started, "tests_completed": self.tests_completed,
                "last_probe": self.last_probe.as_dict() if self.last_probe else None,
                "current_test": self.current.as_dict() if self.current else None,
                "last_test": self.last.as_dict() if self.last else None,
                "last_test_completed": self.last_completed or None,
                "moving_average": mov.as_dict() if mov else None,
                "all_tests": self.all.as_dict()}

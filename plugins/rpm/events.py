"""Thresholds and the events they raise, in the Junos message style.

Every crossing logs a structured event (snake_case name, e.g. ``ping_rtt_threshold_exceeded``) carrying the
Junos tag (``PING_RTT_THRESHOLD_EXCEEDED``), owner, test, threshold and measured value, and a ``syslog`` line
``TAG: pingCtlOwnerIndex = O, pingCtlTestName = T, ...``.  A trap listed under ``traps`` also logs
``rpm_trap`` with the notification's name and OID (the SNMP agent's part is not in flowplane).

"Met or exceeded" (``>=``) raises a threshold.  Per-probe thresholds (rtt, egress-time, ingress-time) raise
when a probe meets them and clear when a later probe is below; per-test ones when a test ends.
``successive-loss`` raises ``PING_PROBE_FAILED`` after N lost probes in a row (then the count starts again,
as DISMAN's probe-failure filter does); ``total-loss`` raises ``PING_TEST_FAILED`` when a test loses N probes.
The tags below follow the jnxPing notification names; the ``*_CLEARED`` / ``*_FAILURE_CLEARED`` tags are
flowplane's (Junos has no clear message).  Kept in this one table so they can be corrected.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import structlog

log = structlog.get_logger("flowplane.rpm")

JNX_PING = "1.3.6.1.4.1.2636.4.9.0"
DISMAN_PING = "1.3.6.1.2.1.80.0"


@dataclass(frozen=True)
class Kind:
    threshold: str  # the Junos threshold word ("" for test completion)
    scope: str  # probe | test | loss
    measure: str  # what is compared: rtt, egress, ingress (probe); stddev/jitter of one (test); loss
    tag: str
    clear_tag: str
    trap: str
    oid: str


KINDS = (
    Kind("rtt", "probe", "rtt", "PING_RTT_THRESHOLD_EXCEEDED", "PING_RTT_THRESHOLD_CLEARED", "rtt-exceeded",
         f"{JNX_PING}.1"),
    Kind("std-dev-rtt", "test", "stddev:rtt", "PING_RTT_STDDEV_THRESHOLD_EXCEEDED",
         "PING_RTT_STDDEV_THRESHOLD_CLEARED", "std-dev-exceeded", f"{JNX_PING}.2"),
    Kind("jitter-rtt", "test", "jitter:rtt", "PING_RTT_JITTER_THRESHOLD_EXCEEDED",
         "PING_RTT_JITTER_THRESHOLD_CLEARED", "jitter-exceeded", f"{JNX_PING}.3"),
    Kind("egress-time", "probe", "egress", "PING_EGRESS_THRESHOLD_EXCEEDED", "PING_EGRESS_THRESHOLD_CLEARED",
         "egress-time-exceeded", f"{JNX_PING}.4"),
    Kind("std-dev-egress", "test", "stddev:egress", "PING_EGRESS_STDDEV_THRESHOLD_EXCEEDED",
         "PING_EGRESS_STDDEV_THRESHOLD_CLEARED", "egress-std-dev-exceeded", f"{JNX_PING}.5"),
    Kind("jitter-egress", "test", "jitter:egress", "PING_EGRESS_JITTER_THRESHOLD_EXCEEDED",
         "PING_EGRESS_JITTER_THRESHOLD_CLEARED", "egress-jitter-exceeded", f"{JNX_PING}.6"),
    Kind("ingress-time", "probe", "ingress", "PING_INGRESS_THRESHOLD_EXCEEDED", "PING_INGRESS_THRESHOLD_CLEARED",
         "ingress-time-exceeded", f"{JNX_PING}.7"),
    Kind("std-dev-ingress", "test", "stddev:ingress", "PING_INGRESS_STDDEV_THRESHOLD_EXCEEDED",
         "PING_INGRESS_STDDEV_THRESHOLD_CLEARED", "ingress-std-dev-exceeded", f"{JNX_PING}.8"),
    Kind("jitter-ingress", "test", "jitter:ingress", "PING_INGRESS_JITTER_THRESHOLD_EXCEEDED",
         "PING_INGRESS_JITTER_THRESHOLD_CLEARED", "ingress-jitter-exceeded", f"{JNX_PING}.9"),
    Kind("successive-loss", "loss", "successive", "PING_PROBE_FAILED", "PING_PROBE_FAILURE_CLEARED",
         "probe-failure", f"{DISMAN_PING}.1"),
    Kind("total-loss", "loss", "total", "PING_TEST_FAILED", "PING_TEST_FAILURE_CLEARED", "test-failure",
         f"{DISMAN_PING}.2"),
)
BY_THRESHOLD = {k.threshold: k for k in KINDS}
COMPLETED = Kind("", "test", "", "PING_TEST_COMPLETED", "", "test-completion", f"{DISMAN_PING}.3")
RECENT_EVENTS = 32


class ThresholdState:
    """Which thresholds of one test stand exceeded, and the events it raised (the last few kept)."""

    def __init__(self, owner: str, test: str, target: str, thresholds, traps) -> None:
        self.owner, self.test, self.target = owner, test, target
        self.thresholds = thresholds
        self.traps = set(traps)
        self.exceeded: set[str] = set()
        self.counts: dict[str, int] = {}
        self.recent: deque[dict] = deque(maxlen=RECENT_EVENTS)

    def emit(self, kind: Kind, tag: str, level: str = "warning", **values) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        extra = "".join(f", {k} = {v}" for k, v in values.items())
        line = f"{tag}: pingCtlOwnerIndex = {self.owner}, pingCtlTestName = {self.test}{extra}"
        event = {"tag": tag, "owner": self.owner, "test": self.test, "target": self.target, **values,
                 "syslog": line}
        self.recent.append(event)
        getattr(log, level)(tag.lower(), **event)
        if kind.trap in self.traps and tag == kind.tag:
            self.counts["traps"] = self.counts.get("traps", 0) + 1
            log.info("rpm_trap", trap=kind.trap, oid=kind.oid, tag=tag, owner=self.owner, test=self.test,
                     target=self.target, **values)

    def _compare(self, kind: Kind, value, limit: int | None, **ctx) -> None:
        if not limit or value is None:
            return
        if value >= limit:
            if kind.threshold not in self.exceeded:
                self.exceeded.add(kind.threshold)
                self.emit(kind, kind.tag, threshold=limit, value=value, **ctx)
        elif kind.threshold in self.exceeded:
            self.exceeded.discard(kind.threshold)
            self.emit(kind, kind.clear_tag, level="info", threshold=limit, value=value, **ctx)

    def probe_done(self, entry, successive_lost: int, results) -> None:
        """After every probe: per-probe thresholds and successive loss."""
        if entry.status == "response":
            for k in KINDS:
                if k.scope == "probe":
                    self._compare(k, getattr(entry, k.measure), self.thresholds.get(k.threshold), probe=entry.seq)
            k = BY_THRESHOLD["successive-loss"]
            if k.threshold in self.exceeded:
                self.exceeded.discard(k.threshold)
                self.emit(k, k.clear_tag, level="info", probe=entry.seq)
            return
        limit = self.thresholds.get("successive-loss")
        if limit and successive_lost >= limit:
            k = BY_THRESHOLD["successive-loss"]
            self.exceeded.add(k.threshold)
            self.emit(k, k.tag, threshold=limit, value=successive_lost, probe=entry.seq, reason=entry.reason)
            results.successive_lost = 0  # DISMAN: the consecutive-failure count starts again

    def test_done(self, test: int, c) -> None:
        """After a test: per-test thresholds, total loss, completion."""
        for k in KINDS:
            if k.scope != "test":
                continue
            what, m = k.measure.split(":")
            s = c.sets.get(m)
            value = None
            if s is not None and s.samples:
                value = round(s.stddev) if what == "stddev" else s.hi - s.lo
            self._compare(k, value, self.thresholds.get(k.threshold), test_number=test)
        self._compare(BY_THRESHOLD["total-loss"], c.sent - c.received, self.thresholds.get("total-loss"),
                      test_number=test)
        rtt = c.sets.get("rtt")
        self.emit(COMPLETED, COMPLETED.tag, level="info", test_number=test, sent=c.sent, received=c.received,
                  loss_percentage=c.loss_percent,
                  **({"min_rtt": rtt.lo, "max_rtt": rtt.hi, "avg_rtt": round(rtt.total / rtt.samples)}
                     if rtt and rtt.samples else {}))

    def as_dict(self) -> dict:
        return {"exceeded": sorted(self.exceeded), "events": dict(self.counts), "recent": list(self.recent)}

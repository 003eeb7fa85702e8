"""Threshold alarms on DF, MLR and MRV: raise and clear at info / warning / critical.

After each closed interval the flow's level for each metric is the most severe level whose threshold
the interval's value reached.  A rise is one event, ``raised`` at the new level; a fall is ``cleared`` for the old
level, followed by ``raised`` at the lower level when that one is still reached.  Each event is a
structured log record ``video_monitoring_alarm`` logged at the alarm's level (``severity`` in the
record: info, warning, critical), whose ``message`` is a Junos-style line.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LEVELS, Template
from .flows import Flow

NAMES = {"df": "DF", "mlr": "MLR", "mrv": "MRV"}
UNITS = {"df": "ms", "mlr": "", "mrv": "%"}


@dataclass(frozen=True)
class AlarmEvent:
    metric: str  # df | mlr | mrv
    action: str  # raised | cleared
    level: str  # the level raised, or the level cleared
    value: float
    threshold: float | None
    flow: str
    interface: str
    direction: str
    template: str

    def message(self) -> str:
        unit = UNITS[self.metric]
        v = f"{self.value:.2f}{(' ' + unit) if unit == 'ms' else unit}"
        th = "" if self.threshold is None else f"{self.threshold:g}{(' ' + unit) if unit == 'ms' else unit}"
        verb = "exceeded" if self.action == "raised" else "is below"
        return (f"MDI {NAMES[self.metric]} alarm {self.action} ({self.level}): flow {self.flow} "
                f"interface {self.interface} {self.direction} template {self.template}: "
                f"{NAMES[self.metric]} {v} {verb} {self.level} threshold {th}").rstrip()

    def as_dict(self) -> dict:
        return {"metric": self.metric, "action": self.action, "severity": self.level, "value": self.value,
                "threshold": self.threshold, "flow": self.flow, "interface": self.interface,
                "direction": self.direction, "template": self.template, "message": self.message()}


def levels_for(t: Template, rec: dict) -> dict[str, tuple[str | None, float | None, float | None]]:
    """Per metric: (level reached, the value compared, that level's threshold)."""
    df = rec["df_ms"]
    df_level = t.delay_factor.level_of(df)
    pct_level = t.mlr_percentage.level_of(rec["loss_percent"])
    cnt_level = t.mlr_packet_count.level_of(rec["lost_packets"])
    if _rank(cnt_level) > _rank(pct_level):
        mlr = (cnt_level, float(rec["lost_packets"]), t.mlr_packet_count.threshold(cnt_level))
    else:
        mlr = (pct_level, rec["loss_percent"], t.mlr_percentage.threshold(pct_level) if pct_level else None)
    mrv_v = abs(rec["mrv_percent"]) if rec["mrv_percent"] is not None else None
    mrv_level = t.mrv.level_of(mrv_v)
    return {"df": (df_level, df, t.delay_factor.threshold(df_level) if df_level else None),
            "mlr": mlr, "mrv": (mrv_level, mrv_v, t.mrv.threshold(mrv_level) if mrv_level else None)}


def _rank(level: str | None) -> int:
    return LEVELS.index(level) + 1 if level else 0


def evaluate(flow: Flow, rec: dict) -> list[AlarmEvent]:
    """Level changes of *flow* after its closed interval *rec* (updates ``flow.alarm``)."""
    events = []
    t = flow.template
    for metric, (level, value, threshold) in levels_for(t, rec).items():
        old = flow.alarm[metric]
        if level == old:
            continue
        if _rank(level) < _rank(old):  # falling: the old level clears (with its own threshold)
            events.append(_event(flow, metric, "cleared", old, value, _threshold(t, metric, old, rec)))
        if level is not None:  # rising, or falling to a lower level that is still reached
            events.append(_event(flow, metric, "raised", level, value, threshold))
        flow.alarm[metric] = level
    return events


def _threshold(t: Template, metric: str, level: str, rec: dict) -> float | None:
    if metric == "df":
        return t.delay_factor.threshold(level)
    if metric == "mrv":
        return t.mrv.threshold(level)
    return t.mlr_percentage.threshold(level) or t.mlr_packet_count.threshold(level)


def _event(flow: Flow, metric: str, action: str, level: str, value, threshold) -> AlarmEvent:
    return AlarmEvent(metric=metric, action=action, level=level, value=float(value or 0.0), threshold=threshold,
                      flow=flow.label(), interface=flow.interface, direction=flow.direction,
                      template=flow.template.name)

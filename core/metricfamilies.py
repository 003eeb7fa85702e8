"""Building Prometheus metric families from live objects (the counters ``show`` prints).

:class:`MetricFamilies` groups samples into families by name as they are added, so a plugin's
``flowplane_metrics`` can walk its objects once and add one sample per object and counter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["MetricFamilies", "metric_name", "CounterMetricFamily", "GaugeMetricFamily", "Metric"]

_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(*parts: str) -> str:
    """``flowplane`` + parts joined by ``_``, every character Prometheus does not allow made ``_``."""
    name = "_".join(_BAD.sub("_", str(p)) for p in ("flowplane", *parts) if p)
    return re.sub(r"_+", "_", name)


class MetricFamilies:
    """Counter and gauge families assembled sample by sample.

    ``counter("flow_server_records", "help", 12, instance="x")`` adds a sample to the family
    ``flowplane_flow_server_records_total`` (created on first use with the given label names; the
    ``_total`` suffix is Prometheus' own).  Every sample of one family must carry the same label names.
    Iterate the object (or return it from ``flowplane_metrics``) to get the families.
    """

    def __init__(self, prefix: str = "flowplane") -> None:
        self.prefix = prefix
        self._families: dict[str, tuple[Metric, tuple[str, ...]]] = {}

    def _name(self, name: str) -> str:
        full = name if name.startswith(self.prefix + "_") else f"{self.prefix}_{name}"
        return re.sub(r"_+", "_", _BAD.sub("_", full))

    def counter(self, name: str, documentation: str, value: float, **labels: Any) -> None:
        """Add a sample of a monotonically increasing count (``_total`` is appended to *name*)."""
        self._add(CounterMetricFamily, self._name(name).removesuffix("_total"), documentation, value, labels)

    def gauge(self, name: str, documentation: str, value: float, **labels: Any) -> None:
        """Add a sample of a value that goes up and down."""
        self._add(GaugeMetricFamily, self._name(name), documentation, value, labels)

    def counters(self, name: str, documentation: str, counters: Any, **labels: Any) -> None:
        """Every value and drop of a :class:`flowplane.stats.Counters`: ``NAME_KEY_total``, a dotted key
        ``KIND.WHAT`` as ``NAME_KIND_total{name="WHAT"}``, drops as ``NAME_drops_total{stage, reason}``."""
        for key, value in sorted(counters.values.items()):
            kind, _, what = str(key).partition(".")
            extra = {"name": what} if what else {}
            self.counter(f"{name}_{kind}", f"{documentation}: {kind.replace('_', ' ')}", value, **labels, **extra)
        for (stage, reason), value in sorted(counters.drops.items()):
            self.counter(f"{name}_drops", f"{documentation}: drops by stage and reason", value, **labels,
                         stage=stage, reason=reason)

    def _add(self, cls: type, name: str, doc: str, value: float, labels: dict[str, Any]) -> None:
        entry = self._families.get(name)
        names = tuple(labels)
        clash = self._families.get(name.removesuffix("_total") if cls is GaugeMetricFamily else name + "_total")
        if entry is None and clash is not None:
            entry = clash  # a counter's samples are NAME_total: a gauge of that name would collide
        if entry is None:
            entry = self._families[name] = (cls(name, doc, labels=list(names)), names)
        family, want = entry
        if type(family) is not cls:
            raise ValueError(f"metric {name!r} is already a {family.type}, not a {cls.__name__}")
        if set(names) != set(want):
            raise ValueError(f"metric {name!r}: labels {sorted(names)} differ from {sorted(want)}")
        family.add_metric([str(labels[k]) for k in want], float(value))

    def __iter__(self) -> Iterator[Metric]:
        return iter([f for f, _ in self._families.values()])

    def __len__(self) -> int:
        return len(self._families)

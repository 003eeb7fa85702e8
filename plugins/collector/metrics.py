"""Prometheus metrics of the flow collector: what ``show services flow-collector`` prints."""

from __future__ import annotations

from typing import Any

from flowplane.api import MetricFamilies


def families(c: Any) -> MetricFamilies:
    """Totals, drops by stage and reason, listeners, and counters per exporter of collector *c*."""
    m = MetricFamilies()
    m.counters("collector", "flow collector", c.counters)
    for lst in c.listeners:
        labels = {"listen": lst.listen.label}
        m.counter("collector_listener_datagrams", "messages received by the listener", lst.datagrams, **labels)
        kd = lst.kernel_drops()
        if kd is not None:
            m.counter("collector_listener_kernel_drops", "datagrams the kernel dropped (socket receive buffer full)",
                      kd, **labels)
    for exp in sorted(c.decoder.exporters.values(), key=lambda e: e.address):
        labels = {"exporter": str(exp.address)}
        counters = exp.counters
        for key in ("datagrams", "bytes", "records", "errors", "lost"):
            if key in counters:
                m.counter(f"collector_exporter_{key}", f"per exporter: {_HELP[key]}", counters[key], **labels)
        if "pending" in counters:
            m.gauge("collector_exporter_pending_sets", "per exporter: data sets held for a template",
                    counters["pending"], **labels)
        m.gauge("collector_exporter_templates", "per exporter: templates learnt", exp.template_count, **labels)
        m.gauge("collector_exporter_last_seen_timestamp_seconds", "per exporter: when its last message came",
                exp.last_seen_ns / 1e9, **labels)
    return m


_HELP = {"datagrams": "messages received", "bytes": "bytes received", "records": "flow records decoded",
         "errors": "messages that failed to decode", "lost": "records lost, from sequence number gaps"}

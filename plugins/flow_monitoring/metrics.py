"""Prometheus metrics of flow monitoring: what ``show services accounting flow|status`` print, per
sampling instance, monitoring and accounting group, and per flow server."""

from __future__ import annotations

from typing import Any

from flowplane.api import MetricFamilies


def families(fm: Any) -> MetricFamilies:
    """Instance counters, flow cache sizes and every flow server's export counters of *fm*."""
    m = MetricFamilies()
    m.counters("flow_monitoring", "flow monitoring", fm.counters)
    for e in fm.all_engines():
        labels = {"instance": e.inst.name, "kind": e.kind}
        c = e.counters
        m.gauge("flow_active_flows", "flows in the flow caches", sum(len(x) for x in e.caches.values()), **labels)
        m.counter("flow_created_flows", "flows created in the flow caches",
                  sum(x.counters["flows_created"] for x in e.caches.values()), **labels)
        m.counter("flow_packets", "packets metered into the flow caches",
                  sum(x.counters["packets"] for x in e.caches.values()), **labels)
        m.counter("flow_bytes", "bytes metered into the flow caches",
                  sum(x.counters["bytes"] for x in e.caches.values()), **labels)
        for key, value in sorted(c.values.items()):
            if key.startswith("flows_"):
                m.counter("flow_expired_flows", "flows expired, by reason", value, **labels,
                          reason=key.removeprefix("flows_"))
            else:
                m.counter(f"flow_instance_{key}", f"instance counter {key.replace('_', ' ')}", value, **labels)
        for (stage, reason), value in sorted(c.drops.items()):
            m.counter("flow_instance_drops", "instance drops by stage and reason", value, **labels, stage=stage,
                      reason=reason)
        for x in e.all_exporters:
            _server(m, x, labels)
    return m


def _server(m: MetricFamilies, x: Any, labels: dict) -> None:
    s = x.server
    lab = {**labels, "server": s.label, "version": s.version, "transport": s.transport}
    c, t = x.counters, x.transport.counters
    m.counter("flow_server_records", "flow records exported to the flow server", c["records"], **lab)
    m.counter("flow_server_datagrams", "export messages (datagrams) built for the flow server", c["datagrams"], **lab)
    m.counter("flow_server_encode_errors", "encoder failures", c["encode_errors"], **lab)
    m.counter("flow_server_sent_packets", "messages the transport sent", t["packets"], **lab)
    m.counter("flow_server_sent_bytes", "bytes the transport sent", t["bytes"], **lab)
    m.counter("flow_server_dropped", "messages the transport dropped (queue full, not ready, refused)",
              t["dropped"] + t["dropped_backlog"], **lab)
    m.counter("flow_server_refused", "messages the server refused (ICMP unreachable)", t["refused"], **lab)
    for (stage, reason), value in sorted({**c.drops, **t.drops}.items()):
        m.counter("flow_server_drops", "export drops by stage and reason", value, **lab, stage=stage, reason=reason)
    connected = getattr(x.transport, "connected", None)
    if connected is not None:
        m.gauge("flow_server_connected", "1 while a stream transport is connected", int(bool(connected)), **lab)

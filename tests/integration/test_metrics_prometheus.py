"""Debian's Prometheus scrapes a running flowplane while a pcap replays; what its HTTP API returns
equals what `show ... --json` says."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from flowplane.testing import ServiceProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "samples" / "sample.pcap"

pytestmark = [pytest.mark.peer,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus (Debian package 'prometheus') is not installed")]


def _query(port: int, expr: str) -> dict[tuple, float]:
    """Instant query: ``sorted labels (without __name__, job, instance) -> value``."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    out = {}
    for row in body["data"]["result"]:
        labels = tuple(sorted((k, v) for k, v in row["metric"].items() if k not in ("__name__", "job", "instance")))
        out[labels] = float(row["value"][1])
    return out


def _one(port: int, expr: str) -> float | None:
    rows = _query(port, expr)
    return next(iter(rows.values())) if len(rows) == 1 else None


def test_prometheus_scrapes_what_show_says(tmp_path):
    mport, cport, pport = free_port("tcp"), free_port("udp"), free_port("tcp")
    sock = tmp_path / "control.sock"
    cfg = tmp_path / "flowplane.yaml"
    cfg.write_text(f"""\
system:
  control-socket: {sock}
  log: {{format: json}}
  metrics: {{listen: "127.0.0.1:{mport}"}}
interfaces:
  replay0:
    source: pcap
    file: {SAMPLE}
    speed: 10
    family: {{inet: {{filter: {{input: all}}}}}}
firewall:
  family inet:
    filter all:
      term tcp:
        from: {{protocol: [tcp]}}
        then: {{count: tcp-packets, sample: true, accept: true}}
      term rest:
        then: {{sample: true, accept: true}}
forwarding-options:
  sampling:
    input: {{rate: 1}}
    family inet:
      output:
        flow-server 127.0.0.1: {{port: {cport}, version: 5}}
        flow-active-timeout: 60
        flow-inactive-timeout: 15
services:
  flow-collector:
    listen: [{{address: 127.0.0.1, port: {cport}}}]
""")
    (tmp_path / "prometheus.yml").write_text(f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: flowplane
    static_configs:
      - targets: ["127.0.0.1:{mport}"]
""")
    # Prometheus first, so that it scrapes from the service's first second on, all through the replay
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        wait_until(lambda: _query(pport, "vector(1)") is not None, 60, 0.2, what="prometheus to answer",
                   ignore=(OSError,))
        with ServiceProcess(cfg, sock) as svc:
            svc.wait_ready()
            wait_until(lambda: _one(pport, 'up{job="flowplane"}') == 1, 60, 0.2, what="prometheus to scrape flowplane")

            def settled():
                src = svc.show("system", "statistics")["data"]["queue"]["sources"]["replay0"]
                coll = svc.show("services", "flow-collector")["data"]
                status = svc.show("services", "accounting", "status")["data"]["instances"][0]
                srv = status["families"][0]["flow_servers"][0]["counters"]
                return src["done"] and srv.get("records", 0) > 0 and coll["records"] == srv["records"]

            wait_until(settled, 60, 0.2, what="the replay to end and the collector to have every record")
            stats = svc.show("system", "statistics")["data"]["pipeline"]["counters"]
            iface = svc.show("interfaces", "statistics")["data"]["interfaces"][0]["counters"]
            fw = svc.show("firewall", "filter", "all")["data"]["filters"][0]
            inst = svc.show("services", "accounting", "status")["data"]["instances"][0]
            srv = inst["families"][0]["flow_servers"][0]
            coll = svc.show("services", "flow-collector")["data"]
            exp = coll["exporters"][0]
            expected = {
                "flowplane_pipeline_packets_total": stats["packets"],
                "flowplane_pipeline_batches_total": stats["batches"],
                'flowplane_interface_packets_total{interface="replay0"}': iface["packets"],
                'flowplane_firewall_counter_packets_total{filter="all",counter="tcp-packets"}':
                    fw["counters"]["tcp-packets"]["packets"],
                'flowplane_firewall_term_packets_total{filter="all",term="rest"}': fw["terms"]["rest"]["packets"],
                f'flowplane_flow_server_records_total{{server="{srv["address"]}"}}': srv["counters"]["records"],
                f'flowplane_flow_server_datagrams_total{{server="{srv["address"]}"}}': srv["counters"]["datagrams"],
                "flowplane_collector_records_total": coll["records"],
                f'flowplane_collector_exporter_records_total{{exporter="{exp["address"]}"}}': exp["records"],
                f'flowplane_collector_exporter_datagrams_total{{exporter="{exp["address"]}"}}': exp["datagrams"],
            }
            assert stats["packets"] == 20020
            # Prometheus saw the counters move while the pcap replayed
            assert 0 <= _one(pport, "min_over_time(flowplane_pipeline_packets_total[5m])") < 20020
            # the counters no longer move: Prometheus' latest scrape must say exactly what show says
            wait_until(lambda: all(_one(pport, q) == v for q, v in expected.items()), 30, 0.25,
                       what="prometheus to hold the counters show prints")
            got = {q: _one(pport, q) for q in expected}
            assert got == {q: float(v) for q, v in expected.items()}
            # a rate over the replay, as a dashboard asks for it
            assert _one(pport, "max_over_time(flowplane_pipeline_packets_total[5m])") == 20020
            # every query of the Grafana dashboard parses and runs on this Prometheus
            dashboard = json.loads((ROOT / "contrib" / "grafana" / "flowplane-dashboard.json").read_text())
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    expr = (target["expr"].replace("$__rate_interval", "1m").replace("$job", ".*")
                            .replace("$instance", ".*"))
                    _query(pport, expr)  # raises on a query Prometheus rejects
            assert _query(pport, 'rate(flowplane_interface_packets_total{job=~".*"}[1m])')
            assert svc.stop() == 0
    finally:
        prom.terminate()
        prom.wait(timeout=30)

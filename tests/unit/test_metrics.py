"""The Prometheus metrics endpoint: config, the families it serves (equal to `show --json`), the
flowplane_metrics hook, a failing plugin, and reload."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from flowplane.api import GaugeMetricFamily, MetricFamilies, hookimpl
from flowplane.metrics import parse_listen
from flowplane.testing import config_from, free_port, serve, wait_until_async

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "samples" / "sample.pcap"
DASHBOARD = ROOT / "contrib" / "grafana" / "flowplane-dashboard.json"


# -- config -------------------------------------------------------------------------------------------


def test_parse_listen():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert parse_listen("::1") == ("::1", 9464)
    assert parse_listen("127.0.0.2") == ("127.0.0.2", 9464)
    for bad in ("localhost:9464", "127.0.0.1:http", "127.0.0.1:70000", "[::1", "[::1]x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_metrics_config_errors_name_the_key(make_app):
    from flowplane.app import App

    app = App.create(config_from({}))
    for section, expect in (
        ({"listen": "localhost:9464"}, " system metrics listen: "),
        ({"listen": 9464}, " system metrics listen: "),
        ({"port": 9464}, " system metrics port: "),
        ("on", " system metrics: "),
    ):
        errors = app.validate(config_from({"system": {"metrics": section}}))
        assert errors and any(expect in e for e in errors), (section, errors)
    assert app.validate(config_from({"system": {"metrics": {"listen": "[::1]:9464"}}})) == []


def test_metric_families_builder():
    m = MetricFamilies()
    m.counter("x_packets", "packets", 3, interface="a")
    m.counter("x_packets_total", "packets", 4, interface="b")
    m.gauge("x_flows", "flows", 2)
    fams = {f.name: f for f in m}
    assert set(fams) == {"flowplane_x_packets", "flowplane_x_flows"}
    assert [(s.name, s.labels, s.value) for s in fams["flowplane_x_packets"].samples] == [
        ("flowplane_x_packets_total", {"interface": "a"}, 3.0), ("flowplane_x_packets_total", {"interface": "b"}, 4.0)]
    with pytest.raises(ValueError, match="labels"):
        m.counter("x_packets", "packets", 1, port="c")
    with pytest.raises(ValueError, match="already a counter"):
        m.gauge("x_packets_total", "packets", 1, interface="c")


def test_grafana_dashboard_is_importable():
    d = json.loads(DASHBOARD.read_text())
    assert d["title"] and d["uid"] and d["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


# -- a running service ---------------------------------------------------------------------------------


def _config(tmp_path, metrics_port: int, collector_port: int) -> dict:
    return {
        "system": {"control-socket": str(tmp_path / "control.sock"),
                   "metrics": {"listen": f"127.0.0.1:{metrics_port}"}},
        "interfaces": {"replay0": {"source": "pcap", "file": str(SAMPLE), "speed": 0,
                                   "family": {"inet": {"filter": {"input": "all"}}}}},
        "firewall": {"family": {"inet": {"filter": {"all": {"term": {
            "tcp": {"from": {"protocol": ["tcp"]}, "then": {"count": "tcp-packets", "sample": True, "accept": True}},
            "rest": {"then": {"sample": True, "accept": True}}}}}}}},
        "forwarding-options": {"sampling": {"input": {"rate": 1}, "family": {"inet": {"output": {
            "flow-server": {"127.0.0.1": {"port": collector_port, "version": 5}},
            "flow-active-timeout": 60, "flow-inactive-timeout": 15}}}}},
        "services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": collector_port}]}},
    }


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


async def scrape(port: int, host: str = "127.0.0.1") -> dict[tuple[str, tuple], float]:
    """``(sample name, sorted labels) -> value`` of one scrape (off the trio loop, as Prometheus would)."""
    text = await trio.to_thread.run_sync(_get, f"http://{host}:{port}/metrics")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def key(name: str, **labels) -> tuple[str, tuple]:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


def _settled(svc) -> bool:
    """The replay ended and the collector has every record the flow server sent."""
    src = svc.app.sources.get("replay0")
    if src is None or not getattr(src, "finite", False):
        return False
    status = svc.show("services", "accounting", "status", fmt="json")["data"]
    server = status["instances"][0]["families"][0]["flow_servers"][0]
    coll = svc.show("services", "flow-collector", fmt="json")["data"]
    return (svc.pipeline.status()["sources"]["replay0"]["done"] and server["counters"].get("records", 0) > 0
            and coll["records"] == server["counters"]["records"])


async def test_metrics_equal_show(make_app, tmp_path):
    mport, cport = free_port("tcp"), free_port("udp")
    app = make_app(_config(tmp_path, mport, cport))
    async with serve(app) as svc:
        await wait_until_async(lambda: _settled(svc), 60, 0.05, what="the replay and the collector to settle")
        m = await scrape(mport)
        pipeline = svc.show("system", "statistics", fmt="json")["data"]["pipeline"]["counters"]
        assert m[key("flowplane_pipeline_packets_total")] == pipeline["packets"] == 20020
        assert m[key("flowplane_pipeline_batches_total")] == pipeline["batches"]
        iface = svc.show("interfaces", "statistics", fmt="json")["data"]["interfaces"][0]
        assert m[key("flowplane_interface_packets_total", interface="replay0")] == iface["counters"]["packets"]
        errors = svc.show("services", "accounting", "errors", fmt="json")["data"]["interfaces"][0]
        assert m[key("flowplane_interface_decoded_packets_total", interface="replay0")] == errors["decoded"]
        fw = svc.show("firewall", fmt="json")["data"]["filters"][0]
        lab = {"family": "inet", "filter": "all"}
        assert m[key("flowplane_firewall_counter_packets_total", **lab, counter="tcp-packets")] == \
            fw["counters"]["tcp-packets"]["packets"] > 0
        for term in ("tcp", "rest"):
            assert m[key("flowplane_firewall_term_bytes_total", **lab, term=term)] == fw["terms"][term]["bytes"]
        server = svc.show("services", "accounting", "status", fmt="json")["data"]["instances"][0]
        srv = server["families"][0]["flow_servers"][0]
        slab = {"instance": server["name"], "kind": "sampling", "server": srv["address"],
                "transport": srv["transport"], "version": "5"}
        assert m[key("flowplane_flow_server_records_total", **slab)] == srv["counters"]["records"]
        assert m[key("flowplane_flow_server_datagrams_total", **slab)] == srv["counters"]["datagrams"]
        assert m[key("flowplane_flow_server_sent_packets_total", **slab)] == srv["transport_counters"]["packets"]
        coll = svc.show("services", "flow-collector", fmt="json")["data"]
        assert m[key("flowplane_collector_records_total")] == coll["records"]
        exp = coll["exporters"][0]
        assert m[key("flowplane_collector_exporter_records_total", exporter=exp["address"])] == exp["records"] \
            == srv["counters"]["records"]
        assert m[key("flowplane_collector_exporter_datagrams_total", exporter=exp["address"])] == exp["datagrams"]
        assert key("flowplane_build_info", profile="generic-linux", version=app_version()) in m
        assert any(name == "process_cpu_seconds_total" for name, _ in m)
        served = {name for name, _ in m} | {"flowplane_pipeline_drops_total", "flowplane_interface_drops_total"}
        wanted = set(re.findall(r"\b(?:flowplane|process)_[a-z_]+", DASHBOARD.read_text()))
        assert wanted and wanted <= served, f"the dashboard asks for what is not served: {wanted - served}"
        shown = svc.show("system", "metrics", fmt="json")["data"]
        assert shown["bound"] == f"127.0.0.1:{mport}"
        assert f"http://127.0.0.1:{mport}/metrics" in svc.show("system", "metrics")["text"]


def app_version() -> str:
    from flowplane import __version__

    return __version__


async def test_metrics_off_by_default(make_app):
    app = make_app({})
    async with serve(app) as svc:
        assert svc.show("system", "metrics", fmt="json")["data"]["listen"] is None
        assert "off" in svc.show("system", "metrics")["text"]


class _Feature:
    @hookimpl
    def flowplane_metrics(self, app):
        g = GaugeMetricFamily("flowplane_feature_widgets", "widgets", labels=["kind"])
        g.add_metric(["round"], 7)
        m = MetricFamilies()
        m.counter("feature_events", "events", 3)
        return [g, *m]


class _Broken:
    @hookimpl
    def flowplane_metrics(self, app):
        raise RuntimeError("boom")


class _Duplicate:
    @hookimpl
    def flowplane_metrics(self, app):
        m = MetricFamilies()
        m.counter("pipeline_packets", "pretends to be the core's", 1)
        return m


async def test_hook_metrics(make_app, register_plugin):
    port = free_port("tcp")
    app = make_app({"system": {"metrics": {"listen": f"[::1]:{port}"}}})
    register_plugin(app, _Feature(), "feature")
    register_plugin(app, _Broken(), "broken")
    register_plugin(app, _Duplicate(), "duplicate")
    async with serve(app) as svc:
        m = await scrape(port, "[::1]")
        assert m[("flowplane_feature_widgets", (("kind", "round"),))] == 7
        assert m[("flowplane_feature_events_total", ())] == 3
        assert m[("flowplane_metrics_plugin_failures_total", (("plugin", "broken"),))] == 1
        assert m[("flowplane_pipeline_packets_total", ())] == 0  # the core's, not the duplicate's
        assert m[("flowplane_metrics_duplicate_families_total", ())] == 1
        m = await scrape(port, "[::1]")
        assert m[("flowplane_metrics_plugin_failures_total", (("plugin", "broken"),))] == 2
        assert svc.show("system", "metrics", fmt="json")["data"]["plugin_failures"] == {"broken": 2}


async def test_reload_moves_and_stops_the_endpoint(make_app, tmp_path):
    first, second = free_port("tcp"), free_port("tcp")
    path = tmp_path / "f.yaml"
    path.write_text(f"system: {{control-socket: {tmp_path}/c.sock, metrics: {{listen: '127.0.0.1:{first}'}}}}\n")
    from flowplane.config import Config

    app = make_app(Config.load(str(path)))
    async with serve(app) as svc:
        assert ("flowplane_uptime_seconds", ()) in await scrape(first)
        path.write_text(f"system: {{control-socket: {tmp_path}/c.sock, metrics: {{listen: '127.0.0.1:{second}'}}}}\n")
        assert await svc.reload()
        assert ("flowplane_config_reloads_total", (("result", "applied"),)) in await scrape(second)
        with pytest.raises(urllib.error.URLError):
            await scrape(first)
        path.write_text(f"system: {{control-socket: {tmp_path}/c.sock}}\n")
        assert await svc.reload()
        with pytest.raises(urllib.error.URLError):
            await scrape(second)
        assert svc.show("system", "metrics", fmt="json")["data"]["listen"] is None


async def test_a_busy_port_fails_start_naming_the_endpoint(make_app):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = make_app({"system": {"metrics": {"listen": f"127.0.0.1:{port}"}}})
        with pytest.raises(BaseException) as info:
            async with serve(app):
                pass
        leaf = info.value
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, OSError) and f"metrics endpoint 127.0.0.1:{port}" in str(leaf)

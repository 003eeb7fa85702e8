"""Collector operations: listeners kept across a reload, TCP idle timeout, recent rates, drops by stage,
interface tables in ``show`` -- a running Service with real sockets on 127.0.0.1 only."""

from __future__ import annotations

import trio
import yaml

import flowplane.plugins.collector as collector_plugin
from flowplane.export import EncoderOptions
from flowplane.plugins.collector import commands
from flowplane.plugins.collector.rates import RateWindow
from flowplane.plugins.encoders import ipfix
from flowplane.testing import serve

from test_collector import T0, sample_records


def _write(path, section: dict) -> None:
    path.write_text(yaml.safe_dump({"services": {"flow-collector": section}}))


def _show(app, *words):
    cmd, rest = app.registries.commands.resolve(["show", "services", "flow-collector", *words])
    return cmd.fn(app, rest)


async def test_tcp_idle_timeout_closes_a_silent_exporter(make_app):
    cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0, "protocol": "tcp"}],
                                           "tcp-idle-timeout": 0.3}}}
    app = make_app(cfg, plugins=[(collector_plugin, "collector")])
    async with serve(app) as service:
        c = app.pm.get_plugin("flow-collector")
        lst = c.listeners[0]
        busy = await trio.open_tcp_stream("127.0.0.1", lst.port)
        silent = await trio.open_tcp_stream("127.0.0.1", lst.port)
        enc = ipfix.factory(EncoderOptions(version=10, stream=True))
        msgs = enc.encode(sample_records(30, seed=2), T0 + 4000 * 10**9)
        with trio.fail_after(5):
            for _ in range(6):  # the busy one keeps talking more often than the timeout
                await busy.send_all(msgs[0])
                await trio.sleep(0.1)  # pacing: well inside the 0.3 s idle timeout
            assert await silent.receive_some(10) == b""  # closed by the collector
        assert lst.idle_closed == 1 and c.counters["tcp-idle-closed"] == 1
        assert len(lst.connections) == 1  # the busy exporter is still connected
        data = _show(app)
        assert data["listeners"][0]["tcp"]["idle_closed"] == 1
        assert "(idle 1)" in commands.format_show(data)
        await busy.aclose()
        await silent.aclose()
        await service.stop()


def test_rate_window():
    w = RateWindow(max_samples=5)
    assert w.rates(0.0, {"records": 0}, 10) is None
    for t in range(10):
        w.sample(float(t), {"records": 100 * t, "datagrams": 10 * t})
    assert len(w.samples) == 5  # bounded
    r = w.rates(9.5, {"records": 950, "datagrams": 95}, 2)
    assert r["seconds"] == 2.5 and r["records"] == 100.0 and r["datagrams"] == 10.0
    r = w.rates(9.5, {"records": 950, "datagrams": 95}, 60)  # longer than kept: from the oldest sample
    assert r["seconds"] == 4.5 and r["records"] == 100.0


def test_rate_window_baseline_before_samples():
    w = RateWindow(start_s=100.0)
    r = w.rates(102.0, {"records": 50}, 10)  # no timer sample yet: from the start (zero)
    assert r == {"seconds": 2.0, "records": 25.0}
    w.clear(200.0)
    assert w.rates(204.0, {"records": 8}, 10) == {"seconds": 4.0, "records": 2.0}


def test_example_config_validates_and_collect_cli_switches():
    from pathlib import Path

    from flowplane.plugins.collector.cli import add_parser, build_config
    from flowplane.plugins.collector.config import parse

    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "etc" / "examples" / "collector.yaml").read_text())
    cfg, issues = parse(data)
    assert not issues and len(cfg.listen) == 3 and len(cfg.output.forward) == 2
    import argparse

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["collect", "--listen", "udp:127.0.0.1:0", "--scale", "--receive-buffer", "4194304"])
    sec = build_config(args, "/tmp/x.sock")["services"]["flow-collector"]
    assert sec["scale-by-sampling-rate"] is True and sec["receive-buffer"] == 4194304
    cfg, issues = parse({"services": {"flow-collector": sec}})
    assert not issues and cfg.scale and cfg.receive_buffer == 4194304

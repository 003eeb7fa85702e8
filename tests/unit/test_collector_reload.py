"""Collector operations: listeners kept across a reload, TCP idle timeout, recent rates, drops by stage,
interface tables in ``show`` -- a running Service with real sockets on 127.0.0.1 only."""

from __future__ import annotations


import pytest
import trio
import yaml

import flowplane.plugins.collector as collector_plugin
from flowplane.config import Config
from flowplane.export import EncoderOptions
from flowplane.plugins.collector import commands
from flowplane.plugins.collector.pcap import udp_payloads
from flowplane.plugins.collector.rates import RateWindow
from flowplane.plugins.encoders import ipfix
from flowplane.testing import free_port, serve, wait_until_async

from test_collector import T0, corpus_groups, needs_corpus, sample_records


def _write(path, section: dict) -> None:
    path.write_text(yaml.safe_dump({"services": {"flow-collector": section}}))


def _show(app, *words):
    cmd, rest = app.registries.commands.resolve(["show", "services", "flow-collector", *words])
    return cmd.fn(app, rest)


async def test_reload_keeps_unchanged_listeners_tcp_exporter_stays_connected(make_app, tmp_path):
    udp_port, tcp_port = free_port("udp"), free_port("tcp")
    listen = [{"address": "127.0.0.1", "port": udp_port}, {"address": "127.0.0.1", "port": tcp_port, "protocol": "tcp"}]
    path = tmp_path / "c.yaml"
    _write(path, {"listen": listen, "flow-ring": 100})
    app = make_app(Config.load(str(path)), plugins=[(collector_plugin, "collector")])
    enc = ipfix.factory(EncoderOptions(version=10, stream=True, observation_domain_id=3))
    recs = sample_records(400, seed=11)
    half = len(recs.data) // 2
    first = enc.encode(type(recs)(recs.data[:half], boot_ns=recs.boot_ns), T0 + 4000 * 10**9)
    second = enc.encode(type(recs)(recs.data[half:], boot_ns=recs.boot_ns), T0 + 4001 * 10**9)
    assert not any(m[16:18] == b"\x00\x02" for m in second)  # the second half: data sets only, no templates
    udp_v5 = [d.payload for f in corpus_groups().get("akvorado_nfv5", []) for d in udp_payloads(str(f))]
    async with serve(app) as service:
        old = app.pm.get_plugin("flow-collector")
        tcp = await trio.open_tcp_stream("127.0.0.1", tcp_port)
        for m in first:
            await tcp.send_all(m)
        await wait_until_async(lambda: old.counters["records"] == half)
        old_listeners = list(old.listeners)
        udp_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        for p in udp_v5:  # queued on the UDP socket while the reload runs
            await udp_sock.sendto(p, ("127.0.0.1", udp_port))

        _write(path, {"listen": listen, "flow-ring": 50})  # something else changed
        assert await service.reload() is True
        new = app.pm.get_plugin("flow-collector")
        assert new is not old and new.ring.size == 50
        assert new.listeners == old_listeners and new.kept_listeners == 2  # the same sockets
        for m in second:  # data only: decodable only with the templates learnt before the reload
            await tcp.send_all(m)
        await wait_until_async(lambda: new.counters["records"] == len(recs.data) + 29 * (1 if udp_v5 else 0))
        st = new.listeners[1].status()
        assert st["accepted"] == 1 and st["closed"] == 0 and len(st["connections"]) == 1
        assert ("decode", "no-template") not in new.counters.drops
        assert new.counters["pending-sets"] == 0

        _write(path, {"listen": [listen[0]], "flow-ring": 50})  # the TCP listener goes away
        assert await service.reload() is True
        newer = app.pm.get_plugin("flow-collector")
        assert newer.listeners == [old_listeners[0]]
        with trio.fail_after(5):
            assert await tcp.receive_some(100) == b""  # the removed listener closed its connection
        assert old_listeners[1].sock is None
        await tcp.aclose()
        udp_sock.close()
        await service.stop()
    assert old_listeners[0].sock is None  # shut down for good: closed


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
                await trio.sleep(0.1)
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


@needs_corpus
async def test_show_recent_rates_drops_by_stage_and_interfaces(make_app):
    cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "pending-timeout": 1}}}
    app = make_app(cfg, plugins=[(collector_plugin, "collector")])
    groups = corpus_groups()
    async with serve(app) as service:
        c = app.pm.get_plugin("flow-collector")
        port = c.listeners[0].port
        s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        sent = 0
        for name in ("pmacct_112-IPFIXv10-CISCO-options-map-reassignment", "ndpi_netflowv9"):
            for f in groups[name]:
                for d in udp_payloads(str(f)):
                    await s.sendto(d.payload, ("127.0.0.1", port))
                    sent += 1
                    await trio.sleep(0.001)
        await s.sendto(b"\x00\x07garbage", ("127.0.0.1", port))
        sent += 1
        await wait_until_async(lambda: c.counters["datagrams"] == sent)
        await wait_until_async(lambda: len(c.rates.samples) >= 2, timeout=5)  # the one-second timer sampled
        await wait_until_async(lambda: c.counters.drops[("decode", "no-template")] > 0, timeout=5)
        data = _show(app)
        r10 = data["recent"]["10s"]
        assert r10 is not None and r10["datagrams"] > 0 and r10["records"] > 0
        assert r10["datagrams"] * r10["seconds"] == pytest.approx(sent, rel=0.01)  # everything is inside 10 s
        assert data["drops_by_stage"]["decode"] == sum(data["decode_errors"].values()) >= 2
        assert data["decode_errors"]["bad-version"] == 1
        text = commands.format_show(data)
        assert "Last 10s" in text and "Drops by stage: decode" in text
        (exp,) = [e for e in data["exporters"] if e["interfaces"]]
        ifs = _show(app, "interfaces")
        (e,) = ifs["exporters"]
        assert e["exporter"] == exp["address"] and len(e["interfaces"]) == exp["interfaces"]
        assert {"ifindex": 55, "name": "HundredGigE0_0_0_11"}.items() <= next(
            i for i in e["interfaces"] if i["ifindex"] == 55).items()
        assert any(x["samplers"] for x in e["sampling"])
        assert "HundredGigE0_0_0_11" in commands.format_interfaces(ifs)
        s.close()
        await service.stop()


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

"""The collector in a running Service fed the corpus's captures over real UDP on loopback: records and ``show``,
listeners kept across a reload, recent rates, drops by stage and interface tables."""

from __future__ import annotations

import json
import socket
import time

import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.config import Config
from flowplane.export import EncoderOptions
from flowplane.plugins.collector import commands
from flowplane.plugins.collector.pcap import udp_payloads
from flowplane.plugins.encoders import ipfix
from flowplane.testing import free_port, serve, wait_until_async

from corpus import EXPECTED, corpus_groups, needs_corpus
from test_collector import T0, sample_records
from test_collector_reload import _show, _write
from test_collector_service import _config


@needs_corpus
async def test_replay_corpus_over_real_udp(make_app, tmp_path):
    app = make_app(_config(tmp_path), plugins=[(collector_plugin, "collector")])
    c = app.pm.get_plugin("flow-collector")
    async with serve(app) as service:
        # READY only after every socket is bound
        assert all(lst.bound and lst.bound[1] > 0 for lst in c.listeners)
        v4 = next(lst for lst in c.listeners if lst.listen.address == "127.0.0.1")
        v6 = next(lst for lst in c.listeners if lst.listen.address == "::1")
        names = ["akvorado_nfv5", "akvorado_nat", "pmacct_100-IPFIXv10-CISCO",
                 "pmacct_101-NFv9-CISCO-cust_primitives", "ndpi_netflowv9"]
        groups = corpus_groups()
        want = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
            for k, name in enumerate(names):
                sock, dest = (s6, ("::1", v6.port)) if k % 2 else (s4, ("127.0.0.1", v4.port))
                for f in groups[name]:
                    for d in udp_payloads(str(f)):
                        sock.sendto(d.payload, dest)
                        await trio.sleep(0.001)  # pacing, not waiting: stay below the receive buffer
                want += EXPECTED[name]
            await wait_until_async(lambda: c.counters["records"] >= want
                                   and c.counters["datagrams"] >= 1 + 1 + 6 + 40 + 10)
        # the held v9 data of ndpi_netflowv9 expires (pending-timeout 1 s) and is counted undecodable
        await wait_until_async(lambda: c.counters.drops[("decode", "no-template")] == 23, timeout=5)
        cmd, rest = app.registries.commands.resolve(["show", "services", "flow-collector"])
        data = cmd.fn(app, rest)
        assert data["records"] == want
        assert data["decode_errors"] == {"no-template": 23}
        assert {lst["kernel_drops"] for lst in data["listeners"]} == {0}
        assert {lst["read"] for lst in data["listeners"]} == {"recvmmsg"}  # batched reads, v4 and v6
        assert "Read: recvmmsg" in cmd.formatter(data)
        assert {e["address"] for e in data["exporters"]} == {"127.0.0.1", "::1"}
        await service.stop()
    assert service.code == 0
    lines = [json.loads(x) for x in (tmp_path / "flows.jsonl").read_text().splitlines()]
    assert len(lines) == want
    assert {"exporter", "src", "dst", "sport", "dport", "proto", "packets", "bytes", "first", "last",
            "sampling_interval"} <= set(lines[0])
    assert sum(1 for x in lines if "natEvent" in x) == 9


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
                    await trio.sleep(0.001)  # pacing, not waiting: stay below the receive buffer
        await s.sendto(b"\x00\x07garbage", ("127.0.0.1", port))
        sent += 1
        await wait_until_async(lambda: c.counters["datagrams"] == sent)
        await wait_until_async(lambda: len(c.rates.samples) >= 2, timeout=5)  # the one-second timer sampled
        await wait_until_async(lambda: c.counters.drops[("decode", "no-template")] > 0, timeout=5)
        t0, baseline = c.rates.samples[0]  # the zero baseline taken at start, on show's clock (monotonic)
        before = time.monotonic()
        data = _show(app)
        after = time.monotonic()
        r10 = data["recent"]["10s"]
        assert r10 is not None and r10["datagrams"] > 0 and r10["records"] > 0
        # everything is inside 10 s: the window runs from that baseline, so show gives every datagram sent over the
        # seconds since start, each rounded to 0.1 as show rounds them; show read the clock between before and after
        assert baseline == {} and after - t0 < 10
        assert round(before - t0, 1) <= r10["seconds"] <= round(after - t0, 1)
        assert round(sent / (after - t0), 1) <= r10["datagrams"] <= round(sent / (before - t0), 1)
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

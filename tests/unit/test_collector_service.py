"""The collector in a running Service: real UDP sockets (IPv4 and IPv6), READY after bind, JSON lines, show."""

from __future__ import annotations

import json
import socket

import pytest
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.service import Service

from test_collector import EXPECTED, corpus_groups, needs_corpus
from flowplane.plugins.collector.pcap import udp_payloads
from flowplane.testing import serve, wait_until_async


def _config(tmp_path, jsonl=True):
    sec = {"listen": [{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0, "protocol": "udp"}],
           "pending-timeout": 1}
    if jsonl:
        sec["output"] = {"jsonl": str(tmp_path / "flows.jsonl")}
    return {"services": {"flow-collector": sec}}


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
                        await trio.sleep(0.001)
                want += EXPECTED[name]
            await wait_until_async(lambda: c.counters["records"] >= want and c.counters["datagrams"] >= 1 + 1 + 6 + 40 + 10)
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


async def test_bind_failure_fails_start(make_app, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))  # no SO_REUSEPORT on this one: the collector cannot share it
        port = busy.getsockname()[1]
        cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": port}]}}}
        app = make_app(cfg, plugins=[(collector_plugin, "collector")])
        with pytest.raises(Exception):
            await Service(app, control=False).serve()


async def test_two_collectors_share_a_port_with_reuseport(make_app, tmp_path):
    cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}]}}}
    app1 = make_app(cfg, plugins=[(collector_plugin, "collector")])
    c1 = app1.pm.get_plugin("flow-collector")
    async with trio.open_nursery() as nursery:
        await nursery.start(c1.listeners[0].run)
        port = c1.listeners[0].port
        cfg2 = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": port}]}}}
        app2 = make_app(cfg2, plugins=[(collector_plugin, "collector")])
        c2 = app2.pm.get_plugin("flow-collector")
        await nursery.start(c2.listeners[0].run)
        assert c2.listeners[0].port == port
        assert c1.listeners[0].rcvbuf >= 65536
        nursery.cancel_scope.cancel()

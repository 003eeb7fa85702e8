"""The collector in a running Service: real UDP sockets (IPv4 and IPv6), READY after bind, JSON lines, show."""

from __future__ import annotations

import socket

import pytest
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.service import Service


def _config(tmp_path, jsonl=True):
    sec = {"listen": [{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0, "protocol": "udp"}],
           "pending-timeout": 1}
    if jsonl:
        sec["output"] = {"jsonl": str(tmp_path / "flows.jsonl")}
    return {"services": {"flow-collector": sec}}


async def test_bind_failure_fails_start(make_app, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))  # no SO_REUSEPORT on this one: the collector cannot share it
        port = busy.getsockname()[1]
        cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": port}]}}}
        app = make_app(cfg, plugins=[(collector_plugin, "collector")])
        with pytest.raises((OSError, ExceptionGroup)):  # EADDRINUSE, as trio's nursery passes it on
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

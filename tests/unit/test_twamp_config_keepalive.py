"""``services rpm twamp server tcp-keep*``: parsed, range-checked, and set on accepted control sockets."""

from __future__ import annotations

import socket

import trio

from flowplane.plugins.twamp.config import parse
from flowplane.plugins.twamp.keepalive import TCP_USER_TIMEOUT, Keepalive, set_keepalive
from flowplane.plugins.twamp.server import TwampServer


def _server(**sec):
    return {"services": {"rpm": {"twamp": {"server": {"port": 0, "listen-address": "127.0.0.1", **sec}}}}}


def test_server_keepalive_defaults_are_junos():
    cfg, issues = parse(_server())
    assert issues == []
    assert cfg.server.keepalive == Keepalive(idle=120, interval=5, count=6)
    assert cfg.server.keepalive.budget_s == 150


def test_server_keepalive_ranges():
    cfg, issues = parse(_server(**{"tcp-keepidle": 200, "tcp-keepintvl": 20, "tcp-keepcnt": 21}))
    assert issues == [] and cfg.server.keepalive == Keepalive(200, 20, 21)
    _, issues = parse(_server(**{"tcp-keepidle": 0, "tcp-keepintvl": 601, "tcp-keepcnt": "x"}))
    msgs = {i.path[-1]: i.message for i in issues}
    assert "below the minimum 1" in msgs["tcp-keepidle"]
    assert "exceeds the maximum 600" in msgs["tcp-keepintvl"]
    assert "expected an integer" in msgs["tcp-keepcnt"]


def test_set_keepalive_on_a_real_socket():
    with socket.socket() as s:
        set_keepalive(s, Keepalive(7, 3, 4))
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
        assert s.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT) == 19000


async def test_server_sets_keepalive_on_accepted_connections():
    cfg, _ = parse(_server(**{"tcp-keepidle": 9, "tcp-keepintvl": 2, "tcp-keepcnt": 3}))
    server = TwampServer(cfg.server)
    seen = {}
    orig = server.handle_connection

    async def spy(ms, conn, local):  # read the accepted socket's options, then run the real handler
        sock = ms.stream.socket
        seen["opts"] = (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
        await orig(ms, conn, local)

    server.handle_connection = spy
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.run)
        stream = await trio.open_tcp_stream(*bound)
        with trio.fail_after(5):
            greeting = await stream.receive_some(64)
        assert len(greeting) == 64
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert seen["opts"] == (1, 9, 2, 3)

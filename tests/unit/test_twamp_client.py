"""client.py building blocks against a real TwampServer on loopback: several sessions per control
connection, a lost control connection noticed by watch(), keepalive set on the client socket."""

from __future__ import annotations

import socket

import pytest
import trio

from flowplane.plugins.twamp.client import (
    ConnectionLost,
    ControlClient,
    SessionSpec,
    TwampError,
    run_sessions,
    run_test,
)
from flowplane.plugins.twamp.config import ServerConfig
from flowplane.plugins.twamp.keepalive import Keepalive
from flowplane.plugins.twamp.server import TwampServer


async def _server(nursery, modes=1 | 4):
    srv = TwampServer(ServerConfig(port=0, address="127.0.0.1", modes=modes, secrets={"alice": b"testsecret"}))
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await srv.run(task_status=task_status)

    bound = await nursery.start(run)
    return srv, scope, bound[1]


async def test_several_sessions_on_one_control_connection():
    async with trio.open_nursery() as nursery:
        srv, _, port = await _server(nursery)
        specs = [SessionSpec(count=5, interval=0.002, dscp=46), SessionSpec(count=8, interval=0.001, padding=200),
                 SessionSpec(count=3, interval=0.003)]
        results = await run_sessions("127.0.0.1", port, specs, mode=4, key_id="alice", secret="testsecret")
        assert [r.stats()["received"] for r in results] == [5, 8, 3]
        assert len({r.test_port for r in results}) == 3  # one reflector port per session
        st = srv.status()
        assert len(st["sessions"]) == 3 and st["counters"]["start-sessions"] == 1
        # default padding in encrypted mode: 64 octets (symmetric 112-byte packets); the second asked for 200
        assert sorted(s["padding_length"] for s in st["sessions"]) == [64, 64, 200]
        assert {s["dscp"] for s in st["sessions"]} == {46, 0}
        nursery.cancel_scope.cancel()


async def test_watch_notices_a_server_that_goes_away():
    async with trio.open_nursery() as nursery:
        _, scope, port = await _server(nursery)
        ctl = await ControlClient.connect("127.0.0.1", port, keepalive=Keepalive(11, 4, 3))
        s = ctl.stream.socket
        assert (s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)) == (1, 11, 4, 3)
        scope.cancel()  # the server stops: its control connections close
        with trio.fail_after(5), pytest.raises(ConnectionLost, match="closed the control connection"):
            await ctl.watch()
        await ctl.aclose()
        with pytest.raises(OSError):  # nobody listens any more
            await run_test("127.0.0.1", port, count=1)
        nursery.cancel_scope.cancel()


async def test_refusals_raise_twamp_errors():
    async with trio.open_nursery() as nursery:
        _, _, port = await _server(nursery, modes=4)
        with pytest.raises(TwampError, match="does not offer"):
            await run_test("127.0.0.1", port, count=1)
        with pytest.raises(TwampError, match="need a shared secret"):
            await run_test("127.0.0.1", port, mode=4, count=1)
        nursery.cancel_scope.cancel()

"""Control-plane limits: long requests are refused fast, command lookup is linear, idle connections give way."""

from __future__ import annotations

import struct
import time

import msgpack
import pytest
import trio

from flowplane.control import MAX_CLIENTS, MAX_WORDS, ControlServer, request


@pytest.fixture
async def server(make_app, nursery, tmp_path):
    app = make_app({})
    srv = ControlServer(app, str(tmp_path / "ctl" / "control.sock"), 0o660)
    await nursery.start(srv.run)
    return srv


def test_resolve_is_linear_in_the_request(make_app):
    commands = make_app({}).registries.commands
    words = ["show"] * 100_000
    t0 = time.monotonic()
    with pytest.raises(Exception, match="unknown command"):
        commands.resolve(words)
    assert time.monotonic() - t0 < 0.5
    cmd, rest = commands.resolve(["show", "version", *(["x"] * 100_000)])
    assert cmd.words == "show version" and len(rest) == 100_000


def test_too_many_words_is_an_error_reply(make_app):
    srv = ControlServer(make_app({}), "")
    t0 = time.monotonic()
    reply = srv.handle({"cmd": ["show"] * 100_000})
    assert time.monotonic() - t0 < 0.5
    assert reply == {"ok": False, "error": f"request too long: at most {MAX_WORDS} words of at most 256 characters"}
    assert srv.counters.drops[("control", "too_long")] == 1
    assert srv.handle({"cmd": ["show", "x" * 10_000]})["error"].startswith("request too long")
    assert srv.handle({"cmd": ["show", "version"]})["ok"]


async def test_100k_words_over_the_socket_answered_fast(server):
    body = msgpack.packb({"cmd": ["show"] * 100_000})
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.connect(server.path)
    stream = trio.SocketStream(sock)
    t0 = time.monotonic()
    async with stream:
        await stream.send_all(struct.pack(">I", len(body)))
        with trio.fail_after(5):
            head = b""
            while len(head) < 4:
                head += await stream.receive_some(4 - len(head))
            (n,) = struct.unpack(">I", head)
            raw = b""
            while len(raw) < n:
                raw += await stream.receive_some(n - len(raw))
    assert time.monotonic() - t0 < 2.0
    reply = msgpack.unpackb(raw)
    assert reply["ok"] is False and "out of range" in reply["error"]
    # and the server is still answering
    ok = await trio.to_thread.run_sync(lambda: request(server.path, ["show", "version"], fmt="json", timeout=5))
    assert ok["ok"]


async def test_idle_connections_do_not_lock_the_cli_out(server):
    idle = []
    try:
        for _ in range(100):
            s = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
            await s.connect(server.path)
            idle.append(s)
        with trio.fail_after(10):  # the server has taken every connection (served or given way)
            while server.counters["connections"] < 100:
                await trio.sleep(0.01)
        assert server._clients <= MAX_CLIENTS
        t0 = time.monotonic()
        reply = await trio.to_thread.run_sync(lambda: request(server.path, ["show", "version"], fmt="json",
                                                              timeout=5))
        assert reply["ok"], reply
        assert time.monotonic() - t0 < 2.0
        assert server.counters.drops[("control", "idle_evicted")] >= 100 - MAX_CLIENTS
        assert server.counters.drops.get(("control", "too_many_clients"), 0) == 0
    finally:
        for s in idle:
            s.close()

"""Control socket: real Unix socket, msgpack frames, hostile clients."""

from __future__ import annotations

import os
import stat
import struct

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.control import MAX_FRAME, ControlServer, request


async def _client(path: str, payload: bytes, *, half_close: bool = True) -> bytes:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.connect(path)
    stream = trio.SocketStream(sock)
    try:
        await stream.send_all(payload)
        if half_close:
            await stream.send_eof()
        out = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                out += chunk
        return out
    finally:
        await stream.aclose()


def _frame(obj) -> bytes:
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


def _replies(raw: bytes) -> list[dict]:
    out = []
    while raw:
        (n,) = struct.unpack(">I", raw[:4])
        out.append(msgpack.unpackb(raw[4 : 4 + n]))
        raw = raw[4 + n :]
    return out


@pytest.fixture
async def server(make_app, nursery, tmp_path):
    app = make_app({})
    srv = ControlServer(app, str(tmp_path / "ctl" / "control.sock"), 0o660)
    await nursery.start(srv.run)
    return srv


async def test_show_over_socket(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
    [reply] = _replies(await _client(server.path, _frame({"cmd": ["show", "version"], "format": "text"})))
    assert reply["ok"] and reply["data"]["version"] == __import__("flowplane").__version__
    assert reply["text"].startswith("flowplane ")
    # the synchronous client used by the CLI, in a thread
    reply = await trio.to_thread.run_sync(lambda: request(server.path, ["show", "system", "profile"], fmt="json"))
    assert reply["ok"] and reply["data"]["name"] == "generic-linux" and reply["text"] is None


async def test_several_requests_on_one_connection(server):
    raw = await _client(server.path, _frame({"cmd": ["show", "version"]}) + _frame({"cmd": ["show", "nothing"]}))
    a, b = _replies(raw)
    assert a["ok"] and not b["ok"] and "unknown command 'show nothing'" in b["error"]


@pytest.mark.parametrize(
    "payload, reason",
    [
        (struct.pack(">I", MAX_FRAME + 1) + b"x" * 16, "oversized"),
        (struct.pack(">I", 0), "empty"),
        (struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", "garbage"),
        (struct.pack(">I", 100) + b"short", "truncated"),
    ],
)
async def test_bad_frames_get_error_and_close(server, payload, reason):
    raw = await _client(server.path, payload)
    [reply] = _replies(raw)
    assert reply["ok"] is False and reply["error"]
    assert server.counters.drops[("control", reason)] == 1
    # the server is still serving
    [ok] = _replies(await _client(server.path, _frame({"cmd": ["show", "version"]})))
    assert ok["ok"]


@pytest.mark.parametrize("req", [[1, 2], {"cmd": "show version"}, {"cmd": [1]}, {"nocmd": True}, "x", None])
async def test_wrong_shapes(server, req):
    [reply] = _replies(await _client(server.path, _frame(req)))
    assert reply == {"ok": False, "error": "bad request: expected {'cmd': [words...], 'format': 'text'|'json'}"}


async def test_half_closed_mid_header(server):
    [reply] = _replies(await _client(server.path, b"\x00\x00"))
    assert reply["ok"] is False and "closed after 2 of 4 bytes" in reply["error"]
    assert server.counters.drops[("control", "truncated")] == 1
    [ok] = _replies(await _client(server.path, _frame({"cmd": ["show", "version"]})))
    assert ok["ok"]


async def test_command_exception_is_an_error_reply(server):
    def boom(app, args):
        raise ZeroDivisionError("nope")

    server.app.registries.commands.register("show boom", boom)
    [reply] = _replies(await _client(server.path, _frame({"cmd": ["show", "boom"]})))
    assert reply["ok"] is False and "ZeroDivisionError" in reply["error"]
    assert server.counters["command_failures"] == 1


async def test_stale_socket_replaced_and_live_one_refused(make_app, nursery, tmp_path):
    app = make_app({})
    path = str(tmp_path / "c.sock")
    import socket as pysocket

    stale = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # file left behind, nobody listening
    srv = ControlServer(app, path)
    await nursery.start(srv.run)
    with pytest.raises(OSError, match="in use"):
        await ControlServer(app, path)._bind()


def test_fuzz_handle_never_raises(make_app):
    app = make_app({})
    srv = ControlServer(app, "/nonexistent")

    @settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
                        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                        max_leaves=20))
    def check(req):
        reply = srv.handle(req)
        assert set(reply) >= {"ok"}
        msgpack.packb(reply)

    check()

    @settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.sampled_from(["show", "clear", "firewall", "filter", "x", "services", "accounting",
                                     "errors", "interface", "system", "plugins", "limit", "10", ""]), max_size=6))
    def words(ws):
        reply = srv.handle({"cmd": ws})
        assert reply["ok"] in (True, False)
        if not reply["ok"]:
            assert isinstance(reply["error"], str) and reply["error"]

    words()


async def test_fuzz_random_bytes_on_the_wire(server):
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=300))
    def one(data):
        raw = trio.from_thread.run(_client, server.path, data)
        for reply in _replies(raw) if len(raw) >= 4 else []:
            assert "ok" in reply

    await trio.to_thread.run_sync(one)
    [ok] = _replies(await _client(server.path, _frame({"cmd": ["show", "version"]})))
    assert ok["ok"]

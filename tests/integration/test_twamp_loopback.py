"""TWAMP client <-> server over loopback in a running Service: every mode, refusals, garbage, framing."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

import flowplane.plugins.twamp as twamp_plugin
from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.client import TwampError, run_test
from flowplane.plugins.twamp.crypto import derive_key, make_token
from flowplane.service import Service

SECRET = "testsecret"


def _config(modes=("none", "authenticated", "encrypted"), **extra):
    sec = {"port": 0, "listen-address": "127.0.0.1", "authentication-mode": list(modes),
           "authentication-key-chain": {"alice": SECRET}, **extra}
    return {"services": {"rpm": {"twamp": {"server": sec}}}}


class Running:
    def __init__(self, app):
        self.app = app
        self.server = app.pm.get_plugin("twamp-server")

    @property
    def port(self):
        return self.server.bound[1]

    def show(self, *words):
        cmd, rest = self.app.registries.commands.resolve(["show", "services", "rpm", "twamp", "server", *words])
        return cmd.fn(self.app, rest), cmd.formatter


async def _serve(make_app, config, body):
    app = make_app(config, plugins=[(twamp_plugin, "twamp")])
    service = Service(app, control=False)
    result = {}
    async with trio.open_nursery() as nursery:
        async def run():
            result["code"] = await service.serve()

        nursery.start_soon(run)
        await service.ready.wait()
        try:
            await body(Running(app))
        finally:
            await service.stop()
    assert result["code"] == 0


@pytest.mark.parametrize("mode", [wire.MODE_UNAUTHENTICATED, wire.MODE_AUTHENTICATED, wire.MODE_ENCRYPTED])
async def test_client_server_every_mode(make_app, mode):
    async def body(r):
        res = await run_test("127.0.0.1", r.port, mode=mode, key_id="alice", secret=SECRET, count=25,
                             interval_ms=2, wait=2.0)
        st = res.stats()
        assert (st["sent"], st["received"], st["lost"], st["duplicates"]) == (25, 25, 0, 0)
        assert st["rtt_us"]["samples"] == 25 and 0 < st["rtt_us"]["min"] <= st["rtt_us"]["avg"] <= st["rtt_us"]["max"]
        assert st["forward_lost"] == 0 and st["backward_lost"] == 0
        assert [s.reflector_seq for s in res.samples] == list(range(25))  # per-session reflector sequence
        assert all(s.sender_ttl == 255 for s in res.samples)  # the reflector copied our TTL
        assert all(s.t1 <= s.t2 <= s.t3 <= s.t4 for s in res.samples)
        await trio.sleep(0.05)
        data, fmt = r.show("session")
        sess = data["sessions"][-1]
        assert sess["received"] == sess["reflected"] == 25
        assert sess["mode"] == wire.MODE_NAMES[mode] and sess["dropped"] == {}
        assert "Reflected" in fmt(data)
        # a second test on a new connection works too (state is per connection)
        st2 = (await run_test("127.0.0.1", r.port, mode=mode, key_id="alice", secret=SECRET, count=5,
                              interval_ms=1)).stats()
        assert st2["received"] == 5
        counters = r.show()[0]["counters"]
        assert counters["sessions"] == 2 and counters["stop-sessions"] == 2

    await _serve(make_app, _config(), body)


async def test_sizes_symmetric_and_padding(make_app):
    async def body(r):
        for padding in (0, 27, 100):
            st = (await run_test("127.0.0.1", r.port, count=3, interval_ms=1, padding=padding)).stats()
            assert st["received"] == 3

    await _serve(make_app, _config(), body)


async def test_refusals_are_polite(make_app):
    async def body(r):
        with pytest.raises(TwampError, match="refused the set-up: failure"):
            await run_test("127.0.0.1", r.port, mode=wire.MODE_ENCRYPTED, key_id="alice", secret="wrong", count=1)
        with pytest.raises(TwampError, match="refused the set-up: failure"):
            await run_test("127.0.0.1", r.port, mode=wire.MODE_AUTHENTICATED, key_id="mallory", secret=SECRET,
                           count=1)
        c = r.show()[0]["counters"]
        assert c["refused-authentication"] == 2
        # still serving
        assert (await run_test("127.0.0.1", r.port, count=2, interval_ms=1)).stats()["received"] == 2

    await _serve(make_app, _config(), body)


async def test_mode_not_offered(make_app):
    async def body(r):
        with pytest.raises(TwampError, match="does not offer"):
            await run_test("127.0.0.1", r.port, mode=wire.MODE_UNAUTHENTICATED, count=1)
        # a client that asks for a mode anyway gets Accept=3 (not supported)
        s = await trio.open_tcp_stream("127.0.0.1", r.port)
        async with s:
            g = wire.ServerGreeting.unpack(await _read(s, 64))
            assert g.modes == wire.MODE_ENCRYPTED
            await s.send_all(wire.SetUpResponse(wire.MODE_UNAUTHENTICATED).pack())
            assert wire.ServerStart.unpack(await _read(s, 48)).accept == wire.ACCEPT_NOT_SUPPORTED
            assert await s.receive_some(10) == b""  # then closed
        res = await run_test("127.0.0.1", r.port, mode=wire.MODE_ENCRYPTED, key_id="alice", secret=SECRET, count=3,
                             interval_ms=1)
        assert res.stats()["received"] == 3

    await _serve(make_app, _config(modes=("encrypted",)), body)


async def _read(stream, n):
    buf = b""
    with trio.fail_after(5):
        while len(buf) < n:
            chunk = await stream.receive_some(n - len(buf))
            if not chunk:
                break
            buf += chunk
    return buf


async def test_garbage_never_crashes_the_server(make_app):
    async def body(r):
        rng = __import__("random").Random(5)
        for i in range(20):
            s = await trio.open_tcp_stream("127.0.0.1", r.port)
            async with s:
                await _read(s, 64)
                n = rng.choice([1, 16, 163, 164, 200, 400])
                blob = bytes(rng.randrange(256) for _ in range(n))
                if i % 3 == 0:  # a valid open set-up followed by garbage commands
                    blob = wire.SetUpResponse(1).pack() + blob
                try:
                    await s.send_all(blob)
                    with trio.move_on_after(0.3):
                        while await s.receive_some(4096):
                            pass
                except trio.BrokenResourceError:
                    pass
        # an unknown command after set-up: the connection is closed
        s = await trio.open_tcp_stream("127.0.0.1", r.port)
        async with s:
            await _read(s, 64)
            await s.send_all(wire.SetUpResponse(1).pack())
            await _read(s, 48)
            await s.send_all(bytes([9]) + bytes(31))
            with trio.fail_after(5):
                assert await s.receive_some(10) == b""
        c = r.show()[0]["counters"]
        assert c["protocol-errors"] >= 1
        assert "internal-errors" not in c
        assert (await run_test("127.0.0.1", r.port, count=3, interval_ms=1)).stats()["received"] == 3

    await _serve(make_app, _config(), body)


async def test_split_and_coalesced_messages(make_app):
    """Messages sent one byte at a time and several in one segment are framed by size."""

    async def body(r):
        s = await trio.open_tcp_stream("127.0.0.1", r.port)
        s.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with s:
            g = wire.ServerGreeting.unpack(await _read(s, 64))
            for b in wire.SetUpResponse(1).pack():
                await s.send_all(bytes([b]))
            assert wire.ServerStart.unpack(await _read(s, 48)).accept == 0
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            req = wire.RequestTWSession(udp.getsockname()[1], 0, None, None, 27)
            await s.send_all(req.pack() + wire.StartSessions().pack())  # coalesced
            acc = wire.AcceptSession.unpack(await _read(s, 48))
            assert acc.accept == 0 and acc.port
            assert wire.StartAck.unpack(await _read(s, 32)).accept == 0
            pkt = wire.pack_sender(wire.SenderPacket(7, wire.now_ntp(), padding=bytes(27)))
            udp.sendto(pkt, ("127.0.0.1", acc.port))
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(udp)
            reply = udp.recv(2048)
            assert len(reply) == len(pkt) == 41  # symmetric: 27 octets of padding truncated
            rp = wire.unpack_reflector(reply)
            assert rp.seq == 0 and rp.sender_seq == 7 and rp.sender_ttl > 0
            await s.send_all(wire.StopSessions(num_sessions=0).pack())  # twampy sends 0: tolerated
            udp.close()
            assert g.modes & 1

    await _serve(make_app, _config(), body)


async def test_client_list_refuses_with_modes_zero(make_app):
    async def body(r):
        with pytest.raises(TwampError, match="Modes 0"):
            await run_test("127.0.0.1", r.port, count=1)
        assert r.show()[0]["counters"]["refused-client-list"] == 1

    await _serve(make_app, _config(**{"client-list": {"lab": ["192.0.2.0/24"]}}), body)


async def test_session_limit_per_connection(make_app):
    async def body(r):
        s = await trio.open_tcp_stream("127.0.0.1", r.port)
        async with s:
            await _read(s, 64)
            await s.send_all(wire.SetUpResponse(1).pack())
            await _read(s, 48)
            codes = []
            for _ in range(3):
                await s.send_all(wire.RequestTWSession(40000, 0, None, None, 27).pack())
                codes.append(wire.AcceptSession.unpack(await _read(s, 48)).accept)
            assert codes == [0, 0, wire.ACCEPT_TEMPORARY_LIMIT]

    await _serve(make_app, _config(**{"maximum-sessions-per-connection": 2}), body)


def test_auth_handshake_by_hand_matches_server_crypto():
    """The token a client builds opens with the KDK the server derives (sanity of the helpers used above)."""
    salt, challenge = os.urandom(16), os.urandom(16)
    dk = derive_key(SECRET, salt, 1024)
    tok = make_token(dk, challenge, bytes(16), bytes(32))
    assert len(tok) == 64 and struct.unpack(">I", wire.SetUpResponse(2, "alice", tok).pack()[:4]) == (2,)


def _has_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("mode", [wire.MODE_UNAUTHENTICATED, wire.MODE_ENCRYPTED])
async def test_ipv6_loopback(make_app, mode):
    async def body(r):
        res = await run_test("::1", r.port, mode=mode, key_id="alice", secret=SECRET, count=5, interval_ms=1)
        assert res.stats()["received"] == 5
        assert all(s.sender_ttl == 255 for s in res.samples)  # hop limit copied

    cfg = _config()
    cfg["services"]["rpm"]["twamp"]["server"]["listen-address"] = "::1"
    await _serve(make_app, cfg, body)

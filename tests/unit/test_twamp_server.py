"""TWAMP config validation, wire round trips, and a recorded exchange re-parsed (tshark's view: tests/interop)."""

from __future__ import annotations

import socket

import pytest
import trio

import flowplane.plugins.twamp as twamp_plugin
from flowplane.errors import ConfigError
from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.capture import TcpConversation, eth_ipv4_udp, segments, tcp_streams
from flowplane.plugins.twamp.config import ServerConfig, parse
from flowplane.plugins.twamp.server import TwampServer
from flowplane.testing import write_pcap


def _issues(sec):
    _, issues = parse({"services": {"rpm": {"twamp": {"server": sec}}}})
    return {" ".join(map(str, i.path)): i.message for i in issues}


def test_config_ok_and_defaults():
    cfg, issues = parse({"services": {"rpm": {"twamp": {"server": {
        "authentication-mode": ["none", "encrypted"], "authentication-key-chain": {"alice": "s"},
        "client-list": {"lab": ["192.0.2.0/24"]}, "max-connection-duration": 2}}}}})
    assert issues == []
    s = cfg.server
    assert s.port == 862 and s.modes == 5 and s.secrets == {"alice": b"s"}
    assert s.max_connection_duration == 7200 and s.allowed("192.0.2.9") and not s.allowed("198.51.100.1")
    assert parse({"services": {}}) == (None, [])


def test_config_errors_have_paths():
    got = _issues({"port": 70000, "authentication-mode": ["none", "encrypt"], "colour": 1,
                   "client-list": ["nope"], "maximum-sessions-per-connection": 0})
    assert "70000 exceeds the maximum 65535" in got["services rpm twamp server port"]
    assert "did you mean 'encrypted'" in got["services rpm twamp server authentication-mode 1"]
    assert "unknown key 'colour'" in got["services rpm twamp server colour"]
    assert "prefix" in got["services rpm twamp server client-list 0"]
    assert "below the minimum 1" in got["services rpm twamp server maximum-sessions-per-connection"]
    got = _issues({"authentication-mode": "authenticated"})
    assert "needs at least one KeyID" in got["services rpm twamp server authentication-key-chain"]


def test_plugin_validates_through_the_app(make_app):
    with pytest.raises(ConfigError) as exc:
        make_app({"services": {"rpm": {"twamp": {"server": {"authentication-mode": "bogus"}}}}},
                 plugins=[(twamp_plugin, "twamp")])
    assert "services rpm twamp server authentication-mode" in str(exc.value)
    app = make_app({"services": {"rpm": {"twamp": {"server": {"port": 0}}}}}, plugins=[(twamp_plugin, "twamp")])
    assert isinstance(app.pm.get_plugin("twamp-server"), TwampServer)
    assert "show services rpm twamp server session" in app.registries.commands


def test_control_messages_round_trip_exact_sizes():
    msgs = [wire.ServerGreeting(7, b"c" * 16, b"s" * 16, 2048), wire.SetUpResponse(2, "alice", b"t" * 64, b"i" * 16),
            wire.ServerStart(0, b"v" * 16, 123),
            wire.RequestTWSession(1, 2, "192.0.2.1", "2001:db8::1", 27, 5, 6, 46 << 24),
            wire.AcceptSession(0, 862, b"x" * 16), wire.StartSessions(), wire.StartAck(), wire.StopSessions()]
    sizes = [64, 164, 48, 112, 48, 32, 32, 32]
    for m, n in zip(msgs, sizes):
        raw = m.pack()
        assert len(raw) == n
        back = type(m).unpack(raw)
        assert back.pack() == raw
    r = wire.RequestTWSession.unpack(msgs[3].pack())
    assert r.ipvn == 6 and r.receiver_address == "2001:db8::1" and r.dscp == 46
    with pytest.raises(wire.WireError):
        wire.StartSessions.unpack(bytes(32))  # command 0
    with pytest.raises(wire.WireError):
        wire.ServerGreeting.unpack(bytes(63))


def test_test_packets_sizes():
    s = wire.SenderPacket(1, 2, 3, bytes(5))
    assert len(wire.pack_sender(s)) == 19 and len(wire.pack_sender(s, True)) == 53
    r = wire.ReflectorPacket(1, 2, 3, 4, 5, 6, 7, 64)
    assert len(wire.pack_reflector(r)) == 41 and len(wire.pack_reflector(r, True)) == 112
    assert wire.unpack_reflector(wire.pack_reflector(r)) == r
    assert wire.unpack_reflector(wire.pack_reflector(r, True), True) == r
    assert wire.reflector_padding(41, False) == 0 and wire.reflector_padding(112, True) == 0
    assert wire.reflector_padding(14, False) == 0 and wire.reflector_padding(141, False) == 100


async def _recorded_exchange(tmp_path, count=5):
    """Run an open-mode exchange against a real TwampServer, recording every message; write a pcap."""
    srv = TwampServer(ServerConfig(port=0, address="127.0.0.1"))
    frames = []
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(srv.run)
        s = await trio.open_tcp_stream("127.0.0.1", bound[1])
        cport = s.socket.getsockname()[1]
        conv = TcpConversation(("127.0.0.1", cport), ("127.0.0.1", bound[1]))

        async def read(n):
            buf = b""
            with trio.fail_after(5):
                while len(buf) < n:
                    buf += await s.receive_some(n - len(buf))
            conv.send(False, buf)
            return buf

        async def send(b):
            conv.send(True, b)
            await s.send_all(b)

        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        uport = udp.getsockname()[1]
        async with s:
            await read(64)
            await send(wire.SetUpResponse(1).pack())
            await read(48)
            await send(wire.RequestTWSession(uport, 0, "127.0.0.1", "127.0.0.1", 0, wire.now_ntp(), 1 << 32,
                                             0).pack())
            acc = wire.AcceptSession.unpack(await read(48))
            await send(wire.StartSessions().pack())
            await read(32)
            test = []
            for i in range(count):
                pkt = wire.pack_sender(wire.SenderPacket(i, wire.now_ntp()))
                udp.sendto(pkt, ("127.0.0.1", acc.port))
                with trio.fail_after(5):
                    await trio.lowlevel.wait_readable(udp)
                reply = udp.recv(2048)
                test.append(eth_ipv4_udp("127.0.0.1", uport, "127.0.0.1", acc.port, pkt, ttl=255))
                test.append(eth_ipv4_udp("127.0.0.1", acc.port, "127.0.0.1", uport, reply))
            await send(wire.StopSessions(num_sessions=1).pack())
        udp.close()
        nursery.cancel_scope.cancel()
    conv.close()
    frames = conv.frames[:-4] + test + conv.frames[-4:]  # Stop-Sessions and FIN after the test packets
    path = write_pcap(str(tmp_path / "twamp.pcap"), frames)
    return path, bound[1], acc.port


async def test_recorded_exchange_reparses(tmp_path):
    path, cport, tport = await _recorded_exchange(tmp_path)
    segs = segments(path)
    st = tcp_streams(segs)
    assert len(st) == 1 and [len(p) for _, p in st[0].chunks] == [64, 164, 48, 112, 48, 32, 32, 32]
    udp = [x for x in segs if x.proto == 17]
    assert [len(x.payload) for x in udp] == [14, 41] * 5
    assert [wire.unpack_reflector(x.payload).seq for x in udp if x.sport == tport] == list(range(5))

"""TWAMP Light (RFC 5357 appendix I): config, reflection rules, client <-> reflector over IPv4 and IPv6,
garbage (the twampy capture replayed: tests/interop/test_twamp_captures.py)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest
import trio

import flowplane.plugins.twamp as twamp_plugin
from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.client import run_light
from flowplane.plugins.twamp.config import LightConfig, parse
from flowplane.plugins.twamp.light import LightReflector, format_status
from flowplane.testing import free_port, serve, wait_until_async


def _have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- config -----------------------------------------------------------------------------------


def test_config_light_defaults_and_errors():
    cfg, issues = parse({"services": {"rpm": {"twamp": {"server": {"listen-address": "::", "light": {}}}}}})
    assert issues == []
    assert cfg.server.light == LightConfig(port=862, address="::", mode="per-sender", idle_timeout=30.0)
    cfg, issues = parse({"services": {"rpm": {"twamp": {"server": {
        "light": {"port": 8862, "address": "127.0.0.1", "mode": "stateless", "idle-timeout": 0}}}}}})
    assert issues == [] and cfg.server.light == LightConfig(8862, "127.0.0.1", "stateless", 0.0)
    assert parse({"services": {"rpm": {"twamp": {"server": {}}}}})[0].server.light is None
    _, issues = parse({"services": {"rpm": {"twamp": {"server": {
        "light": {"port": -1, "address": "nope", "mode": "stateful", "colour": 1}}}}}})
    got = {" ".join(map(str, i.path)): i.message for i in issues}
    assert "below the minimum 0" in got["services rpm twamp server light port"]
    assert "IPv4 or IPv6" in got["services rpm twamp server light address"]
    assert "stateless" in got["services rpm twamp server light mode"]
    assert "unknown key 'colour'" in got["services rpm twamp server light colour"]
    _, issues = parse({"services": {"rpm": {"twamp": {"server": {"light": 862}}}}})
    assert issues and issues[0].path[-1] == "light"


# -- reflection rules (no sockets) ------------------------------------------------------------------


def _sender(seq: int, size: int, ts: int | None = None) -> bytes:
    ts = wire.now_ntp() if ts is None else ts
    return wire.pack_sender(wire.SenderPacket(seq, ts, 0x3FFF, bytes(size - 14)))


def test_reflect_every_size_symmetric_and_stateless_vs_per_sender():
    stateless = LightReflector(LightConfig(mode="stateless"))
    per_sender = LightReflector(LightConfig(mode="per-sender"))
    a, b = ("192.0.2.1", 5000), ("192.0.2.2", 5000)
    for size, want in ((14, 41), (27, 41), (38, 41), (41, 41), (44, 44), (100, 100), (1472, 1472)):
        t2 = time.time_ns()
        out = stateless.reflect(_sender(1000 + size, size), a, t2, 61)
        assert len(out) == want, size
        r = wire.unpack_reflector(out)
        assert r.seq == r.sender_seq == 1000 + size  # stateless: the sender's sequence copied
        assert r.sender_ttl == 61 and r.sender_error_estimate == 0x3FFF
        assert wire.ntp_to_ns(r.receive_timestamp) <= wire.ntp_to_ns(r.timestamp)
        assert abs(wire.ntp_to_ns(r.receive_timestamp) - t2) <= 1
    # STAMP (RFC 8762) unauthenticated reflector layout: 44 bytes, MBZ after the TTL
    out = stateless.reflect(_sender(7, 44), a, time.time_ns(), 255)
    assert out[40] == 255 and out[41:] == bytes(3) and out[14:16] == bytes(2)
    # per-sender: an own counter for each sender address and port
    seqs = [wire.unpack_reflector(per_sender.reflect(_sender(500 + i, 41), src, time.time_ns(), 64)).seq
            for i, src in enumerate([a, a, b, a, b, (a[0], 5001)])]
    assert seqs == [0, 1, 0, 2, 1, 0]
    st = per_sender.status()
    assert [(s["sender"], s["received"], s["next_seq"]) for s in st["senders"]] == [
        ("192.0.2.1:5000", 3, 3), ("192.0.2.2:5000", 2, 2), ("192.0.2.1:5001", 1, 1)]


def test_per_sender_sequence_restarts_after_idle_and_table_is_bounded(monkeypatch):
    r = LightReflector(LightConfig(mode="per-sender", idle_timeout=30))
    src = ("192.0.2.1", 5000)
    t = 1_800_000_000 * 10**9
    assert [wire.unpack_reflector(r.reflect(_sender(i, 41), src, t + i, 64)).seq for i in range(3)] == [0, 1, 2]
    later = t + 31 * 10**9
    assert wire.unpack_reflector(r.reflect(_sender(9, 41), src, later, 64)).seq == 0
    assert r.senders[src].resets == 1
    import flowplane.plugins.twamp.light as light

    monkeypatch.setattr(light, "MAX_SENDERS", 4)
    for port in range(10):
        r.reflect(_sender(0, 41), ("192.0.2.9", port), t, 64)
    assert len(r.senders) == 4 and r.counters["senders-evicted"] == 7


def test_short_and_garbage_are_counted_never_crash():
    r = LightReflector(LightConfig(mode="per-sender"))
    src = ("192.0.2.1", 5000)
    for n in (0, 1, 13):
        assert r.reflect(os.urandom(n), src, time.time_ns(), 64) is None
    assert r.counters["dropped-short"] == 3 and r.senders[src].dropped == {"short": 3}
    # 14 bytes or more of anything is a legal unauthenticated sender packet: reflected, with an
    # invalid error estimate (multiplier 0) counted
    junk = b"\xff" * 12 + b"\x00\x00" + b"\xaa" * 50
    out = r.reflect(junk, src, time.time_ns(), 64)
    assert len(out) == len(junk) and r.counters["invalid-error-estimate"] == 1
    assert "dropped short: 3" in format_status(r.status())


# -- over sockets ---------------------------------------------------------------------------------


async def _with_reflector(cfg: LightConfig, body):
    r = LightReflector(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        try:
            await body(r)
        finally:
            nursery.cancel_scope.cancel()
    return r


@pytest.mark.parametrize("mode", ["stateless", "per-sender"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_light_client_reflector_loopback(host, mode):
    if host == "::1" and not _have_ipv6():
        pytest.skip("no IPv6 loopback")

    async def body(r):
        res = await run_light(host, r.bound[1], count=40, interval_ms=1, wait=2.0)
        st = res.stats()
        assert (st["sent"], st["received"], st["lost"], st["duplicates"], st["reordered"]) == (40, 40, 0, 0, 0)
        assert st["mode"] == "light" and st["forward_lost"] == 0 and st["backward_lost"] == 0
        assert st["rtt_us"]["samples"] == 40 and 0 < st["rtt_us"]["min"] <= st["rtt_us"]["max"]
        assert [s.reflector_seq for s in res.samples] == list(range(40))
        assert all(s.sender_ttl == 255 for s in res.samples)  # TTL / hop limit copied
        assert all(s.t1 <= s.t2 <= s.t3 <= s.t4 for s in res.samples)
        # a second client (new source port): stateless copies its seq, per-sender starts again at 0
        res2 = await run_light(host, r.bound[1], count=5, interval_ms=1, wait=2.0)
        assert [s.reflector_seq for s in res2.samples] == list(range(5))
        await wait_until_async(lambda: r.counters["reflected"] == 45)  # counted once sendto returned
        st = r.status()
        assert r.counters["received"] == r.counters["reflected"] == 45
        assert sorted((s["received"], s["reflected"]) for s in st["senders"]) == [(5, 5), (40, 40)]
        assert sorted(s["next_seq"] for s in st["senders"]) == ([0, 0] if mode == "stateless" else [5, 40])

    await _with_reflector(LightConfig(port=0, address=host, mode=mode), body)


@pytest.mark.parametrize("mode", ["stateless", "per-sender"])
async def test_light_sender_sequence_not_from_zero(mode):
    """A sender whose sequence starts at 1000 (and skips): stateless copies, per-sender counts."""
    async def body(r):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        with sock:
            got = []
            for seq in (1000, 1001, 1005):
                await sock.sendto(_sender(seq, 44), ("127.0.0.1", r.bound[1]))
                with trio.fail_after(2):
                    data = await sock.recv(2048)
                assert len(data) == 44
                got.append(wire.unpack_reflector(data).seq)
        assert got == ([1000, 1001, 1005] if mode == "stateless" else [0, 1, 2])

    await _with_reflector(LightConfig(port=0, address="127.0.0.1", mode=mode), body)


async def test_malformed_over_the_wire_counted_and_reflector_keeps_going():
    async def body(r):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        with sock:
            for n in (0, 3, 13):
                await sock.sendto(os.urandom(n), ("127.0.0.1", r.bound[1]))
            await sock.sendto(_sender(1, 41), ("127.0.0.1", r.bound[1]))
            with trio.fail_after(2):
                data = await sock.recv(2048)
        assert wire.unpack_reflector(data).sender_seq == 1
        await wait_until_async(lambda: r.counters["reflected"] == 1)  # counted once sendto returned
        assert r.counters["dropped-short"] == 3 and r.counters["reflected"] == 1 and r.counters["received"] == 4

    await _with_reflector(LightConfig(port=0, address="127.0.0.1", mode="per-sender"), body)


async def test_light_reflector_in_the_service_and_show(make_app):
    cfg = {"services": {"rpm": {"twamp": {"server": {
        "port": 0, "listen-address": "127.0.0.1", "light": {"port": 0, "mode": "stateless"}}}}}}
    app = make_app(cfg, plugins=[(twamp_plugin, "twamp")])
    async with serve(app) as service:
        try:
            light = app.pm.get_plugin("twamp-light")
            assert light is not None and light.bound[0] == "127.0.0.1"
            st = (await run_light("127.0.0.1", light.bound[1], count=10, interval_ms=1)).stats()
            assert st["received"] == 10
            await wait_until_async(lambda: light.counters["reflected"] == 10)  # counted once sendto returned
            cmd, rest = app.registries.commands.resolve(["show", "services", "rpm", "twamp", "server", "light"])
            data = cmd.fn(app, rest)
            assert data["mode"] == "stateless" and data["counters"]["reflected"] == 10
            assert "TWAMP Light reflector: listening on 127.0.0.1" in cmd.formatter(data)
        finally:
            await service.stop()
    assert service.code == 0


def test_cli_light_server_and_client(tmp_path):
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "flowplane", "twamp", "server", "--light", "--listen",
                            f"127.0.0.1:{port}", "--light-mode", "stateless", "--duration", "8", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(5):  # a structured log line may come first
            line = srv.stdout.readline()
            if "TWAMP Light reflector listening" in line or not line:
                break
        assert "TWAMP Light reflector listening" in line, srv.stderr.read()
        out = subprocess.run([sys.executable, "-m", "flowplane", "twamp", "client", f"127.0.0.1:{port}", "--light",
                              "--count", "5", "--interval", "2", "--json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        st = json.loads(out.stdout)
        assert (st["mode"], st["sent"], st["received"]) == ("light", 5, 5)
        text = subprocess.run([sys.executable, "-m", "flowplane", "twamp", "client", f"127.0.0.1:{port}", "--light",
                               "--count", "2", "--interval", "2"], capture_output=True, text=True, timeout=30).stdout
        assert "Probes sent: 2, received: 2" in text and "Round trip time" in text
    finally:
        srv.send_signal(2)
        srv.wait(timeout=10)


def test_pack_sender_helper_layout():
    # keep the helper honest: 14-byte header, error estimate at offset 12
    p = _sender(3, 41, ts=0x0102030405060708)
    assert struct.unpack_from(">IQH", p) == (3, 0x0102030405060708, 0x3FFF) and len(p) == 41

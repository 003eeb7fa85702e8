"""IPFIX over TCP into the collector, UDP template expiry, SO_RXQ_OVFL: real sockets on 127.0.0.1 / ::1 only."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.export import EncoderOptions, TransportOptions
from flowplane.plugins.collector.cli import build_config, parse_listen
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen, parse
from flowplane.plugins.collector.decoder import Decoder
from flowplane.plugins.collector.listener import UdpListener
from flowplane.plugins.collector.listener_tcp import frame
from flowplane.plugins.encoders import ipfix
from flowplane.plugins.transports.tcp import TcpTransport
from flowplane.service import Service
from flowplane.testing import wait_until_async

from test_collector import COMPARED, T0, _key, ipfix_msg, iset, sample_records, tmpl


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_V6 = _has_ipv6_loopback()


def _collector(listen, **kw) -> Collector:
    return Collector(CollectorConfig(listen=listen, **kw))


def _gathered(c: Collector) -> list:
    got: list = []
    c.subscribers.append(got.extend)
    return got


def _records(flows, domain=None) -> np.ndarray:
    arrs = [f.data for f in flows if domain is None or f.domain == domain]
    return np.concatenate(arrs) if arrs else np.zeros(0, dtype=flows[0].data.dtype if flows else None)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    g, w = got[_key(got)], want[_key(want)]
    for name in COMPARED:
        assert np.array_equal(g[name], w[name]), name


def _encoder(domain: int):
    return ipfix.factory(EncoderOptions(version=10, observation_domain_id=domain))


# hand-built IPFIX: template 256 = (sourceIPv4Address, destinationIPv4Address, packetDeltaCount)
TMPL = iset(2, tmpl(256, [(8, 4), (12, 4), (2, 8)]))


def data_set(n: int, base: int = 1) -> bytes:
    return iset(256, b"".join(struct.pack(">IIQ", 0x0A000001, 0x0A000002, base + i) for i in range(n)))


def _connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))
    return s


async def _closed_by_peer(s: socket.socket, timeout=5.0) -> bool:
    """True once the collector closed the connection (EOF or reset)."""
    s.setblocking(False)
    with trio.move_on_after(timeout):
        while True:
            try:
                if s.recv(1) == b"":
                    return True
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return True
            await trio.sleep(0.01)
    return False


# ---------------------------------------------------------------------------
# framing (pure)


def test_frame_split_and_coalesced():
    m1 = ipfix_msg([TMPL])
    m2 = ipfix_msg([data_set(3)], seq=0)
    stream = m1 + m2
    msgs, used, err = frame(stream)
    assert [bytes(m) for m in msgs] == [m1, m2] and used == len(stream) and err is None
    for cut in range(len(stream)):
        msgs, used, err = frame(stream[:cut])
        assert err is None and used == sum(len(m) for m in msgs) <= cut
    assert frame(struct.pack(">HH", 10, 8) + bytes(12))[2] == "bad-length"
    assert frame(struct.pack(">HH", 9, 40) + bytes(36))[2] == "bad-version"
    assert frame(b"\x00\x05")[2] == "bad-version"  # known before the length arrives
    msgs, used, err = frame(m1 + struct.pack(">HH", 10, 15))
    assert len(msgs) == 1 and used == len(m1) and err == "bad-length"


# ---------------------------------------------------------------------------
# config and `flowplane collect`


def test_config_tcp_listen_template_timeout_max_connections():
    cfg, issues = parse({"services": {"flow-collector": {
        "listen": [{"address": "::1", "port": 4739, "protocol": "tcp"}, {"address": "::1", "port": 4739}],
        "template-timeout": 60, "max-connections": 8}}})
    assert issues == []
    assert [x.protocol for x in cfg.listen] == ["tcp", "udp"] and cfg.listen[0].label == "tcp:[::1]:4739"
    assert cfg.template_timeout == 60.0 and cfg.max_connections == 8
    assert CollectorConfig().template_timeout == 1800.0
    _, issues = parse({"services": {"flow-collector": {
        "listen": [{"address": "::1", "port": 1, "protocol": "sctp"}], "template-timeout": -1,
        "max-connections": 0}}})
    paths = {i.path for i in issues}
    assert ("services", "flow-collector", "listen", 0, "protocol") in paths
    assert ("services", "flow-collector", "template-timeout") in paths
    assert ("services", "flow-collector", "max-connections") in paths


def test_collect_listen_tcp():
    assert parse_listen("tcp:[::1]:4739") == {"address": "::1", "port": 4739, "protocol": "tcp"}
    assert parse_listen("tcp:127.0.0.1:0")["protocol"] == "tcp"

    class Args:
        listen = ["tcp:127.0.0.1:4739", "udp:[::1]:2055"]
        output: list = []
        max_templates = 1024
        pending_timeout = 10.0
        template_timeout = 30.0

    sec = build_config(Args, "/tmp/x.sock")["services"]["flow-collector"]
    assert sec["listen"][0]["protocol"] == "tcp" and sec["template-timeout"] == 30.0
    cfg, issues = parse({"services": {"flow-collector": sec}})
    assert issues == [] and cfg.listen[0].protocol == "tcp"


# ---------------------------------------------------------------------------
# end to end: our TCP transport + IPFIX encoder -> a running collector


async def test_concurrent_tcp_exporters_end_to_end(make_app, tmp_path):
    listen = [{"address": "127.0.0.1", "port": 0, "protocol": "tcp"}]
    if HAS_V6:
        listen.append({"address": "::1", "port": 0, "protocol": "tcp"})
    app = make_app({"services": {"flow-collector": {"listen": listen}}}, plugins=[(collector_plugin, "collector")])
    c = app.pm.get_plugin("flow-collector")
    got = _gathered(c)
    service = Service(app, control=False)
    n_exp, per = 6, 2000
    sent = {}
    async with trio.open_nursery() as nursery:
        result = {}

        async def serve():
            result["code"] = await service.serve()

        nursery.start_soon(serve)
        await service.ready.wait()
        exporters = await nursery.start(_nursery_task)
        transports = []
        for k in range(n_exp):
            lst = c.listeners[k % len(c.listeners)]
            host = lst.listen.address
            t = TcpTransport(TransportOptions(host=host, port=lst.port, reconnect_s=0.05), jitter=0)
            enc = _encoder(100 + k)
            now = T0 + 4000 * 10**9
            t.on_connect = lambda enc=enc, now=now: enc.templates(now)
            await exporters.start(t.run)
            recs = sample_records(per, seed=10 + k)
            sent[100 + k] = recs.data
            for i in range(0, per, 250):  # many messages, interleaved between exporters
                t.send_nowait(enc.encode(type(recs)(recs.data[i:i + 250], boot_ns=recs.boot_ns), now))
            transports.append(t)
        for t in transports:
            assert await t.flush(5.0)
        await wait_until_async(lambda: c.counters["records"] >= n_exp * per)
        assert sum(lst.accepted for lst in c.listeners) == n_exp
        assert sum(len(lst.connections) for lst in c.listeners) == n_exp
        cmd, rest = app.registries.commands.resolve(["show", "services", "flow-collector"])
        data = cmd.fn(app, rest)
        assert data["records"] == n_exp * per and data["decode_errors"] == {}
        sessions = [e["session"] for e in data["exporters"]]
        assert len(sessions) == n_exp and all(s.startswith("tcp:") for s in sessions)
        assert all(e["lost"] == 0 for e in data["exporters"])
        text = collector_plugin.commands.format_show(data)
        assert "Connections: " in text and "tcp:127.0.0.1:" in text
        exporters.cancel_scope.cancel()  # the exporters go away: their sessions and templates end
        await wait_until_async(lambda: sum(len(lst.connections) for lst in c.listeners) == 0)
        assert c.decoder.exporters == {}
        await service.stop()
    assert result["code"] == 0
    for dom, want in sent.items():
        _same(_records(got, dom), want)
    assert c.counters["records"] == n_exp * per
    assert not c.counters.drops


async def _nursery_task(*, task_status=trio.TASK_STATUS_IGNORED):
    async with trio.open_nursery() as n:
        task_status.started(n)
        await trio.sleep_forever()


async def _running_tcp(nursery, **kw):
    c = _collector([Listen("127.0.0.1", 0, "tcp")], **kw)
    await nursery.start(c.listeners[0].run)
    return c, c.listeners[0]


async def test_split_and_coalesced_messages():
    async with trio.open_nursery() as nursery:
        c, lst = await _running_tcp(nursery)
        got = _gathered(c)
        with _connect(lst.port) as s:
            first = ipfix_msg([TMPL, data_set(5)], seq=0)
            for b in first:  # one byte per send: the message is reassembled across reads
                s.send(bytes([b]))
                await trio.sleep(0)
            await wait_until_async(lambda: c.counters["records"] == 5)
            assert lst.datagrams == 1
            # several messages in one send, the last one cut and finished by a second send
            msgs = [ipfix_msg([data_set(4, base=100 * k)], seq=5 + 4 * (k - 1)) for k in range(1, 6)]
            blob = b"".join(msgs)
            s.sendall(blob[:-7])
            await wait_until_async(lambda: c.counters["records"] == 5 + 16)
            s.sendall(blob[-7:])
            await wait_until_async(lambda: c.counters["records"] == 25)
        await wait_until_async(lambda: lst.closed == 1)
        nursery.cancel_scope.cancel()
    pk = np.sort(_records(got)["packets"])
    assert pk.tolist() == sorted([1, 2, 3, 4, 5] + [100 * k + i for k in range(1, 6) for i in range(4)])
    assert lst.datagrams == 6 and not c.counters.drops
    assert c.decoder.exporters == {}  # the session's state went with the connection


@pytest.mark.parametrize("bad,reason", [
    (struct.pack(">HHIII", 10, 12, 0, 0, 1), "bad-length"),
    (struct.pack(">HHIII", 9, 40, 0, 0, 1) + bytes(24), "bad-version"),
])
async def test_bad_framing_closes_only_that_connection(bad, reason):
    async with trio.open_nursery() as nursery:
        c, lst = await _running_tcp(nursery)
        with _connect(lst.port) as good, _connect(lst.port) as evil:
            good.sendall(ipfix_msg([TMPL, data_set(2)]))
            await wait_until_async(lambda: c.counters["records"] == 2)
            evil.sendall(ipfix_msg([TMPL, data_set(3)]) + bad + ipfix_msg([data_set(1)]))
            assert await _closed_by_peer(evil)
            assert c.counters["records"] == 5  # the messages before the bad header were decoded
            assert c.counters.drops[("tcp", reason)] == 1
            good.sendall(ipfix_msg([data_set(2)], seq=2))
            await wait_until_async(lambda: c.counters["records"] == 7)
            assert len(lst.connections) == 1 and lst.errors == 1
        nursery.cancel_scope.cancel()


async def test_connection_limit_refuses_and_counts():
    async with trio.open_nursery() as nursery:
        c, lst = await _running_tcp(nursery, max_connections=2)
        a, b = _connect(lst.port), _connect(lst.port)
        await wait_until_async(lambda: len(lst.connections) == 2)
        extra = _connect(lst.port)  # the kernel completes the handshake; the collector closes it
        assert await _closed_by_peer(extra)
        assert lst.refused == 1 and c.counters.drops[("tcp", "connection-limit")] == 1
        a.close()
        await wait_until_async(lambda: len(lst.connections) == 1)
        d = _connect(lst.port)
        await wait_until_async(lambda: lst.accepted == 3)
        d.sendall(ipfix_msg([TMPL, data_set(2)]))
        await wait_until_async(lambda: c.counters["records"] == 2)
        for s in (b, d, extra):
            s.close()
        nursery.cancel_scope.cancel()
    assert lst.refused == 1


async def test_templates_are_scoped_per_connection():
    async with trio.open_nursery() as nursery:
        c, lst = await _running_tcp(nursery, pending_timeout=60)
        a = _connect(lst.port)
        a.sendall(ipfix_msg([TMPL, data_set(2)]))
        await wait_until_async(lambda: c.counters["records"] == 2)
        # same exporter address, another connection: A's template does not apply, the data is held
        with _connect(lst.port) as b:
            b.sendall(ipfix_msg([data_set(3)]))
            await wait_until_async(lambda: c.counters["pending-sets"] == 1)
            assert c.counters["records"] == 2
            a.close()
            await wait_until_async(lambda: lst.closed == 1)
            # a new connection after A closed starts with no templates either
            with _connect(lst.port) as a2:
                a2.sendall(ipfix_msg([data_set(4)]))
                await wait_until_async(lambda: c.counters["pending-sets"] == 2)
                assert c.counters["records"] == 2
                a2.sendall(ipfix_msg([TMPL]))  # its own template resolves its own held data only
                await wait_until_async(lambda: c.counters["records"] == 6)
            # B's data is still held; B's template arrives on B
            b.sendall(ipfix_msg([TMPL]))
            await wait_until_async(lambda: c.counters["records"] == 9)
        await wait_until_async(lambda: lst.closed == 3)
        nursery.cancel_scope.cancel()
    assert c.decoder.exporters == {} and not c.counters.drops.get(("decode", "no-template"))
    # UDP state of the same address is apart from TCP sessions
    c.handle([(ipfix_msg([data_set(1)]), "127.0.0.1")])
    assert c.counters["records"] == 9


async def test_closing_a_connection_counts_its_held_data():
    async with trio.open_nursery() as nursery:
        c, lst = await _running_tcp(nursery, pending_timeout=60)
        with _connect(lst.port) as a:
            a.sendall(ipfix_msg([data_set(3)]) + ipfix_msg([data_set(3)]))
            await wait_until_async(lambda: c.counters["pending-sets"] == 2)
        await wait_until_async(lambda: lst.closed == 1)
        nursery.cancel_scope.cancel()
    assert c.counters.drops[("decode", "no-template")] == 2


# ---------------------------------------------------------------------------
# template expiry (UDP)


def test_udp_templates_expire_by_age_tcp_ones_do_not():
    ns = 10**9
    dec = Decoder(template_timeout=100)
    dec.feed(ipfix_msg([TMPL]), "192.0.2.1", T0)
    dec.feed(ipfix_msg([TMPL]), "192.0.2.2", T0)
    dec.feed(ipfix_msg([TMPL]), "192.0.2.3", T0, session="tcp:192.0.2.3:1000")
    dec.feed(ipfix_msg([TMPL]), "192.0.2.2", T0 + 60 * ns)  # refresh
    dec.expire(T0 + 99 * ns)
    assert dec.counters["templates-expired"] == 0
    dec.expire(T0 + 101 * ns)  # scans are at most every timeout/8 (and 60 s): not yet
    assert dec.counters["templates-expired"] == 0
    dec.expire(T0 + 112 * ns)
    assert dec.counters["templates-expired"] == 1
    assert dec.exporters["192.0.2.1"].template_count == 0
    assert dec.exporters["192.0.2.2"].template_count == 1
    dec.expire(T0 + 170 * ns)  # the refreshed one, 110 s after its refresh
    assert dec.counters["templates-expired"] == 2
    assert dec.exporters["tcp:192.0.2.3:1000"].template_count == 1  # lives as long as the connection
    # data after expiry waits for a new template
    dec.feed(ipfix_msg([data_set(2)]), "192.0.2.1", T0 + 171 * ns)
    assert dec.flush() == [] and dec.counters["pending-sets"] == 1
    dec.feed(ipfix_msg([TMPL]), "192.0.2.1", T0 + 172 * ns)
    assert sum(len(f) for f in dec.flush()) == 2
    # template-timeout 0: never
    dec0 = Decoder(template_timeout=0)
    dec0.feed(ipfix_msg([TMPL]), "192.0.2.1", T0)
    dec0.expire(T0 + 10**6 * ns)
    assert dec0.exporters["192.0.2.1"].template_count == 1


def test_v9_templates_expire_too():
    from flowplane.plugins.encoders import netflow9

    enc = netflow9.factory(EncoderOptions(version=9))
    dec = Decoder(template_timeout=30)
    for d in enc.encode(sample_records(10), T0):
        dec.feed(d, "192.0.2.1", T0)
    n = dec.exporters["192.0.2.1"].template_count
    assert n >= 2
    dec.expire(T0 + 31 * 10**9)
    assert dec.counters["templates-expired"] == n and dec.exporters["192.0.2.1"].template_count == 0


async def test_udp_template_expiry_in_a_running_collector():
    c = _collector([Listen("127.0.0.1", 0)], template_timeout=0.3)
    async with trio.open_nursery() as nursery:
        await nursery.start(c.listeners[0].run)
        await nursery.start(c._timer)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(ipfix_msg([TMPL, data_set(2)]), ("127.0.0.1", c.listeners[0].port))
            await wait_until_async(lambda: c.counters["records"] == 2)
            await wait_until_async(lambda: c.counters["templates-expired"] == 1, timeout=5)
            s.sendto(ipfix_msg([data_set(2)], seq=2), ("127.0.0.1", c.listeners[0].port))
            await wait_until_async(lambda: c.counters["pending-sets"] == 1)
        assert c.counters["records"] == 2
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# SO_RXQ_OVFL


async def test_rxq_ovfl_counts_kernel_drops():
    seen: list = []
    lst = UdpListener(Listen("127.0.0.1", 0), seen.extend, 65536)
    async with trio.open_nursery() as nursery:
        await nursery.start(lst.run)
        assert lst.rxq and lst.rxq_ovfl() == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3000):  # no checkpoint: the listener cannot read, the queue overflows
                s.sendto(bytes(1400), ("127.0.0.1", lst.port))
            drops = lst.kernel_drops()
            assert drops and drops > 0
            await wait_until_async(lambda: len(seen) == 3000 - drops)
            s.sendto(b"\x00\x0a", ("127.0.0.1", lst.port))  # the next datagram carries the final count
            await wait_until_async(lambda: len(seen) == 3001 - drops)
        assert lst.rxq_ovfl() == drops == lst.kernel_drops()
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# flowplane collect --listen tcp:


def test_flowplane_collect_over_tcp(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "flows.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "flowplane", "collect", "--listen", "tcp:127.0.0.1:0",
                             "--output", f"jsonl:{out}", "--count", "7", "--duration", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            if line.startswith("listening on tcp:127.0.0.1:"):
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "collector did not report its TCP listener"
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(ipfix_msg([TMPL, data_set(3)]) + ipfix_msg([data_set(4)], seq=3))
            stdout, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout
    assert "7 flow records" in stdout
    assert len([json.loads(x) for x in out.read_text().splitlines()]) == 7

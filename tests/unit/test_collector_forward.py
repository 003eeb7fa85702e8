"""Collector re-export (replication): the exporter-address encoder option, several servers at once over UDP and
TCP decoded by flowplane's own collector, drops counted (nfcapd accepting the stream: tests/interop)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

import numpy as np
import pytest
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.export import EncoderOptions, ReexportRecords
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen
from flowplane.plugins.collector.forward import Forward, Forwarder
from flowplane.plugins.collector.output import OutputConfig
from flowplane.plugins.encoders import ipfix, netflow9
from flowplane.testing import free_port, plugin_registries, serve, wait_until_async

from test_collector import COMPARED, T0, _key, sample_records

NOW = T0 + 4000 * 10**9
REGISTRIES = plugin_registries()  # the installed encoders and transports, as the app has them


def sink_collector() -> Collector:
    return Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)]))


def exporter_column(flows) -> list:
    """The original exporter of every decoded record (IE 130 as an int address, IE 131 as bytes)."""
    out = []
    for f in flows:
        if "exporterIPv4Address" in f.extra:
            out += [str(ipaddress.IPv4Address(int(x))) for x in f.extra["exporterIPv4Address"]]
        elif "exporterIPv6Address" in f.extra:
            out += [str(ipaddress.IPv6Address(bytes(x))) for x in f.extra["exporterIPv6Address"]]
        else:
            out += [None] * len(f)
    return out


def assert_same_flows(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    g, w = got[_key(got)], want[_key(want)]
    for name in COMPARED:
        assert np.array_equal(g[name], w[name]), name


# ---------------------------------------------------------------------------
# the encoder option


@pytest.mark.parametrize("mod, version", [(ipfix, 10), (netflow9, 9)])
def test_exporter_address_off_by_default_changes_nothing(mod, version):
    recs = sample_records(200, seed=3)
    a = mod.factory(EncoderOptions(version=version)).encode(recs, NOW)
    b = mod.factory(EncoderOptions(version=version, exporter_address=False)).encode(
        ReexportRecords(recs.data, boot_ns=recs.boot_ns, exporter="192.0.2.9"), NOW)
    assert a == b
    assert EncoderOptions().exporter_address is False


@pytest.mark.parametrize("mod, version", [(ipfix, 10), (netflow9, 9)])
@pytest.mark.parametrize("exporter", ["192.0.2.77", "2001:db8::77", "::ffff:198.51.100.1"])
def test_exporter_address_in_every_record(mod, version, exporter):
    recs = sample_records(300, seed=4)
    enc = mod.factory(EncoderOptions(version=version, exporter_address=True))
    assert {t.template_id for t in enc.data_templates.values()} == {256, 257, 272, 273}
    dgrams = enc.encode(ReexportRecords(recs.data, boot_ns=recs.boot_ns, exporter=exporter), NOW)
    flows = sink_collector().handle([(d, "10.0.0.1") for d in dgrams], now_ns=NOW)
    ip = ipaddress.ip_address(exporter)
    want = str(getattr(ip, "ipv4_mapped", None) or ip)
    assert set(exporter_column(flows)) == {want}
    assert {f.template_id for f in flows} == ({272, 273} if ":" in want else {256, 257})
    assert_same_flows(np.concatenate([f.data for f in flows]), recs.data)


def test_twin_template_ids_configurable_and_checked():
    opts = EncoderOptions(exporter_address=True, template_ids={"ipv4": 300, "ipv6": 301, "ipv4/exporter6": 400,
                                                               "ipv6/exporter6": 401})
    enc = ipfix.factory(opts)
    assert sorted(t.template_id for t in enc.data_templates.values()) == [300, 301, 400, 401]
    with pytest.raises(ValueError, match="distinct"):
        ipfix.factory(EncoderOptions(exporter_address=True, template_ids={"ipv4": 256, "ipv6": 272}))


# ---------------------------------------------------------------------------
# replication in a running service: two UDP servers (IPFIX and v9) and one TCP server (IPFIX)


SO_RXQ_OVFL = 40  # Linux: every datagram carries the socket's count of datagrams dropped for a full buffer


class UdpSink:
    """A UDP collection server with a collector's receive buffer; ``kernel_drops`` is what its socket lost.

    The forwarder hands the kernel a whole batch of datagrams at once (on a busy host the batches grow), so the
    server needs the buffer a real collector sets, or the kernel drops datagrams before the server reads them.
    """

    def __init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        self.collector = sink_collector()
        self.flows: list = []
        self.port = 0
        self.kernel_drops = 0

    async def bind(self) -> None:
        await self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    async def run(self) -> None:
        while True:
            data, anc, _, addr = await self.sock.recvmsg(65535, socket.CMSG_SPACE(4))
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    self.kernel_drops = struct.unpack("=I", value[:4])[0]
            self.flows += self.collector.handle([(data, addr[0])])

    @property
    def records(self) -> int:
        return sum(len(f) for f in self.flows)


class TcpSink(UdpSink):
    """IPFIX over TCP (RFC 7011 section 10.4): messages back to back, each with its length."""

    def __init__(self) -> None:
        self.collector = sink_collector()
        self.flows = []
        self.connections = 0
        self.listeners = None
        self.port = 0

    async def bind(self) -> None:
        self.listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = self.listeners[0].socket.getsockname()[1]

    async def run(self) -> None:
        await trio.serve_listeners(self.handle, self.listeners)

    async def handle(self, stream) -> None:
        self.connections += 1
        buf = b""
        async for chunk in stream:
            buf += chunk
            while len(buf) >= 4:
                version, length = struct.unpack_from(">HH", buf)
                assert version == 10 and length >= 16
                if len(buf) < length:
                    break
                msg, buf = buf[:length], buf[length:]
                self.flows += self.collector.handle([(msg, "127.0.0.1")])


async def test_replication_to_two_udp_and_one_tcp_server(make_app):
    sinks = {"ipfix-udp": UdpSink(), "v9-udp": UdpSink(), "ipfix-tcp": TcpSink()}
    async with trio.open_nursery() as outer:
        for s in sinks.values():
            await s.bind()
            outer.start_soon(s.run)
        forward = [{"address": "127.0.0.1", "port": sinks["ipfix-udp"].port, "version": 10},
                   {"address": "127.0.0.1", "port": sinks["v9-udp"].port, "version": 9, "transport": "udp"},
                   {"address": "127.0.0.1", "port": sinks["ipfix-tcp"].port, "version": 10, "transport": "tcp"}]
        app = make_app({"services": {"flow-collector": {
            "listen": [{"address": "127.0.0.1", "port": 0}, {"address": "::1", "port": 0}],
            "output": {"forward": forward}}}}, plugins=[(collector_plugin, "collector")])
        c = app.pm.get_plugin("flow-collector")
        v4 = sample_records(1500, seed=21)
        v6 = sample_records(700, seed=22)
        async with serve(app) as service:
            l4 = next(x for x in c.listeners if x.listen.address == "127.0.0.1")
            l6 = next(x for x in c.listeners if x.listen.address == "::1")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4, \
                    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
                for sock, dest, recs, mod, ver in ((s4, ("127.0.0.1", l4.port), v4, ipfix, 10),
                                                   (s6, ("::1", l6.port), v6, netflow9, 9)):
                    for k, d in enumerate(mod.factory(EncoderOptions(version=ver)).encode(recs, NOW)):
                        sock.sendto(d, dest)
                        if k % 8 == 7:
                            await trio.sleep(0.002)
            # SIGTERM at once: the collector reads what is queued, forwards it and drains its transports
            await service.stop()
        assert service.code == 0
        assert c.counters["records"] == 2200
        try:
            await wait_until_async(lambda: all(s.records >= 2200 for s in sinks.values()))
        except AssertionError:
            raise AssertionError({n: (s.records, getattr(s, "kernel_drops", 0)) for n, s in sinks.items()}) from None
        outer.cancel_scope.cancel()
    assert sinks["ipfix-tcp"].connections == 1
    for name, sink in sinks.items():
        flows = sink.flows
        assert sink.records == 2200, name
        exporters = exporter_column(flows)
        assert exporters.count("127.0.0.1") == 1500 and exporters.count("::1") == 700, name
        by_exp = {e: np.concatenate([f.data for f in flows if exporter_column([f])[0] == e])
                  for e in ("127.0.0.1", "::1")}
        assert_same_flows(by_exp["127.0.0.1"], v4.data)
        assert_same_flows(by_exp["::1"], v6.data)
        assert {f.exporter for f in flows} == {"127.0.0.1"}  # the datagrams come from the collector itself
        assert not sink.collector.counters.drops, (name, sink.collector.counters.drops)
        assert getattr(sink, "kernel_drops", 0) == 0, name
    stats = {f["server"]: f for f in (fw.stats() for fw in c.outputs.forwarders)}
    assert all(x["records"] == 2200 and x["dropped"] == 0 for x in stats.values()), stats
    assert not c.counters.drops


# ---------------------------------------------------------------------------
# servers that are away: drops counted, the data path never waits


async def test_servers_away_drops_counted_never_blocks():
    closed_udp = free_port("udp")  # nothing listens there: ICMP port unreachable
    closed_tcp = free_port("tcp")
    ocfg = OutputConfig(forward=[Forward("127.0.0.1", closed_udp, 10, "udp"),
                                 Forward("127.0.0.1", closed_tcp, 10, "tcp")])
    c = Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)], output=ocfg), registries=REGISTRIES)
    dgrams = ipfix.factory(EncoderOptions(version=10)).encode(sample_records(400, seed=8), NOW)
    async with trio.open_nursery() as nursery:
        for task in c.outputs.tasks(None):
            await nursery.start(task)
        t0 = time.perf_counter()
        for _ in range(120):  # 48k records
            c.handle([(d, "192.0.2.1") for d in dgrams])
            await trio.sleep(0)
        elapsed = time.perf_counter() - t0
        c.outputs.tick()
        await c.outputs.flush_forwarders(0.3)
        nursery.cancel_scope.cancel()
    assert c.counters["records"] == 48000
    assert elapsed < 10
    drops = {r: n for (s, r), n in c.counters.drops.items() if s == "forward"}
    udp = [n for r, n in drops.items() if "udp:" in r]
    tcp = {r.split(" ")[0]: n for r, n in drops.items() if "tcp:" in r}
    assert sum(udp) > 0  # refused (and nothing else is lost silently)
    assert tcp["shutdown"] == 120  # one 64 KiB stream message per batch, held in the backlog, lost at shutdown
    fw_udp, fw_tcp = c.outputs.forwarders
    assert fw_udp.stats()["records"] == fw_tcp.stats()["records"] == 48000


def test_forwarder_v9_times_exact_for_old_and_new_flows():
    """v9 FIRST/LAST_SWITCHED are relative to an origin the forwarder picks: exact ms for every batch."""
    fw = Forwarder(Forward("127.0.0.1", 9, 9, "udp"), registries=REGISTRIES)
    sent = []
    fw.transport.send_nowait = lambda payloads: sent.extend(payloads)
    sink = sink_collector()
    for seed, shift in ((1, 0), (2, -86400 * 10**9), (3, 3600 * 10**9)):
        recs = sample_records(200, seed=seed)
        recs.data["first_ns"] += shift
        recs.data["last_ns"] += shift
        src = sink_collector().handle([(d, "192.0.2.1") for d in ipfix.factory(EncoderOptions()).encode(recs, NOW)])
        sent.clear()
        fw.send(src, NOW + shift)
        got = sink.handle([(d, "127.0.0.1") for d in sent])
        assert_same_flows(np.concatenate([f.data for f in got]), recs.data)
        assert set(exporter_column(got)) == {"192.0.2.1"}


def test_scale_counts_multiplies_by_the_sampling_interval():
    fw = Forwarder(Forward("127.0.0.1", 9, 10, "udp", scale_counts=True), registries=REGISTRIES)
    sent = []
    fw.transport.send_nowait = lambda payloads: sent.extend(payloads)
    recs = sample_records(100, seed=9)
    src = sink_collector().handle([(d, "192.0.2.1") for d in ipfix.factory(
        EncoderOptions(sampling_interval=100)).encode(recs, NOW)])
    fw.send(src, NOW)
    got = np.concatenate([f.data for f in sink_collector().handle([(d, "127.0.0.1") for d in sent])])
    assert sorted(got["packets"].tolist()) == sorted((recs.data["packets"] * 100).tolist())


def test_show_lists_files_and_forwarders(make_app, tmp_path):
    app = make_app({"services": {"flow-collector": {
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "output": {"msgpack": str(tmp_path / "f.mp"), "rotate": {"seconds": 60},
                   "forward": [{"address": "127.0.0.1", "port": 9, "version": 9}]}}}},
        plugins=[(collector_plugin, "collector")])
    c = app.pm.get_plugin("flow-collector")
    c.handle([(d, "192.0.2.1") for d in ipfix.factory(EncoderOptions()).encode(sample_records(10), NOW)], now_ns=NOW)
    cmd, rest = app.registries.commands.resolve(["show", "services", "flow-collector"])
    data = cmd.fn(app, rest)
    assert data["outputs"]["files"][0]["records"] == 10
    fwd = data["outputs"]["forward"][0]
    assert fwd["server"] == "v9+udp:127.0.0.1:9" and fwd["records"] == 10
    text = cmd.formatter(data)
    assert "msgpack output:" in text and "Forwarding to v9+udp:127.0.0.1:9" in text
    c.outputs.close_files()

"""The core exporter and the open registries: encoders by declared version, transports validated against
what is registered (with a third party's own keys), the sources' declared clock."""

from __future__ import annotations

import socket

import structlog
import trio

from flowplane.api import (
    Counters,
    EncoderOptions,
    EncoderRegistry,
    EncoderType,
    Exporter,
    FlowRecords,
    TransportOptions,
    TransportType,
    hookimpl,
)
from flowplane.config import Config
from flowplane.testing import plugin_registries, write_pcap

from frames import eth_ipv4_udp

SAMPLING = """\
system: {{hardware-profile: generic-linux}}
interfaces:
  replay0: {{source: pcap, file: {pcap}, family any: {{filter input: all}}}}
firewall:
  family any:
    filter all:
      term t:
        then: {{sample: true, accept: true}}
forwarding-options:
  sampling:
    family inet:
      output:
        flow-server 127.0.0.1: {server}
services:
  flow-monitoring:
    version-ipfix:
      template t: {{ipv4-template: true}}
"""


class MemoryTransport:
    """A complete (if tiny) transport: keeps what it is given, in memory."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.counters = Counters("memory")
        self.on_connect = None
        self.sent: list[bytes] = []

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.on_connect is not None:
            self.sent += self.on_connect()
        await trio.sleep_forever()

    def send_nowait(self, payloads: list[bytes]) -> None:
        self.sent += payloads
        self.counters.inc("packets", len(payloads))

    async def flush(self, deadline_s: float) -> bool:
        return True


def _validate_memory(options: dict, path: tuple):
    from flowplane.api import ConfigIssue, check_str

    if "shelf" in options:
        return check_str(options["shelf"], path + ("shelf",))
    return [ConfigIssue(path, "transport memory needs 'shelf: NAME'")]


class MemoryPlugin:
    @hookimpl
    def flowplane_register_transports(self, register):
        register("memory", TransportType("memory", MemoryTransport, help="in memory", keys=("shelf",),
                                         validate=_validate_memory))


def _config(tmp_path, server: str) -> Config:
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    path.write_text(SAMPLING.format(pcap=pcap, server=server))
    return Config.load(str(path))


def test_encoders_are_found_by_the_versions_they_declare():
    reg = plugin_registries().encoders
    assert {v: reg.for_version(v).name for v in (5, 8, 9, 10)} == {5: "v5", 8: "v8", 9: "v9", 10: "ipfix"}
    assert reg.for_version(11) is None and reg.versions() == [5, 8, 9, 10]
    mine = EncoderRegistry()
    mine.register("ipfix-ng", EncoderType("ipfix-ng", (10, 11), lambda o: None))
    assert mine.for_version(11).name == "ipfix-ng"


def test_unknown_transport_is_rejected_with_the_registered_list(make_app, tmp_path):
    cfg = _config(tmp_path, "{port: 4739, transport: tpc, version-ipfix: {template: t}}")
    [err] = make_app(cfg, configure=False).validate(cfg)
    assert "transport: unknown transport 'tpc' (did you mean 'tcp'?); expected one of: tcp, udp" in err, err


def test_stream_transport_needs_an_encoder_that_streams(make_app, tmp_path):
    cfg = _config(tmp_path, "{port: 4739, transport: tcp, version: 5}")
    errors = make_app(cfg, configure=False).validate(cfg)
    assert any("version 5 cannot be framed on byte-stream transport tcp" in e for e in errors), errors


def test_collector_forward_transport_checked_against_the_registry(make_app):
    data = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "output": {
        "forward": [{"address": "127.0.0.1", "port": 4739, "transport": "udpp"}]}}}}
    cfg = Config.from_text(__import__("yaml").safe_dump(data))
    errors = make_app(cfg, configure=False).validate(cfg)
    assert any("unknown transport 'udpp' (did you mean 'udp'?); expected one of: tcp, udp" in e for e in errors)


async def test_third_party_transport_selected_by_config_with_its_own_keys(make_app, tmp_path):
    plugins = [(MemoryPlugin(), "memory")]
    bad = _config(tmp_path, "{port: 1, transport: memory, version-ipfix: {template: t}}")
    assert any("transport memory needs 'shelf: NAME'" in e
               for e in make_app(bad, configure=False, plugins=plugins).validate(bad))
    unknown_key = _config(tmp_path, "{port: 1, transport: udp, shelf: a, version-ipfix: {template: t}}")
    assert any("shelf" in e for e in make_app(unknown_key, configure=False, plugins=plugins).validate(unknown_key))
    cfg = _config(tmp_path, "{port: 1, transport: memory, shelf: top, version-ipfix: {template: t}}")
    app = make_app(cfg, configure=False, plugins=plugins)
    assert app.validate(cfg) == []
    app.configure()
    (exp,) = app.pm.get_plugin("flow-monitor").engines["(default sampling)"].all_exporters
    assert isinstance(exp.transport, MemoryTransport) and exp.transport.options.options == {"shelf": "top"}
    async with trio.open_nursery() as nursery:
        await nursery.start(exp.run)
        assert exp.transport.sent  # the encoder's templates went first, on connect
        nursery.cancel_scope.cancel()


class _Broken:
    def encode(self, records, now_ns):
        raise ValueError("bad record")

    def templates(self, now_ns):
        return []

    def options_data(self, now_ns):
        return []

    def reset_templates(self):
        pass


def test_exporter_counts_encoder_failures_and_logs_once():
    t = MemoryTransport(TransportOptions("127.0.0.1", 9))
    exp = Exporter("x/127.0.0.1:9", _Broken(), t)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert exp.export(FlowRecords.empty(2), 0) is False
    assert exp.counters["encode_errors"] == 3 and exp.counters.drops[("export", "encode_error")] == 6
    assert [e["event"] for e in logs] == ["encode_failed"]
    assert exp.stats()["encode_errors"] == 3 and not t.sent


async def test_exporter_flush_counts_what_a_server_away_leaves():
    """A TCP server that never answers: the exporter waits the short grace, not the drain deadline."""
    regs = plugin_registries()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    enc = regs.encoders.for_version(10).factory(EncoderOptions(stream=True))
    t = regs.transports["tcp"].factory(TransportOptions("127.0.0.1", port, name="away"))
    exp = Exporter("away", enc, t, grace_s=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(exp.run)
        from test_collector import T0, sample_records

        exp.export(sample_records(50, seed=1), T0)
        with trio.fail_after(5):
            left = await exp.flush(60.0)
        nursery.cancel_scope.cancel()
    assert left > 0 and exp.counters.drops[("export", "shutdown")] == left
    assert t.counters["dropped_at_shutdown"] == left


def test_flow_clock_comes_from_the_source_types(make_app, tmp_path):
    cfg = _config(tmp_path, "{port: 4739, version-ipfix: {template: t}}")
    assert make_app(cfg, configure=False).packet_clock is True  # pcap declares clock="packet"
    live = Config.from_text("interfaces: {eth0: {source: af-packet}}")
    assert make_app(live, configure=False).packet_clock is False
    srcs = plugin_registries().sources
    assert (srcs["pcap"].clock, srcs["pcap"].live, srcs["af-packet"].clock, srcs["af-packet"].live) == \
        ("packet", False, "wall", True)

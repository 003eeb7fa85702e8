"""Passive monitoring: a monitoring-only interface feeds a monitoring group; MPLS labels are
stripped so flows are keyed on the inner IP header; cflowd v5 export to a real UDP socket."""

from __future__ import annotations

import struct

import trio

from flowplane.config import Config
from flowplane.control import ControlServer
from flowplane.service import Service
from flowplane.testing import write_pcap

from frames import ETH_MPLS, UDP, eth, eth_ipv4_udp, ipv4, mpls_stack, udp


def _v5_records(datagrams: list[bytes]) -> list[dict]:
    out = []
    for d in datagrams:
        version, count = struct.unpack_from("!HH", d)
        assert version == 5 and len(d) == 24 + 48 * count
        engine_type, engine_id = d[20], d[21]
        for i in range(count):
            r = d[24 + 48 * i: 72 + 48 * i]
            src, dst = struct.unpack_from("!II", r)
            pkts, octets = struct.unpack_from("!II", r, 16)
            sport, dport = struct.unpack_from("!HH", r, 32)
            out.append({"src": src, "dst": dst, "packets": pkts, "bytes": octets, "sport": sport, "dport": dport,
                        "proto": r[38], "engine": (engine_type, engine_id)})
    return out


async def test_monitoring_group_strips_labels_and_exports_v5(make_app, tmp_path):
    inner = udp(4000, 53, b"q" * 20)
    labelled = [eth(ETH_MPLS, mpls_stack([100 + i % 3, 200]) + ipv4(UDP, inner, src="10.1.1.2", dst="10.0.0.1"))
                for i in range(30)]  # three label stacks, one inner flow
    plain = [eth_ipv4_udp(sport=5000, dport=53) for _ in range(10)]
    pcap = write_pcap(str(tmp_path / "tap.pcap"), labelled + plain)
    sink = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    path = tmp_path / "c.yaml"
    path.write_text(f"""\
interfaces:
  tap0:
    source: pcap
    file: {pcap}
    monitoring-only: true
forwarding-options:
  monitoring group1:
    family inet:
      output:
        export-format: cflowd-version-5
        flow-server 127.0.0.1: {{port: {port}}}
        flow-active-timeout: 60
        flow-inactive-timeout: 30
        interface mo-4/0/0.0: {{engine-id: 1, engine-type: 1}}
""")
    app = make_app(Config.load(str(path)))
    assert "export-format" in app.config.get("forwarding-options", "monitoring", "group1", "family", "inet", "output")
    assert await Service(app, exit_on_eof=True, control=False).serve() == 0
    got = []
    with trio.move_on_after(0.5):
        while True:
            got.append(await sink.recv(65535))
    records = _v5_records(got)
    by_port = {r["sport"]: r for r in records}
    assert len(records) == 2  # the labels did not split the inner flow
    assert by_port[4000]["packets"] == 30 and by_port[4000]["bytes"] == 30 * (20 + 8 + 20)
    assert by_port[5000]["packets"] == 10
    assert {r["engine"] for r in records} == {(1, 1)}
    reply = ControlServer(app, "").handle({"cmd": ["show", "passive-monitoring", "flow"]})
    assert reply["ok"] and "Service name: group1" in reply["text"] and "Flow packets: 40" in reply["text"]


def test_group_needs_monitoring_only_interfaces(make_app, tmp_path):
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    cfg = Config.from_text(f"""\
interfaces:
  eth9: {{source: pcap, file: {pcap}}}
forwarding-options:
  monitoring g:
    input-interfaces: [eth9, eth8]
    family inet:
      output:
        flow-server 127.0.0.1: {{port: 2055, version: 5}}
""", path="p.yaml")
    errors = make_app(cfg, configure=False).validate(cfg)
    text = "\n".join(errors)
    assert "interface 'eth9' is not a monitoring-only interface (set 'monitoring-only: true')" in text
    assert "interface 'eth8' is not configured (did you mean 'eth9'?)" in text

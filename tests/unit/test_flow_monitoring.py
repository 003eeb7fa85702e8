"""forwarding-options sampling: validation against the profile, and the engine through a real Service."""

from __future__ import annotations

import struct

import pytest
import trio

from flowplane.config import Config
from flowplane.service import Service
from flowplane.testing import write_pcap

from frames import eth_ipv4_tcp, eth_ipv4_udp, eth_ipv6_tcp

BASE = """\
system:
  hardware-profile: {profile}
interfaces:
  replay0:
    source: pcap
    file: {pcap}
    family any:
      filter input: all
firewall:
  family any:
    filter all:
      term t:
        then: {{sample: true, accept: true}}
"""


def _errors(make_app, tmp_path, sampling: str, profile: str = "generic-linux", extra: str = "") -> list[str]:
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    path.write_text(BASE.format(profile=profile, pcap=pcap) + sampling + extra)
    cfg = Config.load(str(path))
    app = make_app(cfg, configure=False)
    return app.validate(cfg)


def test_validation_collects_every_problem(make_app, tmp_path):
    errors = _errors(make_app, tmp_path, """\
forwarding-options:
  sampling:
    input: {rate: 0, algorithm: sometimes}
    family inet:
      output:
        flow-server 127.0.0.1: {port: 2055, version: 9}
        flow-server 127.0.0.2: {port: 2055, version-ipfix: {template: ipfx}}
        flow-server not-an-ip: {port: 1, version: 5}
    family inet6:
      output:
        flow-server ::1: {port: 2055, version: 5}
services:
  flow-monitoring:
    version-ipfix:
      template ipfix: {ipv4-template: true}
""")
    text = "\n".join(errors)
    assert "sampling input rate: 0 is below the minimum 1" in text
    assert "sampling input algorithm: unknown value 'sometimes'" in text
    assert "version 9 needs a template: write 'version9: {template: NAME}'" in text
    assert ("template 'ipfx' is not defined under 'services flow-monitoring version-ipfix template' "
            "(did you mean 'ipfix'?)") in text
    assert "expected an IPv4 or IPv6 address for the flow server, got 'not-an-ip'" in text
    assert "NetFlow v5 carries IPv4 only: use version9 or version-ipfix under family inet6" in text
    assert all(":" in e.split(" ")[0] for e in errors)  # every error has file:line:col


def test_profile_limits_are_named(make_app, tmp_path):
    servers = "\n".join(f"        flow-server 127.0.0.{i}: {{port: 4739, version-ipfix: {{template: t}}}}"
                        for i in range(1, 6))
    errors = _errors(make_app, tmp_path, f"""\
forwarding-options:
  sampling:
    family inet:
      output:
{servers}
        flow-server 127.0.1.1: {{port: 2055, version: 5}}
services:
  flow-monitoring:
    version-ipfix:
      template t: {{ipv4-template: true}}
""", profile="mx-mpc")
    text = "\n".join(errors)
    assert "6 flow servers exceed the maximum 4 (hardware profile limit flow_servers_per_family)" in text
    assert ("export version 5 is not supported by this hardware profile "
            "(hardware profile limit export_versions: 9, 10)") in text


def test_sample_without_sampling_is_an_error(make_app, tmp_path):
    errors = _errors(make_app, tmp_path, "")
    assert any("'sample' needs 'forwarding-options sampling'" in e for e in errors)


def _ipfix_records(datagrams: list[bytes]) -> tuple[int, list[int]]:
    """Data records (flows) and samplingInterval values in IPFIX messages (independent minimal parser)."""
    templates: dict[int, list[tuple[int, int]]] = {}
    flows, intervals = 0, []
    for d in datagrams:
        version, length = struct.unpack_from("!HH", d)
        assert version == 10 and length == len(d)
        off = 16
        while off < length:
            set_id, set_len = struct.unpack_from("!HH", d, off)
            body, end = off + 4, off + set_len
            if set_id in (2, 3):
                p = body
                while p + 4 <= end:
                    tid, count = struct.unpack_from("!HH", d, p)
                    p += 4
                    scope = 0
                    if set_id == 3:
                        (scope,) = struct.unpack_from("!H", d, p)
                        p += 2
                    fields = []
                    for _ in range(count):
                        ie, flen = struct.unpack_from("!HH", d, p)
                        p += 4
                        if ie & 0x8000:
                            p += 4
                        fields.append((ie & 0x7FFF, flen))
                    templates[tid] = fields
                    if count == 0:
                        break
            elif set_id >= 256:
                fields = templates[set_id]
                rec_len = sum(f[1] for f in fields)
                n = (set_len - 4) // rec_len
                for i in range(n):
                    p = body + i * rec_len
                    for ie, flen in fields:
                        if ie == 34 and flen == 4:
                            intervals.append(struct.unpack_from("!I", d, p)[0])
                        p += flen
                if not any(ie == 34 for ie, _ in fields):
                    flows += n
            off = end
    return flows, intervals


@pytest.mark.parametrize("rate, algorithm", [(1, "deterministic"), (10, "deterministic"), (10, "random")])
async def test_sampled_flows_exported_with_the_interval(make_app, tmp_path, rate, algorithm):
    frames = ([eth_ipv4_udp(sport=1000 + i % 50, dport=53) for i in range(2000)]
              + [eth_ipv4_tcp(sport=2000 + i % 20) for i in range(1000)]
              + [eth_ipv6_tcp(sport=3000 + i % 10) for i in range(1000)])
    pcap = write_pcap(str(tmp_path / "in.pcap"), frames)
    collector = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await collector.bind(("127.0.0.1", 0))
    port = collector.getsockname()[1]
    cfg = BASE.format(profile="generic-linux", pcap=pcap) + f"""\
forwarding-options:
  sampling:
    input: {{rate: {rate}, algorithm: {algorithm}}}
    family inet:
      output:
        flow-server 127.0.0.1: {{port: {port}, version-ipfix: {{template: t}}}}
        scale-counts: true
    family inet6:
      output:
        flow-server 127.0.0.1: {{port: {port}, version-ipfix: {{template: t}}}}
services:
  flow-monitoring:
    version-ipfix:
      template t: {{ipv4-template: true, ipv6-template: true}}
"""
    path = tmp_path / "c.yaml"
    path.write_text(cfg)
    app = make_app(Config.load(str(path)))
    code = await Service(app, exit_on_eof=True, control=False).serve()
    assert code == 0
    got = []
    while True:
        try:
            got.append(collector.recv_nowait(65535) if hasattr(collector, "recv_nowait") else await _recv(collector))
        except (BlockingIOError, trio.TooSlowError):
            break
    flows, intervals = _ipfix_records(got)
    fm = app.pm.get_plugin("flow-monitor")
    engine = fm.engines["(default sampling)"]
    assert intervals and set(intervals) == {rate}
    sampled = engine.counters["sampled"]
    if rate == 1:
        assert flows == 50 + 20 + 10 and sampled == 4000
    elif algorithm == "deterministic":
        assert sampled == 400
    else:
        sd = (4000 * 0.1 * 0.9) ** 0.5
        assert abs(sampled - 400) < 5 * sd
    exported = sum(e.counters["records"] for e in engine.all_exporters)
    assert exported == flows


async def _recv(sock):
    with trio.fail_after(0.5):
        return await sock.recv(65535)

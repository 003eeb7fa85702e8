"""A reload replaces the flow engine: the old caches are flushed and exported, the new
exporters' transports run (their templates go out), nothing is lost or counted twice."""

from __future__ import annotations

import trio

from flowplane.config import Config
from flowplane.testing import serve, wait_until_async, write_pcap

from frames import eth_ipv4_udp
from test_flow_monitoring import _ipfix_records

CONFIG = """\
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
forwarding-options:
  sampling:
    input: {{rate: 1, algorithm: deterministic}}
    family inet:
      output:
        flow-server 127.0.0.1: {{port: {port}, version-ipfix: {{template: t}}}}
        flow-active-timeout: {active}
        flow-inactive-timeout: 600
services:
  flow-monitoring:
    version-ipfix:
      template t: {{ipv4-template: true, observation-domain-id: {domain}}}
"""


async def _drain(sock) -> list[bytes]:
    got = []
    with trio.move_on_after(0.3):
        while True:
            got.append(await sock.recv(65535))
    return got


async def test_reload_flushes_old_engine_and_starts_new_exporters(make_app, tmp_path):
    pcap = write_pcap(str(tmp_path / "in.pcap"), [eth_ipv4_udp(sport=1000 + i % 40) for i in range(400)])
    sink = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(pcap=pcap, port=port, active=600, domain=1))
    app = make_app(Config.load(str(path)))
    async with serve(app) as service:
        await service.pipeline.finite_done.wait()
        old = app.pm.get_plugin("flow-monitor")
        await wait_until_async(lambda: sum(len(c) for e in old.engines.values() for c in e.caches.values()) == 40)
        assert sum(len(c) for e in old.engines.values() for c in e.caches.values()) == 40
        before = await _drain(sink)  # the first templates/options only: flows are still cached
        assert _ipfix_records(before)[0] == 0

        path.write_text(CONFIG.format(pcap=pcap, port=port, active=300, domain=2))
        assert await service.reload() is True
        new = app.pm.get_plugin("flow-monitor")
        assert new is not old and not app.pm.is_registered(old)
        flushed = await _drain(sink)
        assert _ipfix_records(flushed)[0] == 40  # the old caches were exported, once
        assert old.engines["(default sampling)"].counters["flows_shutdown"] == 40

        with trio.fail_after(5):  # the new engine's timer ticks: its exporter sends its templates (domain 2)
            fresh = [await sink.recv(65535)]
        fresh += await _drain(sink)
        assert fresh and all(int.from_bytes(d[12:16], "big") == 2 for d in fresh)
        await service.stop()
    assert new.engines["(default sampling)"].counters["flows_shutdown"] == 0  # nothing counted twice

"""Collector re-export (replication) accepted by nfcapd: the re-exported v9 / IPFIX stream stored and counted
by nfdump."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
import trio

from flowplane.export import EncoderOptions
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen
from flowplane.plugins.collector.forward import Forward
from flowplane.plugins.collector.output import OutputConfig
from flowplane.plugins.encoders import ipfix
from flowplane.testing import free_port, wait_until_async

from test_collector import sample_records
from test_collector_forward import NOW, REGISTRIES
from udpsock import udp_bound, udp_drained


@pytest.mark.peer
@pytest.mark.parametrize("version", [10, 9])
async def test_nfcapd_accepts_the_reexported_stream(tmp_path, version):
    if shutil.which("nfcapd") is None or shutil.which("nfdump") is None:
        pytest.skip("missing nfcapd/nfdump (apt-get install -y nfdump)")
    port = free_port()
    p = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(tmp_path), "-t", "3600"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await wait_until_async(lambda: udp_bound(port) or p.poll() is not None, what="nfcapd to bind")
        assert p.poll() is None, p.stdout.read()
        ocfg = OutputConfig(forward=[Forward("127.0.0.1", port, version, "udp")])
        c = Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)], output=ocfg), registries=REGISTRIES)
        v4, v6 = sample_records(300, seed=31, v4_only=True), sample_records(200, seed=32)
        async with trio.open_nursery() as nursery:
            for task in c.outputs.tasks(None):
                await nursery.start(task)
            for recs, exporter in ((v4, "192.0.2.1"), (v6, "2001:db8::1")):
                for d in ipfix.factory(EncoderOptions()).encode(recs, NOW):
                    c.handle([(d, exporter)])
                    await trio.sleep(0.002)  # pacing: stay below nfcapd's receive buffer
            await c.outputs.flush_forwarders(2.0)
            nursery.cancel_scope.cancel()
        await wait_until_async(lambda: udp_drained(port), what="nfcapd to read every datagram")
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    r = subprocess.run(["nfdump", "-R", str(tmp_path), "-q", "-o", "csv"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "TZ": "UTC"})
    rows = [x for x in r.stdout.splitlines() if x and x[0].isdigit()]
    assert len(rows) == 500, r.stdout[-2000:] + r.stderr
    r = subprocess.run(["nfdump", "-R", str(tmp_path), "-q", "-N", "-o", "fmt:%byt %pkt"], capture_output=True,
                       text=True, timeout=60)
    cols = [line.split() for line in r.stdout.splitlines() if line.strip()]
    assert sum(int(b) for b, _ in cols) == int(v4.data["bytes"].sum() + v6.data["bytes"].sum())
    assert sum(int(p) for _, p in cols) == int(v4.data["packets"].sum() + v6.data["packets"].sum())

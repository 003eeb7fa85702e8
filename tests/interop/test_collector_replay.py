"""Collector against other software: flowplane's own exporter (``flowplane replay``) and nfcapd/nfdump.

* Round trip: ``flowplane replay etc/samples/sample.pcap --export 127.0.0.1:PORT --version 5|9|10`` into
  a running collector gives back exactly the flows exported (count from replay's own summary) and,
  for v9/IPFIX with big timeouts, the capture's IP packet and byte totals.
* nfdump: the corpus NetFlow/IPFIX captures replayed to nfcapd and to our collector store the same
  record counts (skipped when nfcapd/nfdump are missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.plugins.collector.pcap import udp_payloads
from flowplane.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_collector import EXPECTED, corpus_groups, needs_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "etc" / "samples" / "sample.pcap"
TRUTH = json.loads((REPO / "etc" / "samples" / "sample.pcap.truth.json").read_text())
FLOWPLANE = [sys.executable, "-m", "flowplane"]


async def _collector(make_app, nursery):
    cfg = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "flow-ring": 100}}}
    app = make_app(cfg, plugins=[(collector_plugin, "collector")])
    service = Service(app, control=False)
    nursery.start_soon(service.serve)
    await service.ready.wait()
    return app, service, app.pm.get_plugin("flow-collector")


@pytest.mark.parametrize("version", [5, 9, 10])
async def test_round_trip_flowplane_replay(make_app, version):
    got = {"packets": 0, "bytes": 0, "flows": 0, "v4_packets": 0}

    def count(flows):
        for f in flows:
            got["flows"] += len(f)
            got["packets"] += int(f.data["packets"].sum())
            got["bytes"] += int(f.data["bytes"].sum())
            got["v4_packets"] += int(f.data["packets"][f.data["af"] == 4].sum())

    async with trio.open_nursery() as nursery:
        app, service, c = await _collector(make_app, nursery)
        c.subscribers.append(count)
        port = c.listeners[0].port
        r = await trio.run_process(FLOWPLANE + ["replay", str(SAMPLE), "--export", f"127.0.0.1:{port}",
                                                "--version", str(version), "--active-timeout", "600",
                                                "--inactive-timeout", "600", "--tcp-end-grace", "600"],
                                   capture_stdout=True, capture_stderr=True, check=False)
        assert r.returncode == 0, r.stderr.decode()
        m = re.search(r"(\d+) flows in (\d+) datagrams", r.stderr.decode())
        assert m, r.stderr.decode()
        flows, dgrams = int(m.group(1)), int(m.group(2))
        with trio.fail_after(10):
            while c.counters["datagrams"] < dgrams:
                await trio.sleep(0.05)
        await trio.sleep(0.1)
        c.tick()
        await service._events_send.send("SIGTERM")
    assert c.counters["datagrams"] == dgrams
    assert not [k for k in c.counters.drops if k[0] == "decode"], dict(c.counters.drops)
    assert got["flows"] == flows
    if version == 5:
        assert got["packets"] == got["v4_packets"] == TRUTH["ipv4_packets"]
    else:
        assert got["packets"] == TRUTH["ip_packets"]
        assert got["bytes"] == TRUTH["ip_bytes"]


# ---------------------------------------------------------------------------
# nfcapd / nfdump on the same corpus replay


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (apt-get install -y nfdump)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nfcapd_count(tmp_path, payloads: list[bytes]) -> int:
    port = _free_port()
    d = tmp_path / f"nfc{port}"
    d.mkdir()
    p = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(d), "-t", "3600"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for x in payloads:
                s.sendto(x, ("127.0.0.1", port))
                time.sleep(0.001)
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    r = subprocess.run(["nfdump", "-R", str(d), "-q", "-o", "csv"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TZ": "UTC"})
    rows = [x for x in r.stdout.splitlines() if x and x[0].isdigit()]
    return len(rows)


@pytest.mark.peer
@needs_corpus
@pytest.mark.parametrize("name", ["akvorado_nfv5", "akvorado_nat", "pmacct_100-IPFIXv10-CISCO",
                                  "pmacct_101-NFv9-CISCO-cust_primitives",
                                  "pmacct_104-IPFIXv10-IPv6-CISCO-sampling_option", "ndpi_netflowv9"])
def test_same_counts_as_nfdump(tmp_path, name):
    _need("nfcapd", "nfdump")
    from test_collector import make_collector

    payloads = [d.payload for f in corpus_groups()[name] for d in udp_payloads(str(f))]
    ours = make_collector()
    n = sum(len(x) for p in payloads for x in ours.handle([(p, "127.0.0.1")]))
    assert n == EXPECTED[name]
    assert _nfcapd_count(tmp_path, payloads) == n

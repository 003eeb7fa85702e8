"""The collector's NATS JetStream output (plugins/collector/bus.py) against a real ``nats-server -js``.

Two collectors publish to one stream; the server is stopped (SIGTERM) mid-run, the flows
sent meanwhile go to each collector's spool (counted), the server is restarted on the same
store directory, the spools are replayed and removed, and a JetStream consumer checks that
every flow arrived exactly once (Msg-Id de-duplication).  Loopback only; bounded in time.
The spool and config parts run without a server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time

import msgpack
import numpy as np
import pytest

from flowplane.export import EncoderOptions
from flowplane.flows import FLOW_DTYPE, FlowRecords
from flowplane.plugins.collector import bus as busmod
from flowplane.plugins.collector.bus import Spool, subject_for
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import parse
from flowplane.plugins.encoders import ipfix
from flowplane.testing import free_port, wait_until

NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server")
                                              else None)
T0 = 1_700_000_000_000_000_000
MAPPED = 0xFFFF_0000_0000


# ---------------------------------------------------------------------------
# without a server


def test_subject_per_exporter():
    assert subject_for("flows", "192.0.2.1") == "flows.192_0_2_1"
    assert subject_for("flows", "2001:db8::1") == "flows.2001_db8__1"


def test_config_and_missing_client(monkeypatch, tmp_path):
    data = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "output": {
        "nats": {"url": "nats://127.0.0.1:4222", "stream": "FLOWS", "subject-prefix": "flows",
                 "spool": {"path": str(tmp_path), "max-bytes": 100000000}}}}}}
    cfg, issues = parse(data)
    assert not issues and cfg.output.nats.stream == "FLOWS" and cfg.output.nats.spool_path == str(tmp_path)
    bad = {"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "output": {
        "nats": {"url": "http://x", "stream": "A B", "spool": {"max-bytes": 1}, "bogus": 1}}}}}
    _, issues = parse(bad)
    where = {i.path[-1] for i in issues}
    assert {"url", "stream", "max-bytes"} <= where and len(issues) >= 4
    monkeypatch.setattr(busmod, "nats_available", lambda: False)
    _, issues = parse(data)
    assert any("install flowplane[nats]" in i.message for i in issues)


def test_collect_cli_output_nats():
    from flowplane.plugins.collector.cli import parse_output

    assert parse_output("nats:nats://127.0.0.1:4222") == ("nats", {"url": "nats://127.0.0.1:4222"})
    assert parse_output("nats:127.0.0.1:4222") == ("nats", {"url": "nats://127.0.0.1:4222"})


def test_spool_order_limit_and_removal(tmp_path):
    sp = Spool(str(tmp_path / "spool"), max_bytes=64 * 1024)
    recs = [(f"i-{k}", "flows.x", bytes([k % 256]) * 1000, 10) for k in range(200)]
    for k in range(0, 200, 10):
        sp.append(recs[k:k + 10])
    assert sp.fsyncs >= 20
    assert sp.bytes <= 64 * 1024 + sp.segment_bytes  # bounded: the oldest segments went
    assert sp.dropped_batches > 0 and sp.dropped_batches + len(sp) == 200
    assert sp.counters.drops[("output", "nats-spool-full")] == sp.dropped_flows == sp.dropped_batches * 10
    first_kept = 200 - len(sp)
    seen = []
    while True:
        got = sp.peek(7)
        if not got:
            break
        for rec, end in got:
            seen.append(rec[0])
            sp.acked(rec, end)
    assert seen == [f"i-{k}" for k in range(first_kept, 200)]  # in order, oldest first
    assert sp.pending() == (0, 0) and not os.listdir(tmp_path / "spool")  # removed after replay
    # a spool left by a previous run (torn last record) is found again
    sp2 = Spool(str(tmp_path / "s2"), max_bytes=1 << 20)
    sp2.append(recs[:5])
    sp2.close()
    name = os.path.join(sp2.path, os.listdir(sp2.path)[0])
    with open(name, "ab") as f:
        f.write(b"\0\0\1\0abc")
    sp3 = Spool(sp2.path, max_bytes=1 << 20)
    sp3.open()
    assert len(sp3) == 5 and sp3.torn == 1
    assert [r[0] for r, _ in sp3.peek(10)] == [f"i-{k}" for k in range(5)]


# ---------------------------------------------------------------------------
# against nats-server

needs_server = pytest.mark.skipif(NATS_SERVER is None, reason="nats-server is not installed (apt-get install "
                                                              "nats-server)")


class Server:
    def __init__(self, port: int, store: str, log: str) -> None:
        self.port, self.store, self.log = port, store, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                          "-sd", self.store], stdout=logf, stderr=subprocess.STDOUT)

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(up, 10, what="nats-server to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def records(start: int, n: int) -> FlowRecords:
    """*n* flows numbered from *start*: the number is in (sport, dport) so the consumer can tell them apart."""
    boot = T0 - 3600 * 10**9
    d = np.zeros(n, dtype=FLOW_DTYPE)
    k = np.arange(start, start + n, dtype=np.uint64)
    d["af"] = 4
    d["src_lo"] = np.uint64(MAPPED) | (np.uint64(0x0A000000) + k)
    d["dst_lo"] = np.uint64(MAPPED) | np.uint64(0xC0000202)
    d["proto"] = 17
    d["sport"] = 1000 + k % 60000
    d["dport"] = k // 60000 + 1
    d["packets"] = 1 + k
    d["bytes"] = (1 + k) * 100
    d["first_ns"] = boot + 1000 * 10**6
    d["last_ns"] = boot + 2000 * 10**6
    return FlowRecords(d, boot_ns=boot)


def make_collector(url: str, spool: str, instance: str) -> Collector:
    cfg, issues = parse({"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "output": {
        "nats": {"url": url, "stream": "FLOWS", "subject-prefix": "flows", "ack-timeout": 1,
                 "instance-id": instance, "spool": {"path": spool, "max-bytes": 10_000_000}}}}}})
    assert not issues, issues
    return Collector(cfg)


def feed(c: Collector, enc, exporter: str, start: int, n: int, chunk: int = 25) -> None:
    for s in range(start, start + n, chunk):
        for dgram in enc.encode(records(s, min(chunk, start + n - s)), T0):
            c.handle([(dgram, exporter)])


async def consume(url: str) -> tuple[list[dict], list[str], int]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("FLOWS")
        total = info.state.messages
        sub = await js.pull_subscribe("flows.>", durable=None)
        rows, ids = [], []
        while len(ids) < total:
            msgs = await sub.fetch(min(100, total - len(ids)), timeout=5)
            for m in msgs:
                ids.append(m.headers.get("Nats-Msg-Id"))
                for r in msgpack.unpackb(m.data, raw=False):
                    r["_subject"] = m.subject
                    rows.append(r)
                await m.ack()
        # the duplicate window: the same Msg-Id again is acked as a duplicate and not stored
        ack = await js.publish(msgs[-1].subject, msgs[-1].data, headers={"Nats-Msg-Id": ids[-1]})
        assert ack.duplicate
        assert (await js.stream_info("FLOWS")).state.messages == total
        return rows, ids, total
    finally:
        await nc.close()


@needs_server
def test_two_collectors_server_restart_exactly_once(tmp_path):
    port = free_port("tcp")
    url = f"nats://127.0.0.1:{port}"
    server = Server(port, str(tmp_path / "store"), str(tmp_path / "nats.log"))
    server.start()
    exporters = {"a": "192.0.2.1", "b": "2001:db8::1"}
    cols = {k: make_collector(url, str(tmp_path / f"spool-{k}"), f"col-{k}") for k in exporters}
    encs = {k: ipfix.factory(EncoderOptions(version=10)) for k in exporters}
    try:
        for c in cols.values():
            c.outputs.bus.start()
        wait_until(lambda: all(c.outputs.bus.connected for c in cols.values()), 10, what="both collectors connected")
        # phase 1: the bus is there
        for k, c in cols.items():
            feed(c, encs[k], exporters[k], 0, 200)
        wait_until(lambda: all(c.outputs.bus.published_flows == 200 for c in cols.values()), 15, what="phase 1 acked")
        # phase 2: the bus is away -> the spool, counted; the listener path is not blocked
        server.stop()
        wait_until(lambda: not any(c.outputs.bus.connected for c in cols.values()), 10, what="disconnect noticed")
        for k, c in cols.items():
            t = time.monotonic()
            feed(c, encs[k], exporters[k], 200, 300)
            assert time.monotonic() - t < 2.0  # handing batches over never waits for the bus
        wait_until(lambda: all(c.outputs.bus.spool.pending()[1] == 300 for c in cols.values()), 10, what="spooled")
        for k, c in cols.items():
            st = c.outputs.bus.stats()
            assert st["spool"]["written_flows"] == 300 and st["spool"]["fsyncs"] >= 1
            assert st["published_flows"] == 200
            assert [n for n in os.listdir(tmp_path / f"spool-{k}") if n.endswith(".bin")]
        # phase 3: the bus is back (same store): the spools are replayed in order and removed
        server.start()
        wait_until(lambda: all(c.outputs.bus.published_flows == 500 for c in cols.values()), 20, what="spool replayed")
        for k, c in cols.items():
            feed(c, encs[k], exporters[k], 500, 100)
        wait_until(lambda: all(c.outputs.bus.published_flows == 600 for c in cols.values()), 15, what="phase 3 acked")
        for k, c in cols.items():
            st = c.outputs.bus.stats()
            assert st["spool"]["replayed_flows"] == 300 and st["spool"]["flows"] == 0
            assert st["queue_dropped_flows"] == 0 and st["spool"]["dropped_flows"] == 0
            assert not [n for n in os.listdir(tmp_path / f"spool-{k}") if n.endswith(".bin")]
        for c in cols.values():
            c.outputs.bus.stop(3.0)
        rows, ids, total = asyncio.run(consume(url))
        assert len(ids) == len(set(ids)) == total  # one message per Msg-Id
        for exp in exporters.values():
            got = [(r["sport"], r["dport"], r["packets"]) for r in rows if r["exporter"] == exp]
            want = [(1000 + i % 60000, i // 60000 + 1, 1 + i) for i in range(600)]
            assert len(got) == 600 and sorted(got) == sorted(want)  # every flow, exactly once
            subjects = {r["_subject"] for r in rows if r["exporter"] == exp}
            assert subjects == {subject_for("flows", exp)}
            # per exporter the stream keeps the order the flows were sent in
            assert [g[2] for g in got] == sorted(g[2] for g in got)
        one = next(r for r in rows if r["exporter"] == "192.0.2.1")
        assert {"src", "dst", "sport", "dport", "proto", "packets", "bytes", "first", "last", "version"} <= set(one)
    finally:
        for c in cols.values():
            c.outputs.bus.stop(1.0)
        server.stop()


@needs_server
def test_shutdown_with_the_bus_away_spools_the_queue(tmp_path):
    port = free_port("tcp")
    url = f"nats://127.0.0.1:{port}"
    c = make_collector(url, str(tmp_path / "spool"), "col-x")  # no server at all
    enc = ipfix.factory(EncoderOptions(version=10))
    feed(c, enc, "192.0.2.9", 0, 50)
    c.outputs.bus.start()
    t = time.monotonic()
    c.outputs.bus.stop(1.0)
    assert time.monotonic() - t < 4.0
    assert c.outputs.bus.spool.pending() == (c.outputs.bus.spool.written_batches, 50)
    # the next run replays it
    server = Server(port, str(tmp_path / "store"), str(tmp_path / "nats.log"))
    server.start()
    try:
        c2 = make_collector(url, str(tmp_path / "spool"), "col-y")
        c2.outputs.bus.start()
        wait_until(lambda: c2.outputs.bus.published_flows == 50, 15, what="left-over spool replayed")
        c2.outputs.bus.stop(2.0)
        assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".bin")]
    finally:
        server.stop()

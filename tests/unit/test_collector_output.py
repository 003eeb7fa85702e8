"""Collector file outputs: JSON lines and msgpack, rotation by size and time, shutdown, write errors, config, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import msgpack
import pytest
import structlog
import trio

import flowplane.plugins.collector as collector_plugin
from flowplane.export import EncoderOptions
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen, parse
from flowplane.plugins.collector.output import FileWriter, Rotate
from flowplane.plugins.encoders import ipfix
from flowplane.testing import free_port, plugin_registries, serve, wait_until

from test_collector import T0, sample_records
from udpsock import udp_drained

STAMPED = re.compile(r"\.(\d{14})(?:\.(\d+))?$")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def flows_of(n: int, seed: int = 1):
    """*n* decoded flows (CollectedFlows), as our collector gives them from our own IPFIX export."""
    recs = sample_records(n, seed=seed)
    enc = ipfix.factory(EncoderOptions(version=10))
    c = Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)]))
    return c.handle([(d, "192.0.2.1") for d in enc.encode(recs, T0 + 4000 * 10**9)])


def rotated(tmp_path, name: str) -> list:
    """The rotated files of *name*, oldest first (by stamp, then .N)."""
    out = []
    for p in tmp_path.iterdir():
        if p.name.startswith(name + ".") and STAMPED.search(p.name):
            m = STAMPED.search(p.name)
            out.append((m.group(1), int(m.group(2) or 0), p))
    return [p for _, _, p in sorted(out)]


def read_jsonl(paths) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


def read_msgpack(paths) -> list[dict]:
    out = []
    for p in paths:
        with open(p, "rb") as fh:
            out += list(msgpack.Unpacker(fh, raw=False))
    return out


# ---------------------------------------------------------------------------
# FileWriter


def test_size_rotation_keeps_every_record_once_and_files_under_the_limit(tmp_path):
    clock = Clock(1_700_000_000.0)
    path = tmp_path / "flows.jsonl"
    w = FileWriter(str(path), "jsonl", Rotate(bytes=4000), clock=clock)
    batches = [flows_of(37, seed=s) for s in range(1, 9)]
    want = []
    for b in batches:
        w.write(b)
        want += [r for f in b for r in f.rows()]
        clock.t += 0.4  # several files per second: .1, .2 ... suffixes
        assert not os.path.exists(path)  # with rotation, PATH itself is never written
    assert os.path.exists(str(path) + ".current")
    w.close()
    assert not os.path.exists(str(path) + ".current")
    files = rotated(tmp_path, "flows.jsonl")
    assert len(files) == w.rotations == len(files) > 5
    assert all(p.stat().st_size <= 4000 for p in files)
    assert all(p.read_text().endswith("\n") for p in files)  # rotation between records, never inside one
    assert read_jsonl(files) == want
    assert w.lines == len(want) and w.errors == 0


def test_time_rotation_on_aligned_boundaries_and_by_the_timer(tmp_path):
    clock = Clock(1_700_000_010.0)  # 2023-11-14 22:13:30 UTC; boundaries every 300 s at :15:00, :20:00 ...
    path = tmp_path / "flows.msgpack"
    w = FileWriter(str(path), "msgpack", Rotate(seconds=300), clock=clock)
    a, b, c = flows_of(5, 1), flows_of(6, 2), flows_of(7, 3)
    w.write(a)
    clock.t = 1_700_000_050.0
    w.write(b)  # same interval: same file
    w.tick()
    assert w.rotations == 0
    clock.t = 1_700_000_100.0  # crossed 22:15:00: the timer rotates without traffic
    w.tick()
    assert w.rotations == 1 and w.fd is None
    clock.t = 1_700_000_101.0
    w.write(c)  # a new file, opened now
    clock.t = 1_700_000_500.0
    w.write(c)  # crossed 22:20:00 in the data path: rotated before this write
    w.close()
    files = rotated(tmp_path, "flows.msgpack")
    assert [p.name[-14:] for p in files] == ["20231114221330", "20231114221501", "20231114222140"]
    rows = [r for x in (a, b, c, c) for f in x for r in f.rows()]
    assert read_msgpack(files) == rows
    assert [len(read_msgpack([p])) for p in files] == [11, 7, 7]


def test_msgpack_round_trip_same_fields_as_jsonl(tmp_path):
    flows = flows_of(50)
    j = FileWriter(str(tmp_path / "f.jsonl"), "jsonl")
    m = FileWriter(str(tmp_path / "f.msgpack"), "msgpack")
    j.write(flows)
    m.write(flows)
    j.close()
    m.close()
    got_j = read_jsonl([tmp_path / "f.jsonl"])
    got_m = read_msgpack([tmp_path / "f.msgpack"])
    assert got_m == got_j == [r for f in flows for r in f.rows()]
    assert {"exporter", "src", "dst", "packets", "bytes", "first", "last", "sampling_interval"} <= set(got_m[0])


def test_no_rotation_appends_to_the_path_itself(tmp_path):
    path = tmp_path / "flows.jsonl"
    path.write_text('{"old":1}\n')
    w = FileWriter(str(path), "jsonl")
    w.write(flows_of(3))
    w.close()
    assert len(path.read_text().splitlines()) == 4
    assert rotated(tmp_path, "flows.jsonl") == []


def test_leftover_current_file_is_renamed_not_appended(tmp_path):
    path = tmp_path / "flows.jsonl"
    (tmp_path / "flows.jsonl.current").write_text('{"from":"a crash"}\n')
    os.utime(tmp_path / "flows.jsonl.current", (1_600_000_000, 1_600_000_000))
    w = FileWriter(str(path), "jsonl", Rotate(seconds=60), clock=Clock(1_700_000_000.0))
    w.write(flows_of(2))
    w.close()
    files = rotated(tmp_path, "flows.jsonl")
    assert [p.name for p in files] == ["flows.jsonl.20200913122640", "flows.jsonl.20231114221320"]
    assert files[0].read_text() == '{"from":"a crash"}\n'
    assert len(files[1].read_text().splitlines()) == 2


def test_write_error_counted_logged_once_never_raises(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    from flowplane.stats import Counters

    cnt = Counters("c")
    w = FileWriter("/dev/full", "jsonl", counters=cnt)
    with structlog.testing.capture_logs() as logs:
        for seed in (1, 2, 3):
            w.write(flows_of(4, seed))
    assert w.errors == 3 and w.dropped == 12 and w.lines == 0
    assert cnt.drops[("output", "jsonl-write-error")] == 12
    assert [e["event"] for e in logs] == ["collector_output_failed"]
    w.close()


def test_unwritable_path_then_recovery(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the directory should be")
    w = FileWriter(str(blocker / "flows.msgpack"), "msgpack", Rotate(bytes=10**6), clock=Clock(1_700_000_000.0))
    with structlog.testing.capture_logs() as logs:
        w.write(flows_of(3))
        w.write(flows_of(3))
        assert w.errors == 2 and w.dropped == 6
        blocker.unlink()  # the operator fixes it: the next batch goes through
        w.write(flows_of(5))
    assert [e["event"] for e in logs] == ["collector_output_failed", "collector_output_recovered"]
    assert logs[1]["dropped"] == 6
    w.close()
    assert len(read_msgpack(rotated(tmp_path / "out", "flows.msgpack"))) == 5


def test_partial_write_is_truncated_back_to_the_last_record(tmp_path, monkeypatch):
    path = tmp_path / "flows.jsonl"
    w = FileWriter(str(path), "jsonl")
    w.write(flows_of(3, 1))
    real = os.write
    calls = {"n": 0}

    def flaky(fd, data):  # half a batch, then ENOSPC
        calls["n"] += 1
        if calls["n"] == 1:
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", flaky)
    w.write(flows_of(4, 2))
    monkeypatch.setattr(os, "write", real)
    w.write(flows_of(2, 3))
    w.close()
    lines = read_jsonl([path])  # every line parses: no half record
    assert len(lines) == 5 and w.dropped == 4


# ---------------------------------------------------------------------------
# config


def test_output_config_parses(tmp_path):
    cfg, issues = parse({"services": {"flow-collector": {
        "listen": [{"address": "127.0.0.1", "port": 2055}],
        "output": {"jsonl": "/tmp/a.jsonl", "msgpack": "/tmp/a.mp", "rotate": {"seconds": 300, "bytes": 100000000},
                   "forward": [{"address": "127.0.0.1", "port": 4739},
                               {"address": "::1", "port": 2055, "version": 9, "transport": "udp"}]}}}})
    assert issues == []
    o = cfg.output
    assert (cfg.jsonl, o.jsonl, o.msgpack, o.rotate) == ("/tmp/a.jsonl", "/tmp/a.jsonl", "/tmp/a.mp",
                                                         Rotate(300.0, 100000000))
    assert [(f.address, f.port, f.version, f.transport) for f in o.forward] == [
        ("127.0.0.1", 4739, 10, "udp"), ("::1", 2055, 9, "udp")]


@pytest.mark.parametrize("output, path, text", [
    ({"msgpack": 3}, ("output", "msgpack"), "file path"),
    ({"jsonl": "/x", "rotate": {"minutes": 5}}, ("output", "rotate", "minutes"), "unknown key"),
    ({"jsonl": "/x", "rotate": {"bytes": 0}}, ("output", "rotate", "bytes"), "below"),
    ({"jsonl": "/x", "rotate": {}}, ("output", "rotate"), "seconds and/or bytes"),
    ({"rotate": {"bytes": 10}}, ("output", "rotate"), "needs a jsonl, msgpack or flows"),
    ({"forward": [{"address": "nowhere", "port": 1}]}, ("output", "forward", 0, "address"), "IPv4 or IPv6"),
    ({"forward": [{"address": "127.0.0.1", "port": 1, "version": 5}]}, ("output", "forward", 0, "version"), "9 or 10"),
    ({"forward": [{"address": "127.0.0.1", "port": 1, "transport": "sctp"}]}, ("output", "forward", 0, "transport"),
     "sctp"),
    ({"forward": [{"address": "127.0.0.1", "port": 1, "version": 9, "transport": "tcp"}]},
     ("output", "forward", 0, "transport"), "udp only"),
    ({"forward": [{"address": "127.0.0.1"}]}, ("output", "forward", 0), "missing 'port'"),
    ({"forward": []}, ("output", "forward"), "non-empty list"),
    ({"jsonl": "/x", "spool": "/y"}, ("output", "spool"), "unknown key"),
])
def test_output_config_errors_name_key_paths(output, path, text):
    _, issues = parse({"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 2055}],
                                                        "output": output}}}, plugin_registries())
    assert any(i.path == ("services", "flow-collector") + path and text in i.message for i in issues), issues


def test_collect_cli_output_kinds():
    from flowplane.plugins.collector.cli import build_config, parse_output

    assert parse_output("msgpack:/tmp/f.mp") == ("msgpack", "/tmp/f.mp")
    assert parse_output("ipfix:127.0.0.1:4739")[1] == {"address": "127.0.0.1", "port": 4739, "version": 10,
                                                       "transport": "udp"}
    assert parse_output("v9:[::1]:2055")[1] == {"address": "::1", "port": 2055, "version": 9, "transport": "udp"}
    assert parse_output("ipfix+tcp:127.0.0.1:4739")[1]["transport"] == "tcp"
    for bad in ("csv:/x", "ipfix:localhost:4739", "ipfix:127.0.0.1:0", "v9:127.0.0.1"):
        with pytest.raises(ValueError):
            parse_output(bad)

    class Args:
        listen = ["udp:127.0.0.1:0"]
        output = ["jsonl:a.jsonl", "msgpack:a.mp", "ipfix:127.0.0.1:4739", "v9:127.0.0.1:2055"]
        max_templates, pending_timeout, rotate_seconds, rotate_bytes = 1024, 10.0, 60, None

    sec = build_config(Args, "/tmp/c.sock")["services"]["flow-collector"]
    out = sec["output"]
    assert out["jsonl"] == os.path.abspath("a.jsonl") and out["msgpack"] == os.path.abspath("a.mp")
    assert out["rotate"] == {"seconds": 60} and len(out["forward"]) == 2
    cfg, issues = parse({"services": {"flow-collector": sec}})
    assert issues == [] and len(cfg.output.forward) == 2


# ---------------------------------------------------------------------------
# in a running service: real UDP in, rotated files out, SIGTERM


async def test_service_rotates_and_sigterm_loses_nothing(make_app, tmp_path):
    out = {"jsonl": str(tmp_path / "f.jsonl"), "msgpack": str(tmp_path / "f.msgpack"), "rotate": {"bytes": 20000}}
    app = make_app({"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}], "output": out}}},
                   plugins=[(collector_plugin, "collector")])
    c = app.pm.get_plugin("flow-collector")
    recs = sample_records(2000, seed=11)
    enc = ipfix.factory(EncoderOptions(version=10))
    dgrams = enc.encode(recs, T0 + 4000 * 10**9)
    async with serve(app) as service:
        port = c.listeners[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k, d in enumerate(dgrams):
                s.sendto(d, ("127.0.0.1", port))
                if k % 8 == 7:
                    await trio.sleep(0.002)
        # SIGTERM right away: what is still in the socket is read and written at shutdown
        await service.stop()
    assert service.code == 0
    assert c.counters["records"] == 2000
    assert not (tmp_path / "f.jsonl.current").exists() and not (tmp_path / "f.msgpack.current").exists()
    jl = read_jsonl(rotated(tmp_path, "f.jsonl"))
    mp = read_msgpack(rotated(tmp_path, "f.msgpack"))
    assert len(rotated(tmp_path, "f.jsonl")) > 3
    assert jl == mp and len(jl) == 2000
    # every exported flow exactly once
    got = sorted((r["src"], r["sport"], r["dst"], r["dport"], r["packets"], r["bytes"]) for r in jl)
    assert len(set(got)) == 2000
    want_bytes = sorted(recs.data["bytes"].tolist())
    assert sorted(r["bytes"] for r in jl) == want_bytes
    assert not c.counters.drops


def test_collect_cli_msgpack_and_summary(tmp_path):
    """``flowplane collect --output msgpack:PATH --output jsonl:PATH --rotate-bytes N``, end to end.

    Stopped by SIGTERM.
    """
    port = free_port()
    mp, jl = tmp_path / "c.msgpack", tmp_path / "c.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "flowplane", "collect", "--listen", f"udp:127.0.0.1:{port}",
                          "--output", f"msgpack:{mp}", "--output", f"jsonl:{jl}", "--rotate-bytes", "30000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "listening on" not in line and time.monotonic() < deadline:
            line = p.stderr.readline()
        assert "listening on" in line
        dgrams = ipfix.factory(EncoderOptions(version=10)).encode(sample_records(500, seed=5), T0 + 4000 * 10**9)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in dgrams:
                s.sendto(d, ("127.0.0.1", port))
                time.sleep(0.001)  # pacing: stay below the receive buffer
        wait_until(lambda: udp_drained(port), what="the collector to read every datagram")
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "500 flow records" in out
    assert f"wrote 500 flows to {mp}" in out and f"wrote 500 flows to {jl}" in out
    assert len(read_msgpack(rotated(tmp_path, "c.msgpack"))) == 500
    assert read_msgpack(rotated(tmp_path, "c.msgpack")) == read_jsonl(rotated(tmp_path, "c.jsonl"))


# ---------------------------------------------------------------------------
# binary flow files (output: {flows: PATH})


def test_flow_file_output_config_and_cli(tmp_path):
    from flowplane.plugins.collector.cli import parse_output
    from flowplane.plugins.collector.output import parse_output as parse_cfg

    assert parse_output("flows:/x/y.fpf") == ("flows", "/x/y.fpf")
    cfg, issues = parse_cfg({"flows": str(tmp_path / "a"), "rotate": {"seconds": 60}}, ("output",))
    assert not issues and cfg.flows == str(tmp_path / "a")
    _, issues = parse_cfg({"flows": str(tmp_path / "a"), "jsonl": str(tmp_path / "a")}, ("output",))
    assert issues and issues[0].path[-1] in ("flows", "jsonl")


def test_threaded_flow_file_writer_in_order_rotates_drains_on_close(tmp_path):
    """Binary flow files are written by a writer thread: same frames, in order, rotation between them
    in order with the writes, everything queued written by close."""
    from flowplane.plugins.collector.config import OutputConfig
    from flowplane.plugins.collector.flowfile import read_flows
    from flowplane.plugins.collector.output import Outputs, ThreadedFileWriter
    from flowplane.stats import Counters

    outs = Outputs(OutputConfig(flows=str(tmp_path / "o.fpf")), Counters("c"))
    assert isinstance(outs.files[0], ThreadedFileWriter)
    outs.close_files()
    clock = Clock(1_700_000_010.0)
    w = ThreadedFileWriter(str(tmp_path / "f.fpf"), "flows", Rotate(seconds=300), clock=clock)
    a, b, c = flows_of(50, 1), flows_of(60, 2), flows_of(70, 3)
    for _ in range(40):  # more batches than the queue holds: write waits for room, nothing is lost
        w.write(a)
    w.write(b)
    w.sync()
    clock.t = 1_700_000_100.0  # crossed a boundary: the timer's rotation comes after what was queued
    w.tick()
    w.write(c)
    w.close()
    assert not w._thread.is_alive()
    files = rotated(tmp_path, "f.fpf")
    assert len(files) == 2 and w.rotations == 2
    got = [[r for blk in read_flows(str(p)) for r in blk.rows()] for p in files]
    assert got[0] == [r for x in [a] * 40 + [b] for f in x for r in f.rows()]
    assert got[1] == [r for f in c for r in f.rows()]
    assert w.lines == 40 * 50 + 60 + 70
    w.write(a)  # after close: written synchronously, not lost
    assert w.lines == 40 * 50 + 60 + 70 + 50
    w.close()


def test_threaded_flow_file_writer_errors_counted(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    from flowplane.plugins.collector.output import ThreadedFileWriter
    from flowplane.stats import Counters

    cnt = Counters("c")
    w = ThreadedFileWriter("/dev/full", "flows", counters=cnt)
    for seed in (1, 2, 3):
        w.write(flows_of(4, seed))
    w.close()
    assert w.errors == 3 and w.dropped == 12 and w.lines == 0
    assert cnt.drops[("output", "flows-write-error")] == 12

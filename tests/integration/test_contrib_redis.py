"""contrib/flowplane-redis: a third-party transport, pip-installed into a fresh venv, selected only by config.

A real ``redis-server`` (Debian's) runs on a free loopback port.  flowplane and the
contrib distribution are installed into a new venv exactly as ``test_contrib_plugin``
does (offline: dependencies, redis-py included, come from the test venv).  Then:

* ``flowplane run --exit-on-eof`` replays a pcap with ``transport: redis`` on an IPFIX
  flow server; the stream read back with ``XRANGE`` decodes (our collector's decoder)
  to exactly the pcap's flows, packets and bytes;
* a ``flowplane run`` collector forwards what it receives with ``transport: redis``;
  the re-export stream decodes to the records sent.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from flowplane.export import EncoderOptions
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen
from flowplane.plugins.encoders import ipfix
from flowplane.testing import write_pcap

from frames import eth_ipv4_udp
from netns import NotifySocket
from test_collector import T0, sample_records
from venvs import Venv, make_venv

redis = pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SRC = ROOT / "contrib" / "flowplane-redis"

EXPORT = """\
system:
  control-socket: {tmp}/export.sock
  log: {{format: json, level: warning}}
interfaces:
  replay0: {{source: pcap, file: {tmp}/in.pcap, family inet: {{filter input: all}}}}
firewall:
  family inet:
    filter all:
      term t:
        then: {{sample: true, accept: true}}
forwarding-options:
  sampling:
    family inet:
      output:
        flow-server 127.0.0.1: {{port: {port}, transport: redis, stream: flows, maxlen: 100000,
                                 version-ipfix: {{template: t}}}}
services:
  flow-monitoring:
    version-ipfix:
      template t: {{ipv4-template: true}}
"""

COLLECT = """\
system:
  control-socket: {tmp}/collect.sock
  log: {{format: json, level: warning}}
services:
  flow-collector:
    listen: [{{address: 127.0.0.1, port: {listen}}}]
    output:
      forward: [{{address: 127.0.0.1, port: {port}, version: 10, transport: redis, stream: reexport}}]
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got is not None and got is not False:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("missing redis-server (apt-get install -y redis-server)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, 10, "redis-server")
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    v = make_venv(tmp_path_factory.mktemp("contrib-redis"))
    assert "redis" not in v.plugins()  # nothing but the install below brings the transport
    v.pip_install(PLUGIN_SRC)
    return v


def read_stream(port: int, stream: str) -> list[tuple[bytes, str]]:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return [(fields[b"message"], fields[b"exporter"].decode()) for _, fields in client.xrange(stream)]
    finally:
        client.close()


def decode(entries: list[tuple[bytes, str]]) -> np.ndarray:
    """Our collector's decoder over the stream's messages, in stream order (templates came first)."""
    sink = Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)]))
    flows = sink.handle([(m, "127.0.0.1") for m, _ in entries])
    return np.concatenate([f.data for f in flows]) if flows else np.zeros(0)


def test_plugin_is_listed(venv):
    row = venv.plugins()["redis"]
    assert row["builtin"] is False and row["module"] == "flowplane_redis"
    assert row["registered"] == {"transports": ["redis"]}


def test_check_config_validates_the_transport_keys(venv, tmp_path):
    cfg = tmp_path / "bad.yaml"
    write_pcap(str(tmp_path / "in.pcap"), [eth_ipv4_udp()])
    cfg.write_text(EXPORT.format(tmp=tmp_path, port=6379).replace("maxlen: 100000", "maxlen: -1"))
    res = venv.flowplane("check-config", str(cfg))
    assert res.returncode != 0 and "maxlen" in res.stdout + res.stderr


def test_flow_export_to_a_redis_stream(venv, redis_port, tmp_path):
    frames = [eth_ipv4_udp(sport=1000 + i, dport=53, payload=b"x" * (i % 50)) for i in range(300)]
    frames += frames[:100]  # 100 flows with two packets
    write_pcap(str(tmp_path / "in.pcap"), frames, ts_ns=[T0 + i * 1_000_000 for i in range(len(frames))])
    cfg = tmp_path / "export.yaml"
    cfg.write_text(EXPORT.format(tmp=tmp_path, port=redis_port))
    assert venv.flowplane("check-config", str(cfg)).returncode == 0
    res = venv.flowplane("run", "-c", str(cfg), "--exit-on-eof")
    assert res.returncode == 0, res.stderr
    entries = read_stream(redis_port, "flows")
    assert entries and {e for _, e in entries} == {"(default sampling)/127.0.0.1:" + str(redis_port)}
    got = decode(entries)
    assert len(got) == 300
    assert int(got["packets"].sum()) == len(frames)
    assert int(got["bytes"].sum()) == sum(len(f) - 14 for f in frames)  # IP bytes (Ethernet header not counted)


def test_collector_forwards_to_a_redis_stream(venv, redis_port, tmp_path):
    listen = free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "collect.yaml"
    cfg.write_text(COLLECT.format(tmp=tmp_path, listen=listen, port=redis_port))
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = subprocess.Popen([str(venv.bin / "flowplane"), "run", "-c", str(cfg)], env=notify.env(venv.env),
                            cwd=venv.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        notify.wait("READY=1")
        recs = sample_records(500, seed=5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in ipfix.factory(EncoderOptions()).encode(recs, T0):
                s.sendto(d, ("127.0.0.1", listen))

        def forwarded():
            got = decode(read_stream(redis_port, "reexport"))
            return got if len(got) == len(recs) else None

        got = wait_until(forwarded, 20, "the re-exported records in the stream")
        assert int(got["packets"].sum()) == int(recs.data["packets"].sum())
        assert int(got["bytes"].sum()) == int(recs.data["bytes"].sum())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()

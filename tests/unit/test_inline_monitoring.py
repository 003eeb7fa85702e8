"""Inline monitoring: record encoding (checked by an independent parser; by tshark in tests/interop), the engine on
real loopback sockets (sampling counts, interfaces, loop guard, sequence numbers), the template /
options schedule under a virtual clock, reload, and the show / clear commands."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
import trio

from flowplane.batch import DIR_INPUT, DIR_OUTPUT, PacketBatch
from flowplane.config import Config
from flowplane.decode import decode
from flowplane.plugins.inline_monitoring import encoder as enc
from flowplane.plugins.inline_monitoring.engine import PLUGIN_OBJECT, pick
from flowplane.sampling import Sampler
from flowplane.testing import wait_until_async, write_pcap

from frames import eth, eth_ipv4_udp, ipv4, udp

# ---------------------------------------------------------------------------
# an independent IPFIX reader (RFC 7011), written from the RFC, not from the encoder


def parse_message(msg: bytes, templates: dict) -> dict:
    version, length, export_time, seq, domain = struct.unpack_from(">HHIII", msg)
    assert version == 10 and length == len(msg)
    out = {"seq": seq, "domain": domain, "time": export_time, "templates": [], "options_templates": [],
           "records": [], "options": []}
    off = 16
    while off < length:
        set_id, set_len = struct.unpack_from(">HH", msg, off)
        assert set_len >= 4 and off + set_len <= length
        body = msg[off + 4: off + set_len]
        if set_id == 2:
            tid, count = struct.unpack_from(">HH", body)
            fields = [struct.unpack_from(">HH", body, 4 + 4 * i) for i in range(count)]
            templates[tid] = ("data", fields)
            out["templates"].append((tid, fields))
        elif set_id == 3:
            tid, count, scope = struct.unpack_from(">HHH", body)
            fields = [struct.unpack_from(">HH", body, 6 + 4 * i) for i in range(count)]
            templates[tid] = ("options", fields)
            out["options_templates"].append((tid, scope, fields))
        else:
            kind, fields = templates[set_id]
            pos = 0
            while pos < len(body):
                rec = {}
                for ie, ln in fields:
                    if ln == 65535:
                        ln = body[pos]
                        pos += 1
                        if ln == 255:
                            ln = struct.unpack_from(">H", body, pos)[0]
                            pos += 2
                        rec[ie] = body[pos: pos + ln]
                    else:
                        rec[ie] = int.from_bytes(body[pos: pos + ln], "big")
                    pos += ln
                out["records" if kind == "data" else "options"].append(rec)
            assert pos == len(body)
        off += set_len
    return out


def frames_of(sizes: list[int]) -> list[bytes]:
    """Frames of the given lengths whose bytes say where they are (byte k of frame i = (i * 7 + k) % 256)."""
    out = []
    for i, n in enumerate(sizes):
        base = eth_ipv4_udp(sport=1000 + i, dport=9999)
        body = bytes((i * 7 + k) % 256 for k in range(n))
        out.append(base[:min(n, len(base))] + body[len(base):n] if n > len(base) else base[:n])
    return out


def _records(frames, clip, *, iface=5, direction=DIR_INPUT, wire=None):
    b = PacketBatch.from_frames(frames, wirelen=wire)
    n = len(frames)
    ing = np.full(n, iface, dtype=np.uint32)
    egr = np.where(np.full(n, direction) == DIR_OUTPUT, ing, 0).astype(np.uint32)
    return enc.build_records(b.data, b.offset, b.caplen, b.wirelen, ing, egr, np.full(n, direction, np.int8), clip)


# ---------------------------------------------------------------------------
# encoding


@pytest.mark.parametrize("clip", [126, 256, 1400])  # 1400: the long-clip gather path
def test_records_carry_the_seed_elements_and_the_clipped_bytes(clip):
    sizes = [60, 125, 126, 127, 254, 255, 256, 300, 1514]
    frames = frames_of(sizes)
    wire = [s + 4 if s == 1514 else s for s in sizes]  # the capture may be shorter than the wire
    recs = _records(frames, clip, iface=7, direction=DIR_INPUT, wire=wire)
    session = enc.Session(template_id=1024, option_template_id=1025, observation_domain_id=3, sampling_interval=10)
    msgs = [session.control_message(templates=True, options=True)]
    msgs += session.data_messages(enc.pack_sets(recs, 1024, 1472))
    templates: dict = {}
    parsed = [parse_message(m, templates) for m in msgs]
    assert parsed[0]["templates"] == [(1024, [(10, 4), (14, 4), (61, 1), (312, 2), (315, 65535)])]
    assert parsed[0]["options_templates"] == [(1025, 1, [(144, 4), (34, 4)])]
    assert parsed[0]["options"] == [{144: 3, 34: 10}]
    records = [r for p in parsed[1:] for r in p["records"]]
    assert len(records) == len(frames)
    for f, w, r in zip(frames, wire, records):
        assert r[10] == 7 and r[14] == 0 and r[61] == 0
        assert r[312] == w
        assert r[315] == f[:clip]
    assert all(p["domain"] == 3 for p in parsed)


def test_egress_rows_report_the_interface_in_both_fields():
    recs = _records(frames_of([100, 100]), 126, iface=9, direction=DIR_OUTPUT)
    s = enc.Session(template_id=300, option_template_id=301, observation_domain_id=0, sampling_interval=1)
    templates: dict = {}
    parse_message(s.control_message(templates=True, options=False), templates)
    [msg] = s.data_messages(enc.pack_sets(recs, 300, 1472))
    assert [(r[10], r[14], r[61]) for r in parse_message(msg, templates)["records"]] == [(9, 9, 1), (9, 9, 1)]


def test_messages_fit_the_mtu_and_sequence_counts_data_records():
    frames = frames_of([200] * 500)
    recs = _records(frames, 126)
    assert set(recs.lengths.tolist()) == {11 + 1 + 126}
    packed = enc.pack_sets(recs, 1024, 1472)
    per = (1472 - 20) // 138
    assert [k for _, k in packed] == [per] * (500 // per) + ([500 % per] if 500 % per else [])
    s = enc.Session(template_id=1024, option_template_id=1025, observation_domain_id=1, sampling_interval=1)
    first = s.control_message(templates=True, options=True)  # one options data record: sequence 0 -> 1
    msgs = s.data_messages(packed)
    assert all(len(m) <= 1472 for m in msgs)
    templates: dict = {}
    assert parse_message(first, templates)["seq"] == 0
    seqs = [parse_message(m, templates)["seq"] for m in msgs]
    expected = np.concatenate([[1], 1 + np.cumsum([k for _, k in packed])[:-1]]).tolist()
    assert seqs == expected
    assert s.sequence == 501
    # a template-only message carries no data record: the sequence does not move
    assert parse_message(s.control_message(templates=True, options=False), templates)["seq"] == 501
    assert s.sequence == 501


def test_a_record_that_cannot_fit_is_an_error_not_a_silent_cut():
    recs = _records(frames_of([1500]), 1500)
    with pytest.raises(ValueError, match="does not fit"):
        enc.pack_sets(recs, 1024, 1000)


def test_systematic_sampling_is_exact_across_batches():
    s = Sampler(7)
    picked = []
    base = 0
    for n in [3, 10, 1, 6, 20, 0, 9]:
        idx = pick(s, n)
        picked += (base + idx).tolist()
        base += n
    assert picked == list(range(6, base, 7))
    assert pick(Sampler(1), 5) is None  # 1 in 1: everything, no index work


# ---------------------------------------------------------------------------
# the engine through a real App, on loopback sockets

CONFIG = """\
system:
  hardware-profile: {profile}
interfaces:
  replay0:
    source: pcap
    file: {pcap}
    family any:
      filter input: all
      filter output: all
firewall:
  family any:
    filter all:
      term t:
        then: {{inline-monitoring-instance: i0, accept: true}}
services:
  inline-monitoring:
    template t1:
      template-refresh-rate: {trr}
      option-template-refresh-rate: {orr}
      observation-domain-id: 5
    instance i0:
      template-name: t1
{instance_extra}{collectors}"""


def _collector_text(name, port, rate=None):
    r = f"        sampling-rate: {rate}\n" if rate else ""
    return f"      collector {name}:\n        destination-address: 127.0.0.1\n        destination-port: {port}\n{r}"


class Sink:
    """A UDP socket on 127.0.0.1 that keeps every datagram."""

    def __init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.msgs: list[bytes] = []
        self.templates: dict = {}

    async def bind(self) -> int:
        try:  # room for every datagram of a test (the kernel default holds ~100 on loopback)
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        await self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                m = self.sock.recv_nowait(65535) if hasattr(self.sock, "recv_nowait") else self.sock._sock.recv(
                    65535, socket.MSG_DONTWAIT)
            except (BlockingIOError, trio.WouldBlock):
                return out
            self.msgs.append(m)
            out.append(parse_message(m, self.templates))


def _app(make_app, tmp_path, sinks_rates, *, profile="generic-linux", trr=600, orr=600, instance_extra=""):
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    cols = "".join(_collector_text(f"c{i}", port, rate) for i, (port, rate) in enumerate(sinks_rates))
    cfg = Config.from_text(CONFIG.format(profile=profile, pcap=pcap, trr=trr, orr=orr, collectors=cols,
                                         instance_extra=instance_extra))
    app = make_app(cfg)
    return app, app.pm.get_plugin(PLUGIN_OBJECT)


async def _start(nursery, app, obj):
    for fn in obj.flowplane_background_tasks(app=app):
        await nursery.start(fn)


def _batch(app, frames, direction=DIR_INPUT):
    return PacketBatch.from_frames(frames, iface=app.interfaces.id("replay0"), direction=direction)


async def test_per_collector_rates_give_exact_counts(make_app, tmp_path, nursery):
    sinks = [Sink(), Sink(), Sink(), Sink()]
    ports = [await s.bind() for s in sinks]
    app, obj = _app(make_app, tmp_path, list(zip(ports, [1, 10, 7, 10])))  # two at 1 in 10: encoded once
    await _start(nursery, app, obj)
    frames = [eth_ipv4_udp(sport=2000 + i, dport=53, payload=bytes([i % 256]) * 150) for i in range(1000)]
    for chunk in range(0, 1000, 256):  # batches of 256: the sampling phase carries over
        app.process(_batch(app, frames[chunk:chunk + 256]))
    await trio.sleep(0.05)
    for sink, rate in zip(sinks, [1, 10, 7, 10]):
        msgs = sink.drain()
        assert msgs[0]["templates"] and msgs[0]["options"] == [{144: 5, 34: rate}]
        records = [r for m in msgs for r in m["records"]]
        assert len(records) == 1000 // rate
        # the N-th, 2N-th, ... packet, clipped to the generic profile's default 128 bytes
        assert [r[315] for r in records] == [frames[i][:128] for i in range(rate - 1, 1000, rate)]
        assert all(r[312] == len(frames[0]) and r[10] == 0 and r[14] == 0 and r[61] == 0 for r in records)
        # sequence numbers: data records (options data included) sent before each message
        seq = 0
        for m in msgs:
            assert m["seq"] == seq and m["domain"] == 5
            seq += len(m["records"]) + len(m["options"])
    snap = obj.snapshot()
    [inst] = snap["instances"]
    assert inst["packets_seen"] == 1000
    assert [(c["packets_sampled"], c["records_exported"], c["dropped"]) for c in inst["collectors"]] == [
        (1000, 1000, 0), (100, 100, 0), (142, 142, 0), (100, 100, 0)]
    assert all(c["sent_datagrams"] == c["messages"] for c in inst["collectors"])


async def test_per_instance_rate_on_ptx_same_samples_for_every_collector(make_app, tmp_path, nursery):
    sinks = [Sink(), Sink()]
    ports = [await s.bind() for s in sinks]
    app, obj = _app(make_app, tmp_path, [(p, None) for p in ports], profile="ptx-evo",
                    instance_extra="      sampling-rate: 4\n")
    await _start(nursery, app, obj)
    frames = [eth_ipv4_udp(sport=3000 + i, payload=b"z" * 400) for i in range(101)]
    app.process(_batch(app, frames))
    await trio.sleep(0.05)
    got = []
    for s in sinks:
        msgs = s.drain()
        assert msgs[0]["options"] == [{144: 5, 34: 4}]
        got.append([r[315] for m in msgs for r in m["records"]])
    assert got[0] == got[1] == [frames[i][:256] for i in range(3, 101, 4)]  # ptx-evo clips at 256


async def test_loop_guard_drops_and_counts_our_own_export(make_app, tmp_path, nursery):
    sink = Sink()
    port = await sink.bind()
    app, obj = _app(make_app, tmp_path, [(port, 1)])
    await _start(nursery, app, obj)
    [c] = obj.collectors()
    local = c.transport.local_address
    own = eth(payload=ipv4(17, udp(local[1], port, b"\x00\x0a" + b"x" * 60), src=local[0], dst="127.0.0.1"))
    other = eth_ipv4_udp(sport=local[1], dport=port, payload=b"y" * 40)  # another host, same ports: not ours
    app.process(_batch(app, [own, other, own]))
    await trio.sleep(0.05)
    records = [r for m in sink.drain() for r in m["records"]]
    assert [r[315] for r in records] == [other[:128]]
    [inst] = obj.snapshot()["instances"]
    assert inst["packets_seen"] == 3
    assert inst["drops"] == [{"stage": "loop-guard", "reason": "own_export", "count": 2}]


async def test_show_and_clear_commands(make_app, tmp_path, nursery):
    sink = Sink()
    port = await sink.bind()
    app, obj = _app(make_app, tmp_path, [(port, 2)])
    await _start(nursery, app, obj)
    app.process(_batch(app, [eth_ipv4_udp(payload=b"a" * 30)] * 10, direction=DIR_OUTPUT))
    await trio.sleep(0.05)
    cmd, rest = app.registries.commands.resolve(["show", "services", "inline-monitoring", "statistics"])
    data = cmd.fn(app, rest)
    [inst] = data["instances"]
    [c] = inst["collectors"]
    assert (inst["packets_seen"], c["packets_sampled"], c["records_exported"]) == (10, 5, 5)
    assert c["messages"] == c["template_messages"] + 1 and c["option_messages"] == 1
    text = cmd.formatter(data)
    assert "Instance name: i0" in text and "Collector name: c0" in text
    assert "Packets sampled: 5, Records exported: 5" in text and "Sampling rate: 1 in 2" in text
    records = [r for m in sink.drain() for r in m["records"]]
    assert [(r[61], r[14] == r[10]) for r in records] == [(1, True)] * 5  # egress
    clear, rest = app.registries.commands.resolve(["clear", "services", "inline-monitoring", "statistics"])
    assert clear.fn(app, rest) == {"cleared": ["i0"]}
    [inst] = cmd.fn(app, [])["instances"]
    assert inst["packets_seen"] == 0 and inst["collectors"][0]["records_exported"] == 0
    from flowplane.commands import CommandError

    with pytest.raises(CommandError, match="no inline-monitoring instance 'nope'; configured: i0"):
        cmd.fn(app, ["instance", "nope"])


async def test_templates_and_options_on_schedule_without_traffic(make_app, tmp_path, nursery, autojump_clock):
    sink = Sink()
    port = await sink.bind()
    app, obj = _app(make_app, tmp_path, [(port, 3)], trr=30, orr=10)
    t0 = trio.current_time()
    await _start(nursery, app, obj)
    seen = []
    for _ in range(8):  # at 0 (both), 10, 20, 30 (both), 40, 50, 60 (both), 70
        data = await sink.sock.recv(65535)
        m = parse_message(data, sink.templates)
        seen.append((round(trio.current_time() - t0), bool(m["templates"]), len(m["options"]),
                     len(m["options_templates"]), len(m["records"])))
    assert seen == [(0, True, 1, 1, 0), (10, False, 1, 1, 0), (20, False, 1, 1, 0), (30, True, 1, 1, 0),
                    (40, False, 1, 1, 0), (50, False, 1, 1, 0), (60, True, 1, 1, 0), (70, False, 1, 1, 0)]


async def test_reload_sends_templates_at_once_and_keeps_counters(make_app, tmp_path, nursery):
    from flowplane.service import Service

    sink = Sink()
    port = await sink.bind()
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    text = CONFIG.format(profile="generic-linux", pcap=pcap, trr=600, orr=600, instance_extra="",
                         collectors=_collector_text("c0", port, 1))
    path.write_text(text)
    cfg = Config.load(str(path))
    cfg.data["system"]["control-socket"] = str(tmp_path / "control.sock")
    app = make_app(cfg)
    service = Service(app, control=False)
    nursery.start_soon(service.serve)
    await service.ready.wait()
    first = await wait_until_async(sink.drain, what="the first templates")
    assert first and first[0]["templates"] and first[0]["options"] == [{144: 5, 34: 1}]
    obj = app.pm.get_plugin(PLUGIN_OBJECT)
    await wait_until_async(lambda: obj.snapshot()["instances"][0]["collectors"][0]["records_exported"])
    first += sink.drain()  # the record's datagram, if it came after the templates
    records_before = obj.snapshot()["instances"][0]["collectors"][0]["records_exported"]
    assert records_before == 1  # the pcap's one packet
    path.write_text(text.replace("observation-domain-id: 5", "observation-domain-id: 6"))
    assert await service.reload()
    after = await wait_until_async(sink.drain, what="the new instance's templates")
    assert after[0]["templates"] and after[0]["domain"] == 6 and after[0]["options"] == [{144: 6, 34: 1}]
    new = app.pm.get_plugin(PLUGIN_OBJECT)
    assert new is not obj
    assert new.snapshot()["instances"][0]["collectors"][0]["records_exported"] == records_before
    nursery.cancel_scope.cancel()


def test_decoded_frames_keep_their_bytes():
    # the records carry the frame as captured, also for frames the decoder rejects
    junk = b"\xff" * 20
    b = PacketBatch.from_frames([junk])
    decode(b)
    recs = _records([junk], 126)
    templates: dict = {}
    s = enc.Session(template_id=1024, option_template_id=1025, observation_domain_id=0, sampling_interval=1)
    parse_message(s.control_message(templates=True, options=False), templates)
    [m] = s.data_messages(enc.pack_sets(recs, 1024, 1472))
    assert parse_message(m, templates)["records"][0][315] == junk and b.status[0] != 0

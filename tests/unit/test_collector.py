"""Flow collector (plugins/collector): decoders fed our own exporters and hand-built messages, bad input, config.

The corpus captures are replayed in tests/interop/test_collector_corpus.py."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import flowplane.plugins.collector as collector_plugin
from flowplane.export import EncoderOptions
from flowplane.flows import FLOW_DTYPE, FlowRecords
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen, parse
from flowplane.plugins.collector.decoder import Decoder
from flowplane.plugins.collector.pcap import udp_payloads
from flowplane.plugins.encoders import ipfix, netflow5, netflow9

T0 = 1_700_000_000_000_000_000
MAPPED = 0xFFFF_0000_0000


def make_collector(**kw) -> Collector:
    cfg = CollectorConfig(listen=[Listen("127.0.0.1", 0)], **kw)
    return Collector(cfg)


def replay(c: Collector, files) -> int:
    n = 0
    for f in files:
        for d in udp_payloads(str(f)):
            n += sum(len(x) for x in c.handle([(d.payload, d.src)], now_ns=d.ts_ns))
    return n


# ---------------------------------------------------------------------------
# round trip through our own encoders


def sample_records(n: int, seed: int = 1, v4_only: bool = False) -> FlowRecords:
    rng = np.random.default_rng(seed)
    boot = T0 - 7200 * 10**9
    d = np.zeros(n, dtype=FLOW_DTYPE)
    v4 = np.ones(n, bool) if v4_only else rng.random(n) < 0.6
    d["af"] = np.where(v4, 4, 6)
    for p in ("src", "dst", "nexthop"):
        d[p + "_hi"] = np.where(v4, 0, np.uint64(0x2001_0DB8 << 32) | rng.integers(0, 2**32, n, dtype=np.uint64))
        d[p + "_lo"] = np.where(v4, np.uint64(MAPPED) | rng.integers(1, 2**32, n, dtype=np.uint64),
                                rng.integers(1, 2**63, n, dtype=np.uint64))
    d["proto"] = rng.choice([6, 17], n)
    d["sport"], d["dport"] = rng.integers(1, 65536, n), rng.integers(1, 65536, n)
    d["packets"] = rng.integers(1, 10**6, n)
    d["bytes"] = d["packets"] * rng.integers(40, 1500, n).astype(np.uint64)
    d["first_ns"] = boot + rng.integers(0, 3600 * 10**9, n) // 10**6 * 10**6
    d["last_ns"] = d["first_ns"] + rng.integers(0, 300 * 10**9, n) // 10**6 * 10**6
    d["in_if"], d["out_if"] = rng.integers(1, 60000, n), rng.integers(1, 60000, n)
    d["src_mask"], d["dst_mask"] = rng.integers(0, 33, n), rng.integers(0, 33, n)
    d["src_as"], d["dst_as"] = rng.integers(1, 60000, n), rng.integers(1, 60000, n)
    d["tcp_flags"] = np.where(d["proto"] == 6, rng.integers(1, 64, n), 0)
    d["tos"] = rng.integers(0, 256, n)
    return FlowRecords(d, boot_ns=boot)


COMPARED = ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "proto", "packets", "bytes", "first_ns",
            "last_ns", "in_if", "out_if", "src_mask", "dst_mask", "tos", "tcp_flags", "af", "src_as", "dst_as")


def _key(a):
    return np.lexsort([a["first_ns"], a["sport"], a["src_lo"]])


@pytest.mark.parametrize("version", [5, 9, 10])
def test_round_trip_our_encoders(version):
    recs = sample_records(500, seed=version, v4_only=version == 5)
    mod = {5: netflow5, 9: netflow9, 10: ipfix}[version]
    enc = mod.factory(EncoderOptions(version=version, sampling_interval=10, observation_domain_id=7))
    now = T0 + 4000 * 10**9
    dgrams = enc.encode(recs, now)
    c = make_collector()
    flows = c.handle([(d, "192.0.2.1") for d in dgrams], now_ns=now)
    got = np.concatenate([f.data for f in flows])
    assert len(got) == 500
    want = recs.data
    g, w = got[_key(got)], want[_key(want)]
    for name in COMPARED:
        assert np.array_equal(g[name], w[name]), name
    rates = set(np.concatenate([f.sampling_interval for f in flows]).tolist())
    assert rates == {10}  # v5 header field, v9 / IPFIX options data
    assert not c.counters.drops


def test_v5_header_sampling_interval():
    recs = sample_records(40, v4_only=True)
    recs.sampling_interval = 100
    enc = netflow5.factory(EncoderOptions(version=5, sampling_interval=100))
    flows = make_collector().handle([(d, "192.0.2.1") for d in enc.encode(recs, T0)], now_ns=T0)
    assert set(np.concatenate([f.sampling_interval for f in flows]).tolist()) == {100}


def test_batched_datagrams_decode_as_one_group_with_per_datagram_times():
    recs = sample_records(3000, seed=3)
    enc = netflow9.factory(EncoderOptions(version=9))
    dgrams = enc.encode(recs, T0 + 4000 * 10**9)
    c = make_collector()
    flows = c.handle([(d, "192.0.2.1") for d in dgrams])
    assert len(flows) == 2  # one per template (ipv4, ipv6) for the whole batch
    got = np.concatenate([f.data for f in flows])
    assert np.array_equal(np.sort(got["first_ns"]), np.sort(recs.data["first_ns"]))


# ---------------------------------------------------------------------------
# hand-built IPFIX: times, variable-length and enterprise fields, withdrawal, limits


def ipfix_msg(sets: list[bytes], *, export_s: int = 1_700_000_000, seq: int = 0, domain: int = 1) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_s, seq, domain) + body


def iset(set_id: int, body: bytes) -> bytes:
    pad = (-(4 + len(body))) % 4
    return struct.pack(">HH", set_id, 4 + len(body) + pad) + body + bytes(pad)


def tmpl(tid: int, fields: list[tuple]) -> bytes:
    out = struct.pack(">HH", tid, len(fields))
    for f in fields:
        ie, ln = f[0], f[1]
        if len(f) == 3:
            out += struct.pack(">HHI", ie | 0x8000, ln, f[2])
        else:
            out += struct.pack(">HH", ie, ln)
    return out


def test_ipfix_time_variants():
    export_s = 1_700_000_000
    ntp = lambda s, frac: ((s + 2_208_988_800) << 32) | frac  # noqa: E731
    fields = [(8, 4), (12, 4), (150, 4), (151, 4), (154, 8), (155, 8)]
    t = iset(2, tmpl(300, fields) + tmpl(301, [(8, 4), (158, 4), (159, 4)]))
    rec = struct.pack(">IIIIQQ", 0x0A000001, 0x0A000002, export_s - 10, export_s - 5,
                      ntp(export_s - 9, 1 << 31), ntp(export_s - 4, 0))
    rec2 = struct.pack(">III", 0x0A000003, 3_000_000, 1_000)
    c = make_collector()
    flows = c.handle([(ipfix_msg([t, iset(300, rec), iset(301, rec2)], export_s=export_s), "198.51.100.1")])
    by = {f.template_id: f for f in flows}
    d = by[300].data[0]
    # 154/155 outrank 150/151
    assert d["first_ns"] == (export_s - 9) * 10**9 + 500_000_000
    assert d["last_ns"] == (export_s - 4) * 10**9
    d2 = by[301].data[0]
    assert d2["first_ns"] == export_s * 10**9 - 3_000_000_000
    assert d2["last_ns"] == export_s * 10**9 - 1_000_000


def test_ipfix_sysuptime_relative_to_system_init_time():
    init_ms = 1_699_000_000_000
    c = make_collector()
    opt_t = iset(3, struct.pack(">HHH", 400, 2, 1) + struct.pack(">HHHH", 149, 4, 160, 8))
    t = iset(2, tmpl(300, [(8, 4), (22, 4), (21, 4)]))
    msg = ipfix_msg([opt_t, t, iset(400, struct.pack(">IQ", 1, init_ms)),
                     iset(300, struct.pack(">III", 0x0A000001, 5000, 7000))])
    (f,) = c.handle([(msg, "198.51.100.1")])
    assert f.data["first_ns"][0] == (init_ms + 5000) * 10**6
    assert f.data["last_ns"][0] == (init_ms + 7000) * 10**6


def test_variable_length_and_enterprise_fields():
    fields = [(8, 4), (82, 65535), (2, 8), (137, 4, 2636), (96, 65535)]
    t = iset(2, tmpl(310, fields))
    long_name = b"x" * 300
    recs = (struct.pack(">I", 0x0A000001) + b"\x04eth0" + struct.pack(">Q", 5) + struct.pack(">I", 77) + b"\x03dns"
            + struct.pack(">I", 0x0A000002) + b"\xff" + struct.pack(">H", 300) + long_name + struct.pack(">Q", 6)
            + struct.pack(">I", 78) + b"\x00")
    c = make_collector()
    (f,) = c.handle([(ipfix_msg([t, iset(310, recs)]), "198.51.100.1")])
    rows = f.rows()
    assert [r["packets"] for r in rows] == [5, 6]
    assert [r["interfaceName"] for r in rows] == ["eth0", "x" * 300]
    assert [r["applicationName"] for r in rows] == ["dns", ""]
    assert [r["e2636.137"] for r in rows] == [77, 78]
    assert [r["src"] for r in rows] == ["10.0.0.1", "10.0.0.2"]
    assert not c.counters.drops


def test_data_before_template_is_held_then_decoded_or_expired():
    c = make_collector(pending_timeout=5.0)
    data = ipfix_msg([iset(320, struct.pack(">IQ", 0x0A000001, 9) * 3)])
    assert c.handle([(data, "198.51.100.1")], now_ns=T0) == []
    assert c.decoder.exporters["198.51.100.1"].counters["pending"] == 1
    (f,) = c.handle([(ipfix_msg([iset(2, tmpl(320, [(8, 4), (2, 8)]))]), "198.51.100.1")], now_ns=T0 + 10**9)
    assert len(f) == 3 and c.counters["pending-resolved"] == 1
    # another orphan set, never resolved
    c.handle([(ipfix_msg([iset(321, b"\x00" * 12)]), "198.51.100.1")], now_ns=T0)
    c.tick(now_ns=T0 + 4 * 10**9)
    assert c.counters.drops[("decode", "no-template")] == 0
    c.tick(now_ns=T0 + 6 * 10**9)
    assert c.counters.drops[("decode", "no-template")] == 1


def test_pending_is_bounded():
    c = make_collector()
    msgs = [(ipfix_msg([iset(330, b"\x01" * 8)]), "198.51.100.1")] * 300
    c.handle(msgs, now_ns=T0)
    assert c.decoder.exporters["198.51.100.1"].counters["pending"] == 256
    assert c.counters.drops[("decode", "pending-overflow")] == 44


def test_template_withdrawal():
    c = make_collector()
    t = iset(2, tmpl(340, [(8, 4)]) + tmpl(341, [(12, 4)]))
    c.handle([(ipfix_msg([t]), "198.51.100.1")])
    dom = c.decoder.exporters["198.51.100.1"].domains[(10, 1)]
    assert set(dom.templates) == {340, 341}
    c.handle([(ipfix_msg([iset(2, struct.pack(">HH", 340, 0))]), "198.51.100.1")])
    assert set(dom.templates) == {341}
    c.handle([(ipfix_msg([iset(2, struct.pack(">HH", 2, 0))]), "198.51.100.1")])  # withdraw all
    assert dom.templates == {} and c.decoder.exporters["198.51.100.1"].template_count == 0


def test_template_store_is_bounded_per_exporter():
    c = make_collector(max_templates=10)
    t = iset(2, b"".join(tmpl(1000 + i, [(8, 4)]) for i in range(50)))
    c.handle([(ipfix_msg([t], domain=d), "198.51.100.1") for d in range(3)])
    exp = c.decoder.exporters["198.51.100.1"]
    assert exp.template_count == 10 == sum(len(d.templates) for d in exp.domains.values())
    assert c.counters["templates-evicted"] == 140  # the least recently used gave way: the last ten are held
    assert sorted(exp.domains[(10, 2)].templates) == list(range(1040, 1050))
    # another exporter has its own budget
    c.handle([(ipfix_msg([t]), "198.51.100.2")])
    assert c.decoder.exporters["198.51.100.2"].template_count == 10


def test_template_redefinition_replaces_layout():
    c = make_collector()
    c.handle([(ipfix_msg([iset(2, tmpl(350, [(8, 4), (2, 8)]))]), "198.51.100.1")])
    c.handle([(ipfix_msg([iset(2, tmpl(350, [(2, 8), (8, 4)]))]), "198.51.100.1")])
    (f,) = c.handle([(ipfix_msg([iset(350, struct.pack(">QI", 42, 0x0A000009))]), "198.51.100.1")])
    assert f.rows()[0]["packets"] == 42 and f.rows()[0]["src"] == "10.0.0.9"
    assert c.counters["template-changes"] == 1


# ---------------------------------------------------------------------------
# malformed input: counted by reason, never raises


def v9_msg(sets: list[bytes], *, uptime: int = 1000, secs: int = 1_700_000_000, seq: int = 0, sid: int = 0) -> bytes:
    return struct.pack(">HHIIII", 9, len(sets), uptime, secs, seq, sid) + b"".join(sets)


MALFORMED = {
    "short-header": [b"\x00", b"\x00\x05\x00\x01", b"\x00\x09" + b"\x00" * 10, b"\x00\x0a" + b"\x00" * 8],
    "bad-version": [b"\x00\x07" + b"\x00" * 30, b"\xde\xad\xbe\xef" * 8],
    "bad-count": [struct.pack(">HHIIIIBBH", 5, 31, 0, 0, 0, 0, 0, 0, 0) + b"\x00" * 48 * 31,
                  struct.pack(">HHIIIIBBH", 5, 0, 0, 0, 0, 0, 0, 0, 0)],
    "count-mismatch": [struct.pack(">HHIIIIBBH", 5, 3, 0, 0, 0, 0, 0, 0, 0) + b"\x00" * 60],
    "length-mismatch": [struct.pack(">HHIII", 10, 400, 0, 0, 0) + iset(2, tmpl(300, [(8, 4)]))],
    "set-length": [ipfix_msg([struct.pack(">HH", 2, 200) + b"\x00" * 8]),
                   v9_msg([struct.pack(">HH", 0, 999) + b"\x00" * 8])],
    "short-set": [ipfix_msg([struct.pack(">HH", 2, 2) + b"\x00" * 8])],
    "reserved-set-id": [ipfix_msg([iset(7, b"\x00" * 8)])],
    "template-truncated": [ipfix_msg([iset(2, struct.pack(">HH", 300, 40) + b"\x00\x08\x00\x04")]),
                           v9_msg([iset(0, struct.pack(">HH", 300, 400))])],
    "zero-length-template": [ipfix_msg([iset(2, tmpl(300, [(8, 0), (12, 0)]))]),
                             v9_msg([iset(0, struct.pack(">HH", 300, 0) + b"\x01")])],
    "bad-template-id": [ipfix_msg([iset(2, tmpl(7, [(8, 4)]))]), v9_msg([iset(0, tmpl(255, [(8, 4)]))])],
    "bad-options-template": [ipfix_msg([iset(3, struct.pack(">HHH", 300, 1, 0) + b"\x00\x08\x00\x04")]),
                             v9_msg([iset(1, struct.pack(">HHH", 300, 3, 4) + b"\x00" * 8)])],
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_malformed_is_counted_by_reason(reason):
    c = make_collector()
    for msg in MALFORMED[reason]:
        c.handle([(msg, "203.0.113.9")])
    assert c.counters.drops[("decode", reason)] >= len(MALFORMED[reason]), dict(c.counters.drops)
    assert ("decode", "internal-error") not in c.counters.drops


def test_varlen_length_that_lies():
    t = iset(2, tmpl(360, [(8, 4), (82, 65535)]))
    c = make_collector()
    flows = c.handle([(ipfix_msg([t, iset(360, struct.pack(">I", 1) + b"\x02ab" + struct.pack(">I", 2) + b"\xfe")]),
                       "203.0.113.9")])
    assert sum(map(len, flows)) == 1
    assert c.counters.drops[("decode", "bad-varlen")] == 1


def test_huge_template_id_and_template_loop_terminate():
    c = make_collector()
    # the highest template id is fine; a template set made of withdrawals of itself only loops over its bytes
    t = iset(2, tmpl(65535, [(8, 4)]))
    (f,) = c.handle([(ipfix_msg([t, iset(65535, b"\x0a\x00\x00\x01")]), "203.0.113.9")])
    assert len(f) == 1
    c.handle([(ipfix_msg([iset(2, struct.pack(">HH", 65535, 0) * 2000)]), "203.0.113.9")])
    assert ("decode", "internal-error") not in c.counters.drops


def test_random_bytes_never_raise():
    rng = np.random.default_rng(7)
    c = make_collector()
    for i in range(2000):
        n = int(rng.integers(0, 300))
        b = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        if n >= 2 and i % 2:
            b[0:2] = (5, 9, 10)[i % 3].to_bytes(2, "big")
        c.handle([(bytes(b), f"203.0.113.{i % 7}")])
    assert ("decode", "internal-error") not in c.counters.drops
    assert c.counters["datagrams"] == 2000


# ---------------------------------------------------------------------------
# config


def issues_of(section) -> list[tuple]:
    _, issues = parse({"services": {"flow-collector": section}})
    return [(i.path, i.message) for i in issues]


def test_config_defaults_and_values():
    cfg, issues = parse({"services": {"flow-collector": {
        "listen": [{"address": "127.0.0.1", "port": 4739, "protocol": "udp"}, {"address": "::1", "port": 2055}],
        "output": {"jsonl": "/tmp/x.jsonl"}, "pending-timeout": 2.5}}})
    assert issues == []
    assert cfg.listen == [Listen("127.0.0.1", 4739), Listen("::1", 2055)]
    assert cfg.jsonl == "/tmp/x.jsonl" and cfg.max_templates == 1024 and cfg.pending_timeout == 2.5
    assert parse({"services": {}}) == (None, [])


def test_config_errors_name_key_paths():
    p = ("services", "flow-collector")
    got = issues_of({"listen": [{"address": "300.1.1.1", "port": 1}, {"address": "::1", "port": 70000},
                                {"port": 5, "protocol": "sctp"}, "x"],
                     "output": {"json": "a"}, "max-templates-per-exporter": 0, "pending-timeout": -1, "bogus": 1})
    paths = [g[0] for g in got]
    assert p + ("listen", 0, "address") in paths
    assert p + ("listen", 1, "port") in paths
    assert p + ("listen", 2, "protocol") in paths
    assert p + ("listen", 3) in paths
    assert p + ("output", "json") in paths
    assert p + ("max-templates-per-exporter",) in paths
    assert p + ("pending-timeout",) in paths
    assert p + ("bogus",) in paths
    assert issues_of({})[0][0] == p and "listen" in issues_of({})[0][1]


def test_config_validates_through_the_app(make_app):
    from flowplane.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        make_app({"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": "x"}]}}},
                 plugins=[(collector_plugin, "collector")])
    assert "services.flow-collector.listen.0.port" in str(ei.value) or "port" in str(ei.value)


# ---------------------------------------------------------------------------
# options data applied: the scale config key


def test_scale_config_key_and_errors():
    cfg, issues = parse({"services": {"flow-collector": {"listen": [{"port": 0}], "scale-by-sampling-rate": True,
                                                         "tcp-idle-timeout": 30}}})
    assert not issues and cfg.scale is True and cfg.tcp_idle_timeout == 30.0
    _, issues = parse({"services": {"flow-collector": {"listen": [{"port": 0}], "scale-by-sampling-rate": "yes"}}})
    assert [i.path for i in issues] == [("services", "flow-collector", "scale-by-sampling-rate")]
    _, issues = parse({"services": {"flow-collector": {"listen": [{"port": 0}], "scale-by-sampling": True}}})
    assert "scale-by-sampling-rate" in str(issues[0])  # did you mean


# ---------------------------------------------------------------------------
# the batch fast paths (Decoder.feed_many: per-datagram and whole-run) == feed, datagram by datagram


def _decode_both(batches: list[list[tuple[bytes, str]]], now=T0 + 4000 * 10**9):
    """The same batches through Collector.handle (feed_many) and through Decoder.feed one by one."""
    fast, slow = make_collector(), Decoder()
    got_fast, got_slow = [], []
    for b in batches:
        got_fast += fast.handle(b, now_ns=now)
        for d, a in b:
            slow.feed(d, a, now)
        got_slow += slow.flush()
    return fast, slow, got_fast, got_slow


def _same_result(fast, slow, got_fast, got_slow):
    def rows(flows):
        out = np.concatenate([f.data for f in flows]) if flows else np.zeros(0, FLOW_DTYPE)
        return np.sort(out, order=["first_ns", "src_lo", "sport", "dport", "packets"])
    assert np.array_equal(rows(got_fast), rows(got_slow))
    assert sorted(np.concatenate([f.sampling_interval for f in got_fast]).tolist()) == sorted(
        np.concatenate([f.sampling_interval for f in got_slow]).tolist())
    assert dict(fast.counters.values) == {**dict(slow.counters.values), "batches": fast.counters["batches"]}
    assert dict(fast.counters.drops) == dict(slow.counters.drops)
    for addr, e in slow.exporters.items():
        assert fast.decoder.exporters[addr].counters == e.counters
        for k, dom in e.domains.items():
            assert fast.decoder.exporters[addr].domains[k].next_seq == dom.next_seq
            assert fast.decoder.exporters[addr].domains[k].lost == dom.lost


@pytest.mark.parametrize("version", [5, 9, 10])
def test_feed_many_equals_feed(version):
    mod = {5: netflow5, 9: netflow9, 10: ipfix}[version]
    streams = []
    for k in range(3):
        enc = mod.factory(EncoderOptions(version=version, observation_domain_id=k + 1, engine_id=k,
                                         sampling_interval=1 + 9 * k))
        recs = sample_records(900, seed=version * 10 + k, v4_only=version == 5)
        streams.append([(d, f"192.0.2.{k + 1}") for d in enc.encode(recs, T0 + 4000 * 10**9)])
    a, b, c = streams
    a = a[:5] + a[6:]  # a gap in stream a: counted lost the same way on both paths
    dup = b[7]  # a repeated datagram in b: a sequence reset, decoded twice, on both paths
    b = b[:8] + [dup] + b[8:]
    c = c[:1] + [(c[1][0][:-7], c[1][1])] + c[2:]  # a short one (a lying length / truncated set)
    inter = [x for trio_ in zip(a, b, c) for x in trio_]  # interleaved exporters
    batches = [inter[:2], inter[2:40], inter[40:41], inter[41:]]  # templates first, then runs of one length
    runs = []
    orig = Decoder._run

    def counting(self, exp, datas, ln):
        ok = orig(self, exp, datas, ln)
        runs.append((len(datas), ok))
        return ok

    Decoder._run = counting
    try:
        fast, slow, gf, gs = _decode_both(batches)
    finally:
        Decoder._run = orig
    assert sum(map(len, gf)) > 2000
    assert sum(n for n, ok in runs if ok > 0) > 30  # the whole-run path did take part
    _same_result(fast, slow, gf, gs)


def test_feed_many_takes_runs_in_one_block():
    """Full datagrams of one exporter after its templates: decoded by the whole-run path."""
    enc = ipfix.factory(EncoderOptions(version=10))
    dgrams = enc.encode(sample_records(3000, seed=5, v4_only=True), T0 + 4000 * 10**9)
    c = make_collector()
    c.handle([(dgrams[0], "192.0.2.9")], now_ns=T0)
    calls = []
    run = c.decoder._run
    c.decoder._run = lambda *a: calls.append(len(a[1])) or run(*a)
    flows = c.handle([(d, "192.0.2.9") for d in dgrams[1:]], now_ns=T0)
    assert calls and max(calls) >= len(dgrams) - 3
    assert sum(map(len, flows)) + sum(map(len, make_collector().handle([(dgrams[0], "x")]))) == 3000
    assert not c.counters.drops


@pytest.mark.parametrize("version", [5, 9, 10])
def test_feed_many_decodes_around_sequence_breaks(version):
    """A gap, a restart (the stream replayed) and a break near a run's start, inside runs of full datagrams:
    the datagrams around each break still take the whole-run path, with the same result as feed."""
    mod = {5: netflow5, 9: netflow9, 10: ipfix}[version]
    enc = mod.factory(EncoderOptions(version=version, observation_domain_id=3))
    st = [(d, "192.0.2.5") for d in enc.encode(sample_records(2400, seed=40 + version, v4_only=True),
                                               T0 + 4000 * 10**9)]
    head, body = st[:1], st[1:-1]  # templates; full datagrams (the last, shorter one left out)
    assert len(body) > 70
    seq = body[:30] + body[31:50] + body[3:40] + body[43:46] + body[60:]  # gap, restart, gap after 3
    runs = []
    orig = Decoder._run

    def counting(self, exp, datas, ln):
        took = orig(self, exp, datas, ln)
        runs.append(took)
        return took

    Decoder._run = counting
    try:
        fast, slow, gf, gs = _decode_both([head, seq])
    finally:
        Decoder._run = orig
    assert sum(t for t in runs if t > 0) >= len(seq) - 4  # all but the datagrams right at the breaks
    assert any(t < 0 for t in runs)
    assert sum(d.lost for e in slow.exporters.values() for d in e.domains.values()) > 0
    _same_result(fast, slow, gf, gs)


def test_deferred_groups_wait_for_size_or_age_and_the_tick_flushes_them():
    from flowplane.plugins.collector.collector import DEFER_RECORDS, DEFER_S

    enc = ipfix.factory(EncoderOptions(version=10))
    dgrams = enc.encode(sample_records(600, seed=8, v4_only=True), T0 + 4000 * 10**9)
    c = make_collector()
    got = []
    c.subscribers.append(got.extend)
    c.handle([(d, "192.0.2.7") for d in dgrams[:10]], now_ns=T0, defer=True)
    assert sum(map(len, got)) == 0 and c.counters["records"] == 0  # 10 datagrams: fewer than DEFER_RECORDS
    assert c.decoder.records_in_batch > 0
    c.handle([(d, "192.0.2.7") for d in dgrams[10:20]], now_ns=T0 + int(DEFER_S * 1e9), defer=True)
    first = sum(map(len, got))
    assert 0 < first < 600  # the first group was old enough: decoded with what joined it
    c.handle([(d, "192.0.2.7") for d in dgrams[20:]], now_ns=T0 + int(DEFER_S * 1e9) + 1, defer=True)
    c.tick(T0 + 10**9)  # the one-second timer decodes whatever still waits
    assert sum(map(len, got)) == 600 == c.counters["records"] and DEFER_RECORDS > 600
    assert c.decoder.records_in_batch == 0

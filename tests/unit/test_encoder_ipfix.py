"""IPFIX encoder, checked with the independent parser of test_encoder_v9.py (RFC 7011 layout)."""

from __future__ import annotations

import struct

import pytest

from flowplane.export import EncoderOptions
from flowplane.flows import SAMPLING_RANDOM, FlowRecords
from flowplane.plugins.encoders import ipfix

from test_encoder_v9 import ALL, IDS, T0, Collector, check_records, expected_fields, kinds, make_records


def encoder(**kw):
    return ipfix.ENCODER_TYPE.factory(EncoderOptions(version=10, **kw))


def test_registration():
    got = {}
    ipfix.flowplane_register_encoders(lambda name, obj: got.setdefault(name, obj))
    t = got["ipfix"]
    assert t.name == "ipfix" and t.versions == (10,)
    assert isinstance(t.factory(EncoderOptions()), ipfix.IpfixEncoder)


def test_templates_field_by_field():
    enc = encoder(templates=ALL, observation_domain_id=4242, exporting_process_id=3, sampling_interval=200,
                  sampling_algorithm=SAMPLING_RANDOM)
    c = Collector()
    [msg] = enc.templates(T0)
    p = c.parse(msg)
    assert p["header"] == {"version": 10, "length": len(msg), "export": T0 // 10**9, "seq": 0, "domain": 4242}
    assert [s[0] for s in p["sets"]] == [2, 3, 512]
    assert {tid: f for tid, f in p["templates"]} == {IDS[f]: expected_fields(f, True) for f in ALL}
    [(tid, fields, nscope)] = p["options_templates"]
    assert tid == 512 and nscope == 1
    assert fields == [(149, 4), (144, 4), (34, 4), (304, 2), (305, 4), (306, 4)]
    # options template record is 6 + 6*4 = 30 bytes: the set is padded with 2 zero bytes
    assert dict(p["sets"])[3] == 4 + 30 + 2
    assert p["options"] == [(512, {149: 4242, 144: 3, 34: 200, 304: 3, 305: 1, 306: 199})]


def test_roundtrip_and_sequence():
    recs = make_records(3000, seed=21)
    enc = encoder(templates=ALL, observation_domain_id=1)
    c = Collector()
    sent = 0
    data = []
    for m in enc.encode(recs, T0 + 500_000_000):
        assert len(m) <= 1472
        p = c.parse(m)
        assert p["header"]["seq"] == sent  # RFC 7011 3.1: data records sent before this message
        assert p["header"]["export"] == T0 // 10**9
        sent += len(p["data"]) + len(p["options"])
        data += p["data"]
    check_records(data, recs, enc.options, ipfix=True)
    # sequence carries on in the next call
    more = enc.encode(make_records(50, seed=1, mix=False), T0 + 10**9)
    assert c.parse(more[0])["header"]["seq"] == sent


def test_sequence_counts_options_data():
    enc = encoder()
    c = Collector()
    assert c.parse(enc.templates(T0)[0])["header"]["seq"] == 0
    assert c.parse(enc.options_data(T0)[0])["header"]["seq"] == 1
    assert c.parse(enc.encode(make_records(5, mix=False), T0)[0])["header"]["seq"] == 2


def test_absolute_times_and_end_reason():
    recs = make_records(300, seed=8, mix=False, boot_ns=0)
    c = Collector()
    for m in encoder().encode(recs, T0):
        for _, rec in c.parse(m)["data"]:
            row = recs.data[rec[10]]
            assert rec[152] == row["first_ns"] // 10**6 and rec[153] == row["last_ns"] // 10**6
            assert rec[136] == row["end_reason"]


@pytest.mark.parametrize("kw,limit", [({}, 1472), ({"mtu": 576}, 548), ({"ipv6_transport": True}, 1452),
                                      ({"stream": True}, 65535)])
def test_mtu_bound(kw, limit):
    recs = make_records(5000, seed=9)
    enc = encoder(templates=ALL, **kw)
    c = Collector()
    msgs = enc.encode(recs, T0)
    assert all(len(m) <= limit for m in msgs)
    assert all(len(m) > limit - 2 * (4 + 3 + 97) for m in msgs[:-1])
    data = [d for m in msgs for d in c.parse(m)["data"]]
    check_records(data, recs, enc.options, ipfix=True)


def test_scaled_counts():
    c = Collector()
    for scale_counts, already, scale in [(True, False, 64), (True, True, 1), (False, False, 1)]:
        recs = make_records(100, seed=6, sampling_interval=64)
        recs.scaled = already
        enc = encoder(templates=ALL, scale_counts=scale_counts)
        data = [d for m in enc.encode(recs, T0) for d in c.parse(m)["data"]]
        check_records(data, recs, enc.options, ipfix=True, scale=scale)


def test_routing_ipv6_mpls_bridge():
    recs = make_records(2000, seed=10)
    enc = encoder(templates=("ipv6", "mpls", "bridge"))
    c = Collector()
    data = [d for m in enc.encode(recs, T0) for d in c.parse(m)["data"]]
    check_records(data, recs, enc.options, ipfix=True)  # v4 without labels -> bridge; v4 with labels -> mpls
    assert {t for t, _ in data} == {257, 258, 260}
    assert enc.counters.drops[("encode", "no-template")] == 0


def test_refresh_by_packets_and_seconds():
    enc = encoder(template_refresh_packets=7, template_refresh_seconds=30, option_refresh_packets=0,
                  option_refresh_seconds=0)
    c = Collector()
    ks = kinds(c, enc.encode(make_records(1000, mix=False), T0))
    assert [i for i, k in enumerate(ks) if k[0]] == list(range(0, len(ks), 7))
    assert [i for i, k in enumerate(ks) if k[1]] == list(range(0, len(ks), 7))
    n = len(ks) % 7  # packets since the last refresh
    ks = kinds(c, enc.encode(make_records(10, mix=False), T0 + 29 * 10**9))
    assert ks[0][0] == (n == 0)
    ks = kinds(c, enc.encode(make_records(10, mix=False), T0 + 31 * 10**9))
    assert ks[0][0]  # 30 s passed


def test_reset_and_empty():
    enc = encoder()
    c = Collector()
    [m] = enc.encode(FlowRecords.empty(), T0)
    assert kinds(c, [m]) == [(True, True, 0)]
    assert enc.encode(FlowRecords.empty(), T0) == []
    assert kinds(c, enc.encode(make_records(3, mix=False), T0)) == [(False, False, 3)]
    enc.reset_templates()
    assert kinds(c, enc.encode(make_records(3, mix=False), T0)) == [(True, True, 3)]


def test_ipfix_header_raw():
    """The 16-byte header, read with struct directly."""
    enc = encoder(observation_domain_id=0xDEADBEEF)
    m = enc.encode(make_records(20, mix=False), T0 + 1)[0]
    ver, length, export, seq, dom = struct.unpack_from(">HHIII", m)
    assert (ver, length, export, seq, dom) == (10, len(m), T0 // 10**9, 0, 0xDEADBEEF)

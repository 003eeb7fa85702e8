"""NetFlow v5 encoder: bytes checked with an independent struct parser."""

from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest

from flowplane.export import EncoderOptions, EncoderType
from flowplane.flows import FLOW_DTYPE, SAMPLING_DETERMINISTIC, SAMPLING_RANDOM, FlowRecords
from flowplane.plugins.encoders import netflow5
from flowplane.stats import Counters

HDR = struct.Struct("!HHIIIIBBH")
REC = struct.Struct("!IIIHHIIIIHHBBBBHHBBH")
HDR_NAMES = ("version", "count", "sys_uptime", "unix_secs", "unix_nsecs", "flow_sequence",
             "engine_type", "engine_id", "sampling")
REC_NAMES = ("srcaddr", "dstaddr", "nexthop", "input", "output", "dPkts", "dOctets", "First", "Last",
             "srcport", "dstport", "pad1", "tcp_flags", "prot", "tos", "src_as", "dst_as",
             "src_mask", "dst_mask", "pad2")

BOOT = 1_700_000_000_123_000_000  # ms-aligned boot time
MAPPED = 0xFFFF_0000_0000


def parse(dgram: bytes) -> tuple[dict, list[dict]]:
    assert len(dgram) >= HDR.size
    h = dict(zip(HDR_NAMES, HDR.unpack_from(dgram, 0)))
    assert len(dgram) == HDR.size + h["count"] * REC.size, "datagram length disagrees with count"
    recs = [dict(zip(REC_NAMES, REC.unpack_from(dgram, HDR.size + i * REC.size))) for i in range(h["count"])]
    return h, recs


def a4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def make(rows: list[dict], **kw) -> FlowRecords:
    data = np.zeros(len(rows), dtype=FLOW_DTYPE)
    for i, r in enumerate(rows):
        r = dict(r)
        data["af"][i] = r.pop("af", 4)
        for side in ("src", "dst", "nexthop"):
            if side in r:
                v = r.pop(side)
                if ":" in v:
                    x = int(ipaddress.IPv6Address(v))
                    data[f"{side}_hi"][i], data[f"{side}_lo"][i] = x >> 64, x & (2**64 - 1)
                else:
                    data[f"{side}_lo"][i] = MAPPED | a4(v)
        for k, v in r.items():
            data[k][i] = v
    kw.setdefault("boot_ns", BOOT)
    return FlowRecords(data, **kw)


def simple(n: int, **kw) -> FlowRecords:
    rows = [dict(src=f"10.0.{i // 256}.{i % 256}", dst="192.0.2.1", packets=i + 1, bytes=100 * (i + 1),
                 first_ns=BOOT + i * 1_000_000, last_ns=BOOT + i * 1_000_000 + 5_000_000_000,
                 proto=17, sport=1000 + i, dport=53) for i in range(n)]
    return make(rows, **kw)


def enc(**kw) -> netflow5.NetFlowV5Encoder:
    return netflow5.factory(EncoderOptions(version=5, **kw))


def test_every_field():
    now = BOOT + 10_000_000_000 + 456_789  # 10 s (and a bit) after boot
    r = make([
        dict(src="10.1.2.3", dst="198.51.100.7", nexthop="10.1.2.254", in_if=7, out_if=9, packets=12,
             bytes=3456, first_ns=BOOT + 1_500_000_000, last_ns=BOOT + 9_250_000_000, sport=40000, dport=443,
             tcp_flags=0x1B, proto=6, tos=0xB8, src_as=64512, dst_as=65000, src_mask=24, dst_mask=16),
        dict(src="172.16.0.1", dst="8.8.8.8", packets=1, bytes=84, first_ns=BOOT + 2_000_000, last_ns=BOOT + 2_000_000,
             proto=1, sport=0, dport=0x0800, icmp_type=8, src_mask=40, dst_mask=0),
    ])
    e = enc(engine_type=55, engine_id=5)
    out = e.encode(r, now)
    assert len(out) == 1
    h, recs = parse(out[0])
    assert h == dict(version=5, count=2, sys_uptime=10_000, unix_secs=now // 10**9, unix_nsecs=now % 10**9,
                     flow_sequence=0, engine_type=55, engine_id=5, sampling=0)
    assert recs[0] == dict(srcaddr=a4("10.1.2.3"), dstaddr=a4("198.51.100.7"), nexthop=a4("10.1.2.254"),
                           input=7, output=9, dPkts=12, dOctets=3456, First=1500, Last=9250, srcport=40000,
                           dstport=443, pad1=0, tcp_flags=0x1B, prot=6, tos=0xB8, src_as=64512, dst_as=65000,
                           src_mask=24, dst_mask=16, pad2=0)
    assert recs[1] == dict(srcaddr=a4("172.16.0.1"), dstaddr=a4("8.8.8.8"), nexthop=0, input=0, output=0,
                           dPkts=1, dOctets=84, First=2, Last=2, srcport=0, dstport=0x0800, pad1=0, tcp_flags=0,
                           prot=1, tos=0, src_as=0, dst_as=0, src_mask=32, dst_mask=0, pad2=0)
    assert e.counters["records"] == 2 and e.counters["datagrams"] == 1


def test_thirty_per_datagram_and_sequence_across_packets_and_calls():
    e = enc()
    out = e.encode(simple(65), BOOT + 10**9)
    parsed = [parse(d) for d in out]
    assert [h["count"] for h, _ in parsed] == [30, 30, 5]
    assert [h["flow_sequence"] for h, _ in parsed] == [0, 30, 60]
    assert [len(d) for d in out] == [24 + 30 * 48, 24 + 30 * 48, 24 + 5 * 48]
    # records in input order, none lost
    assert [r["srcport"] for _, rs in parsed for r in rs] == [1000 + i for i in range(65)]
    out2 = e.encode(simple(31), BOOT + 2 * 10**9)
    assert [parse(d)[0]["flow_sequence"] for d in out2] == [65, 95]
    assert [parse(d)[0]["count"] for d in out2] == [30, 1]
    assert e.counters["records"] == 96 and e.counters["datagrams"] == 5


def test_sequence_wraps_modulo_2_32():
    e = enc()
    e.sequence = 2**32 - 10
    out = e.encode(simple(40), BOOT)
    assert [parse(d)[0]["flow_sequence"] for d in out] == [2**32 - 10, 20]
    assert e.sequence == 30


def test_small_mtu_fewer_records():
    e = enc(mtu=576)  # 548-byte payload: (548 - 24) // 48 = 10 records
    out = e.encode(simple(25), BOOT)
    assert [parse(d)[0]["count"] for d in out] == [10, 10, 5]
    assert max(map(len, out)) <= 548
    assert enc(mtu=9000).per_datagram == 30  # never more than 30, whatever the MTU


def test_empty_and_all_ipv6():
    e = enc()
    assert e.encode(FlowRecords.empty(0), BOOT) == []
    r = make([dict(af=6, src="2001:db8::1", dst="2001:db8::2", packets=1, bytes=80)] * 3)
    assert e.encode(r, BOOT) == []
    assert e.counters["not_ipv4"] == 3
    assert e.sequence == 0


def test_ipv6_not_encoded_and_counted():
    counters = Counters("exp")
    e = netflow5.NetFlowV5Encoder(EncoderOptions(version=5), counters)
    rows = [dict(src="10.0.0.1", dst="10.0.0.2", packets=1, bytes=60, sport=1),
            dict(af=6, src="2001:db8::1", dst="2001:db8::2", packets=5, bytes=500, sport=2),
            dict(src="10.0.0.3", dst="10.0.0.4", packets=2, bytes=120, sport=3),
            dict(af=6, src="::ffff:10.9.9.9", dst="2001:db8::2", packets=5, bytes=500, sport=4)]
    out = e.encode(make(rows), BOOT)
    h, recs = parse(out[0])
    assert h["count"] == 2
    assert [r["srcport"] for r in recs] == [1, 3]
    assert counters["not_ipv4"] == 2 and e.counters is counters


def test_counts_over_32_bits_are_split_preserving_totals():
    big_p = 2**32 + 10  # needs 2 records for packets alone
    big_b = 3 * 2**32 + 7  # needs 4 records
    r = make([dict(src="10.0.0.1", dst="10.0.0.2", packets=big_p, bytes=big_p * 64, sport=1,
                   first_ns=BOOT + 1_000_000, last_ns=BOOT + 9_000_000),
              dict(src="10.0.0.3", dst="10.0.0.4", packets=1000, bytes=big_b, sport=2),
              dict(src="10.0.0.5", dst="10.0.0.6", packets=2**32 - 1, bytes=2**32 - 1, sport=3)])
    e = enc()
    recs = [x for d in e.encode(r, BOOT + 10**10) for x in parse(d)[1]]
    by_port: dict[int, list[dict]] = {}
    for x in recs:
        by_port.setdefault(x["srcport"], []).append(x)
    first = by_port[1]
    k = -(-big_p * 64 // (2**32 - 1))  # the bytes need the most pieces: 65
    assert k == 65 and len(first) == k
    assert sum(x["dPkts"] for x in first) == big_p and sum(x["dOctets"] for x in first) == big_p * 64
    assert all(x["First"] == 1 and x["Last"] == 9 and x["srcaddr"] == a4("10.0.0.1") for x in first)
    second = by_port[2]
    assert len(second) == 4
    assert sum(x["dPkts"] for x in second) == 1000 and sum(x["dOctets"] for x in second) == big_b
    assert max(x["dOctets"] for x in second) - min(x["dOctets"] for x in second) <= 1
    assert len(by_port[3]) == 1 and by_port[3][0]["dPkts"] == 2**32 - 1  # the maximum itself fits
    assert e.counters["split_records"] == (k - 1) + 3
    assert e.counters["records"] == len(recs) == k + 4 + 1
    # sequence counts records actually sent
    assert e.sequence == len(recs)


def test_as_trans_and_16_bit_clipping():
    r = make([dict(src="10.0.0.1", dst="10.0.0.2", src_as=65535, dst_as=65536, in_if=65535, out_if=65536),
              dict(src="10.0.0.1", dst="10.0.0.2", src_as=4_200_000_000, dst_as=23456, in_if=2**32 - 1, out_if=1),
              dict(src="10.0.0.1", dst="10.0.0.2", nexthop="2001:db8::1")])
    recs = parse(enc().encode(r, BOOT)[0])[1]
    assert [(x["src_as"], x["dst_as"]) for x in recs[:2]] == [(65535, 23456), (23456, 23456)]
    assert [(x["input"], x["output"]) for x in recs[:2]] == [(65535, 65535), (65535, 1)]
    assert recs[2]["nexthop"] == 0


@pytest.mark.parametrize("interval, algo, expected", [
    (1, SAMPLING_DETERMINISTIC, 0),
    (100, SAMPLING_DETERMINISTIC, 0x4000 | 100),
    (100, SAMPLING_RANDOM, 0x8000 | 100),
    (16383, SAMPLING_DETERMINISTIC, 0x4000 | 16383),
    (20000, SAMPLING_DETERMINISTIC, 0x4000 | 16383),  # clipped to 14 bits
    (70000, SAMPLING_RANDOM, 0x8000 | 16383),
])
def test_sampling_interval_field(interval, algo, expected):
    r = simple(2, sampling_interval=interval, sampling_algorithm=algo)
    h, recs = parse(enc().encode(r, BOOT)[0])
    assert h["sampling"] == expected
    assert h["sampling"] >> 14 == {0: 0, 1: 1, 2: 2}[expected >> 14]
    assert [x["dPkts"] for x in recs] == [1, 2]  # counts left as sampled


def test_sampling_from_options_when_records_do_not_say():
    e = enc(sampling_interval=50, sampling_algorithm=SAMPLING_RANDOM)
    h, _ = parse(e.encode(simple(1), BOOT)[0])
    assert h["sampling"] == 0x8000 | 50


def test_scale_counts():
    r = simple(3, sampling_interval=100)
    h, recs = parse(enc(scale_counts=True).encode(r, BOOT)[0])
    assert [(x["dPkts"], x["dOctets"]) for x in recs] == [(100, 10_000), (200, 20_000), (300, 30_000)]
    assert h["sampling"] == 0  # counts already scaled: collectors must not multiply again
    # records already scaled upstream: never multiplied twice
    r2 = simple(3, sampling_interval=100, scaled=True)
    h2, recs2 = parse(enc(scale_counts=True).encode(r2, BOOT)[0])
    assert [x["dPkts"] for x in recs2] == [1, 2, 3] and h2["sampling"] == 0
    # scaling can push counts over 32 bits: split, totals exact
    r3 = make([dict(src="10.0.0.1", dst="10.0.0.2", packets=2**31, bytes=2**31 * 100)], sampling_interval=4)
    recs3 = [x for d in enc(scale_counts=True).encode(r3, BOOT) for x in parse(d)[1]]
    assert sum(x["dPkts"] for x in recs3) == 2**33 and sum(x["dOctets"] for x in recs3) == 2**33 * 100


def test_sys_uptime_relative_times():
    boot = 5_000_000_000_000  # ms-aligned
    r = make([dict(src="10.0.0.1", dst="10.0.0.2", first_ns=boot - 3_000_000_000, last_ns=boot + 999_999),
              dict(src="10.0.0.1", dst="10.0.0.2", first_ns=boot + 61_234_567_890, last_ns=boot + 62_000_000_000)],
             boot_ns=boot)
    now = boot + 62_500_400_000
    h, recs = parse(enc().encode(r, now)[0])
    assert h["sys_uptime"] == 62_500
    assert h["unix_secs"] == now // 10**9 and h["unix_nsecs"] == now % 10**9
    assert (recs[0]["First"], recs[0]["Last"]) == (0, 0)  # before boot clips to 0; 0.999 ms floors to 0
    assert (recs[1]["First"], recs[1]["Last"]) == (61_234, 62_000)
    # uptime wraps like a router's after 2**32 ms (49.7 days)
    later = boot + (2**32 + 5) * 1_000_000
    assert parse(enc().encode(r, later)[0])[0]["sys_uptime"] == 5


def test_options_and_contract():
    e = enc()
    assert e.templates(0) == [] and e.options_data(0) == []
    assert e.reset_templates() is None
    with pytest.raises(ValueError):
        enc(engine_id=256)
    with pytest.raises(ValueError):
        enc(engine_type=-1)


def test_registration():
    got = {}
    netflow5.flowplane_register_encoders(lambda name, t: got.__setitem__(name, t))
    t = got["v5"]
    assert isinstance(t, EncoderType) and t.name == "v5" and t.versions == (5,)
    assert isinstance(t.factory(EncoderOptions(version=5)), netflow5.NetFlowV5Encoder)


def test_speed_100k_records():
    rng = np.random.default_rng(7)
    n = 100_000
    data = np.zeros(n, dtype=FLOW_DTYPE)
    data["af"] = 4
    data["src_lo"] = MAPPED | rng.integers(0, 2**32, n, dtype=np.uint64)
    data["dst_lo"] = MAPPED | rng.integers(0, 2**32, n, dtype=np.uint64)
    data["packets"] = rng.integers(1, 10**6, n)
    data["bytes"] = data["packets"] * 700
    data["first_ns"] = BOOT + rng.integers(0, 10**11, n)
    data["last_ns"] = data["first_ns"] + 10**9
    r = FlowRecords(data, boot_ns=BOOT)
    e = enc()
    out = e.encode(r, BOOT + 2 * 10**11)  # speed is measured in tests/bench, not asserted here
    assert len(out) == -(-n // 30)
    assert sum(parse(d)[0]["count"] for d in out[:5]) == 150


def test_registered_through_the_plugin_manager(make_app):
    app = make_app(plugins=[(netflow5, "v5-test")], load_entrypoints=False, configure=False)
    assert app.registries.encoders["v5"] is netflow5.ENCODER_TYPE

"""NetFlow v8 (router-based aggregation) encoder: bytes checked with an independent struct parser,
aggregates checked against a plain-Python group-by."""

from __future__ import annotations

import ipaddress
import struct
from collections import defaultdict

import numpy as np
import pytest

from flowplane.export import EncoderOptions, EncoderType
from flowplane.flows import FLOW_DTYPE, FlowRecords
from flowplane.plugins.encoders import netflow8

HDR = struct.Struct("!HHIIIIBBBBI")
HDR_NAMES = ("version", "count", "sys_uptime", "unix_secs", "unix_nsecs", "flow_sequence",
             "engine_type", "engine_id", "aggregation", "agg_version", "reserved")
COMMON = ("flows", "dPkts", "dOctets", "First", "Last")
# scheme -> (number, struct, field names after COMMON, Cisco's max records per datagram)
LAYOUT = {
    "as": (1, struct.Struct("!5I HHHH"), ("src_as", "dst_as", "input", "output"), 51),
    "protocol-port": (2, struct.Struct("!5I BBHHH"), ("prot", "pad", "reserved", "srcport", "dstport"), 51),
    "source-prefix": (3, struct.Struct("!5I IBBHHH"),
                      ("src_prefix", "src_mask", "pad", "src_as", "input", "reserved"), 44),
    "destination-prefix": (4, struct.Struct("!5I IBBHHH"),
                           ("dst_prefix", "dst_mask", "pad", "dst_as", "output", "reserved"), 44),
    "source-destination-prefix": (5, struct.Struct("!5I IIBBHHHHH"),
                                  ("src_prefix", "dst_prefix", "src_mask", "dst_mask", "reserved",
                                   "src_as", "dst_as", "input", "output"), 35),
}
SIZES = {"as": 28, "protocol-port": 28, "source-prefix": 32, "destination-prefix": 32,
         "source-destination-prefix": 40}
PADS = ("pad", "reserved")

BOOT = 1_700_000_000_000_000_000
MAPPED = 0xFFFF_0000_0000


def parse(dgram: bytes, scheme: str) -> tuple[dict, list[dict]]:
    number, st, names, _ = LAYOUT[scheme]
    h = dict(zip(HDR_NAMES, HDR.unpack_from(dgram, 0)))
    assert h["version"] == 8 and h["aggregation"] == number and h["agg_version"] == 2 and h["reserved"] == 0
    assert st.size == SIZES[scheme]
    assert len(dgram) == HDR.size + h["count"] * st.size
    recs = [dict(zip(COMMON + names, st.unpack_from(dgram, HDR.size + i * st.size))) for i in range(h["count"])]
    return h, recs


def a4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def masked(addr: int, mask: int) -> tuple[int, int]:
    m = 32 if mask == 0 or mask > 32 else mask
    return addr & ((0xFFFFFFFF << (32 - m)) & 0xFFFFFFFF), m


def ref_key(scheme: str, row) -> tuple:
    """The aggregation key of one input row, computed with plain Python ints."""
    as16 = lambda a: 23456 if a > 65535 else a  # noqa: E731
    if16 = lambda i: min(i, 65535)  # noqa: E731
    src, dst = int(row["src_lo"]) & 0xFFFFFFFF, int(row["dst_lo"]) & 0xFFFFFFFF
    sas, das = as16(int(row["src_as"])), as16(int(row["dst_as"]))
    i, o = if16(int(row["in_if"])), if16(int(row["out_if"]))
    if scheme == "as":
        return (sas, das, i, o)
    if scheme == "protocol-port":
        return (int(row["proto"]), int(row["sport"]), int(row["dport"]))
    sp, sm = masked(src, int(row["src_mask"]))
    dp, dm = masked(dst, int(row["dst_mask"]))
    if scheme == "source-prefix":
        return (sp, sm, sas, i)
    if scheme == "destination-prefix":
        return (dp, dm, das, o)
    return (sp, dp, sm, dm, sas, das, i, o)


def rec_key(scheme: str, r: dict) -> tuple:
    return tuple(r[k] for k in LAYOUT[scheme][2] if k not in PADS)


def reference(scheme: str, records: FlowRecords, scale: int = 1) -> dict:
    agg: dict = defaultdict(lambda: [0, 0, 0, None, None])
    for row in records.data:
        if row["af"] != 4:
            continue
        a = agg[ref_key(scheme, row)]
        a[0] += 1
        a[1] += int(row["packets"]) * scale
        a[2] += int(row["bytes"]) * scale
        f = (int(row["first_ns"]) - records.boot_ns) // 1_000_000
        last = (int(row["last_ns"]) - records.boot_ns) // 1_000_000
        a[3] = f if a[3] is None else min(a[3], f)
        a[4] = last if a[4] is None else max(a[4], last)
    return {k: tuple(v) for k, v in agg.items()}


def decoded(scheme: str, dgrams: list[bytes]) -> dict:
    got: dict = {}
    for d in dgrams:
        for r in parse(d, scheme)[1]:
            assert all(r[p] == 0 for p in PADS if p in r)
            k = rec_key(scheme, r)
            assert k not in got, "one record per key (no split needed here)"
            got[k] = (r["flows"], r["dPkts"], r["dOctets"], r["First"], r["Last"])
    return got


def random_records(n: int, seed: int = 1, **kw) -> FlowRecords:
    """Few distinct values per field, so groups have many members."""
    rng = np.random.default_rng(seed)
    d = np.zeros(n, dtype=FLOW_DTYPE)
    d["af"] = 4
    d["src_lo"] = MAPPED | (np.uint64(a4("10.0.0.0")) + rng.integers(0, 4, n).astype(np.uint64) * 256
                            + rng.integers(0, 3, n).astype(np.uint64))
    d["dst_lo"] = MAPPED | (np.uint64(a4("198.51.100.0")) + rng.integers(0, 3, n).astype(np.uint64) * 65536
                            + rng.integers(0, 300, n).astype(np.uint64))
    d["src_mask"] = rng.choice([0, 16, 24, 32], n)
    d["dst_mask"] = rng.choice([0, 8, 24], n)
    d["packets"] = rng.integers(1, 1000, n)
    d["bytes"] = d["packets"] * rng.integers(40, 1500, n)
    d["first_ns"] = BOOT + rng.integers(0, 60_000, n) * 1_000_000 + rng.integers(0, 999_999, n)
    d["last_ns"] = d["first_ns"] + rng.integers(0, 30_000, n) * 1_000_000
    d["proto"] = rng.choice([6, 17, 1], n)
    d["sport"] = rng.choice([53, 80, 443, 40000], n)
    d["dport"] = rng.choice([53, 80, 0x0800], n)
    d["src_as"] = rng.choice([0, 64512, 65535, 70000, 4_200_000_000], n)
    d["dst_as"] = rng.choice([1, 2, 100000], n)
    d["in_if"] = rng.choice([1, 2, 70000], n)
    d["out_if"] = rng.choice([3, 4], n)
    kw.setdefault("boot_ns", BOOT)
    return FlowRecords(d, **kw)


def enc(scheme: str, **kw) -> netflow8.NetFlowV8Encoder:
    return netflow8.factory(EncoderOptions(version=8, aggregation=scheme, **kw))


@pytest.mark.parametrize("scheme", list(LAYOUT))
def test_aggregation_sums_and_layout(scheme):
    r = random_records(3000)
    e = enc(scheme, engine_type=3, engine_id=9)
    now = BOOT + 100_000_000_000
    out = e.encode(r, now)
    ref = reference(scheme, r)
    got = decoded(scheme, out)
    assert got == ref
    assert sum(v[0] for v in got.values()) == 3000
    h, _ = parse(out[0], scheme)
    assert (h["sys_uptime"], h["unix_secs"], h["unix_nsecs"]) == (100_000, now // 10**9, now % 10**9)
    assert (h["engine_type"], h["engine_id"]) == (3, 9)
    # datagrams: full ones carry Cisco's maximum, sequence counts aggregated records
    maxrec = LAYOUT[scheme][3]
    counts = [parse(d, scheme)[0]["count"] for d in out]
    assert all(c == maxrec for c in counts[:-1]) and 1 <= counts[-1] <= maxrec
    assert [parse(d, scheme)[0]["flow_sequence"] for d in out] == [i * maxrec for i in range(len(out))]
    assert max(map(len, out)) <= 1472
    assert e.counters["records"] == len(ref) and e.counters["flows"] == 3000
    assert e.sequence == len(ref)


@pytest.mark.parametrize("scheme", list(LAYOUT))
def test_max_records_per_datagram(scheme):
    # every row its own group: distinct ports, AS, prefixes and interfaces
    n = 200
    d = np.zeros(n, dtype=FLOW_DTYPE)
    d["af"] = 4
    d["src_lo"] = MAPPED | (np.uint64(a4("10.0.0.0")) + np.arange(n, dtype=np.uint64))
    d["dst_lo"] = MAPPED | (np.uint64(a4("10.1.0.0")) + np.arange(n, dtype=np.uint64))
    d["sport"] = np.arange(n)
    d["src_as"] = d["dst_as"] = d["in_if"] = d["out_if"] = np.arange(n)
    d["packets"], d["bytes"] = 1, 40
    d["first_ns"] = d["last_ns"] = BOOT
    out = enc(scheme).encode(FlowRecords(d, boot_ns=BOOT), BOOT)
    maxrec = LAYOUT[scheme][3]
    counts = [parse(x, scheme)[0]["count"] for x in out]
    assert counts == [maxrec] * (n // maxrec) + ([n % maxrec] if n % maxrec else [])
    assert len(out[0]) == 28 + maxrec * SIZES[scheme]


def test_as_scheme_exact_fields():
    d = np.zeros(4, dtype=FLOW_DTYPE)
    d["af"] = 4
    d["src_lo"], d["dst_lo"] = MAPPED | a4("10.0.0.1"), MAPPED | a4("10.0.0.2")
    d["src_as"] = [65001, 65001, 70000, 80000]  # 70000 and 80000 both export as 23456: one group
    d["dst_as"] = [7, 7, 8, 8]
    d["in_if"], d["out_if"] = [1, 1, 2, 2], [3, 3, 4, 4]
    d["packets"] = [1, 2, 3, 4]
    d["bytes"] = [10, 20, 30, 40]
    d["first_ns"] = BOOT + np.array([5, 1, 7, 3]) * 1_000_000_000
    d["last_ns"] = BOOT + np.array([6, 9, 8, 20]) * 1_000_000_000
    out = enc("as").encode(FlowRecords(d, boot_ns=BOOT), BOOT + 30 * 10**9)
    h, recs = parse(out[0], "as")
    assert h["count"] == 2
    assert recs == [
        dict(flows=2, dPkts=7, dOctets=70, First=3000, Last=20000, src_as=23456, dst_as=8, input=2, output=4),
        dict(flows=2, dPkts=3, dOctets=30, First=1000, Last=9000, src_as=65001, dst_as=7, input=1, output=3),
    ]


def test_prefix_masks_and_host_route_default():
    rows = [("10.1.2.3", 24, "192.0.2.77", 0), ("10.1.2.200", 24, "192.0.2.77", 0),
            ("10.1.2.3", 0, "192.0.2.78", 30), ("10.1.2.3", 16, "192.0.2.79", 30)]
    d = np.zeros(len(rows), dtype=FLOW_DTYPE)
    d["af"] = 4
    for i, (s, sm, t, dm) in enumerate(rows):
        d["src_lo"][i], d["src_mask"][i] = MAPPED | a4(s), sm
        d["dst_lo"][i], d["dst_mask"][i] = MAPPED | a4(t), dm
    d["packets"] = 1
    d["bytes"] = 100
    r = FlowRecords(d, boot_ns=BOOT)
    src = decoded("source-prefix", enc("source-prefix").encode(r, BOOT))
    assert {(k[0], k[1]): v[0] for k, v in src.items()} == {
        (a4("10.1.2.0"), 24): 2, (a4("10.1.2.3"), 32): 1, (a4("10.1.0.0"), 16): 1}
    dst = decoded("destination-prefix", enc("destination-prefix").encode(r, BOOT))
    assert {(k[0], k[1]): v[0] for k, v in dst.items()} == {
        (a4("192.0.2.77"), 32): 2, (a4("192.0.2.76"), 30): 2}
    both = decoded("source-destination-prefix", enc("source-destination-prefix").encode(r, BOOT))
    assert {k[:4]: v[0] for k, v in both.items()} == {
        (a4("10.1.2.0"), a4("192.0.2.77"), 24, 32): 2,
        (a4("10.1.2.3"), a4("192.0.2.76"), 32, 30): 1,
        (a4("10.1.0.0"), a4("192.0.2.76"), 16, 30): 1}


def test_sums_over_32_bits_split_preserving_totals():
    n = 5
    d = np.zeros(n, dtype=FLOW_DTYPE)
    d["af"] = 4
    d["src_lo"], d["dst_lo"] = MAPPED | a4("10.0.0.1"), MAPPED | a4("10.0.0.2")
    d["proto"], d["sport"], d["dport"] = 6, 1, 2
    d["packets"] = 2**31  # 5 * 2**31 packets in one group: 3 records
    d["bytes"] = 2**31 * 1000
    d["first_ns"], d["last_ns"] = BOOT + 10**9, BOOT + 2 * 10**9
    e = enc("protocol-port")
    recs = [x for o in e.encode(FlowRecords(d, boot_ns=BOOT), BOOT) for x in parse(o, "protocol-port")[1]]
    k = -(-5 * 2**31 * 1000 // (2**32 - 1))
    assert len(recs) == k
    assert sum(x["flows"] for x in recs) == 5
    assert sum(x["dPkts"] for x in recs) == 5 * 2**31 and sum(x["dOctets"] for x in recs) == 5 * 2**31 * 1000
    assert all((x["prot"], x["srcport"], x["dstport"], x["First"], x["Last"]) == (6, 1, 2, 1000, 2000) for x in recs)
    assert e.counters["split_records"] == k - 1


def test_not_ipv4_counted_and_scale_counts():
    r = random_records(500, sampling_interval=10)
    r.data["af"][:7] = 6
    e = enc("as", scale_counts=True)
    got = decoded("as", e.encode(r, BOOT))
    assert e.counters["not_ipv4"] == 7
    assert got == reference("as", r, scale=10)
    assert sum(v[0] for v in got.values()) == 493
    # already scaled upstream: not multiplied again
    r.scaled = True
    assert decoded("as", enc("as", scale_counts=True).encode(r, BOOT)) == reference("as", r)


def test_sequence_across_calls_and_empty():
    e = enc("protocol-port")
    assert e.encode(FlowRecords.empty(0), BOOT) == []
    out1 = e.encode(random_records(1000, seed=2), BOOT)
    n1 = sum(parse(o, "protocol-port")[0]["count"] for o in out1)
    out2 = e.encode(random_records(1000, seed=3), BOOT)
    assert parse(out2[0], "protocol-port")[0]["flow_sequence"] == n1


@pytest.mark.parametrize("alias, scheme", [("autonomous-system", "as"), ("AS", "as"), ("proto-port", "protocol-port"),
                                           ("prefix", "source-destination-prefix"), ("3", "source-prefix")])
def test_scheme_aliases(alias, scheme):
    assert enc(alias).scheme.name == scheme


def test_bad_options_and_contract():
    with pytest.raises(ValueError, match="aggregation"):
        enc("")
    with pytest.raises(ValueError, match="aggregation"):
        enc("tos-as")
    with pytest.raises(ValueError):
        enc("as", engine_id=300)
    e = enc("as")
    assert e.templates(0) == [] and e.options_data(0) == [] and e.reset_templates() is None


def test_registration():
    got = {}
    netflow8.flowplane_register_encoders(lambda name, t: got.__setitem__(name, t))
    t = got["v8"]
    assert isinstance(t, EncoderType) and t.name == "v8" and t.versions == (8,)
    assert isinstance(t.factory(EncoderOptions(version=8, aggregation="as")), netflow8.NetFlowV8Encoder)


def test_registered_through_the_plugin_manager(make_app):
    app = make_app(plugins=[(netflow8, "v8-test")], load_entrypoints=False, configure=False)
    assert app.registries.encoders["v8"] is netflow8.ENCODER_TYPE

"""NetFlow v9 encoder, checked with an independent RFC 3954 / RFC 7011 parser written here.

The parser (``Collector``) is struct-based and knows nothing of the encoder's
code: it reads headers, set ids, template records field by field, options
template records, data records by their template, and checks padding.
test_encoder_ipfix.py and the interop tests import it from here.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from flowplane.export import EncoderOptions
from flowplane.flows import FLOW_DTYPE, SAMPLING_DETERMINISTIC, SAMPLING_RANDOM, FlowRecords
from flowplane.plugins.encoders import netflow9

ALL = ("ipv4", "ipv6", "mpls", "mpls-ipv4", "bridge")
IDS = {"ipv4": 256, "ipv6": 257, "mpls": 258, "mpls-ipv4": 259, "bridge": 260}
T0 = 1_700_000_000_000_000_000  # a whole second, ns

# -------------------------------------------------------------------------
# the independent parser


class Collector:
    """Decodes v9 / IPFIX export packets; keeps templates across packets like a collector."""

    def __init__(self) -> None:
        self.templates: dict[int, list[tuple[int, int]]] = {}
        self.options_templates: dict[int, tuple[list[tuple[int, int]], int]] = {}  # id -> (fields, n scope)

    def parse(self, msg: bytes) -> dict:
        (version,) = struct.unpack_from(">H", msg, 0)
        if version == 9:
            _, count, uptime, secs, seq, src = struct.unpack_from(">HHIIII", msg, 0)
            hdr = {"version": 9, "count": count, "uptime": uptime, "secs": secs, "seq": seq, "domain": src}
            off, tset, oset = 20, 0, 1
        elif version == 10:
            _, length, export, seq, dom = struct.unpack_from(">HHIII", msg, 0)
            assert length == len(msg), (length, len(msg))
            hdr = {"version": 10, "length": length, "export": export, "seq": seq, "domain": dom}
            off, tset, oset = 16, 2, 3
        else:
            raise AssertionError(f"version {version}")
        out = {"header": hdr, "sets": [], "templates": [], "options_templates": [], "data": [], "options": [],
               "records": 0}
        while off < len(msg):
            assert len(msg) - off >= 4, "trailing bytes"
            sid, slen = struct.unpack_from(">HH", msg, off)
            assert slen >= 4 and off + slen <= len(msg), (sid, slen, off, len(msg))
            assert slen % 4 == 0, f"set {sid} not padded to 4: {slen}"
            body = msg[off + 4: off + slen]
            out["sets"].append((sid, slen))
            if sid == tset:
                p = 0
                while len(body) - p >= 4:
                    tid, n = struct.unpack_from(">HH", body, p)
                    p += 4
                    fields = [struct.unpack_from(">HH", body, p + 4 * i) for i in range(n)]
                    p += 4 * n
                    assert all(ie < 0x8000 for ie, _ in fields)
                    self.templates[tid] = fields
                    out["templates"].append((tid, fields))
                    out["records"] += 1
                assert body[p:] == bytes(len(body) - p)
            elif sid == oset:
                p = 0
                while len(body) - p >= 6 + 4:
                    if version == 9:
                        tid, slen_b, olen_b = struct.unpack_from(">HHH", body, p)
                        assert slen_b % 4 == 0 and olen_b % 4 == 0
                        nscope, nall = slen_b // 4, (slen_b + olen_b) // 4
                    else:
                        tid, nall, nscope = struct.unpack_from(">HHH", body, p)
                        assert 1 <= nscope <= nall
                    p += 6
                    fields = [struct.unpack_from(">HH", body, p + 4 * i) for i in range(nall)]
                    p += 4 * nall
                    self.options_templates[tid] = (fields, nscope)
                    out["options_templates"].append((tid, fields, nscope))
                    out["records"] += 1
                assert body[p:] == bytes(len(body) - p)
            else:
                assert sid >= 256, sid
                if sid in self.templates:
                    fields, kind = self.templates[sid], "data"
                else:
                    assert sid in self.options_templates, f"data set {sid} before its template"
                    fields, kind = self.options_templates[sid][0], "options"
                rl = sum(ln for _, ln in fields)
                n, rest = divmod(len(body), rl)
                assert rest < 4 and body[len(body) - rest:] == bytes(rest), f"bad padding {rest}"
                for i in range(n):
                    rec, q = {}, i * rl
                    for ie, ln in fields:
                        rec[ie] = int.from_bytes(body[q:q + ln], "big")
                        q += ln
                    out[kind].append((sid, rec))
                out["records"] += n
            off += slen
        if version == 9:
            assert hdr["count"] == out["records"], (hdr["count"], out["records"])
        return out


# -------------------------------------------------------------------------
# expected layouts and values, written from the RFCs / IANA registry

V9_TIMES = [(22, 4), (21, 4)]
IPFIX_TIMES = [(152, 8), (153, 8), (136, 1)]
PORTS = [(7, 2), (11, 2), (4, 1), (5, 1), (6, 1)]
COUNTS = [(2, 8), (1, 8), (10, 4), (14, 4), (61, 1)]
LABELS = [(70, 3), (71, 3), (72, 3)]


def expected_fields(family: str, ipfix: bool) -> list[tuple[int, int]]:
    times = IPFIX_TIMES if ipfix else V9_TIMES
    v4 = [(8, 4), (12, 4), *PORTS, *COUNTS, (32, 2), (15, 4), (16, 4), (17, 4), (9, 1), (13, 1), *times, (197, 1)]
    if family == "ipv4":
        return v4
    if family == "ipv6":
        return [(27, 16), (28, 16), *PORTS, *COUNTS, (139 if ipfix else 32, 2), (62, 16), (16, 4), (17, 4),
                (29, 1), (30, 1), *times, (197, 1), (64, 4)]
    if family == "mpls":
        return [*LABELS, (60, 1), *COUNTS, *times]
    if family == "mpls-ipv4":
        return [*LABELS, *v4]
    if family == "bridge":
        return [(56, 6), (80, 6), (58, 2), (60, 1), (4, 1), *COUNTS, *times]
    raise KeyError(family)


def expected_value(ie: int, r, *, scale: int = 1, boot_ns: int = 0) -> int:
    i = lambda k: int(r[k])  # noqa: E731
    m32 = 0xFFFFFFFF
    table = {
        8: lambda: i("src_lo") & m32, 12: lambda: i("dst_lo") & m32, 15: lambda: i("nexthop_lo") & m32,
        27: lambda: i("src_hi") << 64 | i("src_lo"), 28: lambda: i("dst_hi") << 64 | i("dst_lo"),
        62: lambda: i("nexthop_hi") << 64 | i("nexthop_lo"),
        7: lambda: i("sport"), 11: lambda: i("dport"), 4: lambda: i("proto"), 5: lambda: i("tos"),
        6: lambda: i("tcp_flags"), 2: lambda: i("packets") * scale, 1: lambda: i("bytes") * scale,
        10: lambda: i("in_if"), 14: lambda: i("out_if"), 61: lambda: i("direction"),
        32: lambda: i("icmp_type") << 8 | i("icmp_code"), 139: lambda: i("icmp_type") << 8 | i("icmp_code"),
        16: lambda: i("src_as"), 17: lambda: i("dst_as"), 9: lambda: i("src_mask"), 13: lambda: i("dst_mask"),
        29: lambda: i("src_mask"), 30: lambda: i("dst_mask"),
        152: lambda: i("first_ns") // 10**6, 153: lambda: i("last_ns") // 10**6, 136: lambda: i("end_reason"),
        22: lambda: max(0, i("first_ns") // 10**6 - boot_ns // 10**6) & m32,
        21: lambda: max(0, i("last_ns") // 10**6 - boot_ns // 10**6) & m32,
        197: lambda: 0x20 if i("frag") & 1 else 0, 64: lambda: i("ip6_ext"),
        70: lambda: i("mpls1"), 71: lambda: i("mpls2"), 72: lambda: i("mpls3"), 60: lambda: i("af"),
        56: lambda: i("src_mac"), 80: lambda: i("dst_mac"), 58: lambda: i("vlan"),
    }
    return table[ie]()


def family_of(r, configured) -> str | None:
    if r["mpls_depth"] > 0 and r["af"] == 4 and "mpls-ipv4" in configured:
        return "mpls-ipv4"
    if r["mpls_depth"] > 0 and "mpls" in configured:
        return "mpls"
    if r["af"] == 4 and "ipv4" in configured:
        return "ipv4"
    if r["af"] == 6 and "ipv6" in configured:
        return "ipv6"
    return "bridge" if "bridge" in configured else None


def make_records(n: int, seed: int = 1, *, boot_ns: int = T0 - 3_600 * 10**9, mix: bool = True, **kw) -> FlowRecords:
    """Random flows; ``in_if`` is the row index, so decoded records find their row."""
    rng = np.random.default_rng(seed)
    d = np.zeros(n, dtype=FLOW_DTYPE)
    u = lambda hi, dt="u8": rng.integers(0, hi, n, dtype=np.uint64).astype(dt)  # noqa: E731
    d["af"] = np.where(rng.random(n) < 0.6, 4, 6) if mix else 4
    v4 = d["af"] == 4
    for p in ("src", "dst", "nexthop"):
        d[p + "_hi"] = np.where(v4, 0, u(2**63) | np.uint64(2**63))
        d[p + "_lo"] = np.where(v4, np.uint64(0xFFFF_0000_0000) | u(2**32), u(2**63) * np.uint64(2) + u(2))
    d["packets"] = u(10**6) + np.uint64(1)
    d["bytes"] = d["packets"] * (u(1400) + np.uint64(40))
    d["first_ns"] = boot_ns + rng.integers(0, 3_000 * 10**9, n)
    d["last_ns"] = d["first_ns"] + rng.integers(0, 600 * 10**9, n)
    d["src_mac"], d["dst_mac"] = u(2**48), u(2**48)
    d["in_if"] = np.arange(n)
    d["out_if"] = u(2**32, "u4")
    if mix:
        depth = rng.integers(0, 4, n)
        depth[rng.random(n) < 0.6] = 0
        d["mpls_depth"] = depth
        for k in (1, 2, 3):
            d[f"mpls{k}"] = np.where(depth >= k, u(2**24, "u4"), 0)
        d["af"][rng.random(n) < 0.05] = 0  # non-IP (bridged) frames
    d["src_as"], d["dst_as"] = u(2**32, "u4"), u(2**32, "u4")
    d["sport"], d["dport"] = u(65536, "u2"), u(65536, "u2")
    d["vlan"] = u(4096, "u2")
    d["proto"] = rng.choice([1, 6, 17, 58, 47], n)
    d["tos"], d["tcp_flags"] = u(256, "u1"), u(64, "u1")
    icmp = (d["proto"] == 1) | (d["proto"] == 58)
    d["icmp_type"] = np.where(icmp, u(256, "u1"), 0)
    d["icmp_code"] = np.where(icmp, u(16, "u1"), 0)
    d["sport"][icmp] = 0
    d["dport"][icmp] = (d["icmp_type"][icmp].astype(np.uint16) << 8) | d["icmp_code"][icmp]
    d["src_mask"], d["dst_mask"] = u(129, "u1"), u(129, "u1")
    d["direction"] = u(2, "u1")
    d["end_reason"] = rng.integers(1, 6, n)
    d["frag"] = u(2, "u1")
    d["ip6_ext"] = u(0x8000, "u2") & 0x707B  # ipv6ExtensionHeaders bits
    return FlowRecords(d, boot_ns=boot_ns, **kw)


def check_records(decoded: list[tuple[int, dict]], records: FlowRecords, opts: EncoderOptions, *, ipfix: bool,
                  scale: int = 1) -> None:
    """Every configured record decoded exactly once, with its template and its values."""
    by_id = {opts.template_ids[f]: f for f in opts.templates}
    seen = set()
    for tid, rec in decoded:
        row = records.data[rec[10]]
        fam = family_of(row, opts.templates)
        assert by_id[tid] == fam, (tid, fam)
        assert list(rec) == [ie for ie, _ in expected_fields(fam, ipfix)]
        for ie, v in rec.items():
            assert v == expected_value(ie, row, scale=scale, boot_ns=records.boot_ns), (fam, ie, v)
        seen.add(rec[10])
    want = {i for i, r in enumerate(records.data) if family_of(r, opts.templates) is not None}
    assert seen == want and len(decoded) == len(want)


def encoder(**kw):
    return netflow9.ENCODER_TYPE.factory(EncoderOptions(version=9, **kw))


# -------------------------------------------------------------------------
# tests


def test_registration():
    got = {}
    netflow9.flowplane_register_encoders(lambda name, obj: got.setdefault(name, obj))
    t = got["v9"]
    assert t.name == "v9" and t.versions == (9,)
    assert isinstance(t.factory(EncoderOptions(version=9)), netflow9.NetFlowV9Encoder)


def test_templates_field_by_field():
    enc = encoder(templates=ALL, observation_domain_id=77, options_template_id=600,
                  template_ids={"ipv4": 300, "ipv6": 301, "mpls": 302, "mpls-ipv4": 303, "bridge": 304})
    c = Collector()
    [msg] = enc.templates(T0)
    p = c.parse(msg)
    assert [s[0] for s in p["sets"]] == [0, 1, 600]
    assert {tid: f for tid, f in p["templates"]} == {
        300: expected_fields("ipv4", False), 301: expected_fields("ipv6", False), 302: expected_fields("mpls", False),
        303: expected_fields("mpls-ipv4", False), 304: expected_fields("bridge", False)}
    [(tid, fields, nscope)] = p["options_templates"]
    assert tid == 600 and nscope == 1
    assert fields == [(1, 4), (34, 4), (49, 1)]  # scope System; SAMPLING_INTERVAL, FLOW_SAMPLER_MODE
    assert p["options"] == [(600, {1: 77, 34: 1, 49: 1})]
    assert p["header"]["count"] == 5 + 1 + 1 and p["header"]["domain"] == 77


@pytest.mark.parametrize("interval,alg", [(1, SAMPLING_DETERMINISTIC), (100, SAMPLING_RANDOM), (1000, 1)])
def test_options_data_values(interval, alg):
    enc = encoder(sampling_interval=interval, sampling_algorithm=alg, observation_domain_id=5)
    c = Collector()
    first = c.parse(enc.options_data(T0)[0])  # never sent before: options template comes along
    assert first["options_templates"] and first["options"] == [(512, {1: 5, 34: interval, 49: alg})]
    again = c.parse(enc.options_data(T0 + 1)[0])
    assert not again["templates"] and not again["options_templates"]
    assert again["options"] == [(512, {1: 5, 34: interval, 49: alg})] and again["header"]["count"] == 1


def test_roundtrip_all_families():
    recs = make_records(3000, seed=7)
    enc = encoder(templates=ALL, observation_domain_id=9)
    c = Collector()
    dgrams = enc.encode(recs, T0)
    data = []
    for i, m in enumerate(dgrams):
        assert len(m) <= 1472
        p = c.parse(m)
        assert p["header"]["seq"] == i and p["header"]["domain"] == 9
        assert p["header"]["secs"] == T0 // 10**9
        assert p["header"]["uptime"] == (T0 - recs.boot_ns) // 10**6
        data += p["data"]
    assert len(dgrams) < 3000 / 15  # many records per datagram
    check_records(data, recs, enc.options, ipfix=False)
    assert {tid for tid, _ in data} == set(IDS.values())


def test_collector_reconstructs_absolute_times():
    """unix_secs*1000 - sysUptime + FIRST_SWITCHED == first_ns // 1e6, even mid-second."""
    recs = make_records(200, seed=3, mix=False, boot_ns=T0 - 10**9 * 100 + 123_456_789)
    now = T0 + 987_654_321
    c = Collector()
    for m in encoder().encode(recs, now):
        p = c.parse(m)
        boot_ms = p["header"]["secs"] * 1000 - p["header"]["uptime"]
        assert abs(boot_ms * 10**6 - recs.boot_ns) < 10**6
        for _, rec in p["data"]:
            row = recs.data[rec[10]]
            assert boot_ms + rec[22] == row["first_ns"] // 10**6
            assert boot_ms + rec[21] == row["last_ns"] // 10**6


def test_switched_times_clip_and_wrap():
    recs = make_records(3, mix=False, boot_ns=T0)
    recs.data["first_ns"] = [T0 - 5 * 10**9, T0 + 10, T0 + (2**32 + 7) * 10**6]
    recs.data["last_ns"] = recs.data["first_ns"]
    c = Collector()
    [m] = encoder(templates=("ipv4",)).encode(recs, T0 + 10**9)
    got = {rec[10]: rec[22] for _, rec in c.parse(m)["data"]}
    assert got == {0: 0, 1: 0, 2: 7}


def test_routing_and_drops():
    recs = make_records(1000, seed=11)
    enc = encoder(templates=("ipv4",))
    c = Collector()
    data = [d for m in enc.encode(recs, T0) for d in c.parse(m)["data"]]
    want = [i for i, r in enumerate(recs.data) if r["af"] == 4]  # MPLS IPv4 falls back to ipv4
    assert sorted(rec[10] for _, rec in data) == want
    assert enc.counters.drops[("encode", "no-template")] == 1000 - len(want)
    check_records(data, recs, enc.options, ipfix=False)


def test_bridge_only_takes_everything():
    recs = make_records(500, seed=12)
    enc = encoder(templates=("bridge",))
    c = Collector()
    data = [d for m in enc.encode(recs, T0) for d in c.parse(m)["data"]]
    assert len(data) == 500 and {t for t, _ in data} == {260}
    check_records(data, recs, enc.options, ipfix=False)


@pytest.mark.parametrize("kw,limit", [({}, 1472), ({"mtu": 9000}, 8972), ({"mtu": 576}, 548),
                                      ({"ipv6_transport": True}, 1452), ({"stream": True}, 65535)])
def test_mtu_bound(kw, limit):
    recs = make_records(4000, seed=2)
    enc = encoder(templates=ALL, **kw)
    c = Collector()
    dgrams = enc.encode(recs, T0)
    assert all(len(m) <= limit for m in dgrams)
    # well packed: every datagram but the last is within one record (+ set header/padding) of the limit
    assert all(len(m) > limit - 2 * (4 + 3 + 88) for m in dgrams[:-1])
    data = [d for m in dgrams for d in c.parse(m)["data"]]
    check_records(data, recs, enc.options, ipfix=False)


def test_mixed_families_share_a_datagram():
    recs = make_records(2000, seed=4)
    c = Collector()
    sets = [c.parse(m)["sets"] for m in encoder(templates=ALL).encode(recs, T0)]
    assert any(len({sid for sid, _ in s if sid >= 256}) > 1 for s in sets)


def test_scaled_counts():
    base = make_records(100, seed=5, mix=False, sampling_interval=100)
    c = Collector()
    cases = [(dict(scale_counts=True), False, 100), (dict(scale_counts=True), True, 1), (dict(), False, 1)]
    for kw, already, scale in cases:
        recs = base.select(slice(None))
        recs.scaled = already
        enc = encoder(**kw)
        data = [d for m in enc.encode(recs, T0) for d in c.parse(m)["data"]]
        check_records(data, recs, enc.options, ipfix=False, scale=scale)


def kinds(c: Collector, msgs: list[bytes]) -> list[tuple[bool, bool, int]]:
    """(templates?, options data?, data records) per packet."""
    out = []
    for m in msgs:
        p = c.parse(m)
        out.append((bool(p["templates"]), bool(p["options"]), len(p["data"])))
    return out


def test_refresh_by_packets_across_calls():
    enc = encoder(template_refresh_packets=10, option_refresh_packets=25, template_refresh_seconds=0,
                  option_refresh_seconds=0)
    c = Collector()
    msgs = []
    for k in range(6):
        msgs += enc.encode(make_records(400, seed=k, mix=False), T0 + k)
    ks = kinds(c, msgs)
    assert len(ks) > 60
    assert [i for i, k in enumerate(ks) if k[0]] == list(range(0, len(ks), 10))
    # options data with every template refresh, and on its own 25 packets after the last one
    opt = [i for i, k in enumerate(ks) if k[1]]
    expect, last = [], None
    for i in range(len(ks)):
        if i % 10 == 0 or i - last >= 25:
            expect.append(i)
            last = i
    assert opt == expect
    assert [c.parse(m)["header"]["seq"] for m in msgs] == list(range(len(msgs)))


def test_refresh_by_seconds():
    enc = encoder(template_refresh_seconds=60, template_refresh_packets=10**6, option_refresh_packets=10**6,
                  option_refresh_seconds=20)
    c = Collector()
    s = 10**9
    recs = make_records(10, mix=False)
    schedule = [(0, True, True), (10 * s, False, False), (30 * s, False, True), (59 * s, False, True),
                (60 * s, True, True), (61 * s, False, False), (125 * s, True, True)]
    for t, want_t, want_o in schedule:
        [(got_t, got_o, n)] = kinds(c, enc.encode(recs, T0 + t))
        assert (got_t, got_o, n) == (want_t, want_o, 10), t


def test_reset_templates_and_templates_method():
    enc = encoder(template_refresh_packets=1000, template_refresh_seconds=600)
    c = Collector()
    recs = make_records(10, mix=False)
    assert kinds(c, enc.encode(recs, T0))[0][0]
    assert not kinds(c, enc.encode(recs, T0 + 1))[0][0]
    enc.reset_templates()
    assert kinds(c, enc.encode(recs, T0 + 2))[0][0]
    assert not kinds(c, enc.encode(recs, T0 + 3))[0][0]
    [m] = enc.templates(T0 + 4)
    p = c.parse(m)
    assert len(p["templates"]) == 2 and p["options_templates"] and p["options"] and not p["data"]
    assert not kinds(c, enc.encode(recs, T0 + 5))[0][0]


def test_empty_encode():
    enc = encoder()
    c = Collector()
    [m] = enc.encode(FlowRecords.empty(), T0)  # first call: templates go out
    p = c.parse(m)
    assert p["templates"] and p["options"] and not p["data"]
    assert enc.encode(FlowRecords.empty(), T0 + 1) == []
    enc.reset_templates()
    assert len(enc.encode(FlowRecords.empty(), T0 + 2)) == 1


def test_bad_options():
    with pytest.raises(ValueError):
        encoder(templates=("ipv5",))
    with pytest.raises(ValueError):
        encoder(template_ids={"ipv4": 12, "ipv6": 257})
    with pytest.raises(ValueError):
        encoder(options_template_id=256)

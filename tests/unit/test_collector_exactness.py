"""Collector exactness and isolation (issue #16 items 1-8) on hand-built v9 / IPFIX messages."""

from __future__ import annotations

import struct

import structlog

from flowplane.plugins.collector.decode_v9ipfix import MAX_DOMAINS_PER_EXPORTER
from flowplane.plugins.collector.decoder import Decoder

from test_collector import T0, ipfix_msg, iset, tmpl, v9_msg

V4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
V6 = bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2")
Z4, Z6 = bytes(4), bytes(16)


def rows(dec: Decoder) -> list[dict]:
    return [r for f in dec.flush() for r in f.rows()]


# 1 -- address family per record ------------------------------------------------------------------


def test_address_family_chosen_per_record_and_both_kept():
    """IPv6 fields listed before IPv4 ones (pmacct_101/111 layout): the non-zero family wins per record,
    ipVersion decides when present, and both pairs stay in the row by name."""
    dec = Decoder()
    t = tmpl(300, [(27, 16), (28, 16), (8, 4), (12, 4), (60, 1), (2, 8)])
    recs = (Z6 + Z6 + V4[0] + V4[1] + bytes([0]) + struct.pack(">Q", 1)      # v4 in the later fields
            + V6[0] + V6[1] + Z4 + Z4 + bytes([0]) + struct.pack(">Q", 2)     # v6 only
            + V6[0] + V6[1] + Z4 + Z4 + bytes([6]) + struct.pack(">Q", 3)     # ipVersion 6 after zero v4
            + V6[0] + V6[1] + V4[0] + V4[1] + bytes([4]) + struct.pack(">Q", 4))  # both set, ipVersion 4
    dec.feed(ipfix_msg([iset(2, t), iset(300, recs)]), "192.0.2.1", T0)
    r = {x["packets"]: x for x in rows(dec)}
    assert (r[1]["src"], r[1]["dst"]) == ("10.0.0.1", "10.0.0.2")
    assert (r[2]["src"], r[2]["dst"]) == ("2001:db8::1", "2001:db8::2")
    assert (r[3]["src"], r[3]["dst"]) == ("2001:db8::1", "2001:db8::2")
    assert (r[4]["src"], r[4]["dst"]) == ("10.0.0.1", "10.0.0.2")
    assert (r[4]["sourceIPv6Address"], r[4]["sourceIPv4Address"]) == ("2001:db8::1", "10.0.0.1")


def test_single_family_template_unchanged():
    dec = Decoder()
    dec.feed(ipfix_msg([iset(2, tmpl(300, [(8, 4), (12, 4)])), iset(300, V4[0] + V4[1])]), "192.0.2.1", T0)
    (r,) = rows(dec)
    assert (r["src"], r["dst"]) == ("10.0.0.1", "10.0.0.2") and "sourceIPv4Address" not in r


# 2 -- times ---------------------------------------------------------------------------------------


def test_system_init_time_inside_the_data_record():
    """flowStart/EndSysUpTime relative to the record's own systemInitTimeMilliseconds (pmacct_106)."""
    init_ms = 1_736_229_475_000
    dec = Decoder()
    t = tmpl(300, [(8, 4), (160, 8), (22, 4), (21, 4)])
    rec = V4[0] + struct.pack(">QII", init_ms, 1_000, 62_000)
    dec.feed(ipfix_msg([iset(2, t), iset(300, rec)], export_s=init_ms // 1000 + 3600), "192.0.2.1", T0)
    (r,) = rows(dec)
    assert (r["first"], r["last"]) == ("2025-01-07T05:57:56.000Z", "2025-01-07T05:58:57.000Z")


def test_init_time_applied_as_each_message_arrived():
    """The domain's systemInitTimeMilliseconds (options data) changes between two messages of one batch:
    each record keeps the one known when it arrived, not the one known at conversion."""
    dec = Decoder()
    opt = struct.pack(">HHH", 400, 2, 1) + struct.pack(">HHHH", 149, 4, 160, 8)
    data_t = tmpl(300, [(8, 4), (22, 4), (21, 4)])
    rec = V4[0] + struct.pack(">II", 500, 500)
    dec.feed(ipfix_msg([iset(3, opt), iset(2, data_t)]), "192.0.2.1", T0)
    dec.feed(ipfix_msg([iset(400, struct.pack(">IQ", 1, 1_700_000_000_000))], seq=0), "192.0.2.1", T0)
    dec.feed(ipfix_msg([iset(300, rec)], seq=1), "192.0.2.1", T0)
    dec.feed(ipfix_msg([iset(400, struct.pack(">IQ", 1, 1_700_086_400_000))], seq=2), "192.0.2.1", T0)  # a day on
    dec.feed(ipfix_msg([iset(300, rec)], seq=3), "192.0.2.1", T0)
    firsts = [r["first"] for r in rows(dec)]
    assert firsts == ["2023-11-14T22:13:20.500Z", "2023-11-15T22:13:20.500Z"]


def test_uptime_times_without_init_time_and_no_times_are_null_not_invented():
    dec = Decoder()
    dec.feed(ipfix_msg([iset(2, tmpl(300, [(8, 4), (22, 4), (21, 4)]) + tmpl(301, [(8, 4), (2, 8)])),
                        iset(300, V4[0] + struct.pack(">II", 5, 9)), iset(301, V4[0] + struct.pack(">Q", 7))]),
             "192.0.2.1", T0)
    got = rows(dec)
    assert len(got) == 2 and all(r["first"] is None and r["last"] is None for r in got)


# 3 -- ICMP type/code from the destination port ----------------------------------------------------


def test_icmp_type_code_from_destination_port():
    dec = Decoder()
    t = tmpl(300, [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2)])
    recs = V4[0] + V4[1] + struct.pack(">BHH", 1, 0, 2048) + V4[0] + V4[1] + struct.pack(">BHH", 58, 0, 32768)
    dec.feed(ipfix_msg([iset(2, t), iset(300, recs)]), "192.0.2.1", T0)
    got = [(r["proto"], r["icmp_type"], r["icmp_code"]) for r in rows(dec)]
    assert got == [(1, 8, 0), (58, 128, 0)]


# 4, 5 -- next hops, MAC addresses -------------------------------------------------------------------


def test_bgp_next_hop_kept_apart_and_ipv4_next_hop_printed_as_ipv4():
    dec = Decoder()
    t = tmpl(300, [(27, 16), (28, 16), (15, 4), (18, 4), (63, 16)])
    rec = V6[0] + V6[1] + bytes([169, 254, 0, 1]) + bytes([192, 0, 2, 9]) + V6[1]
    dec.feed(ipfix_msg([iset(2, t), iset(300, rec)]), "192.0.2.1", T0)
    (r,) = rows(dec)
    assert r["nexthop"] == "169.254.0.1"
    assert (r["bgpNextHopIPv4Address"], r["bgpNextHopIPv6Address"]) == ("192.0.2.9", "2001:db8::2")


def test_mac_addresses_in_json_rows():
    dec = Decoder()
    t = tmpl(300, [(8, 4), (56, 6), (80, 6), (81, 6)])
    rec = V4[0] + bytes.fromhex("0011223344550a0b0c0d0e0f") + bytes.fromhex("020000000001")
    dec.feed(ipfix_msg([iset(2, t), iset(300, rec)]), "192.0.2.1", T0)
    (r,) = rows(dec)
    assert (r["src_mac"], r["dst_mac"], r["postSourceMacAddress"]) == (
        "00:11:22:33:44:55", "0a:0b:0c:0d:0e:0f", "02:00:00:00:00:01")


# 6 -- sequence accounting -----------------------------------------------------------------------------


def _v9_seq(seqs) -> Decoder:
    dec = Decoder()
    t = iset(0, tmpl(300, [(8, 4)]))
    dec.feed(v9_msg([t], seq=seqs[0]), "192.0.2.1", T0)
    for s in seqs[1:]:
        dec.feed(v9_msg([iset(300, V4[0])], seq=s), "192.0.2.1", T0)
    return dec


def test_sequence_reordering_is_not_loss():
    dec = _v9_seq([1, 2, 4, 3, 5, 6])
    exp = dec.exporters["192.0.2.1"]
    assert exp.counters["lost"] == 0 and dec.counters["sequence-late"] == 1
    assert exp.counters["sequence_failures"] == 2  # 2 -> 4 and 4 -> 3, as nfdump counts them
    assert ("exporter", "sequence-gap") not in dec.counters.drops


def test_sequence_restart_and_wrap_around_are_not_loss():
    dec = _v9_seq([3_000_000_000, 3_000_000_001, 0, 1, 2])  # exporter restart (a backward jump)
    assert dec.exporters["192.0.2.1"].counters["lost"] == 0 and dec.counters["sequence-resets"] == 1
    dec = _v9_seq([0xFFFF_FFFE, 0xFFFF_FFFF, 0, 1])  # wrap-around: an ordinary step
    assert dec.exporters["192.0.2.1"].counters["lost"] == 0 and dec.counters["sequence-failures"] == 0
    dec = _v9_seq([10, 11, 11 + 1_858_240_879])  # a huge jump ahead: a restart, not 1.8 G lost records
    assert dec.exporters["192.0.2.1"].counters["lost"] == 0 and dec.counters["sequence-failures"] == 1


def test_sequence_gap_counted_lost():
    dec = _v9_seq([1, 2, 5, 6])
    assert dec.exporters["192.0.2.1"].counters["lost"] == 2 == dec.counters.drops[("exporter", "sequence-gap")]


# 7 -- bad options record, internal errors ----------------------------------------------------------------


def test_sampling_rate_beyond_32_bits_never_poisons_the_domain():
    dec = Decoder()
    opt = iset(3, struct.pack(">HHH", 400, 2, 1) + struct.pack(">HHHH", 149, 4, 34, 8))
    data = iset(2, tmpl(300, [(8, 4), (2, 8)]))
    dec.feed(ipfix_msg([opt, data]), "192.0.2.1", T0)
    dec.feed(ipfix_msg([iset(400, struct.pack(">IQ", 1, 1 << 40))]), "192.0.2.1", T0)
    recs = b"".join(V4[0] + struct.pack(">Q", i) for i in range(6))
    dec.feed(ipfix_msg([iset(300, recs)]), "192.0.2.1", T0)
    got = rows(dec)
    assert len(got) == 6 and all(r["sampling_interval"] == 1 for r in got)
    assert dec.counters.drops[("decode", "bad-sampling-rate")] == 1
    assert ("decode", "internal-error") not in dec.counters.drops


def test_internal_error_logged_once_per_burst_with_its_cause(monkeypatch):
    from flowplane.plugins.collector import decoder as decoder_mod

    def broken(*_a, **_k):
        raise ValueError("boom in the decoder")

    monkeypatch.setattr(decoder_mod, "decode_ipfix", broken)
    dec = Decoder()
    with structlog.testing.capture_logs() as logs:
        for _ in range(50):
            dec.feed(ipfix_msg([]), "192.0.2.1", T0)
    errs = [x for x in logs if x["event"] == "collector_decode_internal_error"]
    assert len(errs) == 1 and "ValueError: boom in the decoder" in errs[0]["error"]
    assert errs[0]["exporter"] == "192.0.2.1" and errs[0]["at"].startswith("test_collector_exactness.py:")
    assert dec.counters.drops[("decode", "internal-error")] == 50


# 8 -- limits evict, garbage is forgotten ------------------------------------------------------------------


CLEAN_T = iset(2, tmpl(300, [(8, 4), (12, 4), (2, 8)]))
CLEAN_D = iset(300, b"".join(V4[0] + V4[1] + struct.pack(">Q", i) for i in range(125)))


def test_flood_of_garbage_domains_then_clean_exporter_decodes_in_full():
    dec = Decoder()
    dec.feed(ipfix_msg([CLEAN_T], domain=7), "192.0.2.1", T0)
    for d in range(1000, 1000 + 4 * MAX_DOMAINS_PER_EXPORTER):
        dec.feed(ipfix_msg([CLEAN_T], domain=d), "192.0.2.1", T0 + 1)
    exp = dec.exporters["192.0.2.1"]
    assert len(exp.domains) == MAX_DOMAINS_PER_EXPORTER and dec.counters["domains-evicted"] > 0
    assert exp.template_count == sum(len(d.templates) for d in exp.domains.values())
    dec.flush()
    dec.feed(ipfix_msg([CLEAN_T, CLEAN_D], domain=7), "192.0.2.1", T0 + 2)
    assert len(rows(dec)) == 125


def test_flood_of_absurd_templates_then_clean_exporter_decodes_in_full():
    dec = Decoder(max_templates=1024)
    for k in range(8):
        garbage = iset(2, b"".join(tmpl(256 + (k * 500 + i) % 65000, [(1000 + i, 4), (9999, 200)])
                                   for i in range(500)))
        dec.feed(ipfix_msg([garbage], domain=7), "192.0.2.1", T0 + k)
    assert dec.exporters["192.0.2.1"].template_count == 1024 and dec.counters["templates-evicted"] > 0
    dec.flush()
    dec.feed(ipfix_msg([CLEAN_T, CLEAN_D], domain=7, seq=0), "192.0.2.1", T0 + 9)
    assert len(rows(dec)) == 125


def test_recently_used_template_survives_a_flood():
    """Data keeps a template recent: a flood of new templates evicts older garbage first."""
    dec = Decoder(max_templates=16)
    dec.feed(ipfix_msg([CLEAN_T], domain=7), "192.0.2.1", T0)
    for k in range(40):
        dec.feed(ipfix_msg([iset(2, tmpl(1000 + k, [(8, 4)]))], domain=8), "192.0.2.1", T0)
        dec.feed(ipfix_msg([CLEAN_D], domain=7, seq=125 * k), "192.0.2.1", T0)
    assert len(rows(dec)) == 40 * 125


def test_idle_domains_age_out():
    dec = Decoder(template_timeout=60)
    dec.feed(ipfix_msg([CLEAN_T], domain=7), "192.0.2.1", T0)
    dec.expire(T0 + 7200 * 10**9)
    assert dec.exporters["192.0.2.1"].domains == {} and dec.counters["domains-expired"] == 1

"""sFlow v5 in the collector (plugins/collector/decode_sflow.py): built datagrams, bad input, fuzz
(the corpus captures: tests/interop/test_collector_sflow_corpus.py)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.plugins.collector.decode_sflow import SFLOW_VERSION
from flowplane.plugins.collector.decoder import Decoder

T0 = 1_700_000_000_000_000_000


# ---------------------------------------------------------------------------
# built datagrams


def eth_ipv4_tcp(src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", sport=1234, dport=80, flags=0x12, tos=0x20,
                 total=40, vlan=None) -> bytes:
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, tos, total, 1, 0, 64, 6, 0, src, dst)
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 1024, 0, 0)
    tag = struct.pack(">HH", 0x8100, vlan) if vlan else b""
    return b"\x02" * 6 + b"\x04" * 6 + tag + b"\x08\x00" + ip + tcp


def rec(fmt: int, body: bytes) -> bytes:
    return struct.pack(">II", fmt, len(body)) + body


def raw_header(frame: bytes, frame_len=None, proto=1, stripped=4) -> bytes:
    pad = b"\0" * (-len(frame) % 4)
    return rec(1, struct.pack(">IIII", proto, frame_len or len(frame) + stripped, stripped, len(frame)) + frame + pad)


def switch(src_vlan, dst_vlan) -> bytes:
    return rec(1001, struct.pack(">IIII", src_vlan, 0, dst_vlan, 0))


def flow_sample(records: list[bytes], rate=100, inp=3, outp=4, pool=1000, drops=0) -> bytes:
    body = struct.pack(">IIIIIIII", 1, 7, rate, pool, drops, inp, outp, len(records)) + b"".join(records)
    return rec(1, body)


def expanded_sample(records: list[bytes], rate=100, inp=3, outp=4) -> bytes:
    body = struct.pack(">IIIIIIIIIII", 1, 0, 7, rate, 1000, 0, 0, inp, 0, outp, len(records)) + b"".join(records)
    return rec(3, body)


def counter_sample() -> bytes:
    return rec(2, struct.pack(">III", 1, 7, 0))


def datagram(samples: list[bytes], agent=b"\xc0\x00\x02\x01", sub=0, seq=1) -> bytes:
    atype = 1 if len(agent) == 4 else 2
    return (struct.pack(">II", 5, atype) + agent + struct.pack(">IIII", sub, seq, 1000, len(samples))
            + b"".join(samples))


def test_built_datagrams_batch_decoded_together():
    dec = Decoder()
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    d1 = datagram([flow_sample([switch(10, 20), raw_header(eth_ipv4_tcp())], rate=512), counter_sample()])
    d2 = datagram([expanded_sample([raw_header(eth_ipv4_tcp(sport=5, vlan=33), stripped=0),
                                    rec(2000, b"\x01" * 12)], rate=64, inp=9, outp=11)],
                  agent=v6, sub=3, seq=9)
    d3 = datagram([rec((4300 << 12) | 1, b"\x00" * 20), flow_sample([raw_header(eth_ipv4_tcp(dport=443))])], seq=2)
    for d in (d1, d2, d3):
        dec.feed(d, "198.51.100.7", T0)
    flows = dec.flush()
    rows = {(r["exporter"], r["sport"], r["dport"]): r for f in flows for r in f.rows()}
    assert len(rows) == 3 and len(flows) == 2  # one group per agent/sub-agent: headers decoded in one batch each
    a = rows[("192.0.2.1", 1234, 80)]
    assert (a["src"], a["dst"], a["proto"], a["tos"], a["tcp_flags"]) == ("10.0.0.1", "10.0.0.2", 6, 0x20, 0x12)
    assert (a["sampling_interval"], a["in_if"], a["out_if"], a["vlan"], a["postVlanId"]) == (512, 3, 4, 10, 20)
    assert a["bytes"] == 40 and a["packets"] == 1 and a["domain"] == 0
    b = rows[("2001:db8::1", 5, 80)]
    assert (b["sampling_interval"], b["in_if"], b["out_if"], b["vlan"], b["domain"]) == (64, 9, 11, 33, 3)
    assert ("192.0.2.1", 1234, 443) in rows
    c = dec.counters
    assert c["sflow-flow-samples"] == 3 and c["sflow-counter-samples"] == 1
    assert c["sflow-samples-skipped"] == 1 and c["sflow-records-skipped"] == 1
    assert not dec.counters.drops
    assert SFLOW_VERSION in dec.exporters["198.51.100.7"].versions
    assert dec.exporters["192.0.2.1"].counters["records"] == 2


def test_compact_interface_formats_and_ipv6_header_protocol():
    ip6 = (struct.pack(">IHBB", 0x6000_0000, 8, 58, 64) + b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01"
           + b"\xff\x02" + b"\0" * 13 + b"\x01" + bytes([128, 0, 0, 0, 0, 1, 0, 1]))
    dec = Decoder()
    dec.feed(datagram([flow_sample([raw_header(ip6, proto=12, stripped=0)], inp=0x3FFF_FFFF,
                                   outp=(1 << 30) | 5)]), "192.0.2.1", T0)
    (r,) = [r for f in dec.flush() for r in f.rows()]
    assert r["proto"] == 58 and r["icmp_type"] == 128 and r["bytes"] == 48
    assert r["in_if"] == 0x3FFF_FFFF and r["out_if"] == 0  # format 1: discarded, not an interface


def test_sampled_ipv4_used_without_raw_header():
    s4 = rec(3, struct.pack(">II4s4sIIII", 500, 17, b"\x0a\0\0\x09", b"\x0a\0\0\x0a", 53, 5353, 0, 8))
    dec = Decoder()
    dec.feed(datagram([flow_sample([s4])]), "192.0.2.1", T0)
    (r,) = [r for f in dec.flush() for r in f.rows()]
    assert (r["src"], r["dst"], r["sport"], r["dport"], r["proto"], r["bytes"], r["tos"]) == (
        "10.0.0.9", "10.0.0.10", 53, 5353, 17, 500, 8)


def test_sequence_gaps_counted_per_agent():
    dec = Decoder()
    sample = flow_sample([raw_header(eth_ipv4_tcp())])
    for seq in (1, 2, 5):
        dec.feed(datagram([sample], seq=seq), "192.0.2.1", T0)
    assert sum(len(f) for f in dec.flush()) == 3
    assert dec.counters.drops[("exporter", "sequence-gap")] == 2


GOOD = datagram([flow_sample([switch(1, 2), raw_header(eth_ipv4_tcp())]), counter_sample()])


@pytest.mark.parametrize("data,reason", [
    (GOOD[:6], "short-header"),
    (GOOD[:20], "short-header"),
    (GOOD[:4] + struct.pack(">I", 9) + GOOD[8:], "sflow-bad-agent"),
    (GOOD[:24] + struct.pack(">I", 9) + GOOD[28:], "sflow-count-mismatch"),
    (GOOD[:24] + struct.pack(">I", 100_000) + GOOD[28:], "sflow-too-many-samples"),
    (GOOD[:32] + struct.pack(">I", 10_000) + GOOD[36:], "sflow-bad-sample-length"),
    (GOOD[:32] + struct.pack(">I", 8) + GOOD[36:44], "sflow-bad-sample"),
    (GOOD[:64] + struct.pack(">I", 9) + GOOD[68:], "sflow-count-mismatch"),  # record count lies
    (GOOD[:72] + struct.pack(">I", 500) + GOOD[76:], "sflow-bad-record-length"),
    (GOOD[:72] + struct.pack(">I", 4) + GOOD[76:80] + GOOD[88:], "sflow-bad-record"),
])
def test_malformed_counted_by_reason(data, reason):
    dec = Decoder()
    dec.feed(data, "192.0.2.1", T0)
    dec.flush()
    assert dec.counters.drops[("decode", reason)] >= 1, dict(dec.counters.drops)
    assert ("decode", "internal-error") not in dec.counters.drops


def test_header_length_lie():
    frame = eth_ipv4_tcp()
    lying = rec(1, struct.pack(">IIII", 1, 64, 4, 1000) + frame)
    dec = Decoder()
    dec.feed(datagram([flow_sample([lying])]), "192.0.2.1", T0)
    assert dec.flush() == []
    assert dec.counters.drops[("decode", "sflow-bad-header-length")] == 1
    assert dec.counters["sflow-samples-without-header"] == 1


def test_garbage_header_bytes_give_a_record_without_addresses():
    dec = Decoder()
    dec.feed(datagram([flow_sample([raw_header(b"\xff" * 7, frame_len=1500)])]), "192.0.2.1", T0)
    (r,) = [r for f in dec.flush() for r in f.rows()]
    assert r["src"] is None and r["bytes"] == 1500 and r["proto"] == 0


# ---------------------------------------------------------------------------
# fuzz

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = [GOOD, datagram([expanded_sample([raw_header(eth_ipv4_tcp(vlan=7)), switch(3, 4)]), counter_sample()],
                        agent=bytes(range(16)))]


def _check(payloads):
    dec = Decoder()
    for p in payloads:
        dec.feed(p, "192.0.2.99", T0)
    for f in dec.flush():
        assert len(f.data) == len(f.sampling_interval)
        f.rows()
    assert ("decode", "internal-error") not in dec.counters.drops, dict(dec.counters.drops)


@SETTINGS
@given(st.integers(0, len(VALID) - 1), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
       st.integers(0, 400))
def test_fuzz_mutated_datagrams(which, edits, cut):
    b = bytearray(VALID[which])
    for pos, val in edits:
        if pos < len(b):
            b[pos] = val
    _check([bytes(b), bytes(b[:cut])])


@SETTINGS
@given(st.binary(max_size=300))
def test_fuzz_random_bodies(body):
    _check([b"\x00\x00\x00\x05" + body, b"\x00\x00\x00\x05\x00\x00\x00\x01" + body])


def test_rows_per_agent_batch_stays_columnar():
    dec = Decoder()
    sample = flow_sample([raw_header(eth_ipv4_tcp())] * 1)
    dec.feed(datagram([sample] * 50), "192.0.2.1", T0)
    (f,) = dec.flush()
    assert len(f) == 50 and np.all(f.data["proto"] == 6) and np.all(f.sampling_interval == 100)

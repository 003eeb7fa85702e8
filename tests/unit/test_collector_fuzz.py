"""Hypothesis fuzzing of every collector decoder: nothing raises, nothing is an internal error."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.export import EncoderOptions
from flowplane.plugins.collector.decoder import Decoder
from flowplane.plugins.encoders import ipfix, netflow5, netflow9

from test_collector import T0, sample_records

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid(version: int) -> list[bytes]:
    mod = {5: netflow5, 9: netflow9, 10: ipfix}[version]
    return mod.factory(EncoderOptions(version=version)).encode(sample_records(40, v4_only=version == 5), T0)


VALID = {v: _valid(v) for v in (5, 9, 10)}


def _check(dec: Decoder, payloads: list[bytes]) -> None:
    for p in payloads:
        dec.feed(p, "192.0.2.99", T0)
    dec.flush()
    dec.expire(T0 + 10**12)
    assert ("decode", "internal-error") not in dec.counters.drops, dict(dec.counters.drops)


def _header(version: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=40).map(lambda b: struct.pack(">H", version) + b)


def _mutated(version: int):
    msgs = VALID[version]
    return st.tuples(st.integers(0, len(msgs) - 1), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                           max_size=12), st.integers(0, 2000)).map(
        lambda a: _mutate(msgs[a[0]], a[1], a[2]))


def _mutate(msg: bytes, flips, cut) -> bytes:
    b = bytearray(msg)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b[:max(2, len(b) - cut)]) if cut % 3 == 0 else bytes(b)


@SETTINGS
@given(st.lists(st.one_of(_header(5), _mutated(5)), max_size=6))
def test_fuzz_v5(payloads):
    _check(Decoder(), payloads)


@SETTINGS
@given(st.lists(st.one_of(_header(9), _mutated(9), st.binary(max_size=200)), max_size=6))
def test_fuzz_v9(payloads):
    _check(Decoder(), VALID[9][:1] + payloads)


@SETTINGS
@given(st.lists(st.one_of(_header(10), _mutated(10), st.binary(max_size=200)), max_size=6))
def test_fuzz_ipfix(payloads):
    _check(Decoder(max_templates=8), VALID[10][:1] + payloads)


def _template_set(draw_fields):
    return draw_fields


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 2, 3, 4, 6, 8, 16, 17, 65535]),
                          st.integers(0, 2**32 - 1)), min_size=1, max_size=12),
       st.integers(256, 65535), st.binary(max_size=300))
def test_fuzz_ipfix_templates_with_random_data(fields, tid, data):
    body = struct.pack(">HH", tid, len(fields))
    for ie, ln, pen in fields:
        body += struct.pack(">HHI", ie, ln, pen) if ie & 0x8000 else struct.pack(">HH", ie, ln)
    tset = struct.pack(">HH", 2, 4 + len(body)) + body
    dset = struct.pack(">HH", tid, 4 + len(data)) + data
    msg = tset + dset
    _check(Decoder(), [struct.pack(">HHIII", 10, 16 + len(msg), 1_700_000_000, 0, 1) + msg])

"""TWAMP known answers: AES (FIPS-197, SP 800-38A) and NTP timestamps (the recorded twping <-> twampd exchanges:
tests/interop/test_twamp_captures.py)."""

import pytest

from flowplane.plugins.twamp import aes
from flowplane.plugins.twamp.wire import ErrorEstimate, ns_to_ntp, ntp_to_ns


def test_aes_fips197():
    key = bytes(range(16))
    pt = bytes.fromhex("00112233445566778899aabbccddeeff")
    c = aes.AES128(key)
    ct = c.encrypt_block(pt)
    assert ct.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert c.decrypt_block(ct) == pt
    with pytest.raises(ValueError, match="16-byte key"):
        aes.AES128(bytes(15))


def test_aes_cbc_sp800_38a():
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    pt = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    ct = aes.cbc_encrypt(key, iv, pt[:16]) + aes.cbc_encrypt(key, aes.cbc_encrypt(key, iv, pt[:16]), pt[16:])
    assert ct.hex() == "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
    # one CBC object carries its state across calls
    cbc = aes.CBC(aes.AES128(key), iv)
    assert cbc.encrypt(pt[:16]) + cbc.encrypt(pt[16:]) == ct
    assert aes.cbc_decrypt(key, iv, ct) == pt


def test_ntp_timestamps_and_era():
    ns = 1_700_000_000_123_456_789
    assert abs(ntp_to_ns(ns_to_ntp(ns), pivot_ns=ns) - ns) <= 1
    after_2036 = (2**32 - 2208988800 + 100) * 10**9  # 100 s after the NTP era rollover
    ntp = ns_to_ntp(after_2036)
    assert ntp >> 32 == 100
    assert ntp_to_ns(ntp, pivot_ns=after_2036) == after_2036
    e = ErrorEstimate.for_seconds(0.001)
    assert e.seconds >= 0.001 and ErrorEstimate.unpack(e.pack()) == e
    assert ErrorEstimate.unpack(0x3FFF).seconds is not None and ErrorEstimate.unpack(0x0100).seconds is None

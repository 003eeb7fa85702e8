"""The Internet checksum (RFC 1071) from flowplane.api."""

from __future__ import annotations

from flowplane.api import inet_checksum, ones_complement_sum

# RFC 1071 section 3's example octets: the one's complement sum is 0xddf2
RFC1071 = bytes([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7])
# an IPv4 header with its checksum field zeroed (the classic 0xb861 example)
IPV4 = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")


def test_rfc1071_example():
    assert ones_complement_sum(RFC1071) == 0xDDF2 and inet_checksum(RFC1071) == 0x220D


def test_ipv4_header_and_verification():
    c = inet_checksum(IPV4)
    assert c == 0xB861
    assert inet_checksum(IPV4[:10] + c.to_bytes(2, "big") + IPV4[12:]) == 0  # a correct header sums to zero


def test_odd_length_and_parts():
    assert ones_complement_sum(b"\x01") == 0x0100
    a, b = IPV4[:8], IPV4[8:]
    total = ones_complement_sum(a) + ones_complement_sum(b)
    assert (total & 0xFFFF) + (total >> 16) == ones_complement_sum(IPV4)

"""The Internet checksum (RFC 1071) that IPv4, ICMP, UDP and TCP headers carry."""

from __future__ import annotations

import struct


def ones_complement_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of *data* (an odd length padded with a zero octet), folded but not
    inverted: sums of parts add up (fold again) to the sum of the whole."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def inet_checksum(data: bytes) -> int:
    """The Internet checksum of *data*: the inverted :func:`ones_complement_sum` (data that carries its own
    correct checksum gives 0)."""
    return ~ones_complement_sum(data) & 0xFFFF

"""UDP payloads from a classic pcap file: test fixtures, benchmarks and offline decoding.

Handles both byte orders, microsecond and nanosecond pcaps, link types
Ethernet (with 802.1Q/QinQ tags), Linux cooked (SLL, SLL2), raw IP and BSD
loopback; IPv4 and IPv6.  Fragments and non-UDP packets are skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from typing import NamedTuple


class UdpDatagram(NamedTuple):
    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def _ip(buf: bytes, off: int):
    if off >= len(buf):
        return None
    ver = buf[off] >> 4
    if ver == 4:
        if len(buf) < off + 20:
            return None
        ihl = (buf[off] & 15) * 4
        total = struct.unpack_from(">H", buf, off + 2)[0]
        frag = struct.unpack_from(">H", buf, off + 6)[0]
        if buf[off + 9] != 17 or frag & 0x3FFF:
            return None
        src = str(ipaddress.IPv4Address(buf[off + 12:off + 16]))
        dst = str(ipaddress.IPv4Address(buf[off + 16:off + 20]))
        l4, end = off + ihl, min(len(buf), off + total)
    elif ver == 6:
        if len(buf) < off + 40 or buf[off + 6] != 17:
            return None
        plen = struct.unpack_from(">H", buf, off + 4)[0]
        src = str(ipaddress.IPv6Address(buf[off + 8:off + 24]))
        dst = str(ipaddress.IPv6Address(buf[off + 24:off + 40]))
        l4, end = off + 40, min(len(buf), off + 40 + plen)
    else:
        return None
    if end < l4 + 8:
        return None
    sport, dport, ulen = struct.unpack_from(">HHH", buf, l4)
    return src, sport, dst, dport, bytes(buf[l4 + 8:min(end, l4 + max(ulen, 8))])


def _l3_offset(linktype: int, frame: bytes) -> int | None:
    if linktype == 1:  # Ethernet
        off, et = 14, struct.unpack_from(">H", frame, 12)[0] if len(frame) >= 14 else 0
        while et in (0x8100, 0x88A8, 0x9100) and len(frame) >= off + 4:
            et = struct.unpack_from(">H", frame, off + 2)[0]
            off += 4
        return off if et in (0x0800, 0x86DD) else None
    if linktype == 113:  # Linux cooked v1
        return 16
    if linktype == 276:  # Linux cooked v2
        return 20
    if linktype in (101, 12, 14, 228, 229):  # raw IP
        return 0
    if linktype == 0:  # BSD loopback
        return 4
    return None


def udp_payloads(path: str) -> Iterator[UdpDatagram]:
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0xFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(e + "IIII", data, off)
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        l3 = _l3_offset(linktype, frame)
        if l3 is None:
            continue
        got = _ip(frame, l3)
        if got is None:
            continue
        ts = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        yield UdpDatagram(ts, *got)

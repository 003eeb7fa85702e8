"""Minimal Ethernet/IPv4 frames built with struct (checksums left at zero)."""

from __future__ import annotations

import ipaddress
import struct

TCP, UDP, ICMP = 6, 17, 1


def ipv4_frame(proto: int, l4: bytes, *, src: str = "10.0.0.1", dst: str = "192.0.2.1", pad: int = 0) -> bytes:
    payload = l4 + b"\0" * pad
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return bytes.fromhex("001122334455" "66778899aabb") + struct.pack(">H", 0x0800) + ip + payload


def udp_frame(dport: int, *, sport: int = 40000, pad: int = 0, **kw) -> bytes:
    return ipv4_frame(UDP, struct.pack(">HHHH", sport, dport, 8 + pad, 0), pad=pad, **kw)


def tcp_frame(dport: int, *, sport: int = 40000, pad: int = 0, **kw) -> bytes:
    return ipv4_frame(TCP, struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0), pad=pad, **kw)


def icmp_frame(**kw) -> bytes:
    return ipv4_frame(ICMP, struct.pack(">BBHHH", 8, 0, 0, 1, 1), **kw)


def arp_frame() -> bytes:
    body = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + bytes(20)
    return bytes.fromhex("ffffffffffff" "66778899aabb") + struct.pack(">H", 0x0806) + body

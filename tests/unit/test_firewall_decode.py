"""Firewall filters over real frames decoded by flowplane.decode (end to end, no hand-set columns)."""

import ipaddress
import struct

import numpy as np
import pytest

from flowplane.actions import TermAction
from flowplane.batch import PacketBatch
from flowplane.firewall import compile_firewall
from flowplane.interfaces import InterfaceTable
from flowplane.registry import Registry

decode_mod = pytest.importorskip("flowplane.decode")

MACS = bytes.fromhex("001122334455") + bytes.fromhex("66778899aabb")


def eth(ethertype: int, payload: bytes) -> bytes:
    return MACS + struct.pack(">H", ethertype) + payload


def ipv4(proto: int, payload: bytes, src: str, dst: str, *, tos: int = 0, ttl: int = 64, frag: int = 0,
         mf: bool = False) -> bytes:
    total = 20 + len(payload)
    flags_off = (0x2000 if mf else 0) | frag
    return struct.pack(">BBHHHBBH4s4s", 0x45, tos, total, 1, flags_off, ttl, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + payload


def ipv6(nh: int, payload: bytes, src: str, dst: str, *, tclass: int = 0) -> bytes:
    return struct.pack(">IHBB16s16s", (6 << 28) | (tclass << 20), len(payload), nh, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(t: int, code: int = 0) -> bytes:
    return struct.pack(">BBHI", t, code, 0, 0)


ARP = eth(0x0806, bytes(28))

FRAMES = [
    eth(0x0800, ipv4(6, tcp(40000, 22, 0x02), "10.1.1.1", "192.0.2.1")),                 # 0 ssh SYN from 10/8
    eth(0x0800, ipv4(6, tcp(40000, 22, 0x12), "172.16.0.1", "192.0.2.1")),               # 1 ssh SYN-ACK outside
    eth(0x0800, ipv4(17, udp(5353, 53, b"q" * 30), "10.9.9.9", "8.8.8.8", tos=46 << 2)),  # 2 dns, EF
    eth(0x0800, ipv4(1, icmp(8), "192.0.2.7", "10.0.0.1")),                              # 3 ping
    eth(0x0800, ipv4(17, b"\0" * 16, "10.1.1.1", "10.2.2.2", frag=100)),                 # 4 trailing fragment
    eth(0x86DD, ipv6(6, tcp(1234, 443, 0x10), "2001:db8::1", "2001:db8:1::2")),          # 5 v6 https
    eth(0x86DD, ipv6(58, icmp(135), "fe80::1", "ff02::1:ff00:2")),                       # 6 neighbour solicitation
    ARP,                                                                                 # 7 not IP
]


@pytest.fixture()
def decoded():
    b = PacketBatch.from_frames(FRAMES, iface=np.array([1, 1, 1, 2, 1, 1, 2, 2], dtype=np.int32))
    decode_mod.decode(b)
    assert b.decoded
    return b


def _reg():
    r = Registry("actions")
    r.register("sample", TermAction("sample"))
    return r


def _interfaces():
    it = InterfaceTable()
    assert it.id("eth0") == 1 and it.id("eth1") == 2
    return it


CONFIG = {
    "policy-options": {"prefix-list": {"inside": ["10.0.0.0/8", "2001:db8::/32"]}},
    "firewall": {"family": {
        "inet": {"filter": {"IN": {"term": {
            "ssh-in": {"from": {"source-prefix-list": ["inside"], "protocol": ["tcp"], "destination-port": ["ssh"],
                                "tcp-initial": True}, "then": {"count": "ssh", "accept": True}},
            "ssh-out": {"from": {"destination-port": ["ssh"]}, "then": {"reject": "tcp-reset"}},
            "ef": {"from": {"dscp": ["ef"], "port": ["dns"]}, "then": {"count": "ef", "sample": True, "next": "term"}},
            "dns": {"from": {"protocol": ["udp"], "destination-port": [53], "packet-length": ["0-100"]},
                    "then": "accept"},
            "ping": {"from": {"icmp-type": ["echo-request"], "interface": ["eth1"]},
                     "then": {"count": "ping", "discard": True}},
            "frags": {"from": {"is-fragment": True}, "then": {"count": "frags", "accept": True}},
        }}}},
        "inet6": {"filter": {"IN6": {"term": {
            "nd": {"from": {"icmp-type": ["neighbor-solicit"], "next-header": ["icmp6"]}, "then": "accept"},
            "est": {"from": {"tcp-established": True, "destination-prefix-list": ["inside"], "port": ["https"]},
                    "then": {"count": "est", "accept": True}},
        }}}},
        "any": {"filter": {"ALL": {"term": {
            "eth1": {"from": {"interface": ["eth1"]}, "then": {"count": "eth1", "accept": True}},
        }}}},
    }},
}


def test_filters_over_decoded_frames(decoded):
    assert decoded.status.tolist()[:7] == [0] * 7, "decoder should accept every IP frame here"
    fs = compile_firewall(CONFIG, _reg(), _interfaces())
    r = fs.get("inet", "IN").evaluate(decoded)
    assert r.accept.tolist() == [True, False, True, False, True, False, False, False]
    assert r.reject.tolist() == [False, True, False, False, False, False, False, False]
    assert r.discard.tolist() == [False, False, False, True, False, False, False, False]
    assert [(t, a, m.tolist()) for t, a, _, m in r.selections] == [("ef", "sample", [False, False, True] + [False] * 5)]
    c = fs.get("inet", "IN").counters()
    assert c["counters"]["ssh"]["packets"] == 1 and c["counters"]["ssh"]["bytes"] == len(FRAMES[0])
    assert c["counters"]["ping"]["packets"] == 1 and c["counters"]["frags"]["packets"] == 1
    assert c["implicit_discard"]["packets"] == 0

    r6 = fs.get("inet6", "IN6").evaluate(decoded)
    assert r6.accept.tolist() == [False] * 5 + [True, True, False]
    assert not r6.discard.any()

    ra = fs.get("any", "ALL").evaluate(decoded)
    assert ra.accept.tolist() == [False, False, False, True, False, False, True, True]
    assert ra.implicit_discard.tolist() == [True, True, True, False, True, True, False, False]


def test_truncated_frame_never_matches_ip_conditions():
    good = eth(0x0800, ipv4(6, tcp(1, 80, 0x02), "10.0.0.1", "10.0.0.2"))
    cut = good[:14 + 20 + 6]  # TCP header cut off
    b = PacketBatch.from_frames([good, cut], wirelen=[len(good), len(good)])
    decode_mod.decode(b)
    assert b.status[0] == 0 and b.status[1] != 0
    cfg = {"firewall": {"family": {"inet": {"filter": {"F": {"term": {
        "web": {"from": {"destination-port": [80]}, "then": "accept"},
        "notweb": {"from": {"destination-port-except": [80]}, "then": "accept"}}}}}}}}
    r = compile_firewall(cfg, _reg(), InterfaceTable()).get("inet", "F").evaluate(b)
    expected_scope = b.af[1] == 4  # a truncated IPv4 row is in family inet only if the decoder set af
    assert r.accept.tolist() == [True, False]
    assert r.implicit_discard.tolist() == [False, bool(expected_scope)]

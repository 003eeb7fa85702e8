"""Speed of a 10-term inet filter over a 4096-packet decoded batch.

Run directly for the figure:  .venv/bin/python tests/bench/bench_firewall.py
A benchmark, not a test: it prints a figure (target < 0.3 us/packet) and
asserts nothing about time, which would flake on a noisy machine.
"""

import time

import numpy as np

from flowplane.actions import TermAction
from flowplane.batch import DECODED_COLUMNS, PacketBatch
from flowplane.firewall import compile_firewall
from flowplane.interfaces import InterfaceTable
from flowplane.registry import Registry

N = 4096


def synthetic_batch(n: int = N, seed: int = 7) -> PacketBatch:
    rng = np.random.default_rng(seed)
    b = PacketBatch.from_frames([b"\0" * 64] * n, wirelen=list(rng.integers(64, 1500, n)))
    for name, dt in DECODED_COLUMNS.items():
        setattr(b, name, np.zeros(n, dtype=dt))
    b.decoded = True
    b.af[:] = rng.choice([4, 4, 4, 6], n)
    b.proto[:] = rng.choice([6, 6, 17, 1, 47], n)
    b.l3_off[:] = 14
    b.l4_off[:] = 34
    b.sport[:] = rng.integers(1024, 65535, n)
    b.dport[:] = rng.choice([80, 443, 53, 22, 123, 8080], n)
    b.tos[:] = rng.choice([0, 46 << 2, 10 << 2], n)
    b.tcp_flags[:] = rng.choice([0x02, 0x10, 0x18, 0x12, 0x11], n)
    b.ip_len[:] = rng.integers(40, 1500, n)
    b.src_lo[:] = np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, n, dtype=np.uint64)
    b.dst_lo[:] = np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, n, dtype=np.uint64)
    b.iface[:] = rng.integers(1, 4, n)
    return b


def ten_term_config() -> dict:
    rng = np.random.default_rng(3)
    big = [f"{a}.{b}.0.0/16" for a, b in rng.integers(1, 223, (300, 2))] + [
        f"{a}.{b}.{c}.0/24" for a, b, c in rng.integers(1, 223, (300, 3))]
    terms = {
        "ssh": {"from": {"destination-port": ["ssh"], "source-address": ["10.0.0.0/8", "192.168.0.0/16"]},
                "then": {"count": "ssh", "accept": True}},
        "bogons": {"from": {"source-prefix-list": ["big"]}, "then": {"count": "bogons", "discard": True}},
        "syn": {"from": {"protocol": ["tcp"], "tcp-flags": "syn & !ack", "destination-port": ["1-1023"]},
                "then": {"count": "syn", "sample": True, "next": "term"}},
        "dns": {"from": {"protocol": ["udp"], "port": ["dns"]}, "then": {"count": "dns", "accept": True}},
        "ntp": {"from": {"protocol": ["udp"], "destination-port": ["ntp"], "packet-length": ["0-100"]},
                "then": {"accept": True}},
        "ef": {"from": {"dscp": ["ef"], "protocol-except": ["icmp"]}, "then": {"count": "ef", "sample": True}},
        "icmp": {"from": {"protocol": ["icmp"], "icmp-type": ["echo-request", "echo-reply"]},
                 "then": {"reject": "administratively-prohibited"}},
        "web": {"from": {"destination-port": ["http", "https"],
                         "destination-address": ["0.0.0.0/0", "10.0.0.0/8 except"]},
                "then": {"count": "web", "accept": True}},
        "gre": {"from": {"protocol": [47], "interface": ["eth*"]}, "then": {"discard": True}},
        "last": {"from": {"packet-length-except": ["0-60"]}, "then": {"count": "rest", "accept": True}},
    }
    return {"policy-options": {"prefix-list": {"big": big}},
            "firewall": {"family": {"inet": {"filter": {"F": {"term": terms}}}}}}


def measure(repeat: int = 300) -> float:
    actions = Registry("actions")
    actions.register("sample", TermAction("sample"))
    it = InterfaceTable()
    for name in ("eth0", "eth1", "lo"):
        it.id(name)
    f = compile_firewall(ten_term_config(), actions, it).get("inet", "F")
    batch = synthetic_batch()
    f.evaluate(batch)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeat // 5):
            f.evaluate(batch)
        best = min(best, (time.perf_counter() - t0) / (repeat // 5))
    return best / len(batch) * 1e9


if __name__ == "__main__":
    print(f"10-term filter, {N}-packet batch: {measure():.1f} ns/packet (best of 5)")

"""FlowCache on real decoded frames (tests/unit/frames.py)."""

from __future__ import annotations

import numpy as np
import pytest

from flowplane.batch import PacketBatch
from flowplane.decode import decode
from flowplane.flowcache import COUNTER_NAMES, FlowCache
from flowplane.flows import END_ACTIVE, END_FORCED, END_IDLE, END_LACK_OF_RESOURCES, END_TCP, FLOW_DTYPE, FlowRecords

from frames import (
    ACK,
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    FIN,
    ICMP,
    ICMPV6,
    PSH,
    RST,
    SYN,
    TCP,
    UDP,
    arp,
    eth,
    eth_ipv4_tcp,
    eth_ipv4_udp,
    eth_ipv6_tcp,
    eth_vlan,
    icmp,
    ip4,
    ipv4,
    ipv6,
    mac_int,
    mpls_lse,
    mpls_stack,
    tcp,
    udp,
)

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def batch(frames, ts=None, *, iface=0, direction=0) -> PacketBatch:
    if ts is None:
        ts = [T0] * len(frames)
    if isinstance(iface, list):
        iface = np.asarray(iface, dtype=np.int32)
    if isinstance(direction, list):
        direction = np.asarray(direction, dtype=np.int8)
    b = PacketBatch.from_frames(frames, ts=np.asarray(ts, dtype=np.int64), iface=iface, direction=direction)
    decode(b)
    return b


def cat(out) -> np.ndarray:
    """All records of an update()/expire() result (or a FlowRecords) in one array."""
    if isinstance(out, FlowRecords):
        return out.data
    if not out:
        return np.zeros(0, dtype=FLOW_DTYPE)
    return np.concatenate([r.data for r, _ in out])


def ip_len(frame: bytes) -> int:
    b = batch([frame])
    return int(b.ip_len[0])


def test_empty_cache_and_counters():
    c = FlowCache(max_flows=10)
    assert len(c) == 0
    assert c.expire(T0) == []
    assert len(c.flush()) == 0
    assert set(COUNTER_NAMES) <= set(c.counters.values)
    assert all(c.counters[k] == 0 for k in COUNTER_NAMES)
    assert c.memory_bytes() > 0
    assert c.clock_ns == 0 and c.boot_ns == 0
    with pytest.raises(ValueError):
        FlowCache(max_flows=0)
    with pytest.raises(ValueError):
        FlowCache(max_flows=10, key_fields="vlan")


def test_key_separation_each_field():
    base = dict(sport=1000, dport=80, src="10.0.0.1", dst="192.0.2.2", tos=0)

    def f(**kw):
        a = {**base, **kw}
        return eth(ETH_IPV4, ipv4(a.get("proto", TCP),
                                  tcp(a["sport"], a["dport"], flags=ACK) if a.get("proto", TCP) == TCP
                                  else udp(a["sport"], a["dport"]),
                                  src=a["src"], dst=a["dst"], tos=a["tos"]))

    frames = [f(), f(), f(src="10.0.0.9"), f(dst="192.0.2.9"), f(sport=1001), f(dport=81), f(proto=UDP),
              f(tos=0x04), f(tos=0x01), f(), f()]
    iface = [0] * 9 + [7, 0]
    direction = [0] * 10 + [1]
    c = FlowCache(max_flows=100)
    assert c.update(batch(frames, iface=iface, direction=direction)) == []
    assert len(c) == 10  # frames 0 and 1 share a flow, every other varies one key field
    snap = c.snapshot()
    assert int(snap.data["packets"].sum()) == 11
    assert snap.data["packets"][0] == 2
    assert sorted(snap.data["tos"].tolist()) == [0] * 8 + [1, 4]
    assert sorted(snap.data["in_if"].tolist()) == [0] * 9 + [7]
    assert sorted(snap.data["direction"].tolist()) == [0] * 9 + [1]
    assert set(snap.data["out_if"].tolist()) == {0}


def test_aggregation_across_batches_exact():
    f_syn = eth_ipv4_tcp(40000, 443, flags=SYN)
    f_ack = eth(ETH_IPV4, ipv4(TCP, tcp(40000, 443, flags=ACK | PSH, payload=b"x" * 100)))
    f_fin = eth_ipv4_tcp(40000, 443, flags=FIN | ACK)
    c = FlowCache(max_flows=100)
    c.update(batch([f_syn, f_ack], ts=[T0 + 5, T0 + 9]))
    c.update(batch([f_ack, f_ack, f_ack], ts=[T0 + 20, T0 + 21, T0 + 22]))
    c.update(batch([f_fin], ts=[T0 + 30]))
    assert len(c) == 1
    r = c.snapshot().data[0]
    assert r["packets"] == 6
    assert r["bytes"] == ip_len(f_syn) + 4 * ip_len(f_ack) + ip_len(f_fin) == 40 + 4 * 140 + 40
    assert r["first_ns"] == T0 + 5 and r["last_ns"] == T0 + 30
    assert r["tcp_flags"] == SYN | ACK | PSH | FIN
    assert r["proto"] == TCP and r["sport"] == 40000 and r["dport"] == 443
    assert r["af"] == 4
    assert r["src_lo"] == 0xFFFF_0000_0000 | ip4("10.0.0.1") and r["src_hi"] == 0
    assert r["dst_lo"] == 0xFFFF_0000_0000 | ip4("192.0.2.2")
    assert r["src_mac"] == mac_int(bytes.fromhex("66778899aabb"))
    assert r["dst_mac"] == mac_int(bytes.fromhex("001122334455"))
    assert c.clock_ns == T0 + 30 and c.boot_ns == T0 + 5
    assert c.counters["packets"] == 6 and c.counters["flows_created"] == 1
    assert c.counters["bytes"] == r["bytes"]
    assert c.snapshot().boot_ns == T0 + 5


def test_out_of_order_timestamps_in_batch():
    f = eth_ipv4_udp(5000, 53)
    c = FlowCache(max_flows=10)
    c.update(batch([f, f, f], ts=[T0 + 50, T0 + 10, T0 + 30]))
    r = c.snapshot().data[0]
    assert r["first_ns"] == T0 + 10 and r["last_ns"] == T0 + 50
    assert c.clock_ns == T0 + 50


def test_icmp_dport_convention_v4_and_v6():
    f4 = eth(ETH_IPV4, ipv4(ICMP, icmp(3, 1)))
    f4b = eth(ETH_IPV4, ipv4(ICMP, icmp(8, 0)))
    f6 = eth(ETH_IPV6, ipv6(ICMPV6, icmp(128, 0)))
    c = FlowCache(max_flows=10)
    c.update(batch([f4, f4b, f6, f4]))
    d = c.snapshot(order="packets").data
    assert len(d) == 3
    assert (d["sport"] == 0).all()
    by = {int(x["dport"]): x for x in d}
    assert set(by) == {0x0301, 0x0800, 128 << 8}
    assert by[0x0301]["packets"] == 2 and by[0x0301]["icmp_type"] == 3 and by[0x0301]["icmp_code"] == 1
    assert by[0x0800]["icmp_type"] == 8 and by[0x0800]["icmp_code"] == 0
    assert by[128 << 8]["af"] == 6 and by[128 << 8]["proto"] == ICMPV6 and by[128 << 8]["icmp_type"] == 128


def test_ipv6_addresses_and_af():
    from frames import ip6
    f = eth_ipv6_tcp(1234, 443, src="2001:db8::1", dst="2001:db8::2")
    c = FlowCache(max_flows=10)
    c.update(batch([f, f]))
    r = c.snapshot().data[0]
    assert (int(r["src_hi"]), int(r["src_lo"])) == ip6("2001:db8::1")
    assert (int(r["dst_hi"]), int(r["dst_lo"])) == ip6("2001:db8::2")
    assert r["af"] == 6 and r["packets"] == 2 and r["bytes"] == 2 * (40 + 20)


def test_idle_expiry():
    c = FlowCache(max_flows=10, inactive_timeout_s=15, active_timeout_s=60)
    a, b = eth_ipv4_udp(1, 2), eth_ipv4_udp(3, 4)
    c.update(batch([a, b], ts=[T0, T0 + 10 * S]))
    assert c.expire(T0 + 14 * S) == []
    out = c.expire(T0 + 15 * S)  # a idle for exactly 15 s
    assert [r for _, r in out] == ["idle"]
    d = cat(out)
    assert len(d) == 1 and d["sport"][0] == 1 and d["end_reason"][0] == END_IDLE
    assert len(c) == 1
    assert cat(c.expire(T0 + 25 * S))["sport"].tolist() == [3]
    assert len(c) == 0 and c.counters["expired_idle"] == 2


def test_active_timeout_splits_long_flow():
    c = FlowCache(max_flows=10, inactive_timeout_s=15, active_timeout_s=60)
    f = eth_ipv4_udp(7000, 7001, payload=b"\0" * 72)
    recs = []
    total = 0
    for sec in range(200):
        c.update(batch([f, f], ts=[T0 + sec * S, T0 + sec * S + 1000]))
        total += 2
        recs.append(cat(c.expire(c.clock_ns)))
    recs.append(cat(c.flush()))
    d = np.concatenate(recs)
    active = d[d["end_reason"] == END_ACTIVE]
    assert len(active) == 3  # at 60, 121, 182 s
    assert (d["end_reason"][-1:] == END_FORCED).all()
    assert int(d["packets"].sum()) == total
    assert int(d["bytes"].sum()) == total * (20 + 8 + 72)
    assert ((d["last_ns"] - d["first_ns"]) < 61 * S).all()
    assert (d["first_ns"][1:] > d["last_ns"][:-1]).all()  # records follow each other
    assert c.counters["expired_active"] == 3


def test_tcp_fin_rst_without_grace():
    c = FlowCache(max_flows=10)
    f1 = eth_ipv4_tcp(1111, 80, flags=SYN)
    f2 = eth_ipv4_tcp(1111, 80, flags=FIN | ACK)
    f3 = eth_ipv4_tcp(2222, 80, flags=RST)
    f4 = eth_ipv4_tcp(3333, 80, flags=ACK)
    c.update(batch([f1, f2, f3, f4], ts=[T0, T0 + 1, T0 + 2, T0 + 3]))
    out = c.expire(T0 + 3)
    assert [r for _, r in out] == ["tcp"]
    d = cat(out)
    assert sorted(d["sport"].tolist()) == [1111, 2222]
    assert (d["end_reason"] == END_TCP).all()
    assert d[d["sport"] == 1111]["packets"][0] == 2
    assert len(c) == 1 and c.counters["expired_tcp"] == 2
    # a packet after the export starts a new flow
    c.update(batch([eth_ipv4_tcp(1111, 80, flags=ACK)], ts=[T0 + 4]))
    assert len(c) == 2


def test_tcp_fin_with_grace():
    c = FlowCache(max_flows=10, tcp_end_grace_s=2.0)
    fin = eth_ipv4_tcp(1111, 80, flags=FIN | ACK)
    ack = eth_ipv4_tcp(1111, 80, flags=ACK)
    c.update(batch([fin], ts=[T0 + S]))
    c.update(batch([ack], ts=[T0 + 2 * S]))  # last ACK inside the grace
    assert c.expire(T0 + 2 * S) == []
    assert c.expire(T0 + 3 * S - 1) == []
    out = c.expire(T0 + 3 * S)  # 2 s after the FIN packet, not after the ACK
    assert [r for _, r in out] == ["tcp"]
    d = cat(out)
    assert d["packets"][0] == 2 and d["tcp_flags"][0] == FIN | ACK


def test_tcp_takes_precedence_over_idle():
    c = FlowCache(max_flows=10, inactive_timeout_s=1)
    c.update(batch([eth_ipv4_tcp(1, 2, flags=RST)], ts=[T0]))
    assert [r for _, r in c.expire(T0 + 10 * S)] == ["tcp"]


def test_cache_full_evicts_least_recently_updated_first():
    c = FlowCache(max_flows=3)
    A, B, C, D = (eth_ipv4_udp(p, 53) for p in (1, 2, 3, 4))
    assert c.update(batch([A], ts=[T0 + 1])) == []
    assert c.update(batch([B], ts=[T0 + 2])) == []
    assert c.update(batch([C], ts=[T0 + 3])) == []
    assert c.update(batch([A], ts=[T0 + 4])) == []  # existing flow: no eviction
    out = c.update(batch([D], ts=[T0 + 5]))
    assert [r for _, r in out] == ["full"]
    d = cat(out)
    assert d["sport"].tolist() == [2] and d["end_reason"][0] == END_LACK_OF_RESOURCES
    assert len(c) == 3 and c.counters["expired_full"] == 1
    # two new flows at once: the two oldest (C at 3, A at 4) leave, oldest first
    out = c.update(batch([eth_ipv4_udp(5, 53), eth_ipv4_udp(6, 53)], ts=[T0 + 6, T0 + 6]))
    assert cat(out)["sport"].tolist() == [3, 1]
    assert len(c) == 3 and c.counters["expired_full"] == 3 and c.counters["max_active"] == 3


def test_cache_full_evicts_in_bulk():
    c = FlowCache(max_flows=500)
    c.update(batch([eth_ipv4_udp(p, 53) for p in range(1, 501)], ts=[T0 + p for p in range(1, 501)]))
    assert len(c) == 500
    out = c.update(batch([eth_ipv4_udp(9999, 53)], ts=[T0 + 1000]))
    d = cat(out)
    assert d["sport"].tolist() == [1, 2, 3, 4, 5, 6]  # 1 needed + 1 % of max_flows
    assert (np.diff(d["last_ns"]) >= 0).all()
    assert len(c) == 495


def test_more_new_keys_than_cache_in_one_batch():
    c = FlowCache(max_flows=4)
    frames = [eth_ipv4_udp(p, 53) for p in range(1, 11)]
    out = c.update(batch(frames, ts=[T0 + p for p in range(1, 11)]))
    assert len(c) == 4
    d = np.concatenate([cat(out), cat(c.flush())])
    assert sorted(d["sport"].tolist()) == list(range(1, 11))
    assert int(d["packets"].sum()) == 10
    assert sorted(cat(out)["sport"].tolist()) == list(range(1, 7))


def test_flush_returns_everything_and_empties():
    c = FlowCache(max_flows=1000, inactive_timeout_s=5)
    rng = np.random.default_rng(1)
    frames = [eth_ipv4_udp(int(p), 53, payload=b"\0" * int(n)) for p, n in zip(rng.integers(1, 50, 400),
                                                                           rng.integers(0, 300, 400))]
    ts = T0 + np.sort(rng.integers(0, 20 * S, 400))
    got = []
    for i in range(0, 400, 64):
        b = batch(frames[i:i + 64], ts=ts[i:i + 64])
        got.append(cat(c.update(b)))
        got.append(cat(c.expire(c.clock_ns)))
    fl = c.flush()
    assert (fl.data["end_reason"] == END_FORCED).all()
    got.append(fl.data)
    d = np.concatenate(got)
    assert len(c) == 0 and len(c.snapshot()) == 0
    assert int(d["packets"].sum()) == c.counters["packets"] == 400
    assert int(d["bytes"].sum()) == c.counters["bytes"] == sum(20 + 8 + len(f) - 42 for f in frames)
    assert c.counters["flows_created"] == len(d)
    assert c.counters["expired_idle"] + c.counters["expired_shutdown"] == len(d)
    # usable after a flush
    c.update(batch([frames[0]], ts=[T0 + 100 * S]))
    assert len(c) == 1


def test_mpls_key():
    inner = ipv4(UDP, udp(1000, 2000))
    l100 = eth(ETH_MPLS, mpls_stack([100]) + inner)
    l200 = eth(ETH_MPLS, mpls_stack([200]) + inner)
    l2 = eth(ETH_MPLS, mpls_stack([100, 300]) + inner)
    b = batch([l100, l200, l2, l100])
    c = FlowCache(max_flows=10, key_fields="mpls")
    c.update(b)
    assert len(c) == 3
    d = c.snapshot().data
    top = d[d["packets"] == 2][0]
    assert top["mpls1"] == mpls_lse(100, bos=True) and top["mpls_depth"] == 1
    assert top["sport"] == 1000 and top["dport"] == 2000 and top["proto"] == UDP  # inner IP fields kept
    two = d[d["mpls_depth"] == 2][0]
    assert two["mpls1"] == mpls_lse(100) and two["mpls2"] == mpls_lse(300, bos=True)
    ip = FlowCache(max_flows=10, key_fields="ip")
    ip.update(b)
    assert len(ip) == 1
    r = ip.snapshot().data[0]
    assert r["packets"] == 4 and r["mpls1"] == mpls_lse(100, bos=True)  # first packet's stack


def test_bridge_key():
    inner = ipv4(UDP, udp(1000, 2000))
    v10 = eth_vlan([10], ETH_IPV4, inner)
    v20 = eth_vlan([20], ETH_IPV4, inner)
    other_mac = eth(ETH_IPV4, inner, src=bytes.fromhex("020000000001"))
    other_dst = eth(ETH_IPV4, inner, dst=bytes.fromhex("020000000002"))
    plain = eth(ETH_IPV4, inner)
    b = batch([v10, v20, other_mac, other_dst, plain, v10])
    c = FlowCache(max_flows=10, key_fields="bridge")
    c.update(b)
    assert len(c) == 5
    d = c.snapshot().data
    assert d[0]["vlan"] == 10 and d[0]["packets"] == 2
    assert 0x020000000001 in d["src_mac"].tolist() and 0x020000000002 in d["dst_mac"].tolist()
    ip = FlowCache(max_flows=10)
    ip.update(b)
    assert len(ip) == 1


def test_weight_scales_packets_and_bytes():
    f = eth_ipv4_udp(1, 2)
    c = FlowCache(max_flows=10, sampling_interval=100, scale=True, instance="inst")
    c.update(batch([f, f]), weight=100)
    r = c.snapshot()
    assert r.data["packets"][0] == 200 and r.data["bytes"][0] == 200 * 28
    assert r.scaled and r.sampling_interval == 100 and r.instance == "inst"
    assert c.counters["packets"] == 200
    assert int(c.flush().data["packets"].sum()) == 200


def test_rows_mask_index_and_status():
    frames = [eth_ipv4_udp(1, 2), arp(), eth_ipv4_udp(3, 4), eth_ipv4_udp(5, 6)]
    b = batch(frames)
    c = FlowCache(max_flows=10)
    c.update(b)  # the ARP frame is not metered
    assert len(c) == 3 and c.counters["packets"] == 3
    c = FlowCache(max_flows=10)
    c.update(b, np.array([True, True, False, True]))
    assert sorted(c.snapshot().data["sport"].tolist()) == [1, 5]
    c = FlowCache(max_flows=10)
    c.update(b, np.array([2, 1]))
    assert c.snapshot().data["sport"].tolist() == [3]
    assert c.update(b, np.zeros(0, dtype=np.int64)) == []


def test_bytes_fall_back_to_wire_length_when_ip_len_is_zero():
    f = eth_ipv4_udp(1, 2, payload=b"\0" * 10)
    b = batch([f, f])
    b.ip_len = b.ip_len.copy()
    b.ip_len[1] = 0
    c = FlowCache(max_flows=10)
    c.update(b)
    assert c.snapshot().data["bytes"][0] == 38 + (len(f) - 14)


def test_fragment_bit():
    first = eth(ETH_IPV4, ipv4(UDP, udp(1, 2, b"\0" * 16), mf=True))
    c = FlowCache(max_flows=10)
    c.update(batch([first, eth_ipv4_udp(1, 2)]))
    d = c.snapshot().data
    assert len(d) == 1 and d["frag"][0] == 1


def test_snapshot_order_and_limit():
    frames = [eth_ipv4_udp(1, 2)] * 3 + [eth_ipv4_udp(3, 4, payload=b"\0" * 1000)] + [eth_ipv4_udp(5, 6)] * 2
    c = FlowCache(max_flows=10)
    c.update(batch(frames))
    assert c.snapshot(order="packets").data["sport"].tolist() == [1, 5, 3]
    assert c.snapshot(order="bytes").data["sport"].tolist() == [3, 1, 5]
    assert c.snapshot(order="packets", limit=2).data["sport"].tolist() == [1, 5]
    assert c.snapshot(order="bytes", limit=1).data["sport"].tolist() == [3]
    assert sorted(c.snapshot(order="none").data["sport"].tolist()) == [1, 3, 5]
    assert len(c.snapshot(limit=0)) == 0
    assert (c.snapshot().data["end_reason"] == 0).all()
    assert len(c) == 3  # no expiry
    with pytest.raises(ValueError):
        c.snapshot(order="age")


def test_growth_and_churn_keep_lookups_exact():
    """Many flows (past the initial arrays), deletions (tombstones) and rebuilds."""
    from flowplane import flowcache as fc
    c = FlowCache(max_flows=100_000, inactive_timeout_s=1)
    tmpl = batch([eth_ipv4_udp(1, 2)] * 4096)
    total = 0
    rng = np.random.default_rng(7)
    for rnd in range(12):
        b = tmpl.select(slice(None))
        keys = rng.integers(0, 30_000, 4096)
        b.src_lo = (np.uint64(0xFFFF_0000_0000) | keys.astype(np.uint64))
        b.ts = np.full(4096, T0 + rnd * S // 2, dtype=np.int64)
        c.update(b)
        total += 4096
        c.update(b)  # the same keys again: all hits
        total += 4096
        if rnd % 3 == 2:
            c.expire(c.clock_ns)
    assert c.cap > fc._INITIAL_CAP or len(c) <= fc._INITIAL_CAP
    snap = c.snapshot()
    keys = snap.data["src_lo"]
    assert len(np.unique(keys)) == len(keys) == len(c)  # never two entries for one key
    assert c.counters["packets"] == total
    c.flush()
    exported = c.counters["expired_idle"] + c.counters["expired_shutdown"]
    assert exported == c.counters["flows_created"]
    assert len(c) == 0


@pytest.mark.parametrize("key_fields", ["ip", "mpls", "bridge"])
def test_memory_bytes_per_flow_is_bounded(key_fields):
    c = FlowCache(max_flows=1 << 16, key_fields=key_fields)
    tmpl = batch([eth_ipv4_udp(1, 2)] * 4096)
    for i in range(16):
        b = tmpl.select(slice(None))
        b.src_lo = np.uint64(0xFFFF_0000_0000) + np.arange(i * 4096, (i + 1) * 4096, dtype=np.uint64)
        c.update(b)
    assert len(c) == 1 << 16
    assert c.memory_bytes() / len(c) <= 150


def test_hash_collisions_are_resolved_by_key(monkeypatch):
    """A degenerate hash (4 values): grouping falls back to the exact sort, the table probes long chains."""
    from flowplane import flowcache as fc
    real = fc._hash
    monkeypatch.setattr(fc, "_hash", lambda words: real(words) & np.uint64(3))
    c = FlowCache(max_flows=1000, inactive_timeout_s=1)
    frames = [eth_ipv4_udp(p, 53) for p in range(1, 41)] * 3
    c.update(batch(frames[:80], ts=[T0] * 80))
    c.update(batch(frames[80:100], ts=[T0 + 2 * S] * 20))  # ports 1..20 once more
    assert len(c) == 40
    d = c.snapshot().data
    assert sorted(d["sport"].tolist()) == list(range(1, 41))
    assert d["packets"].tolist() == [3] * 20 + [2] * 20
    out = cat(c.expire(T0 + 2 * S))  # flows last seen at T0 leave, the rest stay findable
    assert sorted(out["sport"].tolist()) == list(range(21, 41)) and len(c) == 20
    c.update(batch(frames[:40], ts=[T0 + 3 * S] * 40))
    assert len(c) == 40 and int(c.snapshot().data["packets"].sum()) == 20 * 4 + 20

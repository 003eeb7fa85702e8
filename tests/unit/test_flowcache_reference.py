"""FlowCache against a plain per-packet dict reference (hypothesis).

Random real frames (decoded by the core decoder), random batch splits, random
weights and random expiry calls: both sides must export the same records
(key, packets, bytes, first/last, flags, end reason) and the same live flows.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.batch import PacketBatch
from flowplane.decode import decode
from flowplane.flowcache import FlowCache
from flowplane.flows import FLOW_DTYPE, REASON_TO_END

from frames import (
    ACK,
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    FIN,
    ICMP,
    ICMPV6,
    RST,
    SYN,
    TCP,
    UDP,
    arp,
    eth,
    eth_vlan,
    icmp,
    ipv4,
    ipv6,
    mpls_stack,
    tcp,
    udp,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S
ICMPS = (1, 58)


class RefCache:
    """One packet at a time, a dict per flow: the obvious implementation."""

    def __init__(self, *, active_s, inactive_s, grace_s, key_fields):
        self.active, self.inactive, self.grace = int(active_s * S), int(inactive_s * S), int(grace_s * S)
        self.key_fields = key_fields
        self.flows: dict[tuple, dict] = {}
        self.out: list[tuple] = []

    def key(self, b, i):
        proto = int(b.proto[i])
        sport, dport = int(b.sport[i]), int(b.dport[i])
        if proto in ICMPS:
            sport, dport = 0, int(b.icmp_type[i]) << 8 | int(b.icmp_code[i])
        k = (int(b.src_hi[i]), int(b.src_lo[i]), int(b.dst_hi[i]), int(b.dst_lo[i]), sport, dport, proto,
             int(b.tos[i]), int(b.iface[i]), int(b.direction[i]))
        if self.key_fields == "mpls":
            k += (int(b.mpls1[i]), int(b.mpls2[i]), int(b.mpls3[i]), int(b.mpls_depth[i]))
        elif self.key_fields == "bridge":
            k += (int(b.vlan[i]), int(b.src_mac[i]), int(b.dst_mac[i]))
        return k

    def update(self, b, weight):
        for i in range(len(b)):
            if b.status[i]:
                continue
            k = self.key(b, i)
            ts = int(b.ts[i])
            nbytes = int(b.ip_len[i]) or int(b.wirelen[i]) - max(int(b.l3_off[i]), 0)
            fl = self.flows.get(k)
            if fl is None:
                fl = self.flows[k] = dict(packets=0, bytes=0, first=ts, last=ts, flags=0, end=None,
                                          mpls1=int(b.mpls1[i]), vlan=int(b.vlan[i]))
            fl["packets"] += weight
            fl["bytes"] += weight * nbytes
            fl["first"] = min(fl["first"], ts)
            fl["last"] = max(fl["last"], ts)
            fl["flags"] |= int(b.tcp_flags[i])
            if int(b.tcp_flags[i]) & (FIN | RST):
                fl["end"] = ts if fl["end"] is None else min(fl["end"], ts)

    def expire(self, now):
        for k, fl in list(self.flows.items()):
            if fl["end"] is not None and (self.grace == 0 or fl["end"] <= now - self.grace):
                reason = "tcp"
            elif fl["last"] <= now - self.inactive:
                reason = "idle"
            elif fl["first"] <= now - self.active:
                reason = "active"
            else:
                continue
            self.emit(k, fl, reason)
            del self.flows[k]

    def flush(self):
        for k, fl in self.flows.items():
            self.emit(k, fl, "shutdown")
        self.flows.clear()

    def emit(self, k, fl, reason):
        self.out.append(k[:10] + (fl["packets"], fl["bytes"], fl["first"], fl["last"], fl["flags"],
                                  fl["mpls1"], fl["vlan"], REASON_TO_END[reason]))


def rec_tuples(data: np.ndarray) -> list[tuple]:
    cols = ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "proto", "tos", "in_if", "direction",
            "packets", "bytes", "first_ns", "last_ns", "tcp_flags", "mpls1", "vlan", "end_reason")
    return [tuple(int(x) for x in row) for row in zip(*(data[c].tolist() for c in cols))]


# ---------------------------------------------------------------- random traffic
SRCS4, DSTS4 = ("10.0.0.1", "10.0.0.2", "10.1.2.3"), ("192.0.2.1", "198.18.0.5")
SRCS6, DSTS6 = ("2001:db8::1", "2001:db8::2"), ("2001:db8:2::1",)
FLAG_CHOICES = (SYN, ACK, ACK, ACK, ACK | FIN, RST, ACK | 0x08)


@st.composite
def packet(draw):
    kind = draw(st.sampled_from(["tcp4", "udp4", "icmp4", "tcp6", "udp6", "icmp6", "mpls", "vlan", "arp"]))
    sport = draw(st.sampled_from([1000, 1001, 53]))
    dport = draw(st.sampled_from([80, 53]))
    pay = b"\0" * draw(st.integers(0, 40))
    tos = draw(st.sampled_from([0, 0, 4]))
    flags = draw(st.sampled_from(FLAG_CHOICES))
    if kind.endswith("4") or kind in ("mpls", "vlan"):
        src, dst = draw(st.sampled_from(SRCS4)), draw(st.sampled_from(DSTS4))
        if kind in ("tcp4", "mpls"):
            l3 = ipv4(TCP, tcp(sport, dport, flags=flags, payload=pay), src=src, dst=dst, tos=tos)
        elif kind in ("udp4", "vlan"):
            l3 = ipv4(UDP, udp(sport, dport, pay), src=src, dst=dst, tos=tos)
        else:
            l3 = ipv4(ICMP, icmp(draw(st.sampled_from([0, 8, 3])), draw(st.sampled_from([0, 1])), pay),
                      src=src, dst=dst, tos=tos)
        if kind == "mpls":
            return eth(ETH_MPLS, mpls_stack(draw(st.sampled_from([[16], [17], [16, 99]]))) + l3)
        if kind == "vlan":
            return eth_vlan([draw(st.sampled_from([10, 20]))], ETH_IPV4, l3)
        return eth(ETH_IPV4, l3)
    if kind == "arp":
        return arp()
    src, dst = draw(st.sampled_from(SRCS6)), draw(st.sampled_from(DSTS6))
    if kind == "tcp6":
        l4, nh = tcp(sport, dport, flags=flags, payload=pay), TCP
    elif kind == "udp6":
        l4, nh = udp(sport, dport, pay), UDP
    else:
        l4, nh = icmp(draw(st.sampled_from([128, 129])), 0, pay), ICMPV6
    return eth(ETH_IPV6, ipv6(nh, l4, src=src, dst=dst, tc=tos))


@st.composite
def scenario(draw):
    n = draw(st.integers(1, 120))
    frames = draw(st.lists(packet(), min_size=n, max_size=n))
    gaps = draw(st.lists(st.sampled_from([0, 1, 1000, S // 3, S, 4 * S, 20 * S]), min_size=n, max_size=n))
    ts = (T0 + np.cumsum(gaps)).tolist()
    iface = draw(st.lists(st.sampled_from([0, 0, 3]), min_size=n, max_size=n))
    direction = draw(st.lists(st.sampled_from([0, 0, 1]), min_size=n, max_size=n))
    # batch cut points, and per batch: weight and an optional expiry call (delay after the clock)
    cuts = sorted(set(draw(st.lists(st.integers(1, n), max_size=8))) | {n})
    steps = [(draw(st.sampled_from([1, 1, 10])), draw(st.one_of(st.none(), st.sampled_from([0, S, 5 * S, 30 * S]))))
             for _ in cuts]
    return frames, ts, iface, direction, cuts, steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.sampled_from(["ip", "mpls", "bridge"]), st.sampled_from([0.0, 2.0]),
       st.sampled_from([(60, 15), (5, 2)]))
def test_matches_reference(scn, key_fields, grace, timeouts):
    frames, ts, iface, direction, cuts, steps = scn
    active, inactive = timeouts
    b = PacketBatch.from_frames(frames, ts=np.asarray(ts, dtype=np.int64), iface=np.asarray(iface, dtype=np.int32),
                                direction=np.asarray(direction, dtype=np.int8))
    decode(b)
    cache = FlowCache(max_flows=10_000, active_timeout_s=active, inactive_timeout_s=inactive,
                      tcp_end_grace_s=grace, key_fields=key_fields)
    ref = RefCache(active_s=active, inactive_s=inactive, grace_s=grace, key_fields=key_fields)
    got = []
    lo = 0
    for hi, (weight, delay) in zip(cuts, steps):
        part = b.select(np.arange(lo, hi))
        lo = hi
        assert cache.update(part, weight=weight) == []
        ref.update(part, weight)
        if delay is not None:
            now = cache.clock_ns + delay
            for recs, reason in cache.expire(now):
                assert (recs.data["end_reason"] == REASON_TO_END[reason]).all()
                got.append(recs.data)
            ref.expire(now)
        assert len(cache) == len(ref.flows)
    live = rec_tuples(cache.snapshot(order="none").data)
    assert Counter(t[:-1] for t in live) == Counter(
        tuple(k[:10]) + (f["packets"], f["bytes"], f["first"], f["last"], f["flags"], f["mpls1"], f["vlan"])
        for k, f in ref.flows.items())
    got.append(cache.flush().data)
    ref.flush()
    assert len(cache) == 0
    d = np.concatenate(got) if got else np.zeros(0, dtype=FLOW_DTYPE)
    assert Counter(rec_tuples(d)) == Counter(ref.out)
    assert int(d["packets"].sum()) == cache.counters["packets"]
    assert int(d["bytes"].sum()) == cache.counters["bytes"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(1, 6))
def test_small_cache_conserves_counts(scn, max_flows):
    """With evictions (cache full) nothing is lost and the cache never exceeds max_flows."""
    frames, ts, iface, direction, cuts, steps = scn
    b = PacketBatch.from_frames(frames, ts=np.asarray(ts, dtype=np.int64), iface=np.asarray(iface, dtype=np.int32),
                                direction=np.asarray(direction, dtype=np.int8))
    decode(b)
    cache = FlowCache(max_flows=max_flows, inactive_timeout_s=2)
    got = []
    lo = 0
    for hi, (weight, delay) in zip(cuts, steps):
        for recs, reason in cache.update(b.select(np.arange(lo, hi)), weight=weight):
            assert reason == "full"
            got.append(recs.data)
        lo = hi
        assert len(cache) <= max_flows
        if delay is not None:
            got += [r.data for r, _ in cache.expire(cache.clock_ns + delay)]
    got.append(cache.flush().data)
    d = np.concatenate(got)
    assert int(d["packets"].sum()) == cache.counters["packets"]
    assert int(d["bytes"].sum()) == cache.counters["bytes"]
    assert cache.counters["packets"] == sum(1 for s in b.status if s == 0) if all(w == 1 for w, _ in steps) else True
    assert len(d) == cache.counters["flows_created"]

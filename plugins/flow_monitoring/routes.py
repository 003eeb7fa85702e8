"""Next hop, AS and prefix length for flow records, from ``routing-options``.

flowplane runs no routing protocol, so the fields NetFlow takes from the
router's table come from a static table in the config::

    routing-options:
      autonomous-system: 64512           # our AS: prefixes with no 'as' of their own
      static:
        route 198.18.0.0/15: {next-hop: 192.0.2.1, as: 65001}
        route 2001:db8:2::/48: {next-hop: "2001:db8::1", as: 65002}

Lookups are longest-prefix matches done once per exported batch of records
(never per packet), vectorised with ``np.searchsorted`` over the table
flattened to non-overlapping segments.  IPv6 routes longer than /64 are
matched on their first 64 bits.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from flowplane.api import ConfigIssue, FlowRecords, check_int, check_keys, check_mapping

V4_MAPPED = 0x0000_FFFF_0000_0000


@dataclass
class _Table:
    """One family: segment starts, and per segment the route (or -1)."""

    starts: np.ndarray  # uint64, sorted
    owner: np.ndarray  # int32 route index per segment
    plen: np.ndarray  # uint8 prefix length per route
    asn: np.ndarray  # uint32 per route
    nh_hi: np.ndarray  # uint64 per route
    nh_lo: np.ndarray

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Route index for each key (-1 when no route covers it)."""
        if not len(self.starts):
            return np.full(len(keys), -1, dtype=np.int32)
        seg = np.searchsorted(self.starts, keys, side="right") - 1
        out = np.where(seg >= 0, self.owner[np.maximum(seg, 0)], -1)
        return out.astype(np.int32)


class RouteTable:
    def __init__(self, routes: list[tuple[ipaddress._BaseNetwork, int, int]], local_as: int = 0) -> None:
        self.local_as = local_as
        self.count = len(routes)
        self.v4 = _build([r for r in routes if r[0].version == 4], 4, local_as)
        self.v6 = _build([r for r in routes if r[0].version == 6], 6, local_as)

    def annotate(self, records: FlowRecords) -> None:
        """Fill src_as/dst_as, src_mask/dst_mask and the next hop of *records* in place."""
        d = records.data
        if not len(d) or not self.count:
            return
        for table, af, key_of in ((self.v4, 4, lambda hi, lo: lo & np.uint64(0xFFFF_FFFF)),
                                  (self.v6, 6, lambda hi, lo: hi)):
            rows = np.flatnonzero(d["af"] == af)
            if not len(rows) or not len(table.starts):
                continue
            src = table.lookup(key_of(d["src_hi"][rows], d["src_lo"][rows]))
            dst = table.lookup(key_of(d["dst_hi"][rows], d["dst_lo"][rows]))
            hit_s, hit_d = src >= 0, dst >= 0
            d["src_as"][rows[hit_s]] = table.asn[src[hit_s]]
            d["src_mask"][rows[hit_s]] = table.plen[src[hit_s]]
            d["dst_as"][rows[hit_d]] = table.asn[dst[hit_d]]
            d["dst_mask"][rows[hit_d]] = table.plen[dst[hit_d]]
            d["nexthop_hi"][rows[hit_d]] = table.nh_hi[dst[hit_d]]
            d["nexthop_lo"][rows[hit_d]] = table.nh_lo[dst[hit_d]]


def _build(routes, version: int, local_as: int) -> _Table:
    width = 32 if version == 4 else 64
    n = len(routes)
    plen = np.zeros(n, dtype=np.uint8)
    asn = np.zeros(n, dtype=np.uint32)
    nh_hi = np.zeros(n, dtype=np.uint64)
    nh_lo = np.zeros(n, dtype=np.uint64)
    lo_b, hi_b = [], []
    for i, (net, nh, a) in enumerate(routes):
        plen[i] = net.prefixlen
        asn[i] = a or local_as
        if version == 4:
            nh_lo[i] = V4_MAPPED | nh if nh else 0
            lo_b.append(int(net.network_address))
            hi_b.append(int(net.broadcast_address) + 1)
        else:
            nh_hi[i], nh_lo[i] = nh >> 64, nh & (2**64 - 1)
            lo_b.append(int(net.network_address) >> 64)
            hi_b.append((int(net.broadcast_address) >> 64) + 1)
    if not n:
        empty = np.zeros(0, dtype=np.uint64)
        return _Table(empty, np.zeros(0, dtype=np.int32), plen, asn, nh_hi, nh_lo)
    # segment boundaries (the end of the address space needs no boundary: clip it)
    bounds = sorted({b for b in lo_b + hi_b if b < 2**width} | {0})
    starts = np.array(bounds, dtype=np.uint64)
    owner = np.full(len(starts), -1, dtype=np.int32)
    for i in sorted(range(n), key=lambda k: plen[k]):  # longer prefixes paint over shorter ones
        a = np.searchsorted(starts, np.uint64(lo_b[i]), side="left")
        b = len(starts) if hi_b[i] >= 2**width else np.searchsorted(starts, np.uint64(hi_b[i]), side="left")
        owner[a:b] = i
    return _Table(starts, owner, plen, asn, nh_hi, nh_lo)


def parse_routes(config: dict) -> tuple[RouteTable | None, list[ConfigIssue]]:
    ro = config.get("routing-options")
    if ro is None:
        return None, []
    p = ("routing-options",)
    issues = check_mapping(ro, p, "autonomous-system / static")
    if not isinstance(ro, dict):
        return None, issues
    issues += check_keys(ro, ("autonomous-system", "static"), p)
    local_as = ro.get("autonomous-system", 0)
    if "autonomous-system" in ro:
        issues += check_int(local_as, p + ("autonomous-system",), 0, 2**32 - 1)
    routes = []
    static = ro.get("static") or {}
    issues += check_mapping(static, p + ("static",), "route PREFIX: {next-hop, as}")
    table = static.get("route") if isinstance(static, dict) else None
    if isinstance(static, dict):
        issues += check_keys(static, ("route",), p + ("static",))
    for prefix, sec in (table or {}).items():
        rp = p + ("static", "route", prefix)
        try:
            net = ipaddress.ip_network(str(prefix), strict=True)
        except ValueError as exc:
            issues.append(ConfigIssue(rp, f"expected a prefix like 198.18.0.0/15: {exc}"))
            continue
        sec = sec or {}
        if not isinstance(sec, dict):
            issues.append(ConfigIssue(rp, f"expected {{next-hop: ADDRESS, as: N}}, got {sec!r}"))
            continue
        issues += check_keys(sec, ("next-hop", "as"), rp)
        nh = 0
        if "next-hop" in sec:
            try:
                nha = ipaddress.ip_address(str(sec["next-hop"]))
                if nha.version != net.version:
                    raise ValueError(f"next hop {nha} is not IPv{net.version}")
                nh = int(nha)
            except ValueError as exc:
                issues.append(ConfigIssue(rp + ("next-hop",), f"expected an IPv{net.version} address: {exc}"))
        a = sec.get("as", 0)
        if "as" in sec:
            issues += check_int(a, rp + ("as",), 0, 2**32 - 1)
        routes.append((net, nh, a if isinstance(a, int) else 0))
    if issues:
        return None, issues
    return RouteTable(routes, local_as if isinstance(local_as, int) else 0), []

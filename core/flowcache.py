"""The flow cache: meters decoded packets into flows and expires them as records.

Every flow feature (sampling instances, discard accounting, inline/monitoring
groups) owns one :class:`FlowCache`.  It takes decoded :class:`PacketBatch`
rows and gives back :class:`~flowplane.flows.FlowRecords` when flows leave.

Semantics (Junos-like)
----------------------
* Key: source/destination address, source/destination port (ICMP/ICMPv6:
  ``sport = 0``, ``dport = type << 8 | code``), protocol, ToS (the full byte),
  ingress interface (``iface``), direction and egress interface (``out_if`` is
  0 for now).  ``key_fields="mpls"`` adds the label stack (``mpls1..3`` and
  ``mpls_depth``; the inner IP fields stay in the key), ``"bridge"`` adds the
  outer VLAN and the source/destination MAC.
* Per flow: packets, bytes (the IP length ``ip_len``; the wire length minus the
  link header only when ``ip_len`` is 0), first/last packet time (ns), the OR of
  the TCP flags, ICMP type/code, the fragment bit, and the MACs, VLAN, MPLS
  stack and address family of the flow's first packet.  ``weight`` multiplies
  packets and bytes (the caller's "scaled counts").
* Expiry (:meth:`FlowCache.expire`, once a second or so): ``"tcp"`` once a FIN
  or RST was seen and ``tcp_end_grace_s`` passed since that packet (grace 0:
  at the next pass), else ``"idle"`` after ``inactive_timeout_s`` without a
  packet, else ``"active"`` once the flow is ``active_timeout_s`` old: the
  record leaves and the next packet of that key starts a new one (long flows
  become several records whose sums are the flow's).  Comparisons are ``>=``.
* Cache full: when new flows arrive and the cache holds ``max_flows``, the
  least recently updated flows (smallest ``last_ns``) leave at once, oldest
  first, reason ``"full"`` (a little more than needed, 1 % of ``max_flows``,
  to amortise).  :meth:`update` returns them.
* :meth:`flush` returns every flow (``"shutdown"``) and empties the cache.
* Invariant: the packets and bytes of all records that ever left (any reason,
  after a flush) equal what was metered (``counters["packets"]`` / ``["bytes"]``).
* Only decoded rows (``status == 0``) are metered, also when *rows* is given.

Clocks: :attr:`FlowCache.clock_ns` is the largest packet time seen (replay
passes it to :meth:`expire`); live capture passes wall time.  ``boot_ns`` is
the first packet time seen unless the caller set it; records carry it.

How it is fast (DESIGN.md "Speed: columnar batches")
----------------------------------------------------
Per batch, every row gets a fixed-width key of 64-bit words (6 for ``ip``,
8 for ``mpls``/``bridge``) and a 64-bit hash of them.  An argsort of the
hashes groups the rows (neighbours with equal hashes are checked to have equal
keys; a 64-bit collision inside one batch falls back to a lexsort of the
words), and ``reduceat`` aggregates each group.  Each distinct key is looked up once in an
open-addressing table (``int32`` flow ids, linear probing, power-of-two size
>= 2 x capacity) by vectorised probing rounds; misses are inserted in rounds
too (one winner per contested slot).  Deletion leaves tombstones (or an empty
slot when the next slot is empty); the table is rebuilt when tombstones pile
up.  Flows live in struct-of-arrays columns with a free-slot stack; the
arrays grow by doubling up to ``max_flows``.  Expiry and eviction are
vectorised scans.  Nothing loops per packet or per flow in Python.

Measured (``python tests/bench/bench_flowcache.py``, 2-vCPU dev box, numpy 2.4,
one pinned core, batches of 4096 of the generated 1.2 M-packet pcap, ~118k
flows): ``update`` ~270 ns/packet (3.6 Mpps), with ``expire`` once a second
~310 ns/packet (3.2 Mpps), with a 2048-flow cache evicting all the time ~400
ns/packet (2.5 Mpps); filling a 1 M-flow cache with new flows ~0.8 us/flow;
135 bytes per flow at 1 M flows (``key_fields`` mpls 138, bridge 133; the hash
table is 8.4 of them).  Flow, packet and byte counts equal the pcap's truth.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .batch import PacketBatch
from .flows import FLOW_DTYPE, REASON_TO_END, SAMPLING_DETERMINISTIC, FlowRecords
from .stats import Counters

__all__ = ["FlowCache", "KEY_FIELDS", "COUNTER_NAMES"]

KEY_FIELDS = ("ip", "mpls", "bridge")
COUNTER_NAMES = ("packets", "bytes", "flows_created", "expired_idle", "expired_active", "expired_tcp",
                 "expired_full", "expired_shutdown", "max_active")

_U64 = np.uint64
_EMPTY = np.int32(-1)
_TOMB = np.int32(-2)
_NO_END = np.iinfo(np.int64).max
_M1 = _U64(0x9E3779B97F4A7C15)
_M2 = _U64(0xBF58476D1CE4E5B9)
_INITIAL_CAP = 1 << 14
_REBUILD_LOAD = 0.65  # (live + tombstones) / table size that triggers a rebuild
_ICMP_PROTOS = (1, 58)
_FIN_RST = 0x05


def _hash(words: list[np.ndarray]) -> np.ndarray:
    """64-bit hash of rows given as a list of uint64 columns (same length)."""
    h = words[0] * _M1
    for w in words[1:]:
        h ^= w
        h *= _M1
        h ^= h >> _U64(29)
    h *= _M2
    h ^= h >> _U64(32)
    return h


class FlowCache:
    """A bounded flow cache over decoded packet batches.  See the module doc."""

    def __init__(self, *, max_flows: int, active_timeout_s: float = 60, inactive_timeout_s: float = 15,
                 key_fields: str = "ip", tcp_end_grace_s: float = 0.0, instance: str = "",
                 sampling_interval: int = 1, sampling_algorithm: int = SAMPLING_DETERMINISTIC,
                 scale: bool = False, impl=None) -> None:
        if max_flows < 1:
            raise ValueError(f"max_flows must be >= 1, not {max_flows}")
        if key_fields not in KEY_FIELDS:
            raise ValueError(f"key_fields must be one of {', '.join(KEY_FIELDS)}, not {key_fields!r}")
        self.max_flows = int(max_flows)
        self.active_ns = int(round(active_timeout_s * 1e9))
        self.inactive_ns = int(round(inactive_timeout_s * 1e9))
        self.grace_ns = int(round(tcp_end_grace_s * 1e9))
        self.key_fields = key_fields
        self.instance = instance
        self.sampling_interval = int(sampling_interval)
        self.sampling_algorithm = int(sampling_algorithm)
        self.scale = bool(scale)
        self.kw = 6 if key_fields == "ip" else 8
        impl = impl or kernels.active()  # hash table probing: compiled or Python (flowplane.kernels)
        self._k_lookup, self._k_insert = impl.flow_lookup, impl.flow_insert
        self.counters = Counters(f"flowcache{':' + instance if instance else ''}")
        for name in COUNTER_NAMES:
            self.counters.values[name] = 0
        self._clock: int | None = None
        self._boot: int | None = None
        self._n = 0  # live flows
        self._alloc(min(self.max_flows, _INITIAL_CAP))

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap: int) -> None:
        """Allocate (or grow to) *cap* flow slots and a table for them."""
        old = getattr(self, "cap", 0)
        self.cap = cap
        cols = {
            "keys": ((cap, self.kw), np.uint64, 0),
            "packets": (cap, np.uint64, 0),
            "bytes": (cap, np.uint64, 0),
            "first": (cap, np.int64, 0),
            "last": (cap, np.int64, 0),
            "tcp_end": (cap, np.int64, _NO_END),
            "flags": (cap, np.uint8, 0),
            "frag": (cap, np.uint8, 0),
            "ip6ext": (cap, np.uint16, 0),  # ipv6ExtensionHeaders bits, OR over the flow
            "af": (cap, np.uint8, 0),
            "live": (cap, np.bool_, False),
        }
        # attributes outside the key (first packet's); in the key they are read back from it
        if self.key_fields != "bridge":
            cols.update(src_mac=(cap, np.uint64, 0), dst_mac=(cap, np.uint64, 0), vlan=(cap, np.uint16, 0))
        if self.key_fields != "mpls":
            cols.update(mpls=((cap, 3), np.uint32, 0), depth=(cap, np.uint8, 0))
        self._columns = tuple(cols) + ("free", "table")
        for name, (shape, dtype, fill) in cols.items():
            new = np.full(shape, fill, dtype=dtype)
            if old:
                new[:old] = getattr(self, "_" + name)
            setattr(self, "_" + name, new)
        free = np.empty(cap, dtype=np.int32)
        nfree = 0
        if old:
            nfree = self._nfree
            free[:nfree] = self._free[:nfree]
        add = np.arange(cap - 1, old - 1, -1, dtype=np.int32)  # lowest index on top
        free[nfree:nfree + len(add)] = add
        self._free = free
        self._nfree = nfree + len(add)
        size = 1 << max(4, int(2 * cap - 1).bit_length())
        self._table = np.full(size, _EMPTY, dtype=np.int32)
        self._mask = _U64(size - 1)
        self._tombs = 0
        if old:
            self._reinsert_live()

    def _reinsert_live(self) -> None:
        self._table.fill(_EMPTY)
        self._tombs = 0
        idx = np.flatnonzero(self._live)
        if len(idx):
            k = self._keys[idx]
            self._insert(_hash([k[:, i] for i in range(self.kw)]), idx.astype(np.int32))

    def memory_bytes(self) -> int:
        """Bytes held by the cache's arrays and hash table."""
        return int(sum(getattr(self, "_" + n).nbytes for n in self._columns))

    # ------------------------------------------------------------------ hash table
    def _lookup(self, h: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Flow id of each key (rows of *keys*, hashes *h*), -1 when absent."""
        return self._k_lookup(self._table, int(self._mask), self._keys, h, np.ascontiguousarray(keys))

    def _insert(self, h: np.ndarray, fid: np.ndarray) -> None:
        """Put flow ids *fid* (keys known absent, distinct) into the table."""
        self._tombs -= self._k_insert(self._table, int(self._mask), np.ascontiguousarray(h),
                                      np.ascontiguousarray(fid, dtype=np.int32))

    def _delete(self, fid: np.ndarray) -> None:
        """Free flows *fid* (live, distinct): table slots, live bit, free stack."""
        if not len(fid):
            return
        table, mask = self._table, int(self._mask)
        k = self._keys[fid]
        h = _hash([k[:, i] for i in range(self.kw)])
        slot = (h & self._mask).astype(np.intp)
        want = fid.astype(np.int32)
        found = np.empty(len(fid), dtype=np.intp)
        pend = np.arange(len(fid))
        while len(pend):
            hit = table[slot] == want[pend]
            found[pend[hit]] = slot[hit]
            miss = ~hit
            pend = pend[miss]
            slot = (slot[miss] + 1) & mask
        after = table[(found + 1) & mask]
        mark = np.where(after == _EMPTY, _EMPTY, _TOMB).astype(np.int32)
        table[found] = mark
        self._tombs += int(np.count_nonzero(mark == _TOMB))
        self._live[fid] = False
        self._flags[fid] = 0
        self._frag[fid] = 0
        self._ip6ext[fid] = 0
        self._tcp_end[fid] = _NO_END
        n = len(fid)
        self._free[self._nfree:self._nfree + n] = fid[::-1]
        self._nfree += n
        self._n -= n
        if self._n + self._tombs > _REBUILD_LOAD * len(table):
            self._reinsert_live()

    # ------------------------------------------------------------------ properties
    @property
    def clock_ns(self) -> int:
        """The largest packet time seen (0 before the first packet)."""
        return self._clock or 0

    @property
    def boot_ns(self) -> int:
        """The cache clock's origin: the first packet time seen, unless set."""
        return self._boot or 0

    @boot_ns.setter
    def boot_ns(self, value: int) -> None:
        self._boot = int(value)

    def __len__(self) -> int:
        return self._n

    # ------------------------------------------------------------------ metering
    def _rows(self, batch: PacketBatch, rows) -> np.ndarray | None:
        """Index array of the rows to meter (None = every row)."""
        ok = batch.status == 0
        if rows is None:
            return None if ok.all() else np.flatnonzero(ok)
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            return np.flatnonzero(rows & ok)
        return rows[ok[rows]]

    def _key_words(self, batch: PacketBatch, r: np.ndarray | None) -> list[np.ndarray]:
        g = (lambda a: a) if r is None else (lambda a: a[r])
        proto = g(batch.proto)
        sport = g(batch.sport).astype(_U64)
        dport = g(batch.dport).astype(_U64)
        icmp = (proto == 1) | (proto == 58)
        if icmp.any():
            tc = (g(batch.icmp_type).astype(_U64) << _U64(8)) | g(batch.icmp_code)
            dport = np.where(icmp, tc, dport)
            sport[icmp] = 0
        w4 = (sport << _U64(48)) | (dport << _U64(32)) | g(batch.iface).astype(np.uint32)
        w5 = ((proto.astype(_U64) << _U64(56)) | (g(batch.tos).astype(_U64) << _U64(48))
              | (g(batch.direction).astype(np.uint8).astype(_U64) << _U64(40)))  # | out_if (0)
        words = [g(batch.src_hi), g(batch.src_lo), g(batch.dst_hi), g(batch.dst_lo), w4, w5]
        if self.key_fields == "mpls":
            words.append((g(batch.mpls1).astype(_U64) << _U64(32)) | g(batch.mpls2))
            words.append((g(batch.mpls3).astype(_U64) << _U64(8)) | g(batch.mpls_depth))
        elif self.key_fields == "bridge":
            words.append((g(batch.src_mac) << _U64(16)) | g(batch.vlan))
            words.append(g(batch.dst_mac).astype(_U64, copy=True))
        return words

    def update(self, batch: PacketBatch, rows: np.ndarray | None = None, *,
               weight: int = 1) -> list[tuple[FlowRecords, str]]:
        """Meter *rows* (bool mask / index array; None = every decoded row) of *batch*.

        Returns the records that had to leave now to make room (``"full"``).
        """
        r = self._rows(batch, rows)
        n = len(batch) if r is None else len(r)
        if n == 0:
            return []
        words = self._key_words(batch, r)
        h = _hash(words)
        keys = np.empty((n, self.kw), dtype=_U64)
        for i, w in enumerate(words):
            keys[:, i] = w
        order, starts, rep = _group(h, keys)
        m = len(starts)
        if m > self.max_flows:  # more distinct keys than the cache holds: split in time order
            rr = np.arange(len(batch)) if r is None else r
            half = n // 2
            return self.update(batch, rr[:half], weight=weight) + self.update(batch, rr[half:], weight=weight)

        g = (lambda a: a) if r is None else (lambda a: a[r])
        ts = g(batch.ts)[order]
        ip_len = g(batch.ip_len)
        if not ip_len.all():
            alt = (g(batch.wirelen).astype(np.int64) - np.maximum(g(batch.l3_off), 0)).clip(0)
            ip_len = np.where(ip_len == 0, alt, ip_len)
        nbytes = ip_len.astype(_U64)[order]
        gbytes = np.add.reduceat(nbytes, starts)
        counts = np.diff(np.append(starts, n)).astype(_U64)
        if weight != 1:
            gbytes *= _U64(weight)
            counts *= _U64(weight)
        gfirst = np.minimum.reduceat(ts, starts)
        glast = np.maximum.reduceat(ts, starts)
        flags = g(batch.tcp_flags)[order]
        gflags = np.bitwise_or.reduceat(flags, starts)
        gfrag = np.maximum.reduceat(g(batch.frag)[order], starts)
        gfrag = (gfrag != 0).astype(np.uint8)
        ext = g(batch.ip6_ext)
        gext = np.bitwise_or.reduceat(ext[order], starts) if ext.any() else None
        gend = None
        if (gflags & _FIN_RST).any():
            endts = np.where(flags & _FIN_RST, ts, _NO_END)
            gend = np.minimum.reduceat(endts, starts)

        tmax = int(glast.max())
        if self._clock is None or tmax > self._clock:
            self._clock = tmax
        if self._boot is None:
            self._boot = int(gfirst.min())
        self.counters.inc("packets", int(counts.sum()))
        self.counters.inc("bytes", int(gbytes.sum()))

        gkeys = np.take(keys, rep, axis=0)  # rep: each key's first row in the batch
        gh = h[rep]
        fid = self._lookup(gh, gkeys)

        # existing flows: ids are distinct, so plain fancy-index updates are exact
        old = np.flatnonzero(fid >= 0)
        if len(old):
            f = fid[old]
            self._packets[f] += counts[old]
            self._bytes[f] += gbytes[old]
            self._last[f] = np.maximum(self._last[f], glast[old])
            self._first[f] = np.minimum(self._first[f], gfirst[old])
            self._flags[f] |= gflags[old]
            self._frag[f] |= gfrag[old]
            if gext is not None:
                self._ip6ext[f] |= gext[old]
            if gend is not None:
                self._tcp_end[f] = np.minimum(self._tcp_end[f], gend[old])

        out: list[tuple[FlowRecords, str]] = []
        new = np.flatnonzero(fid < 0)
        k = len(new)
        if k:
            if self._nfree < k and self.cap < self.max_flows:
                cap = self.cap
                while cap - self._n < k and cap < self.max_flows:
                    cap = min(self.max_flows, cap * 2)
                self._alloc(cap)
            if self._nfree < k:
                out.append((self._evict(k - self._nfree), "full"))
            f = self._free[self._nfree - k:self._nfree][::-1].copy()
            self._nfree -= k
            self._n += k
            self._live[f] = True
            self._keys[f] = gkeys[new]
            self._packets[f] = counts[new]
            self._bytes[f] = gbytes[new]
            self._first[f] = gfirst[new]
            self._last[f] = glast[new]
            self._flags[f] = gflags[new]
            self._frag[f] = gfrag[new]
            self._ip6ext[f] = gext[new] if gext is not None else 0
            if gend is not None:
                self._tcp_end[f] = gend[new]
            src = rep[new] if r is None else r[rep[new]]
            if self.key_fields != "bridge":
                self._src_mac[f] = batch.src_mac[src]
                self._dst_mac[f] = batch.dst_mac[src]
                self._vlan[f] = batch.vlan[src]
            if self.key_fields != "mpls":
                self._mpls[f, 0] = batch.mpls1[src]
                self._mpls[f, 1] = batch.mpls2[src]
                self._mpls[f, 2] = batch.mpls3[src]
                self._depth[f] = batch.mpls_depth[src]
            self._af[f] = batch.af[src]
            self._insert(gh[new], f)
            if self._n + self._tombs > _REBUILD_LOAD * len(self._table):
                self._reinsert_live()
            self.counters.inc("flows_created", k)
            if self._n > self.counters["max_active"]:
                self.counters.values["max_active"] = self._n
        return out

    def _evict(self, need: int) -> FlowRecords:
        """Remove the *need* (+1 % of max_flows) least recently updated flows."""
        live = np.flatnonzero(self._live)
        k = min(len(live), need + self.max_flows // 100)
        last = self._last[live]
        if k < len(live):
            part = np.argpartition(last, k - 1)[:k]
            live, last = live[part], last[part]
        ev = live[np.lexsort((live, last))]
        recs = self._records(ev, "full")
        self._delete(ev)
        self.counters.inc("expired_full", len(ev))
        return recs

    # ------------------------------------------------------------------ leaving
    def expire(self, now_ns: int) -> list[tuple[FlowRecords, str]]:
        """Flows due at *now_ns*: ``"tcp"``, then ``"idle"``, then ``"active"``."""
        if not self._n:
            return []
        now = int(now_ns)
        live = np.flatnonzero(self._live)
        end = self._tcp_end[live]
        if self.grace_ns <= 0:
            tcp = end != _NO_END
        else:
            tcp = end <= now - self.grace_ns
        idle = ~tcp & (self._last[live] <= now - self.inactive_ns)
        active = ~tcp & ~idle & (self._first[live] <= now - self.active_ns)
        out = []
        for reason, sel in (("tcp", tcp), ("idle", idle), ("active", active)):
            if sel.any():
                fid = live[sel]
                out.append((self._records(fid, reason), reason))
                self._delete(fid)
                self.counters.inc("expired_" + reason, len(fid))
        return out

    def flush(self) -> FlowRecords:
        """Every flow, reason ``"shutdown"``; the cache is empty afterwards."""
        live = np.flatnonzero(self._live)
        recs = self._records(live, "shutdown")
        self.counters.inc("expired_shutdown", len(live))
        self._live[:] = False
        self._flags[:] = 0
        self._frag[:] = 0
        self._ip6ext[:] = 0
        self._tcp_end[:] = _NO_END
        self._free = np.arange(self.cap - 1, -1, -1, dtype=np.int32)
        self._nfree = self.cap
        self._n = 0
        self._table.fill(_EMPTY)
        self._tombs = 0
        return recs

    def snapshot(self, *, limit: int | None = None, order: str = "packets") -> FlowRecords:
        """The live flows (no expiry), largest first by *order* (``packets``/``bytes``/``none``)."""
        live = np.flatnonzero(self._live)
        if order in ("packets", "bytes"):
            col = (self._packets if order == "packets" else self._bytes)[live]
            if limit is not None and 0 < limit < len(live):
                # keep everything tied with the limit-th largest, then sort (ties by flow id)
                kth = np.partition(col, len(col) - limit)[len(col) - limit]
                keep = col >= kth
                live, col = live[keep], col[keep]
            live = live[np.lexsort((live, ~col))]
        elif order != "none":
            raise ValueError(f"order must be packets, bytes or none, not {order!r}")
        if limit is not None:
            live = live[:max(0, limit)]
        return self._records(live, None)

    def _records(self, fid: np.ndarray, reason: str | None) -> FlowRecords:
        n = len(fid)
        rec = np.zeros(n, dtype=FLOW_DTYPE)
        if n:
            k = self._keys[fid]
            rec["src_hi"], rec["src_lo"], rec["dst_hi"], rec["dst_lo"] = k[:, 0], k[:, 1], k[:, 2], k[:, 3]
            w4, w5 = k[:, 4], k[:, 5]
            rec["sport"] = w4 >> _U64(48)
            dport = (w4 >> _U64(32)) & _U64(0xFFFF)
            rec["dport"] = dport
            rec["in_if"] = w4 & _U64(0xFFFF_FFFF)
            proto = (w5 >> _U64(56)).astype(np.uint8)
            rec["proto"] = proto
            rec["tos"] = (w5 >> _U64(48)) & _U64(0xFF)
            rec["direction"] = (w5 >> _U64(40)) & _U64(0xFF)
            rec["out_if"] = w5 & _U64(0xFFFF_FFFF)
            icmp = (proto == 1) | (proto == 58)
            rec["icmp_type"] = np.where(icmp, dport >> _U64(8), 0)
            rec["icmp_code"] = np.where(icmp, dport & _U64(0xFF), 0)
            rec["packets"] = self._packets[fid]
            rec["bytes"] = self._bytes[fid]
            rec["first_ns"] = self._first[fid]
            rec["last_ns"] = self._last[fid]
            if self.key_fields == "bridge":
                rec["src_mac"] = k[:, 6] >> _U64(16)
                rec["vlan"] = k[:, 6] & _U64(0xFFFF)
                rec["dst_mac"] = k[:, 7]
            else:
                rec["src_mac"] = self._src_mac[fid]
                rec["dst_mac"] = self._dst_mac[fid]
                rec["vlan"] = self._vlan[fid]
            if self.key_fields == "mpls":
                rec["mpls1"] = k[:, 6] >> _U64(32)
                rec["mpls2"] = k[:, 6] & _U64(0xFFFF_FFFF)
                rec["mpls3"] = k[:, 7] >> _U64(8)
                rec["mpls_depth"] = k[:, 7] & _U64(0xFF)
            else:
                mp = self._mpls[fid]
                rec["mpls1"], rec["mpls2"], rec["mpls3"] = mp[:, 0], mp[:, 1], mp[:, 2]
                rec["mpls_depth"] = self._depth[fid]
            rec["tcp_flags"] = self._flags[fid]
            rec["af"] = self._af[fid]
            rec["frag"] = self._frag[fid]
            rec["ip6_ext"] = self._ip6ext[fid]
            if reason is not None:
                rec["end_reason"] = REASON_TO_END[reason]
        return FlowRecords(rec, instance=self.instance, sampling_interval=self.sampling_interval,
                           sampling_algorithm=self.sampling_algorithm, scaled=self.scale, boot_ns=self.boot_ns)


def _rows_zero(x: np.ndarray) -> np.ndarray:
    acc = x[:, 0] | x[:, 1]
    for i in range(2, x.shape[1]):
        acc |= x[:, i]
    return acc == 0


def _group(h: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, rep): rows ordered so that equal keys are adjacent, where each group
    starts in *order*, and each group's first row (smallest index)."""
    n = len(h)
    order = np.argsort(h)
    hs = h[order]
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    np.not_equal(hs[1:], hs[:-1], out=brk[1:])
    starts = np.flatnonzero(brk)
    if len(starts) < n:  # equal hashes: check the keys are equal too (64-bit collisions)
        ks = np.take(keys, order, axis=0)
        same = _rows_zero(ks[1:] ^ ks[:-1])
        if not same[~brk[1:]].all():
            return _group_exact(keys)
    return order, starts, np.minimum.reduceat(order, starts)


def _group_exact(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(keys)
    order = np.lexsort(keys.T[::-1])
    ks = keys[order]
    brk = np.ones(n, dtype=bool)
    brk[1:] = ~_rows_zero(ks[1:] ^ ks[:-1])
    starts = np.flatnonzero(brk)
    return order, starts, np.minimum.reduceat(order, starts)

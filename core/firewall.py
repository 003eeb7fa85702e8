"""Junos-style firewall filters over whole packet batches.

Configuration (YAML mirroring Junos)::

    firewall:
      family:
        inet:                      # inet6 and any too
          filter:
            F1:
              term:
                t1:
                  from: {source-address: [10.0.0.0/8, "10.1.0.0/16 except"], protocol: [tcp]}
                  then: {count: c1, sample: true, accept: true}
                t2:
                  from: {protocol: [udp]}
                  then: {discard: {accounting: acc1}}   # 'discard accounting acc1'
                t3:
                  then: discard

API
---
* :func:`validate_firewall` -- every problem with its key path (no exceptions).
* :func:`compile_firewall` -- once per config: each value list becomes a
  numpy lookup table (65536 entries for ports and lengths, 256 for
  protocol/ICMP/TTL/tcp-flags, 64 for DSCP), prefix lists become CIDR mask
  compares (few blocks) or a /16 first-level table plus sorted boundaries
  for :func:`numpy.searchsorted` (many blocks).
* :meth:`CompiledFilter.evaluate` -- boolean masks over the whole batch; the
  undecided rows are tracked term by term, so the first terminating term
  decides each packet.

Semantics (Junos, with the choices flowplane makes written down)
-----------------------------------------------------------------
* Values inside one condition are ORed, conditions of a term are ANDed, a
  term without ``from`` matches everything in the filter's family.
* Family ``inet`` sees only rows with ``af == 4``, ``inet6`` only ``af == 6``;
  other rows are outside the filter: False in every result mask and not
  counted.  Family ``any`` sees every row (non-IP too) and supports only
  ``interface`` and ``packet-length[-except]``.
* Rows whose decoder ``status != 0`` never match an IP condition (anything
  but ``interface``), neither positive nor ``-except``; they still match
  terms without IP conditions and fall to the implicit discard.
* ``-except`` conditions are the negation of the positive condition among
  decoded IP rows: ``destination-port-except 80`` matches ICMP packets too.
* Port conditions match only TCP, UDP and SCTP with a transport header
  (not later fragments); ``tcp-flags``/``tcp-initial``/``tcp-established``
  only TCP; ``icmp-type``/``icmp-code`` only ICMP (inet) or ICMPv6 (inet6).
* ``packet-length`` is the IP length (``ip_len``; IPv6 payload + 40);
  lengths above 65535 (jumbograms) compare as 65535.
* Address lists use longest-prefix match: ``[10.0.0.0/8, "10.1.0.0/16
  except"]`` matches 10.2.3.4 but not 10.1.2.3; a list of only ``except``
  entries matches nothing.  A prefix-list contributes only its entries of
  the filter's family (an IPv6-only list in an inet filter matches nothing).
* ``is-fragment`` matches trailing fragments (offset != 0),
  ``first-fragment`` the first fragment of a fragmented packet.
* Actions: the first matching term with a terminating action (``accept``,
  ``discard``, ``reject [reason]``, or a plugin action registered with
  ``terminating=True``) decides.  A matching term with ``next term``
  counts/selects and lets the packet continue; a matching term with neither
  accepts (Junos implicit accept).  Unmatched packets hit the implicit
  discard, counted as ``(implicit discard)``.  ``reject`` is a discard the
  box counts separately (it sends nothing).  Rows taken by a terminating
  plugin action appear only in that action's selection.  ``discard
  accounting NAME`` is a discard (counted as discarded) whose rows also
  appear in a ``("discard-accounting", NAME)`` selection, so the plugin that
  registered that action meters them into accounting group NAME.
* Counters: per term (packets and wire bytes of packets that reached the
  term and matched it), per named ``count`` counter (per filter; two terms
  naming the same counter add up) and the implicit discard.  A reload
  compiles new filters with zeroed counters; :meth:`FilterSet.adopt_counters`
  carries them over for filters whose definition (and referenced
  prefix-lists) did not change -- Junos resets only changed filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from flowplane.actions import TermAction
from flowplane.batch import PacketBatch
from flowplane.errors import ConfigError, ConfigIssue
from flowplane.firewall_config import (
    CONDITIONS,
    FAMILIES,
    ParsedFilter,
    ParsedTerm,
    parse_firewall,
    validate_firewall,
)
from flowplane.firewall_values import intervals_to_cidrs, lpm_intervals
from flowplane.interfaces import InterfaceTable
from flowplane.registry import Registry

__all__ = [
    "validate_firewall", "compile_firewall", "FilterSet", "CompiledFilter", "FilterResult",
    "format_show_firewall", "CONDITIONS", "FAMILIES",
]

_U64 = (1 << 64) - 1
_PORT_PROTOS = np.zeros(256, dtype=bool)
_PORT_PROTOS[[6, 17, 132]] = True
_DEC_NONE, _DEC_ACCEPT, _DEC_DISCARD, _DEC_REJECT, _DEC_CONSUMED = range(5)
_DECISIONS = {None: _DEC_NONE, "accept": _DEC_ACCEPT, "discard": _DEC_DISCARD,
              "reject": _DEC_REJECT, "consumed": _DEC_CONSUMED}


# --------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------

@dataclass
class FilterResult:
    """Decision masks (length ``len(batch)``) and plugin-action selections.

    ``selections`` holds ``(term, action, arg, mask)`` for plugin actions whose
    mask is not empty, in term order.  ``implicit_discard`` is the part of
    ``discard`` that no term decided.
    """

    accept: np.ndarray
    discard: np.ndarray
    reject: np.ndarray
    selections: list[tuple[str, str, object, np.ndarray]] = field(default_factory=list)
    implicit_discard: np.ndarray | None = None


# --------------------------------------------------------------------------
# per-batch evaluation context: derived columns computed at most once
# --------------------------------------------------------------------------

class _Batch:
    __slots__ = ("b", "n", "family", "_c")

    def __init__(self, batch: PacketBatch, family: str) -> None:
        self.b = batch
        self.n = len(batch)
        self.family = family
        self._c: dict = {}

    def get(self, name: str) -> np.ndarray:
        c = self._c
        v = c.get(name)
        if v is None:
            v = c[name] = getattr(self, "_" + name.replace("-", "_"))()
        return v

    # bases and gates
    def _ip(self):
        b = self.b
        ok = b.status == 0
        if self.family == "inet":
            ok &= b.af == 4
        elif self.family == "inet6":
            ok &= b.af == 6
        else:
            ok &= b.af != 0
        return ok

    def _l4(self):
        return self.b.l4_off >= 0

    def _g_port(self):
        return self.get("l4") & _PORT_PROTOS.take(self.b.proto)

    def _g_tcp(self):
        return self.get("l4") & (self.b.proto == 6)

    def _g_icmp(self):
        return self.get("l4") & (self.b.proto == (1 if self.family == "inet" else 58))

    # derived columns
    def _dscp(self):
        return self.b.tos >> 2

    def _prec(self):
        return self.b.tos >> 5

    def _plen(self):
        return self.b.ip_len  # lookups use take(mode='clip'): > 65535 reads entry 65535

    def _frag_off(self):
        return self.b.frag_off & 0x1FFF

    def _proto(self):
        return self.b.proto

    def _ttl(self):
        return self.b.ttl

    def _icmp_type(self):
        return self.b.icmp_type

    def _icmp_code(self):
        return self.b.icmp_code

    def _tcp_flags(self):
        return self.b.tcp_flags

    def _wl64(self):
        return self.b.wirelen.astype(np.int64)

    def _src_b16(self):  # bits 16..31 of the IPv4 address: first-level prefix table index
        return ((self.b.src_lo >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.intp)

    def _dst_b16(self):
        return ((self.b.dst_lo >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.intp)

    def _src_s16(self):
        return _s16(self.b.src_hi, self.b.src_lo)

    def _dst_s16(self):
        return _s16(self.b.dst_hi, self.b.dst_lo)

    def _iface_max(self):
        b = self.b.iface
        return np.array([int(b.max()) if len(b) else -1, int(b.min()) if len(b) else 0])


def _s16(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """128-bit addresses as big-endian 16-byte strings (numpy orders them numerically)."""
    x = np.empty((len(hi), 2), dtype=">u8")
    x[:, 0] = hi
    x[:, 1] = lo
    return x.view("S16").ravel()


# --------------------------------------------------------------------------
# compiled conditions: callables (ctx) -> bool mask over the whole batch
# --------------------------------------------------------------------------

class _Table:
    __slots__ = ("col", "table", "gate", "negate")

    def __init__(self, col: str, table: np.ndarray, gate: str, negate: bool) -> None:
        self.col, self.gate, self.negate = col, gate, negate
        # without a gate the negation folds into the table
        self.table = ~table if (negate and not gate) else table

    def __call__(self, ctx: _Batch) -> np.ndarray:
        m = self.table.take(ctx.get(self.col), mode="clip")
        if self.gate:
            m &= ctx.get(self.gate)
            if self.negate:
                np.logical_not(m, out=m)
        return m


class _Ports:
    __slots__ = ("table", "field", "negate")

    def __init__(self, table: np.ndarray, fld: str, negate: bool) -> None:
        self.table, self.field, self.negate = table, fld, negate

    def __call__(self, ctx: _Batch) -> np.ndarray:
        b, t = ctx.b, self.table
        if self.field == "src":
            m = t.take(b.sport)
        elif self.field == "dst":
            m = t.take(b.dport)
        else:
            m = t.take(b.sport)
            m |= t.take(b.dport)
        m &= ctx.get("g_port")
        if self.negate:
            np.logical_not(m, out=m)
        return m


class _Flag:
    __slots__ = ("kind",)
    _TCP_INITIAL = (np.arange(256) & 0x12) == 0x02
    _TCP_ESTABLISHED = (np.arange(256) & 0x14) != 0

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, ctx: _Batch) -> np.ndarray:
        b = ctx.b
        k = self.kind
        if k == "tcp-initial":
            return self._TCP_INITIAL.take(b.tcp_flags) & ctx.get("g_tcp")
        if k == "tcp-established":
            return self._TCP_ESTABLISHED.take(b.tcp_flags) & ctx.get("g_tcp")
        if k == "is-fragment":
            return b.frag == 2
        return b.frag == 1  # first-fragment


class _Const:
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __call__(self, ctx: _Batch) -> np.ndarray:
        return np.full(ctx.n, self.value, dtype=bool)


class _PrefixMasks:
    """A few CIDR blocks: ``(addr & mask) == base`` per block, ORed."""

    __slots__ = ("field", "v4", "blocks")

    def __init__(self, fld: str, cidrs: list[tuple[int, int]], v4: bool) -> None:
        self.field, self.v4 = fld, v4
        self.blocks = []
        for base, plen in cidrs:
            mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
            self.blocks.append((np.uint64(mask >> 64), np.uint64(base >> 64),
                                np.uint64(mask & _U64), np.uint64(base & _U64), mask >> 64 == 0, mask & _U64 == 0))

    def _one(self, hi, lo) -> np.ndarray:
        m = None
        for mh, bh, ml, bl, _no_hi, no_lo in self.blocks:
            if self.v4:  # IPv4 rows: hi == 0, only lo carries the address
                x = (lo & ml) == bl
            elif no_lo:
                x = (hi & mh) == bh
            else:
                x = ((hi & mh) == bh) & ((lo & ml) == bl)
            m = x if m is None else (m | x)
        return m

    def __call__(self, ctx: _Batch) -> np.ndarray:
        b = ctx.b
        if self.field == "src":
            return self._one(b.src_hi, b.src_lo)
        if self.field == "dst":
            return self._one(b.dst_hi, b.dst_lo)
        m = self._one(b.src_hi, b.src_lo)
        m |= self._one(b.dst_hi, b.dst_lo)
        return m


class _PrefixSearch:
    """Many blocks: sorted interval boundaries + :func:`numpy.searchsorted`.

    An address is inside when the number of boundaries <= it is odd.  IPv4
    first looks up a 65536-entry table indexed by the top 16 bits of the
    address (0 outside, 1 inside, 2 "look closer") so only rows in mixed /16s
    pay for the search.  IPv6 searches the high 64 bits when every boundary
    is /64-aligned, else 16-byte big-endian strings.
    """

    __slots__ = ("field", "mode", "bounds", "l1")

    def __init__(self, fld: str, intervals: list[tuple[int, int]], v4: bool) -> None:
        self.field = fld
        bounds = []
        for a, b in intervals:
            bounds.append(a)
            if b + 1 < (1 << 128):
                bounds.append(b + 1)
        if v4:
            self.mode = "v4"
            self.bounds = np.array([x & _U64 for x in bounds], dtype=np.uint64)
            base = (0xFFFF << 32) | (np.arange(65536, dtype=np.uint64) << np.uint64(16))
            i_s = np.searchsorted(self.bounds, base, "right")
            i_e = np.searchsorted(self.bounds, base | np.uint64(0xFFFF), "right")
            self.l1 = np.where(i_s == i_e, i_s & 1, 2).astype(np.uint8)
        elif all(x & _U64 == 0 for x in bounds):
            self.mode = "hi"
            self.bounds = np.array([x >> 64 for x in bounds], dtype=np.uint64)
            self.l1 = None
        else:
            self.mode = "s16"
            self.bounds = np.array([x.to_bytes(16, "big") for x in bounds], dtype="S16")
            self.l1 = None

    def _one(self, ctx: _Batch, which: str) -> np.ndarray:
        b = ctx.b
        if self.mode == "v4":
            t = self.l1.take(ctx.get(which + "_b16"))
            m = t == 1
            und = np.flatnonzero(t == 2)
            if und.size:
                lo = b.src_lo if which == "src" else b.dst_lo
                m[und] = (np.searchsorted(self.bounds, lo[und], "right") & 1).astype(bool)
            return m
        if self.mode == "hi":
            hi = b.src_hi if which == "src" else b.dst_hi
            return (np.searchsorted(self.bounds, hi, "right") & 1).astype(bool)
        return (np.searchsorted(self.bounds, ctx.get(which + "_s16"), "right") & 1).astype(bool)

    def __call__(self, ctx: _Batch) -> np.ndarray:
        if self.field == "either":
            m = self._one(ctx, "src")
            m |= self._one(ctx, "dst")
            return m
        return self._one(ctx, self.field)


_SMALL_V4 = 2  # beyond this many CIDR blocks the /16 table is cheaper than mask compares
_SMALL_V6 = 6


def _prefix_cond(fld: str, entries: list[tuple[int, int, bool]], family: str):
    intervals = lpm_intervals(entries)
    v4 = family == "inet"
    if not intervals:
        return _Const(False)
    full = (0xFFFF << 32, (0xFFFF << 32) | 0xFFFFFFFF) if v4 else (0, (1 << 128) - 1)
    if intervals == [full]:
        return None  # 0.0.0.0/0 or ::/0: every row of the family
    cidrs = intervals_to_cidrs(intervals)
    if len(cidrs) <= (_SMALL_V4 if v4 else _SMALL_V6):
        return _PrefixMasks(fld, cidrs, v4)
    return _PrefixSearch(fld, intervals, v4)


class _Iface:
    """Interface name patterns (``*`` wildcard) -> id lookup table, rebuilt lazily.

    Ids come from the :class:`InterfaceTable`, which may learn interfaces
    after compile time; a batch carrying an id beyond the table rebuilds it.
    """

    __slots__ = ("patterns", "regex", "interfaces", "table")

    def __init__(self, patterns: list[str], interfaces: InterfaceTable) -> None:
        self.patterns = patterns
        self.regex = re.compile("|".join("(?:" + re.escape(p).replace(r"\*", ".*") + ")" for p in patterns) + r"\Z")
        self.interfaces = interfaces
        self.table = np.zeros(0, dtype=bool)
        self._rebuild(max((i for _, i in interfaces.items()), default=0) + 1)

    def _rebuild(self, size: int) -> None:
        name = self.interfaces.name
        self.table = np.fromiter((self.regex.match(name(i)) is not None for i in range(size)), dtype=bool, count=size)

    def __call__(self, ctx: _Batch) -> np.ndarray:
        mx, mn = ctx.get("iface_max")
        if mx >= len(self.table):
            self._rebuild(int(mx) + 1)
        m = self.table.take(ctx.b.iface, mode="clip")
        if mn < 0:
            m &= ctx.b.iface >= 0
        return m


# --------------------------------------------------------------------------
# compiled filter
# --------------------------------------------------------------------------

class _Term:
    __slots__ = ("name", "conds", "ip", "count", "plugin", "decision", "match_all")

    def __init__(self, name, conds, ip, count, plugin, decision) -> None:
        self.name = name
        self.conds = conds
        self.ip = ip
        self.count = count  # index into the filter's counters or -1
        self.plugin = plugin  # [(action, arg)]
        self.decision = decision
        self.match_all = not conds and not ip


class CompiledFilter:
    """One filter, ready to evaluate batches; holds its own counters."""

    def __init__(self, parsed: ParsedFilter, interfaces: InterfaceTable) -> None:
        self.family = parsed.family
        self.name = parsed.name
        self.signature = parsed.signature
        self.counter_names: list[str] = []
        self.term_names = [t.name for t in parsed.terms]
        self._terms = [self._compile_term(t, interfaces) for t in parsed.terms]
        self.clear()

    def _compile_term(self, t: ParsedTerm, interfaces: InterfaceTable) -> _Term:
        conds = []
        ip = False
        for pc in t.conds:
            spec = pc.spec
            ip = ip or spec.ip
            if spec.kind == "table":
                c = _Table(spec.field, pc.value, "g_" + spec.gate if spec.gate else "", spec.negate)
            elif spec.kind == "tcpflags":
                c = _Table("tcp_flags", pc.value, "g_tcp", False)
            elif spec.kind == "ports":
                c = _Ports(pc.value, spec.field, spec.negate)
            elif spec.kind == "flag":
                c = _Flag(spec.field)
            elif spec.kind in ("prefix", "plist"):
                c = _prefix_cond(spec.field, pc.value, self.family)
            elif spec.kind == "iface":
                c = _Iface(pc.value, interfaces)
            else:  # pragma: no cover
                raise AssertionError(spec.kind)
            if c is not None:
                conds.append(c)
        # cheap, selective conditions first; prefix searches and interface lookups last
        conds.sort(key=lambda c: 0 if isinstance(c, (_Const, _Flag)) else
                   1 if isinstance(c, (_Table, _Ports)) else 2)
        if t.count is None:
            cidx = -1
        else:
            if t.count not in self.counter_names:
                self.counter_names.append(t.count)
            cidx = self.counter_names.index(t.count)
        return _Term(t.name, conds, ip, cidx, list(t.plugin_actions), _DECISIONS[t.decision])

    # -- counters ----------------------------------------------------------
    def clear(self) -> None:
        """Zero every counter of this filter (``clear firewall filter NAME``)."""
        nt, nc = len(self._terms), len(self.counter_names)
        self._tp = [0] * nt
        self._tb = [0] * nt
        self._cp = [0] * nc
        self._cb = [0] * nc
        self._implicit = [0, 0]
        self._totals = {"accepted": 0, "discarded": 0, "rejected": 0}

    def counters(self) -> dict:
        """Plain data: ``{filter, family, counters, terms, implicit_discard, ...}``."""
        return {
            "filter": self.name,
            "family": self.family,
            "counters": {n: {"packets": self._cp[i], "bytes": self._cb[i]} for i, n in enumerate(self.counter_names)},
            "terms": {n: {"packets": self._tp[i], "bytes": self._tb[i]} for i, n in enumerate(self.term_names)},
            "implicit_discard": {"packets": self._implicit[0], "bytes": self._implicit[1]},
            "packets": dict(self._totals),
        }

    def _adopt(self, other: CompiledFilter) -> None:
        self._tp, self._tb = list(other._tp), list(other._tb)
        self._cp, self._cb = list(other._cp), list(other._cb)
        self._implicit = list(other._implicit)
        self._totals = dict(other._totals)

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, batch: PacketBatch, rows: np.ndarray | None = None) -> FilterResult:
        """Decide every row of *batch* (or of *rows*: bool mask or index array).

        Rows outside *rows* and outside the filter's family are False in all
        masks and not counted.
        """
        n = len(batch)
        ctx = _Batch(batch, self.family)
        if self.family == "inet":
            scope = batch.af == 4
        elif self.family == "inet6":
            scope = batch.af == 6
        else:
            scope = np.ones(n, dtype=bool)
        if rows is not None:
            rows = np.asarray(rows)
            if rows.dtype == bool:
                scope &= rows
            else:
                sel = np.zeros(n, dtype=bool)
                sel[rows] = True
                scope &= sel
        remaining = scope
        left = int(np.count_nonzero(remaining))
        accept = np.zeros(n, dtype=bool)
        discard = np.zeros(n, dtype=bool)
        reject = np.zeros(n, dtype=bool)
        selections: list = []
        wl = ctx.get("wl64")
        tp, tb, cp, cb = self._tp, self._tb, self._cp, self._cb
        totals = self._totals
        for ti, t in enumerate(self._terms):
            if not left:
                break
            if t.match_all:
                hit = remaining.copy()
                cnt = left
            else:
                hit = remaining & ctx.get("ip") if t.ip else remaining.copy()
                for c in t.conds:
                    hit &= c(ctx)
                cnt = int(np.count_nonzero(hit))
                if not cnt:
                    continue
            nbytes = int(np.dot(hit, wl))
            tp[ti] += cnt
            tb[ti] += nbytes
            if t.count >= 0:
                cp[t.count] += cnt
                cb[t.count] += nbytes
            for action, arg in t.plugin:
                selections.append((t.name, action, arg, hit))
            d = t.decision
            if d:
                if d == _DEC_ACCEPT:
                    accept |= hit
                    totals["accepted"] += cnt
                elif d == _DEC_DISCARD:
                    discard |= hit
                    totals["discarded"] += cnt
                elif d == _DEC_REJECT:
                    reject |= hit
                    totals["rejected"] += cnt
                remaining = remaining ^ hit
                left -= cnt
        implicit = remaining if left else np.zeros(n, dtype=bool)
        if left:
            discard |= remaining
            self._implicit[0] += left
            self._implicit[1] += int(np.dot(remaining, wl))
            totals["discarded"] += left
        return FilterResult(accept, discard, reject, selections, implicit)

    def __repr__(self) -> str:
        return f"<CompiledFilter {self.family} {self.name} terms={len(self._terms)}>"


class FilterSet:
    """All compiled filters of one config, by ``(family, name)``."""

    def __init__(self, filters: list[CompiledFilter]) -> None:
        self._filters = {(f.family, f.name): f for f in filters}

    def get(self, family: str, name: str) -> CompiledFilter | None:
        return self._filters.get((family, name))

    def __getitem__(self, key: tuple[str, str]) -> CompiledFilter:
        return self._filters[key]

    def __iter__(self):
        return iter(self._filters.values())

    def __len__(self) -> int:
        return len(self._filters)

    def names(self) -> list[tuple[str, str]]:
        return list(self._filters)

    def clear(self, filter: str | None = None) -> None:
        for f in self._filters.values():
            if filter is None or f.name == filter:
                f.clear()

    def adopt_counters(self, old: FilterSet) -> list[tuple[str, str]]:
        """After a reload: keep the counters of filters whose definition did not change.

        Returns the ``(family, name)`` of the filters that kept their counters.
        """
        kept = []
        for key, f in self._filters.items():
            o = old._filters.get(key)
            if o is not None and o.signature == f.signature:
                f._adopt(o)
                kept.append(key)
        return kept

    def show_firewall(self, filter: str | None = None) -> dict:
        """``show firewall [filter NAME]`` as plain data (see :func:`format_show_firewall`)."""
        return {"filters": [f.counters() for f in self._filters.values() if filter is None or f.name == filter]}


def compile_firewall(config: dict, actions: Registry[TermAction], interfaces: InterfaceTable) -> FilterSet:
    """Validate and compile every filter; raises :class:`ConfigError` listing all issues."""
    filters, issues = parse_firewall(config, actions)
    if issues:
        raise ConfigError([_format_issue(i) for i in issues])
    return FilterSet([CompiledFilter(f, interfaces) for f in filters])


def _format_issue(i: ConfigIssue) -> str:
    return f"{' > '.join(map(str, i.path)) or '(top)'}: {i.message}"


_ROW = "{:<40}{:>17}{:>21}"


def _row(name: str, b, p) -> str:
    if len(name) >= 40:
        return f"{name} {b:>16}{p:>21}"
    return _ROW.format(name, b, p)


def format_show_firewall(data: dict) -> str:
    """Junos-style text for :meth:`FilterSet.show_firewall` data."""
    filters = data.get("filters", [])
    names = [f["filter"] for f in filters]
    blocks = []
    for f in filters:
        title = f"Filter: {f['filter']}"
        if names.count(f["filter"]) > 1:
            title += f" (family {f['family']})"
        lines = [title]
        if f["counters"]:
            lines.append("Counters:")
            lines.append(_row("Name", "Bytes", "Packets"))
            for n, c in f["counters"].items():
                lines.append(_row(n, c["bytes"], c["packets"]))
        lines.append("Terms:")
        lines.append(_row("Name", "Bytes", "Packets"))
        for n, c in f["terms"].items():
            lines.append(_row(n, c["bytes"], c["packets"]))
        imp = f["implicit_discard"]
        lines.append(_row("(implicit discard)", imp["bytes"], imp["packets"]))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")

"""Capture criteria: what an ADD asks for, and the vectorised matcher over a batch.

A :class:`Criterion` is built from the headers of an ADD request
(:func:`from_headers`).  A :class:`CriteriaTable` holds one capture group's
active criteria compiled into numpy columns; :meth:`CriteriaTable.match`
returns the ``packets x criteria`` boolean matrix for a decoded batch in a
handful of broadcast operations (no per-packet Python).

Addresses use the batch's 128-bit layout (two ``uint64`` halves, IPv4 as
IPv4-mapped ``::ffff:a.b.c.d``), so one masked compare serves both families.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from .dtcp import DtcpError

MATCH_HEADERS = ("source-address", "dest-address", "source-port", "dest-port", "protocol", "x-jtap-ip-version",
                 "x-jtap-input-interface")
LIMIT_HEADERS = ("total-timeout", "timeout", "idle-timeout", "packet-limit", "byte-limit")
ADD_HEADERS = ("csource-id", "cdest-id", "priority", "flags", "seq", "x-jtap-cdest-dest-port",
               "x-jtap-cdest-dest-address", "x-jtap-cdest-ttl", "x-jtap-cdest-source-address",
               "x-jtap-cdest-source-port") + MATCH_HEADERS + LIMIT_HEADERS
_V4_MAPPED = 0xFFFF << 32
CHUNK_CELLS = 32768  # packets x criteria cells per matching step


@dataclass(frozen=True)
class Prefix:
    """An address prefix in the batch's 128-bit layout (IPv4 mapped)."""

    text: str
    af: int  # 4 or 6
    hi: int
    lo: int
    mask_hi: int
    mask_lo: int

    @classmethod
    def parse(cls, text: str) -> Prefix:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise DtcpError(f"{text!r} is not an address or prefix") from None
        if net.version == 4:
            value = _V4_MAPPED | int(net.network_address)
            plen = 96 + net.prefixlen
        else:
            value = int(net.network_address)
            plen = net.prefixlen
        mask = ((1 << plen) - 1) << (128 - plen) if plen else 0
        return cls(str(net), net.version, value >> 64, value & (2**64 - 1), mask >> 64, mask & (2**64 - 1))


@dataclass
class Criterion:
    """One capture criterion and its life (counters, timers, limits)."""

    id: int
    source: str  # control source name (owner)
    group: str
    destinations: tuple[str, ...]
    priority: int = 0
    src: Prefix | None = None
    dst: Prefix | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    proto: int | None = None
    af: int = 0  # 0 any, 4, 6
    iface: str | None = None
    static: bool = False
    total_timeout: float = 0.0  # seconds, 0: none
    idle_timeout: float = 0.0
    packet_limit: int = 0
    byte_limit: int = 0
    dest_port: int = 0  # X-JTap-Cdest-Dest-Port (0: the content destination's port)
    created: float = 0.0  # engine clock
    refreshed: float = 0.0  # total timeout runs from here
    last_match: float = 0.0  # idle timeout runs from here
    packets: int = 0
    bytes: int = 0
    expired: str = ""  # reason once expired: total-time, idle-time, packet-limit, byte-limit
    fields: dict = field(default_factory=dict)  # the match/limit headers as sent (for LIST and the audit log)

    def describe(self) -> str:
        """``id=3; cdest-id=cd1; source-address=...`` for LIST replies."""
        parts = [f"id={self.id}", f"cdest-id={','.join(self.destinations)}", f"priority={self.priority}"]
        parts += [f"{k}={v}" for k, v in self.fields.items()]
        parts += [f"packets={self.packets}", f"bytes={self.bytes}"]
        if self.static:
            parts.append("flags=STATIC")
        return "; ".join(parts)

    def as_dict(self, now: float) -> dict:
        return {"id": self.id, "control_source": self.source, "capture_group": self.group,
                "destinations": list(self.destinations), "priority": self.priority, "static": self.static,
                "fields": dict(self.fields), "packets": self.packets, "bytes": self.bytes,
                "age": round(now - self.created, 3), "idle": round(now - self.last_match, 3)}


def _port_range(text: str, name: str) -> tuple[int, int] | None:
    t = text.strip()
    if t == "*":
        return None
    lo_s, sep, hi_s = t.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise DtcpError(f"{name} {text!r} is not a port, a range N-M or '*'") from None
    if not (0 <= lo <= hi <= 65535):
        raise DtcpError(f"{name} {text!r} is out of 0-65535")
    return lo, hi


def _number(text: str, name: str, lo: int, hi: int) -> int:
    try:
        v = int(text.strip())
    except ValueError:
        raise DtcpError(f"{name} {text!r} is not an integer") from None
    if not lo <= v <= hi:
        raise DtcpError(f"{name} {v} is out of {lo}-{hi}")
    return v


def from_headers(headers: dict[str, str], *, names: dict[str, str], cid: int, source: str, group: str,
                 destinations: tuple[str, ...], priority: int, now: float) -> Criterion:
    """Build a criterion from an ADD's headers (already authenticated); raises DtcpError (400)."""
    unknown = [names.get(k, k) for k in headers if k not in ADD_HEADERS]
    if unknown:
        raise DtcpError(f"unsupported header(s) in ADD: {', '.join(unknown)}")
    c = Criterion(cid, source, group, destinations, priority, created=now, refreshed=now, last_match=now)
    for key in MATCH_HEADERS + LIMIT_HEADERS:
        if key in headers:
            c.fields[names.get(key, key)] = headers[key]
    for key, attr in (("source-address", "src"), ("dest-address", "dst")):
        v = headers.get(key, "*").strip()
        if v != "*":
            setattr(c, attr, Prefix.parse(v))
    c.sport = _port_range(headers.get("source-port", "*"), "Source-Port")
    c.dport = _port_range(headers.get("dest-port", "*"), "Dest-Port")
    proto = headers.get("protocol", "*").strip()
    if proto != "*":
        c.proto = _number(proto, "Protocol", 0, 255)
    fams = {p.af for p in (c.src, c.dst) if p is not None}
    ver = headers.get("x-jtap-ip-version", "").strip().lower()
    if ver:
        if ver not in ("ipv4", "ipv6"):
            raise DtcpError(f"X-JTap-IP-Version {ver!r}: expected ipv4 or ipv6")
        fams.add(4 if ver == "ipv4" else 6)
    if len(fams) > 1:
        raise DtcpError("the criterion mixes IPv4 and IPv6 (addresses / X-JTap-IP-Version)")
    c.af = fams.pop() if fams else 0
    if (c.sport or c.dport) and c.proto not in (None, 6, 17, 132):
        raise DtcpError(f"ports need Protocol 6, 17, 132 or '*', not {c.proto}")
    c.iface = headers.get("x-jtap-input-interface") or None
    flags = {f.strip().upper() for f in headers.get("flags", "").split(",") if f.strip()}
    if flags - {"STATIC"}:
        raise DtcpError(f"unknown Flags {', '.join(sorted(flags - {'STATIC'}))}; ADD knows STATIC")
    c.static = "STATIC" in flags
    total = headers.get("total-timeout", headers.get("timeout"))
    if "total-timeout" in headers and "timeout" in headers:
        raise DtcpError("give Total-Timeout or Timeout, not both")
    if total is not None:
        c.total_timeout = _number(total, "Total-Timeout", 1, 2**31)
    if "idle-timeout" in headers:
        c.idle_timeout = _number(headers["idle-timeout"], "Idle-Timeout", 1, 2**31)
    if "packet-limit" in headers:
        c.packet_limit = _number(headers["packet-limit"], "Packet-Limit", 1, 2**63)
    if "byte-limit" in headers:
        c.byte_limit = _number(headers["byte-limit"], "Byte-Limit", 1, 2**63)
    if c.static and (c.total_timeout or c.idle_timeout or c.packet_limit or c.byte_limit):
        raise DtcpError("a STATIC criterion never expires: it takes no timeouts or limits")
    return c


class CriteriaTable:
    """One capture group's active criteria as numpy columns (rebuilt when criteria change)."""

    def __init__(self, criteria: list[Criterion], iface_id) -> None:
        self.criteria = criteria
        m = len(criteria)
        self.n = m
        u = np.uint64
        self.src_hi = np.array([c.src.hi if c.src else 0 for c in criteria], dtype=u)
        self.src_lo = np.array([c.src.lo if c.src else 0 for c in criteria], dtype=u)
        self.src_mhi = np.array([c.src.mask_hi if c.src else 0 for c in criteria], dtype=u)
        self.src_mlo = np.array([c.src.mask_lo if c.src else 0 for c in criteria], dtype=u)
        self.dst_hi = np.array([c.dst.hi if c.dst else 0 for c in criteria], dtype=u)
        self.dst_lo = np.array([c.dst.lo if c.dst else 0 for c in criteria], dtype=u)
        self.dst_mhi = np.array([c.dst.mask_hi if c.dst else 0 for c in criteria], dtype=u)
        self.dst_mlo = np.array([c.dst.mask_lo if c.dst else 0 for c in criteria], dtype=u)
        self.sp_lo = np.array([c.sport[0] if c.sport else 0 for c in criteria], dtype=np.int32)
        self.sp_hi = np.array([c.sport[1] if c.sport else 65535 for c in criteria], dtype=np.int32)
        self.dp_lo = np.array([c.dport[0] if c.dport else 0 for c in criteria], dtype=np.int32)
        self.dp_hi = np.array([c.dport[1] if c.dport else 65535 for c in criteria], dtype=np.int32)
        self.proto = np.array([-1 if c.proto is None else c.proto for c in criteria], dtype=np.int16)
        self.af = np.array([c.af for c in criteria], dtype=np.int16)
        self.iface = np.array([-1 if c.iface is None else iface_id(c.iface) for c in criteria], dtype=np.int32)
        # which fields any criterion constrains: the rest are skipped for the whole batch
        self.use = {
            "src": bool(self.src_mhi.any() or self.src_mlo.any()),
            "dst": bool(self.dst_mhi.any() or self.dst_mlo.any()),
            "sport": bool((self.sp_lo > 0).any() or (self.sp_hi < 65535).any()),
            "dport": bool((self.dp_lo > 0).any() or (self.dp_hi < 65535).any()),
            "proto": bool((self.proto >= 0).any()),
            "af": bool(self.af.any()),
            "iface": bool((self.iface >= 0).any()),
        }
        self.prefilter = self._prefilter()
        self.packet_limited = np.array([c.packet_limit > 0 for c in criteria], dtype=bool)
        self.byte_limited = np.array([c.byte_limit > 0 for c in criteria], dtype=bool)

    def _prefilter(self) -> tuple[str, np.ndarray] | None:
        """A column every criterion pins to exact values, and those values (sorted).

        With many criteria the ``packets x criteria`` matrix is the cost; when
        every criterion names, say, an exact destination port or host, one
        ``np.isin`` over the batch keeps only the candidate packets first.
        """
        if not self.n:
            return None
        full = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
        if (self.dp_lo == self.dp_hi).all():
            return "dport", np.unique(self.dp_lo)
        if ((self.dst_mhi == full) & (self.dst_mlo == full)).all():
            return "dst_lo", np.unique(self.dst_lo)
        if ((self.src_mhi == full) & (self.src_mlo == full)).all():
            return "src_lo", np.unique(self.src_lo)
        if (self.sp_lo == self.sp_hi).all():
            return "sport", np.unique(self.sp_lo)
        return None

    def candidates(self, batch, rows: np.ndarray) -> np.ndarray:
        """The subset of *rows* that can match any criterion (all of them without a prefilter)."""
        if self.prefilter is None or not len(rows):
            return rows
        col, values = self.prefilter
        v = getattr(batch, col)[rows]
        if col in ("dport", "sport"):
            v = v.astype(np.int32)
        return rows[np.isin(v, values, assume_unique=False)]

    def match(self, batch, rows: np.ndarray) -> np.ndarray:
        """``len(rows) x n`` bool: which criteria each of the batch's *rows* (indices) matches.

        Call :meth:`candidates` first to narrow *rows* cheaply.
        """
        k = len(rows)
        if k * self.n > CHUNK_CELLS and k > 1:  # keep the temporaries in cache
            step = max(1, CHUNK_CELLS // self.n)
            return np.concatenate([self._match(batch, rows[i : i + step]) for i in range(0, k, step)])
        return self._match(batch, rows)

    def _match(self, batch, rows: np.ndarray) -> np.ndarray:
        k = len(rows)
        out = np.ones((k, self.n), dtype=bool)
        if not k or not self.n:
            return out
        use = self.use
        if use["af"]:
            af = batch.af[rows].astype(np.int16)[:, None]
            out &= (self.af == 0) | (af == self.af)
        if use["proto"]:
            pr = batch.proto[rows].astype(np.int16)[:, None]
            out &= (self.proto < 0) | (pr == self.proto)
        if use["src"]:
            hi = batch.src_hi[rows][:, None]
            lo = batch.src_lo[rows][:, None]
            out &= ((hi & self.src_mhi) == self.src_hi) & ((lo & self.src_mlo) == self.src_lo)
        if use["dst"]:
            hi = batch.dst_hi[rows][:, None]
            lo = batch.dst_lo[rows][:, None]
            out &= ((hi & self.dst_mhi) == self.dst_hi) & ((lo & self.dst_mlo) == self.dst_lo)
        if use["sport"] or use["dport"]:
            # a port criterion never matches a packet without ports (non-first fragment, ICMP ...)
            has_l4 = (batch.l4_off[rows] >= 0)[:, None]
            if use["sport"]:
                sp = batch.sport[rows].astype(np.int32)[:, None]
                ok = (sp >= self.sp_lo) & (sp <= self.sp_hi)
                out &= ok & (has_l4 | ((self.sp_lo == 0) & (self.sp_hi == 65535)))
            if use["dport"]:
                dp = batch.dport[rows].astype(np.int32)[:, None]
                ok = (dp >= self.dp_lo) & (dp <= self.dp_hi)
                out &= ok & (has_l4 | ((self.dp_lo == 0) & (self.dp_hi == 65535)))
        if use["iface"]:
            ifc = batch.iface[rows].astype(np.int32)[:, None]
            out &= (self.iface < 0) | (ifc == self.iface)
        return out

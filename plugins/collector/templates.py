"""v9 / IPFIX templates compiled to numpy: one structured dtype per template, one conversion plan.

A fixed-length template becomes a big-endian structured dtype with explicit
offsets, so a data set's records are ``np.frombuffer(body, dtype, count=n)``.
A template with variable-length fields (IPFIX length 65535) has a *fixed
part* dtype: the scalar path (:func:`split_varlen`) copies each record's
fixed fields into one contiguous buffer and keeps the variable-length values
aside, then the same conversion runs.

:meth:`Template.convert` maps IEs to :data:`~flowplane.flows.FLOW_DTYPE`
columns (addresses IPv4-mapped, times to absolute ns, ICMP type/code, MPLS
labels) and keeps everything else -- unknown and enterprise elements
included -- in ``extra`` columns by name.

Expiry: ``Template.seen_ns`` is the time of the last definition or refresh;
:func:`expire_templates` drops the templates of UDP exporters not refreshed
for ``template-timeout`` seconds (RFC 7011 section 8.4; RFC 3954 likewise
for v9).  Templates learnt over a TCP connection live as long as the
connection (RFC 7011 section 8.1) and never expire by age.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flowplane.api import FLOW_DTYPE

from .fields import VARLEN, ie_kind, ie_name

U64 = np.uint64
MAPPED = U64(0xFFFF_0000_0000)
NTP_EPOCH = 2_208_988_800
NS = 1_000_000_000

# IE -> (column, priority); lower priority wins when a template has several
INT_COLUMNS: dict[int, tuple[str, int]] = {
    1: ("bytes", 0), 85: ("bytes", 1), 23: ("bytes", 2), 231: ("bytes", 3),
    2: ("packets", 0), 86: ("packets", 1), 24: ("packets", 2), 298: ("packets", 3),
    4: ("proto", 0), 5: ("tos", 0), 6: ("tcp_flags", 0), 7: ("sport", 0), 11: ("dport", 0),
    9: ("src_mask", 0), 29: ("src_mask", 1), 13: ("dst_mask", 0), 30: ("dst_mask", 1),
    10: ("in_if", 0), 252: ("in_if", 1), 14: ("out_if", 0), 253: ("out_if", 1),
    16: ("src_as", 0), 17: ("dst_as", 0), 58: ("vlan", 0), 243: ("vlan", 1), 61: ("direction", 0),
    64: ("ip6_ext", 0), 136: ("end_reason", 0), 70: ("mpls1", 0), 71: ("mpls2", 0), 72: ("mpls3", 0),
    176: ("icmp_type", 0), 178: ("icmp_type", 1), 177: ("icmp_code", 0), 179: ("icmp_code", 1),
}
MAC_COLUMNS = {56: "src_mac", 80: "dst_mac"}
# IP next hop only: the BGP next hop (18 / 63) is another thing (RFC 7012) and stays apart, by its own name
ADDR4 = {8: ("src", 0), 12: ("dst", 0), 15: ("nexthop", 0)}
ADDR6 = {27: ("src", 0), 28: ("dst", 0), 62: ("nexthop", 0)}
SYSINIT_MS = 160  # systemInitTimeMilliseconds inside a data record: its sysUpTime times are relative to it
ICMP_TYPECODE = {32: 0, 139: 1}
FIRST = {156: 0, 154: 1, 152: 2, 150: 3, 158: 4, 22: 5}  # finer resolution first
LAST = {157: 0, 155: 1, 153: 2, 151: 3, 159: 4, 21: 5}
SAMPLING_INLINE = (34, 50)
OBSERVATION_MS = 323  # observationTimeMilliseconds: the time of an event record without start/end
SAMPLER_ID = (48, 302)


class Ctx:
    """Per-record context of a group of data sets: export time, (v9) header sysUptime, (IPFIX) the
    systemInitTimeMilliseconds the domain had when the record's message arrived (-1: none known)."""

    __slots__ = ("export_ns", "uptime_ms", "sysinit_ms")

    def __init__(self, export_ns: np.ndarray, uptime_ms: np.ndarray | None,
                 sysinit_ms: np.ndarray | int | None) -> None:
        self.export_ns = export_ns
        self.uptime_ms = uptime_ms
        self.sysinit_ms = sysinit_ms


def _member(i: int, length: int) -> tuple[str, object]:
    if length in (1, 2, 4, 8):
        return f"f{i}", np.dtype(f">u{length}")
    return f"f{i}", np.dtype((np.uint8, (length,)))


def int_column(arr: np.ndarray, name: str, length: int) -> np.ndarray:
    """An unsigned integer column (reduced-size encodings of 3, 5, 6, 7 bytes included)."""
    v = arr[name]
    if length in (1, 2, 4, 8):
        return v.astype(U64)
    take = min(length, 8)
    acc = np.zeros(len(v), dtype=U64)
    for k in range(length - take, length):
        acc = (acc << U64(8)) | v[:, k].astype(U64)
    return acc


class Template:
    """A (options) template of one domain: fields, dtype, conversion plan."""

    __slots__ = ("template_id", "fields", "options", "scope_count", "version", "varlen", "record_length",
                 "min_record_length", "dtype", "fixed_index", "plan", "signature", "_extras", "seen_ns")

    def __init__(self, template_id: int, fields: list[tuple[int, int, int]], *, version: int,
                 options: bool = False, scope_count: int = 0) -> None:
        self.template_id = template_id
        self.fields = tuple(fields)  # (ie, length, pen)
        self.options = options
        self.scope_count = scope_count
        self.version = version
        self.signature = (options, scope_count, self.fields)
        self.seen_ns = 0  # last definition or refresh (UDP template expiry, RFC 7011 section 8.4)
        self.varlen = any(length == VARLEN for _, length, _ in self.fields)
        self.min_record_length = sum(1 if length == VARLEN else length for _, length, _ in self.fields)
        names, formats, offsets = [], [], []
        off = 0
        self.fixed_index: list[int] = []
        for i, (_ie, length, _pen) in enumerate(self.fields):
            if length == VARLEN or length == 0:
                continue
            n, f = _member(i, length)
            names.append(n)
            formats.append(f)
            offsets.append(off)
            self.fixed_index.append(i)
            off += length
        self.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(off, 1)})
        self.record_length = None if self.varlen else off
        self.plan = None if options else self._compile()

    # -- plan -------------------------------------------------------------------------

    def _compile(self):
        best: dict[str, tuple[int, int]] = {}  # target -> (priority, field index)
        extras: list[tuple[int, str, str, int]] = []  # (field index, name, kind, length)
        seen: dict[str, int] = {}

        def want(target: str, prio: int, i: int) -> bool:
            cur = best.get(target)
            if cur is None or prio < cur[0]:
                if cur is not None:
                    extras.append(self._extra(cur[1], seen))
                best[target] = (prio, i)
                return True
            return False

        for i, (ie, length, pen) in enumerate(self.fields):
            if length == 0:
                continue
            mapped = False
            if pen == 0 and length != VARLEN:
                if ie in INT_COLUMNS and length <= 8:
                    col, prio = INT_COLUMNS[ie]
                    mapped = want("i:" + col, prio, i)
                elif ie in ADDR4 and length == 4:
                    col, prio = ADDR4[ie]
                    mapped = want("a4:" + col, prio, i)
                elif ie in ADDR6 and length == 16:
                    col, prio = ADDR6[ie]
                    mapped = want("a6:" + col, prio, i)
                elif ie in MAC_COLUMNS and length == 6:
                    mapped = want("m:" + MAC_COLUMNS[ie], 0, i)
                elif ie in ICMP_TYPECODE and length == 2:
                    mapped = want("icmp", ICMP_TYPECODE[ie], i)
                elif ie in FIRST and length <= 8:
                    mapped = want("first", FIRST[ie], i)
                elif ie in LAST and length <= 8:
                    mapped = want("last", LAST[ie], i)
                elif ie in SAMPLING_INLINE and length <= 8:
                    mapped = want("rate", SAMPLING_INLINE.index(ie), i)
                elif ie == 60 and length == 1:
                    mapped = want("ipver", 0, i)
                if ie in SAMPLER_ID and length <= 8 and "sampler" not in best:
                    best["sampler"] = (0, i)  # also kept as an extra column
                if ie == SYSINIT_MS and length <= 8 and "sysinit" not in best:
                    best["sysinit"] = (0, i)  # also kept as an extra column
            if not mapped:
                extras.append(self._extra(i, seen))
        if "first" not in best and "last" not in best:
            # an event record (NAT, firewall) with no flow start/end: its observation time is its time
            obs = next((i for i, (ie, length, pen) in enumerate(self.fields)
                        if ie == OBSERVATION_MS and pen == 0 and length == 8), None)
            if obs is not None:
                best["first"] = best["last"] = (9, obs)  # also kept as an extra column
        has4 = any(k in best for k in ("a4:src", "a4:dst"))
        has6 = any(k in best for k in ("a6:src", "a6:dst"))
        if has4 and has6:
            # both families in one template: the record's own family fills src/dst (per record), and both
            # pairs are kept by name besides, so nothing the exporter sent is lost
            for k in ("a4:src", "a4:dst", "a6:src", "a6:dst"):
                if k in best:
                    extras.append(self._extra(best[k][1], seen))
            first4 = min(best[k][1] for k in ("a4:src", "a4:dst") if k in best)
            first6 = min(best[k][1] for k in ("a6:src", "a6:dst") if k in best)
            best["af_default"] = (0, 4 if first4 < first6 else 6)
        self._extras = extras
        return {k: v[1] for k, v in best.items()}

    def _extra(self, i: int, seen: dict[str, int]) -> tuple[int, str, str, int]:
        ie, length, pen = self.fields[i]
        name = ie_name(ie, pen)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        return (i, name, ie_kind(ie, pen), length)

    # -- conversion -------------------------------------------------------------------

    def convert(self, arr: np.ndarray, ctx: Ctx, varvals: dict[int, list] | None = None,
                sampling: Callable[[np.ndarray | None], np.ndarray] | None = None):
        """FLOW_DTYPE rows, per-record sampling interval, extras for decoded records *arr*."""
        n = len(arr)
        out = np.zeros(n, dtype=FLOW_DTYPE)
        plan = self.plan
        ln = {i: self.fields[i][1] for i in range(len(self.fields))}

        def col(i):
            return int_column(arr, f"f{i}", ln[i])

        fam: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # "4src" -> (hi, lo)
        for target, i in plan.items():
            kind, _, name = target.partition(":")
            if kind == "i":
                # straight from the big-endian field (one pass, the same modular cast as via U64)
                out[name] = arr[f"f{i}"] if ln[i] in (1, 2, 4, 8) else col(i)
            elif kind == "a4":
                v4 = arr[f"f{i}"].astype(U64)
                # an unset address (0.0.0.0) stays unset, not ::ffff:0.0.0.0 (as v5 does for the next hop)
                fam["4" + name] = (np.zeros(n, U64), np.where(v4 != 0, MAPPED | v4, U64(0)) if name == "nexthop"
                                   else MAPPED | v4)
            elif kind == "a6":
                both = arr[f"f{i}"].view(np.uint8).reshape(n, 16).view(">u8").reshape(n, 2)
                fam["6" + name] = (both[:, 0].astype(U64), both[:, 1].astype(U64))
            elif kind == "m":
                out[name] = int_column(arr, f"f{i}", 6)
        self._addresses(out, fam, col(plan["ipver"]) if "ipver" in plan else None, plan.get("af_default"))
        if "icmp" in plan:
            tc = col(plan["icmp"])
            out["icmp_type"] = tc >> U64(8)
            out["icmp_code"] = tc & U64(0xFF)
            icmp = (out["proto"] == 1) | (out["proto"] == 58)
            fix = icmp & (out["dport"] == 0)
            if fix.any():
                out["dport"][fix] = tc[fix]
        elif "i:icmp_type" in plan:
            icmp = ((out["proto"] == 1) | (out["proto"] == 58)) & (out["dport"] == 0)
            out["dport"] = np.where(icmp, (out["icmp_type"].astype(np.uint16) << 8) | out["icmp_code"], out["dport"])
        else:  # no ICMP element: type << 8 | code rides in the destination port (the NetFlow convention)
            icmp = (out["proto"] == 1) | (out["proto"] == 58)
            if icmp.any():
                out["icmp_type"] = np.where(icmp, out["dport"] >> 8, 0)
                out["icmp_code"] = np.where(icmp, out["dport"] & 0xFF, 0)
        if "i:mpls1" in plan or "i:mpls2" in plan or "i:mpls3" in plan:
            out["mpls_depth"] = (out["mpls1"] != 0).astype(np.uint8) + (out["mpls2"] != 0) + (out["mpls3"] != 0)
        out["tcp_flags"] = out["tcp_flags"]  # tcpControlBits may be 2 bytes: the cast kept the low 8 bits
        init = self._sysinit(arr, plan.get("sysinit"), ctx, n)
        first = self._time(arr, plan.get("first"), ctx, init)
        last = self._time(arr, plan.get("last"), ctx, init)
        # one end only: the flow is that instant; none (or relative times with no init time): unknown, 0
        out["first_ns"] = first if first is not None else (last if last is not None else 0)
        out["last_ns"] = last if last is not None else out["first_ns"]
        rate = sampling(col(plan["sampler"]) if "sampler" in plan else None) if sampling else np.ones(n, np.uint32)
        if "rate" in plan:
            inline = col(plan["rate"])
            rate = np.where(inline > 0, np.minimum(inline, U64(0xFFFF_FFFF)), rate).astype(np.uint32)
        extra: dict = {}
        kinds: dict = {}
        for i, name, kind, length in self._extras:
            if length == VARLEN:
                extra[name] = (varvals or {}).get(i, [None] * n)
            elif length <= 8 and kind in ("u", "4") or (kind == "b" and length <= 8):
                extra[name] = col(i)
                kind = "4" if kind == "4" else "u"
            else:
                raw = arr[f"f{i}"].reshape(n, -1)
                extra[name] = [r.tobytes() for r in raw]
            kinds[name] = kind
        return out, rate, extra, kinds

    def _addresses(self, out: np.ndarray, fam: dict, ipver: np.ndarray | None, default: int | None) -> None:
        """src / dst / next hop and ``af``, the family chosen per record: ipVersion (4 or 6) when the record
        has it, else the family whose addresses are not all zero, else the template's first family."""
        n = len(out)
        has4, has6 = "4src" in fam or "4dst" in fam, "6src" in fam or "6dst" in fam
        if has4 and has6:
            zero = (np.zeros(n, U64), np.zeros(n, U64))
            s4, d4 = fam.get("4src", zero), fam.get("4dst", zero)
            s6, d6 = fam.get("6src", zero), fam.get("6dst", zero)
            nz4 = ((s4[1] & U64(0xFFFF_FFFF)) | (d4[1] & U64(0xFFFF_FFFF))) != 0
            nz6 = (s6[0] | s6[1] | d6[0] | d6[1]) != 0
            af = np.where(nz6 & ~nz4, 6, np.where(nz4 & ~nz6, 4, default or 4)).astype(np.uint8)
            if ipver is not None:
                af = np.where((ipver == 4) | (ipver == 6), ipver, af).astype(np.uint8)
        elif has4 or has6:
            af = np.full(n, 4 if has4 else 6, np.uint8)  # the addresses say what they are
        else:
            af = ipver.astype(np.uint8) if ipver is not None else np.zeros(n, np.uint8)
        out["af"] = af
        is6 = af == 6
        for name in ("src", "dst", "nexthop"):
            a4, a6 = fam.get("4" + name), fam.get("6" + name)
            if a4 is None and a6 is None:
                continue
            if a4 is None or a6 is None:
                hi, lo = a4 if a6 is None else a6
            else:
                pick6 = is6
                if name == "nexthop":  # the record's family, else whichever next hop is set
                    set4, set6 = a4[1] != 0, (a6[0] | a6[1]) != 0
                    pick6 = np.where(set4 & ~set6, False, np.where(set6 & ~set4, True, is6))
                hi, lo = np.where(pick6, a6[0], a4[0]), np.where(pick6, a6[1], a4[1])
            out[name + "_hi"] = hi
            out[name + "_lo"] = lo

    def _sysinit(self, arr: np.ndarray, i: int | None, ctx: Ctx, n: int) -> np.ndarray | None:
        """systemInitTimeMilliseconds per record (-1: unknown): the record's own, else the domain's when its
        message arrived."""
        dom = ctx.sysinit_ms
        if dom is not None and not isinstance(dom, np.ndarray):
            dom = np.full(n, dom, np.int64)
        if i is None:
            return dom
        own = int_column(arr, f"f{i}", self.fields[i][1]).astype(np.int64)
        return np.where(own > 0, own, dom if dom is not None else -1)

    def _time(self, arr: np.ndarray, i: int | None, ctx: Ctx, init: np.ndarray | None = None) -> np.ndarray | None:
        if i is None:
            return None
        ie, length, _ = self.fields[i]
        v = int_column(arr, f"f{i}", length)
        if ie in (152, 153, OBSERVATION_MS):
            return v.astype(np.int64) * 1_000_000
        if ie in (150, 151):
            return v.astype(np.int64) * NS
        if ie in (154, 155, 156, 157):  # NTP format: seconds since 1900 . fraction
            sec = (v >> U64(32)).astype(np.int64) - NTP_EPOCH
            frac = ((v & U64(0xFFFF_FFFF)) * U64(NS)) >> U64(32)
            return sec * NS + frac.astype(np.int64)
        if ie in (158, 159):
            return ctx.export_ns - v.astype(np.int64) * 1000
        # 21 / 22: sysUpTime milliseconds
        if ctx.uptime_ms is not None:  # v9: relative to the header's sysUptime at unix_secs
            diff = ((ctx.uptime_ms - v.astype(np.int64)) & 0xFFFF_FFFF).astype(np.uint32).view(np.int32)
            return (ctx.export_ns // NS) * NS - diff.astype(np.int64) * 1_000_000
        # IPFIX: relative to systemInitTimeMilliseconds (the record's own, or options data); none: unknown (0)
        if init is None:
            return np.zeros(len(v), np.int64)
        return np.where(init > 0, (init + v.astype(np.int64)) * 1_000_000, 0)


def split_varlen(t: Template, body: memoryview, limit: int = 1 << 20) -> tuple[bytes, int, dict[int, list], bool]:
    """Scalar path for templates with variable-length fields.

    Returns (fixed-part bytes, records, {field index: [bytes per record]}, ok);
    ``ok`` is False when a length ran past the set (records before it are kept).
    """
    fixed = bytearray()
    var: dict[int, list] = {i: [] for i, (_ie, ln, _p) in enumerate(t.fields) if ln == VARLEN}
    o, end, n = 0, len(body), 0
    fields = t.fields
    minlen = max(1, t.min_record_length)
    while end - o >= minlen and n < limit:
        start = o
        rec_fixed = bytearray()
        rec_var = []
        ok = True
        for i, (_ie, ln, _p) in enumerate(fields):
            if ln == VARLEN:
                if o >= end:
                    ok = False
                    break
                ln2 = body[o]
                o += 1
                if ln2 == 255:
                    if o + 2 > end:
                        ok = False
                        break
                    ln2 = (body[o] << 8) | body[o + 1]
                    o += 2
                if o + ln2 > end:
                    ok = False
                    break
                rec_var.append((i, bytes(body[o:o + ln2])))
                o += ln2
            else:
                if o + ln > end:
                    ok = False
                    break
                rec_fixed += body[o:o + ln]
                o += ln
        if not ok:
            if any(body[start:end]):
                return bytes(fixed), n, var, False
            break  # zero padding
        fixed += rec_fixed
        for i, v in rec_var:
            var[i].append(v)
        n += 1
    return bytes(fixed), n, var, True


def expire_templates(dom, now_ns: int, timeout_ns: int) -> int:
    """Drop the templates of *dom* not refreshed for *timeout_ns*; returns how many (budget given back)."""
    doomed = [tid for tid, t in dom.templates.items() if now_ns - t.seen_ns >= timeout_ns]
    for tid in doomed:
        del dom.templates[tid]
        dom.exporter.template_lru.pop((dom.key, tid), None)
    dom.exporter.template_count -= len(doomed)
    return len(doomed)

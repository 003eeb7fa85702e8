"""Parse and validate the ``firewall`` section (Junos ``firewall family F filter N term T``).

One pass over the config produces both the list of :class:`ConfigIssue`
(every problem, each with its exact key path) and, when there are none, the
normalised filters that :mod:`flowplane.firewall` compiles into numpy tables.

Family ``any`` supports only the conditions that do not need an IP header
(``interface``) plus ``packet-length``/``packet-length-except``; everything
else is rejected there with a message saying so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from flowplane.actions import CORE_ACTIONS, DISCARD_ACCOUNTING, TermAction
from flowplane.errors import ConfigIssue
from flowplane.firewall_values import (
    DSCPS,
    FRAG_OFFSETS,
    HOP_LIMITS,
    ICMP4_CODE,
    ICMP4_TYPE,
    ICMP6_CODE,
    ICMP6_TYPE,
    LENGTHS,
    PORTS,
    PRECEDENCES,
    PROTOCOLS,
    REJECT_REASONS,
    TTLS,
    ValueProblem,
    Vocabulary,
    parse_prefix_entry,
    prefix_range,
    suggest,
    tcp_flags_table,
)
from flowplane.registry import Registry

FAMILIES = ("inet", "inet6", "any")
UNSUPPORTED_FAMILIES = ("mpls", "ccc", "vpls", "bridge", "ethernet-switching", "evpn")
CORE = {a.name: a for a in CORE_ACTIONS}
TERMINATING_CORE = ("accept", "discard", "reject")


# --------------------------------------------------------------------------
# match-condition catalogue
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class CondSpec:
    """What one ``from`` keyword means.

    kind:
      ``prefix``   -- addresses; ``field`` is src/dst/either
      ``plist``    -- prefix-list references; ``field`` is src/dst/either
      ``table``    -- value set over a column; ``field`` names the column,
                      ``vocab`` parses values, ``gate`` restricts rows (l4 kind)
      ``ports``    -- port set; ``field`` src/dst/either
      ``tcpflags`` -- expression -> 256 table
      ``flag``     -- valueless: tcp-initial, tcp-established, is-fragment, first-fragment
      ``iface``    -- interface name patterns
    """

    name: str
    kind: str
    field: str = ""
    negate: bool = False
    vocab: Vocabulary | None = None
    gate: str = ""
    ip: bool = True  # needs a decoded IP header (status == 0)


def _catalogue() -> dict[str, dict[str, CondSpec]]:
    common: dict[str, CondSpec] = {}

    def add(d, spec, *, except_too=False):
        d[spec.name] = spec
        if except_too:
            d[spec.name + "-except"] = CondSpec(spec.name + "-except", spec.kind, spec.field, True,
                                                spec.vocab, spec.gate, spec.ip)

    for name, fld in (("source-address", "src"), ("destination-address", "dst"), ("address", "either")):
        add(common, CondSpec(name, "prefix", fld))
    for name, fld in (("source-prefix-list", "src"), ("destination-prefix-list", "dst"), ("prefix-list", "either")):
        add(common, CondSpec(name, "plist", fld))
    for name, fld in (("source-port", "src"), ("destination-port", "dst"), ("port", "either")):
        add(common, CondSpec(name, "ports", fld), except_too=True)
    add(common, CondSpec("dscp", "table", "dscp", vocab=DSCPS), except_too=True)
    add(common, CondSpec("packet-length", "table", "plen", vocab=LENGTHS), except_too=True)
    add(common, CondSpec("tcp-flags", "tcpflags", "tcp_flags", gate="tcp"))
    for name in ("tcp-initial", "tcp-established", "is-fragment", "first-fragment"):
        add(common, CondSpec(name, "flag", name))
    add(common, CondSpec("interface", "iface", "iface", ip=False))

    inet = dict(common)
    add(inet, CondSpec("protocol", "table", "proto", vocab=PROTOCOLS), except_too=True)
    add(inet, CondSpec("icmp-type", "table", "icmp_type", vocab=ICMP4_TYPE, gate="icmp"), except_too=True)
    add(inet, CondSpec("icmp-code", "table", "icmp_code", vocab=ICMP4_CODE, gate="icmp"), except_too=True)
    add(inet, CondSpec("precedence", "table", "prec", vocab=PRECEDENCES), except_too=True)
    add(inet, CondSpec("ttl", "table", "ttl", vocab=TTLS), except_too=True)
    add(inet, CondSpec("fragment-offset", "table", "frag_off", vocab=FRAG_OFFSETS), except_too=True)

    inet6 = dict(common)
    for name in ("protocol", "next-header", "payload-protocol"):
        add(inet6, CondSpec(name, "table", "proto", vocab=PROTOCOLS), except_too=True)
    add(inet6, CondSpec("traffic-class", "table", "dscp", vocab=DSCPS), except_too=True)
    add(inet6, CondSpec("icmp-type", "table", "icmp_type", vocab=ICMP6_TYPE, gate="icmp"), except_too=True)
    add(inet6, CondSpec("icmp-code", "table", "icmp_code", vocab=ICMP6_CODE, gate="icmp"), except_too=True)
    add(inet6, CondSpec("hop-limit", "table", "ttl", vocab=HOP_LIMITS), except_too=True)

    anyf = {k: common[k] for k in ("interface", "packet-length", "packet-length-except")}
    return {"inet": inet, "inet6": inet6, "any": anyf}


CONDITIONS: dict[str, dict[str, CondSpec]] = _catalogue()


# --------------------------------------------------------------------------
# parsed (normalised) form
# --------------------------------------------------------------------------

@dataclass
class ParsedCond:
    spec: CondSpec
    value: object  # table (np.ndarray) / list of (start, end, except) / patterns / None


@dataclass
class ParsedTerm:
    name: str
    conds: list[ParsedCond] = field(default_factory=list)
    count: str | None = None
    plugin_actions: list[tuple[str, object]] = field(default_factory=list)
    decision: str | None = "accept"  # accept/discard/reject/consumed or None (= next term)
    reject_reason: str | None = None
    terminating_action: str | None = None


@dataclass
class ParsedFilter:
    family: str
    name: str
    terms: list[ParsedTerm]
    signature: str  # canonical text of the filter and the prefix-lists it uses


@dataclass
class _Ctx:
    config: dict
    actions: Registry[TermAction] | None
    issues: list[ConfigIssue]
    plists: dict = field(default_factory=dict)  # name -> list of (version, start, end) or None
    plist_raw: dict = field(default_factory=dict)

    def issue(self, path: tuple, message: str) -> None:
        self.issues.append(ConfigIssue(tuple(path), message))


# --------------------------------------------------------------------------
# walking the tree
# --------------------------------------------------------------------------

def parse_firewall(config: dict, actions: Registry[TermAction] | None) -> tuple[list[ParsedFilter], list[ConfigIssue]]:
    """Return ``(filters, issues)``; *filters* is only meaningful when *issues* is empty."""
    ctx = _Ctx(config, actions, [])
    filters: list[ParsedFilter] = []
    if not isinstance(config, dict):
        ctx.issue((), f"expected a mapping at the top of the config; got {type(config).__name__}")
        return filters, ctx.issues
    fw = config.get("firewall")
    if fw is None:
        return filters, ctx.issues
    if not isinstance(fw, dict):
        ctx.issue(("firewall",), f"expected a mapping with 'family'; got {_kind(fw)}")
        return filters, ctx.issues
    for key, val in fw.items():
        if key == "family":
            if not isinstance(val, dict):
                ctx.issue(("firewall", "family"),
                          f"expected a mapping of families (inet, inet6, any); got {_kind(val)}")
                continue
            for fam, body in val.items():
                path = ("firewall", "family", fam)
                if fam not in FAMILIES:
                    if fam in UNSUPPORTED_FAMILIES:
                        ctx.issue(path, f"family {fam!r} is not supported; expected inet, inet6 or any")
                    else:
                        ctx.issue(path, f"unknown family {fam!r}; expected inet, inet6 or any" + suggest(fam, FAMILIES))
                    continue
                filters += _parse_family(ctx, fam, body, path)
        elif key == "filter":
            # Junos: 'firewall filter X' is shorthand for family inet
            filters += _parse_family(ctx, "inet", {"filter": val}, ("firewall",))
        elif key in ("policer", "hierarchical-policer", "three-color-policer", "interface-set"):
            ctx.issue(("firewall", key), f"'firewall {key}' is not supported by flowplane (a monitoring box does not "
                                         "police)")
        else:
            ctx.issue(("firewall", key),
                      f"unknown key {key!r} under 'firewall'; expected 'family'" + suggest(key, ("family", "filter")))
    seen: dict[tuple[str, str], tuple] = {}
    for f in filters:
        if (f.family, f.name) in seen:
            ctx.issue(("firewall", "family", f.family, "filter", f.name),
                      f"filter {f.name!r} is defined twice in family {f.family} (once as 'firewall filter')")
        seen[(f.family, f.name)] = ()
    return filters, ctx.issues


def _kind(v) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return repr(v)


def _parse_family(ctx: _Ctx, fam: str, body, path: tuple) -> list[ParsedFilter]:
    out: list[ParsedFilter] = []
    if body is None:
        return out
    if not isinstance(body, dict):
        ctx.issue(path, f"expected a mapping with 'filter'; got {_kind(body)}")
        return out
    for key, val in body.items():
        if key != "filter":
            ctx.issue(path + (key,),
                      f"unknown key {key!r} under family {fam}; expected 'filter'" + suggest(key, ("filter",)))
            continue
        if val is None:
            continue
        if not isinstance(val, dict):
            ctx.issue(path + ("filter",), f"expected a mapping of filter names to filters; got {_kind(val)}")
            continue
        for fname, fbody in val.items():
            f = _parse_filter(ctx, fam, str(fname), fbody, path + ("filter", fname))
            if f is not None:
                out.append(f)
    return out


def _parse_filter(ctx: _Ctx, fam: str, name: str, body, path: tuple) -> ParsedFilter | None:
    before = len(ctx.issues)
    terms: list[ParsedTerm] = []
    used_plists: set[str] = set()
    if body is None:
        body = {}
    if not isinstance(body, dict):
        ctx.issue(path, f"expected a mapping with 'term'; got {_kind(body)}")
        return None
    for key, val in body.items():
        if key != "term":
            ctx.issue(path + (key,),
                      f"unknown key {key!r} in filter {name!r}; expected 'term'" + suggest(key, ("term",)))
            continue
        if val is None:
            continue
        if not isinstance(val, dict):
            ctx.issue(path + ("term",), f"expected a mapping of term names to terms (order is kept); got {_kind(val)}")
            continue
        for tname, tbody in val.items():
            t = _parse_term(ctx, fam, str(tname), tbody, path + ("term", tname), used_plists)
            if t is not None:
                terms.append(t)
    if len(ctx.issues) != before:
        return None
    sig = json.dumps({"family": fam, "filter": body,
                      "prefix-lists": {p: ctx.plist_raw.get(p) for p in sorted(used_plists)}},
                     default=str, sort_keys=False)
    return ParsedFilter(fam, name, terms, sig)


def _parse_term(ctx: _Ctx, fam: str, name: str, body, path: tuple, used_plists: set) -> ParsedTerm | None:
    term = ParsedTerm(name)
    if body is None:
        return term
    if not isinstance(body, dict):
        ctx.issue(path, f"expected a mapping with 'from' and/or 'then'; got {_kind(body)}")
        return None
    for key in body:
        if key not in ("from", "then"):
            ctx.issue(path + (key,),
                      f"unknown key {key!r} in term {name!r}; expected 'from' or 'then'"
                      + suggest(key, ("from", "then")))
    frm = body.get("from")
    if frm is not None:
        if not isinstance(frm, dict):
            ctx.issue(path + ("from",), f"expected a mapping of match conditions; got {_kind(frm)}")
        else:
            for cname, raw in frm.items():
                c = _parse_cond(ctx, fam, cname, raw, path + ("from", cname), used_plists)
                if c is not None:
                    term.conds.append(c)
    if "then" in body:
        _parse_then(ctx, fam, term, body["then"], path + ("then",))
    return term


# --------------------------------------------------------------------------
# conditions
# --------------------------------------------------------------------------

def _values(raw, *, mapping_except: bool = False) -> list:
    """A condition's value(s) as a flat list (scalar -> [scalar])."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    if isinstance(raw, dict) and mapping_except:
        out = []
        for k, v in raw.items():
            out.append(f"{k} except" if isinstance(v, str) and v.strip().lower() == "except" else k)
        return out
    return [raw]


def _parse_cond(ctx: _Ctx, fam: str, cname, raw, path: tuple, used_plists: set) -> ParsedCond | None:
    table = CONDITIONS[fam]
    spec = table.get(cname)
    if spec is None:
        others = [f for f in FAMILIES if f != fam and cname in CONDITIONS[f]]
        if others and fam == "any":
            ctx.issue(path, f"match condition {cname!r} is not supported in family any, which matches "
                            f"non-IP packets too; expected one of: {', '.join(sorted(table))}")
        elif others:
            hint = ""
            if cname in ("next-header", "payload-protocol"):
                hint = "; use 'protocol'"
            elif cname == "hop-limit":
                hint = "; use 'ttl'"
            elif cname == "ttl":
                hint = "; use 'hop-limit'"
            elif cname == "traffic-class":
                hint = "; use 'dscp'"
            ctx.issue(path, f"match condition {cname!r} is not valid in family {fam} (only in "
                            f"{', '.join(others)}){hint}")
        else:
            ctx.issue(path, f"unknown match condition {cname!r}" + suggest(str(cname), table)
                      + ("" if suggest(str(cname), table) else f"; expected one of: {', '.join(sorted(table))}"))
        return None
    kind = spec.kind
    if kind == "flag":
        if raw is None or raw is True:
            return ParsedCond(spec, None)
        if raw is False:
            return None
        ctx.issue(path, f"{cname!r} takes no value; expected true (or nothing); got {raw!r}")
        return None
    if raw is None or (isinstance(raw, (list, tuple, dict)) and not raw):
        ctx.issue(path, f"{cname!r} needs at least one value")
        return None
    if kind == "tcpflags":
        if isinstance(raw, (list, tuple)):
            # several expressions: ORed like any other value list
            t = np.zeros(256, dtype=bool)
            for v in raw:
                try:
                    t |= tcp_flags_table(v)
                except ValueProblem as e:
                    ctx.issue(path, str(e))
            return ParsedCond(spec, t)
        try:
            return ParsedCond(spec, tcp_flags_table(raw))
        except ValueProblem as e:
            ctx.issue(path, str(e))
            return None
    if kind in ("table", "ports"):
        vocab = PORTS if kind == "ports" else spec.vocab
        t = np.zeros(vocab.maximum + 1, dtype=bool)
        ok = True
        for v in _values(raw):
            try:
                a, b = vocab.parse(v)
                t[a : b + 1] = True
            except ValueProblem as e:
                ctx.issue(path, str(e))
                ok = False
        return ParsedCond(spec, t) if ok else None
    if kind == "prefix":
        entries = []
        ok = True
        for v in _values(raw, mapping_except=True):
            try:
                entries.append(parse_prefix_entry(v, fam))
            except ValueProblem as e:
                ctx.issue(path, str(e))
                ok = False
        return ParsedCond(spec, entries) if ok else None
    if kind == "plist":
        entries = []
        ok = True
        for v in _values(raw, mapping_except=True):
            if not isinstance(v, str) or not v.split():
                ctx.issue(path, "expected the name of a policy-options prefix-list (optionally followed by ' "
                                f"except'); got {v!r}")
                ok = False
                continue
            parts = v.split()
            exc = len(parts) == 2 and parts[1].lower() == "except"
            if len(parts) > 2 or (len(parts) == 2 and not exc):
                ctx.issue(path, "expected the name of a policy-options prefix-list (optionally followed by ' "
                                f"except'); got {v!r}")
                ok = False
                continue
            pl = _prefix_list(ctx, parts[0], path)
            if pl is None:
                ok = False
                continue
            used_plists.add(parts[0])
            want = 4 if fam == "inet" else 6
            entries += [(s, e, exc) for (ver, s, e) in pl if ver == want]
        return ParsedCond(spec, entries) if ok else None
    if kind == "iface":
        pats = []
        for v in _values(raw):
            if not isinstance(v, str) or not v.strip() or any(ch.isspace() for ch in v.strip()):
                ctx.issue(path, f"expected an interface name like 'eth1' or a pattern with '*' like 'ge-*'; got {v!r}")
                return None
            pats.append(v.strip())
        return ParsedCond(spec, pats)
    raise AssertionError(kind)  # pragma: no cover


def _prefix_list(ctx: _Ctx, name: str, cond_path: tuple):
    """Entries of ``policy-options prefix-list NAME`` as ``(version, start, end)``; issues once."""
    if name in ctx.plists:
        if ctx.plists[name] is None and name not in _defined_plists(ctx.config):
            ctx.issue(cond_path, _missing_plist_message(ctx.config, name))
        return ctx.plists[name]
    defined = _defined_plists(ctx.config)
    if name not in defined:
        ctx.plists[name] = None
        ctx.issue(cond_path, _missing_plist_message(ctx.config, name))
        return None
    raw = defined[name]
    ctx.plist_raw[name] = raw
    path = ("policy-options", "prefix-list", name)
    out = []
    bad = False
    items = list(raw.keys()) if isinstance(raw, dict) else _values(raw) if raw is not None else []
    for v in items:
        try:
            net = _ip_network(v)
        except ValueProblem as e:
            ctx.issue(path, str(e))
            bad = True
            continue
        s, e = prefix_range(net)
        out.append((net.version, s, e))
    ctx.plists[name] = None if bad else out
    return ctx.plists[name]


def _ip_network(v):
    import ipaddress
    if isinstance(v, str):
        try:
            return ipaddress.ip_network(v.strip(), strict=False)
        except ValueError:
            pass
    raise ValueProblem(f"expected an IPv4 or IPv6 prefix like '10.0.0.0/8' or '2001:db8::/32' "
                       f"(prefix-list entries cannot say 'except'); got {v!r}")


def _defined_plists(config: dict) -> dict:
    po = config.get("policy-options")
    if not isinstance(po, dict):
        return {}
    pl = po.get("prefix-list")
    return pl if isinstance(pl, dict) else {}


def _missing_plist_message(config: dict, name: str) -> str:
    defined = _defined_plists(config)
    msg = f"prefix-list {name!r} is not defined under policy-options prefix-list"
    s = suggest(name, defined)
    if s:
        return msg + s
    if defined:
        return msg + f"; defined: {', '.join(sorted(map(str, defined)))}"
    return msg


# --------------------------------------------------------------------------
# actions
# --------------------------------------------------------------------------

_COUNTER_NAME = re.compile(r"^[A-Za-z0-9_.:/-]+$")


def _then_items(raw, path: tuple, ctx: _Ctx) -> list[tuple[str, object, tuple]]:
    """Normalise the three ``then`` shapes to ``[(action, arg|None, path)]``."""
    out: list[tuple[str, object, tuple]] = []

    def from_str(s: str, p: tuple):
        parts = s.split(None, 1)
        if not parts:
            ctx.issue(p, "expected an action like 'accept', 'discard', 'count NAME'; got an empty string")
            return
        out.append((parts[0], parts[1].strip() if len(parts) > 1 else None, path + (parts[0],)))

    if isinstance(raw, str):
        from_str(raw, path)
    elif isinstance(raw, dict):
        for k, v in raw.items():
            if v is False:
                continue
            out.append((str(k), None if v is True else v, path + (k,)))
    elif isinstance(raw, (list, tuple)):
        for i, item in enumerate(raw):
            if isinstance(item, str):
                from_str(item, path)
            elif isinstance(item, dict) and len(item) == 1:
                (k, v), = item.items()
                if v is not False:
                    out.append((str(k), None if v is True else v, path + (k,)))
            else:
                ctx.issue(path, f"expected each action to be a string ('accept', 'count c1') or a one-key "
                                f"mapping ({{count: c1}}); item {i} is {_kind(item)}")
    else:
        ctx.issue(path, "expected an action string, a list of actions or a mapping of action to argument; got "
                        f"{_kind(raw)}")
    return out


def _accounting_group(arg) -> str | None:
    """The group of ``discard accounting NAME`` (``"accounting NAME"`` / ``{accounting: NAME}``), else None."""
    if isinstance(arg, str):
        parts = arg.split()
        return parts[1] if len(parts) == 2 and parts[0] == "accounting" else None
    if isinstance(arg, dict) and len(arg) == 1 and "accounting" in arg:
        group = arg["accounting"]
        return group if isinstance(group, str) and group.strip() and not group.split()[1:] else None
    return None


def _plugin_check(act: TermAction, arg, config: dict) -> str | None:
    """A plugin action's own ``validate`` (a crashing validator is a config issue, never a crash)."""
    if act.validate is None:
        return None
    try:
        return act.validate(arg, config)
    except Exception as e:
        return f"validator of action {act.name!r} failed: {type(e).__name__}: {e}"


def _discard_accounting(ctx: _Ctx, term: ParsedTerm, arg, p: tuple) -> bool:
    """``discard accounting NAME``: queue the rows for the discard-accounting handler; False on an issue."""
    group = _accounting_group(arg)
    if group is None:
        ctx.issue(p, "expected 'discard' alone or 'discard accounting NAME' (YAML: 'discard: {accounting: NAME}'); "
                     f"got {arg!r}")
        return False
    act = ctx.actions.get(DISCARD_ACCOUNTING) if ctx.actions is not None else None
    if act is None:
        ctx.issue(p, "'discard accounting' needs the plugin that implements discard accounting (flow-monitoring); "
                     f"no enabled plugin registers the {DISCARD_ACCOUNTING!r} action")
        return False
    msg = _plugin_check(act, group, ctx.config)
    if msg:
        ctx.issue(p + ("accounting",) if isinstance(arg, dict) else p, msg)
        return False
    term.plugin_actions.append((DISCARD_ACCOUNTING, group))
    return True


def _parse_then(ctx: _Ctx, fam: str, term: ParsedTerm, raw, path: tuple) -> None:
    if raw is None:
        return
    known = dict(CORE)
    if ctx.actions is not None:
        for n, a in ctx.actions.items():
            if n != DISCARD_ACCOUNTING:  # spelt 'discard accounting NAME'
                known.setdefault(n, a)
    seen: set[str] = set()
    terminating: list[str] = []
    next_term = False
    for name, arg, p in _then_items(raw, path, ctx):
        if name == DISCARD_ACCOUNTING:
            ctx.issue(p, "write discard accounting as 'discard accounting NAME' (YAML: 'discard: {accounting: NAME}')")
            continue
        act = known.get(name)
        if act is None:
            s = suggest(name, known)
            ctx.issue(p, f"unknown action {name!r}" + (s or f"; expected one of: {', '.join(sorted(known))}"))
            continue
        if name in seen:
            ctx.issue(p, f"action {name!r} appears twice in term {term.name!r}")
            continue
        seen.add(name)
        if act.arg == "none" and arg is not None:
            ctx.issue(p, f"action {name!r} takes no argument; expected true (or nothing); got {arg!r}")
            continue
        if act.arg == "required" and arg is None:
            what = {"count": "a counter name", "next": "'term'"}.get(name, "an argument")
            ctx.issue(p, f"action {name!r} needs {what}, e.g. '{name}: {'term' if name == 'next' else 'x1'}'")
            continue
        if name == "count":
            if isinstance(arg, bool) or not isinstance(arg, (str, int)) or not _COUNTER_NAME.match(str(arg)):
                ctx.issue(p, f"expected a counter name (letters, digits, '-', '_', '.'); got {arg!r}")
                continue
            term.count = str(arg)
        elif name == "next":
            if arg != "term":
                ctx.issue(p, f"expected 'next: term' (the only 'next' flowplane filters know); got {arg!r}")
                continue
            next_term = True
        elif name == "reject":
            if arg is not None and (not isinstance(arg, str) or arg not in REJECT_REASONS):
                ctx.issue(p, f"expected a reject reason like 'tcp-reset', 'port-unreachable', "
                             f"'administratively-prohibited' (or nothing); got {arg!r}"
                             + suggest(str(arg), REJECT_REASONS))
                continue
            term.reject_reason = arg
            terminating.append(name)
        elif name == "discard":
            if arg is not None and not _discard_accounting(ctx, term, arg, p):
                continue
            terminating.append(name)
        elif name in TERMINATING_CORE:
            terminating.append(name)
        else:
            msg = _plugin_check(act, arg, ctx.config)
            if msg:
                ctx.issue(p, msg)
                continue
            term.plugin_actions.append((name, arg))
            if act.terminating:
                terminating.append(name)
    if len(terminating) > 1:
        ctx.issue(path, f"term {term.name!r} has conflicting terminating actions: {', '.join(terminating)}; "
                        "expected at most one")
    if next_term and terminating:
        ctx.issue(path, f"term {term.name!r} combines 'next term' with the terminating action "
                        f"{terminating[0]!r}; expected one or the other")
    if terminating:
        t = terminating[0]
        term.terminating_action = t
        term.decision = t if t in TERMINATING_CORE else "consumed"
    elif next_term:
        term.decision = None
    else:
        term.decision = "accept"  # Junos: no terminating action -> implicit accept


def validate_firewall(config: dict, actions: Registry[TermAction]) -> list[ConfigIssue]:
    """Every problem in ``firewall`` and the prefix-lists it references."""
    return parse_firewall(config, actions)[1]

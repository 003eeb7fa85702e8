"""Property test: CompiledFilter.evaluate agrees with a slow per-packet reference.

The reference below is written independently of flowplane.firewall: plain
Python per packet, ipaddress for longest-prefix match, fnmatch for interface
patterns, tcp-flags expressions generated as trees and evaluated directly.
"""

import fnmatch
import ipaddress

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.actions import TermAction
from flowplane.batch import DECODED_COLUMNS, PacketBatch
from flowplane.firewall import compile_firewall
from flowplane.interfaces import InterfaceTable
from flowplane.registry import Registry

V4 = ["10.0.0.1", "10.1.2.3", "10.1.200.1", "192.0.2.9", "0.0.0.0", "255.255.255.255", "172.16.5.5"]
V6 = ["2001:db8::1", "2001:db8:1::5", "fe80::1", "::", "::ffff:10.0.0.1", "2001:db8::8000:0:0:1"]
P4 = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "0.0.0.0/0", "192.0.2.0/25", "172.16.0.0/12"]
P6 = ["2001:db8::/32", "2001:db8:1::/48", "::/0", "fe80::/10", "2001:db8::1/128", "2001:db8::/65", "::ffff:0:0/96"]
PORTS = [0, 22, 53, 80, 443, 1023, 1024, 65535]
PROTOS = [1, 6, 17, 47, 58, 132]
IFACES = ["eth0", "eth1", "ge-0/0/0", "lo"]
FLAGS = {"fin": 1, "syn": 2, "rst": 4, "push": 8, "ack": 16, "urgent": 32}
MAPPED = 0xFFFF << 32

# -- random packets ------------------------------------------------------------------------

packet = st.fixed_dictionaries({
    "af": st.sampled_from([4, 4, 4, 6, 6, 6, 0]),
    "status": st.sampled_from([0, 0, 0, 0, 6]),
    "src4": st.sampled_from(V4), "dst4": st.sampled_from(V4),
    "src6": st.sampled_from(V6), "dst6": st.sampled_from(V6),
    "proto": st.sampled_from(PROTOS),
    "sport": st.sampled_from(PORTS), "dport": st.sampled_from(PORTS),
    "tos": st.integers(0, 255), "tcp_flags": st.integers(0, 255),
    "icmp_type": st.sampled_from([0, 3, 8, 128, 135]), "icmp_code": st.integers(0, 4),
    "ip_len": st.sampled_from([20, 40, 60, 100, 101, 1500, 65535, 70000]),
    "frag": st.sampled_from([0, 0, 1, 2]),
    "iface": st.integers(0, len(IFACES)),
    "wirelen": st.integers(60, 1514),
})


def make_batch(pkts: list[dict]) -> PacketBatch:
    n = len(pkts)
    b = PacketBatch.from_frames([b"\0" * 60] * n, wirelen=[p["wirelen"] for p in pkts])
    for name, dt in DECODED_COLUMNS.items():
        setattr(b, name, np.zeros(n, dtype=dt))
    b.decoded = True
    for i, p in enumerate(pkts):
        for k in ("af", "status", "proto", "sport", "dport", "tos", "tcp_flags", "icmp_type", "icmp_code",
                  "ip_len", "frag", "iface"):
            getattr(b, k)[i] = p[k]
        b.l4_off[i] = -1 if p["frag"] == 2 else 34
        for side in ("src", "dst"):
            v = _addr_int(p, side)
            getattr(b, side + "_hi")[i] = v >> 64
            getattr(b, side + "_lo")[i] = v & ((1 << 64) - 1)
    return b


def _addr_int(p, side) -> int:
    if p["af"] == 6:
        return int(ipaddress.ip_address(p[side + "6"]))
    return int(ipaddress.ip_address(p[side + "4"])) | MAPPED


# -- random filters ------------------------------------------------------------------------

def flag_expr(depth=0):
    leaves = st.sampled_from(list(FLAGS)).map(lambda f: ("flag", f))
    if depth >= 2:
        return leaves
    sub = flag_expr(depth + 1)
    return st.one_of(
        leaves,
        st.tuples(st.just("not"), sub),
        st.tuples(st.sampled_from(["and", "or"]), sub, sub),
    )


def render(e) -> str:
    if e[0] == "flag":
        return e[1]
    if e[0] == "not":
        return f"!{render(e[1])}"
    return f"({render(e[1])} {'&' if e[0] == 'and' else '|'} {render(e[2])})"


def eval_expr(e, flags: int) -> bool:
    if e[0] == "flag":
        return bool(flags & FLAGS[e[1]])
    if e[0] == "not":
        return not eval_expr(e[1], flags)
    a, b = eval_expr(e[1], flags), eval_expr(e[2], flags)
    return (a and b) if e[0] == "and" else (a or b)


def prefixes(pool):
    return st.lists(st.tuples(st.sampled_from(pool), st.booleans()), min_size=1, max_size=4, unique_by=lambda t: t[0])


def port_values():
    return st.lists(st.one_of(st.sampled_from(PORTS),
                              st.sampled_from(["http", "https", "ssh", "dns", "1000-2000", "0-80"])),
                    min_size=1, max_size=3)


def conditions(family):
    if family == "any":
        c = {"interface": st.lists(st.sampled_from(["eth*", "lo", "ge-*", "eth1"]), min_size=1, max_size=2),
             "packet-length": st.lists(st.sampled_from(["0-100", 1500, "101-65535", 40]), min_size=1, max_size=2),
             "packet-length-except": st.lists(st.sampled_from(["0-100", 1500]), min_size=1, max_size=2)}
    else:
        pool = P4 if family == "inet" else P6
        c = {
            "source-address": prefixes(pool), "destination-address": prefixes(pool), "address": prefixes(pool),
            "protocol": st.lists(st.sampled_from(PROTOS), min_size=1, max_size=3),
            "protocol-except": st.lists(st.sampled_from(PROTOS), min_size=1, max_size=2),
            "source-port": port_values(), "destination-port": port_values(), "port": port_values(),
            "destination-port-except": port_values(),
            "dscp": st.lists(st.sampled_from(["ef", "af11", "be", "cs6", 3, 63]), min_size=1, max_size=3),
            "dscp-except": st.lists(st.sampled_from(["ef", "be"]), min_size=1, max_size=2),
            "tcp-flags": flag_expr(),
            "tcp-initial": st.just(True), "tcp-established": st.just(True),
            "icmp-type": st.lists(st.sampled_from(["echo-request", "echo-reply", 3, 135]), min_size=1, max_size=2),
            "icmp-type-except": st.lists(st.sampled_from(["echo-request", 135]), min_size=1, max_size=2),
            "packet-length": st.lists(st.sampled_from(["0-100", 1500, "101-65535"]), min_size=1, max_size=2),
            "is-fragment": st.just(True), "first-fragment": st.just(True),
            "interface": st.lists(st.sampled_from(["eth*", "lo", "ge-*"]), min_size=1, max_size=2),
        }
    return st.lists(st.sampled_from(sorted(c)), min_size=0, max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: c[k] for k in keys}))


actions_st = st.fixed_dictionaries({
    "count": st.sampled_from([None, "c1", "c2"]),
    "sample": st.booleans(),
    "final": st.sampled_from(["accept", "discard", "reject", "next", "none"]),
})


@st.composite
def filters(draw):
    family = draw(st.sampled_from(["inet", "inet6", "any"]))
    n = draw(st.integers(1, 5))
    terms = []
    for i in range(n):
        cond = draw(conditions(family))
        terms.append((f"t{i}", cond, draw(actions_st)))
    return family, terms


def to_config(family, terms):
    out = {}
    for name, cond, act in terms:
        frm = {}
        for k, v in cond.items():
            if k in ("source-address", "destination-address", "address"):
                frm[k] = [p + (" except" if exc else "") for p, exc in v]
            elif k == "tcp-flags":
                frm[k] = render(v)
            else:
                frm[k] = v
        then = {}
        if act["count"]:
            then["count"] = act["count"]
        if act["sample"]:
            then["sample"] = True
        if act["final"] == "next":
            then["next"] = "term"
        elif act["final"] != "none":
            then[act["final"]] = True
        t = {"then": then}
        if frm:
            t["from"] = frm
        out[name] = t
    return {"firewall": {"family": {family: {"filter": {"F": {"term": out}}}}}}


# -- the reference ---------------------------------------------------------------------------

PORT_NAMES = {"http": 80, "https": 443, "ssh": 22, "dns": 53}
DSCP = {"ef": 46, "af11": 10, "be": 0, "cs6": 48}
ICMP = {("inet", "echo-request"): 8, ("inet", "echo-reply"): 0, ("inet6", "echo-request"): 128,
        ("inet6", "echo-reply"): 129}


def in_values(x: int, values, names) -> bool:
    for v in values:
        if isinstance(v, str) and "-" in v and v.replace("-", "").isdigit():
            a, b = map(int, v.split("-"))
            if a <= x <= b:
                return True
        elif isinstance(v, str) and not v.isdigit():
            if names(v) == x:
                return True
        elif int(v) == x:
            return True
    return False


def lpm(address: str, entries) -> bool:
    ip = ipaddress.ip_address(address)
    best = None
    for p, exc in entries:
        net = ipaddress.ip_network(p, strict=False)
        if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, exc)
    return best is not None and not best[1]


def ref_cond(family, k, v, p) -> bool:
    ip_ok = p["status"] == 0 and p["af"] != 0
    if k == "interface":
        name = IFACES[p["iface"] - 1] if p["iface"] else "unknown"
        return any(fnmatch.fnmatchcase(name, pat) for pat in v)
    if not ip_ok:
        return False
    l4 = p["frag"] != 2
    fam = "6" if p["af"] == 6 else "4"
    if k in ("source-address", "destination-address", "address"):
        s, d = lpm(p["src" + fam], v), lpm(p["dst" + fam], v)
        return {"source-address": s, "destination-address": d, "address": s or d}[k]
    if k.startswith("protocol"):
        r = p["proto"] in v
        return not r if k.endswith("except") else r
    if "port" in k:
        ported = l4 and p["proto"] in (6, 17, 132)
        pn = PORT_NAMES.get
        if k.startswith("source"):
            r = ported and in_values(p["sport"], v, pn)
        elif k.startswith("destination"):
            r = ported and in_values(p["dport"], v, pn)
        else:
            r = ported and (in_values(p["sport"], v, pn) or in_values(p["dport"], v, pn))
        return not r if k.endswith("except") else r
    if k.startswith("dscp"):
        r = in_values(p["tos"] >> 2, v, DSCP.get)
        return not r if k.endswith("except") else r
    tcp = l4 and p["proto"] == 6
    if k == "tcp-flags":
        return tcp and eval_expr(v, p["tcp_flags"])
    if k == "tcp-initial":
        return tcp and bool(p["tcp_flags"] & 2) and not p["tcp_flags"] & 16
    if k == "tcp-established":
        return tcp and bool(p["tcp_flags"] & 20)
    if k.startswith("icmp-type"):
        r = l4 and p["proto"] == (1 if family == "inet" else 58) and in_values(
            p["icmp_type"], v, lambda n: ICMP.get((family, n), {"neighbor-solicit": 135}.get(n)))
        return not r if k.endswith("except") else r
    if k.startswith("packet-length"):
        r = in_values(min(p["ip_len"], 65535), v, None)
        return not r if k.endswith("except") else r
    if k == "is-fragment":
        return p["frag"] == 2
    if k == "first-fragment":
        return p["frag"] == 1
    raise AssertionError(k)


def reference(family, terms, pkts):
    out = []
    counters = {}
    for p in pkts:
        if family == "inet" and p["af"] != 4 or family == "inet6" and p["af"] != 6:
            out.append(("out", []))
            continue
        decision, sels = "implicit", []
        for name, cond, act in terms:
            if not all(ref_cond(family, k, v, p) for k, v in cond.items()):
                continue
            if act["count"]:
                c = counters.setdefault(act["count"], [0, 0])
                c[0] += 1
                c[1] += p["wirelen"]
            if act["sample"]:
                sels.append(name)
            if act["final"] == "next":
                continue
            decision = "accept" if act["final"] == "none" else act["final"]
            break
        out.append((decision, sels))
    return out, counters


def _registry():
    r = Registry("actions")
    r.register("sample", TermAction("sample"))
    return r


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filters(), st.lists(packet, min_size=10, max_size=60))
def test_evaluate_matches_per_packet_reference(flt, pkts):
    family, terms = flt
    it = InterfaceTable()
    for name in IFACES:
        it.id(name)
    f = compile_firewall(to_config(family, terms), _registry(), it).get(family, "F")
    res = f.evaluate(make_batch(pkts))
    want, counters = reference(family, terms, pkts)
    for i, (decision, sels) in enumerate(want):
        got = ("accept" if res.accept[i] else "discard" if res.discard[i] else "reject" if res.reject[i] else "out")
        exp = {"implicit": "discard"}.get(decision, decision)
        assert got == exp, (i, pkts[i], decision)
        assert bool(res.implicit_discard[i]) == (decision == "implicit")
        assert [t for t, a, arg, m in res.selections if m[i]] == sels
    assert all(m.any() for *_, m in res.selections)
    c = f.counters()
    assert {k: [v["packets"], v["bytes"]] for k, v in c["counters"].items() if v["packets"]} == counters
    assert c["implicit_discard"]["packets"] == sum(d == "implicit" for d, _ in want)

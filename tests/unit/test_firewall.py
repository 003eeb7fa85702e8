"""Firewall filters: match conditions, actions, families, counters, show output.

Batches here are built with decoded columns set directly (see ``batch()``),
so each test states exactly the header fields it is about.
"""

import ipaddress

import numpy as np
import pytest

from flowplane.actions import TermAction
from flowplane.batch import DECODED_COLUMNS, PacketBatch
from flowplane.errors import ConfigError
from flowplane.firewall import compile_firewall, format_show_firewall
from flowplane.firewall_values import tcp_flags_table
from flowplane.interfaces import InterfaceTable
from flowplane.registry import Registry

MAPPED = 0xFFFF << 32


def addr(text: str) -> tuple[int, int, int]:
    """(af, hi, lo) as the decoder stores it (IPv4 mapped)."""
    a = ipaddress.ip_address(text)
    v = int(a) | (MAPPED if a.version == 4 else 0)
    return a.version, v >> 64, v & ((1 << 64) - 1)


def batch(*rows: dict, interfaces: InterfaceTable | None = None) -> PacketBatch:
    """One row per dict; keys are decoded columns plus src/dst (address text) and wirelen/ifname."""
    n = len(rows)
    b = PacketBatch.from_frames([b"\0" * 60] * n, wirelen=[r.get("wirelen", 100) for r in rows])
    for name, dt in DECODED_COLUMNS.items():
        setattr(b, name, np.zeros(n, dtype=dt))
    b.decoded = True
    for i, r in enumerate(rows):
        r = dict(r)
        given = r.get("src") or r.get("dst")
        fam = r.get("af") or (ipaddress.ip_address(given).version if given else 4)
        src = r.pop("src", "192.0.2.1" if fam != 6 else "2001:db8::1")
        dst = r.pop("dst", "198.51.100.1" if fam != 6 else "2001:db8::2")
        af_s, b.src_hi[i], b.src_lo[i] = addr(src)
        _, b.dst_hi[i], b.dst_lo[i] = addr(dst)
        b.af[i] = r.pop("af", af_s)
        b.proto[i] = r.pop("proto", 6)
        b.l4_off[i] = r.pop("l4_off", 34)
        b.ip_len[i] = r.pop("ip_len", 86)
        r.pop("wirelen", None)
        ifname = r.pop("ifname", None)
        if ifname is not None:
            b.iface[i] = interfaces.id(ifname)
        for k, v in r.items():
            getattr(b, k)[i] = v
    return b


def actions(*extra: TermAction) -> Registry:
    reg = Registry("actions")
    for a in extra:
        reg.register(a.name, a)
    return reg


def fw(terms: dict, family: str = "inet", *, plists: dict | None = None, reg=None, interfaces=None, name="F"):
    cfg = {"firewall": {"family": {family: {"filter": {name: {"term": terms}}}}}}
    if plists:
        cfg["policy-options"] = {"prefix-list": plists}
    fs = compile_firewall(cfg, reg or actions(), interfaces or InterfaceTable())
    return fs.get(family, name)


def matches(cond: dict, rows: list[dict], family: str = "inet", **kw) -> list[bool]:
    """Which rows a one-term filter ``from: cond then: accept`` accepts."""
    f = fw({"t": {"from": cond, "then": "accept"}}, family, **kw)
    if family == "inet6":
        rows = [r if ("src" in r or "dst" in r) else {"af": 6, **r} for r in rows]
    return f.evaluate(batch(*rows, interfaces=kw.get("interfaces"))).accept.tolist()


# -- addresses -----------------------------------------------------------------------------

def test_source_address_with_except_is_longest_prefix_match():
    cond = {"source-address": ["10.0.0.0/8", "10.1.0.0/16 except", "10.1.2.0/24"]}
    rows = [{"src": "10.2.3.4"}, {"src": "10.1.9.9"}, {"src": "10.1.2.77"}, {"src": "11.0.0.1"}]
    assert matches(cond, rows) == [True, False, True, False]


def test_destination_address_and_either_address():
    rows = [{"src": "10.0.0.1", "dst": "192.0.2.9"}, {"src": "192.0.2.9", "dst": "10.0.0.1"},
            {"src": "192.0.2.9", "dst": "192.0.2.10"}]
    assert matches({"destination-address": ["10.0.0.0/8"]}, rows) == [False, True, False]
    assert matches({"address": ["10.0.0.0/8"]}, rows) == [True, True, False]


def test_only_except_entries_match_nothing_and_zero_prefix_matches_all_v4():
    rows = [{"src": "10.0.0.1"}, {"src": "8.8.8.8"}]
    assert matches({"source-address": ["10.0.0.0/8 except"]}, rows) == [False, False]
    assert matches({"source-address": ["0.0.0.0/0", "10.0.0.0/8 except"]}, rows) == [False, True]
    assert matches({"source-address": ["0.0.0.0/0"]}, rows) == [True, True]


def test_host_prefixes_v4_32_and_v6_128():
    assert matches({"source-address": ["192.0.2.7/32"]}, [{"src": "192.0.2.7"}, {"src": "192.0.2.6"}]) == [True, False]
    assert matches({"source-address": ["192.0.2.7"]}, [{"src": "192.0.2.7"}, {"src": "192.0.2.8"}]) == [True, False]
    rows6 = [{"src": "2001:db8::7"}, {"src": "2001:db8::6"}, {"src": "2001:db8::1:7"}]
    assert matches({"source-address": ["2001:db8::7/128"]}, rows6, "inet6") == [True, False, False]


def test_v6_prefixes_zero_and_non_64_aligned():
    rows = [{"src": "2001:db8::1"}, {"src": "fe80::1"}, {"src": "2001:db8:0:0:8000::1"}]
    assert matches({"source-address": ["::/0"]}, rows, "inet6") == [True, True, True]
    assert matches({"source-address": ["2001:db8::/65"]}, rows, "inet6") == [True, False, False]
    assert matches({"source-address": ["::/0", "2001:db8::/32 except"]}, rows, "inet6") == [False, True, False]


def test_mapped_address_pitfalls():
    # an IPv6 packet that carries ::ffff:10.0.0.1 is not an IPv4 packet: inet filters never see it
    rows = [{"af": 6, "src": "::ffff:10.0.0.1"}, {"src": "10.0.0.1"}]
    assert matches({"source-address": ["10.0.0.0/8"]}, rows) == [False, True]
    # ...and an inet6 ::/0 does not see IPv4 rows although both live in one 128-bit column
    assert matches({"source-address": ["::/0"]}, rows, "inet6") == [True, False]
    # 0.0.0.0/0 is ::ffff:0:0/96, not ::/96 -- an IPv4 row must match it
    assert matches({"destination-address": ["0.0.0.0/0"]},
                   [{"dst": "0.0.0.0"}, {"dst": "255.255.255.255"}]) == [True, True]


def test_large_prefix_list_uses_search_and_matches_exactly():
    rng = np.random.default_rng(5)
    nets = sorted({ipaddress.ip_network(f"{a}.{b}.{c}.0/24") for a, b, c in rng.integers(1, 223, (200, 3))})
    excepts = [ipaddress.ip_network(f"{n.network_address}/28") for n in nets[:20]]
    cond = {"source-address": [str(n) for n in nets] + [f"{e} except" for e in excepts]}
    probes = [str(n.network_address + 1) for n in nets[:40]] + [str(n.network_address + 200) for n in nets[:40]] \
        + ["1.2.3.4", "222.222.222.222", "9.9.9.9"]
    want = []
    for p in probes:
        ip = ipaddress.ip_address(p)
        inside = any(ip in n for n in nets) and not any(ip in e for e in excepts)
        want.append(inside)
    assert matches(cond, [{"src": p} for p in probes]) == want
    assert sum(want) > 40 and not all(want)


def test_large_v6_list_with_long_prefixes():
    nets = [f"2001:db8:{i:x}::/48" for i in range(10)] + [f"2001:db8:{i:x}::5/128 except" for i in range(10)]
    rows = [{"src": "2001:db8:3::4"}, {"src": "2001:db8:3::5"}, {"src": "2001:db8:20::1"}, {"src": "2001:db8:9:ffff::"}]
    assert matches({"source-address": nets}, rows, "inet6") == [True, False, False, True]


def test_prefix_lists_by_family_and_except():
    plists = {"trusted": ["10.0.0.0/8", "2001:db8::/32"], "lab": ["10.9.0.0/16"], "v6only": ["2001:db8::/32"]}
    rows = [{"src": "10.1.1.1"}, {"src": "10.9.1.1"}, {"src": "172.16.0.1"}]
    assert matches({"source-prefix-list": ["trusted", "lab except"]}, rows, plists=plists) == [True, False, False]
    assert matches({"source-prefix-list": ["v6only"]}, rows, plists=plists) == [False, False, False]
    rows6 = [{"dst": "2001:db8::9"}, {"dst": "2001:db9::9"}]
    assert matches({"destination-prefix-list": ["trusted"]}, rows6, "inet6", plists=plists) == [True, False]
    either = [{"src": "10.0.0.1", "dst": "8.8.8.8"}, {"src": "8.8.8.8", "dst": "10.0.0.1"},
              {"src": "8.8.8.8", "dst": "8.8.4.4"}]
    assert matches({"prefix-list": ["trusted"]}, either, plists=plists) == [True, True, False]


# -- protocol, ports, dscp, ... --------------------------------------------------------------

def test_protocol_names_numbers_and_except():
    rows = [{"proto": 6}, {"proto": 17}, {"proto": 47}, {"proto": 1}]
    assert matches({"protocol": ["tcp", "udp", 47]}, rows) == [True, True, True, False]
    assert matches({"protocol-except": ["tcp", "gre"]}, rows) == [False, True, False, True]
    assert matches({"protocol": ["1-6"]}, rows) == [True, False, False, True]


def test_inet6_next_header_and_payload_protocol_synonyms():
    rows = [{"proto": 58}, {"proto": 6}]
    for key in ("protocol", "next-header", "payload-protocol"):
        assert matches({key: ["icmp6"]}, rows, "inet6") == [True, False]
    assert matches({"next-header-except": ["icmp6"]}, rows, "inet6") == [False, True]


def test_ports_names_numbers_ranges():
    rows = [{"dport": 80}, {"dport": 443}, {"dport": 8080}, {"dport": 22}, {"dport": 1023}]
    assert matches({"destination-port": ["http", 443, "1024-65535"]}, rows) == [True, True, True, False, False]
    assert matches({"destination-port-except": ["ssh"]}, rows) == [True, True, True, False, True]
    assert matches({"source-port": ["dns"]}, [{"sport": 53}, {"sport": 54}]) == [True, False]
    assert matches({"source-port-except": ["dns"]}, [{"sport": 53}, {"sport": 54}]) == [False, True]


def test_port_matches_either_and_needs_a_port_protocol():
    rows = [{"sport": 179, "dport": 5000}, {"sport": 5000, "dport": 179}, {"sport": 1, "dport": 2},
            {"proto": 1, "sport": 179, "dport": 179},  # ICMP: no ports even if the columns say so
            {"proto": 17, "sport": 179}, {"proto": 132, "dport": 179},
            {"sport": 179, "frag": 2, "l4_off": -1}]  # later fragment: no transport header
    assert matches({"port": ["bgp"]}, rows) == [True, True, False, False, True, True, False]
    assert matches({"port-except": ["bgp"]}, rows) == [False, False, True, True, False, False, True]


def test_dscp_names_and_numbers():
    rows = [{"tos": 46 << 2}, {"tos": (10 << 2) | 1}, {"tos": 0}, {"tos": 48 << 2}]
    assert matches({"dscp": ["ef", "af11"]}, rows) == [True, True, False, False]
    assert matches({"dscp": [0, "cs6"]}, rows) == [False, False, True, True]
    assert matches({"dscp-except": ["be"]}, rows) == [True, True, False, True]
    assert matches({"traffic-class": ["ef"]}, [{"tos": 46 << 2}, {"tos": 0}], "inet6") == [True, False]


def test_precedence_ttl_hop_limit_fragment_offset():
    assert matches({"precedence": ["net-control"]}, [{"tos": 0xE0}, {"tos": 0xC0}]) == [True, False]
    assert matches({"ttl": ["0-1"]}, [{"ttl": 1}, {"ttl": 64}]) == [True, False]
    assert matches({"ttl-except": [64]}, [{"ttl": 1}, {"ttl": 64}]) == [True, False]
    assert matches({"hop-limit": [255]}, [{"ttl": 255}, {"ttl": 64}], "inet6") == [True, False]
    assert matches({"fragment-offset": ["1-8191"]}, [{"frag_off": 185, "frag": 2}, {"frag_off": 0}]) == [True, False]


@pytest.mark.parametrize("expr,flags,want", [
    ("syn", [0x02, 0x12, 0x10], [True, True, False]),
    ("syn & !ack", [0x02, 0x12, 0x10], [True, False, False]),
    ("tcp-initial", [0x02, 0x12, 0x10], [True, False, False]),
    ("tcp-established", [0x02, 0x12, 0x10, 0x04], [False, True, True, True]),
    ("!syn", [0x02, 0x10, 0x00], [False, True, True]),
    # & binds tighter than |: fin | (syn & ack)
    ("fin | syn & ack", [0x01, 0x02, 0x12, 0x10], [True, False, True, False]),
    ("(fin | syn) & ack", [0x01, 0x02, 0x12, 0x11], [False, False, True, True]),
    ("!(syn | fin)", [0x01, 0x02, 0x10], [False, False, True]),
    ("!!rst", [0x04, 0x00], [True, False]),
    ("0x12", [0x12, 0x02, 0x13], [True, False, True]),
    ("syn + ack", [0x12, 0x02], [True, False]),
    ("urgent | push", [0x20, 0x08, 0x01], [True, True, False]),
])
def test_tcp_flags_expressions(expr, flags, want):
    table = tcp_flags_table(expr)
    assert [bool(table[f]) for f in flags] == want
    rows = [{"tcp_flags": f} for f in flags]
    assert matches({"tcp-flags": expr}, rows) == want


def test_tcp_flags_only_match_tcp_and_keyword_conditions():
    rows = [{"tcp_flags": 0x02}, {"proto": 17, "tcp_flags": 0x02}, {"tcp_flags": 0x12}]
    assert matches({"tcp-flags": "syn"}, rows) == [True, False, True]
    assert matches({"tcp-initial": True}, rows) == [True, False, False]
    assert matches({"tcp-established": None}, rows) == [False, False, True]


def test_icmp_type_and_code_names_per_family():
    rows = [{"proto": 1, "icmp_type": 8}, {"proto": 1, "icmp_type": 0}, {"proto": 6, "icmp_type": 8}]
    assert matches({"icmp-type": ["echo-request"]}, rows) == [True, False, False]
    assert matches({"icmp-type-except": ["echo-request"]}, rows) == [False, True, True]
    rows6 = [{"proto": 58, "icmp_type": 128}, {"proto": 58, "icmp_type": 135}, {"proto": 1, "icmp_type": 128}]
    assert matches({"icmp-type": ["echo-request"]}, rows6, "inet6") == [True, False, False]
    assert matches({"icmp-type": ["neighbor-solicit"]}, rows6, "inet6") == [False, True, False]
    codes = [{"proto": 1, "icmp_type": 3, "icmp_code": 3}, {"proto": 1, "icmp_type": 3, "icmp_code": 1}]
    assert matches({"icmp-code": ["port-unreachable"]}, codes) == [True, False]
    assert matches({"icmp-code-except": ["port-unreachable"]}, codes) == [False, True]


def test_packet_length_and_except():
    rows = [{"ip_len": 40}, {"ip_len": 100}, {"ip_len": 1500}, {"ip_len": 70000}]
    assert matches({"packet-length": ["0-100"]}, rows) == [True, True, False, False]
    assert matches({"packet-length": [1500, 65535]}, rows) == [False, False, True, True]
    assert matches({"packet-length-except": ["0-100"]}, rows) == [False, False, True, True]


def test_fragments():
    rows = [{"frag": 0}, {"frag": 1}, {"frag": 2, "l4_off": -1}]
    assert matches({"is-fragment": True}, rows) == [False, False, True]
    assert matches({"first-fragment": True}, rows) == [False, True, False]


def test_interface_names_and_wildcards_including_late_interfaces():
    it = InterfaceTable()
    it.id("eth1")
    f = fw({"t": {"from": {"interface": ["eth1", "ge-*"]}, "then": "accept"}}, interfaces=it)
    rows = [{"ifname": "eth1"}, {"ifname": "eth2"}, {"ifname": "ge-0/0/1.0"}, {"ifname": "xe-0/0/0"}]
    assert f.evaluate(batch(*rows, interfaces=it)).accept.tolist() == [True, False, True, False]


def test_conditions_and_and_values_or():
    cond = {"protocol": ["tcp"], "destination-port": [80, 443], "source-address": ["10.0.0.0/8"]}
    rows = [{"src": "10.0.0.1", "dport": 443}, {"src": "10.0.0.1", "dport": 22},
            {"src": "11.0.0.1", "dport": 80}, {"src": "10.0.0.1", "dport": 80, "proto": 17}]
    assert matches(cond, rows) == [True, False, False, False]


def test_decode_errors_never_match_ip_conditions():
    rows = [{"status": 0, "dport": 80}, {"status": 6, "dport": 80}]
    assert matches({"destination-port": [80]}, rows) == [True, False]
    assert matches({"destination-port-except": [22]}, rows) == [True, False]
    f = fw({"t": {"then": "accept"}})
    assert f.evaluate(batch(*rows)).accept.tolist() == [True, True]  # no IP condition: both


# -- families ------------------------------------------------------------------------------

def test_family_scoping():
    it = InterfaceTable()
    rows = [{"af": 4}, {"af": 6}, {"af": 0, "status": 1, "ifname": "eth0"}]
    b = batch(*rows, interfaces=it)
    for family, want in (("inet", [True, False, False]), ("inet6", [False, True, False]), ("any", [True, True, True])):
        r = fw({"t": {"then": "discard"}}, family, interfaces=it).evaluate(b)
        assert r.discard.tolist() == want
        assert not r.accept.any()
    f = fw({"t": {"from": {"interface": ["eth0"]}, "then": "accept"}}, "any", interfaces=it)
    r = f.evaluate(b)
    assert r.accept.tolist() == [False, False, True]
    assert r.implicit_discard.tolist() == [True, True, False]
    # packet-length in family any: IP rows only
    f = fw({"t": {"from": {"packet-length": ["0-65535"]}, "then": "accept"}}, "any", interfaces=it)
    assert f.evaluate(b).accept.tolist() == [True, True, False]


def test_rows_restricts_decisions_and_counters():
    f = fw({"t": {"then": "accept"}})
    b = batch({}, {}, {}, {})
    r = f.evaluate(b, rows=np.array([True, False, True, False]))
    assert r.accept.tolist() == [True, False, True, False]
    r = f.evaluate(b, rows=np.array([3]))
    assert r.accept.tolist() == [False, False, False, True]
    assert f.counters()["terms"]["t"]["packets"] == 3


# -- actions -------------------------------------------------------------------------------

def test_first_matching_terminating_term_wins_and_implicit_discard():
    f = fw({
        "a": {"from": {"destination-port": [80]}, "then": "accept"},
        "b": {"from": {"protocol": ["tcp"]}, "then": {"discard": True}},
        "c": {"from": {"protocol": ["udp"]}, "then": {"reject": "port-unreachable"}},
    })
    r = f.evaluate(batch({"dport": 80}, {"dport": 22}, {"proto": 17}, {"proto": 1}))
    assert r.accept.tolist() == [True, False, False, False]
    assert r.discard.tolist() == [False, True, False, True]
    assert r.reject.tolist() == [False, False, True, False]
    assert r.implicit_discard.tolist() == [False, False, False, True]
    c = f.counters()
    assert [c["terms"][t]["packets"] for t in "abc"] == [1, 1, 1]
    assert c["implicit_discard"] == {"packets": 1, "bytes": 100}
    assert c["packets"] == {"accepted": 1, "discarded": 2, "rejected": 1}


def test_term_without_terminating_action_accepts_and_next_term_continues():
    reg = actions(TermAction("sample"))
    f = fw({
        "s": {"from": {"protocol": ["tcp"]}, "then": {"count": "tcp", "sample": True, "next": "term"}},
        "m": {"from": {"destination-port": [80]}, "then": ["count web"]},  # no terminating action: accept
        "d": {"then": "discard"},
    }, reg=reg)
    r = f.evaluate(batch({"dport": 80}, {"dport": 22}, {"proto": 17, "dport": 80}, {"proto": 17, "dport": 53}))
    assert r.accept.tolist() == [True, False, True, False]
    assert r.discard.tolist() == [False, True, False, True]
    assert len(r.selections) == 1
    term, action, arg, mask = r.selections[0]
    assert (term, action, arg, mask.tolist()) == ("s", "sample", None, [True, True, False, False])
    c = f.counters()
    assert c["counters"] == {"tcp": {"packets": 2, "bytes": 200}, "web": {"packets": 2, "bytes": 200}}
    assert c["terms"]["d"]["packets"] == 2


def test_plugin_actions_with_arguments_and_terminating_plugin_action():
    reg = actions(TermAction("port-mirror-instance", arg="required"), TermAction("blackhole", terminating=True))
    f = fw({
        "pm": {"from": {"protocol": ["udp"]}, "then": {"port-mirror-instance": "pm1", "next": "term"}},
        "bh": {"from": {"destination-port": [9]}, "then": "blackhole"},
        "ok": {"then": "accept"},
    }, reg=reg)
    r = f.evaluate(batch({"proto": 17, "dport": 9}, {"proto": 17, "dport": 53}, {"dport": 80}))
    sels = [(t, a, arg, m.tolist()) for t, a, arg, m in r.selections]
    assert sels == [("pm", "port-mirror-instance", "pm1", [True, True, False]),
                    ("bh", "blackhole", None, [True, False, False])]
    assert r.accept.tolist() == [False, True, True]
    assert not r.discard.any() and not r.reject.any()


def test_empty_selections_are_left_out():
    f = fw({"s": {"from": {"protocol": ["gre"]}, "then": {"sample": True}}}, reg=actions(TermAction("sample")))
    assert f.evaluate(batch({}, {})).selections == []


def test_then_shapes_string_list_mapping():
    for then in ("count c1", ["count c1", "discard"], [{"count": "c1"}, "discard"], {"count": "c1", "discard": True}):
        f = fw({"t": {"then": then}})
        r = f.evaluate(batch({}))
        assert f.counters()["counters"]["c1"]["packets"] == 1
        assert r.discard.tolist() == ([True] if then != "count c1" else [False])


def test_filter_without_terms_discards_everything():
    cfg = {"firewall": {"family": {"inet": {"filter": {"E": None}}}}}
    f = compile_firewall(cfg, actions(), InterfaceTable()).get("inet", "E")
    assert f.evaluate(batch({}, {})).discard.tolist() == [True, True]


def test_compile_raises_config_error_with_every_issue():
    cfg = {"firewall": {"family": {"inet": {"filter": {"F": {"term": {
        "t": {"from": {"protocol": ["tpc"], "destination-port": ["htp"]}, "then": "acept"}}}}}}}}
    with pytest.raises(ConfigError) as ei:
        compile_firewall(cfg, actions(), InterfaceTable())
    assert len(ei.value.lines) == 3
    assert "did you mean 'tcp'" in ei.value.lines[0]


# -- counters and show -----------------------------------------------------------------------

def _counted_filter_set():
    cfg = {"firewall": {"family": {
        "inet": {"filter": {"F1": {"term": {
            "t1": {"from": {"protocol": ["tcp"]}, "then": {"count": "c1", "accept": True}},
            "t2": {"from": {"protocol": ["udp"]}, "then": {"count": "c1", "accept": True}},
            "t3": {"from": {"protocol": ["gre"]}, "then": "discard"}}}}},
        "inet6": {"filter": {"F1": {"term": {"all": {"then": "accept"}}}, "G": None}},
    }}}
    return cfg, compile_firewall(cfg, actions(), InterfaceTable())


def test_counters_and_show_firewall_text():
    _, fs = _counted_filter_set()
    f = fs.get("inet", "F1")
    b = batch({"wirelen": 1000}, {"proto": 17, "wirelen": 234}, {"proto": 1, "wirelen": 60})
    f.evaluate(b)
    f.evaluate(b)
    data = fs.show_firewall("F1")
    assert [d["family"] for d in data["filters"]] == ["inet", "inet6"]
    inet = data["filters"][0]
    assert inet["counters"] == {"c1": {"packets": 4, "bytes": 2468}}
    assert inet["terms"]["t1"] == {"packets": 2, "bytes": 2000}
    assert inet["implicit_discard"] == {"packets": 2, "bytes": 120}
    text = format_show_firewall({"filters": [inet]})
    assert text == (
        "Filter: F1\n"
        "Counters:\n"
        "Name                                                Bytes              Packets\n"
        "c1                                                   2468                    4\n"
        "Terms:\n"
        "Name                                                Bytes              Packets\n"
        "t1                                                   2000                    2\n"
        "t2                                                    468                    2\n"
        "t3                                                      0                    0\n"
        "(implicit discard)                                    120                    2\n"
    )
    both = format_show_firewall(data)
    assert "Filter: F1 (family inet)" in both and "Filter: F1 (family inet6)" in both
    assert "Counters:" not in both.split("Filter: F1 (family inet6)")[1]  # inet6 F1 has no named counters
    assert fs.show_firewall("nope") == {"filters": []}
    assert len(fs.show_firewall()["filters"]) == 3


def test_clear_and_adopt_counters_on_reload():
    cfg, fs = _counted_filter_set()
    b = batch({}, {"proto": 17})
    fs.get("inet", "F1").evaluate(b)
    fs.get("inet6", "F1").evaluate(batch({"af": 6}))
    # reload: inet F1 unchanged, inet6 F1 changed -> only inet keeps its counters
    import copy
    cfg2 = copy.deepcopy(cfg)
    cfg2["firewall"]["family"]["inet6"]["filter"]["F1"]["term"]["all"]["then"] = "discard"
    fs2 = compile_firewall(cfg2, actions(), InterfaceTable())
    assert fs2.adopt_counters(fs) == [("inet", "F1"), ("inet6", "G")]
    assert fs2.get("inet", "F1").counters()["counters"]["c1"]["packets"] == 2
    assert fs2.get("inet6", "F1").counters()["terms"]["all"]["packets"] == 0
    fs2.clear("F1")
    assert fs2.get("inet", "F1").counters()["counters"]["c1"]["packets"] == 0


def test_counter_and_term_counts_agree_over_many_batches():
    f = fw({"t": {"from": {"destination-port": ["1-1023"]}, "then": {"count": "low", "accept": True}}})
    rng = np.random.default_rng(1)
    total = 0
    for _ in range(5):
        ports = rng.integers(0, 3000, 64)
        total += int(((ports >= 1) & (ports <= 1023)).sum())
        f.evaluate(batch(*[{"dport": int(p)} for p in ports]))
    c = f.counters()
    assert c["counters"]["low"]["packets"] == c["terms"]["t"]["packets"] == total
    assert c["implicit_discard"]["packets"] == 5 * 64 - total

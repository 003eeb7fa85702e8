"""flowplane.api.probe_filters: made-up frames through the config's compiled filters at config time."""

from __future__ import annotations

from flowplane.api import probe_filters

from frames import eth_ipv4_tcp, eth_ipv4_udp

CONFIG = {
    "firewall": {"family": {"inet": {"filter": {
        "F": {"term": {
            "dns": {"from": {"protocol": ["udp"], "destination-port": [53]}, "then": {"count": "c", "accept": True}},
            "export": {"from": {"protocol": ["udp"]}, "then": {"watch-me": "w1", "other-plugin": True, "accept": True}},
            "rest": {"then": {"accept": True}}}},
        "G": {"term": {"all": {"then": {"other-plugin": True}}}},
    }}}},
}


def test_only_filters_using_the_asked_actions_are_compiled():
    probes = probe_filters(CONFIG, ["watch-me"])
    assert set(probes) == {("inet", "F")}


def test_hits_name_the_term_action_and_argument_in_term_order():
    probe = probe_filters(CONFIG, ["watch-me"])[("inet", "F")]
    hits = probe.hits(eth_ipv4_udp(dport=4739), interface="eth0", direction="output")
    assert [(h.term, h.action, h.arg) for h in hits] == [("export", "watch-me", "w1"), ("export", "other-plugin", None)]


def test_a_frame_an_earlier_term_accepts_or_no_term_matches_has_no_hit():
    probe = probe_filters(CONFIG, ["watch-me"])[("inet", "F")]
    assert probe.hits(eth_ipv4_udp(dport=53), interface="eth0", direction="input") == []
    assert probe.hits(eth_ipv4_tcp(dport=80), interface="eth0", direction="input") == []


def test_a_filter_the_core_rejects_is_left_out_without_raising():
    broken = {"firewall": {"family": {"inet": {"filter": {
        "F": {"term": {"t": {"from": {"protocol": ["nope"]}, "then": {"watch-me": True}}}},
        "H": {"term": {"t": {"then": {"watch-me": True}}}}}}}}}
    assert set(probe_filters(broken, ["watch-me"])) == {("inet", "H")}

"""validate_firewall: every problem at once, exact key paths, messages that say what was expected."""

from flowplane.actions import TermAction
from flowplane.firewall import validate_firewall
from flowplane.registry import Registry

F = ("firewall", "family", "inet", "filter", "F1", "term")


def reg(*extra: TermAction) -> Registry:
    r = Registry("actions")
    for a in extra:
        r.register(a.name, a)
    return r


def cfg(terms: dict, family: str = "inet", plists: dict | None = None) -> dict:
    c = {"firewall": {"family": {family: {"filter": {"F1": {"term": terms}}}}}}
    if plists is not None:
        c["policy-options"] = {"prefix-list": plists}
    return c


def issues(config, actions=None) -> dict:
    out = {}
    for i in validate_firewall(config, actions or reg()):
        out.setdefault(i.path, []).append(i.message)
    return out


def test_valid_config_from_the_brief_has_no_issues():
    c = {
        "policy-options": {"prefix-list": {"trusted": ["10.0.0.0/8", "2001:db8::/32"]}},
        "firewall": {"family": {"inet": {"filter": {"F1": {"term": {
            "t1": {"from": {
                "source-address": ["10.0.0.0/8", "10.1.0.0/16 except"],
                "destination-prefix-list": ["trusted"],
                "protocol": ["tcp", "udp", 47],
                "destination-port": [80, "https", "1024-65535"],
                "dscp": ["ef", "af11", 0],
                "tcp-flags": "syn & !ack",
                "icmp-type": ["echo-request"],
                "packet-length": ["0-100"],
                "interface": ["eth1", "ge-*"]},
                "then": {"count": "c1", "sample": True, "accept": True}},
            "t2": {"then": "discard"}}}}}}},
    }
    assert validate_firewall(c, reg(TermAction("sample"))) == []
    assert validate_firewall({}, reg()) == []


def test_many_errors_collected_with_exact_paths_and_expectations():
    c = cfg({
        "t1": {"from": {"destination-port": ["htp", 80, "90-80"], "protocol": ["tpc"],
                        "dscp": ["ef", "af99"], "source-address": ["10.0.0.0/33"],
                        "tcp-flags": "syn & !akc", "destinaton-port": [80]},
               "then": {"count": "c1", "acept": True}},
        "t2": {"from": {"icmp-type": ["echo-reqest"], "packet-length": [70000]}, "then": "discard"},
    })
    got = issues(c)
    p = F + ("t1", "from")
    assert got[p + ("destination-port",)] == [
        "expected a port number 0-65535, a service name like 'http', or a range 'a-b'; got 'htp'; did you mean 'http'?",
        "expected a port number 0-65535, a service name like 'http', or a range 'a-b'; got '90-80' "
        "(a range needs a <= b <= 65535)",
    ]
    assert got[p + ("protocol",)] == [
        "expected a protocol number 0-255, a name like 'tcp', or a range 'a-b'; got 'tpc'; did you mean 'tcp'?"]
    assert "got 'af99'" in got[p + ("dscp",)][0] and "'ef', 'af11'" in got[p + ("dscp",)][0]
    assert got[p + ("source-address",)] == ["expected an IPv4 prefix like '10.0.0.0/8' (optionally followed by ' "
                                            "except'); got '10.0.0.0/33'"]
    assert "unknown flag 'akc'; did you mean 'ack'?" in got[p + ("tcp-flags",)][0]
    assert got[p + ("destinaton-port",)] == ["unknown match condition 'destinaton-port'; did you mean "
                                             "'destination-port'?"]
    assert got[F + ("t1", "then", "acept")] == ["unknown action 'acept'; did you mean 'accept'?"]
    p2 = F + ("t2", "from")
    assert "did you mean 'echo-request'?" in got[p2 + ("icmp-type",)][0]
    assert "out of range 0-65535" in got[p2 + ("packet-length",)][0]
    assert len(validate_firewall(c, reg())) == 10


def test_family_rules():
    got = issues({"firewall": {"family": {
        "inet": {"filter": {"F": {"term": {"t": {"from": {
            "next-header": ["tcp"], "source-address": ["2001:db8::/32"], "hop-limit": [1]}}}}}},
        "inet6": {"filter": {"F": {"term": {"t": {"from": {
            "source-address": ["10.0.0.0/8"], "icmp-type": ["neighbor-solicit"], "ttl": [1]}}}}}},
        "any": {"filter": {"F": {"term": {"t": {"from": {"protocol": ["tcp"], "interface": ["eth0"]}}}}}},
        "mpls": {"filter": {}},
        "inte": {"filter": {}},
    }}})
    inet = ("firewall", "family", "inet", "filter", "F", "term", "t", "from")
    inet6 = ("firewall", "family", "inet6", "filter", "F", "term", "t", "from")
    anyf = ("firewall", "family", "any", "filter", "F", "term", "t", "from")
    assert got[inet + ("next-header",)] == ["match condition 'next-header' is not valid in family inet (only in "
                                            "inet6); use 'protocol'"]
    assert "(an IPv6 prefix in family inet)" in got[inet + ("source-address",)][0]
    assert "use 'ttl'" in got[inet + ("hop-limit",)][0]
    assert "(an IPv4 prefix in family inet6)" in got[inet6 + ("source-address",)][0]
    assert inet6 + ("icmp-type",) not in got  # ICMPv6 names are valid in inet6
    assert "use 'hop-limit'" in got[inet6 + ("ttl",)][0]
    assert got[anyf + ("protocol",)][0].startswith("match condition 'protocol' is not supported in family any")
    assert "interface" in got[anyf + ("protocol",)][0]
    assert anyf + ("interface",) not in got
    assert got[("firewall", "family", "mpls")] == ["family 'mpls' is not supported; expected inet, inet6 or any"]
    assert got[("firewall", "family", "inte")] == ["unknown family 'inte'; expected inet, inet6 or any; did you mean "
                                                   "'inet'?"]


def test_prefix_list_references():
    c = cfg({"t": {"from": {"source-prefix-list": ["trusted", "trustd", "bad"], "prefix-list": ["nope except"]}}},
            plists={"trusted": ["10.0.0.0/8"], "bad": ["10.0.0.0/8", "300.1.1.1/8", "10.0.0.0/8 except"]})
    got = issues(c)
    p = F + ("t", "from")
    assert got[p + ("source-prefix-list",)] == [
        "prefix-list 'trustd' is not defined under policy-options prefix-list; did you mean 'trusted'?"]
    assert got[p + ("prefix-list",)] == [
        "prefix-list 'nope' is not defined under policy-options prefix-list; defined: bad, trusted"]
    bad = got[("policy-options", "prefix-list", "bad")]
    assert len(bad) == 2 and "got '300.1.1.1/8'" in bad[0] and "cannot say 'except'" in bad[1]


def test_actions_arguments_and_conflicts():
    def check(arg, config):
        return None if arg in config.get("instances", []) else f"instance {arg!r} is not defined"

    r = reg(TermAction("sample"), TermAction("mirror", arg="required", validate=check),
            TermAction("boom", validate=lambda a, c: 1 / 0))
    c = cfg({
        "a": {"then": {"accept": True, "discard": True}},
        "b": {"then": {"next": "term", "reject": True}},
        "c": {"then": {"count": True, "next": "filter"}},
        "d": {"then": {"sample": "x", "mirror": "m9"}},
        "e": {"then": {"mirror": None, "reject": "tcp-rest"}},
        "f": {"then": ["count c1", {"count": "c2"}, 5]},
        "g": {"then": "boom"},
        "ok": {"then": {"mirror": "m1", "next": "term"}},
    })
    c["instances"] = ["m1"]
    got = issues(c, r)
    assert got[F + ("a", "then")] == ["term 'a' has conflicting terminating actions: accept, discard; expected at "
                                      "most one"]
    assert got[F + ("b", "then")] == ["term 'b' combines 'next term' with the terminating action 'reject'; expected "
                                      "one or the other"]
    assert got[F + ("c", "then", "count")] == ["action 'count' needs a counter name, e.g. 'count: x1'"]
    assert got[F + ("c", "then", "next")] == ["expected 'next: term' (the only 'next' flowplane filters know); got "
                                              "'filter'"]
    assert got[F + ("d", "then",
                    "sample")] == ["action 'sample' takes no argument; expected true (or nothing); got 'x'"]
    assert got[F + ("d", "then", "mirror")] == ["instance 'm9' is not defined"]
    assert got[F + ("e", "then", "mirror")] == ["action 'mirror' needs an argument, e.g. 'mirror: x1'"]
    assert "did you mean 'tcp-reset'?" in got[F + ("e", "then", "reject")][0]
    assert got[F + ("f", "then", "count")] == ["action 'count' appears twice in term 'f'"]
    assert "item 2 is 5" in got[F + ("f", "then")][0]
    assert "ZeroDivisionError" in got[F + ("g", "then", "boom")][0]
    assert not any(p[:6] == F + ("ok",) for p in got)


def test_structure_errors():
    got = issues({"firewall": {"family": {"inet": {"filter": {
        "A": {"term": ["t1"]},
        "B": {"terms": {}},
        "C": {"term": {"t": {"from": ["protocol"], "than": "accept"}}},
        "D": {"term": {"t": {"from": {"tcp-initial": "yes", "protocol": []}, "then": 7}}},
    }}}, "policer": {}, "famly": {}}})
    base = ("firewall", "family", "inet", "filter")
    assert "expected a mapping of term names to terms" in got[base + ("A", "term")][0]
    assert got[base + ("B", "terms")] == ["unknown key 'terms' in filter 'B'; expected 'term'; did you mean 'term'?"]
    assert "expected a mapping of match conditions; got a list" in got[base + ("C", "term", "t", "from")][0]
    assert "did you mean 'then'?" in got[base + ("C", "term", "t", "than")][0]
    assert got[base + ("D", "term", "t", "from", "tcp-initial")] == ["'tcp-initial' takes no value; expected true (or "
                                                                     "nothing); got 'yes'"]
    assert got[base + ("D", "term", "t", "from", "protocol")] == ["'protocol' needs at least one value"]
    assert "got 7" in got[base + ("D", "term", "t", "then")][0]
    assert "not supported" in got[("firewall", "policer")][0]
    assert "did you mean 'family'?" in got[("firewall", "famly")][0]
    assert validate_firewall({"firewall": "x"}, reg())[0].path == ("firewall",)


def test_bool_is_not_a_number():
    got = issues(cfg({"t": {"from": {"destination-port": [True]}}}))
    assert got[F + ("t", "from", "destination-port")] == [
        "expected a port number 0-65535, a service name like 'http', or a range 'a-b'; got True"]

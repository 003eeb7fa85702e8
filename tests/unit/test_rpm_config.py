"""services rpm probe / probe-server / probe-limit: every key validated, errors with file:line:col and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowplane.cli import main
from flowplane.plugins.rpm.config import parse

ROOT = Path(__file__).resolve().parents[2]


def rpm(**sections):
    return {"services": {"rpm": sections}}


def one_test(**keys):
    return rpm(probe={"o1": {"test": {"t1": keys}}})


def problems(data):
    cfg, issues = parse(data)
    return cfg, [(" ".join(str(p) for p in i.path), i.message) for i in issues]


def test_full_test_parses():
    cfg, issues = problems(one_test(**{"probe-type": "udp-ping", "target": {"address": "127.0.0.1"},
                                   "probe-count": 15, "probe-interval": 0.5, "test-interval": 0,
                                   "probe-timeout": 2, "destination-port": 50000, "source-address": "127.0.0.1",
                                   "data-size": 100, "data-fill": "a5b6", "dscp-code-points": "af41", "ttl": 9,
                                   "history-size": 10, "moving-average-size": 5, "routing-instance": "blue",
                                   "thresholds": {"rtt": 100, "egress-time": 5, "successive-loss": 0},
                                   "traps": ["probe-failure", "rtt-exceeded"]}))
    assert issues == []
    (t,) = cfg.tests
    assert (t.owner, t.name, t.probe_type, t.address, t.port) == ("o1", "t1", "udp-ping", "127.0.0.1", 50000)
    assert t.dscp == 34 and t.ttl == 9 and t.data_fill == b"\xa5\xb6" and t.routing_instance == "blue"
    assert t.payload() == b"\xa5\xb6" * 50 and len(t.payload(200)) == 200
    assert t.thresholds.get("rtt") == 100 and t.thresholds.get("total-loss") == 1  # Junos default
    assert t.thresholds.get("successive-loss") is None  # 0 = off
    assert t.traps == ("probe-failure", "rtt-exceeded") and cfg.probe_limit == 100


def test_defaults_and_http():
    cfg, issues = problems(one_test(**{"probe-type": "http-get", "target": {"url": "http://[::1]:8080/x?y=1"}}))
    assert issues == []
    t = cfg.tests[0]
    assert t.url == "http://[::1]:8080/x?y=1" and t.port == 8080 and t.probe_count == 1
    assert (t.probe_interval, t.test_interval, t.probe_timeout, t.history_size) == (3.0, 1.0, 3.0, 50)


@pytest.mark.parametrize("keys, where, message", [
    ({"probe-type": "icmp-pong", "target": {"address": "127.0.0.1"}}, "probe-type", "did you mean 'icmp-ping'"),
    ({"target": {"address": "::1"}}, "target address", "needs an IPv4 target"),
    ({"probe-type": "icmp6-ping", "target": {"address": "127.0.0.1"}}, "target address", "needs an IPv6 target"),
    ({}, "", "needs a target {address"),
    ({"probe-type": "http-get", "target": {"address": "127.0.0.1"}}, "target", "needs target url"),
    ({"probe-type": "http-get", "target": {"url": "https://x/"}}, "target url", "https is not supported"),
    ({"target": {"address": "1.2.3.4", "url": "http://x/"}}, "target", "either address or url"),
    ({"target": {"address": "1.2.3.4"}, "probe-count": 16}, "probe-count", "exceeds the maximum 15"),
    ({"target": {"address": "1.2.3.4"}, "probe-count": 0}, "probe-count", "below the minimum 1"),
    ({"target": {"address": "1.2.3.4"}, "probe-interval": 256}, "probe-interval", "exceeds the maximum 255"),
    ({"target": {"address": "1.2.3.4"}, "test-interval": 86401}, "test-interval", "exceeds the maximum 86400"),
    ({"target": {"address": "1.2.3.4"}, "history-size": 256}, "history-size", "exceeds the maximum 255"),
    ({"target": {"address": "1.2.3.4"}, "history-size": 5, "moving-average-size": 5}, "moving-average-size",
     "must be below history-size"),
    ({"target": {"address": "1.2.3.4"}, "destination-port": 50000}, "destination-port", "applies to udp-ping"),
    ({"probe-type": "udp-ping", "target": {"address": "1.2.3.4"}, "destination-port": 8000}, "destination-port",
     "expected 7 or 49160..65535"),
    ({"probe-type": "http-get", "target": {"url": "http://x/"}, "data-size": 10}, "data-size", "not valid for"),
    ({"target": {"address": "1.2.3.4"}, "data-size": 65508}, "data-size", "exceeds the maximum 65507"),
    ({"target": {"address": "1.2.3.4"}, "data-fill": "abc"}, "data-fill", "even number of hex digits"),
    ({"target": {"address": "1.2.3.4"}, "dscp-code-points": "gold"}, "dscp-code-points", "expected 6 bits"),
    ({"target": {"address": "1.2.3.4"}, "source-address": "::1"}, "source-address", "different families"),
    ({"target": {"address": "1.2.3.4"}, "routing-instance": "a b"}, "routing-instance", "network namespace"),
    ({"probe-type": "tcp-ping", "target": {"address": "1.2.3.4"}, "hardware-timestamp": True}, "hardware-timestamp",
     "applies to icmp-ping"),
    ({"probe-type": "udp-ping", "target": {"address": "1.2.3.4"}, "destination-port": 50000,
      "hardware-timestamp": True}, "hardware-timestamp", "needs destination-port 7"),
    ({"target": {"address": "1.2.3.4"}, "thresholds": {"rtt": 60_000_001}}, "thresholds rtt", "maximum 60000000"),
    ({"target": {"address": "1.2.3.4"}, "thresholds": {"total-loss": 16}}, "thresholds total-loss", "maximum 15"),
    ({"target": {"address": "1.2.3.4"}, "thresholds": {"egress-time": 5}}, "thresholds egress-time",
     "one-way times"),
    ({"target": {"address": "1.2.3.4"}, "thresholds": {"rt": 5}}, "thresholds rt", "did you mean 'rtt'"),
    ({"target": {"address": "1.2.3.4"}, "traps": ["rtt-exceded"]}, "traps 0", "did you mean 'rtt-exceeded'"),
    ({"target": {"address": "1.2.3.4"}, "probe-counts": 1}, "probe-counts", "did you mean 'probe-count'"),
])
def test_bad_test_keys(keys, where, message):
    cfg, issues = problems(one_test(**keys))
    assert cfg is None
    assert any(p == f"services rpm probe o1 test t1 {where}".strip() and message in m for p, m in issues), issues


def test_names_servers_and_limit():
    long = "x" * 33
    _, issues = problems(rpm(probe={long: {"test": {"t": {"target": {"address": "1.2.3.4"}}}}}))
    assert any("1..32 characters" in m for _, m in issues)
    _, issues = problems(rpm(**{"probe-limit": 0}))
    assert issues == [("services rpm probe-limit", "0 is below the minimum 1")]
    _, issues = problems(rpm(**{"probe-server": {"udp": {"port": 8000}, "tcp": {}, "icmp": {}}}))
    assert ("services rpm probe-server udp port", "port 8000 is not allowed; expected 7 or 49160..65535") in issues
    assert any(p == "services rpm probe-server tcp" and "needs a port" in m for p, m in issues)
    assert any(p == "services rpm probe-server icmp" for p, _ in issues)
    cfg, issues = problems(rpm(**{"probe-server": {"udp": {"port": 7, "listen-address": "::"}}}))
    assert issues == [] and (cfg.servers[0].protocol, cfg.servers[0].port, cfg.servers[0].address) == ("udp", 7, "::")


def test_twamp_and_probes_share_the_section():
    data = rpm(twamp={"server": {"port": 8620}}, probe={"o": {"test": {"t": {"target": {"address": "1.2.3.4"}}}}})
    cfg, issues = parse(data)
    assert issues == [] and len(cfg.tests) == 1
    assert parse(rpm(twamp={"server": {}}))[0] is None


def test_check_config_names_file_line_and_path(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("services:\n  rpm:\n    probe o1:\n      test t1:\n        target: {address: 1.2.3.4}\n"
                    "        probe-count: 99\n")
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr()
    assert f"{path}:6:9: services rpm probe o1 test t1 probe-count: 99 exceeds the maximum 15" in out.out + out.err


def test_example_file_checks():
    assert main(["check-config", str(ROOT / "etc" / "examples" / "rpm-probes.yaml")]) == 0


@pytest.mark.parametrize("value,dscp", [("nc1", 48), ("NC2", 56), ("ef", 46), ("101110", 46), (63, 63)])
def test_dscp_forms(value, dscp):
    cfg, issues = problems(one_test(**{"target": {"address": "127.0.0.1"}, "dscp-code-points": value}))
    assert issues == [] and cfg.tests[0].dscp == dscp

"""``services rpm twamp client``: defaults (Junos), validation errors with key paths, thresholds, DSCP."""

from __future__ import annotations

from flowplane.api import parse_dscp
from flowplane.plugins.twamp.config import DSCP_ALIASES, parse
from flowplane.plugins.twamp.keepalive import Keepalive
from flowplane.plugins.twamp.wire import MODE_ENCRYPTED


def _cfg(conn):
    return {"services": {"rpm": {"twamp": {"client": {"control-connection": {"c1": conn}}}}}}


def _issues(conn):
    _, issues = parse(_cfg(conn))
    return {" ".join(map(str, i.path[6:])): i.message for i in issues}


def test_defaults_follow_junos():
    cfg, issues = parse(_cfg({"destination-address": "192.0.2.1", "test-session": {"t1": None}}))
    assert issues == []
    (cc,) = cfg.client.connections
    assert (cc.destination_port, cc.test_count, cc.test_interval, cc.history_size, cc.persistent_results) == \
        (862, 0, 1.0, 50, False)
    assert cc.keepalive == Keepalive(120, 5, 6)
    (ts,) = cc.sessions
    assert (ts.target_address, ts.data_size, ts.dscp, ts.probe_count, ts.probe_interval) == ("192.0.2.1", 60, 0, 1, 1.0)


def test_full_connection(tmp_path):
    secret = tmp_path / "s"
    secret.write_bytes(b"testsecret\n")
    cfg, issues = parse(_cfg({
        "destination-address": "2001:db8::1", "destination-port": 8620, "source-address": "2001:db8::2",
        "authentication-mode": "encrypted", "key-id": "alice", "secret-file": str(secret),
        "test-count": 10, "test-interval": 5, "tcp-keepidle": 200, "tcp-keepintvl": 20, "tcp-keepcnt": 21,
        "persistent-results": True, "history-size": 512, "moving-average-size": 16,
        "thresholds": {"rtt": 5000, "loss-percent": 1},
        "test-session": {"voice": {"dscp-code-points": "101110", "probe-count": 100, "probe-interval": 0.02,
                                   "data-size": 1400, "thresholds": {"rtt": 3000, "successive-loss": 3}},
                         "best-effort": {"dscp-code-points": "af41"}}}))
    assert issues == []
    cc = cfg.client.connections[0]
    assert cc.mode == MODE_ENCRYPTED and cc.secret == b"testsecret" and cc.key_id == "alice"
    assert cc.keepalive == Keepalive(200, 20, 21) and cc.history_size == 512 and cc.moving_average_size == 16
    voice, be = cc.sessions
    assert voice.dscp == 46 and be.dscp == 34 and voice.data_size == 1400
    # session thresholds override the connection's, the rest are inherited
    assert dict(voice.thresholds.items()) == {"rtt": 3000, "successive-loss": 3, "loss-percent": 1}
    assert dict(be.thresholds.items()) == {"rtt": 5000, "loss-percent": 1}


def test_errors_name_the_key():
    got = _issues({"destination-adress": "x", "authentication-mode": "encripted", "test-count": -1,
                   "test-interval": 0, "tcp-keepcnt": 51, "history-size": 513, "persistent-results": "yes",
                   "thresholds": {"rtt": -1, "jiter-rtt": 1},
                   "test-session": {"t1": {"data-size": 10, "dscp-code-points": "zz", "probe-count": 0,
                                           "target-adress": "1.2.3.4"}}})
    assert "did you mean 'destination-address'" in got["destination-adress"]
    assert "destination-address" in got[""]
    assert "did you mean 'encrypted'" in got["authentication-mode"]
    assert "below the minimum 0" in got["test-count"]
    assert "below the minimum 0.01" in got["test-interval"]
    assert "exceeds the maximum 50" in got["tcp-keepcnt"]
    assert "exceeds the maximum 512" in got["history-size"]
    assert "true or false" in got["persistent-results"]
    assert "below the minimum 0" in got["thresholds rtt"]
    assert "did you mean 'jitter-rtt'" in got["thresholds jiter-rtt"]
    assert "below the minimum 60" in got["test-session t1 data-size"]
    assert "6 bits" in got["test-session t1 dscp-code-points"]
    assert "below the minimum 1" in got["test-session t1 probe-count"]
    big = _issues({"destination-address": "192.0.2.1", "test-session": {"t": {"probe-count": 1_000_001}}})
    assert "exceeds the maximum 1000000" in big["test-session t probe-count"] and "in memory" in big["test-session t "
                                                                                                     "probe-count"]
    assert "did you mean 'target-address'" in got["test-session t1 target-adress"]


def test_auth_needs_key_and_secret_and_families_match():
    got = _issues({"destination-address": "192.0.2.1", "authentication-mode": "authenticated",
                   "source-address": "2001:db8::1", "test-session": {"t": {"target-address": "2001:db8::9"}}})
    assert "needs a key-id" in got["key-id"]
    assert "needs a secret" in got[""]
    assert "different families" in got["source-address"]
    assert "not of the family" in got["test-session t target-address"]
    assert "at least one test-session" in _issues({"destination-address": "192.0.2.1"})[""]
    got = _issues({"destination-address": "192.0.2.1", "secret-file": "/nonexistent/x", "test-session": {"t": {}}})
    assert "cannot read" in got["secret-file"]


def test_dscp_forms():
    forms = ("000000", "101110", "ef", "AF11", "cs7", "va", "nc1", 63, 64, "x", True)
    assert [parse_dscp(v, DSCP_ALIASES) for v in forms] == [0, 46, 46, 10, 56, 44, None, 63, None, None, None]


def test_control_type():
    cfg, issues = parse(_cfg({"destination-address": "192.0.2.1", "control-type": "light", "test-session": {"t": {}}}))
    assert issues == [] and cfg.client.connections[0].control_type == "light"
    got = _issues({"destination-address": "192.0.2.1", "control-type": "light", "authentication-mode": "encrypted",
                   "key-id": "a", "secret": "s", "test-session": {"t": {}}})
    assert "unauthenticated test packets only" in got["authentication-mode"]
    assert "did you mean 'managed'" in _issues({"destination-address": "192.0.2.1", "control-type": "manged",
                                                "test-session": {"t": {}}})["control-type"]

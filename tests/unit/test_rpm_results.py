"""RPM arithmetic (Junos sample outputs), history and moving-average sizes, thresholds and their events, wire."""

from __future__ import annotations

import struct

from structlog.testing import capture_logs

from flowplane.api import inet_checksum
from flowplane.plugins.rpm import wire
from flowplane.plugins.rpm.config import Thresholds
from flowplane.plugins.rpm.events import ThresholdState
from flowplane.plugins.rpm.probes import Outcome, one_way
from flowplane.plugins.rpm.results import TestResults


def answered(seq, rtt_us, **kw):
    return Outcome(seq, sent=seq * 10**9, received=seq * 10**9 + rtt_us * 1000, status="response",
                   rtt=rtt_us * 1000, **kw)


def lost(seq):
    return Outcome(seq, sent=seq * 10**9, received=seq * 10**9 + 3 * 10**9, status="timeout", reason="timeout")


def run_test(res, outcomes):
    n = res.start_test()
    for o in outcomes:
        res.add_probe(n, o)
    return res.complete_test(1)


def test_junos_sample_figures():
    # EXPN: RTTs 1720/1754/1855 -> stddev 57 (population), average 1776 (1776.33); APSTRA 2323/2414/2427 -> 46
    res = TestResults()
    c = run_test(res, [answered(i, v) for i, v in enumerate((1720, 1754, 1855))]).as_dict()
    rtt = c["measurements"]["rtt"]
    assert rtt == {"samples": 3, "min": 1720, "max": 1855, "avg": 1776, "peak_to_peak": 135, "stddev": 57,
                   "sum": 5329}
    assert c["loss_percentage"] == 0.0 and (c["probes_sent"], c["probes_received"]) == (3, 3)
    c = run_test(TestResults(), [answered(i, v) for i, v in enumerate((2323, 2414, 2427))]).as_dict()
    assert c["measurements"]["rtt"]["stddev"] == 46 and c["measurements"]["rtt"]["avg"] == 2388
    # average rounds half up (4246.5 -> 4247)
    c = run_test(TestResults(), [answered(0, 4246), answered(1, 4247)]).as_dict()
    assert c["measurements"]["rtt"]["avg"] == 4247


def test_jitter_sets_chain_across_tests_and_loss_has_six_decimals():
    res = TestResults()
    run_test(res, [answered(0, 100), answered(1, 130), lost(2)])
    last = run_test(res, [answered(3, 110), answered(4, 110)])
    all_ = res.all.as_dict()
    # signed jitter: +30 (0->1), -20 (1->3, across the test boundary), 0 (3->4, counts as positive)
    assert all_["measurements"]["rtt+"]["samples"] == 2 and all_["measurements"]["rtt+"]["max"] == 30
    assert all_["measurements"]["rtt-"]["samples"] == 1 and all_["measurements"]["rtt-"]["max"] == 20
    assert all_["probes_sent"] == 5 and all_["loss_percentage"] == 20.0
    assert last.as_dict()["measurements"]["rtt-"]["samples"] == 1  # the boundary pair belongs to the later test
    res2 = TestResults()
    c = run_test(res2, [answered(0, 1), lost(1), lost(2)])
    assert c.loss_percent == 66.666667 and c.reasons == {"timeout": 2}
    # RFC 1889 interarrival: J = 0 + (30 - 0)/16 = 1.875 -> 2
    assert [e.interarrival for e in res.history][:2] == [0, 2]


def test_history_and_moving_average_hold_their_sizes():
    res = TestResults(history_size=4, moving_average_size=3)
    run_test(res, [answered(i, 100 + i) for i in range(6)] + [lost(6)])
    assert [e.seq for e in res.history] == [3, 4, 5, 6]
    mov = res.moving_average()
    assert mov.sent == 3 and mov.sets["rtt"].lo == 103 and mov.sets["rtt"].hi == 105  # answered probes only
    res.resize(2, 0)
    assert [e.seq for e in res.history] == [5, 6] and res.moving_average() is None


def test_thresholds_raise_once_and_clear_with_junos_messages():
    res = TestResults()
    st = ThresholdState("own", "t1", "192.0.2.1", Thresholds({"rtt": 500, "successive-loss": 2, "total-loss": 2,
                                                              "jitter-rtt": 100, "std-dev-rtt": 0}),
                        ["rtt-exceeded", "probe-failure", "test-completion"])

    def feed(outcomes):
        n = res.start_test()
        for o in outcomes:
            st.probe_done(res.add_probe(n, o), res.successive_lost, res)
        st.test_done(n, res.complete_test(1))

    with capture_logs() as logs:
        feed([answered(0, 100), answered(1, 600), answered(2, 700), lost(3), lost(4), lost(5)])
        feed([answered(6, 100), answered(7, 120)])
    tags = [e["tag"] for e in logs if "tag" in e and e["event"] != "rpm_trap"]
    assert tags == ["PING_RTT_THRESHOLD_EXCEEDED",  # probe 1 (once, not again at probe 2)
                    "PING_PROBE_FAILED",  # probes 3-4: two in a row, then the count starts again
                    "PING_RTT_JITTER_THRESHOLD_EXCEEDED", "PING_TEST_FAILED", "PING_TEST_COMPLETED",
                    "PING_RTT_THRESHOLD_CLEARED", "PING_PROBE_FAILURE_CLEARED",  # probe 6 answered
                    "PING_RTT_JITTER_THRESHOLD_CLEARED", "PING_TEST_FAILURE_CLEARED", "PING_TEST_COMPLETED"]
    first = logs[0]
    assert first["event"] == "ping_rtt_threshold_exceeded" and first["value"] == 600 and first["threshold"] == 500
    assert first["syslog"] == ("PING_RTT_THRESHOLD_EXCEEDED: pingCtlOwnerIndex = own, pingCtlTestName = t1, "
                               "threshold = 500, value = 600, probe = 1")
    traps = [e for e in logs if e["event"] == "rpm_trap"]
    assert [t["trap"] for t in traps] == ["rtt-exceeded", "probe-failure", "test-completion", "test-completion"]
    assert traps[0]["oid"] == "1.3.6.1.4.1.2636.4.9.0.1"
    assert st.exceeded == set() and st.counts["PING_TEST_COMPLETED"] == 2


def test_rpm_header_round_trip_and_server_stamp():
    t1 = 1_700_000_000_123_456_000
    probe = wire.rpm_probe(7, t1, bytes(100))
    assert len(probe) == 100 and wire.is_rpm(probe)
    h = wire.parse_rpm(probe)
    assert (h.seq, h.t1, h.t2, h.t3) == (7, t1, 0, 0)
    reply = wire.stamp_reply(probe, t1 + 40_000, t1 + 50_000)
    h = wire.parse_rpm(reply)
    assert (h.t2, h.t3) == (t1 + 40_000, t1 + 50_000) and len(reply) == 100
    assert one_way(t1, h, t1 + 100_000) == {"rtt": 90_000, "egress": 40_000, "ingress": 50_000}
    # clocks that disagree: one-way figures are dropped, the RTT stays
    skewed = wire.parse_rpm(wire.stamp_reply(probe, t1 + 5 * 10**9, t1 + 5 * 10**9 + 10_000))
    assert one_way(t1, skewed, t1 + 100_000) == {"rtt": 90_000}
    assert not wire.is_rpm(b"garbage" * 10) and wire.parse_rpm(b"\0" * 39) is None


def test_icmp_build_and_parse():
    pkt = wire.icmp_echo(0x1234, 5, b"abcd")
    assert inet_checksum(pkt) == 0
    m = wire.parse_icmp(pkt, v6=False, has_ip_header=False)
    assert (m.kind, m.ident, m.seq, m.payload) == (8, 0x1234, 5, b"abcd")
    ts = wire.icmp_timestamp(1, 2, 1000)
    assert inet_checksum(ts) == 0 and len(ts) == 20
    # a port unreachable quoting our echo request: matched to the request's identifier and sequence
    inner_ip = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1])
    err = struct.pack("!BBHI", 3, 1, 0, 0) + inner_ip + pkt[:8]
    m = wire.parse_icmp(err, v6=False, has_ip_header=False)
    assert m.error and (m.kind, m.code, m.ident, m.seq) == (3, 1, 0x1234, 5)
    assert wire.parse_icmp(b"\x45" + b"\0" * 5, v6=False, has_ip_header=True) is None


def test_active_servers_table():
    from flowplane.plugins.rpm.commands import format_active_servers

    d = {"servers": [{"protocol": "udp", "port": 50000, "address": "0.0.0.0", "listening": True,
                      "counters": {"rpm-probes": 9, "errors": 0}},
                     {"protocol": "tcp", "port": 50001, "address": "2001:db8::1", "listening": False, "counters": {}}]}
    assert format_active_servers(d) == (
        "Protocol    Port  Address           Listening  Counters\n"
        "UDP        50000  0.0.0.0           yes        rpm-probes 9, errors 0\n"
        "TCP        50001  2001:db8::1       no         -\n")
    assert format_active_servers({"servers": []}) == "No probe servers configured\n"

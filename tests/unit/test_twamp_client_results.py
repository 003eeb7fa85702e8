"""TWAMP client statistics (plugins/twamp/results.py) on hand-built probe timelines with known answers."""

from __future__ import annotations

import math

import pytest

from flowplane.plugins.twamp.results import RESERVOIR, Sample, SessionResults, Stat, stats_of_test, threshold_values

US = 1000  # ns


def probe(seq, t1_us, fwd_us, proc_us, back_us, rseq=None, replies=1, ttl=250):
    t1 = 1_700_000_000_000_000_000 + t1_us * US
    t2 = t1 + fwd_us * US
    t3 = t2 + proc_us * US
    t4 = t3 + back_us * US
    return Sample(seq, t1, t2, t3, t4, seq if rseq is None else rseq, ttl, 60, replies)


def lost(seq, t1_us):
    return Sample(seq, 1_700_000_000_000_000_000 + t1_us * US)


def test_delays_jitter_ipdv_and_rfc3550():
    # egress 100, 110, 90, 100 µs; ingress 50 each; processing 10
    samples = [probe(i, i * 1000, f, 10, 50) for i, f in enumerate((100, 110, 90, 100))]
    d = stats_of_test(samples, 4, synced=True).as_dict()
    m = d["measurements_us"]
    assert (d["sent"], d["received"], d["lost"], d["loss_percent"]) == (4, 4, 0, 0.0)
    assert m["rtt"]["min"] == 140 and m["rtt"]["max"] == 160 and m["rtt"]["avg"] == 150
    assert m["rtt"]["stddev"] == pytest.approx(math.sqrt(50), abs=1e-3) and m["rtt"]["sum"] == 600
    assert m["egress"]["peak_to_peak"] == 20 and m["ingress"]["stddev"] == 0
    assert m["reflector_processing"]["avg"] == 10
    # IPDV (RFC 3393) of egress: +10, -20, +10; jitter = |IPDV|
    assert (m["ipdv_egress"]["min"], m["ipdv_egress"]["max"]) == (-20, 10)
    assert m["jitter_egress"]["samples"] == 3 and m["jitter_egress"]["avg"] == pytest.approx(40 / 3, abs=1e-3)
    assert m["jitter_ingress"]["max"] == 0
    j = 0.0
    for dd in (10, 20, 10):
        j += (dd - j) / 16
    assert d["rfc3550_jitter_us"]["egress"] == pytest.approx(j, abs=1e-3)
    assert d["clock_synchronised"] and d["negative_one_way"] == 0
    assert m["rtt"]["p50"] == 150 and m["rtt"]["percentiles_exact"]


def test_loss_split_by_the_reflector_sequence():
    # probe 1 lost on the way there (the reflector numbered probe 2 as its second packet);
    # probe 3 lost on the way back (the reflector numbered probe 4 as its fourth); probe 5 lost, direction unknown
    samples = [probe(0, 0, 100, 1, 50, rseq=0), lost(1, 1000), probe(2, 2000, 100, 1, 50, rseq=1),
               lost(3, 3000), probe(4, 4000, 100, 1, 50, rseq=3), lost(5, 5000)]
    d = stats_of_test(samples, 6, False).as_dict()
    assert (d["lost"], d["forward_lost"], d["backward_lost"], d["unknown_direction_lost"]) == (3, 1, 1, 1)
    assert d["successive_loss"] == 1
    # IPDV only over consecutive sequence numbers both received: none here
    assert d["measurements_us"]["jitter_rtt"]["samples"] == 0


def test_reordering_does_not_invent_forward_loss():
    # the last probe overtakes the one before it: the reflector numbers them the other way round
    a = probe(0, 0, 100, 1, 50, rseq=0)
    b = probe(1, 1000, 900, 1, 50, rseq=2)  # held back
    c = probe(2, 1100, 100, 1, 50, rseq=1)  # arrives first
    d = stats_of_test([a, b, c], 3, False).as_dict()
    assert d["reordered"] == 1 and d["lost"] == 0
    assert (d["forward_lost"], d["backward_lost"]) == (0, 0)


def test_duplicates_and_all_lost():
    d = stats_of_test([probe(0, 0, 100, 1, 50, replies=3), probe(1, 1000, 100, 1, 50)], 2, False).as_dict()
    assert d["duplicates"] == 2 and d["received"] == 2
    d = stats_of_test([lost(i, i * 1000) for i in range(4)], 4, False).as_dict()
    assert (d["lost"], d["loss_percent"], d["successive_loss"], d["unknown_direction_lost"]) == (4, 100.0, 4, 4)
    assert d["measurements_us"]["rtt"]["samples"] == 0 and d["measurements_us"]["rtt"]["min"] is None


def test_unsynchronised_negative_one_way_is_counted():
    d = stats_of_test([probe(0, 0, -30, 1, 80)], 1, False).as_dict()
    assert d["negative_one_way"] == 1 and d["measurements_us"]["egress"]["min"] == -30
    assert d["measurements_us"]["rtt"]["min"] == 50  # RTT needs no synchronised clocks


def test_stat_reservoir_bounds_memory_and_keeps_exact_moments():
    st = Stat()
    values = list(range(3 * RESERVOIR))
    st.add_many(values)
    s = st.summary()
    assert len(st.sample) == RESERVOIR and not s["percentiles_exact"]
    assert s["samples"] == len(values) and s["min"] == 0 and s["max"] == len(values) - 1
    assert s["avg"] == pytest.approx(sum(values) / len(values))
    assert abs(s["p50"] - len(values) / 2) < len(values) * 0.05  # an estimate, close to the true median


def test_session_results_all_tests_last_test_and_history_ring():
    r = SessionResults(history_size=5)
    r.complete(1, [probe(i, i * 1000, 100, 1, 50) for i in range(3)], 3, False)
    last = r.complete(2, [probe(0, 9000, 200, 1, 50), lost(1, 10000), probe(2, 11000, 200, 1, 50)], 3, False)
    assert last["test"] == 2 and last["lost"] == 1 and r.last_test is last
    a = r.all_tests.as_dict()
    assert (a["tests"], a["sent"], a["received"], a["lost"]) == (2, 6, 5, 1)
    assert a["measurements_us"]["rtt"]["max"] == 250 and a["measurements_us"]["rtt"]["min"] == 150
    assert [(h["test"], h["seq"], h["status"]) for h in r.history] == \
        [(1, 1, "ok"), (1, 2, "ok"), (2, 0, "ok"), (2, 1, "lost"), (2, 2, "ok")]
    assert r.history[0]["hops_forward"] == 5 and r.history[3]["rtt_us"] is None
    tv = threshold_values(last)
    assert tv["rtt"] == 250 and tv["total-loss"] == 1 and tv["loss-percent"] == pytest.approx(33.333)
    assert tv["successive-loss"] == 1 and tv["jitter-rtt"] is None  # no consecutive pair received


def test_history_size_zero_keeps_nothing():
    r = SessionResults(history_size=0)
    r.complete(1, [probe(0, 0, 1, 1, 1)], 1, False)
    assert list(r.history) == [] and r.all_tests.tests == 1


def test_moving_average_over_the_last_replied_probes():
    r = SessionResults(history_size=2, moving_average_size=3)
    r.complete(1, [probe(0, 0, 100, 1, 50), probe(1, 1000, 200, 1, 50)], 2, False)
    r.complete(2, [probe(0, 5000, 300, 1, 50), lost(1, 6000), probe(2, 7000, 400, 1, 60)], 3, False)
    # last three replied: egress 200, 300, 400; ingress 50, 50, 60; the lost probe does not count
    assert r.moving_average() == {"samples": 3, "rtt": 353.333, "egress": 300.0, "ingress": 53.333}
    assert SessionResults().moving_average() is None  # moving-average-size 0: not computed

"""Sampling: 1 in N deterministic and random, run-length across batches, pps cap."""

from __future__ import annotations

import numpy as np
import pytest

from flowplane.flows import SAMPLING_DETERMINISTIC, SAMPLING_RANDOM
from flowplane.sampling import NS, Sampler


def _run(s: Sampler, sizes, ts_step=1000):
    out, base = [], 0
    for n in sizes:
        ts = (base + np.arange(n, dtype=np.int64)) * ts_step
        out.append(s.select(n, ts) + base)
        base += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


@pytest.mark.parametrize("sizes", [[1000], [7, 1, 992], [333] * 3 + [1], [1] * 1000])
def test_deterministic_every_nth_across_batches(sizes):
    got = _run(Sampler(10, algorithm=SAMPLING_DETERMINISTIC), sizes)
    assert got.tolist() == list(range(9, 1000, 10))


def test_rate_one_takes_everything():
    s = Sampler(1)
    assert s.select(5, np.zeros(5, dtype=np.int64)).tolist() == [0, 1, 2, 3, 4]
    assert s.effective_rate == 1.0


@pytest.mark.parametrize("sizes", [[100], [13, 13, 74], [1] * 100])
def test_run_length_continues_into_next_batch(sizes):
    got = _run(Sampler(10, run_length=3, algorithm=SAMPLING_DETERMINISTIC), sizes)
    expected = sorted({t + k for t in range(9, 100, 10) for k in range(4) if t + k < 100})
    assert got.tolist() == expected


def test_random_rate_within_tolerance():
    s = Sampler(100, algorithm=SAMPLING_RANDOM, seed=7)
    got = _run(s, [10_000] * 20)
    n, p = 200_000, 1 / 100
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(len(got) - n * p) < 5 * sd  # 5 sigma: fails with probability < 1e-6
    assert len(np.unique(got)) == len(got)
    assert s.effective_rate == pytest.approx(100, rel=0.1)


def test_max_pps_caps_per_second_of_packet_time():
    s = Sampler(1, max_pps=50)
    # 3 seconds of packets, 200 per second, over uneven batches
    ts = np.repeat(np.arange(3, dtype=np.int64) * NS, 200) + np.tile(np.arange(200, dtype=np.int64), 3)
    got = []
    for lo, hi in ((0, 130), (130, 401), (401, 600)):
        got.append(s.select(hi - lo, ts[lo:hi]) + lo)
    got = np.concatenate(got)
    secs = ts[got] // NS
    assert np.bincount(secs).tolist() == [50, 50, 50]
    assert s.counters["rate_limited"] == 450
    assert s.counters["sampled"] == 150

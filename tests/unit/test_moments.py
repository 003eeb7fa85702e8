"""Moments: running count, sum, min, max, mean and population standard deviation."""

from __future__ import annotations

import math

from flowplane.api import Moments


def test_empty():
    m = Moments()
    assert (m.samples, m.lo, m.hi, m.mean, m.stddev) == (0, 0, 0, 0.0, 0.0)


def test_add_and_add_many_agree():
    one, many = Moments(), Moments()
    for v in (3, 1, 4, 1, 5):
        one.add(v)
    many.add_many([3, 1])
    many.add_many([])
    many.add_many([4, 1, 5])
    for m in (one, many):
        assert (m.samples, m.lo, m.hi, m.total) == (5, 1, 5, 14)
        assert math.isclose(m.mean, 2.8) and math.isclose(m.stddev, math.sqrt(2.56))
    assert isinstance(one.total, int) and isinstance(many.total, float)  # add keeps the values' type

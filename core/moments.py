"""Running statistics of a stream of measurements: count, sum, sum of squares, minimum and maximum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class Moments:
    """Samples, sum, sum of squares, minimum and maximum of the values added, exactly (no values kept):
    the mean, the population standard deviation (÷N) and the peak-to-peak spread follow.  ``lo`` and
    ``hi`` are 0 until the first value."""

    __slots__ = ("samples", "total", "sumsq", "lo", "hi")

    def __init__(self) -> None:
        self.samples = 0
        self.total: Any = 0
        self.sumsq: Any = 0
        self.lo: Any = 0
        self.hi: Any = 0

    def add(self, v: Any) -> None:
        """One value."""
        if not self.samples:
            self.lo = self.hi = v
        else:
            self.lo, self.hi = min(self.lo, v), max(self.hi, v)
        self.samples += 1
        self.total += v
        self.sumsq += v * v

    def add_many(self, values: Any) -> np.ndarray:
        """Many values at once, as floats; returns them as an array."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.size:
            lo, hi = float(arr.min()), float(arr.max())
            self.lo, self.hi = (lo, hi) if not self.samples else (min(self.lo, lo), max(self.hi, hi))
            self.samples += int(arr.size)
            self.total += float(arr.sum())
            self.sumsq += float(np.dot(arr, arr))
        return arr

    @property
    def mean(self) -> float:
        return self.total / self.samples if self.samples else 0.0

    @property
    def stddev(self) -> float:
        """The population standard deviation (0 without values)."""
        if not self.samples:
            return 0.0
        avg = self.total / self.samples
        return math.sqrt(max(0.0, self.sumsq / self.samples - avg * avg))

"""Junos ``input rate N`` / ``run-length R`` over whole batches (deterministic).

Every N-th candidate packet triggers a copy, and each trigger also takes the
next R candidates (a run that crosses a batch boundary continues in the next
batch).  The phase is carried across batches, so the copies of a stream of
M candidates do not depend on how the stream was cut into batches.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)


class RunSampler:
    def __init__(self, rate: int = 1, run_length: int = 0) -> None:
        self.rate = max(1, int(rate))
        self.run_length = max(0, int(run_length))
        self._phase = 0  # candidates seen since the last trigger
        self._run_left = 0  # run-length copies still owed from the previous batch

    def select(self, n: int) -> np.ndarray:
        """Sorted indices among candidates ``0..n-1`` to copy."""
        if n <= 0:
            return _EMPTY
        if self.rate == 1:
            return np.arange(n, dtype=np.int64)
        first = self.rate - 1 - self._phase
        trig = np.arange(first, n, self.rate, dtype=np.int64) if first < n else _EMPTY
        self._phase = (self._phase + n) % self.rate
        if not self.run_length and not self._run_left:
            return trig
        keep = np.zeros(n, dtype=bool)
        if self._run_left:
            keep[: self._run_left] = True
            self._run_left = max(0, self._run_left - n)
        if len(trig):
            keep[trig] = True
            if self.run_length:
                runs = (trig[:, None] + np.arange(1, self.run_length + 1, dtype=np.int64)).ravel()
                keep[runs[runs < n]] = True
                tail = int(trig[-1]) + self.run_length - (n - 1)
                if tail > 0:
                    self._run_left = max(self._run_left, tail)
        return np.flatnonzero(keep)

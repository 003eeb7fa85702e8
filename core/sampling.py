"""Packet sampling over whole batches: 1 in N (deterministic or random), run-length, pps cap.

The one sampler of every feature that takes Junos ``input rate N`` / ``run-length R``
(sampling instances, port mirroring, inline monitoring collectors):

* deterministic: every N-th candidate packet, the phase carried across batches;
* random: each candidate with probability 1/N (numpy ``Generator``);
* ``run-length R``: each trigger also takes the next R candidates (carried
  across batch boundaries), as Junos does;
* ``max-packets-per-second M``: at most M samples per second of the packet
  clock; the excess is counted as ``rate_limited``.
"""

from __future__ import annotations

import numpy as np

from flowplane.flows import SAMPLING_DETERMINISTIC
from flowplane.stats import Counters

NS = 1_000_000_000


class Sampler:
    def __init__(self, rate: int, *, run_length: int = 0, max_pps: int = 0, algorithm: int = SAMPLING_DETERMINISTIC,
                 seed: int | None = None, counters: Counters | None = None) -> None:
        self.rate = max(1, int(rate))
        self.run_length = max(0, int(run_length))
        self.max_pps = max(0, int(max_pps))
        self.algorithm = algorithm
        self.rng = np.random.default_rng(seed)
        self.counters = counters or Counters("sampler")
        self._phase = 0  # candidates seen since the last deterministic trigger
        self._run_left = 0  # run-length samples still owed from the previous batch
        self._sec = -1  # pps cap: current second and samples taken in it
        self._sec_count = 0

    def select(self, n: int, ts: np.ndarray | None = None) -> np.ndarray:
        """Indices (sorted) of the candidates ``0..n-1`` to sample; *ts* are their timestamps (ns),
        needed only with a ``max_pps`` cap."""
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        self.counters.inc("candidates", n)
        if self.rate == 1:
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = self._triggers(n)
            if self.run_length or self._run_left:
                idx = self._with_runs(idx, n)
        if self.max_pps and len(idx):
            if ts is None:
                raise ValueError("a sampler with max_pps needs the candidates' timestamps")
            idx = self._cap(idx, ts)
        self.counters.inc("sampled", len(idx))
        return idx

    def _triggers(self, n: int) -> np.ndarray:
        if self.algorithm == SAMPLING_DETERMINISTIC:
            first = self.rate - 1 - self._phase  # index of the next N-th candidate
            idx = np.arange(first, n, self.rate, dtype=np.int64) if first < n else np.zeros(0, dtype=np.int64)
            self._phase = (self._phase + n) % self.rate
            return idx
        return np.flatnonzero(self.rng.random(n) < 1.0 / self.rate).astype(np.int64)

    def _with_runs(self, idx: np.ndarray, n: int) -> np.ndarray:
        parts = []
        if self._run_left:
            carried = np.arange(min(self._run_left, n), dtype=np.int64)
            parts.append(carried)
            self._run_left -= len(carried)
        if len(idx) and self.run_length:
            runs = (idx[:, None] + np.arange(self.run_length + 1, dtype=np.int64)).ravel()
            last = int(idx[-1]) + self.run_length
            if last >= n:  # the last trigger's run continues into the next batch
                self._run_left = max(self._run_left, last - n + 1)
            parts.append(runs[runs < n])
        elif len(idx):
            parts.append(idx)
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(parts))

    def _cap(self, idx: np.ndarray, ts: np.ndarray) -> np.ndarray:
        sec = ts[idx] // NS
        # rank of each sample within its second (timestamps are non-decreasing within a batch)
        starts = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1]])
        rank = np.arange(len(sec)) - np.repeat(starts, np.diff(np.r_[starts, len(sec)]))
        carry = sec == self._sec
        rank = rank + np.where(carry, self._sec_count, 0)
        keep = rank < self.max_pps
        last_sec = int(sec[-1])
        in_last = sec == last_sec
        self._sec_count = int(np.minimum(rank[in_last].max() + 1, self.max_pps)) if in_last.any() else 0
        self._sec = last_sec
        dropped = int((~keep).sum())
        if dropped:
            self.counters.inc("rate_limited", dropped)
        return idx[keep]

    @property
    def effective_rate(self) -> float:
        """Candidates per sample so far (what 'show' reports as the effective rate)."""
        s = self.counters["sampled"]
        return self.counters["candidates"] / s if s else float(self.rate)

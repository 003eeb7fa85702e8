"""Per-second rates over recent windows, from counters sampled once a second.

``RateWindow.sample(now_s, values)`` is called by the collector's one-second
timer with the running totals (datagrams, records, drops ...); ``rates(now_s,
values, window_s)`` gives ``(value now - value at the sample nearest
window_s ago) / elapsed`` for each key, using the live totals as the end
point, so ``show`` is current to the moment it is asked.  At most
``MAX_SAMPLES`` samples are kept (five minutes at one a second): memory is
bounded whatever the uptime.
"""

from __future__ import annotations

from collections import deque

MAX_SAMPLES = 301
WINDOWS = (10, 60, 300)  # seconds shown by 'show services flow-collector'


class RateWindow:
    def __init__(self, max_samples: int = MAX_SAMPLES, start_s: float | None = None) -> None:
        """*start_s*: when the totals were zero (start, clear): the baseline until samples cover a window."""
        self.samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=max_samples)
        if start_s is not None:
            self.samples.append((start_s, {}))

    def sample(self, now_s: float, values: dict[str, int]) -> None:
        self.samples.append((now_s, dict(values)))

    def rates(self, now_s: float, values: dict[str, int], window_s: float) -> dict | None:
        """Per-second rate of each key over (about) the last *window_s* seconds; None before any sample."""
        start = None
        for t, v in reversed(self.samples):  # the newest sample at least window_s old, else the oldest
            start = (t, v)
            if now_s - t >= window_s:
                break
        if start is None:
            return None
        t0, v0 = start
        dt = now_s - t0
        if dt <= 0:
            return None
        return {"seconds": round(dt, 1),
                **{k: round(max(0, values.get(k, 0) - v0.get(k, 0)) / dt, 1) for k in values}}

    def clear(self, now_s: float | None = None) -> None:
        """Counters were reset: forget the samples (*now_s*: the new zero baseline)."""
        self.samples.clear()
        if now_s is not None:
            self.samples.append((now_s, {}))

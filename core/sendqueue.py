"""The bounded send queue a transport drains in its own task.

``send_nowait`` on the data path puts messages here and never blocks; when the
queue is full the *oldest* message gives way (counted ``dropped`` and as the drop
``("transport", "queue_full")``), so a stalled peer costs old data, never new.
The transport's task waits with :meth:`SendQueue.wait` and pops what it sends;
``flush`` at shutdown waits until the queue (and whatever the transport still
holds in flight) is empty, bounded by a deadline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import trio

from .stats import Counters


class SendQueue:
    """Bounded FIFO of messages, oldest dropped when full; see the module docstring."""

    def __init__(self, maxlen: int, counters: Counters) -> None:
        self.maxlen = max(1, maxlen)
        self.counters = counters
        self.items: deque[bytes] = deque()
        self._wake = trio.Event()
        self._drained: trio.Event | None = None

    def __len__(self) -> int:
        return len(self.items)

    def put(self, payloads: Iterable[bytes]) -> int:
        """Append *payloads* (never blocks); returns how many were put."""
        q, n = self.items, 0
        for data in payloads:
            if len(q) >= self.maxlen:
                self._drop_oldest()
            q.append(data)
            n += 1
        if n:
            self._wake.set()
        return n

    def put_back(self, batch: list[bytes]) -> None:
        """Messages taken but not sent go back to the head, in order (the oldest give way when full)."""
        self.items.extendleft(reversed(batch))
        while len(self.items) > self.maxlen:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        self.items.popleft()
        self.counters.inc("dropped")
        self.counters.drop("transport", "queue_full")

    async def wait(self) -> None:
        """Until something is queued; an empty queue first tells a waiting :meth:`flush`."""
        while not self.items:
            if self._drained is not None:
                self._drained.set()
            self._wake = trio.Event()
            await self._wake.wait()

    async def flush(self, deadline_s: float, *, in_flight: Callable[[], int] = lambda: 0,
                    draining: Callable[[], bool] = lambda: True) -> bool:
        """Wait up to *deadline_s* until nothing is queued or *in_flight*; True if so.  Stops early when
        *draining* says the task that empties the queue is gone."""
        with trio.move_on_after(deadline_s):
            while (self.items or in_flight()) and draining():
                self._drained = trio.Event()
                await self._drained.wait()
        return not (self.items or in_flight())

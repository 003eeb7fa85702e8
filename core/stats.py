"""Counters.  Packets are counted, never logged one by one."""

from __future__ import annotations

from collections import Counter


class Counters:
    """A named bag of monotonically increasing integers with a drop table.

    ``drops`` is keyed by ``(stage, reason)`` so ``show`` can print drops by
    stage.  ``clear()`` is what ``clear ...`` commands call.
    """

    __slots__ = ("name", "values", "drops")

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: Counter[str] = Counter()
        self.drops: Counter[tuple[str, str]] = Counter()

    def inc(self, key: str, n: int = 1) -> None:
        self.values[key] += n

    def drop(self, stage: str, reason: str, n: int = 1) -> None:
        self.drops[(stage, reason)] += n

    def __getitem__(self, key: str) -> int:
        return self.values[key]

    def clear(self) -> None:
        self.values.clear()
        self.drops.clear()

    def snapshot(self) -> dict:
        return {
            "counters": dict(self.values),
            "drops": [{"stage": s, "reason": r, "count": c} for (s, r), c in sorted(self.drops.items())],
        }

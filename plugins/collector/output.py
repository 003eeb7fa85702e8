"""Where decoded flows go: a bounded in-memory ring (for ``show``) and a JSON-lines file."""

from __future__ import annotations

import json
import os
from collections import deque

from .records import CollectedFlows


class FlowRing:
    """The last *size* decoded flows, kept as the decoders' chunks (no per-flow objects)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.chunks: deque[CollectedFlows] = deque()
        self.count = 0

    def add(self, flows: CollectedFlows) -> None:
        if self.size <= 0 or not len(flows):
            return
        if len(flows) > self.size:
            flows = flows.tail(self.size)
        self.chunks.append(flows)
        self.count += len(flows)
        while self.chunks and self.count - len(self.chunks[0]) >= self.size:
            self.count -= len(self.chunks.popleft())

    def last(self, n: int) -> list[dict]:
        """The last *n* flows, oldest first, as plain dicts."""
        out: list[dict] = []
        for chunk in reversed(self.chunks):
            need = n - len(out)
            if need <= 0:
                break
            out[:0] = chunk.tail(need).rows()
        return out[-n:] if n else []

    def clear(self) -> None:
        self.chunks.clear()
        self.count = 0


class JsonlWriter:
    """One JSON object per flow, appended to *path*; flushed after every batch, closed at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fh = None
        self.lines = 0
        self.errors = 0

    def open(self) -> None:
        if self.fh is None:
            d = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(d, exist_ok=True)
            self.fh = open(self.path, "a", encoding="utf-8", buffering=1 << 20)

    def write(self, batch: list[CollectedFlows]) -> None:
        if not batch:
            return
        try:
            self.open()
            dumps = json.dumps
            for flows in batch:
                rows = flows.rows()
                self.fh.write("".join(dumps(r, separators=(",", ":")) + "\n" for r in rows))
                self.lines += len(rows)
            self.fh.flush()
        except OSError:
            self.errors += 1

    def close(self) -> None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                self.errors += 1
            self.fh = None

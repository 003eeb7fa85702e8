"""The stateful part: per-bucket counters, the action handler, and the commands.

Batch rules this module follows (see docs/plugin-guide.md):

* work per batch on numpy columns, never a Python loop per packet;
* no I/O and no logging in :meth:`Tally.handle`: it only counts;
* commands read the state and return plain data; formatting is separate.
"""

from __future__ import annotations

import numpy as np

from flowplane.api import ActionSelection, CommandError, PacketBatch, parse_words

from .settings import DEFAULT_BUCKET, DEFAULTS, SECTION

#: The name the stateful object is registered under (``flowplane plugins`` shows it).
STATE_NAME = "example-tally-state"

#: ``HAS_PORTS[proto]``: protocols whose ``dport`` column is meaningful (TCP, UDP, SCTP).
#: A 256-entry lookup table is one gather; ``np.isin`` would sort.
HAS_PORTS = np.zeros(256, dtype=bool)
HAS_PORTS[[6, 17, 132]] = True


class Bucket:
    """Packets and bytes of one bucket, in total and per destination port."""

    __slots__ = ("packets", "bytes", "port_packets", "port_bytes")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.port_packets = np.zeros(65536, dtype=np.int64)
        self.port_bytes = np.zeros(65536, dtype=np.int64)

    def add(self, batch: PacketBatch) -> None:
        """Count every row of *batch*: a few numpy calls per batch, no loop over packets."""
        wirelen = batch.wirelen
        self.packets += len(batch)
        self.bytes += int(wirelen.sum(dtype=np.int64))
        has_port = (batch.status == 0) & (batch.l4_off >= 0) & HAS_PORTS[batch.proto]
        if not has_port.any():
            return
        ports, inverse = np.unique(batch.dport[has_port], return_inverse=True)
        self.port_packets[ports] += np.bincount(inverse, minlength=len(ports))
        # float64 weights are exact far beyond any batch's byte count
        self.port_bytes[ports] += np.bincount(inverse, weights=wirelen[has_port], minlength=len(ports)).astype(np.int64)

    def as_dict(self, name: str, top_n: int) -> dict:
        """Plain data: totals and the *top_n* ports by packets (ties: lower port first)."""
        used = np.flatnonzero(self.port_packets)
        order = np.lexsort((used, -self.port_packets[used]))[:top_n]
        top = used[order]
        return {
            "bucket": name,
            "packets": self.packets,
            "bytes": self.bytes,
            "packets_without_port": self.packets - int(self.port_packets.sum()),
            "ports": [{"port": int(p), "packets": int(self.port_packets[p]), "bytes": int(self.port_bytes[p])}
                      for p in top],
        }


class Tally:
    """State of the ``tally`` action for one config; replaced (not mutated) on reload."""

    def __init__(self, top_n: int = DEFAULTS["top-n"]) -> None:
        self.top_n = top_n
        self.buckets: dict[str, Bucket] = {}

    @classmethod
    def from_config(cls, section: dict) -> Tally:
        return cls(top_n=section.get("top-n", DEFAULTS["top-n"]))

    def handle(self, selections: list[ActionSelection]) -> None:
        """The action handler bound with ``app.bind_action``: count, never log."""
        for sel in selections:
            name = DEFAULT_BUCKET if sel.arg is None else str(sel.arg)
            bucket = self.buckets.get(name)
            if bucket is None:
                bucket = self.buckets[name] = Bucket()
            bucket.add(sel.batch)

    def show(self, bucket: str | None = None) -> dict:
        names = sorted(self.buckets) if bucket is None else [bucket]
        return {"top_n": self.top_n, "buckets": [self.buckets[n].as_dict(n, self.top_n) for n in names]}

    def clear(self, bucket: str | None = None) -> None:
        for name in sorted(self.buckets) if bucket is None else [bucket]:
            self.buckets[name] = Bucket()


# -- commands: stateless functions that find the state by its plugin name --------------


def _state(app, opts: dict) -> Tally:
    tally = app.pm.get_plugin(STATE_NAME)
    if tally is None:
        raise CommandError(f"'{SECTION}' is not configured")
    name = opts.get("bucket")
    if name is not None and name not in tally.buckets:
        known = ", ".join(sorted(tally.buckets)) or "none yet"
        raise CommandError(f"no tally bucket named {name!r}; known: {known}")
    return tally


def show_tally(app, args: list[str]) -> dict:
    """``show services example-tally [bucket NAME]``."""
    opts = parse_words(args, values={"bucket": str})
    return _state(app, opts).show(opts.get("bucket"))


def clear_tally(app, args: list[str]) -> dict:
    """``clear services example-tally [bucket NAME]``."""
    opts = parse_words(args, values={"bucket": str})
    _state(app, opts).clear(opts.get("bucket"))
    return {"cleared": opts.get("bucket") or "all"}


def format_tally(data: dict) -> str:
    """Junos-style text for :func:`show_tally` data."""
    if not data["buckets"]:
        return "No tally buckets yet (no packet matched a 'tally' term)\n"
    blocks = []
    for b in data["buckets"]:
        lines = [f"Bucket: {b['bucket']}",
                 f"  Packets: {b['packets']}, Bytes: {b['bytes']}, Packets without port: {b['packets_without_port']}"]
        if b["ports"]:
            lines.append(f"  Top destination ports (top {data['top_n']}):")
            lines.append(f"    {'Port':<10}{'Packets':>16}{'Bytes':>18}")
            lines += [f"    {p['port']:<10}{p['packets']:>16}{p['bytes']:>18}" for p in b["ports"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"

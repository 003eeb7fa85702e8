"""The per-batch data path: decode, firewall filters, term-action routing, batch hooks.

Synchronous and allocation-light: it runs for every batch the pipeline takes from a source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .batch import DIR_INPUT, DIR_OUTPUT, ActionSelection, PacketBatch
from .decode import Reason, decode
from .graph import Graph
from .validate import FAMILIES

if TYPE_CHECKING:  # pragma: no cover
    from .app import App

def process(app: App, batch: PacketBatch) -> None:
    """Decode, filter, route actions and run feature plugins on one batch."""
    graph = app.graph
    assert graph is not None
    n = len(batch)
    if n == 0:
        return
    counts = decode(batch)
    iface = int(batch.iface[0])
    acc = app.decode_counts.get(iface)
    if acc is None:
        acc = app.decode_counts[iface] = np.zeros(len(Reason), dtype=np.int64)
    acc[: len(counts)] += counts[: len(acc)]
    pipe = app.counters["pipeline"]
    pipe.inc("packets", n)
    pipe.inc("batches")
    direction = batch.direction
    d0 = int(direction[0])
    if graph.bindings:
        if (direction != d0).any():
            for d in (DIR_INPUT, DIR_OUTPUT):
                sel = direction == d
                if sel.any():
                    filter_and_run(app, graph, batch.select(sel), iface, d)
            return
    filter_and_run(app, graph, batch, iface, d0)


def filter_and_run(app: App, graph: Graph, batch: PacketBatch, iface: int, direction: int) -> None:
    """Run the filters bound to (*iface*, *direction*), then ``flowplane_process_batch`` on what they accepted."""
    filters = graph.bindings.get((iface, direction))
    hook = graph.process_batch
    if filters:
        alive = apply_filters(app, graph, batch, filters)
        if not (hook and hook.impls):
            return  # nobody consumes accepted packets: skip building the accepted batch
        if not alive.all():
            batch = batch.select(alive)
    if len(batch) and hook is not None and hook.impls:
        hook(batch=batch)


def apply_filters(app: App, graph: Graph, batch: PacketBatch, filters: dict[str, Any]) -> np.ndarray:
    """Evaluate the bound filters (``any`` first), route term actions; return the accepted rows."""
    pipe = app.counters["pipeline"]
    alive = np.ones(len(batch), dtype=bool)
    selections: list[ActionSelection] = []
    for family in FAMILIES[::-1]:  # any first, then inet, inet6
        f = filters.get(family)
        if f is None:
            continue
        if family == "any":
            rows = alive
        else:
            rows = alive & (batch.af == (4 if family == "inet" else 6)) & (batch.status == 0)
            if not rows.any():
                continue
        res = f.evaluate(batch, rows)
        dropped = rows & ~res.accept
        if dropped.any():
            alive &= ~dropped
            pipe.inc("filter_discarded", int((res.discard & rows).sum()))
            pipe.inc("filter_rejected", int((res.reject & rows).sum()))
        for term, action, arg, mask in res.selections:
            selections.append(ActionSelection(f.name, term, action, arg, batch.select(mask)))
    if selections:
        route(app, graph, selections)
    return alive


def route(app: App, graph: Graph, selections: list[ActionSelection]) -> None:
    """Hand each bound term action its selections (one call per action per batch)."""
    by_action: dict[str, list[ActionSelection]] = {}
    for s in selections:
        by_action.setdefault(s.action, []).append(s)
    for action, sels in by_action.items():
        handler = graph.guarded_actions.get(action)
        if handler is None or handler.disabled:
            why = "unbound" if handler is None else "disabled"
            app.counters["pipeline"].drop("action", f"{why}:{action}", sum(len(s.batch) for s in sels))
            continue
        handler(sels)  # guarded: counts, logs once per burst, disables after repeated failures

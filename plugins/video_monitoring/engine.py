"""The video-monitoring data path: flow selection, TS analysis, intervals, ageing and alarms.

:class:`VideoMonitor` is the stateful object ``flowplane_configure`` registers while flows are
selected.  Per batch (``flowplane_process_batch``):

1. UDP rows are matched against the ``input-flows`` / ``output-flows`` selectors with boolean masks
   (interface, direction, family, prefixes, ports); a row takes the first selector it matches;
2. the media payload of every selected datagram is found and its TS packets parsed in one vector pass
   (:mod:`.ts`); datagrams that are not MPEG-TS are counted and left out;
3. continuity counters are checked for all TS packets of the batch at once (:func:`.mdi.cc_losses`,
   keyed by flow and PID), and per-datagram counts summed in one ``np.add.at``;
4. rows are grouped by flow (one ``np.unique``); each flow of the batch is visited once to append its
   arrival times and sizes to the open interval, closing intervals it passed.

Intervals that end while a flow is silent, and flows idle for ``inactive-timeout``, are closed by
:meth:`VideoMonitor.tick`: on packet time for a pcap replay (every batch), on the wall clock for live
sources (a background timer).  The flow table holds at most ``maximum-flows``; a new flow beyond
that evicts the least recently seen one (counted).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
import structlog
import trio

from flowplane.api import DIR_INPUT, DIR_OUTPUT, V4_MAPPED, Counters, PacketBatch, hookimpl

from . import alarms
from .config import LEVELS, FlowSelector, VideoConfig
from .flows import COLUMNS, Flow, address
from .flows import C as COL
from .mdi import cc_losses
from .ts import NULL_PID, parse_datagrams, parse_ts

log = structlog.get_logger("flowplane.video_monitoring")

PLUGIN_OBJECT = "video-monitor"
TICK_S = 0.25
#: Live mode: an interval is closed this long after its end (batches still in flight).
CLOSE_GRACE_NS = 250_000_000
#: Live mode: while no packet past an interval's end has reached the monitor, the pipeline may be behind (a busy
#: host); the wall clock closes the interval only this long after its end, so late batches still count in it.
STALL_GRACE_NS = 2_000_000_000
UDP = 17


def _prefix_masks(net) -> tuple[int, int, int, int]:
    """(value hi, value lo, mask hi, mask lo) of *net* in the batch's 128-bit (IPv4-mapped) form."""
    if net.version == 4:
        value = int(V4_MAPPED) | int(net.network_address)
        plen = 96 + net.prefixlen
    else:
        value, plen = int(net.network_address), net.prefixlen
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
    return value >> 64, value & (2**64 - 1), mask >> 64, mask & (2**64 - 1)


class Selector:
    """A compiled flow selector: boolean masks over a batch."""

    def __init__(self, sel: FlowSelector, iface_id: int, template) -> None:
        self.sel = sel
        self.iface_id = iface_id
        self.direction = DIR_INPUT if sel.direction == "input" else DIR_OUTPUT
        self.af = 4 if sel.family == "inet" else 6
        self.template = template
        self.src = _prefix_masks(sel.source) if sel.source is not None else None
        self.dst = _prefix_masks(sel.destination) if sel.destination is not None else None

    def match(self, b: PacketBatch, rows: np.ndarray) -> np.ndarray:
        m = rows & (b.iface == self.iface_id) & (b.direction == self.direction) & (b.af == self.af)
        if self.src is not None:
            vh, vl, mh, ml = (np.uint64(x) for x in self.src)
            m &= ((b.src_hi & mh) == vh) & ((b.src_lo & ml) == vl)
        if self.dst is not None:
            vh, vl, mh, ml = (np.uint64(x) for x in self.dst)
            m &= ((b.dst_hi & mh) == vh) & ((b.dst_lo & ml) == vl)
        if self.sel.source_port is not None:
            m &= b.sport == self.sel.source_port
        if self.sel.destination_port is not None:
            m &= b.dport == self.sel.destination_port
        return m


class VideoMonitor:
    """The object registered while video flows are selected."""

    def __init__(self, app: Any, cfg: VideoConfig, *, live: bool) -> None:
        self.app = app
        self.cfg = cfg
        self.live = live
        self.selectors = [Selector(s, app.interfaces.id(s.interface), cfg.templates[s.template]) for s in cfg.selectors]
        self.flows: OrderedDict[tuple, Flow] = OrderedDict()  # least recently seen first
        self.counters = Counters("video-monitoring")
        self.alarm_counts = {m: {lvl: 0 for lvl in LEVELS} for m in alarms.NAMES}
        self.clock_ns = 0  # packet time of the newest packet seen
        self.next_id = 1
        self.events: list[dict] = []  # recent alarm events (bounded)
        self.cc_state: dict[int, int] = {}  # (flow id << 13 | PID) -> last continuity counter

    def adopt(self, old: VideoMonitor) -> None:
        """Keep counters and the flows whose selector and template did not change across a reload."""
        self.counters = old.counters
        self.alarm_counts = old.alarm_counts
        self.next_id = old.next_id
        self.events = old.events
        self.clock_ns = old.clock_ns
        if [s.sel for s in old.selectors] == [s.sel for s in self.selectors] and all(
                self.cfg.templates.get(n) == t for n, t in old.cfg.templates.items()):
            for key, f in list(old.flows.items())[-self.cfg.max_flows:]:
                self.flows[key] = f
            self.cc_state = old.cc_state

    # -- data path --------------------------------------------------------------
    @hookimpl
    def flowplane_process_batch(self, batch: PacketBatch) -> None:
        rows = (batch.status == 0) & (batch.proto == UDP) & (batch.payload_off >= 0)
        if not rows.any():
            return
        pick = np.full(len(batch), -1, dtype=np.int64)
        for i, s in enumerate(self.selectors):
            m = s.match(batch, rows & (pick < 0))
            pick[m] = i
        m = np.flatnonzero(pick >= 0)
        if len(m) == 0:
            return
        self.clock_ns = max(self.clock_ns, int(batch.ts[m].max()))
        self._analyse(batch, m, pick[m])
        if not self.live:
            self.tick(self.clock_ns)

    def _analyse(self, b: PacketBatch, m: np.ndarray, sel: np.ndarray) -> None:
        c = self.counters
        dg = parse_datagrams(b.data, b.offset[m], b.caplen[m], b.l4_off[m], b.payload_off[m])
        c.inc("datagrams", len(m))
        non_ts = ~dg.is_ts
        if non_ts.any():
            c.drop("analyse", "not-mpeg-ts", int(non_ts.sum()))
            keep = np.flatnonzero(dg.is_ts)
            if len(keep) == 0:
                return
            m, sel = m[keep], sel[keep]
            dg = _take(dg, keep)
        n = len(m)
        # group rows by flow: (selector, src, dst, ports) -> flow slot
        keys = np.stack([sel.astype(np.uint64), b.src_hi[m], b.src_lo[m], b.dst_hi[m], b.dst_lo[m],
                         (b.sport[m].astype(np.uint64) << np.uint64(16)) | b.dport[m].astype(np.uint64)], axis=1)
        uniq, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        flows = [self._flow(tuple(int(x) for x in u), int(m[i]), b) for u, i in zip(uniq, first)]
        fid = np.array([f.id for f in flows], dtype=np.int64)[inv]
        # TS packets of all datagrams at once
        tsp = parse_ts(b.data, dg)
        counts = np.zeros((n, len(COLUMNS)), dtype=np.int64)
        counts[:, COL["ts_packets"]] = dg.ts_count
        counts[:, COL["media_bytes"]] = dg.media_len
        counts[:, COL["rtp"]] = dg.is_rtp
        counts[:, COL["truncated"]] = dg.leftover > 0
        bad_sync = ~tsp.sync_ok
        checked = tsp.sync_ok & ~tsp.tei & (tsp.pid != NULL_PID) & ((tsp.afc & 1) == 1)
        per_row = [("sync_errors", bad_sync), ("tei", tsp.tei), ("scrambled", tsp.scrambled),
                   ("null", tsp.sync_ok & (tsp.pid == NULL_PID))]
        for name, mask in per_row:
            if mask.any():
                np.add.at(counts[:, COL[name]], tsp.row[mask], 1)
        idx = np.flatnonzero(checked)
        if len(idx):
            key = (fid[tsp.row[idx]] << 13) | tsp.pid[idx]
            lost, dup = cc_losses(key, tsp.cc[idx], tsp.discontinuity[idx], self.cc_state)
            if lost.any():
                np.add.at(counts[:, COL["cc_lost"]], tsp.row[idx], lost)
            if dup.any():
                np.add.at(counts[:, COL["duplicates"]], tsp.row[idx[dup]], 1)
        if bad_sync.any():
            c.drop("analyse", "ts-sync-lost", int(bad_sync.sum()))
        c.inc("media_packets", int(dg.ts_count.sum()))
        # per flow: one visit, contiguous rows (stable sort keeps arrival order)
        order = np.argsort(inv, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(inv, minlength=len(flows)))]
        ts = b.ts[m][order]
        size = dg.media_len[order]
        counts = counts[order]
        seq = dg.rtp_seq[order]
        is_rtp = dg.is_rtp[order]
        for j, f in enumerate(flows):
            a, e = bounds[j], bounds[j + 1]
            r = is_rtp[a:e]
            rtp_seq = seq[a:e][r] if r.any() else None
            for rec in f.add(ts[a:e], size[a:e], counts[a:e], rtp_seq):
                self._closed(f, rec)

    def _flow(self, key: tuple, row: int, b: PacketBatch) -> Flow:
        f = self.flows.get(key)
        if f is not None:
            self.flows.move_to_end(key)
            return f
        while len(self.flows) >= self.cfg.max_flows:
            _, old = self.flows.popitem(last=False)
            self._end(old, "evicted")
        s = self.selectors[key[0]]
        af = int(b.af[row])
        f = Flow(id=self.next_id, interface=s.sel.interface, direction=s.sel.direction, selector=s.sel.name,
                 template=s.template, af=af, src=address(key[1], key[2], af), dst=address(key[3], key[4], af),
                 sport=key[5] >> 16, dport=key[5] & 0xFFFF, created_ns=int(b.ts[row]))
        self.next_id += 1
        self.flows[key] = f
        self.counters.inc("flows_inserted")
        return f

    def _end(self, f: Flow, why: str) -> None:
        f.drop_open()  # an idle flow's last interval was closed by tick already
        self.counters.inc(f"flows_{why}")

    def _closed(self, f: Flow, rec: dict) -> None:
        self.counters.inc("intervals")
        for ev in alarms.evaluate(f, rec):
            d = ev.as_dict()
            if ev.action == "raised":
                self.alarm_counts[ev.metric][ev.level] += 1
            self.events.append(d)
            del self.events[:-100]
            getattr(log, "critical" if ev.level == "critical" else ev.level)("video_monitoring_alarm", **d)

    # -- timers ---------------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """Close intervals that ended and end flows idle for their inactive-timeout."""
        grace = CLOSE_GRACE_NS if self.live else 0
        if len(self.cc_state) > 16 * len(self.flows) + 1024:  # drop the PIDs of flows that ended
            live = {f.id for f in self.flows.values()}
            self.cc_state = {k: v for k, v in self.cc_state.items() if k >> 13 in live}
        for key, f in list(self.flows.items()):
            end = f.interval_end_ns()
            caught_up = not self.live or self.clock_ns >= end or now_ns >= end + STALL_GRACE_NS
            if f.chunks_t and now_ns >= end + grace and caught_up:
                rec = f.close()
                f.interval_no += 1  # a straggler of the closed interval opens the next one, never a second record
                if rec is not None:
                    self._closed(f, rec)
            if now_ns - f.last_seen_ns >= f.template.inactive_timeout_s * 1_000_000_000:
                del self.flows[key]
                self._end(f, "timed_out")

    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self._timer] if self.live else []

    async def _timer(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(TICK_S)
            self.tick(time.time_ns())

    @hookimpl
    def flowplane_shutdown(self, app):
        """Close the intervals that ended by now; partial ones give no record."""
        self.tick(time.time_ns() if self.live else self.clock_ns)
        for f in self.flows.values():
            f.drop_open()

    # -- views ------------------------------------------------------------------------
    def stats(self) -> dict:
        c = self.counters
        return {
            "active_flows": len(self.flows), "inserted_flows": c["flows_inserted"],
            "deleted_flows": c["flows_timed_out"], "evicted_flows": c["flows_evicted"],
            "maximum_flows": self.cfg.max_flows, "packets": c["datagrams"], "media_packets": c["media_packets"],
            "intervals": c["intervals"], "alarms": self.alarm_counts,
            "drops": [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(c.drops.items())],
            "templates": sorted(self.cfg.templates),
        }

    def flow_list(self, detail: bool = False) -> list[dict]:
        return [f.snapshot(detail) for f in sorted(self.flows.values(), key=lambda f: f.id)]

    def clear(self) -> None:
        self.counters.clear()
        self.alarm_counts = {m: {lvl: 0 for lvl in LEVELS} for m in alarms.NAMES}


def _take(dg, keep: np.ndarray):
    return type(dg)(**{k: v[keep] for k, v in dg.__dict__.items()})

"""The Media Delivery Index (RFC 4445) and the loss counts behind it, as pure functions.

* :func:`delay_factor`: DF of one interval from arrival times and media payload sizes.  With the
  virtual buffer ``VB(i,pre) = sum(S_j, j < i) - MR * T_i`` and ``VB(i,post) = VB(i,pre) + S_i``
  (``T_i`` from the interval's first packet, ``MR`` the nominal media rate in bytes/s),
  ``DF = (max VB(post) - min VB(pre)) / MR``.
* :func:`cc_losses`: lost TS packets from the continuity counters, per PID, carried across batches.
* :func:`rtp_losses`: lost RTP packets from the sequence numbers (late or reordered packets count as lost).
"""

from __future__ import annotations

import numpy as np


def delay_factor(t_ns: np.ndarray, size: np.ndarray, mr_bytes_per_s: float) -> float:
    """DF in milliseconds of one interval (0 for an empty interval or a rate of 0)."""
    if len(t_ns) == 0 or mr_bytes_per_s <= 0:
        return 0.0
    t = (np.asarray(t_ns, dtype=np.int64) - int(t_ns[0])).astype(np.float64) / 1e9
    s = np.asarray(size, dtype=np.float64)
    pre = np.cumsum(s) - s - mr_bytes_per_s * t
    post = pre + s
    return float((post.max() - pre.min()) / mr_bytes_per_s * 1000.0)


def cc_losses(key: np.ndarray, cc: np.ndarray, discontinuity: np.ndarray, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """Lost TS packets and duplicates, per TS packet, from the continuity counters.

    :param key: per TS packet, its stream key (flow and PID); only packets that carry a payload, on a
        PID other than the null PID, without TEI, are handed in, in arrival order.
    :param cc: continuity counters.
    :param discontinuity: the adaptation field's discontinuity_indicator.
    :param state: ``key -> last cc`` carried from the previous batch; updated in place.
    :return: ``(lost, duplicate)``: lost packets before each packet (``(cc - last - 1) mod 16``, so a
        burst of 16 or more lost packets is undercounted, as CC allows), and whether it repeats the last cc.
    """
    n = len(key)
    lost = np.zeros(n, dtype=np.int64)
    dup = np.zeros(n, dtype=bool)
    if n == 0:
        return lost, dup
    order = np.argsort(key, kind="stable")
    k = key[order]
    c = cc[order].astype(np.int64)
    d = discontinuity[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    prev = np.empty(n, dtype=np.int64)
    prev[1:] = c[:-1]
    for s in starts:  # the first packet of each stream in this batch continues from the carried state
        prev[s] = state.get(int(k[s]), -1)
    ends = np.r_[starts[1:], n] - 1
    for s, e in zip(starts, ends):
        state[int(k[s])] = int(c[e])
    known = (prev >= 0) & ~d
    is_dup = known & (c == prev)
    gap = np.where(known & ~is_dup, (c - prev - 1) & 15, 0)
    lost[order] = gap
    dup[order] = is_dup
    return lost, dup


def rtp_losses(seq: np.ndarray, last: int | None) -> tuple[int, int, int]:
    """RTP packets lost, late (out of order or duplicate) in one flow's packets of a batch, and the new last.

    Sequence numbers are unwrapped against the highest one seen (*last*, extended past 16 bits); a packet
    above it adds the gap before it to the lost count; one at or below it is late and stays counted as lost.
    """
    if len(seq) == 0:
        return 0, 0, last if last is not None else 0
    s = np.asarray(seq, dtype=np.int64)
    steps = ((np.diff(s) + 0x8000) & 0xFFFF) - 0x8000
    if last is None:
        base = int(s[0])
        ext = base + np.r_[0, np.cumsum(steps)]
        top = np.maximum.accumulate(ext)
        before = np.r_[base - 1, top[:-1]]
    else:
        first = int(last) + ((((int(s[0]) - int(last)) + 0x8000) & 0xFFFF) - 0x8000)
        ext = first + np.r_[0, np.cumsum(steps)]
        top = np.maximum.accumulate(np.r_[int(last), ext])[1:]
        before = np.r_[int(last), top[:-1]]
    new = ext > before
    lost = int((ext[new] - before[new] - 1).sum())
    late = int((~new).sum())
    return lost, late, int(top[-1])

"""Python/numpy implementations of the kernels: the fallback when the compiled extension is not built.

Every function here has a twin of the same name and contract in ``_compiled.pyx``; the kernel tests run
both and assert identical results.
"""

from __future__ import annotations

import struct

import numpy as np

_U32 = {True: struct.Struct("<I").unpack_from, False: struct.Struct(">I").unpack_from}
_U32X2 = {True: struct.Struct("<II").unpack_from, False: struct.Struct(">II").unpack_from}

#: pcapng Enhanced Packet Block type and its smallest length
_BT_EPB = 6
_EPB_MIN = 32


def _check(buf, off: int, end: int, max_n: int) -> None:
    if end > len(buf):
        raise ValueError(f"end {end} is past the buffer ({len(buf)} bytes)")
    if off < 0 or max_n < 0:
        raise ValueError("offset and count must not be negative")


def pcap_walk(buf, off: int, end: int, max_n: int, little: bool) -> np.ndarray:
    """Offsets of up to *max_n* classic pcap record headers from *off*, plus the offset after the last one.

    A record header is 16 bytes with the capture length at +8 (in the file's byte order); the walk stops
    when the next header would not fit before *end*.  Returns ``int64[n + 1]``: ``n`` record offsets, then
    the offset where the next record would start (which may lie past *end* when the last record is cut).
    """
    _check(buf, off, end, max_n)
    cap_at = _U32[little]
    lim = end - 16
    offs: list[int] = []
    app = offs.append
    for _ in range(max_n):
        if off > lim:
            break
        app(off)
        off += 16 + cap_at(buf, off + 8)[0]
    offs.append(off)
    return np.array(offs, dtype=np.int64)


def pcapng_walk_epb(buf, off: int, end: int, max_n: int, little: bool) -> np.ndarray:
    """Offsets of a run of up to *max_n* pcapng Enhanced Packet Blocks from *off*, plus the offset after it.

    The run ends before the first block header (type, length) that does not fit before *end*, is not an
    EPB, or has a length below 32.  Returns ``int64[n + 1]`` like :func:`pcap_walk`.
    """
    _check(buf, off, end, max_n)
    hdr = _U32X2[little]
    lim = end - 12
    offs: list[int] = []
    app = offs.append
    for _ in range(max_n):
        if off > lim:
            break
        bt, bl = hdr(buf, off)
        if bt != _BT_EPB or bl < _EPB_MIN:
            break
        app(off)
        off += bl
    offs.append(off)
    return np.array(offs, dtype=np.int64)


# ---------------------------------------------------------------------------
# flow cache hash table: open addressing, linear probing, int32 flow ids (-1 empty, -2 tombstone)
# ---------------------------------------------------------------------------
def flow_lookup(table: np.ndarray, mask: int, store: np.ndarray, h: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Flow id of each key (rows of *keys*, hashes *h*) in *table*, -1 when absent.

    *store* holds each flow id's key words (``store[fid]``); *mask* is the table size minus one.
    Probing stops at an empty slot and skips tombstones.  Returns ``int64[n]``.
    """
    res = np.full(len(h), -1, dtype=np.int64)
    slot = (h & np.uint64(mask)).astype(np.intp)
    pend = np.arange(len(h))
    while len(pend):
        v = table[slot]
        occ = np.flatnonzero(v >= 0)
        done = v == -1
        if len(occ):
            f = v[occ]
            eq = _rows_equal(np.take(store, f, axis=0), keys[pend[occ]])
            hit = occ[eq]
            res[pend[hit]] = f[eq]
            done[hit] = True
        keep = ~done
        pend = pend[keep]
        slot = (slot[keep] + 1) & mask
    return res


def flow_insert(table: np.ndarray, mask: int, h: np.ndarray, fid: np.ndarray) -> int:
    """Put flow ids *fid* (keys known absent, distinct) into *table* at the first free slot from each hash.

    Returns how many tombstones the inserts reused.  Where two ids want one slot the layout may differ
    between implementations; what a lookup finds does not.
    """
    slot = (h & np.uint64(mask)).astype(np.intp)
    pend = np.arange(len(h))
    reused = 0
    while len(pend):
        v = table[slot]
        cand = np.flatnonzero(v < 0)
        if len(cand):
            # contested slots: the last write wins; read back to see who won
            s, ids = slot[cand], fid[pend[cand]]
            table[s] = ids
            won = table[s] == ids
            win = cand[won]
            reused += int(np.count_nonzero(v[win] == -2))
            keep = np.ones(len(pend), dtype=bool)
            keep[win] = False
            pend = pend[keep]
            slot = slot[keep]
        slot = (slot + 1) & mask
    return reused


def _rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise equality of two (n, kw) uint64 arrays (*a* is clobbered)."""
    a ^= b
    acc = a[:, 0].copy()
    for i in range(1, a.shape[1]):
        acc |= a[:, i]
    return acc == 0

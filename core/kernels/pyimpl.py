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

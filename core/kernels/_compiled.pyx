# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels: the per-record loops that numpy cannot vectorise.

Each function has a twin of the same name and contract in :mod:`flowplane.kernels.pyimpl` (read the
contracts there); the kernel tests run both and assert identical results.
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef inline uint32_t _u32(const unsigned char[::1] b, Py_ssize_t i, bint little) noexcept nogil:
    if little:
        return <uint32_t>b[i] | (<uint32_t>b[i + 1] << 8) | (<uint32_t>b[i + 2] << 16) | (<uint32_t>b[i + 3] << 24)
    return (<uint32_t>b[i] << 24) | (<uint32_t>b[i + 1] << 16) | (<uint32_t>b[i + 2] << 8) | <uint32_t>b[i + 3]


def pcap_walk(const unsigned char[::1] buf, int64_t off, int64_t end, Py_ssize_t max_n, bint little):
    """Offsets of up to *max_n* classic pcap record headers from *off*, plus the offset after the last one."""
    if end > buf.shape[0]:
        raise ValueError(f"end {end} is past the buffer ({buf.shape[0]} bytes)")
    if off < 0 or max_n < 0:
        raise ValueError("offset and count must not be negative")
    out = np.empty(max_n + 1, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int64_t lim = end - 16
    cdef Py_ssize_t n = 0
    with nogil:
        while n < max_n and off <= lim:
            o[n] = off
            n += 1
            off += 16 + <int64_t>_u32(buf, off + 8, little)
    o[n] = off
    return out[:n + 1]


def pcapng_walk_epb(const unsigned char[::1] buf, int64_t off, int64_t end, Py_ssize_t max_n, bint little):
    """Offsets of a run of up to *max_n* pcapng Enhanced Packet Blocks from *off*, plus the offset after it."""
    if end > buf.shape[0]:
        raise ValueError(f"end {end} is past the buffer ({buf.shape[0]} bytes)")
    if off < 0 or max_n < 0:
        raise ValueError("offset and count must not be negative")
    out = np.empty(max_n + 1, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int64_t lim = end - 12
    cdef Py_ssize_t n = 0
    cdef uint32_t bt, bl
    with nogil:
        while n < max_n and off <= lim:
            bt = _u32(buf, off, little)
            bl = _u32(buf, off + 4, little)
            if bt != 6 or bl < 32:
                break
            o[n] = off
            n += 1
            off += bl
    o[n] = off
    return out[:n + 1]


def flow_lookup(const int32_t[::1] table, uint64_t mask, const uint64_t[:, ::1] store, const uint64_t[::1] h,
                const uint64_t[:, ::1] keys):
    """Flow id of each key (rows of *keys*, hashes *h*) in *table*, -1 when absent."""
    cdef Py_ssize_t n = h.shape[0], kw = keys.shape[1], i, j
    if keys.shape[0] != n or store.shape[1] != kw:
        raise ValueError("keys, hashes and the key store do not match")
    if table.shape[0] == 0 or (mask + 1) & mask or <Py_ssize_t>mask != table.shape[0] - 1:
        raise ValueError("the table size must be a power of two and mask its size minus one")
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef uint64_t s
    cdef int32_t v
    cdef Py_ssize_t nstore = store.shape[0], size = table.shape[0], probes
    cdef bint eq
    with nogil:
        for i in range(n):
            s = h[i] & mask
            o[i] = -1
            for probes in range(size):  # a table without an empty slot ends the probe after one lap
                v = table[s]
                if v == -1:
                    break
                if v >= 0 and v < nstore:
                    eq = True
                    for j in range(kw):
                        if store[v, j] != keys[i, j]:
                            eq = False
                            break
                    if eq:
                        o[i] = v
                        break
                s = (s + 1) & mask
    return out


def flow_insert(int32_t[::1] table, uint64_t mask, const uint64_t[::1] h, const int32_t[::1] fid):
    """Put flow ids *fid* (keys known absent, distinct) into *table*; returns the tombstones reused."""
    cdef Py_ssize_t n = h.shape[0], i
    if fid.shape[0] != n:
        raise ValueError("hashes and flow ids do not match")
    if table.shape[0] == 0 or (mask + 1) & mask or <Py_ssize_t>mask != table.shape[0] - 1:
        raise ValueError("the table size must be a power of two and mask its size minus one")
    cdef uint64_t s
    cdef Py_ssize_t reused = 0, size = table.shape[0], probes
    with nogil:
        for i in range(n):
            s = h[i] & mask
            probes = 0
            while table[s] >= 0:
                s = (s + 1) & mask
                probes += 1
                if probes == size:
                    with gil:
                        raise ValueError("the flow table is full")
            if table[s] == -2:
                reused += 1
            table[s] = fid[i]
    return reused

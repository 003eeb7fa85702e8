# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels: the per-record loops that numpy cannot vectorise.

Each function has a twin of the same name and contract in :mod:`flowplane.kernels.pyimpl` (read the
contracts there); the kernel tests run both and assert identical results.
"""

import numpy as np

from libc.stdint cimport int64_t, uint32_t

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

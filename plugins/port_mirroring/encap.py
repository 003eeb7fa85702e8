"""Encapsulation for remote analyzers: GRE (RFC 2784) and ERSPAN type II.

The IP header is the kernel's (a raw ``IPPROTO_GRE`` socket), so only what
follows it is built here:

* **GRE**: the 4-byte RFC 2784 header, no checksum/key/sequence, protocol
  type ``0x6558`` (Transparent Ethernet Bridging): the whole Ethernet frame,
  MAC header included, is the GRE payload.  Every packet shares one header.
* **ERSPAN type II**: a GRE header with the sequence-number bit (RFC 2890)
  and protocol ``0x88BE``, then the 8-byte ERSPAN II header::

      |Ver=1 (4)| VLAN (12) | COS (3)|En (2)|T|Session ID (10)|
      |   Reserved (12)     |            Index (20)            |

  ``En`` is 3 (tag preserved in the frame) for a VLAN-tagged frame, else 0;
  ``Index`` carries the ingress interface id.  These headers differ per
  packet (sequence, VLAN, index) and are built for a whole batch at once.
"""

from __future__ import annotations

import struct

import numpy as np

GRE_PROTO_TEB = 0x6558  # Transparent Ethernet Bridging
GRE_PROTO_ERSPAN2 = 0x88BE  # ERSPAN type II
GRE_FLAG_SEQ = 0x1000  # the S bit
ERSPAN_VERSION_2 = 1  # the version field of a type II header
GRE_HEADER = struct.pack("!HH", 0, GRE_PROTO_TEB)
ERSPAN_HEADER_LEN = 16  # GRE with sequence (8) + ERSPAN II (8)
OVERHEAD = {"gre": len(GRE_HEADER), "erspan": ERSPAN_HEADER_LEN}

_ERSPAN_DTYPE = np.dtype([("gflags", ">u2"), ("gproto", ">u2"), ("seq", ">u4"),
                          ("w0", ">u2"), ("w1", ">u2"), ("w2", ">u4")])
assert _ERSPAN_DTYPE.itemsize == ERSPAN_HEADER_LEN


def gre_header() -> bytes:
    """The RFC 2784 header every GRE-mirrored frame carries."""
    return GRE_HEADER


def erspan_header(seq: int, *, session_id: int, vlan: int = 0, index: int = 0, cos: int = 0) -> bytes:
    """GRE (with sequence number) + ERSPAN II header for one frame: the scalar reference."""
    en = 3 if vlan else 0
    return struct.pack("!HHIHHI", GRE_FLAG_SEQ, GRE_PROTO_ERSPAN2, seq & 0xFFFFFFFF,
                       (ERSPAN_VERSION_2 << 12) | (vlan & 0xFFF),
                       ((cos & 7) << 13) | (en << 11) | (session_id & 0x3FF),
                       index & 0xFFFFF)


def erspan_headers(seq0: int, *, session_id: int, vlan: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Headers for a batch: row *i* is ``erspan_header(seq0 + i, vlan=vlan[i], index=index[i])``.

    :return: a C-contiguous ``(n, 16)`` uint8 array.
    """
    n = len(vlan)
    h = np.empty(n, dtype=_ERSPAN_DTYPE)
    h["gflags"] = GRE_FLAG_SEQ
    h["gproto"] = GRE_PROTO_ERSPAN2
    h["seq"] = (np.arange(n, dtype=np.uint64) + np.uint64(seq0 & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
    v = np.asarray(vlan).astype(np.uint16) & np.uint16(0xFFF)
    h["w0"] = np.uint16(ERSPAN_VERSION_2 << 12) | v
    h["w1"] = np.where(v != 0, np.uint16(3 << 11), np.uint16(0)) | np.uint16(session_id & 0x3FF)
    h["w2"] = np.asarray(index).astype(np.uint32) & np.uint32(0xFFFFF)
    return h.view(np.uint8).reshape(n, ERSPAN_HEADER_LEN)

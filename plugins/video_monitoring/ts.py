"""MPEG-TS over UDP and RTP: vectorised header parsing over every datagram of a batch.

:func:`parse_datagrams` takes the UDP rows of a batch and returns, for each datagram, where its media
payload starts (after an RTP header when there is one), its media length and RTP sequence number;
:func:`parse_ts` then expands the datagrams into their 188-byte TS packets and gathers the four header
bytes and the adaptation field's flags of all of them in a handful of numpy gathers (no per-packet Python).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TS_SIZE = 188
SYNC = 0x47
NULL_PID = 0x1FFF
RTP_MIN = 12


@dataclass
class Datagrams:
    """Per-datagram columns (one row per UDP datagram handed in)."""

    media_start: np.ndarray  # int64 index into the batch buffer of the first media byte
    media_len: np.ndarray  # int64 media bytes on the wire (UDP payload minus RTP header and padding)
    captured: np.ndarray  # int64 media bytes present in the capture
    is_rtp: np.ndarray  # bool
    rtp_seq: np.ndarray  # int64 (0 when not RTP)
    is_ts: np.ndarray  # bool: the media starts with a sync byte and holds at least one TS packet
    ts_count: np.ndarray  # int64 whole TS packets in the media (captured ones)
    leftover: np.ndarray  # int64 bytes after the last whole TS packet (a truncated TS packet)


@dataclass
class TsPackets:
    """Per-TS-packet columns, in arrival order; ``row`` is the datagram each came from."""

    row: np.ndarray  # int64
    sync_ok: np.ndarray  # bool
    tei: np.ndarray  # bool transport_error_indicator
    pid: np.ndarray  # int64
    scrambled: np.ndarray  # bool transport_scrambling_control != 0
    afc: np.ndarray  # int64 adaptation_field_control (0 reserved, 1 payload, 2 AF only, 3 AF + payload)
    cc: np.ndarray  # int64 continuity counter
    discontinuity: np.ndarray  # bool discontinuity_indicator of the adaptation field


def _u8(data: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``data[idx]`` where *valid*, else 0 (never reads out of bounds)."""
    safe = np.where(valid, idx, 0)
    if len(data) == 0:
        return np.zeros(len(idx), dtype=np.int64)
    return np.where(valid, data[np.clip(safe, 0, len(data) - 1)], 0).astype(np.int64)


def parse_datagrams(data: np.ndarray, frame_off: np.ndarray, caplen: np.ndarray, l4_off: np.ndarray,
                    payload_off: np.ndarray) -> Datagrams:
    """Find the media payload of each UDP datagram (TS directly in UDP, or in RTP)."""
    frame_off = frame_off.astype(np.int64)
    cap_end = frame_off + caplen.astype(np.int64)
    udp = frame_off + l4_off.astype(np.int64)
    has_udp = (l4_off >= 0) & (udp + 8 <= cap_end)
    udp_len = (_u8(data, udp + 4, has_udp) << 8) | _u8(data, udp + 5, has_udp)
    start = frame_off + payload_off.astype(np.int64)
    wire_len = np.where(has_udp, np.maximum(udp_len - 8, 0), 0)
    avail = np.clip(cap_end - start, 0, None)
    b0 = _u8(data, start, avail > 0)
    # RTP: version 2, and a sync byte right after the header (CSRCs, extension, padding accounted for)
    maybe = (b0 >> 6 == 2) & (avail >= RTP_MIN)
    hdr = RTP_MIN + 4 * (b0 & 0x0F)
    ext = maybe & ((b0 & 0x10) != 0) & (avail >= hdr + 4)
    ext_len = (_u8(data, start + hdr + 2, ext) << 8) | _u8(data, start + hdr + 3, ext)
    hdr = np.where(ext, hdr + 4 + 4 * ext_len, hdr)
    pad = np.where(maybe & ((b0 & 0x20) != 0) & (avail >= wire_len) & (wire_len > 0),
                   _u8(data, start + wire_len - 1, maybe & (avail >= wire_len) & (wire_len > 0)), 0)
    is_rtp = maybe & (avail > hdr) & (_u8(data, start + hdr, maybe & (avail > hdr)) == SYNC) & (b0 != SYNC)
    seq = np.where(is_rtp, (_u8(data, start + 2, is_rtp) << 8) | _u8(data, start + 3, is_rtp), 0)
    skip = np.where(is_rtp, hdr, 0)
    media_len = np.clip(wire_len - skip - np.where(is_rtp, pad, 0), 0, None)
    media_start = start + skip
    captured = np.clip(np.minimum(avail - skip, media_len), 0, None)
    ts_count = captured // TS_SIZE
    first = _u8(data, media_start, captured > 0)
    is_ts = has_udp & (ts_count > 0) & (first == SYNC)
    ts_count = np.where(is_ts, ts_count, 0)
    leftover = np.where(is_ts, media_len - ts_count * TS_SIZE, 0)
    return Datagrams(media_start=media_start, media_len=media_len, captured=captured, is_rtp=is_rtp & is_ts,
                     rtp_seq=seq, is_ts=is_ts, ts_count=ts_count, leftover=leftover)


def parse_ts(data: np.ndarray, dg: Datagrams) -> TsPackets:
    """Every whole TS packet of the TS datagrams, in arrival order."""
    counts = dg.ts_count
    total = int(counts.sum())
    row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first_of_row = np.cumsum(counts) - counts
    within = np.arange(total, dtype=np.int64) - np.repeat(first_of_row, counts)
    at = np.repeat(dg.media_start, counts) + within * TS_SIZE
    ok = np.ones(total, dtype=bool)
    b0 = _u8(data, at, ok)
    b1 = _u8(data, at + 1, ok)
    b2 = _u8(data, at + 2, ok)
    b3 = _u8(data, at + 3, ok)
    sync_ok = b0 == SYNC
    afc = (b3 >> 4) & 3
    has_af = sync_ok & ((afc & 2) != 0)
    af_len = _u8(data, at + 4, has_af)
    af_flags = _u8(data, at + 5, has_af & (af_len > 0))
    return TsPackets(row=row, sync_ok=sync_ok, tei=sync_ok & ((b1 & 0x80) != 0), pid=((b1 & 0x1F) << 8) | b2,
                     scrambled=sync_ok & ((b3 >> 6) != 0), afc=afc, cc=b3 & 0x0F,
                     discontinuity=has_af & (af_len > 0) & ((af_flags & 0x80) != 0))

"""IPFIX (RFC 7011) messages for inline monitoring: clipped packets as data records.

The flow encoders (``ipfix`` / ``v9``) carry fixed-length flow records; an
inline-monitoring record ends with a *variable-length* element, so it is
built here, over whole batches, with numpy gathers (no per-packet Python).

Data template (the Junos guide's five elements, in this order)::

    ingressInterface        10   4
    egressInterface         14   4
    flowDirection           61   1   0 ingress, 1 egress
    dataLinkFrameSize      312   2   the original frame length (wire length, capped at 65535)
    dataLinkFrameSection   315   variable (65535 in the template): the first clip-length bytes
                                     from the Ethernet header; RFC 7011 section 7 length prefix
                                     (1 byte, or 255 + 2 bytes from 255 bytes on)

Options template (scope count 1)::

    exportingProcessId     144   4   scope; the template's observation-domain-id
    samplingInterval        34   4   1 in N sampling of this collector

Message header: version 10, length, export time (s), sequence number (data
records -- options data records included -- sent before this message in
this transport session, mod 2**32, RFC 7011 section 3.1), observation domain id.

Data sets are not padded (padding is optional, RFC 7011 section 3.3.1).
"""

from __future__ import annotations

import struct
import time
from bisect import bisect_right

import numpy as np

from flowplane.api import IPFIX_HEADER, IPFIX_VERSION, ipfix_header

VERSION = IPFIX_VERSION
HEADER = IPFIX_HEADER
SET_HEADER = struct.Struct(">HH")
TEMPLATE_SET_ID = 2
OPTIONS_TEMPLATE_SET_ID = 3
VARIABLE_LENGTH = 65535

IE_INGRESS_INTERFACE = 10
IE_EGRESS_INTERFACE = 14
IE_FLOW_DIRECTION = 61
IE_DATALINK_FRAME_SIZE = 312
IE_DATALINK_FRAME_SECTION = 315
IE_EXPORTING_PROCESS_ID = 144
IE_SAMPLING_INTERVAL = 34

#: (element id, length) of the data template, in record order.
DATA_FIELDS: tuple[tuple[int, int], ...] = (
    (IE_INGRESS_INTERFACE, 4), (IE_EGRESS_INTERFACE, 4), (IE_FLOW_DIRECTION, 1),
    (IE_DATALINK_FRAME_SIZE, 2), (IE_DATALINK_FRAME_SECTION, VARIABLE_LENGTH))
#: (element id, length) of the options template; the first is the scope.
OPTION_FIELDS: tuple[tuple[int, int], ...] = ((IE_EXPORTING_PROCESS_ID, 4), (IE_SAMPLING_INTERVAL, 4))

FIXED = np.dtype([("in", ">u4"), ("out", ">u4"), ("dir", "u1"), ("size", ">u2")])  # packed: 11 bytes
FIXED_LEN = FIXED.itemsize
_EMPTY = np.zeros(0, dtype=np.uint8)


def datagram_limit(mtu: int, ipv6: bool = False) -> int:
    """Largest IPFIX message that fits one UDP datagram on a link of *mtu*."""
    return mtu - (48 if ipv6 else 28)


# ---------------------------------------------------------------------------
# records


class Records:
    """Encoded data records of one batch: one byte buffer and each record's length."""

    __slots__ = ("buf", "lengths", "ends")

    def __init__(self, buf: np.ndarray, lengths: np.ndarray) -> None:
        self.buf = buf
        self.lengths = lengths
        self.ends = np.cumsum(lengths) if len(lengths) else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return int(self.buf.size)


#: Up to this clip length records are built in a padded (n, 14 + clip) table compressed by a mask
#: (about twice as fast as the run-length gather); longer clips waste too much on short frames.
PADDED_MAX_CLIP = 512


def build_records(data: np.ndarray, offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray,
                  ingress: np.ndarray, egress: np.ndarray, direction: np.ndarray, clip: int) -> Records:
    """Data records for frames ``data[offset[i] : offset[i] + caplen[i]]``, each clipped to *clip* bytes.

    All arguments but *data* and *clip* are equal-length columns (the sampled rows).
    """
    n = len(offset)
    if n == 0:
        return Records(_EMPTY, np.zeros(0, dtype=np.int64))
    clip_len = np.minimum(caplen.astype(np.int64), clip)
    np.maximum(clip_len, 0, out=clip_len)
    long = clip_len >= 255
    lengths = FIXED_LEN + np.where(long, 3, 1) + clip_len
    fixed = np.empty(n, dtype=FIXED)
    fixed["in"] = ingress
    fixed["out"] = egress
    fixed["dir"] = direction
    fixed["size"] = np.minimum(wirelen, 65535)
    fixed_bytes = fixed.view(np.uint8).reshape(n, FIXED_LEN)
    if clip <= PADDED_MAX_CLIP:
        return Records(_padded(data, offset, fixed_bytes, clip_len, long, clip), lengths)
    return Records(_gathered(data, offset, fixed_bytes, clip_len, long, lengths), lengths)


def _padded(data, offset, fixed_bytes, clip_len, long, clip) -> np.ndarray:
    """Row i = fixed part, 3 prefix bytes, *clip* frame bytes; a mask keeps the record's bytes, in order."""
    n = len(offset)
    width = FIXED_LEN + 3 + clip
    pad = np.empty((n, width), dtype=np.uint8)
    pad[:, :FIXED_LEN] = fixed_bytes
    pad[:, FIXED_LEN] = 255  # long form: 255, length (2 bytes); short form: the last byte alone
    pad[:, FIXED_LEN + 1] = clip_len >> 8
    pad[:, FIXED_LEN + 2] = clip_len & 0xFF
    idx = offset.astype(np.int64)[:, None] + np.arange(clip)
    np.minimum(idx, max(data.size - 1, 0), out=idx)  # bytes past a frame's end are masked off below
    if data.size:
        pad[:, FIXED_LEN + 3:] = data[idx]
    keep = np.empty((n, width), dtype=bool)
    keep[:, :FIXED_LEN] = True
    keep[:, FIXED_LEN] = long
    keep[:, FIXED_LEN + 1] = long
    keep[:, FIXED_LEN + 2] = True
    np.less(np.arange(clip), clip_len[:, None], out=keep[:, FIXED_LEN + 3:])
    return pad[keep]


def _gathered(data, offset, fixed_bytes, clip_len, long, lengths) -> np.ndarray:
    """One gather of exactly the bytes each record needs (long clips)."""
    n = len(offset)
    prefix = np.where(long, 3, 1)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    out = np.empty(int(starts[-1] + lengths[-1]), dtype=np.uint8)
    out[starts[:, None] + np.arange(FIXED_LEN)] = fixed_bytes
    at = starts + FIXED_LEN
    short = ~long
    out[at[short]] = clip_len[short]
    lat, llen = at[long], clip_len[long]
    out[lat] = 255
    out[lat + 1] = llen >> 8
    out[lat + 2] = llen & 0xFF
    total = int(clip_len.sum())
    if total:
        first = np.cumsum(clip_len) - clip_len  # where each record's bytes start in the gathered run
        intra = np.arange(total, dtype=np.int64) - np.repeat(first, clip_len)
        out[np.repeat(at + prefix, clip_len) + intra] = data[np.repeat(offset.astype(np.int64), clip_len) + intra]
    return out


def pack_sets(records: Records, template_id: int, limit: int) -> list[tuple[bytes, int]]:
    """Split *records* into data sets that each fill one message of at most *limit* bytes.

    Returns ``[(set bytes, record count)]``.
    """
    n = len(records)
    if n == 0:
        return []
    budget = limit - HEADER.size - SET_HEADER.size
    ends = records.ends.tolist()
    buf = records.buf.tobytes()
    out = []
    i = start = 0
    pack = SET_HEADER.pack
    while i < n:
        j = bisect_right(ends, start + budget, i)
        if j <= i:
            raise ValueError(f"a {int(records.lengths[i])}-byte record does not fit a {limit}-byte message")
        end = ends[j - 1]
        out.append((pack(template_id, SET_HEADER.size + end - start) + buf[start:end], j - i))
        i, start = j, end
    return out


# ---------------------------------------------------------------------------
# templates and options


def template_set(template_id: int) -> bytes:
    body = struct.pack(">HH", template_id,
                       len(DATA_FIELDS)) + b"".join(struct.pack(">HH", ie, ln) for ie, ln in DATA_FIELDS)
    return SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body


def options_template_set(option_template_id: int) -> bytes:
    body = struct.pack(">HHH", option_template_id, len(OPTION_FIELDS), 1) + \
        b"".join(struct.pack(">HH", ie, ln) for ie, ln in OPTION_FIELDS)
    return SET_HEADER.pack(OPTIONS_TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body


def options_data_set(option_template_id: int, exporting_process_id: int, sampling_interval: int) -> bytes:
    body = struct.pack(">II", exporting_process_id & 0xFFFF_FFFF, sampling_interval & 0xFFFF_FFFF)
    return SET_HEADER.pack(option_template_id, SET_HEADER.size + len(body)) + body


class Session:
    """One exporter -> collector transport session: the header and its sequence number.

    :param observation_domain_id: the header's domain (and the exportingProcessId value).
    :param sampling_interval: what the options data record reports.
    """

    def __init__(self, *, template_id: int, option_template_id: int, observation_domain_id: int,
                 sampling_interval: int, clock=time.time) -> None:
        self.template_id = template_id
        self.option_template_id = option_template_id
        self.observation_domain_id = observation_domain_id
        self.sampling_interval = sampling_interval
        self.clock = clock
        self.sequence = 0  # data records (and options data records) sent before the next message
        self._template_set = template_set(template_id)
        self._options_template_set = options_template_set(option_template_id)
        self._options_data_set = options_data_set(option_template_id, observation_domain_id, sampling_interval)

    def message(self, sets: list[bytes], data_records: int) -> bytes:
        """One message of *sets* carrying *data_records* (options data included); advances the sequence."""
        length = HEADER.size + sum(len(s) for s in sets)
        head = ipfix_header(length, int(self.clock()), self.sequence, self.observation_domain_id)
        self.sequence += data_records
        return head + b"".join(sets)

    def control_message(self, *, templates: bool, options: bool) -> bytes:
        """Templates (data + options template) and/or the options template with its options data record."""
        sets = []
        if templates:
            sets.append(self._template_set)
        if templates or options:
            sets.append(self._options_template_set)
        if options:
            sets.append(self._options_data_set)
        return self.message(sets, 1 if options else 0)

    def data_messages(self, packed: list[tuple[bytes, int]]) -> list[bytes]:
        """One message per packed data set (see :func:`pack_sets`); advances the sequence."""
        out = []
        now = int(self.clock()) & 0xFFFF_FFFF
        seq = self.sequence
        dom = self.observation_domain_id
        pack = HEADER.pack
        for s, k in packed:
            out.append(pack(VERSION, HEADER.size + len(s), now, seq & 0xFFFF_FFFF, dom) + s)
            seq += k
        self.sequence = seq
        return out

"""Binary flow files (``output: {flows: PATH}``): decoded blocks stored as they are, like nfcapd's files.

JSON lines and msgpack build one Python object per flow (~5-10 us each); this
format writes each decoded block (:class:`~.records.CollectedFlows`) as one
frame -- its :data:`~flowplane.flows.FLOW_DTYPE` rows and sampling intervals
as raw bytes -- so storing costs a copy, not a conversion.  Read it back with
:func:`read_flows` (or ``python -m flowplane.plugins.collector.flowfile PATH``
for JSON lines).

Frame::

    b"FPF1"  u32 header length (big-endian)  header (msgpack map)  columns  sampling intervals

header: ``{"n": records, "cols": [FLOW_DTYPE column names stored], "exporter",
"domain", "version", "template", "scaled", "extra": {name: [kind, values]}}``
where ``values`` is a list (integers, or bytes / None per record) for the
columns not mapped to FLOW_DTYPE (NAT fields, enterprise elements ...).
Then, for each name in ``cols``, ``n`` values of that FLOW_DTYPE column
(native byte order, little-endian on the machines we ship); columns that
are zero in every record of the block are not stored (an IPv4 block stores
about half of the 144-byte row), then ``n * 4`` bytes of uint32 sampling
intervals.  A file is frames back to back; a reader stops at a torn last frame (a crash
mid-write) and says so.  Rotation, write errors and shutdown are the
:class:`~.output.FileWriter`'s (one ``os.write`` per batch).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import msgpack
import numpy as np

from flowplane.api import FLOW_DTYPE

from .records import CollectedFlows

MAGIC = b"FPF1"
_LEN = struct.Struct(">I")


_COLUMNS = [(name, FLOW_DTYPE.fields[name][1], FLOW_DTYPE[name].itemsize) for name in FLOW_DTYPE.names]


def _nonzero_columns(data: np.ndarray) -> list[str]:
    """The FLOW_DTYPE columns not zero in every record: one OR-reduction over the rows, then per column
    a look at its bytes of the result (one pass over the block instead of one per column)."""
    if len(data) == 0:
        return []
    width = FLOW_DTYPE.itemsize
    rows = np.ascontiguousarray(data).view(np.uint8).reshape(len(data), width)
    if width % 8 == 0:
        rows = rows.view(np.uint64)
    ored = np.bitwise_or.reduce(rows, axis=0).tobytes()
    return [name for name, off, size in _COLUMNS if any(ored[off:off + size])]


def encode_block(f: CollectedFlows) -> bytearray:
    """One frame for one decoded block: its non-zero FLOW_DTYPE columns, one after the other.

    Built in one preallocated buffer (each column copied once, straight into its place)."""
    n = len(f.data)
    extra = {}
    for name, values in f.extra.items():
        kind = f.extra_kinds.get(name, "b")
        if isinstance(values, np.ndarray):
            extra[name] = [kind, values.tolist()]
        else:
            extra[name] = [kind, [None if v is None else bytes(v) for v in values]]
    data = f.data
    cols = _nonzero_columns(data)  # all-zero columns are not stored
    head = msgpack.packb({"n": n, "cols": cols, "exporter": f.exporter, "domain": f.domain,
                          "version": f.version, "template": f.template_id, "scaled": f.scaled, "extra": extra},
                         use_bin_type=True)
    sizes = [FLOW_DTYPE[c].itemsize * n for c in cols]
    start = 8 + len(head)
    out = bytearray(start + sum(sizes) + 4 * n)
    out[0:4] = MAGIC
    out[4:8] = _LEN.pack(len(head))
    out[8:start] = head
    buf = np.frombuffer(out, dtype=np.uint8)
    pos = start
    for c, size in zip(cols, sizes):
        buf[pos:pos + size].view(FLOW_DTYPE[c])[:] = data[c]
        pos += size
    buf[pos:].view(np.uint32)[:] = f.sampling_interval
    return out


def read_flows(path: str, *, strict: bool = False) -> Iterator[CollectedFlows]:
    """The blocks of a flow file, in order; a torn last frame ends the file (``strict``: raises)."""
    with open(path, "rb") as fh:
        buf = fh.read()
    o, end = 0, len(buf)
    while o < end:
        if end - o < 8 or buf[o:o + 4] != MAGIC:
            if strict:
                raise ValueError(f"{path}: not a flow frame at offset {o}")
            return
        hl = _LEN.unpack_from(buf, o + 4)[0]
        if end - o - 8 < hl:
            if strict:
                raise ValueError(f"{path}: torn frame header at offset {o}")
            return
        head = msgpack.unpackb(buf[o + 8:o + 8 + hl], raw=False)
        n, cols = head["n"], head["cols"]
        unknown = [c for c in cols if c not in FLOW_DTYPE.names]
        if unknown:
            raise ValueError(f"{path}: columns {unknown} unknown to this flowplane")
        p = o + 8 + hl
        need = sum(FLOW_DTYPE[c].itemsize for c in cols) * n + 4 * n
        if end - p < need:
            if strict:
                raise ValueError(f"{path}: torn frame at offset {o}")
            return
        data = np.zeros(n, dtype=FLOW_DTYPE)
        q = p
        for c in cols:
            dt = FLOW_DTYPE[c]
            data[c] = np.frombuffer(buf, dtype=dt, count=n, offset=q)
            q += dt.itemsize * n
        rates = np.frombuffer(buf, dtype=np.uint32, count=n, offset=q).copy()
        extra, kinds = {}, {}
        for name, (kind, values) in head["extra"].items():
            kinds[name] = kind
            ints = values and all(isinstance(v, int) for v in values)
            extra[name] = np.asarray(values, dtype=np.uint64) if ints else values
        yield CollectedFlows(data, rates, head["exporter"], head["domain"], head["version"], head["template"],
                             extra, kinds, head["scaled"])
        o = p + need


def main(argv: list[str] | None = None) -> int:
    """``python -m flowplane.plugins.collector.flowfile FILE...``: the flows as JSON lines."""
    import json

    try:
        for path in (argv if argv is not None else sys.argv[1:]):
            for f in read_flows(path):
                sys.stdout.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in f.rows()))
    except BrokenPipeError:  # e.g. piped into head
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

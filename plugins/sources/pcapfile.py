"""pcap / pcapng file replay source (``source: pcap``).

Config, under ``interfaces NAME``::

    interfaces:
      replay0:
        source: pcap
        file: /var/lib/flowplane/trace.pcapng   # required
        speed: 0          # 0 = as fast as possible (default); 1.0 = capture speed; 2.0 = twice as fast
        loop: 1           # replay the file N times (default 1)
        batch-size: 1024  # optional, overrides the global batch size

``flowplane run --speed X`` (``SourceContext.speed``) overrides ``speed`` when
non-zero.

Formats: classic pcap in both byte orders with microsecond (``a1b2c3d4``) or
nanosecond (``a1b23c4d``) timestamps; pcapng in either byte order (per
section) with Enhanced, Simple and obsolete Packet Blocks, ``if_tsresol`` /
``if_tsoffset`` per interface, several interfaces with different link types
(a batch never mixes link types: it is cut where the link type changes).
Unknown blocks are skipped.

Speed: the file is ``mmap``-ed and every batch is a zero-copy view,
``PacketBatch.data`` being the whole file as ``uint8`` and ``offset`` the
absolute frame offsets.  A kernel follows the record lengths (compiled when
the extension is built, else a Python loop with one ``unpack_from`` per record;
``show system statistics`` says which) and everything else (timestamps,
lengths, checks) is gathered per batch with numpy.  See ``tests/bench`` / the module's
``__main__`` for the ns/packet figure.

Time: the source never sets a clock; batches carry packet time (``int64`` ns).
With ``speed > 0`` a batch is sent when its last packet is due
(``trio.current_time()`` at start + capture offset / speed), and batches are
cut so that no packet waits more than :data:`HOLD_NS` of (scaled) time.  With
``loop > 1`` each pass is shifted in time by the capture span plus one mean
packet gap, so packet time keeps increasing (flow timeouts stay sane).

Errors: a bad file header (wrong magic, version, snaplen, first record or
block broken) raises :class:`ValueError` naming the file from the factory,
before anything runs.  Damage later in the file never raises: a truncated
last record is counted as ``drops{ingest, truncated_record}``, a corrupt
record/block (length that lies, ``caplen`` above the snaplen or 256 KiB) as
``drops{ingest, bad_record}``, and the rest of that pass is skipped.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Iterator

import numpy as np
import trio

from flowplane.api import DIR_INPUT, ConfigIssue, Counters, PacketBatch, SourceContext, SourceType, hookimpl, kernels

#: Largest capture length we accept for one record (as libpcap/wireshark).
MAX_CAPLEN = 256 * 1024
#: With speed > 0, no packet is held back longer than this (scaled time).
HOLD_NS = 10_000_000

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
BT_IDB = 1
BT_OPB = 2
BT_SPB = 3
BT_EPB = 6

KEYS = ("file", "speed", "loop", "batch-size")

# A raw chunk of one batch: (linktype, iface column or None, offset, caplen, wirelen, ts)
Chunk = tuple


class PcapFormatError(ValueError):
    """The file is not a readable pcap/pcapng file (message names the file)."""


def _open_map(path: str) -> mmap.mmap | None:
    """mmap *path* read-only; None for an empty file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        mm.madvise(mmap.MADV_SEQUENTIAL)
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        pass
    return mm


def open_capture(path: str, drop=None, impl=None) -> PcapReader | PcapngReader:
    """Open *path* and parse its header; raises :class:`PcapFormatError`.

    *drop(reason, n)* is called for damaged records found while reading.  *impl* is the kernel
    implementation to walk records with (one of ``kernels.implementations()``; default: the active one).
    """
    try:
        mm = _open_map(path)
    except OSError as e:
        raise PcapFormatError(f"{path}: cannot open capture file: {e.strerror or e}") from e
    if mm is None or len(mm) < 4:
        raise PcapFormatError(f"{path}: not a pcap/pcapng file: file is empty or shorter than a header")
    magic_le = struct.unpack_from("<I", mm, 0)[0]
    magic_be = struct.unpack_from(">I", mm, 0)[0]
    if magic_le == PCAPNG_SHB:
        return PcapngReader(path, mm, drop, impl)
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        return PcapReader(path, mm, drop, impl)
    raise PcapFormatError(
        f"{path}: not a pcap/pcapng file: bad magic 0x{magic_be:08x} "
        "(expected a1b2c3d4 / a1b23c4d (pcap) or 0a0d0d0a (pcapng))"
    )


def _nodrop(reason: str, n: int) -> None:
    pass


class _ReaderBase:
    path: str
    mm: mmap.mmap
    data: np.ndarray

    def __init__(self, path: str, mm: mmap.mmap, drop, impl=None) -> None:
        self.path = path
        self.kernels = impl or kernels.active()
        self.mm = mm
        self.end = len(mm)
        self.data = np.frombuffer(mm, dtype=np.uint8)
        self.drop = drop or _nodrop
        self.problem: str | None = None  # last damage seen (for logs)
        # strided (unaligned) views: v32[o] is the u32 at byte o, v64[o] the u64
        self._views: dict[str, np.ndarray] = {}

    def _view(self, fmt: str) -> np.ndarray:
        v = self._views.get(fmt)
        if v is None:
            dt = np.dtype(fmt)
            v = np.ndarray(shape=(max(self.end - dt.itemsize + 1, 0),), dtype=dt, buffer=self.mm, strides=(1,))
            self._views[fmt] = v
        return v

    def _damaged(self, reason: str, what: str, n: int = 1) -> None:
        self.problem = f"{self.path}: {what}"
        self.drop(reason, n)


# ----------------------------------------------------------------------------
# classic pcap
# ----------------------------------------------------------------------------
class PcapReader(_ReaderBase):
    """Classic libpcap file: 24-byte header, 16-byte record headers."""

    kind = "pcap"

    def __init__(self, path: str, mm: mmap.mmap, drop=None, impl=None) -> None:
        super().__init__(path, mm, drop, impl)
        if self.end < 24:
            raise PcapFormatError(f"{path}: truncated pcap header ({self.end} of 24 bytes)")
        magic = struct.unpack_from("<I", mm, 0)[0]
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.bo = "<"
        else:
            self.bo = ">"
            magic = struct.unpack_from(">I", mm, 0)[0]
        self.nanos = magic == PCAP_MAGIC_NS
        vmaj, vmin, _tz, _sig, snaplen, network = struct.unpack_from(self.bo + "HHiIII", mm, 4)
        if vmaj != 2:
            raise PcapFormatError(f"{path}: unsupported pcap version {vmaj}.{vmin} (expected 2.4)")
        self.snaplen = snaplen
        self.linktype = network & 0xFFFF  # upper bits: FCS length flags
        # caplen limit: the snaplen (when set and sane), never above MAX_CAPLEN
        self.maxcap = min(snaplen, MAX_CAPLEN) if 0 < snaplen else MAX_CAPLEN
        self._cap_at = struct.Struct(self.bo + "8xI").unpack_from
        self._first = 24
        if self.end > 24:
            if self.end < 40:
                raise PcapFormatError(f"{path}: truncated first record header ({self.end - 24} of 16 bytes)")
            cap = self._cap_at(mm, 24)[0]
            if cap > self.maxcap:
                raise PcapFormatError(
                    f"{path}: first record has caplen {cap} > snaplen {snaplen} / limit {MAX_CAPLEN}; "
                    "not a valid pcap file"
                )
            if 40 + cap > self.end:
                raise PcapFormatError(f"{path}: first record truncated ({self.end - 40} of {cap} bytes)")
        u32 = self.bo + "u4"
        self._ts64 = self.bo + "u8"
        self._u32 = u32

    def chunks(self, max_n: int, hold_ns: int = 0) -> Iterator[Chunk]:
        """One pass over the file: ``(linktype, None, offset, caplen, wirelen, ts)`` per batch."""
        mm = self.mm
        end = self.end
        lim = end - 16
        walk = self.kernels.pcap_walk
        v64 = self._view(self._ts64)
        v32 = self._view(self._u32)
        maxcap = self.maxcap
        frac_mult = 1 if self.nanos else 1000
        little = self.bo == "<"
        off = self._first
        while off <= lim:
            o = walk(mm, off, end, max_n, little)
            off = int(o[-1])
            caplen = np.diff(o)
            caplen -= 16
            o = o[:-1]
            stop = False
            # damage: caplen above the limit (lying length) or a record past the end
            bad = caplen > maxcap
            if bad.any():
                i = int(bad.argmax())
                self._damaged("bad_record", f"record at byte {int(o[i])}: caplen {int(caplen[i])} > {maxcap}")
                o, caplen, stop = o[:i], caplen[:i], True
            elif off > end:  # the last record runs past the end of the file
                self._damaged("truncated_record", f"last record at byte {int(o[-1])} truncated")
                o, caplen, stop = o[:-1], caplen[:-1], True
            if len(o) == 0:
                if stop:
                    return
                continue
            tsv = v64[o]  # read in file byte order: LE -> sec | frac << 32, BE -> sec << 32 | frac
            if little:
                ts = (tsv & 0xFFFFFFFF).astype(np.int64)
                frac = (tsv >> 32).astype(np.int64)
            else:
                ts = (tsv >> 32).astype(np.int64)
                frac = (tsv & 0xFFFFFFFF).astype(np.int64)
            ts *= 1_000_000_000
            if frac_mult != 1:
                frac *= frac_mult
            ts += frac
            if hold_ns and len(ts) > 1 and int(ts[-1]) - int(ts[0]) > hold_ns:
                i = int(np.argmax(ts - ts[0] > hold_ns))
                off = int(o[i])
                o, caplen, ts = o[:i], caplen[:i], ts[:i]
                stop = False
            wirelen = v32[o + 12].astype(np.int32)
            yield (self.linktype, None, o + 16, caplen.astype(np.int32), wirelen, ts)
            if stop:
                return
        if off < end:  # a partial record header at the end
            self._damaged("truncated_record", f"partial record header at byte {off}")


# ----------------------------------------------------------------------------
# pcapng
# ----------------------------------------------------------------------------
class _Interface:
    __slots__ = ("linktype", "snaplen", "tsres", "tsoffset", "name")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.tsres = ("dec", 6)  # ("dec", n) = 10^-n s, ("bin", n) = 2^-n s
        self.tsoffset = 0
        self.name = ""


def _units_to_ns(raw: np.ndarray, tsres: tuple) -> np.ndarray:
    """uint64 timestamps in interface units -> int64 ns."""
    kind, n = tsres
    if kind == "dec":
        if n == 9:
            return raw.astype(np.int64)
        if n < 9:
            return raw.astype(np.int64) * (10 ** (9 - n))
        return (raw // np.uint64(10 ** (n - 9))).astype(np.int64)
    # binary fraction 2^-n
    sec = (raw >> np.uint64(n)).astype(np.int64)
    frac = raw & np.uint64((1 << n) - 1)
    if n > 30:  # keep frac * 1e9 inside 64 bits
        frac = frac >> np.uint64(n - 30)
        n = 30
    return sec * 1_000_000_000 + ((frac * np.uint64(1_000_000_000)) >> np.uint64(n)).astype(np.int64)


def _scalar_ns(raw: int, tsres: tuple) -> int:
    kind, n = tsres
    if kind == "dec":
        return raw * 10 ** (9 - n) if n <= 9 else raw // 10 ** (n - 9)
    return (raw * 1_000_000_000) >> n


class PcapngReader(_ReaderBase):
    """pcapng: sections (SHB) with their own byte order, interfaces (IDB), packets (EPB/SPB/OPB)."""

    kind = "pcapng"

    def __init__(self, path: str, mm: mmap.mmap, drop=None, impl=None) -> None:
        super().__init__(path, mm, drop, impl)
        # validate the first section header and the blocks up to the first packet
        self._shb(0)
        off = self._first = self._next_after_shb
        # walk header blocks (IDBs etc.) until the first packet, validating them
        while off + 12 <= self.end:
            bt, bl = struct.unpack_from(self.bo + "II", mm, off)
            if bt == PCAPNG_SHB:
                break
            self._check_block(off, bt, bl, at_start=True)
            if bt in (BT_EPB, BT_SPB, BT_OPB):
                break  # the first packet block is sane
            off += bl
        if 0 < self.end - off < 12:
            raise PcapFormatError(f"{path}: truncated block header at byte {off}")
        # interfaces are rebuilt while reading; start over from the first SHB
        self.interfaces = []

    # -- block level helpers ------------------------------------------------
    def _shb(self, off: int) -> None:
        mm, path = self.mm, self.path
        if off + 28 > self.end:
            raise PcapFormatError(f"{path}: truncated pcapng section header at byte {off}")
        bom_le = struct.unpack_from("<I", mm, off + 8)[0]
        if bom_le == PCAPNG_BOM:
            bo = "<"
        elif struct.unpack_from(">I", mm, off + 8)[0] == PCAPNG_BOM:
            bo = ">"
        else:
            raise PcapFormatError(f"{path}: bad pcapng byte-order magic 0x{bom_le:08x} at byte {off + 8}")
        bl, _bom, vmaj, vmin = struct.unpack_from(bo + "IIHH", mm, off + 4)
        if vmaj != 1:
            raise PcapFormatError(f"{path}: unsupported pcapng version {vmaj}.{vmin} at byte {off}")
        if bl < 28 or bl % 4 or off + bl > self.end or struct.unpack_from(bo + "I", mm, off + bl - 4)[0] != bl:
            raise PcapFormatError(f"{path}: pcapng section header at byte {off}: block length {bl} lies")
        self.bo = bo
        self.interfaces: list[_Interface] = []
        self._next_after_shb = off + bl
        self._hdr = struct.Struct(bo + "II").unpack_from
        self._u32 = bo + "u4"

    def _check_block(self, off: int, bt: int, bl: int, at_start: bool = False) -> bool:
        """Length checks for one block; raises at start, else counts and returns False."""
        if bl >= 12 and off + bl > self.end:
            what = f"block type 0x{bt:x} at byte {off} truncated (length {bl}, {self.end - off} bytes left)"
            if at_start:
                raise PcapFormatError(f"{self.path}: {what}")
            self._damaged("truncated_record", what)
            return False
        if bl < 12 or bl % 4 or struct.unpack_from(self.bo + "I", self.mm, off + bl - 4)[0] != bl:
            what = f"block type 0x{bt:x} at byte {off}: block length {bl} lies"
            if at_start:
                raise PcapFormatError(f"{self.path}: {what}")
            self._damaged("bad_record", what)
            return False
        if bt in (BT_EPB, BT_OPB) and at_start:
            if bl < 32:
                raise PcapFormatError(f"{self.path}: packet block at byte {off} too short ({bl} bytes)")
            ifc = struct.unpack_from(self.bo + ("I" if bt == BT_EPB else "H"), self.mm, off + 8)[0]
            cap = struct.unpack_from(self.bo + "I", self.mm, off + 20)[0]
            if ifc >= len(self.interfaces):
                raise PcapFormatError(f"{self.path}: packet block at byte {off} names interface {ifc}, "
                                      f"but only {len(self.interfaces)} interface blocks precede it")
            if cap > bl - 32 or cap > MAX_CAPLEN:
                raise PcapFormatError(f"{self.path}: packet block at byte {off}: caplen {cap} lies "
                                      f"(block length {bl}, limit {MAX_CAPLEN})")
        if bt == BT_IDB:
            if bl < 20:
                if at_start:
                    raise PcapFormatError(f"{self.path}: interface block at byte {off} too short")
                self._damaged("bad_record", f"interface block at byte {off} too short")
                return False
            self._idb(off, bl)
        return True

    def _idb(self, off: int, bl: int) -> None:
        mm, bo = self.mm, self.bo
        lt, _res, snap = struct.unpack_from(bo + "HHI", mm, off + 8)
        itf = _Interface(lt, snap)
        p, stop = off + 16, off + bl - 4
        while p + 4 <= stop:
            code, ln = struct.unpack_from(bo + "HH", mm, p)
            if code == 0:
                break
            val = mm[p + 4 : p + 4 + ln]
            if code == 9 and ln >= 1:  # if_tsresol
                v = val[0]
                itf.tsres = ("bin", v & 0x7F) if v & 0x80 else ("dec", v)
            elif code == 14 and ln >= 8:  # if_tsoffset (seconds)
                itf.tsoffset = struct.unpack_from(bo + "q", val, 0)[0] * 1_000_000_000
            elif code == 2:  # if_name
                itf.name = bytes(val).decode("utf-8", "replace")
            p += 4 + ((ln + 3) & ~3)
        self.interfaces.append(itf)

    # -- reading ------------------------------------------------------------
    def chunks(self, max_n: int, hold_ns: int = 0) -> Iterator[Chunk]:
        """One pass: ``(linktype, idb-index column, offset, caplen, wirelen, ts)`` per batch."""
        mm, end = self.mm, self.end
        lim = end - 12
        walk = self.kernels.pcapng_walk_epb
        self._shb(0)
        off = self._next_after_shb
        last_ts = 0
        while off <= lim:
            hdr = self._hdr
            # fast path: a run of EPBs
            run = walk(mm, off, end, max_n, self.bo == "<")
            if len(run) > 1:
                offs, off = run[:-1], int(run[-1])
                res = self._epb_chunk(offs, off, hold_ns)
            else:
                # slow path: one non-EPB block (or a run of SPB/OPB)
                if off + 12 > end:
                    break
                bt, bl = hdr(mm, off)
                if bt == PCAPNG_SHB:
                    try:
                        self._shb(off)
                    except PcapFormatError as e:
                        self._damaged("bad_record", str(e).split(": ", 1)[-1])
                        return
                    off = self._next_after_shb
                    continue
                if not self._check_block(off, bt, bl):
                    return
                if bt == BT_EPB:  # shorter than an EPB header
                    self._damaged("bad_record", f"enhanced packet block at byte {off} too short ({bl} bytes)")
                    return
                if bt not in (BT_SPB, BT_OPB):
                    off += bl  # IDB (already parsed by _check_block), ISB, NRB, DSB, custom, unknown
                    continue
                res = self._slow_chunk(off, max_n, last_ts)
            if res is None:
                return
            chunk, off = res
            if chunk is not None:
                last_ts = int(chunk[5][-1])
                yield chunk
        if off < end:
            self._damaged("truncated_record", f"partial block header at byte {off}")

    def _epb_chunk(self, offs: np.ndarray, off_next: int, hold_ns: int):
        """Vector part for a run of EPBs.  Returns (chunk or None, next offset) or None to stop."""
        end = self.end
        v32 = self._view(self._u32)
        o = np.asarray(offs, dtype=np.int64)
        blen = v32[o + 4].astype(np.int64)
        stop = False
        # block length must stay inside the file, agree with the trailer, and hold the data
        inside = o + blen <= end
        if not inside.all():
            i = int(np.argmin(inside))
            self._damaged("truncated_record", f"enhanced packet block at byte {int(o[i])} truncated")
            o, blen, stop = o[:i], blen[:i], True
        ifc = v32[o + 8].astype(np.int64)
        caplen = v32[o + 20].astype(np.int64)
        trailer = v32[o + blen - 4].astype(np.int64)
        nif = len(self.interfaces)
        snap = np.array([i.snaplen or MAX_CAPLEN for i in self.interfaces] or [0], dtype=np.int64)
        ok = (blen % 4 == 0) & (trailer == blen) & (caplen <= blen - 32) & (ifc < nif)
        if ok.all():
            ok &= (caplen <= np.minimum(snap[np.minimum(ifc, max(nif - 1, 0))], MAX_CAPLEN))
        if not ok.all():
            i = int(np.argmin(ok))
            self._damaged("bad_record", f"enhanced packet block at byte {int(o[i])}: length, caplen or interface lies")
            o, blen, ifc, caplen, stop = o[:i], blen[:i], ifc[:i], caplen[:i], True
        n = len(o)
        if n == 0:
            return None if stop else (None, off_next)
        # one link type per batch
        lts = [itf.linktype for itf in self.interfaces]
        lt0 = lts[int(ifc[0])]
        if nif > 1:
            lt_col = np.array(lts, dtype=np.int64)[ifc]
            diff = lt_col != lt0
            if diff.any():
                i = int(diff.argmax())
                o, blen, ifc, caplen, stop = o[:i], blen[:i], ifc[:i], caplen[:i], False
                off_next = int(o[-1] + blen[-1])
        # timestamps per interface resolution
        raw = (v32[o + 12].astype(np.uint64) << np.uint64(32)) | v32[o + 16].astype(np.uint64)
        itfs = self.interfaces
        first = itfs[int(ifc[0])]
        if all(x.tsres == first.tsres and x.tsoffset == first.tsoffset for x in itfs):
            ts = _units_to_ns(raw, first.tsres)
            if first.tsoffset:
                ts += first.tsoffset
        else:
            ts = np.empty(len(o), dtype=np.int64)
            for k in np.unique(ifc):
                m = ifc == k
                itf = itfs[int(k)]
                ts[m] = _units_to_ns(raw[m], itf.tsres) + itf.tsoffset
        if hold_ns and len(ts) > 1 and int(ts[-1]) - int(ts[0]) > hold_ns:
            i = int(np.argmax(ts - ts[0] > hold_ns))
            off_next = int(o[i])
            o, ifc, caplen, ts = o[:i], ifc[:i], caplen[:i], ts[:i]
            stop = False
        wirelen = v32[o + 24].astype(np.int32)
        chunk = (lt0, ifc.astype(np.int32), o + 28, caplen.astype(np.int32), wirelen, ts)
        if stop:
            # yield what is good, then stop: signal via an offset past the end
            return chunk, end + 1
        return chunk, off_next

    def _slow_chunk(self, off: int, max_n: int, last_ts: int):
        """A run of SPB/OPB blocks (rare), parsed one by one."""
        mm, bo, end = self.mm, self.bo, self.end
        offs, caps, wls, tss, ifcs = [], [], [], [], []
        lt0 = None
        while len(offs) < max_n and off + 12 <= end:
            bt, bl = self._hdr(mm, off)
            if bt not in (BT_SPB, BT_OPB):
                break
            if not self._check_block(off, bt, bl):
                off = end + 1
                break
            if not self.interfaces:
                self._damaged("bad_record", f"packet block at byte {off} before any interface block")
                off = end + 1
                break
            if bt == BT_SPB:
                if bl < 16:
                    self._damaged("bad_record", f"simple packet block at byte {off} too short")
                    off = end + 1
                    break
                itf_i = 0
                (wl,) = struct.unpack_from(bo + "I", mm, off + 8)
                itf = self.interfaces[0]
                cap = min(wl, bl - 16, itf.snaplen or MAX_CAPLEN)
                data_off, ts = off + 12, last_ts
            else:
                itf_i, _drops, hi, lo, cap, wl = struct.unpack_from(bo + "HHIIII", mm, off + 8)
                if bl < 32 or cap > bl - 32 or itf_i >= len(self.interfaces) or cap > MAX_CAPLEN:
                    self._damaged("bad_record", f"packet block at byte {off}: length, caplen or interface lies")
                    off = end + 1
                    break
                itf = self.interfaces[itf_i]
                data_off = off + 28
                ts = _scalar_ns((hi << 32) | lo, itf.tsres) + itf.tsoffset
            if lt0 is None:
                lt0 = itf.linktype
            elif itf.linktype != lt0:
                break
            offs.append(data_off)
            caps.append(cap)
            wls.append(wl)
            tss.append(ts)
            ifcs.append(itf_i)
            last_ts = ts
            off += bl
        if not offs:
            return None if off > end else (None, off)
        chunk = (
            lt0,
            np.array(ifcs, dtype=np.int32),
            np.array(offs, dtype=np.int64),
            np.array(caps, dtype=np.int32),
            np.array(wls, dtype=np.int32),
            np.array(tss, dtype=np.int64),
        )
        return chunk, off


# ----------------------------------------------------------------------------
# the source
# ----------------------------------------------------------------------------
def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class PcapSource:
    """Replays one capture file; ``finite`` (returns when the last pass is sent)."""

    finite = True
    capabilities: frozenset[str] = frozenset()

    def __init__(self, ctx: SourceContext) -> None:
        cfg = ctx.config or {}
        issues = _validate(cfg, ("interfaces", ctx.name), check_file=False)
        if issues:
            raise ValueError("; ".join(f"{'.'.join(map(str, i.path))}: {i.message}" for i in issues))
        self.name = ctx.name
        self.path = _resolve(str(cfg["file"]), getattr(ctx, "base_dir", None))
        self.iface_id = ctx.iface_id
        self.interfaces = ctx.interfaces
        self.speed = float(ctx.speed) if ctx.speed else float(cfg.get("speed", 0) or 0)
        self.loop = int(cfg.get("loop", 1))
        self.batch_size = int(cfg.get("batch-size") or ctx.batch_size)
        self.log = ctx.log
        self.counters = Counters(ctx.name)
        self.reader = open_capture(self.path, self._drop)
        self._iface_map: np.ndarray | None = None

    def _drop(self, reason: str, n: int) -> None:
        self.counters.drop("ingest", reason, n)
        if self.log is not None:
            self.log.warning("pcap_damaged", file=self.path, reason=reason, detail=self.reader.problem
                             if hasattr(self, "reader") else None)

    def _iface_column(self, idb: np.ndarray | None, n: int):
        """pcapng interface 0 -> ctx.iface_id; interface k>0 -> ``NAME#k`` in the interface table."""
        if idb is None:
            return self.iface_id
        nif = len(getattr(self.reader, "interfaces", ())) or 1
        if self._iface_map is None or len(self._iface_map) < nif:
            ids = [self.iface_id] + [self.interfaces.id(f"{self.name}#{k}") for k in range(1, nif)]
            self._iface_map = np.array(ids, dtype=np.int32)
        if nif == 1:
            return self.iface_id
        return self._iface_map[idb]

    def batches(self) -> Iterator[PacketBatch]:
        """All batches of all passes, synchronously (what :meth:`run` sends)."""
        hold = int(HOLD_NS * self.speed) if self.speed > 0 else 0
        shift = 0
        data = self.reader.data
        for _pass in range(self.loop):
            first = last = None
            n = 0
            for lt, idb, off, cap, wl, ts in self.reader.chunks(self.batch_size, hold):
                if first is None:
                    first = int(ts[0])
                last = int(ts[-1])
                n += len(off)
                if shift:
                    ts = ts + shift
                yield PacketBatch(data, off, cap, wl, ts, linktype=lt,
                                  iface=self._iface_column(idb, len(off)), direction=DIR_INPUT,
                                  source=self.name)
            if first is None:
                break  # empty file: nothing to loop
            gap = (last - first) // (n - 1) if n > 1 else 1_000
            shift += (last - first) + max(gap, 1)

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        c = self.counters.values
        speed = self.speed
        t0 = ts0 = None
        for batch in self.batches():
            if speed > 0:
                if t0 is None:
                    t0, ts0 = trio.current_time(), int(batch.ts[0])
                await trio.sleep_until(t0 + (int(batch.ts[-1]) - ts0) / 1e9 / speed)
            await send.send(batch)
            c["packets"] += len(batch)
            c["bytes"] += int(batch.wirelen.sum(dtype=np.int64))
            c["batches"] += 1
        if self.log is not None:
            self.log.info("pcap_replay_done", file=self.path, packets=c["packets"], passes=self.loop)


# ----------------------------------------------------------------------------
# config validation and registration
# ----------------------------------------------------------------------------
def _resolve(f: str, base_dir: str | None) -> str:
    """``~`` expanded; a relative path resolves against the config file's directory."""
    p = os.path.expanduser(f)
    if base_dir and not os.path.isabs(p):
        p = os.path.join(base_dir, p)
    return p


def validate(name: str, section: dict, path: tuple, base_dir: str | None = None) -> list[ConfigIssue]:
    """Issues in ``interfaces NAME`` for ``source: pcap``.

    Relative file paths are checked against *base_dir* (the config file's
    directory), as the factory resolves them against ``SourceContext.base_dir``.
    """
    return _validate(section, path, check_file=True, base_dir=base_dir)


def _validate(section: dict, path: tuple, *, check_file: bool, base_dir: str | None = None) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    section = section or {}
    f = section.get("file")
    if f is None or f == "":
        issues.append(ConfigIssue(path + ("file",), "missing: a pcap/pcapng file to replay is required"))
    elif not isinstance(f, str):
        issues.append(ConfigIssue(path + ("file",), f"expected a file path, got {type(f).__name__}"))
    elif check_file:
        p = _resolve(f, base_dir)
        if not os.path.exists(p):
            issues.append(ConfigIssue(path + ("file",), f"file {f!r} does not exist"))
        elif not os.path.isfile(p):
            issues.append(ConfigIssue(path + ("file",), f"{f!r} is not a regular file"))
        elif not os.access(p, os.R_OK):
            issues.append(ConfigIssue(path + ("file",), f"file {f!r} is not readable"))
        else:
            try:
                with open(p, "rb") as fh:
                    head = fh.read(4)
            except OSError as e:
                issues.append(ConfigIssue(path + ("file",), f"file {f!r} cannot be read: {e.strerror}"))
            else:
                mags = {PCAP_MAGIC_US, PCAP_MAGIC_NS, PCAPNG_SHB}
                if len(head) < 4 or (struct.unpack("<I",
                                                   head)[0] not in mags and struct.unpack(">I", head)[0] not in mags):
                    issues.append(ConfigIssue(path + ("file",), f"file {f!r} is not a pcap or pcapng file"))
    if "speed" in section:
        s = section["speed"]
        if not _num(s) or s < 0:
            issues.append(ConfigIssue(path + ("speed",), "expected a number >= 0 (0 = as fast as possible, 1.0 = "
                                                         f"capture speed), got {s!r}"))
    if "loop" in section:
        v = section["loop"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            issues.append(ConfigIssue(path + ("loop",), "expected an integer >= 1 (times to replay the file), got "
                                                        f"{v!r}"))
    if "batch-size" in section:
        v = section["batch-size"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65536:
            issues.append(ConfigIssue(path + ("batch-size",), f"expected an integer 1..65536, got {v!r}"))
    return issues


SOURCE_TYPE = SourceType(
    name="pcap",
    factory=PcapSource,
    validate=validate,
    capabilities=frozenset(),
    keys=KEYS,
    help="replay a pcap/pcapng file (mmap, zero copy); keys: file, speed, loop, batch-size",
    batch_size=4096,  # a replay is not latency-bound: big batches amortise the per-batch costs
    clock="packet",  # flow timeouts run on the capture's timestamps
    live=False,  # a file never contains what flowplane sends
)


@hookimpl
def flowplane_register_sources(register):
    register("pcap", SOURCE_TYPE)


def _bench(argv: list[str] | None = None) -> None:  # pragma: no cover - manual benchmark
    """``python -m flowplane.plugins.sources.pcapfile FILE [BATCH]``: read speed in ns/packet."""
    import sys
    import time

    args = sys.argv[1:] if argv is None else argv
    path = args[0]
    bs = int(args[1]) if len(args) > 1 else 256
    for _ in range(3):
        r = open_capture(path)
        n = 0
        t = time.perf_counter()
        for chunk in r.chunks(bs):
            n += len(chunk[2])
        dt = time.perf_counter() - t
        print(f"{path}: {n} packets, batch {bs}: {dt * 1e9 / max(n, 1):.1f} ns/packet ({n / dt / 1e6:.2f} Mpps)")


if __name__ == "__main__":  # pragma: no cover
    _bench()

"""Where decoded flows go: a bounded in-memory ring (for ``show``), JSON-lines and msgpack files, re-export.

Config (``services flow-collector output``)::

    output:
      jsonl: /var/lib/flowplane/flows.jsonl      # one JSON object per flow and line
      msgpack: /var/lib/flowplane/flows.msgpack  # one msgpack map per flow (the same fields), back to back
      flows: /var/lib/flowplane/flows.fpf        # binary blocks, raw FLOW_DTYPE rows (flowfile.py): fastest
      rotate: {seconds: 300, bytes: 100000000}   # optional; either or both
      forward:                                   # re-export (see forward.py)
        - {address: 192.0.2.10, port: 4739, version: 10, transport: tcp}
        - {address: 192.0.2.11, port: 2055, version: 9}
      nats: {url: nats://127.0.0.1:4222, stream: FLOWS, subject-prefix: flows,   # JetStream bus (see bus.py)
             spool: {path: /var/lib/flowplane/spool, max-bytes: 100000000}}

Files (:class:`FileWriter`), decisions:

* **No rotate**: records are appended to PATH itself (as before rotation existed).
* **Rotate**: records go to ``PATH.current``; when the file is due -- the wall
  clock crossed a multiple of ``seconds`` (files cover aligned intervals, like
  nfcapd), or the next record would take it past ``bytes`` -- it is fsync-ed,
  closed and renamed (atomic, same directory) to ``PATH.YYYYmmddHHMMSS`` (UTC,
  the time it was opened; ``.1``, ``.2`` ... when that name exists).  A
  reader only ever sees complete files under the timestamped names.  The next
  record opens a new ``PATH.current`` (no empty files).  A size rotation
  happens between records, never inside one; a single record bigger than
  ``bytes`` gets a file of its own.  A ``PATH.current`` left by a crash is
  renamed (by its mtime) before the first write, so it is never appended to
  nor overwritten.
* **Shutdown** (SIGTERM, reload): the collector decodes what is queued, then
  :meth:`FileWriter.close` renames the current file: every record written is
  in exactly one timestamped file.
* **Writes** are one unbuffered ``os.write`` per batch (per segment between
  rotations): nothing waits in a user-space buffer, so nothing can be lost
  there.  A failed write (disk full, EIO, read-only file system, a path that
  cannot be opened) never raises: the file is truncated back to its last
  complete record, the batch's records are counted as dropped
  (``drops[("output", "jsonl-write-error")]``), ``errors`` is counted, and
  the error is logged once (``collector_output_failed``) until a write
  succeeds again (``collector_output_recovered`` with the count dropped).
  The next batch tries again.
* One path per process: two collectors must not write the same PATH.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import structlog

from flowplane.api import ConfigIssue, Counters, check_int, check_keys, check_mapping, check_number

from .records import CollectedFlows

log = structlog.get_logger("flowplane.collector")

OUTPUT_KEYS = ("jsonl", "msgpack", "flows", "rotate", "forward", "nats")
ROTATE_KEYS = ("seconds", "bytes")
FORMATS = ("jsonl", "msgpack", "flows")


class FlowRing:
    """The last *size* decoded flows, kept as the decoders' chunks (no per-flow objects)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.chunks: deque[CollectedFlows] = deque()
        self.count = 0

    def add(self, flows: CollectedFlows) -> None:
        if self.size <= 0 or not len(flows):
            return
        if len(flows) > self.size:
            flows = flows.tail(self.size)
        self.chunks.append(flows)
        self.count += len(flows)
        while self.chunks and self.count - len(self.chunks[0]) >= self.size:
            self.count -= len(self.chunks.popleft())

    def last(self, n: int) -> list[dict]:
        """The last *n* flows, oldest first, as plain dicts."""
        out: list[dict] = []
        for chunk in reversed(self.chunks):
            need = n - len(out)
            if need <= 0:
                break
            out[:0] = chunk.tail(need).rows()
        return out[-n:] if n else []

    def clear(self) -> None:
        self.chunks.clear()
        self.count = 0


@dataclass(frozen=True)
class Rotate:
    """Rotate the current file every *seconds* (aligned to the clock) and/or before it exceeds *bytes*."""

    seconds: float | None = None
    bytes: int | None = None


@dataclass
class OutputConfig:
    jsonl: str | None = None
    msgpack: str | None = None
    flows: str | None = None  # binary flow file (flowfile.py)
    rotate: Rotate | None = None
    forward: list = field(default_factory=list)  # forward.Forward
    nats: object = None  # bus.NatsConfig


def parse_output(out, path: tuple, registries: Any = None) -> tuple[OutputConfig, list[ConfigIssue]]:
    """``output: {jsonl, msgpack, rotate, forward}`` -> an :class:`OutputConfig` and the problems, with key paths."""
    from .forward import parse_forward

    cfg = OutputConfig()
    issues = check_mapping(out, path, "output: {jsonl: PATH, msgpack: PATH, rotate: {...}, forward: [...]}")
    if issues:
        return cfg, issues
    issues += check_keys(out, OUTPUT_KEYS, path)
    for kind in FORMATS:
        if kind in out:
            if not isinstance(out[kind], str) or not out[kind]:
                issues.append(ConfigIssue(path + (kind,), f"expected a file path, got {out[kind]!r}"))
            else:
                setattr(cfg, kind, out[kind])
    paths = [(k, os.path.abspath(getattr(cfg, k))) for k in FORMATS if getattr(cfg, k)]
    for k, p in paths:
        if any(p == q for k2, q in paths if FORMATS.index(k2) < FORMATS.index(k)):
            issues.append(ConfigIssue(path + (k,), "jsonl, msgpack and flows must be different files"))
    rot = out.get("rotate")
    if rot is not None:
        p = path + ("rotate",)
        bad = check_mapping(rot, p, "rotate: {seconds: N, bytes: N}")
        if not bad:
            bad += check_keys(rot, ROTATE_KEYS, p)
            if "seconds" in rot:
                bad += check_number(rot["seconds"], p + ("seconds",), 1, 7 * 86400)
            if "bytes" in rot:
                bad += check_int(rot["bytes"], p + ("bytes",), 1, 1 << 50)
            if not bad and not rot:
                bad.append(ConfigIssue(p, "expected seconds and/or bytes"))
        issues += bad
        if not bad:
            cfg.rotate = Rotate(float(rot["seconds"]) if "seconds" in rot else None, rot.get("bytes"))
        if not bad and not (cfg.jsonl or cfg.msgpack or cfg.flows):
            issues.append(ConfigIssue(p, "rotate needs a jsonl, msgpack or flows file"))
    if "forward" in out:
        fwd, bad = parse_forward(out["forward"], path + ("forward",), registries)
        issues += bad
        cfg.forward = fwd
    if "nats" in out:
        from .bus import parse_nats

        cfg.nats, bad = parse_nats(out["nats"], path + ("nats",))
        issues += bad
    return cfg, issues


# ---------------------------------------------------------------------------
# files


def encode_jsonl(row: dict) -> bytes:
    return (json.dumps(row, separators=(",", ":")) + "\n").encode()


def encode_msgpack(row: dict) -> bytes:
    return msgpack.packb(row, use_bin_type=True)


ENCODERS = {"jsonl": encode_jsonl, "msgpack": encode_msgpack, "flows": None}  # flows: encode_block per block


def stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y%m%d%H%M%S")


class FileWriter:
    """One flow per JSON line or msgpack map, appended to a file, rotated (see the module docstring).

    :param clock: wall-clock seconds (``time.time``); tests inject their own.
    """

    def __init__(self, path: str, fmt: str = "jsonl", rotate: Rotate | None = None,
                 counters: Counters | None = None, clock: Callable[[], float] = time.time) -> None:
        if fmt not in ENCODERS:
            raise ValueError(f"unknown file format {fmt!r} (known: {', '.join(FORMATS)})")
        self.path = path
        self.fmt = fmt
        self.rotate = rotate if rotate is not None and (rotate.seconds or rotate.bytes) else None
        self.current = path + ".current" if self.rotate else path
        self.counters = counters if counters is not None else Counters(f"output {path}")
        self.clock = clock
        self.encode = ENCODERS[fmt]
        self.fd: int | None = None
        self.size = 0
        self.opened_at = 0.0
        self.due_at: float | None = None  # time rotation: the next interval boundary
        self.lines = 0  # records written (the name the JSON-lines writer always had)
        self.bytes = 0
        self.errors = 0
        self.dropped = 0
        self.rotations = 0
        self.last_file: str | None = None  # the last rotated file
        self._failing = 0  # records dropped since the error that was logged (0: not failing)
        self._retry_rotate_at = 0.0

    # -- state -----------------------------------------------------------------------

    def stats(self) -> dict:
        return {"format": self.fmt, "path": self.path, "current": self.current, "records": self.lines,
                "bytes": self.bytes, "errors": self.errors, "dropped": self.dropped, "rotations": self.rotations,
                "last_file": self.last_file}

    def open(self) -> None:
        if self.fd is not None:
            return
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        if self.rotate and os.path.exists(self.current):
            self._rename_leftover()
        fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.opened_at = self.clock()
        self._schedule(self.opened_at)

    def _schedule(self, now: float) -> None:
        sec = self.rotate.seconds if self.rotate else None
        self.due_at = (now // sec + 1) * sec if sec else None

    def _rename_leftover(self) -> None:
        """A ``PATH.current`` we did not open (a crash, a reload's stray writer): make it a rotated file."""
        try:
            st = os.stat(self.current)
        except FileNotFoundError:
            return
        if st.st_size == 0:
            return
        name = self._free_name(st.st_mtime)
        os.rename(self.current, name)
        self.last_file = name
        log.warning("collector_output_leftover", path=self.current, renamed=name, bytes=st.st_size)

    def _free_name(self, t: float) -> str:
        base = f"{self.path}.{stamp(t)}"
        name, n = base, 0
        while os.path.exists(name):
            n += 1
            name = f"{base}.{n}"
        return name

    # -- rotation --------------------------------------------------------------------

    def rotate_now(self) -> bool:
        """Close the current file and give it its timestamped name; True unless that failed."""
        if self.fd is None:
            return True
        if self.size == 0:  # nothing to hand over: keep the file, restart its interval
            self.opened_at = self.clock()
            self._schedule(self.opened_at)
            return True
        fd, self.fd = self.fd, None
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            name = self._free_name(self.opened_at)
            os.rename(self.current, name)
        except OSError as exc:
            self.errors += 1
            self._log_error("rotate", exc, 0)
            self._retry_rotate_at = self.clock() + 1.0
            return False
        self.rotations += 1
        self.last_file = name
        self.size = 0
        return True

    def tick(self, now: float | None = None) -> None:
        """Time rotation without traffic (the collector's one-second timer)."""
        if self.fd is not None and self.due_at is not None:
            now = self.clock() if now is None else now
            if now >= self.due_at and now >= self._retry_rotate_at:
                self.rotate_now()

    # -- writing ---------------------------------------------------------------------

    def write(self, batch: list[CollectedFlows]) -> None:
        """Every flow of *batch*: as rows (jsonl, msgpack) or as blocks (flows)."""
        if not batch:
            return
        if self.fmt == "flows":
            from .flowfile import encode_block  # lazily: flowfile also runs as a module (python -m)

            blocks = [f for f in batch if len(f)]
            self.write_parts([encode_block(f) for f in blocks], [len(f) for f in blocks])
        else:
            self.write_rows([r for flows in batch for r in flows.rows()])

    def write_rows(self, rows: list[dict]) -> None:
        if not rows:
            return
        enc = self.encode
        self.write_parts([enc(r) for r in rows])

    def write_parts(self, parts: list[bytes], counts: list[int] | None = None) -> None:
        """Append *parts* (each whole: a record, or a block of *counts* records), rotating between parts."""
        if not parts:
            return

        def records(i: int, j: int) -> int:
            return j - i if counts is None else sum(counts[i:j])

        limit = self.rotate.bytes if self.rotate and self.rotate.bytes else None
        now = self.clock()
        if self.fd is not None and self.due_at is not None and now >= self.due_at and now >= self._retry_rotate_at:
            self.rotate_now()
        i, n = 0, len(parts)
        while i < n:
            if self.fd is None:
                try:
                    self.open()
                except OSError as exc:
                    self._fail("open", exc, records(i, n))
                    return
            j, total = i, 0
            if limit is None:
                j, total = n, sum(len(p) for p in parts[i:])
            else:
                room = limit - self.size
                while j < n and (total + len(parts[j]) <= room or (j == i and self.size == 0)):
                    total += len(parts[j])
                    j += 1
                if j == i:  # the next record does not fit: rotate, then go on (or, if that failed, write anyway)
                    if self.clock() >= self._retry_rotate_at and self.rotate_now():
                        continue
                    j, total = n, sum(len(p) for p in parts[i:])
            self._write(parts[i] if j == i + 1 else b"".join(parts[i:j]), records(i, j))
            i = j

    def _write(self, buf: bytes, records: int) -> None:
        fd = self.fd
        assert fd is not None
        before = self.size
        view = memoryview(buf)
        try:
            while view:
                k = os.write(fd, view)
                view = view[k:]
        except OSError as exc:
            try:
                os.ftruncate(fd, before)  # no half record at the end of the file
            except OSError:
                pass
            self._fail("write", exc, records)
            return
        self.size = before + len(buf)
        self.bytes += len(buf)
        self.lines += records
        if self._failing:
            log.warning("collector_output_recovered", path=self.path, dropped=self._failing)
            self._failing = 0

    def _fail(self, op: str, exc: OSError, records: int) -> None:
        self.errors += 1
        self.dropped += records
        self.counters.drop("output", f"{self.fmt}-write-error", records)
        self._log_error(op, exc, records)
        self._failing += records

    def _log_error(self, op: str, exc: OSError, records: int) -> None:
        if not self._failing:
            log.error("collector_output_failed", path=self.current, op=op, format=self.fmt,
                      error=f"{type(exc).__name__}: {exc}", dropped=records)

    def close(self) -> None:
        """Flush (nothing is buffered) and close; with rotation, give the current file its final name."""
        if self.fd is None:
            return
        if self.rotate:
            if self.size == 0:
                fd, self.fd = self.fd, None
                os.close(fd)
                try:
                    os.unlink(self.current)
                except OSError:
                    pass
            elif not self.rotate_now() and self.fd is not None:
                os.close(self.fd)
                self.fd = None
            return
        fd, self.fd = self.fd, None
        try:
            os.close(fd)
        except OSError as exc:
            self.errors += 1
            self._log_error("close", exc, 0)


class ThreadedFileWriter(FileWriter):
    """A :class:`FileWriter` whose writes (and rotations) run in a thread of their own: binary flow files.

    Storing a decoded block costs ~0.08 us per record to encode and ~0.1-0.2 us
    for the kernel to copy it into the page cache (ext4, ~0.5-1 GB/s of CPU on
    the bench VM): a quarter of the listener's time at 2 M records/s.  The
    blocks are encoded on the caller's thread (numpy: little to gain from a
    thread while holding the GIL); the writes run in a writer thread
    (``os.write`` releases the GIL: the copy runs on another core, as nfcapd's
    writer thread does).  ``write`` queues the frames (at most :data:`QUEUE`
    batches wait, then it waits for room: the back-pressure a slow disk put on
    the synchronous writer); ``tick`` (time rotation) is queued in order with
    the writes; ``close`` waits until everything queued is written, then closes
    and renames as :class:`FileWriter` does.  Errors are counted and logged by
    the same code, in the thread; ``stats`` may lag the queue by a batch or two, and the clock that
    decides time rotation is read when a batch is written (at most a queue later than it came).
    """

    QUEUE = 64

    def __init__(self, *args, **kwargs) -> None:
        import queue

        super().__init__(*args, **kwargs)
        self._queue: queue.Queue = queue.Queue(self.QUEUE)
        self._thread = threading.Thread(target=self._serve, name="flow-file-writer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            parts, counts, now = item
            try:
                if parts is None:
                    FileWriter.tick(self, now)
                else:
                    FileWriter.write_parts(self, parts, counts)
            except Exception as exc:  # never lose the thread: what this batch held is counted
                records = sum(counts) if counts else 0
                self.errors += 1
                self.dropped += records
                self.counters.drop("output", f"{self.fmt}-write-error", records)
                log.error("collector_output_failed", path=self.current, op="write", format=self.fmt,
                          error=f"{type(exc).__name__}: {exc}", dropped=records)
            finally:
                self._queue.task_done()

    def write_parts(self, parts: list[bytes], counts: list[int] | None = None) -> None:
        if not parts:
            return
        # closed: write here (nothing is lost)
        if not self._thread.is_alive() or threading.current_thread() is self._thread:
            FileWriter.write_parts(self, parts, counts)
            return
        self._queue.put((parts, counts, None))

    def tick(self, now: float | None = None) -> None:
        if self._thread.is_alive():
            self._queue.put((None, None, now))
        else:
            FileWriter.tick(self, now)

    def sync(self) -> None:
        """Wait until everything queued so far is written (the thread goes on)."""
        self._queue.join()

    def drain(self) -> None:
        """Wait until everything queued is written; the thread ends (later writes are synchronous)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def close(self) -> None:
        self.drain()
        super().close()


# ---------------------------------------------------------------------------
# everything the collector writes to, in one place


class Outputs:
    """The files and forwarders of one collector: ``write`` (data path), ``tick``, ``tasks``, ``close``."""

    def __init__(self, cfg: OutputConfig, counters: Counters, clock: Callable[[], float] = time.time, *,
                 registries: Any = None) -> None:
        from .forward import Forwarder

        self.cfg = cfg
        self.counters = counters
        self.files: list[FileWriter] = []
        self.jsonl = self.msgpack = None
        for fmt in FORMATS:
            path = getattr(cfg, fmt)
            if path:
                cls = ThreadedFileWriter if fmt == "flows" else FileWriter  # frames: written off the listener
                w = cls(path, fmt, cfg.rotate, counters, clock)
                setattr(self, fmt, w)
                self.files.append(w)
        self.forwarders = [Forwarder(f, counters, registries=registries) for f in cfg.forward]
        self.bus = None
        if getattr(cfg, "nats", None) is not None:
            from .bus import NatsBus

            self.bus = NatsBus(cfg.nats, counters)

    def write(self, flows: list[CollectedFlows], now_ns: int | None = None) -> None:
        if self.files:
            rows = None  # built once, only for the row formats
            for w in self.files:
                if w.fmt == "flows":
                    w.write(flows)
                else:
                    if rows is None:
                        rows = [r for f in flows for r in f.rows()]
                    w.write_rows(rows)
        for fw in self.forwarders:
            fw.send(flows, now_ns)
        if self.bus is not None:
            self.bus.send(flows, now_ns)  # a bounded queue: never waits for the bus

    def tick(self, now_ns: int | None = None) -> None:
        for w in self.files:
            w.tick()
        for fw in self.forwarders:
            fw.tick(now_ns)

    def tasks(self, app) -> list:
        out = []
        for fw in self.forwarders:
            out += fw.tasks(app)
        if self.bus is not None:
            out += self.bus.tasks(app)
        return out

    def close_files(self) -> None:
        for w in self.files:
            w.close()

    async def flush_forwarders(self, deadline_s: float) -> None:
        from .forward import flush_all

        if self.bus is None:
            await flush_all(self.forwarders, deadline_s)
            return
        import trio

        async with trio.open_nursery() as nursery:  # the bus drains (else spools) alongside the forwarders
            nursery.start_soon(flush_all, self.forwarders, deadline_s)
            nursery.start_soon(self.bus.flush, deadline_s)

    def stats(self) -> dict:
        out = {"files": [w.stats() for w in self.files], "forward": [fw.stats() for fw in self.forwarders]}
        if self.bus is not None:
            out["nats"] = self.bus.stats()
        return out

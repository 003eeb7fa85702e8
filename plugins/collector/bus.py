"""NATS JetStream as the collector's bus output, with a bounded on-disk spool.

Config (``services flow-collector output``)::

    output:
      nats:
        url: nats://127.0.0.1:4222
        stream: FLOWS                 # created (subjects PREFIX.>) when it does not exist
        subject-prefix: flows         # one subject per exporter: flows.192_0_2_1, flows.2001_db8__1
        spool: {path: /var/lib/flowplane/spool, max-bytes: 100000000}
        queue: 1024                   # batches held in memory for the publisher (optional)
        ack-timeout: 5                # seconds a PubAck may take (optional)
        instance-id: edge-1           # optional; default a random id per start

Needs the ``nats-py`` client (``pip install 'flowplane[nats]'``): it speaks the
NATS client protocol, reconnects, and implements JetStream publish with
acknowledgements -- writing our own would be more code and less tested.

Decisions:

* **Messages**: each decoded batch of one exporter is one message on
  ``PREFIX.<exporter>`` (dots and colons of the address replaced by ``_``);
  the payload is a msgpack array of flow maps -- the same fields as the
  msgpack file output (``CollectedFlows.rows``).  The header ``Nats-Msg-Id``
  is ``<instance id>-<batch sequence>``, fixed when the message is built and
  kept with it in the spool.
* **Delivery**: at least once.  A batch counts as delivered only when its
  JetStream PubAck arrived.  A batch whose ack timed out (it may have been
  stored) is sent again with the same Msg-Id, so the server's duplicate window
  (``duplicate_window`` of the stream, 2 minutes by default) drops the copy:
  *exactly once* for resends within the window, at least once beyond it (a
  spool replayed after more than the window can give duplicates).
* **Never blocks the listener**: ``send`` only appends the decoded batch to a
  bounded in-memory queue (full: the flows are dropped and counted,
  ``drops[output, nats-queue-full]``).  nats-py runs on asyncio, the service
  on trio: the publisher is a thread with its own asyncio loop that builds the
  messages, publishes one at a time and awaits each PubAck.
* **Spool**: while the bus is away (connect fails, ack timeout, disconnected)
  the publisher moves the queued batches to the spool directory: append-only
  segment files ``spool-<n>.bin`` of length-prefixed (4-byte big-endian)
  msgpack records ``[msg id, subject, payload, flows]``, one ``fsync`` per
  group of records written (counted).  When the spool would exceed
  ``max-bytes`` its oldest segment is deleted, its batches and flows counted
  (``drops[output, nats-spool-full]``).  After reconnect the spool is
  replayed oldest first, a segment removed when all of its records are
  acked; while the spool is not empty new batches are appended to it, so the
  order of an exporter's batches is kept.  A spool left by a previous run is
  replayed too (a torn last record is ignored and counted).
* **Shutdown**: the queue is published within the drain deadline; what is left
  (bus away, or the deadline) goes to the spool.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import queue as _queue
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import msgpack
import structlog

from flowplane.api import ConfigIssue, Counters, check_int, check_keys, check_mapping, check_number

log = structlog.get_logger("flowplane.collector")

NATS_KEYS = ("url", "stream", "subject-prefix", "spool", "queue", "ack-timeout", "instance-id")
SPOOL_KEYS = ("path", "max-bytes")
DEFAULT_SPOOL = "/var/lib/flowplane/spool"
LEN = struct.Struct(">I")
SHUTDOWN_SPOOL_MARGIN_S = 0.5  # of the drain deadline kept for writing the rest to the spool


@dataclass(frozen=True)
class NatsConfig:
    url: str = "nats://127.0.0.1:4222"
    stream: str = "FLOWS"
    subject_prefix: str = "flows"
    spool_path: str = DEFAULT_SPOOL
    spool_max_bytes: int = 100_000_000
    queue: int = 1024
    ack_timeout: float = 5.0
    instance_id: str | None = None


def nats_available() -> bool:
    return importlib.util.find_spec("nats") is not None


def _token_ok(s: str) -> bool:
    return bool(s) and not any(c in s for c in " \t\r\n*>") and not s.startswith(".") and not s.endswith(".")


def parse_nats(value, path: tuple) -> tuple[NatsConfig | None, list[ConfigIssue]]:
    """``nats: {url, stream, subject-prefix, spool: {path, max-bytes}, queue, ack-timeout, instance-id}``."""
    if isinstance(value, str):
        value = {"url": value}
    issues = check_mapping(value, path, "nats: {url: nats://HOST:PORT, stream: NAME, subject-prefix: P, spool: {...}}")
    if issues:
        return None, issues
    issues += check_keys(value, NATS_KEYS, path)
    kw: dict = {}
    url = value.get("url", NatsConfig.url)
    if not isinstance(url, str) or not url.startswith(("nats://", "tls://")) or len(url) < 8:
        issues.append(ConfigIssue(path + ("url",), f"expected nats://HOST:PORT, got {url!r}"))
    else:
        kw["url"] = url
    for key, attr in (("stream", "stream"), ("subject-prefix", "subject_prefix"), ("instance-id", "instance_id")):
        if key in value:
            v = value[key]
            bad = not isinstance(v, str) or not _token_ok(v) or (key != "subject-prefix" and "." in v)
            if bad:
                issues.append(ConfigIssue(path + (key,), f"expected a NATS name (no spaces, '*', '>'), got {v!r}"))
            else:
                kw[attr] = v
    spool = value.get("spool")
    if spool is not None:
        p = path + ("spool",)
        bad = check_mapping(spool, p, "spool: {path: DIR, max-bytes: N}")
        if not bad:
            bad += check_keys(spool, SPOOL_KEYS, p)
            if "path" in spool and (not isinstance(spool["path"], str) or not spool["path"]):
                bad.append(ConfigIssue(p + ("path",), f"expected a directory, got {spool['path']!r}"))
            if "max-bytes" in spool:
                bad += check_int(spool["max-bytes"], p + ("max-bytes",), 4096, 1 << 50)
        issues += bad
        if not bad:
            if "path" in spool:
                kw["spool_path"] = spool["path"]
            if "max-bytes" in spool:
                kw["spool_max_bytes"] = spool["max-bytes"]
    if "queue" in value:
        bad = check_int(value["queue"], path + ("queue",), 1, 1_000_000)
        issues += bad
        if not bad:
            kw["queue"] = value["queue"]
    if "ack-timeout" in value:
        bad = check_number(value["ack-timeout"], path + ("ack-timeout",), 0.05, 600)
        issues += bad
        if not bad:
            kw["ack_timeout"] = float(value["ack-timeout"])
    if not nats_available():
        issues.append(ConfigIssue(path, "the nats output needs the nats-py client: install flowplane[nats] "
                                        "(pip install 'flowplane[nats]')"))
    return (None if issues else NatsConfig(**kw)), issues


def subject_for(prefix: str, exporter: str) -> str:
    return f"{prefix}.{(exporter or 'unknown').replace('.', '_').replace(':', '_')}"


# ---------------------------------------------------------------------------
# spool


class Spool:
    """Append-only segment files of length-prefixed msgpack records, bounded by *max_bytes* (see module doc).

    Used by one thread at a time (the publisher, or shutdown after it stopped).
    """

    def __init__(self, path: str, max_bytes: int, counters: Counters | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(8 << 20, max_bytes // 8))
        self.counters = counters if counters is not None else Counters(f"spool {path}")
        self.segments: deque[list] = deque()  # [seq, bytes, batches, flows]
        self.read_seg: int | None = None  # the segment being replayed, and where
        self.read_off = 0
        self.fd: int | None = None  # the segment being appended to (the last one)
        self.written_batches = self.written_flows = self.fsyncs = 0
        self.replayed_batches = self.replayed_flows = 0
        self.dropped_batches = self.dropped_flows = 0
        self.torn = 0
        self.removed_files = 0
        self._opened = False

    def _name(self, seq: int) -> str:
        return os.path.join(self.path, f"spool-{seq:012d}.bin")

    def open(self) -> None:
        """Find the segments a previous run left (replayed like ours)."""
        if self._opened:
            return
        os.makedirs(self.path, exist_ok=True)
        for name in sorted(os.listdir(self.path)):
            if name.startswith("spool-") and name.endswith(".bin"):
                try:
                    seq = int(name[6:-4])
                except ValueError:
                    continue
                batches = flows = 0
                for rec in self._records(self._name(seq), 0):
                    batches += 1
                    flows += rec[0][3]
                size = os.path.getsize(self._name(seq))
                self.segments.append([seq, size, batches, flows])
        self._opened = True

    def _records(self, fname: str, offset: int):
        """``((msg id, subject, payload, flows), end offset)`` from *offset*; a torn tail is counted and ignored."""
        try:
            with open(fname, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return
        i = 0
        while i < len(data):
            if i + 4 > len(data):
                self.torn += 1
                return
            (n,) = LEN.unpack_from(data, i)
            if i + 4 + n > len(data):
                self.torn += 1
                return
            try:
                rec = msgpack.unpackb(data[i + 4:i + 4 + n], raw=False)
            except Exception:
                self.torn += 1
                return
            i += 4 + n
            yield rec, offset + i

    @property
    def bytes(self) -> int:
        return sum(s[1] for s in self.segments)

    @property
    def batches(self) -> int:
        return sum(s[2] for s in self.segments)

    def __len__(self) -> int:
        return self.batches

    def append(self, records: list[tuple[str, str, bytes, int]]) -> None:
        """Write *records* (msg id, subject, payload, flows) at the end, then fsync once."""
        if not records:
            return
        self.open()
        parts = []
        for r in records:
            b = msgpack.packb(list(r), use_bin_type=True)
            parts.append((LEN.pack(len(b)) + b, r[3]))
        i = 0
        touched = set()
        while i < len(parts):
            if self.fd is None or not self.segments or self.segments[-1][1] >= self.segment_bytes:
                self._new_segment()
            seg = self.segments[-1]
            buf = bytearray()
            while i < len(parts) and (not buf or seg[1] + len(buf) + len(parts[i][0]) <= self.segment_bytes):
                buf += parts[i][0]
                seg[2] += 1
                seg[3] += parts[i][1]
                self.written_batches += 1
                self.written_flows += parts[i][1]
                i += 1
            view = memoryview(bytes(buf))
            while view:
                k = os.write(self.fd, view)
                view = view[k:]
            seg[1] += len(buf)
            touched.add(self.fd)
            if seg[1] >= self.segment_bytes:
                os.fsync(self.fd)
                self.fsyncs += 1
                touched.discard(self.fd)
                os.close(self.fd)
                self.fd = None
        for fd in touched:
            os.fsync(fd)
            self.fsyncs += 1
        self._enforce()

    def _new_segment(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        seq = self.segments[-1][0] + 1 if self.segments else int(time.time() * 1000)
        self.fd = os.open(self._name(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.segments.append([seq, 0, 0, 0])

    def _enforce(self) -> None:
        while len(self.segments) > 1 and self.bytes > self.max_bytes:
            seq, size, batches, flows = self.segments.popleft()
            if self.read_seg == seq:  # part of it was replayed already: only the rest is lost
                done_b, done_f = self._read_progress
                batches, flows = batches - done_b, flows - done_f
                self.read_seg, self.read_off = None, 0
            self._unlink(seq)
            self.dropped_batches += batches
            self.dropped_flows += flows
            self.counters.drop("output", "nats-spool-full", flows)
            log.warning("collector_nats_spool_full", dropped_batches=batches, dropped_flows=flows, path=self.path)

    def _unlink(self, seq: int) -> None:
        try:
            os.unlink(self._name(seq))
            self.removed_files += 1
        except FileNotFoundError:
            pass

    _read_progress = (0, 0)

    def peek(self, limit: int = 64) -> list[tuple[tuple, int]]:
        """Up to *limit* of the oldest records not yet acked, with the offset after each (same segment)."""
        self.open()
        if not self.segments:
            return []
        seq = self.segments[0][0]
        if self.read_seg != seq:
            self.read_seg, self.read_off, self._read_progress = seq, 0, (0, 0)
        if self.segments[0] is self.segments[-1] and self.fd is not None:
            pass  # appended to and read at once: reads see what os.write wrote
        out = []
        for rec, end in self._records(self._name(seq), self.read_off):
            out.append((tuple(rec), end))
            if len(out) >= limit:
                break
        if not out:  # the head segment is exhausted (or torn): remove it
            self._finish_head()
            return self.peek(limit) if self.segments else []
        return out

    def acked(self, rec: tuple, end: int) -> None:
        """The record ending at *end* of the head segment was acked."""
        self.read_off = end
        b, f = self._read_progress
        self._read_progress = (b + 1, f + rec[3])
        self.replayed_batches += 1
        self.replayed_flows += rec[3]

    def _finish_head(self) -> None:
        seq = self.segments[0][0]
        if self.fd is not None and len(self.segments) == 1:
            os.close(self.fd)
            self.fd = None
        self.segments.popleft()
        self._unlink(seq)
        self.read_seg, self.read_off, self._read_progress = None, 0, (0, 0)

    def pending(self) -> tuple[int, int]:
        """(batches, flows) not yet replayed."""
        b = sum(s[2] for s in self.segments) - self._read_progress[0] * (self.read_seg is not None)
        f = sum(s[3] for s in self.segments) - self._read_progress[1] * (self.read_seg is not None)
        return b, f

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def stats(self) -> dict:
        b, f = self.pending()
        return {"path": self.path, "files": len(self.segments), "bytes": self.bytes, "batches": b, "flows": f,
                "written_batches": self.written_batches, "written_flows": self.written_flows,
                "fsyncs": self.fsyncs, "replayed_batches": self.replayed_batches,
                "replayed_flows": self.replayed_flows, "dropped_batches": self.dropped_batches,
                "dropped_flows": self.dropped_flows, "torn": self.torn, "removed_files": self.removed_files}


# ---------------------------------------------------------------------------
# the publisher


class NatsBus:
    """The collector's JetStream output: ``send`` (data path), ``tasks``, ``flush`` (see the module doc)."""

    def __init__(self, cfg: NatsConfig, counters: Counters | None = None) -> None:
        self.cfg = cfg
        self.label = f"nats {cfg.url} {cfg.stream}"
        self.counters = counters if counters is not None else Counters(self.label)
        self.instance_id = cfg.instance_id or uuid.uuid4().hex[:16]
        self.queue: _queue.Queue = _queue.Queue(maxsize=cfg.queue)
        self.spool = Spool(cfg.spool_path, cfg.spool_max_bytes, self.counters)
        self.seq = 0
        self.connected = False
        self.published_batches = self.published_flows = 0
        self.duplicates = 0
        self.ack_timeouts = 0
        self.disconnects = 0
        self.queue_dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # -- data path (listener thread) --------------------------------------------------

    def send(self, flows, now_ns: int | None = None) -> None:
        """Queue *flows* (a list of CollectedFlows) for the publisher; never blocks."""
        batch = [f for f in flows if len(f)]
        if not batch:
            return
        try:
            self.queue.put_nowait(batch)
        except _queue.Full:
            n = sum(len(f) for f in batch)
            self.queue_dropped += n
            self.counters.drop("output", "nats-queue-full", n)
            return
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and self.queue.qsize() == 1:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed: shutdown spools what is queued
                pass

    def tick(self, now_ns: int | None = None) -> None:
        pass

    # -- messages ------------------------------------------------------------------------

    def build(self, batch) -> list[tuple[str, str, bytes, int]]:
        """One message per exporter: (msg id, subject, msgpack payload, flows)."""
        by_exporter: dict[str, list] = {}
        for f in batch:
            by_exporter.setdefault(f.exporter, []).extend(f.rows())
        out = []
        for exporter, rows in by_exporter.items():
            self.seq += 1
            out.append((f"{self.instance_id}-{self.seq}", subject_for(self.cfg.subject_prefix, exporter),
                        msgpack.packb(rows, use_bin_type=True), len(rows)))
        return out

    def _take_queue(self) -> list[tuple[str, str, bytes, int]]:
        msgs = []
        while True:
            try:
                batch = self.queue.get_nowait()
            except _queue.Empty:
                return msgs
            msgs += self.build(batch)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self.spool.open()
            self._thread = threading.Thread(target=self._thread_main, name=f"nats-publisher {self.cfg.url}",
                                            daemon=True)
            self._thread.start()

    def tasks(self, app=None) -> list:
        return [self.run]

    async def run(self, *, task_status=None) -> None:
        import trio

        self.start()
        if task_status is not None:
            task_status.started()
        await trio.sleep_forever()

    async def flush(self, deadline_s: float) -> bool:
        """Stop the publisher: the queue to the bus within *deadline_s*, else to the spool."""
        import trio

        await trio.to_thread.run_sync(self.stop, deadline_s)
        return self.queue.empty()

    def stop(self, deadline_s: float = 5.0) -> None:
        """Blocking: what :meth:`flush` does, for callers outside trio."""
        self._stop_deadline = time.monotonic() + max(0.0, deadline_s - SHUTDOWN_SPOOL_MARGIN_S)
        self._stop.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(max(1.0, deadline_s + 2.0))
            if self._thread.is_alive():  # stuck in a connect: it spools the queue itself when it returns
                log.warning("collector_nats_publisher_slow_to_stop", queued=self.queue.qsize())
                return
        left = self._take_queue()  # whatever the publisher did not take (thread gone or never started)
        if left:
            self._to_spool(left)
        self.spool.close()
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None

    def _to_spool(self, msgs) -> None:
        try:
            self.spool.append(msgs)
        except OSError as exc:
            n = sum(m[3] for m in msgs)
            self.errors += 1
            self.last_error = f"spool: {type(exc).__name__}: {exc}"
            self.counters.drop("output", "nats-spool-error", n)
            log.error("collector_nats_spool_failed", path=self.spool.path, error=self.last_error, flows=n)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:  # pragma: no cover - a bug here must not kill the process
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("collector_nats_publisher_failed", error=self.last_error, exc_info=True)
        finally:
            self._loop = None
            loop.close()
            self._done.set()

    async def _main(self) -> None:
        import nats
        from nats.errors import NoServersError  # noqa: F401

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        nc = None
        js = None
        retry_at = 0.0
        backoff = 0.2

        async def on_disconnect():
            if self.connected:
                self.disconnects += 1
                log.warning("collector_nats_disconnected", url=self.cfg.url)
            self.connected = False

        async def on_reconnect():
            self.connected = True
            log.info("collector_nats_reconnected", url=self.cfg.url)

        async def on_error(exc):
            self.last_error = f"{type(exc).__name__}: {exc}"

        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and (time.monotonic() >= self._stop_deadline or self.queue.empty() and not (
                        self.connected and len(self.spool))):
                    # the deadline, or nothing left to publish this run (the spool waits for the next one)
                    if not self.queue.empty() or not self.connected:
                        self._to_spool(self._take_queue())
                    return
                if nc is None or not nc.is_connected:
                    self.connected = bool(nc is not None and nc.is_connected)
                    msgs = self._take_queue()  # the bus is away: everything queued goes to the spool
                    if msgs:
                        self._to_spool(msgs)
                    if nc is None and time.monotonic() >= retry_at and not stopping:
                        try:
                            # the first connect fails fast (nats-py would retry it forever with reconnects
                            # allowed); once connected the client reconnects by itself, without limit
                            nc = await nats.connect(self.cfg.url, connect_timeout=1.0, allow_reconnect=False,
                                                    max_reconnect_attempts=1, reconnect_time_wait=0.25,
                                                    disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
                                                    error_cb=on_error, name=f"flowplane-collector {self.instance_id}")
                            nc.options["allow_reconnect"] = True
                            nc.options["max_reconnect_attempts"] = -1
                            js = nc.jetstream(timeout=self.cfg.ack_timeout)
                            await self._ensure_stream(js)
                            self.connected = True
                            backoff = 0.2
                            log.info("collector_nats_connected", url=self.cfg.url, stream=self.cfg.stream)
                            continue
                        except Exception as exc:
                            self.last_error = f"connect: {type(exc).__name__}: {exc}"
                            if nc is not None:
                                try:
                                    await nc.close()
                                except Exception:
                                    pass
                            nc = None
                            retry_at = time.monotonic() + backoff
                            backoff = min(backoff * 2, 5.0)
                    await self._wait(0.1)
                    continue
                self.connected = True
                if len(self.spool):
                    msgs = self._take_queue()  # keep the order: new batches behind the spooled ones
                    if msgs:
                        self._to_spool(msgs)
                    recs = self.spool.peek(64)
                    for rec, end in recs:
                        if not await self._publish(js, rec):
                            break
                        self.spool.acked(rec, end)
                    continue
                try:
                    batch = self.queue.get_nowait()
                except _queue.Empty:
                    self._wake.clear()
                    if self.queue.empty():
                        await self._wait(0.2)
                    continue
                msgs = self.build(batch)
                for k, m in enumerate(msgs):
                    if not await self._publish(js, m):
                        self._to_spool(msgs[k:])
                        break
        finally:
            self.connected = False
            if nc is not None:
                try:
                    await asyncio.wait_for(nc.close(), 2.0)
                except Exception:
                    pass

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _ensure_stream(self, js) -> None:
        from nats.js.errors import NotFoundError

        try:
            await js.stream_info(self.cfg.stream)
        except NotFoundError:
            try:
                await js.add_stream(name=self.cfg.stream, subjects=[f"{self.cfg.subject_prefix}.>"])
            except Exception as exc:  # another collector created it at the same time
                try:
                    await js.stream_info(self.cfg.stream)
                except Exception:
                    raise exc from None

    async def _publish(self, js, msg) -> bool:
        """Publish one message and await its PubAck; False when the bus did not ack it (it is kept)."""
        msg_id, subject, payload, flows = msg
        timeout = self.cfg.ack_timeout
        if self._stop.is_set():
            timeout = max(0.05, min(timeout, self._stop_deadline - time.monotonic()))
        try:
            ack = await js.publish(subject, payload, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:
            name = type(exc).__name__
            if "Timeout" in name:
                self.ack_timeouts += 1
            self.errors += 1
            self.last_error = f"publish: {name}: {exc}"
            self.connected = False
            if self.ack_timeouts == 1 or "Timeout" not in name:
                log.warning("collector_nats_publish_failed", error=self.last_error, subject=subject)
            await self._wait(0.05)
            return False
        if getattr(ack, "duplicate", False):
            self.duplicates += 1
        self.published_batches += 1
        self.published_flows += flows
        return True

    def stats(self) -> dict:
        return {"url": self.cfg.url, "stream": self.cfg.stream, "instance_id": self.instance_id,
                "connected": self.connected, "published_batches": self.published_batches,
                "published_flows": self.published_flows, "duplicates": self.duplicates,
                "ack_timeouts": self.ack_timeouts, "disconnects": self.disconnects,
                "queued": self.queue.qsize(), "queue_dropped_flows": self.queue_dropped, "errors": self.errors,
                "last_error": self.last_error, "spool": self.spool.stats()}

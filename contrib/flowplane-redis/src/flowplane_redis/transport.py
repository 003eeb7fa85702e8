"""The ``redis`` transport: each export message becomes one entry of a Redis stream.

``XADD STREAM MAXLEN ~ N * message <bytes> exporter <name>``: ``message`` is one
NetFlow v9 / IPFIX message exactly as it would go out over UDP, ``exporter`` the
flowplane exporter's name (``sampling/127.0.0.1:6379``, ``forward/ipfix+redis:...``).

* **Never blocks the packet path.**  ``send_nowait`` appends to a bounded queue
  (``queue``, default 10,000 messages); when it is full the oldest message is dropped
  and counted (``dropped``, drop reason ``queue_full``).
* **A worker thread talks to Redis.**  ``run()`` connects (``PING``) and drains the
  queue in pipelined batches of up to :data:`BATCH_MAX` ``XADD`` calls, each batch run
  in a thread (``trio.to_thread``): redis-py's asyncio client does not work under trio.
* **Reconnects with backoff** (``reconnect_s`` doubling up to ``reconnect_max_s``, 25 %
  jitter); one log line per state change (``exporter_connected``,
  ``exporter_disconnected``, ``exporter_connect_failed``).  A batch that failed goes
  back to the head of the queue.  On every (re)connect the encoder's templates and
  options data are added first, so a consumer reading from that point decodes.
* ``flush(deadline_s)`` waits until the queue is written (shutdown).

Config keys of its own (next to ``transport: redis``): ``stream`` (default
``flowplane``), ``maxlen`` (approximate trimming, default 100,000 entries; 0: none),
``queue`` (messages held while Redis is away), ``db`` (database number).  ``port`` is
Redis's port (6379).

Counters: ``packets`` (entries added), ``bytes``, ``templates``, ``connects``,
``errors``, ``dropped``; drops ``(transport, queue_full)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import redis
import structlog
import trio

from flowplane.api import ConfigIssue, Counters, SendQueue, TransportOptions, TransportType, check_int, check_str

log = structlog.get_logger("flowplane.export")

KEYS = ("stream", "maxlen", "queue", "db")
DEFAULTS: dict[str, Any] = {"stream": "flowplane", "maxlen": 100_000, "queue": 10_000, "db": 0}
BATCH_MAX = 512  # XADDs per pipelined round trip
SOCKET_TIMEOUT_S = 5.0


def validate(options: dict, path: tuple) -> list[ConfigIssue]:
    """The transport's own keys (only those present are given)."""
    issues: list[ConfigIssue] = []
    if "stream" in options:
        issues += check_str(options["stream"], path + ("stream",))
        if not issues and not options["stream"]:
            issues.append(ConfigIssue(path + ("stream",), "expected a stream name, got an empty string"))
    if "maxlen" in options:
        issues += check_int(options["maxlen"], path + ("maxlen",), 0, 2**40)
    if "queue" in options:
        issues += check_int(options["queue"], path + ("queue",), 1, 10_000_000)
    if "db" in options:
        issues += check_int(options["db"], path + ("db",), 0, 65535)
    return issues


class RedisStreamTransport:
    """Export messages to one Redis stream (see the module docstring)."""

    def __init__(self, options: TransportOptions) -> None:
        o = {**DEFAULTS, **options.options}
        self.options = options
        self.name = options.name or f"redis/{options.host}:{options.port}"
        self.stream = str(o["stream"])
        self.maxlen = int(o["maxlen"])
        self.queue_max = max(1, int(o["queue"]))
        self.db = int(o["db"])
        self.counters = Counters(f"transport {self.name}")
        self.on_connect: Callable[[], list[bytes]] | None = None
        self.connected = False
        self._queue = SendQueue(self.queue_max, self.counters)
        self._inflight: list[bytes] = []

    # -- data path (sync, never blocks) ----------------------------------------------
    def send_nowait(self, payloads: list[bytes]) -> None:
        """Queue *payloads* for the worker; the oldest queued message is dropped (counted) when full."""
        self._queue.put(payloads)

    @property
    def backlog_length(self) -> int:
        return len(self._queue) + len(self._inflight)

    # -- the worker ----------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, drain the queue, reconnect with backoff; ``started()`` at once (the queue holds meanwhile)."""
        o = self.options
        task_status.started()
        log.info("exporter_started", transport="redis", exporter=self.name, peer=f"{o.host}:{o.port}",
                 stream=self.stream)
        delay = o.reconnect_s
        failing = False
        while True:
            client = redis.Redis(host=o.host, port=o.port, db=self.db, socket_timeout=SOCKET_TIMEOUT_S,
                                 socket_connect_timeout=SOCKET_TIMEOUT_S)
            try:
                await trio.to_thread.run_sync(client.ping, abandon_on_cancel=True)
                self.connected = True
                self.counters.inc("connects")
                log.info("exporter_connected", transport="redis", exporter=self.name, stream=self.stream)
                delay, failing = o.reconnect_s, False
                await self._session(client)
            except (redis.RedisError, OSError) as exc:
                self.counters.inc("errors")
                error = f"{type(exc).__name__}: {exc}"
                if self.connected:
                    log.warning("exporter_disconnected", transport="redis", exporter=self.name, error=error,
                                backlog=self.backlog_length)
                elif not failing:
                    log.warning("exporter_connect_failed", transport="redis", exporter=self.name, error=error)
                failing = True
            finally:
                self.connected = False
                try:
                    client.close()
                except Exception:  # closing a broken connection has nothing left to report
                    pass
            await trio.sleep(delay * (1 - 0.25 * random.random()))
            delay = min(delay * 2, o.reconnect_max_s)

    async def _session(self, client: redis.Redis) -> None:
        templates = self._templates()
        if templates:
            await self._send(client, templates)
            self.counters.inc("templates", len(templates))
        q = self._queue.items
        while True:
            await self._queue.wait()
            batch = [q.popleft() for _ in range(min(len(q), BATCH_MAX))]
            self._inflight = batch
            try:
                await self._send(client, batch)
            except BaseException:
                self._requeue(batch)
                raise
            finally:
                self._inflight = []

    def _templates(self) -> list[bytes]:
        if self.on_connect is None:
            return []
        try:
            return [m for m in self.on_connect() if m]
        except Exception as exc:  # an encoder bug must not kill the connection loop
            self.counters.inc("on_connect_errors")
            log.error("exporter_on_connect_failed", transport="redis", exporter=self.name,
                      error=f"{type(exc).__name__}: {exc}")
            return []

    async def _send(self, client: redis.Redis, batch: list[bytes]) -> None:
        await trio.to_thread.run_sync(self._xadd, client, batch, abandon_on_cancel=True)
        self.counters.inc("packets", len(batch))
        self.counters.inc("bytes", sum(len(m) for m in batch))

    def _xadd(self, client: redis.Redis, batch: list[bytes]) -> None:
        """In the worker thread: one pipelined round trip."""
        pipe = client.pipeline(transaction=False)
        maxlen = self.maxlen or None
        for m in batch:
            pipe.xadd(self.stream, {"message": m, "exporter": self.name}, maxlen=maxlen, approximate=True)
        pipe.execute()

    def _requeue(self, batch: list[bytes]) -> None:
        """A batch that was not written goes back to the head of the queue (bounded: the oldest dropped)."""
        self._queue.put_back(batch)

    # -- shutdown ----------------------------------------------------------------------
    async def flush(self, deadline_s: float) -> bool:
        """Wait up to *deadline_s* seconds until everything queued is in the stream; True if so."""
        return await self._queue.flush(deadline_s, in_flight=lambda: len(self._inflight))


TRANSPORT_TYPE = TransportType(
    name="redis",
    factory=RedisStreamTransport,
    help="each export message XADDed to a Redis stream (MAXLEN ~ trimming); bounded queue, worker thread, "
         "reconnect with backoff",
    keys=KEYS,
    validate=validate,
)

"""The contracts between flow caches, encoders and transports.

Encoders and transports are named drivers that plugins register
(``flowplane_register_encoders`` / ``flowplane_register_transports``) and
config selects (``flow-server ADDR { version 9; transport tcp; }``).  The data
path never calls them through pluggy.

Encoder (``register("ipfix", EncoderType(...))``)::

    enc = encoder_type.factory(EncoderOptions(...))
    datagrams = enc.encode(records, now_ns)   # list[bytes]; includes templates when due
    msgs = enc.templates(now_ns)              # full (options) templates + options data, e.g. on connect
    msgs = enc.options_data(now_ns)           # periodic options data (sampling interval, ...) alone
    enc.reset_templates()                     # config changed: send templates at the next encode

Transport (``register("udp", TransportType(...))``)::

    t = transport_type.factory(TransportOptions(...))
    await nursery.start(t.run)                # socket ready (UDP) / connect loop started (TCP)
    t.send_nowait(payloads)                   # never blocks the pipeline; drops are counted
    t.on_connect = lambda: enc.templates(now) # TCP: resend templates on every (re)connect
    await t.flush(deadline_s)                 # drain what is queued (shutdown)
    t.counters                                # flowplane.stats.Counters: sent, bytes, errors, drops

Feature plugins do not drive the two by hand: :class:`Exporter` joins one
encoder to one transport (templates on every connect, encoder failures
isolated, due templates on :meth:`Exporter.tick`, shutdown flush with a
grace for a server that is away).  Drivers are picked from the app's
registries: :meth:`EncoderRegistry.for_version` by what an encoder declares,
:func:`check_transport` validates a configured transport name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from .config import suggest
from .errors import ConfigIssue
from .flows import SAMPLING_DETERMINISTIC, FlowRecords
from .registry import Registry
from .stats import Counters

log = structlog.get_logger("flowplane.export")

#: how long a shutdown waits for a flow server that is not connected before counting what is left as lost
SHUTDOWN_GRACE_S = 2.0


@dataclass
class EncoderOptions:
    """Everything an encoder may be configured with (each encoder uses what applies)."""

    version: int = 10  # 5, 8, 9, 10 (IPFIX)
    # NetFlow v5/v8 header
    engine_type: int = 0
    engine_id: int = 0
    # v9 source id / IPFIX observation domain id
    observation_domain_id: int = 0
    # template ids (v9/IPFIX, >= 256); options template id
    template_ids: dict[str, int] = field(default_factory=lambda: {
        "ipv4": 256, "ipv6": 257, "mpls": 258, "mpls-ipv4": 259, "bridge": 260})
    options_template_id: int = 512
    # which data templates this exporter uses: ipv4, ipv6, mpls, mpls-ipv4, bridge
    templates: tuple[str, ...] = ("ipv4", "ipv6")
    template_refresh_packets: int = 4800  # resend templates every N export packets (Junos default 4800)
    template_refresh_seconds: int = 60  # ... or every N seconds (Junos default 60)
    option_refresh_packets: int = 4800
    option_refresh_seconds: int = 60
    sampling_interval: int = 1
    sampling_algorithm: int = SAMPLING_DETERMINISTIC
    exporting_process_id: int = 1
    mtu: int = 1500  # link MTU: datagrams are at most mtu - 28 (IPv4+UDP) bytes (mtu - 48 for IPv6)
    ipv6_transport: bool = False
    stream: bool = False  # TCP/SCTP transport: no datagram size limit beyond 65535
    aggregation: str = ""  # v8 scheme: as, protocol-port, source-prefix, destination-prefix, source-destination-prefix
    scale_counts: bool = False  # multiply packets/bytes by the sampling interval
    # v9/IPFIX: carry the original exporter's address (a collector re-exporting): exporterIPv4Address (130)
    # appended to every data template, plus an exporterIPv6Address (131) twin of each (id: template_ids
    # [family + "/exporter6"], default the family's id + 16); the address is ReexportRecords.exporter
    exporter_address: bool = False


@dataclass(slots=True)
class ReexportRecords(FlowRecords):
    """Flow records of one original exporter, re-exported by a collector.

    :param exporter: the exporter's address; encoders with
        ``EncoderOptions.exporter_address`` put it in every record (IE 130 / 131).
    """

    exporter: str = ""


class Encoder(Protocol):
    def encode(self, records: FlowRecords, now_ns: int) -> list[bytes]: ...
    def templates(self, now_ns: int) -> list[bytes]: ...
    def options_data(self, now_ns: int) -> list[bytes]: ...
    def reset_templates(self) -> None: ...


class TemplatelessEncoder:
    """Base of an encoder whose format has no templates or options data (NetFlow v5/v8, syslog):
    a subclass writes ``encode`` only."""

    def templates(self, now_ns: int) -> list[bytes]:
        return []

    def options_data(self, now_ns: int) -> list[bytes]:
        return []

    def reset_templates(self) -> None:
        pass


@dataclass(frozen=True)
class EncoderType:
    """A named encoder driver.

    :param name: ``v5``, ``v8``, ``v9``, ``ipfix``.
    :param versions: the NetFlow version numbers it implements (config ``version 9`` picks it).
    :param factory: ``factory(EncoderOptions) -> Encoder``.
    """

    name: str
    versions: tuple[int, ...]
    factory: Callable[[EncoderOptions], Encoder]
    help: str = ""
    #: its messages carry their own length, so they may go over a byte-stream transport (IPFIX over TCP)
    streams: bool = False


class EncoderRegistry(Registry[EncoderType]):
    """The encoder registry: encoders are found by the versions they declare."""

    def __init__(self) -> None:
        super().__init__("encoder")

    def for_version(self, version: int) -> EncoderType | None:
        """The encoder that declares *version* (``EncoderType.versions``), or None."""
        for _, enc in self.items():
            if version in enc.versions:
                return enc
        return None

    def versions(self) -> list[int]:
        """Every export version some registered encoder implements."""
        return sorted({v for _, e in self.items() for v in e.versions})


@dataclass
class TransportOptions:
    host: str
    port: int
    source_address: str | None = None
    name: str = ""  # for logs and counters: "sampling/127.0.0.1:2055"
    backlog: int = 1024  # TCP: payloads queued while the collector is away (then dropped, counted)
    reconnect_s: float = 1.0  # TCP: first reconnect delay (doubles up to reconnect_max_s)
    reconnect_max_s: float = 30.0
    dscp: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the transport's own config keys (TransportType.keys)


class Transport(Protocol):
    counters: Counters
    on_connect: Callable[[], list[bytes]] | None

    async def run(self, *, task_status: Any = ...) -> None: ...
    def send_nowait(self, payloads: list[bytes]) -> None: ...
    async def flush(self, deadline_s: float) -> bool: ...


@dataclass(frozen=True)
class TransportType:
    """A named transport driver: ``udp``, ``tcp``, or a third party's.

    :param factory: ``factory(TransportOptions) -> Transport``.
    :param stream: a byte stream (TCP): only encoders that declare ``streams`` may use it, and
        messages are not cut to the MTU.
    :param keys: config keys of its own, accepted next to ``transport: NAME`` in a flow server or
        forward entry and handed over in ``TransportOptions.options``.
    :param validate: ``validate(options, path) -> list[ConfigIssue]`` for those keys (*options*
        holds only the keys present).
    """

    name: str
    factory: Callable[[TransportOptions], Transport]
    help: str = ""
    stream: bool = False
    keys: tuple[str, ...] = ()
    validate: Callable[[dict, tuple], list[ConfigIssue]] | None = None


def check_transport(name: Any, section: dict, path: tuple, transports: Any, *, encoder: EncoderType | None = None,
                    version: int | None = None) -> list[ConfigIssue]:
    """Problems with ``transport: NAME`` in *section* (a flow server or forward entry) at *path*.

    *transports* is the transport registry (or a read-only view of it); None skips the name check.
    An unknown name gets "did you mean" and the registered list; the transport's own keys are
    checked by its ``validate``; a byte-stream transport needs an encoder that ``streams``.
    """
    p = path + ("transport",)
    if not isinstance(name, str) or not name:
        return [ConfigIssue(p, f"expected a transport name, got {name!r}")]
    if transports is None:
        return []
    tt = transports.get(name)
    if tt is None:
        known = ", ".join(transports) or "(no transport plugin enabled)"
        return [ConfigIssue(p, f"unknown transport {name!r}{suggest(name, list(transports))}; "
                               f"expected one of: {known}")]
    issues: list[ConfigIssue] = []
    if tt.stream and encoder is not None and not encoder.streams:
        issues.append(ConfigIssue(p, f"version {version} cannot be framed on byte-stream transport {name} (IPFIX "
                                     f"can): send version {version} over a datagram transport (udp only)"))
    if tt.validate is not None:
        try:
            issues += tt.validate(transport_options(tt, section), path) or []
        except Exception as exc:  # a third-party validator must not crash check-config
            issues.append(ConfigIssue(p, f"transport {name} failed to validate its options: "
                                         f"{type(exc).__name__}: {exc}"))
    return issues


def transport_options(tt: TransportType | None, section: dict) -> dict[str, Any]:
    """The keys of *section* that transport *tt* declares as its own."""
    if tt is None or not isinstance(section, dict):
        return {}
    return {k: section[k] for k in tt.keys if k in section}


class Exporter:
    """One export destination: an encoder joined to a transport.

    * ``export(records, now_ns)`` encodes and hands the messages to the transport, which never
      blocks.  An encoder failure is counted (``encode_errors``, drop ``(export, encode_error)``
      per record) and logged once per exporter; the pipeline goes on.
    * ``send(messages)``: already encoded messages (a feature with records of its own).
    * ``tick(now_ns)``: once a second, so templates and options data that are due go out with no flows.
    * On every (re)connect of a stream transport the encoder's templates go first.
    * ``await flush(deadline_s)`` at shutdown: a connected server gets *deadline_s*, one that is away
      ``grace_s``; what is still queued is counted (``dropped_at_shutdown``) and logged, never a hang.
    * ``run`` is the transport's task (start it in the nursery); ``stats()`` for ``show``.

    Counters (``counters``): ``records``, ``datagrams``, ``encode_errors``; drops ``(export, encode_error |
    shutdown)``.  What shutdown leaves queued is also ``dropped_at_shutdown`` of the transport's counters.
    """

    def __init__(self, name: str, encoder: Encoder, transport: Transport, *, counters: Counters | None = None,
                 grace_s: float = SHUTDOWN_GRACE_S) -> None:
        self.name = name
        self.encoder = encoder
        self.transport = transport
        self.counters = counters if counters is not None else Counters(name)
        self.grace_s = grace_s
        self.last_now = time.time_ns()
        transport.on_connect = self._on_connect

    def _on_connect(self) -> list[bytes]:
        return self.encoder.templates(self.last_now)

    @property
    def run(self) -> Callable[..., Any]:
        return self.transport.run

    # -- data path (sync, never blocks) ------------------------------------------------
    def export(self, records: Any, now_ns: int, *, count: int | None = None) -> bool:
        """Encode *records* and send the messages; False if the encoder failed (counted, logged once)."""
        self.last_now = now_ns
        n = len(records) if count is None else count
        try:
            payloads = self.encoder.encode(records, now_ns)
        except Exception as exc:  # an encoder bug must not stop the pipeline
            c = self.counters
            c.inc("encode_errors")
            if n:
                c.drop("export", "encode_error", n)
            if c["encode_errors"] == 1:
                log.error("encode_failed", exporter=self.name, error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return False
        self.counters.inc("records", n)
        self.send(payloads)
        return True

    def send(self, payloads: list[bytes]) -> None:
        """Hand encoded messages to the transport."""
        if payloads:
            self.counters.inc("datagrams", len(payloads))
            self.transport.send_nowait(payloads)

    def tick(self, now_ns: int, empty: Any = None) -> None:
        """Send the templates and options data that are due (*empty*: the encoder's empty record set)."""
        self.export(FlowRecords.empty() if empty is None else empty, now_ns, count=0)

    # -- shutdown ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(getattr(self.transport, "connected", True))

    def queued(self) -> int:
        t = self.transport
        return int(getattr(t, "backlog_length", None) or getattr(t, "queue_length", 0) or 0)

    async def flush(self, deadline_s: float) -> int:
        """Send what is queued within *deadline_s* (*grace_s* if the server is away); the number left (counted)."""
        connected = self.connected
        if await self.transport.flush(deadline_s if connected else min(self.grace_s, deadline_s)):
            return 0
        left = self.queued()
        self.transport.counters.inc("dropped_at_shutdown", left)
        if left:
            self.counters.drop("export", "shutdown", left)
        log.warning("export_backlog_lost", exporter=self.name, payloads=left, connected=connected)
        return left

    def stats(self) -> dict[str, Any]:
        c, tc = self.counters, self.transport.counters
        return {"name": self.name, "records": c["records"], "datagrams": c["datagrams"],
                "encode_errors": c["encode_errors"], "sent": tc["packets"], "bytes": tc["bytes"],
                "dropped": sum(tc.drops.values()), "dropped_at_shutdown": tc["dropped_at_shutdown"],
                "connected": getattr(self.transport, "connected", None)}


async def flush_exporters(exporters: list[Exporter], deadline_s: float) -> int:
    """Flush every exporter at once, bounded by *deadline_s*; the number of messages left."""
    import trio

    left = 0

    async def one(e: Exporter) -> None:
        nonlocal left
        left += await e.flush(deadline_s)

    if exporters:
        async with trio.open_nursery() as nursery:
            for e in exporters:
                nursery.start_soon(one, e)
    return left

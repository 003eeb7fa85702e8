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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .flows import SAMPLING_DETERMINISTIC, FlowRecords
from .stats import Counters


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


class Transport(Protocol):
    counters: Counters
    on_connect: Callable[[], list[bytes]] | None

    async def run(self, *, task_status: Any = ...) -> None: ...
    def send_nowait(self, payloads: list[bytes]) -> None: ...
    async def flush(self, deadline_s: float) -> bool: ...


@dataclass(frozen=True)
class TransportType:
    """A named transport driver: ``udp``, ``tcp``.

    :param factory: ``factory(TransportOptions) -> Transport``.
    """

    name: str
    factory: Callable[[TransportOptions], Transport]
    help: str = ""

"""Re-export ("Directing Replicated Flows to Multiple Flow Servers"): decoded flows go out again as v9/IPFIX.

Config (``services flow-collector output forward``)::

    forward:
      - {address: 192.0.2.10, port: 4739, version: 10, transport: tcp}
      - {address: 192.0.2.11, port: 2055, version: 9}      # transport defaults to udp
      - {address: "2001:db8::1", port: 4739, source-address: "2001:db8::2", scale-counts: true}

Each entry is one :class:`Forwarder` around the core exporter: the encoder
registered for its ``version`` (``EncoderRegistry.for_version``) and the
transport its ``transport`` names: any registered one (``udp``, ``tcp``, a
third party's such as ``redis``, with that transport's own keys), checked
against the registry at validation.  Decisions:

* **Original exporter kept** as an information element: the encoder runs with
  ``EncoderOptions.exporter_address``, so every record carries
  exporterIPv4Address (130) or exporterIPv6Address (131, twin templates
  ``id + 16``).  v9 has no such fields in RFC 3954, but the ids are the same
  and collectors skip fields they do not know.  The datagrams' source is
  the collector (no spoofing).
* **All families**: the ipv4, ipv6, mpls, mpls-ipv4 and bridge templates, so
  every decoded record has one.  One observation domain / source id
  (``observation-domain``, default 0) per server, one sequence space.
* **Never blocks the listener**: records are encoded in the data path (one
  encode per exporter per batch) and handed to ``send_nowait``, which never
  waits (UDP: a bounded queue when the socket buffer is full; TCP: a bounded
  backlog while the server is away).  Drops are counted by the transport and
  mirrored once a second into the collector's drop table as
  ``("forward", "<reason> <server>")``; encoder failures as
  ``("forward", "encode-error <server>")``.
* **Transports** are the collector's background tasks (started before the
  listeners); TCP sends the templates first on every (re)connect.
* **Times**: IPFIX carries absolute milliseconds.  For v9 the uptime origin
  is an hour before the oldest flow of the batch, kept while every flow is
  after it and the export time less than 40 days after it (32-bit
  milliseconds), so FIRST/LAST_SWITCHED are exact milliseconds; flows more
  than 40 days old go out with their newest flow as the header's export time.
* **Sampling**: the records' per-record sampling interval is not carried
  (one options record per domain says 1).  ``scale-counts: true`` multiplies
  packets and bytes by it before export, so totals stay right.
* **Shutdown**: after the collector decoded what was queued, each transport
  gets ``drain-timeout`` (a server that is not connected: 2 s) to send its
  queue; what is left is counted ``("forward", "shutdown <server>")``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
import trio

from flowplane.api import (
    ConfigIssue,
    Counters,
    EncoderOptions,
    Exporter,
    ReexportRecords,
    TransportOptions,
    check_address,
    check_int,
    check_keys,
    check_transport,
    host_port,
    transport_options,
)

from .records import CollectedFlows

log = structlog.get_logger("flowplane.collector")

FORWARD_KEYS = ("address", "port", "version", "transport", "source-address", "observation-domain", "mtu",
                "scale-counts")
VERSIONS = (9, 10)
FAMILIES = ("ipv4", "ipv6", "mpls", "mpls-ipv4", "bridge")
NS = 1_000_000_000
V9_BOOT_MARGIN_NS = 3600 * NS
V9_BOOT_MAX_AGE_NS = 40 * 86400 * NS  # 32-bit milliseconds wrap after 49.7 days


@dataclass(frozen=True)
class Forward:
    address: str
    port: int
    version: int = 10
    transport: str = "udp"
    source_address: str | None = None
    observation_domain: int = 0
    mtu: int = 1500
    scale_counts: bool = False
    transport_options: tuple[tuple[str, Any], ...] = ()  # the transport's own keys (TransportType.keys)

    @property
    def label(self) -> str:
        return f"{'ipfix' if self.version == 10 else 'v9'}+{self.transport}:{host_port(self.address, self.port)}"


def parse_forward(items, path: tuple, registries: Any = None) -> tuple[list[Forward], list[ConfigIssue]]:
    """``forward: [...]`` -> :class:`Forward` entries and the problems.  *registries* (the app's or the
    read-only view validation gets) checks ``transport`` against the registered transports and their keys."""
    out: list[Forward] = []
    issues: list[ConfigIssue] = []
    if not isinstance(items, list) or not items:
        return out, [ConfigIssue(path, f"expected a non-empty list of {{address, port, version, transport}}, "
                                       f"got {items!r}")]
    seen = set()
    for i, item in enumerate(items):
        p = path + (i,)
        if not isinstance(item, dict):
            issues.append(ConfigIssue(p, f"expected a mapping {{address, port, version, transport}}, got {item!r}"))
            continue
        transport = item.get("transport", "udp")
        transports = registries.transports if registries is not None else None
        tt = transports.get(transport) if transports is not None and isinstance(transport, str) else None
        bad = check_keys(item, FORWARD_KEYS + (tt.keys if tt is not None else ()), p)
        addr, found = check_address(item.get("address"), p + ("address",))
        bad += found
        if "port" not in item:
            bad.append(ConfigIssue(p, "missing 'port' (1..65535)"))
        else:
            bad += check_int(item["port"], p + ("port",), 1, 65535)
        version = item.get("version", 10)
        if version not in VERSIONS or isinstance(version, bool):
            bad.append(ConfigIssue(p + ("version",), f"expected 9 or 10 (IPFIX), got {version!r}"))
        encoder = registries.encoders.for_version(version) if registries is not None and version in VERSIONS else None
        bad += check_transport(transport, item, p, transports, encoder=encoder, version=version)
        src = item.get("source-address")
        if src is not None:
            src, found = check_address(src, p + ("source-address",))
            bad += found
        if "observation-domain" in item:
            bad += check_int(item["observation-domain"], p + ("observation-domain",), 0, 0xFFFF_FFFF)
        if "mtu" in item:
            bad += check_int(item["mtu"], p + ("mtu",), 576, 65535)
        scale = item.get("scale-counts", False)
        if not isinstance(scale, bool):
            bad.append(ConfigIssue(p + ("scale-counts",), f"expected true or false, got {scale!r}"))
        if bad:
            issues += bad
            continue
        f = Forward(addr, item["port"], version, transport, src, item.get("observation-domain", 0),
                    item.get("mtu", 1500), scale, tuple(sorted(transport_options(tt, item).items())))
        if (f.address, f.port, f.transport) in seen:
            issues.append(ConfigIssue(p, f"duplicate forward {f.label}"))
            continue
        seen.add((f.address, f.port, f.transport))
        out.append(f)
    return out, issues


class Forwarder:
    """One flow server the collector replicates to: the core :class:`Exporter` plus what re-export adds
    (one message stream per original exporter, the v9 uptime origin, drops mirrored into the collector's
    table).  *registries* is the app's (``encoders``, ``transports``); see the module docstring."""

    def __init__(self, target: Forward, counters: Counters | None = None, *, registries: Any) -> None:
        self.target = target
        self.label = target.label
        self.counters = counters if counters is not None else Counters(f"forward {self.label}")
        enc_type = registries.encoders.for_version(target.version) if registries is not None else None
        trans_type = registries.transports.get(target.transport) if registries is not None else None
        if enc_type is None or trans_type is None:
            missing = f"version {target.version}" if enc_type is None else f"transport {target.transport}"
            raise RuntimeError(f"forward {target.label}: no plugin provides {missing} (is it disabled?)")
        opts = EncoderOptions(version=target.version, observation_domain_id=target.observation_domain,
                              templates=FAMILIES, mtu=target.mtu, ipv6_transport=":" in target.address,
                              stream=trans_type.stream, exporter_address=True)
        name = f"forward/{self.label}"
        transport = trans_type.factory(TransportOptions(target.address, target.port, target.source_address,
                                                        name=name, options=dict(target.transport_options)))
        self.exporter = Exporter(name, enc_type.factory(opts), transport)
        self.boot_ns: int | None = None
        self._mirrored: dict = {}

    @property
    def encoder(self):
        return self.exporter.encoder

    @property
    def transport(self):
        return self.exporter.transport

    # -- data path ---------------------------------------------------------------------

    def _v9_times(self, data: np.ndarray, now: int) -> tuple[int, int]:
        """(export time, uptime origin) for a v9 batch: every flow after the origin, the export time less
        than 40 days after it (32-bit milliseconds); flows older than that go out with the export time of
        their newest flow (a replay of old data), not clipped."""
        first = data["first_ns"]
        first = first[first > 0]
        if not len(first):
            if self.boot_ns is None:
                self.boot_ns = (now - V9_BOOT_MARGIN_NS) // 1_000_000 * 1_000_000
            return now, self.boot_ns
        oldest = int(first.min())
        newest = max(int(data["last_ns"].max()), oldest)
        export = now if now - oldest < V9_BOOT_MAX_AGE_NS and newest - now < V9_BOOT_MAX_AGE_NS else newest
        if self.boot_ns is None or not (export - V9_BOOT_MAX_AGE_NS < self.boot_ns <= oldest):
            self.boot_ns = max(0, (oldest - V9_BOOT_MARGIN_NS) // 1_000_000 * 1_000_000)
        return export, self.boot_ns

    def send(self, flows: list[CollectedFlows], now_ns: int | None = None) -> None:
        """Encode *flows* (one message stream per original exporter) and hand them to the transport."""
        now = now_ns if now_ns is not None else time.time_ns()
        by_exporter: dict[str, list[CollectedFlows]] = {}
        for f in flows:
            if len(f):
                by_exporter.setdefault(f.exporter, []).append(f)
        for exporter, group in by_exporter.items():
            data = group[0].data if len(group) == 1 else np.concatenate([f.data for f in group])
            if self.target.scale_counts:
                si = np.concatenate([f.sampling_interval for f in group]).astype(np.uint64)
                if (si > 1).any():
                    data = data.copy()
                    data["packets"] *= np.maximum(si, 1)
                    data["bytes"] *= np.maximum(si, 1)
            export_ns, boot_ns = self._v9_times(data, now) if self.target.version == 9 else (now, 0)
            recs = ReexportRecords(data, boot_ns=boot_ns, scaled=True, exporter=exporter)
            if not self.exporter.export(recs, export_ns):  # counted and logged by the exporter
                self.counters.drop("forward", f"encode-error {self.label}", len(data))

    def tick(self, now_ns: int | None = None) -> None:
        """Once a second: templates / options data that are due (no flows needed); mirror transport drops."""
        now = now_ns if now_ns is not None else time.time_ns()
        self.exporter.tick(now, ReexportRecords.empty(boot_ns=self.boot_ns or 0))
        self.mirror_drops()

    def mirror_drops(self) -> None:
        for (_stage, reason), n in list(self.transport.counters.drops.items()):
            delta = n - self._mirrored.get(reason, 0)
            if delta > 0:
                self.counters.drop("forward", f"{reason} {self.label}", delta)
                self._mirrored[reason] = n

    # -- life cycle --------------------------------------------------------------------

    def tasks(self, app=None) -> list:
        return [self.exporter.run]

    async def flush(self, deadline_s: float) -> bool:
        left = await self.exporter.flush(deadline_s)
        if left:
            self.counters.drop("forward", f"shutdown {self.label}", left)
        self.mirror_drops()
        return not left

    def stats(self) -> dict:
        st = self.exporter.stats()
        return {"server": self.label, "records": st["records"], "datagrams": st["datagrams"],
                "encode_errors": st["encode_errors"], "sent": st["sent"], "bytes": st["bytes"],
                "dropped": st["dropped"], "connected": st["connected"]}


async def flush_all(forwarders: list[Forwarder], deadline_s: float) -> None:
    """Every forwarder's queue, at once, bounded by *deadline_s*."""
    if not forwarders:
        return
    async with trio.open_nursery() as nursery:
        for fw in forwarders:
            nursery.start_soon(fw.flush, deadline_s)

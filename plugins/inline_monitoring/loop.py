"""The loop the Junos guide warns about: monitoring the exporter's own IPFIX traffic.

"You must not apply inline monitoring on IPFIX traffic as this generates
another IPFIX packet for sampling, thereby creating a loop."

At config time (:func:`find_loops`) flowplane refuses the loop wherever the
config shows it: for every live-captured interface with a filter bound in a
direction that sees the export traffic, and every collector, a synthetic
export packet (UDP from ``source-address`` to ``destination-address``
``destination-port``, with the collector's DSCP, 1500 bytes) is run through
the compiled filter; if a term sends it to ``inline-monitoring-instance``,
that is a loop.  The export packets are seen

* on the **output** side of the interface the kernel routes the collector's
  address through (``ip route get``), and
* on **both** sides of the loopback interface when the collector is local.

Filters bound to pcap sources never see export traffic.  When the route
cannot be looked up (no ``ip`` tool, or a config checked on another box) a
loopback collector is assumed to go through ``lo`` and other collectors are
left to the run-time guard (:meth:`.engine.InlineMonitor._own_export`),
which drops and counts the exporter's own packets in case one slips through.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from typing import Any

from flowplane.api import ConfigIssue, live_interfaces, probe_filters

from .config import Collector, InlineConfig

ACTION = "inline-monitoring-instance"
PROBE_SPORT = 49152  # the kernel picks the real one; a representative ephemeral port
PROBE_IP_LENGTH = 1500
LOOPBACK_DEVICES = ("lo",)

RouteFn = Callable[[str, "str | None"], "str | None"]


def route_device(destination: str, source: str | None = None) -> str | None:
    """The interface the kernel sends *destination* through (``ip -j route get``), or None if unknown."""
    ip = shutil.which("ip")
    if ip is not None:
        argv = [ip, "-j", "route", "get", destination]
        if source:
            argv += ["from", source]
        for args in (argv, argv[:5]):  # a source that is not (yet) local: ask without it
            try:
                r = subprocess.run(args, capture_output=True, text=True, timeout=2)
                if r.returncode == 0:
                    routes = json.loads(r.stdout or "[]")
                    if routes and routes[0].get("dev"):
                        return str(routes[0]["dev"])
            except (OSError, subprocess.SubprocessError, ValueError):
                break
    if ipaddress.ip_address(destination).is_loopback:
        return "lo"
    return None


def probe_frame(col: Collector) -> bytes:
    """An Ethernet frame like the collector's export packets (UDP, DSCP, source and destination)."""
    dst = ipaddress.ip_address(col.destination)
    payload = bytes(PROBE_IP_LENGTH - (20 if dst.version == 4 else 40) - 8)
    udp = struct.pack(">HHHH", PROBE_SPORT, col.port, 8 + len(payload), 0) + payload
    tos = (col.dscp & 0x3F) << 2
    if dst.version == 4:
        src = ipaddress.IPv4Address(col.source or "0.0.0.0")
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + len(udp), 0, 0x4000, 64, 17, 0, src.packed, dst.packed)
        ethertype = 0x0800
    else:
        src6 = ipaddress.IPv6Address(col.source or "::")
        ip = struct.pack(">IHBB16s16s", (6 << 28) | (tos << 20), len(udp), 17, 64, src6.packed, dst.packed)
        ethertype = 0x86DD
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack(">H", ethertype) + ip + udp


def find_loops(config: dict, inline: InlineConfig, route: RouteFn = route_device,
               sources: Any = None) -> list[ConfigIssue]:
    """Issues for every (interface binding, collector) where the exporter would monitor its own export.

    Only interfaces whose source type is ``live`` are checked (*sources*: the source registry; without
    it every interface is)."""
    if not inline.instances:
        return []
    ifaces = config.get("interfaces")
    if not isinstance(ifaces, dict):
        return []
    filters = probe_filters(config, [ACTION])
    if not filters:
        return []
    issues: list[ConfigIssue] = []
    routes: dict[tuple[str, str | None], str | None] = {}
    for ifname, sec in live_interfaces(config, sources).items():  # a file replay never holds the export traffic
        device = str(sec.get("device") or ifname)
        captured = sec.get("direction", "both")
        fams = sec.get("family")
        for family, fsec in (fams.items() if isinstance(fams, dict) else ()):
            binds = fsec.get("filter") if isinstance(fsec, dict) else None
            for direction, fname in (binds.items() if isinstance(binds, dict) else ()):
                if direction not in ("input", "output") or captured not in (direction, "both"):
                    continue
                f = filters.get((family, str(fname)))
                if f is None:
                    continue
                for inst, col in inline.collectors():
                    if family == "inet" and col.family != "inet" or family == "inet6" and col.family != "inet6":
                        continue
                    key = (col.destination, col.source)
                    if key not in routes:
                        routes[key] = route(col.destination, col.source)
                    dev = routes[key]
                    if dev != device or (direction == "input" and device not in LOOPBACK_DEVICES):
                        continue
                    for hit in f.hits(probe_frame(col), interface=str(ifname), direction=direction):
                        if hit.action == ACTION:
                            issues.append(ConfigIssue(
                                ("interfaces", ifname, "family", family, "filter", direction),
                                f"loop: filter {fname!r} term {hit.term!r} sends the IPFIX export of inline-monitoring "
                                f"instance {inst.name!r} collector {col.name!r} (udp to {col.label}, via {device} "
                                f"{direction}) to inline-monitoring-instance {hit.arg!r}: the exporter would monitor "
                                f"its own traffic; add a term before it that accepts udp to {col.label}, or monitor "
                                f"an interface that does not carry the export"))
                            break
    return issues


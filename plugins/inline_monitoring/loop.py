"""The loop the seed warns about: monitoring the exporter's own IPFIX traffic.

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
from typing import Any, Callable

from flowplane.api import (
    DIR_INPUT,
    DIR_OUTPUT,
    ConfigIssue,
    InterfaceTable,
    PacketBatch,
    Registry,
    TermAction,
    decode,
    live_interfaces,
)
from flowplane.firewall import CompiledFilter
from flowplane.firewall_config import parse_firewall

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


def _action_names(config: dict) -> set[str]:
    """Every action word under any ``then`` of the firewall (so other plugins' actions parse here too)."""
    names: set[str] = set()

    def then(v) -> None:
        if isinstance(v, str):
            names.update(v.split()[:1])
        elif isinstance(v, dict):
            names.update(str(k) for k in v)
        elif isinstance(v, list):
            for item in v:
                then(item)

    def filters(fsec) -> None:
        for f in (fsec or {}).values() if isinstance(fsec, dict) else ():
            terms = f.get("term") if isinstance(f, dict) else None
            for t in (terms or {}).values() if isinstance(terms, dict) else ():
                if isinstance(t, dict):
                    then(t.get("then"))

    fw = config.get("firewall")
    if isinstance(fw, dict):
        filters(fw.get("filter"))
        fams = fw.get("family")
        for fam in (fams or {}).values() if isinstance(fams, dict) else ():
            if isinstance(fam, dict):
                filters(fam.get("filter"))
    return names


def _compiled_filters(config: dict, interfaces: InterfaceTable) -> dict[tuple[str, str], CompiledFilter]:
    actions: Registry[TermAction] = Registry("term action")
    actions.register(ACTION, TermAction(ACTION, arg="required"))
    for name in _action_names(config) - {ACTION}:
        actions.register(name, TermAction(name, arg="optional"))
    parsed, _issues = parse_firewall(config, actions)  # the firewall's own issues are reported by the core
    out = {}
    for pf in parsed:
        if any(a == ACTION for t in pf.terms for a, _ in t.plugin_actions):
            try:
                out[(pf.family, pf.name)] = CompiledFilter(pf, interfaces)
            except Exception:  # a filter the core will reject anyway
                continue
    return out


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
    table = InterfaceTable()
    filters = _compiled_filters(config, table)
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
                    batch = PacketBatch.from_frames([probe_frame(col)], iface=table.id(str(ifname)),
                                                    direction=DIR_INPUT if direction == "input" else DIR_OUTPUT)
                    decode(batch)
                    res = f.evaluate(batch)
                    for term, action, arg, mask in res.selections:
                        if action == ACTION and bool(mask[0]):
                            issues.append(ConfigIssue(
                                ("interfaces", ifname, "family", family, "filter", direction),
                                f"loop: filter {fname!r} term {term!r} sends the IPFIX export of inline-monitoring "
                                f"instance {inst.name!r} collector {col.name!r} (udp to {col.label}, via {device} "
                                f"{direction}) to inline-monitoring-instance {arg!r}: the exporter would monitor "
                                f"its own traffic; add a term before it that accepts udp to {col.label}, or monitor "
                                f"an interface that does not carry the export"))
                            break
    return issues


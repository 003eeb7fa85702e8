"""``services dynamic-flow-capture``: parse and validate.

The Junos hierarchy (``[edit services dynamic-flow-capture]``), in YAML::

    services:
      dynamic-flow-capture:
        listen-address: "::"                   # flowplane: where the DTCP listeners bind (default "::", dual stack)
        capture-group lab:
          interfaces: [eth1]                   # flowplane interfaces whose packets this group sees (default: all)
          input-packet-rate-threshold: 90k     # packets/s; crossing it logs dfc_input_rate_threshold
          pic-memory-threshold: {percentage: 80}   # ADDs refused above this share of the dfc_criteria_max limit
          max-duplicates: 3                    # content destinations one packet may be copied to
          duplicates-dropped-periodicity: 30   # seconds between Duplicates-Dropped notifications
          control-source cs1:
            source-addresses: [192.0.2.0/24, "2001:db8::/64"]
            service-port: 2400                 # DTCP on UDP and TCP
            shared-key: "secret"               # or key-file: /etc/flowplane/cs1.key
            allowed-destinations: [cd1]
            minimum-priority: 1
            notification-targets: ["192.0.2.1 port 2100"]   # or [{address: 192.0.2.1, port: 2100}]
          content-destination cd1:
            address: 198.51.100.7
            port: 5000                         # flowplane: UDP port of the copies (an ADD may name another)
            source-address: 198.51.100.1       # flowplane: outer source address (default: the route's)
            source-port: 49153                 # flowplane: outer UDP source port (default: ephemeral)
            ttl: 64
            hard-limit: 100m                   # bits/s: copies above it are dropped
            soft-limit: 80m                    # bits/s: congestion notification above it
            soft-limit-clear: 60m              # bits/s: congestion clears below it (default: soft-limit)

One pass yields both the issues (every problem, with its key path) and, when
there are none, the :class:`DfcConfig` the engine runs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any

from flowplane.api import (
    ConfigIssue,
    LimitField,
    Limits,
    check_int,
    check_int_fields,
    check_keys,
    check_mapping,
    check_str,
    suggest,
)

BASE = ("services", "dynamic-flow-capture")
TOP_KEYS = ("capture-group", "listen-address")
GROUP_KEYS = ("interfaces", "input-packet-rate-threshold", "pic-memory-threshold", "max-duplicates",
              "duplicates-dropped-periodicity", "control-source", "content-destination")
SOURCE_KEYS = ("source-addresses", "service-port", "shared-key", "key-file", "allowed-destinations",
               "minimum-priority", "notification-targets")
DEST_KEYS = ("address", "port", "source-address", "source-port", "ttl", "hard-limit", "soft-limit",
             "soft-limit-clear")

#: The hardware-profile limits this feature declares (with its config section claim).
LIMITS = (
    LimitField("dfc_criteria_max", 10_000, "active dynamic flow capture criteria (DTCP)"),
)

DEFAULT_SERVICE_PORT = 2400
DEFAULT_CRITERIA_MAX = LIMITS[0].default
MAX_PRIORITY = 255
BANDWIDTH_MAX = 400_000_000_000  # bits/s
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)\s*$")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def criteria_max(limits: Limits) -> int:
    """The profile's cap on criteria per capture group (``dfc_criteria_max``)."""
    return int(limits.dfc_criteria_max)


@dataclass(frozen=True)
class NotificationTarget:
    address: str
    port: int


@dataclass
class ControlSource:
    name: str
    group: str
    networks: list = field(default_factory=list)  # ipaddress networks allowed to send requests
    service_port: int = DEFAULT_SERVICE_PORT
    key: bytes = b""
    allowed_destinations: tuple[str, ...] = ()  # empty: every content destination of the group
    minimum_priority: int = 0
    notification_targets: list[NotificationTarget] = field(default_factory=list)

    def allows_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


@dataclass
class ContentDestination:
    name: str
    group: str
    address: str
    port: int = 0  # 0: each ADD must name X-JTap-Cdest-Dest-Port
    source_address: str | None = None
    source_port: int = 0
    ttl: int = 64
    hard_limit: int = 0  # bits/s, 0: none
    soft_limit: int = 0
    soft_limit_clear: int = 0

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


@dataclass
class CaptureGroup:
    name: str
    interfaces: tuple[str, ...] = ()  # empty: all interfaces
    input_rate_threshold: int = 0  # packets/s, 0: none
    memory_threshold_pct: int = 100
    max_duplicates: int = 0  # 0: no limit
    duplicates_periodicity: int = 0  # seconds, 0: no Duplicates-Dropped notifications
    sources: dict[str, ControlSource] = field(default_factory=dict)
    destinations: dict[str, ContentDestination] = field(default_factory=dict)


@dataclass
class DfcConfig:
    groups: dict[str, CaptureGroup] = field(default_factory=dict)
    listen_address: str = "::"
    criteria_max: int = DEFAULT_CRITERIA_MAX

    @property
    def enabled(self) -> bool:
        return bool(self.groups)

    def source(self, name: str) -> ControlSource | None:
        for g in self.groups.values():
            if name in g.sources:
                return g.sources[name]
        return None


def parse_rate(value: Any) -> int | None:
    """``90000``, ``"90k"``, ``"100m"``, ``"1g"`` -> an integer, or None if it is not a rate."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _RATE.match(value)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return None


def _rate(sec: dict, key: str, p: tuple, hi: int, issues: list[ConfigIssue]) -> int:
    if key not in sec:
        return 0
    v = parse_rate(sec[key])
    if v is None:
        issues.append(ConfigIssue(p + (key,), "expected a rate like 90000, \"90k\", \"100m\" or \"1g\", got "
                                              f"{sec[key]!r}"))
        return 0
    found = check_int(v, p + (key,), 1, hi)
    issues += found
    return 0 if found else v


def _address(value: Any, p: tuple, issues: list[ConfigIssue]) -> str | None:
    if not isinstance(value, str):
        issues.append(ConfigIssue(p, f"expected an IPv4 or IPv6 address, got {value!r}"))
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        issues.append(ConfigIssue(p, f"{value!r} is not an IPv4 or IPv6 address"))
        return None


def _names(value: Any, p: tuple, what: str, issues: list[ConfigIssue]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    issues.append(ConfigIssue(p, f"expected {what} (a name or a list of names), got {value!r}"))
    return []


def _target(value: Any, p: tuple, issues: list[ConfigIssue]) -> NotificationTarget | None:
    """``"192.0.2.1 port 2100"`` (Junos words) or ``{address: 192.0.2.1, port: 2100}``."""
    if isinstance(value, str):
        words = value.split()
        if len(words) == 3 and words[1] == "port" and words[2].isdigit():
            value = {"address": words[0], "port": int(words[2])}
        else:
            issues.append(ConfigIssue(p, f"expected \"ADDRESS port N\", got {value!r}"))
            return None
    if not isinstance(value, dict):
        issues.append(ConfigIssue(p, f"expected \"ADDRESS port N\" or {{address: A, port: N}}, got {value!r}"))
        return None
    issues += check_keys(value, ("address", "port"), p)
    if "address" not in value or "port" not in value:
        issues.append(ConfigIssue(p, "a notification target needs both an address and a port"))
        return None
    addr = _address(value["address"], p + ("address",), issues)
    found = check_int(value["port"], p + ("port",), 1, 65535)
    issues += found
    return NotificationTarget(addr, value["port"]) if addr and not found else None


def _parse_source(name: str, group: str, sec: dict, p: tuple, base_dir: str | None,
                  issues: list[ConfigIssue]) -> ControlSource:
    cs = ControlSource(name, group)
    issues += check_keys(sec, SOURCE_KEYS, p)
    addrs = sec.get("source-addresses")
    if addrs is None:
        issues.append(ConfigIssue(p, "a control source needs source-addresses (the addresses its requests come from)"))
    else:
        for i, a in enumerate(addrs if isinstance(addrs, list) else [addrs]):
            try:
                cs.networks.append(ipaddress.ip_network(str(a), strict=False))
            except ValueError:
                issues.append(ConfigIssue(p + ("source-addresses",
                                               i) if isinstance(addrs, list) else p + ("source-addresses",),
                                          f"{a!r} is not an IPv4/IPv6 address or prefix"))
    if "service-port" in sec:
        found = check_int(sec["service-port"], p + ("service-port",), 0, 65535)
        issues += found
        if not found:
            cs.service_port = sec["service-port"]
    has_key, has_file = "shared-key" in sec, "key-file" in sec
    if has_key and has_file:
        issues.append(ConfigIssue(p + ("key-file",), "give either shared-key or key-file, not both"))
    elif has_key:
        found = check_str(sec["shared-key"], p + ("shared-key",))
        issues += found
        if not found:
            cs.key = sec["shared-key"].encode()
            if not cs.key:
                issues.append(ConfigIssue(p + ("shared-key",), "the shared key is empty"))
    elif has_file:
        found = check_str(sec["key-file"], p + ("key-file",))
        issues += found
        if not found:
            path = sec["key-file"] if os.path.isabs(sec["key-file"]) else os.path.join(base_dir or ".", sec["key-file"])
            try:
                with open(path, "rb") as fh:
                    cs.key = fh.read().strip()
            except OSError as exc:
                issues.append(ConfigIssue(p + ("key-file",), f"cannot read the key file {path}: {exc.strerror or exc}"))
            else:
                if not cs.key:
                    issues.append(ConfigIssue(p + ("key-file",), f"the key file {path} is empty"))
    else:
        issues.append(ConfigIssue(p, "a control source needs shared-key or key-file (DTCP requests are HMAC-SHA1 "
                                     "signed)"))
    if "allowed-destinations" in sec:
        cs.allowed_destinations = tuple(_names(sec["allowed-destinations"], p + ("allowed-destinations",),
                                               "content destination names", issues))
    if "minimum-priority" in sec:
        found = check_int(sec["minimum-priority"], p + ("minimum-priority",), 0, MAX_PRIORITY)
        issues += found
        if not found:
            cs.minimum_priority = sec["minimum-priority"]
    targets = sec.get("notification-targets")
    if targets is not None:
        items = targets if isinstance(targets, list) else [targets]
        for i, t in enumerate(items):
            tp = p + ("notification-targets", i) if isinstance(targets, list) else p + ("notification-targets",)
            nt = _target(t, tp, issues)
            if nt:
                cs.notification_targets.append(nt)
    return cs


def _parse_destination(name: str, group: str, sec: dict, p: tuple, issues: list[ConfigIssue]) -> ContentDestination:
    issues += check_keys(sec, DEST_KEYS, p)
    addr = _address(sec["address"], p + ("address",), issues) if "address" in sec else None
    if "address" not in sec:
        issues.append(ConfigIssue(p, "a content destination needs an address"))
    cd = ContentDestination(name, group, addr or "0.0.0.0")
    issues += check_int_fields(sec, p, (("port", "port", 1, 65535), ("source-port", "source_port", 1, 65535),
                                        ("ttl", "ttl", 1, 255)), cd)
    if "source-address" in sec:
        src = _address(sec["source-address"], p + ("source-address",), issues)
        if src and addr and (":" in src) != (":" in addr):
            issues.append(ConfigIssue(p + ("source-address",), f"source-address {src} is not of the family of address "
                                                               f"{addr}"))
        cd.source_address = src
    cd.hard_limit = _rate(sec, "hard-limit", p, BANDWIDTH_MAX, issues)
    cd.soft_limit = _rate(sec, "soft-limit", p, BANDWIDTH_MAX, issues)
    cd.soft_limit_clear = _rate(sec, "soft-limit-clear", p, BANDWIDTH_MAX, issues)
    if cd.soft_limit_clear and not cd.soft_limit:
        issues.append(ConfigIssue(p + ("soft-limit-clear",), "soft-limit-clear needs soft-limit"))
    if cd.soft_limit and cd.soft_limit_clear > cd.soft_limit:
        issues.append(ConfigIssue(p + ("soft-limit-clear",),
                                  f"soft-limit-clear {cd.soft_limit_clear} bps is above "
                                  f"soft-limit {cd.soft_limit} bps"))
    if cd.hard_limit and cd.soft_limit > cd.hard_limit:
        issues.append(ConfigIssue(p + ("soft-limit",), f"soft-limit {cd.soft_limit} bps is above hard-limit "
                                                       f"{cd.hard_limit} bps"))
    if cd.soft_limit and not cd.soft_limit_clear:
        cd.soft_limit_clear = cd.soft_limit
    return cd


def _named(sec: dict, key: str, p: tuple, what: str, issues: list[ConfigIssue]) -> list[tuple[str, dict, tuple]]:
    block = sec.get(key)
    issues += check_mapping(block, p + (key,), f"{what} name -> settings")
    out = []
    if isinstance(block, dict):
        for name, s in block.items():
            sp = p + (key, name)
            if not isinstance(s, dict):
                issues.append(ConfigIssue(sp, f"expected the {what}'s settings as a mapping, got {s!r}"))
                continue
            out.append((str(name), s, sp))
    return out


def _parse_group(name: str, sec: dict, p: tuple, config: dict, base_dir: str | None,
                 issues: list[ConfigIssue]) -> CaptureGroup:
    g = CaptureGroup(name)
    issues += check_keys(sec, GROUP_KEYS, p)
    if "interfaces" in sec:
        names = _names(sec["interfaces"], p + ("interfaces",), "interface names", issues)
        defined = list((config.get("interfaces") or {}).keys()) if isinstance(config.get("interfaces"), dict) else []
        for n in names:
            if n not in defined:
                issues.append(ConfigIssue(p + ("interfaces",), f"interface {n!r} is not defined under 'interfaces'"
                                          f"{suggest(n, defined)}"))
        g.interfaces = tuple(names)
    if "input-packet-rate-threshold" in sec:
        g.input_rate_threshold = _rate(sec, "input-packet-rate-threshold", p, 1_000_000_000, issues)
    pmt = sec.get("pic-memory-threshold")
    if pmt is not None:
        pp = p + ("pic-memory-threshold",)
        if isinstance(pmt, int) and not isinstance(pmt, bool):
            pmt = {"percentage": pmt}
        issues += check_mapping(pmt, pp, "percentage N")
        if isinstance(pmt, dict):
            issues += check_keys(pmt, ("percentage",), pp)
            if "percentage" not in pmt:
                issues.append(ConfigIssue(pp, "expected {percentage: N}"))
            else:
                found = check_int(pmt["percentage"], pp + ("percentage",), 1, 100)
                issues += found
                if not found:
                    g.memory_threshold_pct = pmt["percentage"]
    issues += check_int_fields(sec, p, (("max-duplicates", "max_duplicates", 1, 64),
                                        ("duplicates-dropped-periodicity", "duplicates_periodicity", 1, 86400)), g)
    for dname, dsec, dp in _named(sec, "content-destination", p, "content destination", issues):
        g.destinations[dname] = _parse_destination(dname, name, dsec, dp, issues)
    for sname, ssec, sp in _named(sec, "control-source", p, "control source", issues):
        cs = _parse_source(sname, name, ssec, sp, base_dir, issues)
        for d in cs.allowed_destinations:
            if d not in g.destinations:
                issues.append(ConfigIssue(sp + ("allowed-destinations",),
                                          f"no content destination {d!r} in capture group "
                                          f"{name!r}{suggest(d, g.destinations)}"))
        g.sources[sname] = cs
    if not g.sources:
        issues.append(ConfigIssue(p, "a capture group needs at least one control-source"))
    if not g.destinations:
        issues.append(ConfigIssue(p, "a capture group needs at least one content-destination"))
    return g


def parse(config: dict, limits: Limits, base_dir: str | None = None) -> tuple[DfcConfig, list[ConfigIssue]]:
    """Parse ``services dynamic-flow-capture`` of *config*; returns (config, issues)."""
    issues: list[ConfigIssue] = []
    out = DfcConfig(criteria_max=criteria_max(limits))
    services = config.get("services")
    sec = (services or {}).get("dynamic-flow-capture") if isinstance(services, dict) else None
    if sec is None:
        return out, issues
    issues += check_mapping(sec, BASE, "capture-group NAME / listen-address")
    if not isinstance(sec, dict):
        return out, issues
    issues += check_keys(sec, TOP_KEYS, BASE)
    if "listen-address" in sec:
        addr = _address(sec["listen-address"], BASE + ("listen-address",), issues)
        if addr:
            out.listen_address = addr
    for name, gsec, gp in _named(sec, "capture-group", BASE, "capture group", issues):
        out.groups[name] = _parse_group(name, gsec, gp, config, base_dir, issues)
    if "capture-group" not in sec:
        issues.append(ConfigIssue(BASE, "expected at least one capture-group"))
    seen: dict[str, str] = {}
    for g in out.groups.values():
        for s in g.sources.values():
            if s.name in seen:
                issues.append(ConfigIssue(BASE + ("capture-group", g.name, "control-source", s.name),
                                          f"control source {s.name!r} is also defined in capture group "
                                          f"{seen[s.name]!r}; "
                                          "DTCP Csource-ID names must be unique"))
            seen[s.name] = g.name
    return out, issues

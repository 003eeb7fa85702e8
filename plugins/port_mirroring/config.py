"""``forwarding-options port-mirroring``: parse and validate.

Junos hierarchy, in YAML::

    forwarding-options:
      port-mirroring:
        input: {rate: 1, run-length: 0, maximum-packet-length: 0}
        family inet:
          output:
            interface: mirror0                 # or a list, or {mirror0: {}, mirror1: {}}
        family any:
          output:
            ip-address 192.0.2.50:             # a remote analyzer
              encapsulation: gre               # gre (default) | erspan
              source-address: 192.0.2.1
        instance pm1:                          # named instances: the same keys
          input: {rate: 100, run-length: 2}
          family inet6:
            output:
              ip-address "2001:db8::50": {encapsulation: erspan, session-id: 7}

One parse pass yields both the issues (every problem with its key path) and,
when there are none, the :class:`MirrorConfig` the engine runs.  Local
interfaces are *not* looked up here: ``check-config`` passes on a machine
without them; the engine counts ``interface_down`` until they appear.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from flowplane.api import ConfigIssue, LimitField, Limits, check_int, check_keys, check_mapping, check_str

#: The hardware-profile limits this feature declares (with its config section claim).
LIMITS = (
    LimitField("port_mirroring_instances", 16, "named port-mirroring instances"),
    LimitField("port_mirroring_destinations", 64, "outputs per port-mirroring instance"),
)

BASE = ("forwarding-options", "port-mirroring")
DEFAULT_INSTANCE = "default"
FAMILIES = ("inet", "inet6", "any")
INSTANCE_KEYS = ("input", "family")
INPUT_KEYS = ("rate", "run-length", "maximum-packet-length")
OUTPUT_KEYS = ("interface", "ip-address")
REMOTE_KEYS = ("encapsulation", "source-address", "session-id", "ttl", "dscp")
ENCAPSULATIONS = ("gre", "erspan")

MAX_PACKET_LENGTH = 9216  # Junos maximum-packet-length range 0..9216
MAX_RUN_LENGTH = 20  # Junos run-length range 0..20
MAX_SESSION_ID = 1023  # ERSPAN type II: 10 bits
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


def limit(limits: Limits, name: str) -> int:
    """The active hardware profile's limit *name* (declared in :data:`LIMITS` or by the core)."""
    return int(getattr(limits, name))


@dataclass(frozen=True)
class Destination:
    """One output of an instance: a local interface or a remote analyzer."""

    kind: str  # "interface" | "gre" | "erspan"
    target: str  # interface name or IP address
    families: tuple[str, ...]  # which families' packets go here (inet, inet6, any)
    source_address: str | None = None
    session_id: int = 0
    ttl: int = 64
    dscp: int = 0

    @property
    def label(self) -> str:
        if self.kind == "interface":
            return f"interface {self.target}"
        return f"{self.kind} {self.target}"

    @property
    def remote_family(self) -> int:
        """6 for an IPv6 analyzer, 4 otherwise (0 for a local interface)."""
        if self.kind == "interface":
            return 0
        return 6 if ":" in self.target else 4


@dataclass
class Instance:
    name: str
    rate: int = 1
    run_length: int = 0
    maximum_packet_length: int = 0  # 0 = the whole frame
    destinations: list[Destination] = field(default_factory=list)


@dataclass
class MirrorConfig:
    instances: dict[str, Instance] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.instances)


def section(config: dict) -> Any:
    fo = config.get("forwarding-options") if isinstance(config, dict) else None
    return fo.get("port-mirroring") if isinstance(fo, dict) else None


def instance_names(config: dict) -> list[str]:
    """Configured instances (``default`` when the top level has input/family), for action validators."""
    pm = section(config)
    if not isinstance(pm, dict):
        return []
    names = [DEFAULT_INSTANCE] if any(k in pm for k in INSTANCE_KEYS) else []
    named = pm.get("instance")
    if isinstance(named, dict):
        names += [str(n) for n in named]
    return names


def parse(config: dict, limits: Limits) -> tuple[MirrorConfig, list[ConfigIssue]]:
    """Parse ``forwarding-options port-mirroring`` of *config*; returns (config, issues)."""
    issues: list[ConfigIssue] = []
    out = MirrorConfig()
    pm = section(config)
    if pm is None:
        return out, issues
    issues += check_mapping(pm, BASE, "input / family / instance")
    if not isinstance(pm, dict):
        return out, issues
    issues += check_keys(pm, INSTANCE_KEYS + ("instance",), BASE)
    defaults = _parse_input(pm.get("input"), BASE + ("input",), Instance(DEFAULT_INSTANCE), limits, issues)
    if any(k in pm for k in INSTANCE_KEYS):
        _parse_families(pm.get("family"), BASE + ("family",), defaults, limits, issues)
        if not defaults.destinations and "family" not in pm:
            issues.append(ConfigIssue(BASE, "the default instance has an input but no output; expected "
                                            "'family inet|inet6|any output interface IF' or 'ip-address ADDR'"))
        out.instances[DEFAULT_INSTANCE] = defaults
    named = pm.get("instance")
    issues += check_mapping(named, BASE + ("instance",), "instance name -> settings")
    if isinstance(named, dict):
        max_inst = limit(limits, "port_mirroring_instances")
        if len(named) > max_inst:
            issues.append(ConfigIssue(BASE + ("instance",), f"{len(named)} instances exceed the maximum {max_inst} "
                                                            "(hardware profile limit port_mirroring_instances)"))
        for name, sec in named.items():
            p = BASE + ("instance", name)
            if str(name) == DEFAULT_INSTANCE:
                issues.append(ConfigIssue(p, f"the name {DEFAULT_INSTANCE!r} is reserved for the top-level instance"))
                continue
            if sec is None:
                sec = {}
            if not isinstance(sec, dict):
                issues.append(ConfigIssue(p, f"expected the instance's settings as a mapping, got {sec!r}"))
                continue
            issues += check_keys(sec, INSTANCE_KEYS, p)
            inst = _parse_input(sec.get("input"), p + ("input",), Instance(str(name)), limits, issues)
            _parse_families(sec.get("family"), p + ("family",), inst, limits, issues)
            if not inst.destinations and not any(i.path[: len(p)] == p for i in issues):
                issues.append(ConfigIssue(p, f"instance {name!r} has no output; expected "
                                             "'family inet|inet6|any output interface IF' or 'ip-address ADDR'"))
            out.instances[str(name)] = inst
    return out, issues


def _parse_input(sec: Any, p: tuple, inst: Instance, limits: Limits, issues: list[ConfigIssue]) -> Instance:
    if sec is None:
        return inst
    issues.extend(check_mapping(sec, p, "rate / run-length / maximum-packet-length"))
    if not isinstance(sec, dict):
        return inst
    issues.extend(check_keys(sec, INPUT_KEYS, p))
    if "rate" in sec:
        bad = check_int(sec["rate"], p + ("rate",), 1, limit(limits, "sampling_rate_max"), limit="sampling_rate_max")
        issues.extend(bad)
        if not bad:
            inst.rate = sec["rate"]
    if "run-length" in sec:
        bad = check_int(sec["run-length"], p + ("run-length",), 0, MAX_RUN_LENGTH)
        issues.extend(bad)
        if not bad:
            inst.run_length = sec["run-length"]
    if "maximum-packet-length" in sec:
        bad = check_int(sec["maximum-packet-length"], p + ("maximum-packet-length",), 0, MAX_PACKET_LENGTH)
        issues.extend(bad)
        if not bad:
            inst.maximum_packet_length = sec["maximum-packet-length"]
    return inst


def _parse_families(sec: Any, p: tuple, inst: Instance, limits: Limits, issues: list[ConfigIssue]) -> None:
    if sec is None:
        return
    issues.extend(check_mapping(sec, p, "inet / inet6 / any -> output"))
    if not isinstance(sec, dict):
        return
    issues.extend(check_keys(sec, FAMILIES, p, "family"))
    by_target: dict[tuple[str, str], int] = {}
    dests: list[Destination] = []
    for family, fsec in sec.items():
        if family not in FAMILIES:
            continue
        fp = p + (family,)
        if not isinstance(fsec, dict) or "output" not in fsec:
            issues.append(ConfigIssue(fp, f"expected 'output' with 'interface IF' or 'ip-address ADDR', got {fsec!r}"))
            continue
        issues.extend(check_keys(fsec, ("output",), fp))
        out = fsec["output"]
        op = fp + ("output",)
        if not isinstance(out, dict) or not any(k in out for k in OUTPUT_KEYS):
            issues.append(ConfigIssue(op, f"expected 'interface IF' and/or 'ip-address ADDR', got {out!r}"))
            continue
        issues.extend(check_keys(out, OUTPUT_KEYS, op))
        for name, settings in _entries(out.get("interface"), op + ("interface",), "an interface name", issues):
            ip = op + ("interface", name)
            if not _IFNAME.match(name):
                issues.append(ConfigIssue(ip, f"expected a Linux interface name (1-15 characters, no '/', ':' or "
                                              f"spaces), got {name!r}"))
                continue
            if settings not in (None, {}):
                issues.append(ConfigIssue(ip, f"a local mirror interface takes no settings, got {settings!r}"))
                continue
            _add(dests, by_target, Destination("interface", name, (family,)))
        for addr, settings in _entries(out.get("ip-address"), op + ("ip-address",), "an IP address", issues):
            d = _parse_remote(addr, settings, op + ("ip-address", addr), family, issues)
            if d is not None:
                _add(dests, by_target, d)
    max_dest = limit(limits, "port_mirroring_destinations")
    if len(dests) > max_dest:
        issues.append(ConfigIssue(p, f"{len(dests)} destinations exceed the maximum {max_dest} "
                                     "(hardware profile limit port_mirroring_destinations)"))
    inst.destinations = dests


def _add(dests: list[Destination], by_target: dict, d: Destination) -> None:
    """One destination per target: a target named under several families serves them all."""
    key = (d.kind if d.kind == "interface" else "ip", d.target)
    if key in by_target:
        old = dests[by_target[key]]
        dests[by_target[key]] = Destination(old.kind, old.target, old.families + d.families, old.source_address,
                                            old.session_id, old.ttl, old.dscp)
    else:
        by_target[key] = len(dests)
        dests.append(d)


def _entries(value: Any, p: tuple, what: str, issues: list[ConfigIssue]) -> list[tuple[str, Any]]:
    """``X``, ``[X, Y]`` or ``{X: settings, Y: settings}`` -> [(name, settings)]."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, None)]
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            if isinstance(v, str):
                out.append((v, None))
            else:
                issues.append(ConfigIssue(p + (i,), f"expected {what}, got {v!r}"))
        return out
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    issues.append(ConfigIssue(p, f"expected {what}, a list of them, or a mapping name -> settings; got {value!r}"))
    return []


def _parse_remote(addr: str, s: Any, p: tuple, family: str, issues: list[ConfigIssue]) -> Destination | None:
    addr = addr.strip("\"'")  # 'ip-address "2001:db8::5":' keeps the quotes of the split key
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        issues.append(ConfigIssue(p, f"expected the analyzer's IPv4 or IPv6 address, got {addr!r}"))
        return None
    if ip.is_multicast or ip.is_unspecified:
        issues.append(ConfigIssue(p, f"the analyzer address {addr} must be a unicast address"))
        return None
    if s is None:
        s = {}
    if not isinstance(s, dict):
        issues.append(ConfigIssue(p, f"expected the analyzer's settings (encapsulation, source-address, session-id, "
                                     f"ttl, dscp) as a mapping, got {s!r}"))
        return None
    bad = check_keys(s, REMOTE_KEYS, p)
    encap = s.get("encapsulation", "gre")
    bad += check_str(encap, p + ("encapsulation",), ENCAPSULATIONS)
    src = s.get("source-address")
    if src is not None:
        try:
            sip = ipaddress.ip_address(str(src))
            if sip.version != ip.version:
                bad.append(ConfigIssue(p + ("source-address",), f"source-address {src} is IPv{sip.version} but the "
                                                                f"analyzer {addr} is IPv{ip.version}"))
        except ValueError:
            bad.append(ConfigIssue(p + ("source-address",), f"expected an IP address, got {src!r}"))
    if "session-id" in s:
        bad += check_int(s["session-id"], p + ("session-id",), 0, MAX_SESSION_ID)
        if encap != "erspan":
            bad.append(ConfigIssue(p + ("session-id",), f"session-id is for 'encapsulation: erspan', "
                                                        f"not {encap!r}"))
    if "ttl" in s:
        bad += check_int(s["ttl"], p + ("ttl",), 1, 255)
    if "dscp" in s:
        bad += check_int(s["dscp"], p + ("dscp",), 0, 63)
    issues.extend(bad)
    if bad:
        return None
    return Destination(str(encap), str(ip), (family,), source_address=None if src is None else str(src),
                       session_id=int(s.get("session-id", 0)), ttl=int(s.get("ttl", 64)), dscp=int(s.get("dscp", 0)))

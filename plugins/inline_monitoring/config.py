"""``services inline-monitoring``: parse and validate against the active hardware profile.

Junos hierarchy, in YAML (the statements of the Junos guide, plus ``clip-length``, a
flowplane extension for profiles whose clip length is configurable)::

    services:
      inline-monitoring:
        template t1:
          template-refresh-rate: 30          # seconds, 10..600 (default 600)
          option-template-refresh-rate: 30   # seconds, 10..600 (default 600)
          template-id: 1024                  # data template id, 256..65535 (default 1024)
          option-template-id: 1025           # options template id (default 1025)
          observation-domain-id: 1           # 0..255 (default 0)
        instance i1:
          template-name: t1
          sampling-rate: 1                   # per-instance profiles (ptx-evo) only
          clip-length: 128                   # bytes from the Ethernet header (default: the profile's)
          collector c1:
            source-address: 10.1.1.1
            destination-address: 10.2.2.1
            destination-port: 4739
            sampling-rate: 10000             # per-collector profiles (mx-mpc, generic-linux)
            dscp: 10
            forwarding-class: assured-forwarding

One parse pass yields both the issues (every problem, with its key path and,
for profile limits, the limit's name) and the :class:`InlineConfig` the
engine runs.
"""

from __future__ import annotations

import ipaddress
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
    host_port,
    suggest,
)

BASE = ("services", "inline-monitoring")
TOP_KEYS = ("template", "instance")
TEMPLATE_KEYS = ("template-refresh-rate", "option-template-refresh-rate", "template-id", "option-template-id",
                 "observation-domain-id")
INSTANCE_KEYS = ("template-name", "collector", "sampling-rate", "clip-length")
COLLECTOR_KEYS = ("source-address", "destination-address", "destination-port", "sampling-rate", "dscp",
                  "forwarding-class")

#: The hardware-profile limits this feature declares (with its config section claim).
LIMITS = (
    LimitField("inline_monitoring_instances", 64, "services inline-monitoring instances"),
    LimitField("collectors_per_instance", 4, "collectors per inline-monitoring instance"),
    LimitField("clip_length_max", 9216, "bytes of each frame an inline-monitoring record may carry"),
    LimitField("inline_collector_families", ("inet", "inet6"), "address families of inline-monitoring collectors"),
    LimitField("sampling_rate_scope", "per-collector", "where the sampling rate is set: per-collector or per-instance"),
)

REFRESH_MIN_S, REFRESH_MAX_S, REFRESH_DEFAULT_S = 10, 600, 600
DEFAULT_TEMPLATE_ID = 1024
DEFAULT_OPTION_TEMPLATE_ID = 1025
DEFAULT_CLIP = 128  # generic-linux (no fixed hardware clip): what an operator gets unless clip-length says otherwise
#: The link MTU export messages are sized for (IPv4/UDP); one record must fit in one message.
EXPORT_MTU = 1500
MESSAGE_OVERHEAD = 16 + 4  # IPFIX message header + set header
RECORD_FIXED = 4 + 4 + 1 + 2 + 3  # ingress, egress, direction, frame size, longest variable-length prefix


def max_clip_for_mtu(mtu: int = EXPORT_MTU, ipv6: bool = False) -> int:
    """The longest clip whose record still fits one export message at *mtu*."""
    return mtu - (48 if ipv6 else 28) - MESSAGE_OVERHEAD - RECORD_FIXED


def default_clip(limits: Limits) -> int:
    """The profile's clip length when it is a hardware one (126 / 256), else :data:`DEFAULT_CLIP`."""
    return limits.clip_length_max if limits.clip_length_max <= 256 else min(DEFAULT_CLIP, limits.clip_length_max)


@dataclass
class Template:
    name: str
    template_refresh_s: int = REFRESH_DEFAULT_S
    option_refresh_s: int = REFRESH_DEFAULT_S
    template_id: int = DEFAULT_TEMPLATE_ID
    option_template_id: int = DEFAULT_OPTION_TEMPLATE_ID
    observation_domain_id: int = 0


@dataclass
class Collector:
    name: str
    destination: str
    port: int
    source: str | None = None
    sampling_rate: int = 1  # effective rate for this collector (the instance's on per-instance profiles)
    dscp: int = 0
    forwarding_class: str | None = None

    @property
    def family(self) -> str:
        return "inet6" if ":" in self.destination else "inet"

    @property
    def label(self) -> str:
        return host_port(self.destination, self.port)


@dataclass
class Instance:
    name: str
    template: Template
    clip_length: int
    sampling_rate: int | None = None  # set on per-instance profiles
    collectors: dict[str, Collector] = field(default_factory=dict)


@dataclass
class InlineConfig:
    templates: dict[str, Template] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    sampling_scope: str = "per-collector"

    @property
    def enabled(self) -> bool:
        return bool(self.instances)

    def collectors(self) -> list[tuple[Instance, Collector]]:
        return [(i, c) for i in self.instances.values() for c in i.collectors.values()]


def section(config: dict) -> Any:
    return (config.get("services") or {}).get("inline-monitoring") if isinstance(config.get("services"), dict) else None


def parse(config: dict, limits: Limits) -> tuple[InlineConfig, list[ConfigIssue]]:
    """Parse ``services inline-monitoring`` of *config* against *limits*; returns (config, issues)."""
    issues: list[ConfigIssue] = []
    out = InlineConfig(sampling_scope=limits.sampling_rate_scope)
    sec = section(config)
    if sec is None:
        return out, issues
    issues += check_mapping(sec, BASE, "template / instance")
    if not isinstance(sec, dict):
        return out, issues
    issues += check_keys(sec, TOP_KEYS, BASE)
    templates = sec.get("template")
    issues += check_mapping(templates, BASE + ("template",), "template name -> settings")
    if isinstance(templates, dict):
        for name, t in templates.items():
            tmpl = _parse_template(str(name), t, BASE + ("template", name), issues)
            if tmpl is not None:
                out.templates[str(name)] = tmpl
    instances = sec.get("instance")
    issues += check_mapping(instances, BASE + ("instance",), "instance name -> settings")
    if isinstance(instances, dict):
        if len(instances) > limits.inline_monitoring_instances:
            issues.append(ConfigIssue(BASE + ("instance",),
                                      f"{len(instances)} inline-monitoring instances exceed the maximum "
                                      f"{limits.inline_monitoring_instances} (hardware profile limit "
                                      f"inline_monitoring_instances)"))
        for name, isec in instances.items():
            inst = _parse_instance(str(name), isec, BASE + ("instance", name), out.templates, limits, issues)
            if inst is not None:
                out.instances[str(name)] = inst
    total = sum(len(i.collectors) for i in out.instances.values())
    if total > limits.collectors_total:
        issues.append(ConfigIssue(BASE + ("instance",),
                                  f"{total} collectors in all exceed the maximum {limits.collectors_total} "
                                  f"(hardware profile limit collectors_total)"))
    return out, issues


def _parse_template(name: str, t: Any, p: tuple, issues: list[ConfigIssue]) -> Template | None:
    if t is None:
        t = {}
    if not isinstance(t, dict):
        issues.append(ConfigIssue(p, f"expected the template's settings as a mapping, got {t!r}"))
        return None
    issues += check_keys(t, TEMPLATE_KEYS, p)
    tmpl = Template(name)
    issues += check_int_fields(t, p, (("template-refresh-rate", "template_refresh_s", REFRESH_MIN_S, REFRESH_MAX_S),
                                      ("option-template-refresh-rate", "option_refresh_s", REFRESH_MIN_S,
                                       REFRESH_MAX_S),
                                      ("template-id", "template_id", 256, 65535),
                                      ("option-template-id", "option_template_id", 256, 65535),
                                      ("observation-domain-id", "observation_domain_id", 0, 255)), tmpl)
    if tmpl.template_id == tmpl.option_template_id:
        key = "option-template-id" if "option-template-id" in t else "template-id"
        issues.append(ConfigIssue(p + (key,), "template-id and option-template-id must differ (both "
                                              f"{tmpl.template_id})"))
    return tmpl


def _parse_instance(name: str, sec: Any, p: tuple, templates: dict[str, Template], limits: Limits,
                    issues: list[ConfigIssue]) -> Instance | None:
    if not isinstance(sec, dict):
        issues.append(ConfigIssue(p, "expected the instance's settings as a mapping (template-name, collector), got "
                                     f"{sec!r}"))
        return None
    issues += check_keys(sec, INSTANCE_KEYS, p)
    tname = sec.get("template-name")
    template = Template("(default)")
    if tname is None:
        issues.append(ConfigIssue(p, "missing 'template-name': name a template defined under "
                                     "'services inline-monitoring template'"))
    elif not isinstance(tname, str):
        issues.append(ConfigIssue(p + ("template-name",), f"expected a template name, got {tname!r}"))
    elif tname not in templates:
        issues.append(ConfigIssue(p + ("template-name",),
                                  f"template {tname!r} is not defined under 'services inline-monitoring template'"
                                  f"{suggest(tname, templates)}"))
    else:
        template = templates[tname]
    clip = default_clip(limits)
    if "clip-length" in sec:
        hi = min(limits.clip_length_max, max_clip_for_mtu())
        v = sec["clip-length"]
        if isinstance(v, int) and not isinstance(v, bool) and limits.clip_length_max < v <= max_clip_for_mtu():
            issues.append(ConfigIssue(p + ("clip-length",), f"{v} exceeds the maximum {limits.clip_length_max} "
                                      "(hardware profile limit clip_length_max)"))
        elif isinstance(v, int) and not isinstance(v, bool) and v > hi:
            issues.append(ConfigIssue(p + ("clip-length",), f"{v} exceeds the maximum {hi}: one record must fit one "
                                      f"export message at MTU {EXPORT_MTU}"))
        else:
            bad = check_int(v, p + ("clip-length",), 14, hi)
            issues += bad
            if not bad:
                clip = v
    inst = Instance(name, template, clip)
    per_instance = limits.sampling_rate_scope == "per-instance"
    if "sampling-rate" in sec:
        if not per_instance:
            issues.append(ConfigIssue(p + ("sampling-rate",),
                                      "the sampling rate is set per collector on this hardware profile "
                                      f"(sampling_rate_scope {limits.sampling_rate_scope}): move 'sampling-rate' "
                                      "under each 'collector'"))
        else:
            bad = check_int(sec["sampling-rate"], p + ("sampling-rate",), 1, limits.sampling_rate_max,
                            limit="sampling_rate_max")
            issues += bad
            if not bad:
                inst.sampling_rate = sec["sampling-rate"]
    if per_instance and inst.sampling_rate is None:
        inst.sampling_rate = 1
    cols = sec.get("collector")
    issues += check_mapping(cols, p + ("collector",), "collector name -> settings")
    if not cols:
        if isinstance(cols, (dict, type(None))):
            issues.append(ConfigIssue(p, "no 'collector' configured: the instance would export nothing"))
        return inst
    if not isinstance(cols, dict):
        return inst
    if len(cols) > limits.collectors_per_instance:
        issues.append(ConfigIssue(p + ("collector",), f"{len(cols)} collectors exceed the maximum "
                                  f"{limits.collectors_per_instance} per instance (hardware profile limit "
                                  "collectors_per_instance)"))
    seen: dict[tuple[str, int], str] = {}
    for cname, csec in cols.items():
        c = _parse_collector(str(cname), csec, p + ("collector", cname), inst, limits, issues)
        if c is None:
            continue
        key = (c.destination, c.port)
        if key in seen:
            issues.append(ConfigIssue(p + ("collector", cname), f"collector {cname!r} exports to {c.label} like "
                                      f"collector {seen[key]!r} of the same instance"))
        seen.setdefault(key, str(cname))
        inst.collectors[str(cname)] = c
    v6_max = max_clip_for_mtu(ipv6=True)
    if inst.clip_length > v6_max and any(c.family == "inet6" for c in inst.collectors.values()):
        issues.append(ConfigIssue(p + ("clip-length",), f"{inst.clip_length} exceeds the maximum {v6_max} for an "
                                  f"IPv6 collector: one record must fit one export message at MTU {EXPORT_MTU}"))
    return inst


def _address(v: Any, path: tuple, what: str,
             issues: list[ConfigIssue]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        if isinstance(v, bool) or not isinstance(v, str):
            raise ValueError
        return ipaddress.ip_address(v)
    except ValueError:
        issues.append(ConfigIssue(path, f"expected an IPv4 or IPv6 address for the {what}, got {v!r}"))
        return None


def _parse_collector(name: str, sec: Any, p: tuple, inst: Instance, limits: Limits,
                     issues: list[ConfigIssue]) -> Collector | None:
    if not isinstance(sec, dict):
        issues.append(ConfigIssue(p, f"expected the collector's settings as a mapping "
                                     f"(destination-address, destination-port, ...), got {sec!r}"))
        return None
    issues += check_keys(sec, COLLECTOR_KEYS, p)
    n_before = len(issues)
    dst = src = None
    if "destination-address" not in sec:
        issues.append(ConfigIssue(p, "missing 'destination-address' (the collector's address)"))
    else:
        dst = _address(sec["destination-address"], p + ("destination-address",), "collector", issues)
    if "destination-port" not in sec:
        issues.append(ConfigIssue(p, "missing 'destination-port' (the collector's UDP port, e.g. 4739)"))
    else:
        issues += check_int(sec["destination-port"], p + ("destination-port",), 1, 65535)
    if "source-address" in sec:
        src = _address(sec["source-address"], p + ("source-address",), "exporter's source", issues)
    if dst is not None:
        fam = "inet6" if dst.version == 6 else "inet"
        if fam not in limits.inline_collector_families:
            issues.append(ConfigIssue(p + ("destination-address",),
                                      f"{'IPv6' if fam == 'inet6' else 'IPv4'} collectors are not supported on this "
                                      f"hardware profile (hardware profile limit inline_collector_families: "
                                      f"{', '.join(limits.inline_collector_families)})"))
        if src is not None and src.version != dst.version:
            issues.append(ConfigIssue(p + ("source-address",), f"source-address {src} and destination-address {dst} "
                                      "are of different address families"))
    rate = inst.sampling_rate or 1
    if "sampling-rate" in sec:
        if limits.sampling_rate_scope == "per-instance":
            issues.append(ConfigIssue(p + ("sampling-rate",),
                                      "the sampling rate is set per instance on this hardware profile "
                                      "(sampling_rate_scope per-instance): move 'sampling-rate' to the instance"))
        else:
            bad = check_int(sec["sampling-rate"], p + ("sampling-rate",), 1, limits.sampling_rate_max,
                            limit="sampling_rate_max")
            issues += bad
            if not bad:
                rate = sec["sampling-rate"]
    dscp = 0
    if "dscp" in sec:
        bad = check_int(sec["dscp"], p + ("dscp",), 0, 63)
        issues += bad
        if not bad:
            dscp = sec["dscp"]
    fc = None
    if "forwarding-class" in sec:
        issues += check_str(sec["forwarding-class"], p + ("forwarding-class",))
        fc = sec["forwarding-class"] if isinstance(sec["forwarding-class"], str) else None
    if len(issues) > n_before or dst is None:
        return None
    return Collector(name, str(dst), int(sec["destination-port"]), str(src) if src is not None else None,
                     rate, dscp, fc)

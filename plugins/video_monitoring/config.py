"""``services video-monitoring`` templates and the ``input-flows`` / ``output-flows`` flow selection.

Junos hierarchy, in YAML::

    services:
      video-monitoring:
        maximum-flows: 4096                 # flowplane: flow table size; the least recently seen flow is evicted
        templates t1:
          interval-duration: 1              # seconds, 1..10 (default 1)
          inactive-timeout: 30              # seconds, 30..300 (default 30)
          rate media: 2972400               # media bits/s; or 'rate layer3: PPS' (IP packets/s); none: computed
          media-packet-size: 1504           # bits (default 1504: one 188-byte MPEG-TS packet)
          media-packets-count-in-layer3: 7  # media packets per IP packet (default 7)
          delay-factor threshold:           # ms, 0..65535 (0 = no alarm)
            warning: 50
            critical: 100
          media-loss-rate:
            threshold info percentage: 0.1  # or 'packet-count N': TS packets lost in an interval
            threshold critical packet-count: 100
          media-rate-variation:
            disable: true                   # or threshold (info|warning|critical): PERCENT
    interfaces:
      eth1:
        family inet:
          input-flows f1:                   # output-flows for packets the interface sends
            source-address: 192.0.2.0/24    # address or prefix; every criterion optional
            destination-address: 232.1.1.1
            source-port: 1234
            destination-port: 5000
            template: t1

A flow without criteria monitors every UDP flow of the interface and direction.  One parse pass
yields the issues (every problem, with its key path) and the :class:`VideoConfig` the engine runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from flowplane.api import (
    ConfigIssue,
    check_bool,
    check_int,
    check_int_fields,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    suggest,
    take_int,
)

BASE = ("services", "video-monitoring")
TOP_KEYS = ("templates", "maximum-flows")
TEMPLATE_KEYS = ("interval-duration", "inactive-timeout", "rate", "media-packet-size", "media-packets-count-in-layer3",
                 "delay-factor", "media-loss-rate", "media-rate-variation")
FLOW_KINDS = ("input-flows", "output-flows")
FLOW_KEYS = ("source-address", "destination-address", "source-port", "destination-port", "template")
FAMILIES = ("inet", "inet6")
LEVELS = ("info", "warning", "critical")
TS_PACKET_BITS = 188 * 8

DEFAULT_MAX_FLOWS = 4096
MAX_FLOWS = 1_000_000


@dataclass(frozen=True)
class Thresholds:
    """Alarm thresholds by level (absent levels raise nothing)."""

    levels: tuple[tuple[str, float], ...] = ()  # (level, threshold) in ascending severity
    disabled: bool = False

    def level_of(self, value: float | None) -> str | None:
        """The most severe level whose threshold *value* reaches, else None."""
        if self.disabled or value is None:
            return None
        hit = None
        for level, limit in self.levels:
            if limit > 0 and value >= limit:
                hit = level
        return hit

    def threshold(self, level: str) -> float | None:
        return dict(self.levels).get(level)


@dataclass(frozen=True)
class Template:
    name: str
    interval_s: int = 1
    inactive_timeout_s: int = 30
    rate_kind: str | None = None  # "media" (bits/s), "layer3" (IP packets/s) or None (computed)
    rate_value: float = 0.0
    media_packet_bits: int = TS_PACKET_BITS
    media_per_l3: int = 7
    delay_factor: Thresholds = Thresholds()
    mlr_percentage: Thresholds = Thresholds()
    mlr_packet_count: Thresholds = Thresholds()
    mrv: Thresholds = Thresholds()

    @property
    def media_rate_bps(self) -> float | None:
        """The nominal media rate in bits/s, or None when it is computed per interval."""
        if self.rate_kind == "media":
            return float(self.rate_value)
        if self.rate_kind == "layer3":
            return float(self.rate_value) * self.media_per_l3 * self.media_packet_bits
        return None

    @property
    def expected_media_pps(self) -> float | None:
        """Media packets per second the configured rate implies (the Junos expected count per second)."""
        if self.rate_kind == "media":
            return float(self.rate_value) / self.media_packet_bits
        if self.rate_kind == "layer3":
            return float(self.rate_value) * self.media_per_l3
        return None


@dataclass(frozen=True)
class FlowSelector:
    """One ``input-flows`` / ``output-flows`` entry of an interface."""

    interface: str
    family: str
    direction: str  # "input" | "output"
    name: str
    template: str
    source: Any = None  # ipaddress network or None
    destination: Any = None
    source_port: int | None = None
    destination_port: int | None = None


@dataclass
class VideoConfig:
    templates: dict[str, Template] = field(default_factory=dict)
    selectors: list[FlowSelector] = field(default_factory=list)
    max_flows: int = DEFAULT_MAX_FLOWS

    @property
    def enabled(self) -> bool:
        return bool(self.selectors)


def _levels(sec: Any, path: tuple, what: str, lo: float, hi: float, issues: list) -> tuple[tuple[str, float], ...]:
    issues += check_mapping(sec, path, f"info / warning / critical -> {what}")
    if not isinstance(sec, dict):
        return ()
    issues += check_keys(sec, LEVELS, path, "level")
    out = []
    for level in LEVELS:
        if level in sec:
            bad = check_number(sec[level], path + (level,), lo, hi)
            issues += bad
            if not bad:
                out.append((level, float(sec[level])))
    for (l1, v1), (l2, v2) in zip(out, out[1:]):
        if v2 < v1:
            issues.append(ConfigIssue(path + (l2,), f"the {l2} threshold {v2:g} is below the {l1} threshold {v1:g}; "
                                                    "thresholds must not fall as the level rises"))
    return tuple(out)


def _template(name: str, sec: Any, issues: list) -> Template | None:
    p = BASE + ("templates", name)
    if sec is None:
        sec = {}
    if not isinstance(sec, dict):
        issues.append(ConfigIssue(p, f"expected the template's settings as a mapping, got {sec!r}"))
        return None
    issues += check_keys(sec, TEMPLATE_KEYS, p)
    kw: dict[str, Any] = {"name": name}
    issues += check_int_fields(sec, p, (("interval-duration", "interval_s", 1, 10),
                                        ("inactive-timeout", "inactive_timeout_s", 30, 300),
                                        ("media-packets-count-in-layer3", "media_per_l3", 1, 64)), kw)
    if "media-packet-size" in sec:
        v = sec["media-packet-size"]
        bad = check_int(v, p + ("media-packet-size",), 8, 65535 * 8)
        if not bad and v % 8:
            bad = [ConfigIssue(p + ("media-packet-size",), f"{v} bits is not a whole number of bytes "
                                                            f"(an MPEG-TS packet is {TS_PACKET_BITS} bits)")]
        issues += bad
        if not bad:
            kw["media_packet_bits"] = v
    rate = sec.get("rate")
    if rate is not None:
        rp = p + ("rate",)
        issues += check_mapping(rate, rp, "media BITS-PER-SECOND or layer3 PACKETS-PER-SECOND")
        if isinstance(rate, dict):
            issues += check_keys(rate, ("media", "layer3"), rp)
            kinds = [k for k in ("media", "layer3") if k in rate]
            if len(kinds) > 1:
                issues.append(ConfigIssue(rp, "give either 'rate media' or 'rate layer3', not both"))
            elif kinds:
                k = kinds[0]
                bad = check_number(rate[k], rp + (k,), 1, 400e9 if k == "media" else 1e9)
                issues += bad
                if not bad:
                    kw["rate_kind"], kw["rate_value"] = k, float(rate[k])
            else:
                issues.append(ConfigIssue(rp, "expected 'media BITS-PER-SECOND' or 'layer3 PACKETS-PER-SECOND'"))
    df, dp = _metric(sec, "delay-factor", p, ("threshold",), issues)
    if df is not None and "threshold" in df:
        kw["delay_factor"] = Thresholds(_levels(df["threshold"], dp + ("threshold",), "milliseconds", 0, 65535,
                                                issues))
    mlr, mp = _metric(sec, "media-loss-rate", p, ("disable", "threshold"), issues)
    if mlr is not None:
        disabled = _disable(mlr, mp, issues)
        pct, cnt = _mlr_levels(mlr.get("threshold"), mp + ("threshold",), issues)
        kw["mlr_percentage"] = Thresholds(pct, disabled)
        kw["mlr_packet_count"] = Thresholds(cnt, disabled)
    mrv, vp = _metric(sec, "media-rate-variation", p, ("disable", "threshold"), issues)
    if mrv is not None:
        disabled = _disable(mrv, vp, issues)
        levels: tuple = ()
        if "threshold" in mrv:
            levels = _levels(mrv["threshold"], vp + ("threshold",), "percent", 0, 100, issues)
        kw["mrv"] = Thresholds(levels, disabled)
    return Template(**kw)


def _metric(sec: dict, key: str, path: tuple, keys: tuple[str, ...], issues: list) -> tuple[dict | None, tuple]:
    """A template's ``delay-factor`` / ``media-loss-rate`` / ``media-rate-variation`` mapping (None when absent
    or not a mapping, the issue recorded) and its path."""
    sub, p = sec.get(key), path + (key,)
    if sub is None:
        return None, p
    issues += check_mapping(sub, p, " / ".join(keys))
    if not isinstance(sub, dict):
        return None, p
    issues += check_keys(sub, keys, p)
    return sub, p


def _disable(sec: dict, path: tuple, issues: list) -> bool:
    if "disable" not in sec:
        return False
    v = sec["disable"]
    if v is None:  # a bare 'disable:' as Junos writes it
        return True
    bad = check_bool(v, path + ("disable",))
    issues += bad
    return bool(v) if not bad else False


def _mlr_levels(sec: Any, path: tuple, issues: list) -> tuple[tuple, tuple]:
    if sec is None:
        return (), ()
    issues += check_mapping(sec, path, "info / warning / critical -> percentage P | packet-count N")
    if not isinstance(sec, dict):
        return (), ()
    issues += check_keys(sec, LEVELS, path, "level")
    pct, cnt = [], []
    for level in LEVELS:
        if level not in sec:
            continue
        lp = path + (level,)
        v = sec[level]
        if not isinstance(v, dict):
            issues.append(ConfigIssue(lp, f"expected 'percentage P' or 'packet-count N', got {v!r}"))
            continue
        issues += check_keys(v, ("percentage", "packet-count"), lp)
        if "percentage" in v and "packet-count" in v:
            issues.append(ConfigIssue(lp, "give either 'percentage' or 'packet-count', not both"))
        elif "percentage" in v:
            bad = check_number(v["percentage"], lp + ("percentage",), 0, 100)
            issues += bad
            if not bad:
                pct.append((level, float(v["percentage"])))
        elif "packet-count" in v:
            bad = check_int(v["packet-count"], lp + ("packet-count",), 0, 2**32 - 1)
            issues += bad
            if not bad:
                cnt.append((level, float(v["packet-count"])))
        else:
            issues.append(ConfigIssue(lp, "expected 'percentage P' or 'packet-count N'"))
    return tuple(pct), tuple(cnt)


def _network(value: Any, path: tuple, family: str, issues: list):
    if not isinstance(value, str):
        issues.append(ConfigIssue(path, f"expected an address or prefix, got {value!r}"))
        return None
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        issues.append(ConfigIssue(path, f"{value!r} is not an IP address or prefix"))
        return None
    want = 4 if family == "inet" else 6
    if net.version != want:
        issues.append(ConfigIssue(path, f"{value!r} is not an IPv{want} address (family {family})"))
        return None
    return net


def _flows(data: dict, templates: dict, issues: list) -> list[FlowSelector]:
    out: list[FlowSelector] = []
    ifaces = data.get("interfaces")
    if not isinstance(ifaces, dict):
        return out
    for ifname, isec in ifaces.items():
        fams = isec.get("family") if isinstance(isec, dict) else None
        if not isinstance(fams, dict):
            continue
        for family, fsec in fams.items():
            if not isinstance(fsec, dict):
                continue
            for kind in FLOW_KINDS:
                if kind not in fsec:
                    continue
                kp = ("interfaces", ifname, "family", family, kind)
                if family not in FAMILIES:
                    issues.append(ConfigIssue(kp, f"video flows are selected under family inet or inet6, not {family}"))
                    continue
                flows = fsec[kind]
                issues += check_mapping(flows, kp, "flow name -> criteria and template")
                if not isinstance(flows, dict):
                    continue
                for name, sec in flows.items():
                    sel = _flow(ifname, family, kind, name, sec, kp + (name,), templates, issues)
                    if sel is not None:
                        out.append(sel)
    return out


def _flow(ifname, family, kind, name, sec, p, templates, issues) -> FlowSelector | None:
    if not isinstance(sec, dict):
        issues.append(ConfigIssue(p, f"expected the flow's criteria and template as a mapping, got {sec!r}"))
        return None
    n = len(issues)
    issues += check_keys(sec, FLOW_KEYS, p)
    kw: dict[str, Any] = {}
    for key, attr in (("source-address", "source"), ("destination-address", "destination")):
        if key in sec:
            kw[attr] = _network(sec[key], p + (key,), family, issues)
    issues += check_int_fields(sec, p, (("source-port", "source_port", 0, 65535),
                                        ("destination-port", "destination_port", 0, 65535)), kw)
    tname = sec.get("template")
    if tname is None:
        issues.append(ConfigIssue(p, "a flow needs 'template NAME' (a template under 'services video-monitoring "
                                     "templates')"))
    elif not check_str(tname, p + ("template",)) and tname not in templates:
        known = list(templates)
        issues.append(ConfigIssue(p + ("template",), f"template {tname!r} is not defined under 'services "
                                                     f"video-monitoring templates'{suggest(str(tname), known)}"
                                                     + (f"; defined: {', '.join(known)}" if known else "")))
    elif not isinstance(tname, str):
        issues.append(ConfigIssue(p + ("template",), f"expected a template name, got {tname!r}"))
    if len(issues) > n:
        return None
    return FlowSelector(interface=ifname, family=family, direction="input" if kind == "input-flows" else "output",
                        name=str(name), template=tname, **kw)


def parse(data: dict) -> tuple[VideoConfig, list[ConfigIssue]]:
    """The config the engine runs and every issue of ``services video-monitoring`` and the flow selection."""
    issues: list[ConfigIssue] = []
    cfg = VideoConfig()
    services = data.get("services")
    sec = services.get("video-monitoring") if isinstance(services, dict) else None
    if sec is not None:
        issues += check_mapping(sec, BASE, "templates / maximum-flows")
    if isinstance(sec, dict):
        issues += check_keys(sec, TOP_KEYS, BASE)
        cfg.max_flows = take_int(sec, "maximum-flows", BASE, issues, 1, MAX_FLOWS, cfg.max_flows)
        templates = sec.get("templates")
        issues += check_mapping(templates, BASE + ("templates",), "template name -> settings")
        if isinstance(templates, dict):
            for name, tsec in templates.items():
                t = _template(str(name), tsec, issues)
                if t is not None:
                    cfg.templates[str(name)] = t
    known_templates = dict(cfg.templates)
    if isinstance(sec, dict) and isinstance(sec.get("templates"), dict):  # a template with errors still "exists"
        known_templates.update({str(k): None for k in sec["templates"] if str(k) not in known_templates})
    cfg.selectors = _flows(data, known_templates, issues)
    if issues:
        cfg.selectors = []
    return cfg, issues

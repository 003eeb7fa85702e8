"""``services jflow-log``: parse and validate.

YAML (the Junos ``services jflow-log`` hierarchy; the service set is the network namespace the
service runs in, so the template profiles apply to its NAT)::

    services:
      jflow-log:
        collector c1:
          destination-address: 192.0.2.9
          destination-port: 4739
          source-ip: 192.0.2.1            # optional
          transport: udp                  # optional: any registered transport, its own keys beside
        collector-group cg1:
          collector: [c1]
        template-profile t1:
          collector-group: cg1
          template-type: nat
          version: ipfix                  # or v9
          refresh-rate: {packets: 100, seconds: 60}
          nat-event-numbering: rfc8158    # or junos, cisco-nel
          observation-domain-id: 1
        message-rate-limit: 10000         # events per second to every output; 0 = unlimited
        syslog:
          host 192.0.2.9:
            port: 514
            transport: udp                # or tcp (octet-counted)
            facility-override: local1
            log-prefix: nat-router
          structured-log: false           # also log every event in the service's own log
        conntrack:
          receive-buffer: 4194304         # bytes (SO_RCVBUFFORCE)
          log-no-nat: false               # also log sessions without a translation
          update-events: false            # subscribe to UPDATE too (counted, not logged)
          enable-timestamps: true         # sysctl nf_conntrack_timestamp=1 and nf_conntrack_acct=1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowplane.api import (
    ConfigIssue,
    EncoderType,
    check_address,
    check_int,
    check_keys,
    check_mapping,
    check_str,
    check_transport,
    suggest,
    take_address,
    take_bool,
    take_int,
    transport_options,
)

from .events import DEFAULT_NUMBERING, NUMBERINGS
from .syslog import FACILITIES

SECTION = ("services", "jflow-log")
TOP_KEYS = ("collector", "collector-group", "template-profile", "message-rate-limit", "syslog", "conntrack")
COLLECTOR_KEYS = ("destination-address", "destination-port", "source-ip", "transport", "dscp")
GROUP_KEYS = ("collector",)
PROFILE_KEYS = ("collector-group", "template-type", "version", "refresh-rate", "nat-event-numbering",
                "observation-domain-id", "mtu")
SYSLOG_KEYS = ("host", "structured-log")
HOST_KEYS = ("port", "transport", "facility-override", "log-prefix", "source-address")
CONNTRACK_KEYS = ("receive-buffer", "log-no-nat", "update-events", "enable-timestamps")
VERSIONS = {"ipfix": 10, "v9": 9}
# what check_transport needs to know of the outputs: IPFIX and octet-counted syslog may go over a byte stream
_STREAMS = EncoderType("nat-stream", (10,), lambda o: None, streams=True)
_DATAGRAMS = EncoderType("nat-v9", (9,), lambda o: None, streams=False)


@dataclass(frozen=True)
class Collector:
    name: str
    address: str
    port: int
    source: str | None = None
    transport: str = "udp"
    dscp: int = 0
    transport_options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class TemplateProfile:
    name: str
    collectors: tuple[Collector, ...]
    version: int = 10
    refresh_packets: int = 4800
    refresh_seconds: int = 60
    numbering: str = DEFAULT_NUMBERING
    observation_domain_id: int = 0
    mtu: int = 1500


@dataclass(frozen=True)
class SyslogHost:
    address: str
    port: int = 514
    transport: str = "udp"
    facility: str = "local1"
    prefix: str = ""
    source: str | None = None


@dataclass
class ConntrackConfig:
    receive_buffer: int = 4 * 1024 * 1024
    log_no_nat: bool = False
    update_events: bool = False
    enable_timestamps: bool = True


@dataclass
class JflowLogConfig:
    profiles: list[TemplateProfile] = field(default_factory=list)
    syslog_hosts: list[SyslogHost] = field(default_factory=list)
    structured_log: bool = False
    rate_limit: int = 0  # events per second, 0 = unlimited
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)

    @property
    def enabled(self) -> bool:
        return bool(self.profiles or self.syslog_hosts or self.structured_log)


def _named(sec: dict, key: str, path: tuple, issues: list[ConfigIssue]) -> dict:
    """``key NAME: {...}`` entries as {NAME: mapping}."""
    entries = sec.get(key)
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        issues.append(ConfigIssue(path + (key,), f"expected '{key} NAME: {{...}}' entries, got {entries!r}"))
        return {}
    out = {}
    for name, body in entries.items():
        bad = check_mapping(body, path + (key, name), f"{key} settings")
        issues += bad
        if not bad:
            out[str(name)] = body or {}
    return out


def _collector(name: str, sec: dict, path: tuple, transports: Any, issues: list[ConfigIssue]) -> Collector | None:
    n0 = len(issues)
    transport = sec.get("transport", "udp")
    tt = transports.get(transport) if transports is not None and isinstance(transport, str) else None
    issues += check_keys(sec, COLLECTOR_KEYS + (tt.keys if tt is not None else ()), path)
    if "destination-address" not in sec:
        issues.append(ConfigIssue(path, "missing: destination-address (the log collector)"))
    addr = take_address(sec, "destination-address", path, issues)
    port = sec.get("destination-port")
    if port is None:
        issues.append(ConfigIssue(path, "missing: destination-port (the log collector's port, e.g. 4739)"))
    else:
        issues += check_int(port, path + ("destination-port",), 1, 65535)
    src = take_address(sec, "source-ip", path, issues)
    if "dscp" in sec:
        issues += check_int(sec["dscp"], path + ("dscp",), 0, 63)
    issues += check_transport(transport, sec, path, transports)
    if len(issues) != n0:
        return None
    return Collector(name, addr, int(port), src, str(transport), int(sec.get("dscp", 0)),
                     tuple(sorted(transport_options(tt, sec).items())))


def _profile(name: str, sec: dict, path: tuple, groups: dict[str, list[str]], collectors: dict[str, Collector | None],
             transports: Any, issues: list[ConfigIssue]) -> TemplateProfile | None:
    n0 = len(issues)
    issues += check_keys(sec, PROFILE_KEYS, path)
    group = sec.get("collector-group")
    members: list[str] = []
    if group is None:
        issues.append(ConfigIssue(path, "missing: collector-group (where the NAT events go)"))
    elif not isinstance(group, str) or group not in groups:
        issues.append(ConfigIssue(path + ("collector-group",), f"collector-group {group!r} is not defined under "
                                  f"'services jflow-log collector-group'{suggest(str(group), list(groups))}"))
    else:
        members = groups[group]
    ttype = sec.get("template-type", "nat")
    issues += check_str(ttype, path + ("template-type",), ("nat",))
    version = sec.get("version", "ipfix")
    bad = check_str(version, path + ("version",), tuple(VERSIONS))
    issues += bad
    v = VERSIONS.get(version, 10) if not bad else 10
    packets, seconds = 4800, 60
    if "refresh-rate" in sec:
        rr = sec["refresh-rate"]
        rp = path + ("refresh-rate",)
        bad = check_mapping(rr, rp, "refresh-rate {packets: N, seconds: S}")
        issues += bad
        if not bad and rr:
            issues += check_keys(rr, ("packets", "seconds"), rp)
            if "packets" in rr:
                issues += check_int(rr["packets"], rp + ("packets",), 1, 480000)
                packets = rr["packets"]
            if "seconds" in rr:
                issues += check_int(rr["seconds"], rp + ("seconds",), 10, 600)
                seconds = rr["seconds"]
    numbering = sec.get("nat-event-numbering", DEFAULT_NUMBERING)
    issues += check_str(numbering, path + ("nat-event-numbering",), tuple(NUMBERINGS))
    odid = sec.get("observation-domain-id", 0)
    issues += check_int(odid, path + ("observation-domain-id",), 0, 0xFFFFFFFF)
    mtu = sec.get("mtu", 1500)
    issues += check_int(mtu, path + ("mtu",), 576, 9216)
    enc = _STREAMS if v == 10 else _DATAGRAMS
    cols = []
    for m in members:
        c = collectors.get(m)
        if c is None:
            continue
        if transports is not None and c.transport in transports:
            more = check_transport(c.transport, {}, SECTION + ("collector", c.name), transports, encoder=enc,
                                   version=v)
            issues += [ConfigIssue(path + ("version",), f"{i.message} (collector {c.name}, template-profile {name})")
                       for i in more]
        cols.append(c)
    if len(issues) != n0:
        return None
    return TemplateProfile(name, tuple(cols), v, int(packets), int(seconds), str(numbering), int(odid), int(mtu))


def _syslog(sec: Any, path: tuple, transports: Any, out: JflowLogConfig, issues: list[ConfigIssue]) -> None:
    bad = check_mapping(sec, path, "syslog {host ADDR: {...}}")
    issues += bad
    if bad or not sec:
        return
    issues += check_keys(sec, SYSLOG_KEYS, path)
    out.structured_log = take_bool(sec, "structured-log", path, issues)
    for addr, body in _named(sec, "host", path, issues).items():
        hp = path + ("host", addr)
        n0 = len(issues)
        a, bad = check_address(addr, hp)
        issues += bad
        issues += check_keys(body, HOST_KEYS, hp)
        port = body.get("port", 514)
        issues += check_int(port, hp + ("port",), 1, 65535)
        fac = body.get("facility-override", "local1")
        issues += check_str(fac, hp + ("facility-override",), tuple(FACILITIES))
        prefix = body.get("log-prefix", "")
        issues += check_str(prefix, hp + ("log-prefix",))
        src = take_address(body, "source-address", hp, issues)
        transport = body.get("transport", "udp")
        issues += check_transport(transport, body, hp, transports, encoder=_STREAMS, version=10)
        if len(issues) == n0:
            out.syslog_hosts.append(SyslogHost(a, int(port), str(transport), str(fac), str(prefix), src))


def _conntrack(sec: Any, path: tuple, out: ConntrackConfig, issues: list[ConfigIssue]) -> None:
    bad = check_mapping(sec, path, "conntrack listener settings")
    issues += bad
    if bad or not sec:
        return
    issues += check_keys(sec, CONNTRACK_KEYS, path)
    out.receive_buffer = take_int(sec, "receive-buffer", path, issues, 4096, 1 << 30, out.receive_buffer)
    for key, attr in (("log-no-nat", "log_no_nat"), ("update-events", "update_events"),
                      ("enable-timestamps", "enable_timestamps")):
        setattr(out, attr, take_bool(sec, key, path, issues, getattr(out, attr)))


def parse(data: Any, registries: Any = None) -> tuple[JflowLogConfig | None, list[ConfigIssue]]:
    """(config, issues) of ``services jflow-log``; (None, []) when the section is absent.

    *registries* (the app's or validation's read-only view) checks transport names; None skips that.
    """
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or "jflow-log" not in services:
        return None, []
    sec = services["jflow-log"] or {}
    issues = check_mapping(sec, SECTION, "jflow-log settings")
    if issues:
        return None, issues
    issues += check_keys(sec, TOP_KEYS, SECTION)
    transports = registries.transports if registries is not None else None
    out = JflowLogConfig()
    collectors = {name: _collector(name, body, SECTION + ("collector", name), transports, issues)
                  for name, body in _named(sec, "collector", SECTION, issues).items()}
    groups: dict[str, list[str]] = {}
    for name, body in _named(sec, "collector-group", SECTION, issues).items():
        gp = SECTION + ("collector-group", name)
        issues += check_keys(body, GROUP_KEYS, gp)
        members = body.get("collector")
        if isinstance(members, str):
            members = [members]
        elif isinstance(members, dict):  # 'collector: {c1: null}' (Junos 'collector c1;')
            members = list(members)
        if not isinstance(members, list) or not members:
            issues.append(ConfigIssue(gp + ("collector",), f"expected a list of collector names, got {members!r}"))
            continue
        for m in members:
            if m not in collectors:
                issues.append(ConfigIssue(gp + ("collector",), f"collector {m!r} is not defined under "
                                          f"'services jflow-log collector'{suggest(str(m), list(collectors))}"))
        if len(members) > 8:
            issues.append(ConfigIssue(gp + ("collector",),
                                      f"{len(members)} collectors exceeds the maximum 8 per group"))
        groups[name] = [str(m) for m in members]
    for name, body in _named(sec, "template-profile", SECTION, issues).items():
        p = _profile(name, body, SECTION + ("template-profile", name), groups, collectors, transports, issues)
        if p is not None:
            out.profiles.append(p)
    if "message-rate-limit" in sec:
        issues += check_int(sec["message-rate-limit"], SECTION + ("message-rate-limit",), 0, 10_000_000)
        if isinstance(sec["message-rate-limit"], int):
            out.rate_limit = int(sec["message-rate-limit"])
    if "syslog" in sec:
        _syslog(sec["syslog"], SECTION + ("syslog",), transports, out, issues)
    if "conntrack" in sec:
        _conntrack(sec["conntrack"], SECTION + ("conntrack",), out.conntrack, issues)
    if not issues and not out.enabled:
        issues.append(ConfigIssue(SECTION, "nothing to log to: configure a template-profile with a collector-group "
                                           "or a syslog host"))
    return (None if issues else out), issues

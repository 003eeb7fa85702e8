"""``forwarding-options sampling|accounting`` and ``services flow-monitoring``: parse and validate.

Junos hierarchy, in YAML::

    forwarding-options:
      sampling:
        input: {rate: 100, run-length: 0, max-packets-per-second: 0, algorithm: random}
        flow-table-size: 262144
        family inet:
          output:
            flow-server 192.0.2.10:
              port: 2055
              version: 5                       # or 8 (+ aggregation), or version9/version-ipfix: {template: NAME}
              transport: udp                   # tcp for IPFIX; any registered transport (its own keys beside)
              source-address: 192.0.2.1
            flow-active-timeout: 60
            flow-inactive-timeout: 15
            scale-counts: false
            interface sp-2/0/0: {engine-id: 5, engine-type: 55, source-address: 192.0.2.1}
        instance edge:                         # named instances: same keys as above
          input: {rate: 1000}
          family inet6: {...}
      accounting acc1:                         # discard accounting group ('then discard accounting acc1')
        output:
          flow-active-timeout: 60
          flow-inactive-timeout: 30
          aggregate-export-interval: 90        # v8 servers: aggregate and export every 90 s
          cflowd 192.0.2.20: {port: 2055, version: 5}   # 'cflowd' = 'flow-server'
          interface sp-0/0/0: {engine-id: 1, engine-type: 1}
    chassis:
      fpc eth1: {sampling-instance: edge}      # packets sampled on interface eth1 go to 'edge'
    services:
      flow-monitoring:
        version9:
          template v9-ipv4: {ipv4-template: true, template-refresh-rate: {packets: 4800, seconds: 60}, ...}
        version-ipfix:
          template ipfix-v6: {ipv6-template: true, observation-domain-id: 7, template-id: 1024,
                              options-template-id: 1025}

One parse pass yields both the issues (every problem, with its key path)
and, when there are none, the :class:`SamplingConfig` the engine runs.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from flowplane.api import (
    SAMPLING_DETERMINISTIC,
    SAMPLING_RANDOM,
    ConfigIssue,
    LimitField,
    Limits,
    check_bool,
    check_int,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    check_transport,
    host_port,
    suggest,
    transport_options,
)

DEFAULT_INSTANCE = "(default sampling)"
FAMILIES = ("inet", "inet6", "mpls")
TEMPLATE_KINDS = ("ipv4-template", "ipv6-template", "mpls-template", "mpls-ipv4-template", "bridge-template")
V8_SCHEMES = ("autonomous-system", "protocol-port", "source-prefix", "destination-prefix", "source-destination-prefix")
V8_TO_ENCODER = {"autonomous-system": "as", "protocol-port": "protocol-port", "source-prefix": "source-prefix",
                 "destination-prefix": "destination-prefix", "source-destination-prefix": "source-destination-prefix"}

INSTANCE_KEYS = ("input", "family", "flow-table-size")
INPUT_KEYS = ("rate", "run-length", "max-packets-per-second", "algorithm")
SERVER_SECTIONS = ("flow-server", "cflowd")  # Junos: 'cflowd HOST' is the older spelling of 'flow-server HOST'
OUTPUT_KEYS = (*SERVER_SECTIONS, "flow-active-timeout", "flow-inactive-timeout", "interface", "inline-jflow",
               "scale-counts", "tcp-end-grace", "aggregate-export-interval")
ACCOUNTING_KEYS = ("output", "flow-table-size")
SERVER_KEYS = ("port", "version", "version9", "version-ipfix", "transport", "source-address", "aggregation",
               "autonomous-system-type", "dscp", "mtu")

#: The hardware-profile limits this feature declares (with its config section claim).
LIMITS = (
    LimitField("flow_servers_per_family", 8, "flow servers per family of a sampling instance or group"),
    LimitField("export_versions", (5, 8, 9, 10), "flow export versions the platform can send"),
)
TEMPLATE_KEYS = ("flow-active-timeout", "flow-inactive-timeout", "template-refresh-rate", "option-refresh-rate",
                 "observation-domain-id", "source-id", "template-id", "options-template-id", "scale-counts",
                 *TEMPLATE_KINDS)


@dataclass
class Template:
    name: str
    version: int  # 9 or 10
    kinds: tuple[str, ...] = ("ipv4", "ipv6")
    active_timeout: float | None = None
    inactive_timeout: float | None = None
    refresh_packets: int = 4800
    refresh_seconds: int = 60
    option_refresh_packets: int = 4800
    option_refresh_seconds: int = 60
    observation_domain_id: int | None = None
    template_id: int | None = None
    options_template_id: int | None = None


@dataclass
class FlowServer:
    host: str
    port: int
    version: int  # 5, 8, 9, 10
    transport: str = "udp"
    source_address: str | None = None
    template: Template | None = None
    aggregation: str = ""
    dscp: int = 0
    mtu: int = 1500
    transport_options: tuple[tuple[str, Any], ...] = ()  # the transport's own keys (TransportType.keys)

    @property
    def label(self) -> str:
        return host_port(self.host, self.port)


@dataclass
class FamilyOutput:
    family: str
    servers: list[FlowServer] = field(default_factory=list)
    active_timeout: float = 60.0
    inactive_timeout: float = 15.0
    engine_id: int = 0
    engine_type: int = 0
    scale_counts: bool = False
    tcp_end_grace: float = 0.0
    aggregate_export_interval: float = 0.0  # v8 servers: export aggregated records every N s (0: as flows expire)


@dataclass
class Instance:
    name: str
    rate: int = 1
    run_length: int = 0
    max_pps: int = 0  # 0 = unlimited
    algorithm: int = SAMPLING_RANDOM
    flow_table_size: int = 262_144
    families: dict[str, FamilyOutput] = field(default_factory=dict)


@dataclass
class SamplingConfig:
    instances: dict[str, Instance] = field(default_factory=dict)
    interface_instance: dict[str, str] = field(default_factory=dict)  # interface -> instance (chassis fpc)
    groups: dict[str, Instance] = field(default_factory=dict)  # passive monitoring groups (rate 1)
    group_interfaces: dict[str, list[str]] = field(default_factory=dict)  # group -> monitoring-only interfaces
    accounting: dict[str, Instance] = field(default_factory=dict)  # discard accounting groups (rate 1)

    @property
    def enabled(self) -> bool:
        return bool(self.instances or self.groups or self.accounting)


def parse(config: dict, limits: Limits, registries: Any = None) -> tuple[SamplingConfig, list[ConfigIssue]]:
    """Parse the sampling-related sections of *config*; returns (config, issues).

    *registries* (the app's, or the read-only view validation gets) checks ``transport`` names and
    the transport's own keys; without it any transport name passes here.
    """
    issues: list[ConfigIssue] = []
    templates = _parse_templates(config, issues)
    out = SamplingConfig()
    _parse_monitoring(config, out, templates, limits, issues, registries)
    _parse_accounting(config, out, templates, limits, issues, registries)
    sampling = (config.get("forwarding-options") or {}).get("sampling")
    base = ("forwarding-options", "sampling")
    if sampling is None:
        _check_limits(out, limits, issues)
        return out, issues
    issues += check_mapping(sampling, base, "sampling settings")
    if not isinstance(sampling, dict):
        return out, issues
    issues += check_keys(sampling, INSTANCE_KEYS + ("instance",), base)
    if any(k in sampling for k in INSTANCE_KEYS):
        out.instances[DEFAULT_INSTANCE] = _parse_instance(DEFAULT_INSTANCE, sampling, base, templates, limits, issues,
                                                          registries)
    named = sampling.get("instance") or {}
    issues += check_mapping(named, base + ("instance",), "instance name -> settings")
    if isinstance(named, dict):
        for name, section in named.items():
            p = base + ("instance", name)
            if not isinstance(section, dict):
                issues.append(ConfigIssue(p, f"expected the instance's settings as a mapping, got {section!r}"))
                continue
            issues += check_keys(section, INSTANCE_KEYS, p)
            out.instances[str(name)] = _parse_instance(str(name), section, p, templates, limits, issues, registries)
    _parse_chassis(config, out, issues)
    _check_limits(out, limits, issues)
    return out, issues


def _parse_templates(config: dict, issues: list[ConfigIssue]) -> dict[str, Template]:
    fm = (config.get("services") or {}).get("flow-monitoring")
    base = ("services", "flow-monitoring")
    templates: dict[str, Template] = {}
    if fm is None:
        return templates
    issues += check_mapping(fm, base, "version9 / version-ipfix")
    if not isinstance(fm, dict):
        return templates
    issues += check_keys(fm, ("version9", "version-ipfix"), base)
    for vkey, version in (("version9", 9), ("version-ipfix", 10)):
        sec = fm.get(vkey)
        if sec is None:
            continue
        p = base + (vkey,)
        issues += check_mapping(sec, p, "template NAME")
        if not isinstance(sec, dict):
            continue
        issues += check_keys(sec, ("template",), p)
        for name, t in (sec.get("template") or {}).items():
            tp = p + ("template", name)
            if not isinstance(t, dict):
                issues.append(ConfigIssue(tp, f"expected the template's settings as a mapping, got {t!r}"))
                continue
            issues += check_keys(t, TEMPLATE_KEYS, tp)
            kinds = tuple(k.removesuffix("-template") for k in TEMPLATE_KINDS if t.get(k))
            tmpl = Template(str(name), version, kinds or ("ipv4", "ipv6"))
            if "flow-active-timeout" in t:
                issues += check_int(t["flow-active-timeout"], tp + ("flow-active-timeout",), 10, 600)
                tmpl.active_timeout = t["flow-active-timeout"]
            if "flow-inactive-timeout" in t:
                issues += check_int(t["flow-inactive-timeout"], tp + ("flow-inactive-timeout",), 10, 600)
                tmpl.inactive_timeout = t["flow-inactive-timeout"]
            for key, attr_p, attr_s in (("template-refresh-rate", "refresh_packets", "refresh_seconds"),
                                        ("option-refresh-rate", "option_refresh_packets", "option_refresh_seconds")):
                rr = t.get(key)
                if rr is None:
                    continue
                issues += check_mapping(rr, tp + (key,), "packets / seconds")
                if isinstance(rr, dict):
                    issues += check_keys(rr, ("packets", "seconds"), tp + (key,))
                    if "packets" in rr:
                        issues += check_int(rr["packets"], tp + (key, "packets"), 1, 480_000)
                        setattr(tmpl, attr_p, rr["packets"])
                    if "seconds" in rr:
                        issues += check_int(rr["seconds"], tp + (key, "seconds"), 10, 600)
                        setattr(tmpl, attr_s, rr["seconds"])
            for key, attr, lo, hi in (("observation-domain-id", "observation_domain_id", 0, 2**32 - 1),
                                      ("source-id", "observation_domain_id", 0, 2**32 - 1),
                                      ("template-id", "template_id", 256, 65535),
                                      ("options-template-id", "options_template_id", 256, 65535)):
                if key in t:
                    issues += check_int(t[key], tp + (key,), lo, hi)
                    setattr(tmpl, attr, t[key])
            if tmpl.template_id is not None and tmpl.options_template_id is not None:
                n = len(tmpl.kinds)
                if tmpl.template_id <= tmpl.options_template_id < tmpl.template_id + n:
                    issues.append(ConfigIssue(tp + ("options-template-id",),
                                              f"{tmpl.options_template_id} collides with the data template ids "
                                              f"{tmpl.template_id}..{tmpl.template_id + n - 1}"))
            if str(name) in templates:
                issues.append(ConfigIssue(tp, f"template name {name!r} is used under both version9 and version-ipfix"))
            templates[str(name)] = tmpl
    return templates


def _parse_instance(name: str, sec: dict, p: tuple, templates: dict[str, Template], limits: Limits,
                    issues: list[ConfigIssue], registries: Any = None) -> Instance:
    inst = Instance(name, flow_table_size=min(262_144, limits.max_flows))
    _parse_table_size(inst, sec, p, limits, issues)
    inp = sec.get("input")
    if inp is not None:
        issues += check_mapping(inp, p + ("input",), "rate / run-length / max-packets-per-second")
        if isinstance(inp, dict):
            issues += check_keys(inp, INPUT_KEYS, p + ("input",))
            if "rate" in inp:
                issues += check_int(inp["rate"], p + ("input", "rate"), 1, limits.sampling_rate_max,
                                    limit="sampling_rate_max")
                inst.rate = inp["rate"] if isinstance(inp["rate"], int) else 1
            if "run-length" in inp:
                issues += check_int(inp["run-length"], p + ("input", "run-length"), 0, 20)
                inst.run_length = inp["run-length"] if isinstance(inp["run-length"], int) else 0
            if "max-packets-per-second" in inp:
                issues += check_int(inp["max-packets-per-second"], p + ("input", "max-packets-per-second"), 0,
                                    10_000_000)
                inst.max_pps = inp["max-packets-per-second"] if isinstance(inp["max-packets-per-second"], int) else 0
            if "algorithm" in inp:
                issues += check_str(inp["algorithm"], p + ("input", "algorithm"), ("random", "deterministic"))
                inst.algorithm = SAMPLING_DETERMINISTIC if inp["algorithm"] == "deterministic" else SAMPLING_RANDOM
    fam = sec.get("family")
    issues += check_mapping(fam, p + ("family",), "inet / inet6 / mpls")
    if isinstance(fam, dict):
        issues += check_keys(fam, FAMILIES, p + ("family",), "family")
        for family, fsec in fam.items():
            if family in FAMILIES:
                inst.families[family] = _parse_family(family, fsec, p + ("family", family), templates, limits, issues,
                                                      registries)
    if not inst.families:
        issues.append(ConfigIssue(p, "no 'family inet|inet6|mpls output' configured: sampled packets would go nowhere"))
    return inst


def _parse_table_size(inst: Instance, sec: dict, p: tuple, limits: Limits, issues: list[ConfigIssue]) -> None:
    if "flow-table-size" in sec:
        issues += check_int(sec["flow-table-size"], p + ("flow-table-size",), 1024, limits.max_flows, limit="max_flows")
        if isinstance(sec["flow-table-size"], int):
            inst.flow_table_size = sec["flow-table-size"]


def _parse_family(family: str, fsec: Any, p: tuple, templates: dict[str, Template], limits: Limits,
                  issues: list[ConfigIssue], registries: Any = None) -> FamilyOutput:
    out = FamilyOutput(family)
    if not isinstance(fsec, dict):
        issues.append(ConfigIssue(p, f"expected {{output: {{flow-server: ...}}}}, got {fsec!r}"))
        return out
    issues += check_keys(fsec, ("output",), p)
    o = fsec.get("output")
    op = p + ("output",)
    issues += check_mapping(o, op, "flow-server / timeouts")
    if not isinstance(o, dict):
        return out
    issues += check_keys(o, OUTPUT_KEYS, op)
    for key, attr, lo, hi in (("flow-active-timeout", "active_timeout", 10, 1800),
                              ("flow-inactive-timeout", "inactive_timeout", 1, 1800)):
        if key in o:
            issues += check_int(o[key], op + (key,), lo, hi)
            if isinstance(o[key], int):
                setattr(out, attr, float(o[key]))
    if "scale-counts" in o:
        issues += check_bool(o["scale-counts"], op + ("scale-counts",))
        out.scale_counts = o["scale-counts"] is True
    if "aggregate-export-interval" in o:
        issues += check_int(o["aggregate-export-interval"], op + ("aggregate-export-interval",), 90, 1800)
        if isinstance(o["aggregate-export-interval"], int):
            out.aggregate_export_interval = float(o["aggregate-export-interval"])
    if "tcp-end-grace" in o:
        issues += check_number(o["tcp-end-grace"], op + ("tcp-end-grace",), 0, 3600)
        if isinstance(o["tcp-end-grace"], (int, float)):
            out.tcp_end_grace = float(o["tcp-end-grace"])
    ifs = o.get("interface")
    if ifs is not None:
        issues += check_mapping(ifs, op + ("interface",), "services interface -> engine-id / engine-type")
        if isinstance(ifs, dict):
            for ifname, isec in ifs.items():
                ip = op + ("interface", ifname)
                isec = isec or {}
                issues += check_keys(isec, ("engine-id", "engine-type", "source-address"), ip)
                if "engine-id" in isec:
                    issues += check_int(isec["engine-id"], ip + ("engine-id",), 0, 255)
                    out.engine_id = isec["engine-id"] if isinstance(isec["engine-id"], int) else 0
                if "engine-type" in isec:
                    issues += check_int(isec["engine-type"], ip + ("engine-type",), 0, 255)
                    out.engine_type = isec["engine-type"] if isinstance(isec["engine-type"], int) else 0
    given = [k for k in SERVER_SECTIONS if k in o]
    if not given:
        issues.append(ConfigIssue(op, "missing: at least one 'flow-server ADDRESS { port; version; }'"))
        return out
    if len(given) > 1:
        issues.append(ConfigIssue(op + ("cflowd",), "say 'flow-server' or its older spelling 'cflowd', not both"))
        return out
    skey = given[0]
    servers = o[skey]
    issues += check_mapping(servers, op + (skey,), "address -> port / version")
    if not isinstance(servers, dict):
        return out
    for addr, ssec in servers.items():
        server = _parse_server(family, str(addr), ssec, op + (skey, addr), templates, limits, issues, registries)
        if server is not None:
            out.servers.append(server)
    if len(servers) > limits.flow_servers_per_family:
        issues.append(ConfigIssue(op + (skey,), f"{len(servers)} flow servers exceed the maximum "
                                  f"{limits.flow_servers_per_family} (hardware profile limit flow_servers_per_family)"))
    return out


def _parse_server(family: str, addr: str, ssec: Any, p: tuple, templates: dict[str, Template], limits: Limits,
                  issues: list[ConfigIssue], registries: Any = None) -> FlowServer | None:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        issues.append(ConfigIssue(p, f"expected an IPv4 or IPv6 address for the flow server, got {addr!r}"))
        return None
    if not isinstance(ssec, dict):
        issues.append(ConfigIssue(p, f"expected {{port: N, version: 5|8|9|10}}, got {ssec!r}"))
        return None
    n0 = len(issues)
    transport = ssec.get("transport", "udp")
    transports = registries.transports if registries is not None else None
    trans_type = transports.get(transport) if transports is not None and isinstance(transport, str) else None
    issues += check_keys(ssec, SERVER_KEYS + (trans_type.keys if trans_type is not None else ()), p)
    port = ssec.get("port")
    if port is None:
        issues.append(ConfigIssue(p + ("port",), "missing: the collector's UDP/TCP port"))
    else:
        issues += check_int(port, p + ("port",), 1, 65535)
    version, template = 0, None
    versions = [k for k in ("version", "version9", "version-ipfix") if k in ssec]
    if len(versions) != 1:
        issues.append(ConfigIssue(p, "say exactly one of 'version: 5|8', 'version9: {template: NAME}' or "
                                  "'version-ipfix: {template: NAME}'"
                                  + (f"; got {', '.join(versions)}" if versions else "")))
    elif versions[0] == "version":
        v = ssec["version"]
        if v in (9, 10):
            issues.append(ConfigIssue(p + ("version",), f"version {v} needs a template: write "
                                      f"'{'version9' if v == 9 else 'version-ipfix'}: {{template: NAME}}'"))
        elif v not in (5, 8):
            issues.append(ConfigIssue(p + ("version",), f"expected 5 or 8, got {v!r}"))
        else:
            version = v
    else:
        key = versions[0]
        version = 9 if key == "version9" else 10
        vsec = ssec[key]
        name = vsec.get("template") if isinstance(vsec, dict) else None
        if isinstance(name, dict) and len(name) == 1:  # 'template: {NAME: null}' (Junos 'template { NAME; }')
            name = next(iter(name))
        if not isinstance(name, str):
            issues.append(ConfigIssue(p + (key,), "expected {template: NAME} naming a 'services flow-monitoring' "
                                                  "template"))
        elif name not in templates or templates[name].version != version:
            where = "version9" if version == 9 else "version-ipfix"
            known = [t for t, v in templates.items() if v.version == version]
            issues.append(ConfigIssue(p + (key, "template"), f"template {name!r} is not defined under "
                                      f"'services flow-monitoring {where} template'{suggest(name, known)}"))
        else:
            template = templates[name]
    if version and version not in limits.export_versions:
        issues.append(ConfigIssue(p, f"export version {version} is not supported by this hardware profile "
                                  "(hardware profile limit export_versions: "
                                  f"{', '.join(map(str, limits.export_versions))})"))
    if version in (5, 8) and family != "inet":
        issues.append(ConfigIssue(p, f"NetFlow v{version} carries IPv4 only: use version9 or version-ipfix under "
                                     f"family {family}"))
    encoder = registries.encoders.for_version(version) if registries is not None and version else None
    issues += check_transport(transport, ssec, p, transports, encoder=encoder, version=version)
    aggregation = ""
    if "aggregation" in ssec:
        agg = ssec["aggregation"]
        names = (list(agg) if isinstance(agg, dict) else [agg] if isinstance(agg, str)
                 else agg if isinstance(agg, list) else None)
        if version != 8:
            issues.append(ConfigIssue(p + ("aggregation",), "aggregation schemes are NetFlow version 8 only"))
        elif not names or len(names) != 1 or names[0] not in V8_SCHEMES:
            issues.append(ConfigIssue(p + ("aggregation",), f"expected exactly one of: {', '.join(V8_SCHEMES)}; got "
                                                            f"{agg!r}"))
        else:
            aggregation = V8_TO_ENCODER[names[0]]
    elif version == 8:
        issues.append(ConfigIssue(p, f"version 8 needs 'aggregation: SCHEME' ({', '.join(V8_SCHEMES)})"))
    src = ssec.get("source-address")
    if src is not None:
        try:
            ipaddress.ip_address(str(src))
        except ValueError:
            issues.append(ConfigIssue(p + ("source-address",), f"expected an IP address, got {src!r}"))
    if "dscp" in ssec:
        issues += check_int(ssec["dscp"], p + ("dscp",), 0, 63)
    if "mtu" in ssec:
        issues += check_int(ssec["mtu"], p + ("mtu",), 576, 9216)
    if len(issues) != n0:
        return None
    return FlowServer(addr, int(port), version, str(transport), str(src) if src else None, template, aggregation,
                      int(ssec.get("dscp", 0)), int(ssec.get("mtu", 1500)),
                      tuple(sorted(transport_options(trans_type, ssec).items())))


def _parse_chassis(config: dict, out: SamplingConfig, issues: list[ConfigIssue]) -> None:
    fpcs = (config.get("chassis") or {}).get("fpc")
    if fpcs is None:
        return
    p = ("chassis", "fpc")
    issues += check_mapping(fpcs, p, "interface -> sampling-instance")
    if not isinstance(fpcs, dict):
        return
    ifaces = config.get("interfaces") or {}
    for ifname, sec in fpcs.items():
        fp = p + (ifname,)
        if not isinstance(sec, dict):
            issues.append(ConfigIssue(fp, f"expected {{sampling-instance: NAME}}, got {sec!r}"))
            continue
        issues += check_keys(sec, ("sampling-instance",), fp)
        name = sec.get("sampling-instance")
        if name is None:
            continue
        if str(ifname) not in ifaces:
            issues.append(ConfigIssue(fp, f"interface {ifname!r} is not configured under "
                                          f"'interfaces'{suggest(str(ifname), ifaces)}"))
        if name not in out.instances or name == DEFAULT_INSTANCE:
            known = [n for n in out.instances if n != DEFAULT_INSTANCE]
            issues.append(ConfigIssue(fp + ("sampling-instance",), "no sampling instance "
                                                                   f"{name!r}{suggest(str(name), known)}"))
        else:
            out.interface_instance[str(ifname)] = str(name)


EXPORT_FORMATS = {"cflowd-version-5": 5, "cflowd-version-8": 8}


def _groups(config: dict, key: str, issues: list[ConfigIssue]) -> list[tuple[str, dict, tuple]]:
    """``(name, settings, key path)`` of each group under ``forwarding-options KEY``; bad shapes are issues."""
    groups = (config.get("forwarding-options") or {}).get(key)
    base = ("forwarding-options", key)
    if groups is None:
        return []
    issues += check_mapping(groups, base, "group name -> settings")
    if not isinstance(groups, dict):
        return []
    out = []
    for name, sec in groups.items():
        if not isinstance(sec, dict):
            issues.append(ConfigIssue(base + (name,), f"expected the group's settings as a mapping, got {sec!r}"))
            continue
        out.append((str(name), sec, base + (name,)))
    return out


def _parse_monitoring(config: dict, out: SamplingConfig, templates: dict[str, Template], limits: Limits,
                      issues: list[ConfigIssue], registries: Any = None) -> None:
    """``forwarding-options monitoring NAME``: passive monitoring groups.

    A group meters every packet (no sampling) accepted on its monitoring-only
    interfaces (``input-interfaces``, default: every interface with
    ``monitoring-only: true``); MPLS labels are stripped (flows are keyed on the
    inner IP header).  ``export-format cflowd-version-5`` gives flow servers
    without their own ``version`` that format.
    """
    ifaces = config.get("interfaces") or {}
    monitoring_only = [n for n, s in ifaces.items() if isinstance(s, dict) and s.get("monitoring-only") is True]
    claimed: dict[str, str] = {}
    for name, sec, p in _groups(config, "monitoring", issues):
        sec = copy.deepcopy(sec)  # export-format is folded into the servers below; never touch the config
        issues += check_keys(sec, ("family", "input-interfaces", "flow-table-size"), p)
        fam = sec.get("family") or {}
        for family, fsec in (fam.items() if isinstance(fam, dict) else []):
            o = (fsec or {}).get("output") if isinstance(fsec, dict) else None
            if isinstance(o, dict) and "export-format" in o:
                fmt = o.pop("export-format")
                if fmt not in EXPORT_FORMATS:
                    issues.append(ConfigIssue(p + ("family", family, "output", "export-format"),
                                              f"unknown export format {fmt!r}; expected one of: "
                                              f"{', '.join(EXPORT_FORMATS)}"))
                else:
                    for ssec in (o.get("flow-server") or {}).values():
                        if isinstance(ssec,
                                      dict) and not any(k in ssec for k in ("version", "version9", "version-ipfix")):
                            ssec["version"] = EXPORT_FORMATS[fmt]
        inst = _parse_instance(str(name), {k: v for k, v in sec.items() if k != "input-interfaces"}, p, templates,
                               limits, issues, registries)
        inst.algorithm = SAMPLING_DETERMINISTIC
        wanted = sec.get("input-interfaces")
        if wanted is None:
            members = list(monitoring_only)
            if not members:
                issues.append(ConfigIssue(p, "no interface has 'monitoring-only: true' to feed this monitoring group "
                                          "(or list them in input-interfaces)"))
        elif not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            issues.append(ConfigIssue(p + ("input-interfaces",), f"expected a list of interface names, got {wanted!r}"))
            members = []
        else:
            members = []
            for i, w in enumerate(wanted):
                if w not in ifaces:
                    issues.append(ConfigIssue(p + ("input-interfaces", i), f"interface {w!r} is not "
                                                                           f"configured{suggest(w, ifaces)}"))
                elif w not in monitoring_only:
                    issues.append(ConfigIssue(p + ("input-interfaces", i),
                                              f"interface {w!r} is not a monitoring-only interface (set "
                                              "'monitoring-only: true')"))
                else:
                    members.append(w)
        for m in members:
            if m in claimed and wanted is not None:
                issues.append(ConfigIssue(p + ("input-interfaces",), f"interface {m!r} already feeds monitoring group "
                                                                     f"{claimed[m]!r}"))
            claimed.setdefault(m, str(name))
        out.groups[str(name)] = inst
        out.group_interfaces[str(name)] = members


def _parse_accounting(config: dict, out: SamplingConfig, templates: dict[str, Template], limits: Limits,
                      issues: list[ConfigIssue], registries: Any = None) -> None:
    """``forwarding-options accounting NAME { output { ... } }``: discard accounting groups.

    A group meters every packet a term discards with ``discard accounting
    NAME`` (no sampling) into its own flow cache and exports it to its own
    flow servers.  The output has no family level: IPv4 flows go to every
    server, IPv6 flows to the v9/IPFIX servers whose template has an IPv6
    data template.
    """
    for name, sec, p in _groups(config, "accounting", issues):
        issues += check_keys(sec, ACCOUNTING_KEYS, p)
        inst = Instance(str(name), algorithm=SAMPLING_DETERMINISTIC, flow_table_size=min(262_144, limits.max_flows))
        _parse_table_size(inst, sec, p, limits, issues)
        if "output" not in sec:
            issues.append(ConfigIssue(p,
                                      "missing: 'output' with at least one 'flow-server ADDRESS { port; version; }'"))
            continue
        fam = _parse_family("inet", {"output": sec["output"]}, p, templates, limits, issues, registries)
        inst.families["inet"] = fam
        v6 = [s for s in fam.servers if s.template is not None and "ipv6" in s.template.kinds]
        if v6:
            inst.families["inet6"] = dataclasses.replace(fam, family="inet6", servers=v6)
        out.accounting[str(name)] = inst


def accounting_group_check(name, config: dict) -> str | None:
    """``TermAction.validate`` of ``discard accounting NAME``: the group must be configured."""
    groups = (config.get("forwarding-options") or {}).get("accounting")
    groups = groups if isinstance(groups, dict) else {}
    if name in groups:
        return None
    hint = suggest(str(name), groups)
    return (f"accounting group {name!r} is not defined under 'forwarding-options accounting'"
            + (hint or (f"; defined: {', '.join(map(str, groups))}" if groups else "")))


def _check_limits(out: SamplingConfig, limits: Limits, issues: list[ConfigIssue]) -> None:
    for name in out.accounting:  # 'show services accounting ... name NAME' must name one thing
        other = "sampling instance" if name in out.instances else "monitoring group" if name in out.groups else None
        if other:
            issues.append(ConfigIssue(("forwarding-options", "accounting", name),
                                      f"accounting group {name!r} has the name of a {other}; give it its own name"))
    total = sum(len(f.servers) for i in [*out.instances.values(), *out.groups.values()] for f in i.families.values())
    total += sum(len(g.families["inet"].servers) for g in out.accounting.values())  # its inet6 reuses them
    if total > limits.collectors_total:
        issues.append(ConfigIssue(("forwarding-options", "sampling"), f"{total} flow servers in all exceed the maximum "
                                  f"{limits.collectors_total} (hardware profile limit collectors_total)"))

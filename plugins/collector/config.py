"""``services flow-collector``: parse and validate.

YAML::

    services:
      flow-collector:
        listen:
          - {address: 127.0.0.1, port: 4739, protocol: udp}
          - {address: "::", port: 2055}          # protocol defaults to udp
          - {address: "::", port: 4739, protocol: tcp}   # IPFIX over TCP (RFC 7011 section 10.4)
        output: {jsonl: /var/lib/flowplane/flows.jsonl}   # optional; msgpack, rotate, forward: see output.py
        max-templates-per-exporter: 1024
        pending-timeout: 10                      # seconds data may wait for its template
        receive-buffer: 8388608                  # SO_RCVBUF asked for (bytes)
        flow-ring: 10000                         # last N flows kept for 'show ... flows'
        template-timeout: 1800                   # seconds a UDP template lives unless refreshed (0: never)
        max-connections: 256                     # open connections per TCP listener; more are refused
        scale-by-sampling-rate: false            # multiply packets/bytes by the sampling interval that applies
        tcp-idle-timeout: 600                    # seconds a silent TCP exporter is kept connected (0: forever)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowplane.api import (
    ConfigIssue,
    check_address,
    check_bool,
    check_int,
    check_int_fields,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    host_port,
)

from .output import OutputConfig, parse_output  # noqa: F401

SECTION = ("services", "flow-collector")
KEYS = ("listen", "output", "max-templates-per-exporter", "pending-timeout", "receive-buffer", "flow-ring",
        "template-timeout", "max-connections", "scale-by-sampling-rate", "tcp-idle-timeout")
LISTEN_KEYS = ("address", "port", "protocol")
PROTOCOLS = ("udp", "tcp")


@dataclass(frozen=True)
class Listen:
    address: str
    port: int
    protocol: str = "udp"

    @property
    def label(self) -> str:
        return f"{self.protocol}:{host_port(self.address, self.port)}"


#: ``(key, attribute, lo, hi)`` of the integer settings.
INT_FIELDS = (("max-templates-per-exporter", "max_templates", 1, 65536),
              ("receive-buffer", "receive_buffer", 65536, 1 << 30),
              ("flow-ring", "flow_ring", 0, 10_000_000),
              ("max-connections", "max_connections", 1, 65536))


@dataclass
class CollectorConfig:
    listen: list[Listen] = field(default_factory=list)
    jsonl: str | None = None  # = output.jsonl (short form: CollectorConfig(jsonl=PATH))
    output: OutputConfig = field(default_factory=OutputConfig)
    max_templates: int = 1024
    pending_timeout: float = 10.0
    receive_buffer: int = 8 * 1024 * 1024
    flow_ring: int = 10000
    template_timeout: float = 1800.0  # RFC 7011 section 8.4: UDP templates expire unless refreshed
    max_connections: int = 256  # per TCP listener
    scale: bool = False  # scale-by-sampling-rate
    tcp_idle_timeout: float = 600.0  # a TCP exporter silent this long is disconnected (0: never)


def parse(data: dict, registries: Any = None) -> tuple[CollectorConfig | None, list[ConfigIssue]]:
    """The section's config (None when absent) and every problem found, with key paths."""
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or "flow-collector" not in services:
        return None, []
    sec = services["flow-collector"]
    path = SECTION
    if sec is None:
        sec = {}
    issues = check_mapping(sec, path, "flow-collector settings")
    if issues:
        return None, issues
    issues += check_keys(sec, KEYS, path)
    cfg = CollectorConfig()
    listen = sec.get("listen")
    if listen is None:
        issues.append(ConfigIssue(path, "missing 'listen': a list of {address, port, protocol: udp|tcp}"))
    elif not isinstance(listen, list) or not listen:
        issues.append(ConfigIssue(path + ("listen",),
                                  f"expected a non-empty list of {{address, port}}, got {listen!r}"))
    else:
        seen = set()
        for i, item in enumerate(listen):
            p = path + ("listen", i)
            if not isinstance(item, dict):
                issues.append(ConfigIssue(p, f"expected a mapping {{address, port, protocol}}, got {item!r}"))
                continue
            issues += check_keys(item, LISTEN_KEYS, p)
            addr, bad = check_address(item.get("address", "0.0.0.0"), p + ("address",))
            if bad:
                issues += bad
                continue
            if "port" not in item:
                issues.append(ConfigIssue(p, "missing 'port' (1..65535)"))
                continue
            bad = check_int(item["port"], p + ("port",), 0, 65535)
            proto = item.get("protocol", "udp")
            bad += check_str(proto, p + ("protocol",), PROTOCOLS)
            if bad:
                issues += bad
                continue
            key = (addr, item["port"], proto)
            if key in seen and item["port"] != 0:
                issues.append(ConfigIssue(p, f"duplicate listener {proto}:{addr}:{item['port']}"))
            seen.add(key)
            cfg.listen.append(Listen(addr, item["port"], proto))
    out = sec.get("output")
    if out is not None:
        cfg.output, bad = parse_output(out, path + ("output",), registries)
        issues += bad
        cfg.jsonl = cfg.output.jsonl
    issues += check_int_fields(sec, path, INT_FIELDS, cfg)
    if "pending-timeout" in sec:
        bad = check_number(sec["pending-timeout"], path + ("pending-timeout",), 0, 3600)
        issues += bad
        if not bad:
            cfg.pending_timeout = float(sec["pending-timeout"])
    if "template-timeout" in sec:
        bad = check_number(sec["template-timeout"], path + ("template-timeout",), 0, 7 * 86400)
        issues += bad
        if not bad:
            cfg.template_timeout = float(sec["template-timeout"])
    if "scale-by-sampling-rate" in sec:
        bad = check_bool(sec["scale-by-sampling-rate"], path + ("scale-by-sampling-rate",))
        issues += bad
        if not bad:
            cfg.scale = sec["scale-by-sampling-rate"]
    if "tcp-idle-timeout" in sec:
        bad = check_number(sec["tcp-idle-timeout"], path + ("tcp-idle-timeout",), 0, 7 * 86400)
        issues += bad
        if not bad:
            cfg.tcp_idle_timeout = float(sec["tcp-idle-timeout"])
    return (None if issues else cfg), issues

"""``services rpm probe | probe-server | probe-limit``: parse and validate.

YAML mirrors the Junos hierarchy (``[edit services rpm]``)::

    services:
      rpm:
        probe-limit: 100                    # tests running at once (Junos: concurrent probes), 1..2000
        probe-server:                       # answer udp-ping / tcp-ping probes (RPM receiver server)
          udp: {port: 50000}                # 7 or 49160..65535; listen-address optional (default 0.0.0.0)
          tcp: {port: 50001, listen-address: "::"}
        probe:
          OWNER:
            test:
              NAME:
                probe-type: icmp-ping       # icmp-ping-timestamp icmp6-ping udp-ping udp-ping-timestamp
                                            # tcp-ping http-get http-metadata-get
                target: {address: 192.0.2.1}          # or {url: "http://192.0.2.1/"} for the http types
                probe-count: 5              # 1..15 probes per test
                probe-interval: 1           # seconds between probes (fractions allowed)
                test-interval: 60           # seconds from the end of one test to the start of the next
                probe-timeout: 3            # seconds a probe waits for its answer
                destination-port: 50000     # udp/tcp types: 7 or 49160..65535 (default 7)
                source-address: 192.0.2.9
                inet6-options: {source-address: "2001:db8::9"}
                routing-instance: blue      # a network namespace (ip netns) the probes are sent from
                data-size: 64               # payload octets (not for http types)
                data-fill: "a5"             # hex pattern repeated over the payload
                dscp-code-points: ef        # 6 bits, or be/ef/afXY/csN/nc1/nc2, or 0..63
                ttl: 64
                history-size: 50            # 0..255 probes kept for history-results
                moving-average-size: 0      # 0..255, below history-size
                hardware-timestamp: false
                one-way-hardware-timestamp: false
                thresholds: {successive-loss: 1, total-loss: 1, rtt: 5000, jitter-rtt: 2000, std-dev-rtt: 1000,
                             egress-time: 3000, ingress-time: 3000}    # µs; losses in probes
                traps: [probe-failure, test-failure, test-completion, rtt-exceeded]
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flowplane.api import (
    ConfigIssue,
    check_int,
    check_keys,
    check_mapping,
    check_str,
    parse_dscp,
    take_address,
    take_bool,
    take_int,
    take_number,
)

SECTION = ("services", "rpm")
RPM_KEYS = ("probe", "probe-server", "probe-limit")
PROBE_TYPES = ("icmp-ping", "icmp-ping-timestamp", "icmp6-ping", "udp-ping", "udp-ping-timestamp", "tcp-ping",
               "http-get", "http-metadata-get")
HTTP_TYPES = ("http-get", "http-metadata-get")
PORT_TYPES = ("udp-ping", "udp-ping-timestamp", "tcp-ping")
ONE_WAY_TYPES = ("icmp-ping-timestamp", "udp-ping", "udp-ping-timestamp", "tcp-ping")
HW_TYPES = ("icmp-ping", "icmp-ping-timestamp", "udp-ping", "udp-ping-timestamp")
TEST_KEYS = ("probe-type", "target", "probe-count", "probe-interval", "test-interval", "probe-timeout",
             "destination-port", "source-address", "inet6-options", "routing-instance", "data-size", "data-fill",
             "dscp-code-points", "ttl", "history-size", "moving-average-size", "hardware-timestamp",
             "one-way-hardware-timestamp", "thresholds", "traps")
LOSS_THRESHOLDS = ("successive-loss", "total-loss")
TIME_THRESHOLDS = ("rtt", "jitter-rtt", "std-dev-rtt", "egress-time", "jitter-egress", "std-dev-egress",
                   "ingress-time", "jitter-ingress", "std-dev-ingress")
THRESHOLD_KEYS = LOSS_THRESHOLDS + TIME_THRESHOLDS
MAX_THRESHOLD_US = 60_000_000
DEFAULT_THRESHOLDS = {"successive-loss": 1, "total-loss": 1}  # Junos defaults; 0 turns a threshold off
TRAPS = ("probe-failure", "test-failure", "test-completion", "rtt-exceeded", "std-dev-exceeded", "jitter-exceeded",
         "egress-time-exceeded", "egress-std-dev-exceeded", "egress-jitter-exceeded", "ingress-time-exceeded",
         "ingress-std-dev-exceeded", "ingress-jitter-exceeded")
DSCP_ALIASES = {"nc1": 48, "nc2": 56}  # besides be, ef, afXY, csN
MAX_NAME = 32  # Junos: owner and test names up to 32 characters
NETNS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SERVER_KEYS = ("port", "listen-address")
DEFAULT_PORT = 7  # UDP/TCP echo (RFC 862), the Junos default target port


def port_ok(port: int) -> bool:
    """Junos: ``destination-port`` and ``probe-server ... port`` are 7 or 49160..65535."""
    return port == 7 or 49160 <= port <= 65535


@dataclass(frozen=True)
class Thresholds:
    """Limits per test (µs, or probes for the losses); 0 or absent = not checked."""

    values: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))  # Junos word -> value

    def get(self, name: str) -> int | None:
        return self.values.get(name) or None


@dataclass
class TestConfig:
    """One ``probe OWNER test NAME``."""

    __test__ = False  # not a pytest class
    owner: str
    name: str
    probe_type: str = "icmp-ping"
    address: str | None = None  # target address (every type but the http ones)
    url: str | None = None  # target url (http types)
    probe_count: int = 1
    probe_interval: float = 3.0
    test_interval: float = 1.0
    probe_timeout: float = 3.0
    port: int = DEFAULT_PORT
    source_address: str | None = None
    routing_instance: str | None = None
    data_size: int = 0
    data_fill: bytes = b""
    dscp: int = 0
    ttl: int = 0  # 0 = the system default
    history_size: int = 50
    moving_average_size: int = 0
    hardware_timestamp: bool = False
    one_way_hardware_timestamp: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    traps: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.owner, self.name)

    @property
    def identity(self) -> tuple:
        """What a probe measures: a reload that keeps it keeps the test's results (thresholds etc. may change)."""
        return (self.probe_type, self.address, self.url, self.port, self.source_address, self.routing_instance,
                self.data_size, self.data_fill, self.dscp, self.ttl)

    @property
    def target(self) -> str:
        return self.url if self.url is not None else str(self.address)

    def payload(self, minimum: int = 0) -> bytes:
        """``data-size`` octets (at least *minimum*) filled with ``data-fill`` (zeros without it)."""
        size = max(self.data_size, minimum)
        fill = self.data_fill or b"\0"
        return (fill * (size // len(fill) + 1))[:size]


@dataclass
class ServerConfig:
    protocol: str  # udp | tcp
    port: int
    address: str = "0.0.0.0"


@dataclass
class RpmConfig:
    probe_limit: int = 100
    tests: list[TestConfig] = field(default_factory=list)
    servers: list[ServerConfig] = field(default_factory=list)


def parse(data: dict) -> tuple[RpmConfig | None, list[ConfigIssue]]:
    """The probe part of ``services rpm`` (``twamp`` belongs to the twamp plugin); None when absent."""
    services = data.get("services") if isinstance(data, dict) else None
    rpm = services.get("rpm") if isinstance(services, dict) else None
    if not isinstance(rpm, dict) or not any(k in rpm for k in RPM_KEYS):
        return None, []
    cfg, issues = RpmConfig(), []
    cfg.probe_limit = take_int(rpm, "probe-limit", SECTION, issues, 1, 2000, cfg.probe_limit)
    if rpm.get("probe-server") is not None:
        issues += _servers(rpm["probe-server"], SECTION + ("probe-server",), cfg)
    if rpm.get("probe") is not None:
        issues += _probes(rpm["probe"], SECTION + ("probe",), cfg)
    return (None if issues else cfg), issues


def _servers(sec, path, cfg: RpmConfig) -> list[ConfigIssue]:
    issues = check_mapping(sec, path, "probe-server: {udp: {port: P}, tcp: {port: P}}")
    if issues:
        return issues
    issues += check_keys(sec, ("udp", "tcp"), path, "probe-server protocol")
    for proto in ("udp", "tcp"):
        if proto not in sec:
            continue
        p = path + (proto,)
        s = sec[proto]
        bad = check_mapping(s, p, f"{proto}: {{port: P}}")
        if bad or not s:
            issues += bad or [ConfigIssue(p, f"probe-server {proto} needs a port (7 or 49160..65535)")]
            continue
        issues += check_keys(s, SERVER_KEYS, p)
        if "port" not in s:
            issues.append(ConfigIssue(p, f"probe-server {proto} needs a port (7 or 49160..65535)"))
            continue
        bad = check_int(s["port"], p + ("port",), 1, 65535)
        if not bad and not port_ok(s["port"]):
            bad = [ConfigIssue(p + ("port",), f"port {s['port']} is not allowed; expected 7 or 49160..65535")]
        issues += bad
        address = take_address(s, "listen-address", p, issues) or "0.0.0.0"
        if not bad:
            cfg.servers.append(ServerConfig(proto, s["port"], address))
    return issues


def _probes(sec, path, cfg: RpmConfig) -> list[ConfigIssue]:
    issues = check_mapping(sec, path, "OWNER: {test: {NAME: ...}}")
    if issues:
        return issues
    for owner, osec in sec.items():
        op = path + (owner,)
        issues += _name(owner, op, "owner")
        bad = check_mapping(osec, op, "test: {NAME: ...}")
        if bad or not osec:
            issues += bad or [ConfigIssue(op, "a probe owner needs at least one test NAME { ... }")]
            continue
        issues += check_keys(osec, ("test",), op)
        tests = osec.get("test")
        tp = op + ("test",)
        bad = check_mapping(tests, tp, "NAME: test settings")
        if bad or not tests:
            issues += bad or [ConfigIssue(op, "a probe owner needs at least one test NAME { ... }")]
            continue
        for name, tsec in tests.items():
            issues += _name(name, tp + (name,), "test")
            test, more = _test(str(owner), str(name), tsec or {}, tp + (name,))
            issues += more
            if test is not None:
                cfg.tests.append(test)
    return issues


def _name(name, path, what: str) -> list[ConfigIssue]:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or any(c.isspace() for c in name):
        return [ConfigIssue(path, f"a {what} name is 1..{MAX_NAME} characters without spaces, got {name!r}")]
    return []


def _target(t: TestConfig, sec, path, issues: list) -> None:
    p = path + ("target",)
    if "target" not in sec:
        want = "url" if t.probe_type in HTTP_TYPES else "address"
        issues.append(ConfigIssue(path, f"a test needs a target {{{want}: ...}}"))
        return
    tgt = sec["target"]
    if isinstance(tgt, str):  # a bare address or url is accepted too
        tgt = {"url": tgt} if "://" in tgt else {"address": tgt}
    bad = check_mapping(tgt, p, "{address: A} or {url: U}")
    if bad or not tgt:
        issues += bad or [ConfigIssue(p, "expected {address: A} or {url: U}")]
        return
    issues += check_keys(tgt, ("address", "url"), p)
    if "address" in tgt and "url" in tgt:
        issues.append(ConfigIssue(p, "give either address or url, not both"))
        return
    if t.probe_type in HTTP_TYPES:
        if "url" not in tgt:
            issues.append(ConfigIssue(p, f"probe-type {t.probe_type} needs target url (http://HOST[:PORT]/PATH)"))
            return
        url = tgt["url"]
        parts = urlsplit(url) if isinstance(url, str) else None
        try:
            port = parts.port if parts else None
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "http" or not parts.hostname:
            issues.append(ConfigIssue(p + ("url",),
                                      f"expected a full http:// URL (https is not supported), got {url!r}"))
            return
        t.url = url
        t.port = port or 80
        return
    if "address" not in tgt:
        issues.append(ConfigIssue(p, f"probe-type {t.probe_type} needs target address, not a url"))
        return
    address = take_address(tgt, "address", p, issues)
    if address is None:
        return
    version = ipaddress.ip_address(address).version
    if t.probe_type == "icmp6-ping" and version != 6:
        issues.append(ConfigIssue(p + ("address",), f"icmp6-ping needs an IPv6 target, got {address}"))
    elif t.probe_type in ("icmp-ping", "icmp-ping-timestamp") and version != 4:
        issues.append(ConfigIssue(p + ("address",), f"{t.probe_type} needs an IPv4 target (icmp6-ping for IPv6), "
                                                    f"got {address}"))
    t.address = address


def _test(owner: str, name: str, sec, path) -> tuple[TestConfig | None, list[ConfigIssue]]:
    issues = check_mapping(sec, path, "test settings")
    if issues:
        return None, issues
    issues += check_keys(sec, TEST_KEYS, path)
    t = TestConfig(owner, name)
    if "probe-type" in sec:
        bad = check_str(sec["probe-type"], path + ("probe-type",), PROBE_TYPES)
        issues += bad
        if bad:
            return None, issues
        t.probe_type = sec["probe-type"]
    _target(t, sec, path, issues)
    t.probe_count = take_int(sec, "probe-count", path, issues, 1, 15, 1)
    t.probe_interval = take_number(sec, "probe-interval", path, issues, 0.001, 255, 3.0)
    t.test_interval = take_number(sec, "test-interval", path, issues, 0, 86400, 1.0)
    t.probe_timeout = take_number(sec, "probe-timeout", path, issues, 0.001, 60, 3.0)
    if "destination-port" in sec:
        p = path + ("destination-port",)
        if t.probe_type not in PORT_TYPES:
            issues.append(ConfigIssue(p, f"destination-port applies to {', '.join(PORT_TYPES)} only "
                                         f"(http types take the port from the url)"))
        else:
            bad = check_int(sec["destination-port"], p, 1, 65535)
            if not bad and not port_ok(sec["destination-port"]):
                bad = [ConfigIssue(p, f"port {sec['destination-port']} is not allowed; expected 7 or 49160..65535")]
            issues += bad
            if not bad:
                t.port = sec["destination-port"]
    t.source_address = take_address(sec, "source-address", path, issues)
    if "inet6-options" in sec:
        p = path + ("inet6-options",)
        bad = check_mapping(sec["inet6-options"], p, "{source-address: A6}")
        issues += bad
        if not bad and sec["inet6-options"]:
            issues += check_keys(sec["inet6-options"], ("source-address",), p)
            src6 = take_address(sec["inet6-options"], "source-address", p, issues)
            if src6 is not None:
                if ipaddress.ip_address(src6).version != 6:
                    issues.append(ConfigIssue(p + ("source-address",), f"expected an IPv6 address, got {src6}"))
                elif t.address is None or ipaddress.ip_address(t.address).version == 6:
                    t.source_address = src6
    if t.source_address and t.address and \
            ipaddress.ip_address(t.source_address).version != ipaddress.ip_address(t.address).version:
        issues.append(ConfigIssue(path + ("source-address",), f"source-address {t.source_address} and target "
                                                              f"{t.address} are of different families"))
    if "routing-instance" in sec:
        ri = sec["routing-instance"]
        if not isinstance(ri, str) or not NETNS_NAME.match(ri):
            issues.append(ConfigIssue(path + ("routing-instance",),
                                      f"expected a network namespace name (as ip netns lists it), got {ri!r}"))
        else:
            t.routing_instance = ri
    for key in ("data-size", "data-fill"):
        if key in sec and t.probe_type in HTTP_TYPES:
            issues.append(ConfigIssue(path + (key,), f"{key} is not valid for probe-type {t.probe_type}"))
    t.data_size = take_int(sec, "data-size", path, issues, 0, 65507, 0)
    if "data-fill" in sec:
        fill = sec["data-fill"]
        text = str(fill) if isinstance(fill, (str, int)) and not isinstance(fill, bool) else None
        if text is not None and text.lower().startswith("0x"):
            text = text[2:]
        if not text or len(text) % 2 or any(c not in string.hexdigits for c in text) or len(text) > 2048:
            issues.append(ConfigIssue(path + ("data-fill",), f"expected an even number of hex digits, got {fill!r}"))
        else:
            t.data_fill = bytes.fromhex(text)
    if "dscp-code-points" in sec:
        dscp = parse_dscp(sec["dscp-code-points"], DSCP_ALIASES)
        if dscp is None:
            issues.append(ConfigIssue(path + ("dscp-code-points",),
                                      f"expected 6 bits (e.g. 101110), an alias (be, ef, af11..af43, cs0..cs7, nc1, "
                                      f"nc2) or 0..63, got {sec['dscp-code-points']!r}"))
        else:
            t.dscp = dscp
    t.ttl = take_int(sec, "ttl", path, issues, 1, 255, 0)
    t.history_size = take_int(sec, "history-size", path, issues, 0, 255, 50)
    t.moving_average_size = take_int(sec, "moving-average-size", path, issues, 0, 255, 0)
    if t.moving_average_size and t.moving_average_size >= t.history_size and "moving-average-size" in sec:
        issues.append(ConfigIssue(path + ("moving-average-size",),
                                  f"moving-average-size {t.moving_average_size} must be below history-size "
                                  f"{t.history_size}"))
    t.hardware_timestamp = take_bool(sec, "hardware-timestamp", path, issues)
    t.one_way_hardware_timestamp = take_bool(sec, "one-way-hardware-timestamp", path, issues)
    if t.hardware_timestamp and t.probe_type not in HW_TYPES:
        issues.append(ConfigIssue(path + ("hardware-timestamp",),
                                  f"hardware-timestamp applies to {', '.join(HW_TYPES)} only"))
    if t.hardware_timestamp and t.probe_type in PORT_TYPES and t.port != 7:
        issues.append(ConfigIssue(path + ("hardware-timestamp",),
                                  f"with hardware-timestamp, {t.probe_type} needs destination-port 7"))
    if t.hardware_timestamp and "data-size" in sec and t.data_size < 32:
        issues.append(ConfigIssue(path + ("data-size",), "with hardware-timestamp data-size is at least 32"))
    t.thresholds = _thresholds(sec.get("thresholds"), path + ("thresholds",), t, issues)
    t.traps = _traps(sec.get("traps"), path + ("traps",), issues)
    return t, issues


def _thresholds(sec, path, t: TestConfig, issues: list) -> Thresholds:
    if sec is None:
        return Thresholds()
    bad = check_mapping(sec, path, "threshold: value")
    if bad:
        issues += bad
        return Thresholds()
    issues += check_keys(sec, THRESHOLD_KEYS, path, "threshold")
    values = dict(DEFAULT_THRESHOLDS)
    for key in THRESHOLD_KEYS:
        if key not in sec:
            continue
        hi = 15 if key in LOSS_THRESHOLDS else MAX_THRESHOLD_US
        bad = check_int(sec[key], path + (key,), 0, hi)
        if not bad and ("egress" in key or "ingress" in key) and t.probe_type not in ONE_WAY_TYPES:
            bad = [ConfigIssue(path + (key,), f"{key} needs a probe type with one-way times "
                                              f"({', '.join(ONE_WAY_TYPES)}), not {t.probe_type}")]
        issues += bad
        if not bad:
            values[key] = sec[key]
    return Thresholds(values)


def _traps(sec, path, issues: list) -> tuple[str, ...]:
    if sec is None:
        return ()
    items = sec if isinstance(sec, list) else [sec]
    out = []
    for i, item in enumerate(items):
        bad = check_str(item, path + ((i,) if isinstance(sec, list) else ()), TRAPS)
        issues += bad
        if not bad:
            out.append(item)
    return tuple(out)

"""``services rpm twamp``: parse and validate (the server part so far).

YAML::

    services:
      rpm:
        twamp:
          server:
            port: 862                       # TWAMP-Control TCP port
            listen-address: 0.0.0.0         # optional (default 0.0.0.0; '::' for IPv6)
            authentication-mode: [none, authenticated, encrypted]   # or one of them as a string
            authentication-key-chain:       # KeyID -> shared secret (or {secret-file: PATH})
              alice: testsecret
              bob: {secret-file: /etc/flowplane/twamp-bob.secret}
            client-list:                    # optional ACL: name -> prefixes; absent = anyone
              lab: [192.0.2.0/24, "2001:db8::/32"]
            maximum-connections: 64
            maximum-connections-per-client: 64
            maximum-sessions-per-connection: 64
            max-connection-duration: 0      # hours, 0 = unlimited
            server-inactivity-timeout: 15   # minutes without a control message (SERVWAIT), 0 = never
            reflector-inactivity-timeout: 900   # seconds without a test packet (REFWAIT)
            tcp-keepidle: 120               # TCP keepalive on accepted control connections (seconds)
            tcp-keepintvl: 5
            tcp-keepcnt: 6
            light:                          # optional TWAMP Light reflector (RFC 5357 appendix I), UDP
              port: 862
              address: 0.0.0.0              # default: listen-address
              mode: per-sender              # or stateless (the sender's sequence number is copied)
              idle-timeout: 30              # seconds; a per-sender sequence restarts after this idle time
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from flowplane.api import (
    ConfigIssue,
    check_int,
    check_int_fields,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    parse_dscp,
    take_address,
    take_bool,
    take_int,
    take_number,
)

from .keepalive import Keepalive
from .wire import MODE_AUTHENTICATED, MODE_ENCRYPTED, MODE_UNAUTHENTICATED

SECTION = ("services", "rpm")
TWAMP_KEYS = ("server", "client")
SERVER_KEYS = ("port", "listen-address", "authentication-mode", "authentication-key-chain", "client-list",
               "maximum-connections", "maximum-connections-per-client", "maximum-sessions-per-connection",
               "max-connection-duration", "server-inactivity-timeout", "reflector-inactivity-timeout", "light",
               "tcp-keepidle", "tcp-keepintvl", "tcp-keepcnt")
LIGHT_KEYS = ("port", "address", "mode", "idle-timeout")
LIGHT_MODES = ("stateless", "per-sender")
AUTH_MODES = {"none": MODE_UNAUTHENTICATED, "authenticated": MODE_AUTHENTICATED, "encrypted": MODE_ENCRYPTED}


@dataclass
class LightConfig:
    port: int = 862
    address: str = "0.0.0.0"
    mode: str = "per-sender"
    idle_timeout: float = 30.0  # seconds, 0 = never reset a sender's sequence
    symmetric: bool = True


@dataclass
class ServerConfig:
    port: int = 862
    address: str = "0.0.0.0"
    modes: int = MODE_UNAUTHENTICATED
    secrets: dict[str, bytes] = field(default_factory=dict)
    client_list: list = field(default_factory=list)  # ip_network objects; empty = anyone
    max_connections: int = 64
    max_connections_per_client: int = 64
    max_sessions_per_connection: int = 64
    max_connection_duration: float = 0.0  # seconds, 0 = unlimited
    server_inactivity_timeout: float = 900.0  # seconds, 0 = never
    reflector_inactivity_timeout: float = 900.0
    light: LightConfig | None = None
    keepalive: Keepalive = field(default_factory=Keepalive)

    def allowed(self, address: str) -> bool:
        if not self.client_list:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.client_list if net.version == ip.version)


@dataclass(frozen=True)
class Thresholds:
    """Per-test limits; crossing one logs ``twamp_threshold_exceeded`` (and ``..._cleared`` when back)."""

    rtt: float | None = None  # µs, the test's largest round-trip time
    egress_time: float | None = None  # µs, largest one-way delay client -> server
    ingress_time: float | None = None  # µs, largest one-way delay server -> client
    jitter_rtt: float | None = None  # µs, largest |IPDV| of the round-trip time
    jitter_egress: float | None = None
    jitter_ingress: float | None = None
    std_dev_rtt: float | None = None  # µs
    successive_loss: int | None = None  # probes lost in a row
    total_loss: int | None = None  # probes lost in the test
    loss_percent: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k.replace("_", "-"), v) for k, v in self.__dict__.items() if v is not None]


@dataclass
class TestSessionConfig:
    __test__ = False  # not a pytest class
    name: str
    target_address: str  # the reflector address (default: the control connection's destination)
    data_size: int = 60  # padding octets in each test packet (Junos data-size)
    dscp: int = 0
    probe_count: int = 1
    probe_interval: float = 1.0  # seconds
    probe_timeout: float = 1.0  # seconds to wait for the last replies of a test
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass
class ControlConnectionConfig:
    name: str
    destination_address: str
    destination_port: int = 862
    source_address: str | None = None
    control_type: str = "managed"  # or "light": test packets straight to a Light reflector, no TWAMP-Control
    mode: int = MODE_UNAUTHENTICATED
    key_id: str = ""
    secret: bytes | None = None
    test_count: int = 0  # 0 = forever (and auto-restart)
    test_interval: float = 1.0  # seconds from the start of one test to the start of the next
    keepalive: Keepalive = field(default_factory=Keepalive)
    persistent_results: bool = False
    history_size: int = 50
    moving_average_size: int = 0
    sessions: list[TestSessionConfig] = field(default_factory=list)


@dataclass
class ClientConfig:
    connections: list[ControlConnectionConfig] = field(default_factory=list)


@dataclass
class TwampConfig:
    server: ServerConfig | None = None
    client: ClientConfig | None = None


def read_secret_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read().rstrip(b"\r\n")


def parse(data: dict) -> tuple[TwampConfig | None, list[ConfigIssue]]:
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or "rpm" not in services:
        return None, []
    rpm = services["rpm"] or {}
    issues = check_mapping(rpm, SECTION, "rpm settings")
    if issues:
        return None, issues
    tw = rpm.get("twamp")
    if tw is None:
        return None, issues
    path = SECTION + ("twamp",)
    bad = check_mapping(tw, path, "twamp: {server: ...}")
    if bad:
        return None, issues + bad
    issues += check_keys(tw, TWAMP_KEYS, path)
    cfg = TwampConfig()
    if "server" in tw:
        srv, more = _server(tw["server"] or {}, path + ("server",))
        issues += more
        cfg.server = srv
    if "client" in tw:
        cli, more = _client(tw["client"] or {}, path + ("client",))
        issues += more
        cfg.client = cli
    return (None if issues else cfg), issues


def _server(sec, path) -> tuple[ServerConfig, list[ConfigIssue]]:
    issues = check_mapping(sec, path, "twamp server settings")
    cfg = ServerConfig()
    if issues:
        return cfg, issues
    issues += check_keys(sec, SERVER_KEYS, path)
    issues += check_int_fields(sec, path, (("port", "port", 0, 65535),), cfg)
    cfg.address = take_address(sec, "listen-address", path, issues) or cfg.address
    modes = sec.get("authentication-mode", "none")
    names = modes if isinstance(modes, list) else [modes]
    cfg.modes = 0
    for i, name in enumerate(names):
        p = path + ("authentication-mode",) + ((i,) if isinstance(modes, list) else ())
        bad = check_str(name, p, AUTH_MODES)
        issues += bad
        if not bad:
            cfg.modes |= AUTH_MODES[name]
    if not names:
        issues.append(ConfigIssue(path + ("authentication-mode",), "expected at least one of: none, authenticated, "
                                                                   "encrypted"))
    chain = sec.get("authentication-key-chain")
    if chain is not None:
        p = path + ("authentication-key-chain",)
        bad = check_mapping(chain, p, "KeyID: secret")
        issues += bad
        if not bad:
            for kid, val in chain.items():
                if len(str(kid).encode()) > 80:
                    issues.append(ConfigIssue(p + (kid,), "a KeyID is at most 80 bytes of UTF-8"))
                if isinstance(val, str) and val:
                    cfg.secrets[str(kid)] = val.encode("utf-8")
                elif isinstance(val, dict) and set(val) == {"secret-file"} and isinstance(val["secret-file"], str):
                    try:
                        cfg.secrets[str(kid)] = read_secret_file(val["secret-file"])
                    except OSError as exc:
                        issues.append(ConfigIssue(p + (kid, "secret-file"), f"cannot read: {exc.strerror}"))
                else:
                    issues.append(ConfigIssue(p + (kid,), f"expected a secret string or {{secret-file: PATH}}, got "
                                                          f"{val!r}"))
    if cfg.modes & (MODE_AUTHENTICATED | MODE_ENCRYPTED) and not cfg.secrets and not issues:
        issues.append(ConfigIssue(path + ("authentication-key-chain",),
                                  "authenticated or encrypted mode needs at least one KeyID: secret"))
    cl = sec.get("client-list")
    if cl is not None:
        p = path + ("client-list",)
        groups = cl.items() if isinstance(cl, dict) else [(None, cl)]
        for name, prefixes in groups:
            pp = p + ((name,) if name is not None else ())
            if not isinstance(prefixes, list):
                issues.append(ConfigIssue(pp, f"expected a list of prefixes, got {prefixes!r}"))
                continue
            for j, pref in enumerate(prefixes):
                try:
                    cfg.client_list.append(ipaddress.ip_network(str(pref), strict=False))
                except ValueError:
                    issues.append(ConfigIssue(pp + (j,), f"expected an address prefix, got {pref!r}"))
    for key, attr, lo, hi, scale in (("maximum-connections", "max_connections", 0, 1000, 1),
                                     ("maximum-connections-per-client", "max_connections_per_client", 1, 500, 1),
                                     ("maximum-sessions-per-connection", "max_sessions_per_connection", 1, 1024, 1),
                                     ("max-connection-duration", "max_connection_duration", 0, 120, 3600),
                                     ("server-inactivity-timeout", "server_inactivity_timeout", 0, 30, 60),
                                     ("reflector-inactivity-timeout", "reflector_inactivity_timeout", 0, 86400, 1)):
        if key in sec:
            bad = check_int(sec[key], path + (key,), lo, hi)
            issues += bad
            if not bad:
                setattr(cfg, attr, float(sec[key] * scale) if scale != 1 or "timeout" in key else sec[key])
    cfg.keepalive, more = parse_keepalive(sec, path)
    issues += more
    if "light" in sec:
        cfg.light, more = _light(sec["light"] or {}, path + ("light",), cfg.address)
        issues += more
    return cfg, issues


KEEPALIVE_LIMITS = (("tcp-keepidle", "idle", 1, 600), ("tcp-keepintvl", "interval", 1, 600),
                    ("tcp-keepcnt", "count", 1, 50))  # Junos ranges (defaults 120 s, 5 s, 6)


def parse_keepalive(sec: dict, path) -> tuple[Keepalive, list[ConfigIssue]]:
    """``tcp-keepidle``/``tcp-keepintvl``/``tcp-keepcnt`` of a server or client control connection."""
    values, issues = {}, []
    issues += check_int_fields(sec, path, KEEPALIVE_LIMITS, values)
    return Keepalive(**values), issues


def _light(sec, path, default_address: str) -> tuple[LightConfig, list[ConfigIssue]]:
    cfg = LightConfig(address=default_address)
    issues = check_mapping(sec, path, "twamp light settings: {port, address, mode}")
    if issues:
        return cfg, issues
    issues += check_keys(sec, LIGHT_KEYS, path)
    issues += check_int_fields(sec, path, (("port", "port", 0, 65535),), cfg)
    cfg.address = take_address(sec, "address", path, issues) or cfg.address
    if "mode" in sec:
        bad = check_str(sec["mode"], path + ("mode",), LIGHT_MODES)
        issues += bad
        if not bad:
            cfg.mode = sec["mode"]
    if "idle-timeout" in sec:
        bad = check_int(sec["idle-timeout"], path + ("idle-timeout",), 0, 86400)
        issues += bad
        if not bad:
            cfg.idle_timeout = float(sec["idle-timeout"])
    return cfg, issues


# ---------------------------------------------------------------------------------------------------------------
# services rpm twamp client
# ---------------------------------------------------------------------------------------------------------------

CLIENT_KEYS = ("control-connection",)
CONTROL_KEYS = ("destination-address", "destination-port", "source-address", "control-type", "authentication-mode",
                "key-id",
                "secret", "secret-file", "test-count", "test-interval", "tcp-keepidle", "tcp-keepintvl",
                "tcp-keepcnt", "persistent-results", "history-size", "moving-average-size", "thresholds",
                "test-session")
SESSION_KEYS = ("target-address", "data-size", "dscp-code-points", "probe-count", "probe-interval",
                "probe-timeout", "thresholds")
THRESHOLD_KEYS = ("rtt", "egress-time", "ingress-time", "jitter-rtt", "jitter-egress", "jitter-ingress",
                  "std-dev-rtt", "successive-loss", "total-loss", "loss-percent")
CLIENT_MODES = ("none", "authenticated", "encrypted")
MAX_TEST_COUNT = 4294967290  # Junos range 0..4294967290
MAX_PROBES_PER_TEST = 1_000_000  # Junos allows 4294967290; a test's probes live in memory until it ends
DSCP_ALIASES = {"va": 44}  # besides be, ef, afXY, csN


def _thresholds(sec, path, base: Thresholds) -> tuple[Thresholds, list[ConfigIssue]]:
    if sec is None:
        return base, []
    issues = check_mapping(sec, path, "threshold: value")
    if issues:
        return base, issues
    issues += check_keys(sec, THRESHOLD_KEYS, path, "threshold")
    values = dict(base.__dict__)
    for key in THRESHOLD_KEYS:
        if key not in sec:
            continue
        integer = key in ("successive-loss", "total-loss")
        hi = 100 if key == "loss-percent" else None
        bad = check_int(sec[key], path + (key,), 0) if integer else check_number(sec[key], path + (key,), 0, hi)
        issues += bad
        if not bad:
            values[key.replace("-", "_")] = sec[key]
    return Thresholds(**values), issues


def _client(sec, path) -> tuple[ClientConfig, list[ConfigIssue]]:
    cfg = ClientConfig()
    issues = check_mapping(sec, path, "twamp client settings: {control-connection: {NAME: ...}}")
    if issues:
        return cfg, issues
    issues += check_keys(sec, CLIENT_KEYS, path)
    conns = sec.get("control-connection") or {}
    p = path + ("control-connection",)
    bad = check_mapping(conns, p, "NAME: control connection settings")
    if bad:
        return cfg, issues + bad
    for name, csec in conns.items():
        cc, more = _control_connection(str(name), csec or {}, p + (name,))
        issues += more
        if cc is not None:
            cfg.connections.append(cc)
    return cfg, issues


def _control_connection(name: str, sec, path) -> tuple[ControlConnectionConfig | None, list[ConfigIssue]]:
    issues = check_mapping(sec, path, "control connection settings")
    if issues:
        return None, issues
    issues += check_keys(sec, CONTROL_KEYS, path)
    dest = take_address(sec, "destination-address", path, issues)
    if "destination-address" not in sec:
        issues.append(ConfigIssue(path, "a control connection needs a destination-address (the TWAMP server)"))
    cc = ControlConnectionConfig(name, dest or "0.0.0.0")
    cc.destination_port = take_int(sec, "destination-port", path, issues, 1, 65535, 862)
    cc.source_address = take_address(sec, "source-address", path, issues)
    if (dest and cc.source_address
            and ipaddress.ip_address(dest).version != ipaddress.ip_address(cc.source_address).version):
        issues.append(ConfigIssue(path + ("source-address",),
                                  f"source-address {cc.source_address} and destination-address {dest} are of "
                                  "different families"))
    if "control-type" in sec:
        bad = check_str(sec["control-type"], path + ("control-type",), ("managed", "light"))
        issues += bad
        if not bad:
            cc.control_type = sec["control-type"]
    mode = sec.get("authentication-mode", "none")
    bad = check_str(mode, path + ("authentication-mode",), CLIENT_MODES)
    issues += bad
    if not bad:
        cc.mode = AUTH_MODES[mode]
        if cc.control_type == "light" and mode != "none":
            issues.append(ConfigIssue(path + ("authentication-mode",),
                                      "control-type light sends unauthenticated test packets only "
                                      "(RFC 5357 appendix I)"))
    if "key-id" in sec:
        if not isinstance(sec["key-id"], str) or not sec["key-id"] or len(sec["key-id"].encode()) > 80:
            issues.append(ConfigIssue(path + ("key-id",), "expected a KeyID of 1..80 bytes of UTF-8, got "
                                                          f"{sec['key-id']!r}"))
        else:
            cc.key_id = sec["key-id"]
    if "secret" in sec and "secret-file" in sec:
        issues.append(ConfigIssue(path + ("secret-file",), "give either secret or secret-file, not both"))
    elif "secret" in sec:
        if isinstance(sec["secret"], str) and sec["secret"]:
            cc.secret = sec["secret"].encode("utf-8")
        else:
            issues.append(ConfigIssue(path + ("secret",), f"expected a non-empty string, got {sec['secret']!r}"))
    elif "secret-file" in sec:
        if not isinstance(sec["secret-file"], str):
            issues.append(ConfigIssue(path + ("secret-file",), f"expected a file name, got {sec['secret-file']!r}"))
        else:
            try:
                cc.secret = read_secret_file(sec["secret-file"])
            except OSError as exc:
                issues.append(ConfigIssue(path + ("secret-file",), f"cannot read {sec['secret-file']}: {exc.strerror}"))
    if cc.mode != MODE_UNAUTHENTICATED and not bad:
        if not cc.key_id:
            issues.append(ConfigIssue(path + ("key-id",), f"authentication-mode {mode} needs a key-id"))
        if cc.secret is None and not any(i.path[-1] in ("secret", "secret-file") for i in issues):
            issues.append(ConfigIssue(path, f"authentication-mode {mode} needs a secret or secret-file"))
    cc.test_count = take_int(sec, "test-count", path, issues, 0, MAX_TEST_COUNT, 0)
    cc.test_interval = take_number(sec, "test-interval", path, issues, 0.01, 255, 1.0)
    cc.keepalive, more = parse_keepalive(sec, path)
    issues += more
    cc.persistent_results = take_bool(sec, "persistent-results", path, issues)
    cc.history_size = take_int(sec, "history-size", path, issues, 0, 512, 50)
    cc.moving_average_size = take_int(sec, "moving-average-size", path, issues, 0, 512, 0)
    base, more = _thresholds(sec.get("thresholds"), path + ("thresholds",), Thresholds())
    issues += more
    sessions = sec.get("test-session")
    sp = path + ("test-session",)
    if not sessions:
        issues.append(ConfigIssue(path, "a control connection needs at least one test-session NAME { ... }"))
    else:
        bad = check_mapping(sessions, sp, "NAME: test session settings")
        issues += bad
        if not bad:
            for sname, ssec in sessions.items():
                ts, more = _test_session(str(sname), ssec or {}, sp + (sname,), cc, base)
                issues += more
                if ts is not None:
                    cc.sessions.append(ts)
    return cc, issues


def _test_session(name: str, sec, path, cc: ControlConnectionConfig, base: Thresholds):
    issues = check_mapping(sec, path, "test session settings")
    if issues:
        return None, issues
    issues += check_keys(sec, SESSION_KEYS, path)
    target = take_address(sec, "target-address", path, issues) or cc.destination_address
    try:
        if ipaddress.ip_address(target).version != ipaddress.ip_address(cc.destination_address).version:
            issues.append(ConfigIssue(path + ("target-address",),
                                      f"target-address {target} is not of the family of destination-address "
                                      f"{cc.destination_address}"))
    except ValueError:
        pass
    ts = TestSessionConfig(name, target)
    ts.data_size = take_int(sec, "data-size", path, issues, 60, 1400, 60)
    if "dscp-code-points" in sec:
        dscp = parse_dscp(sec["dscp-code-points"], DSCP_ALIASES)
        if dscp is None:
            issues.append(ConfigIssue(path + ("dscp-code-points",),
                                      f"expected 6 bits (e.g. 101110), a name (ef, af11..af43, cs0..cs7, be) or 0..63, "
                                      f"got {sec['dscp-code-points']!r}"))
        else:
            ts.dscp = dscp
    if "probe-count" in sec:
        bad = check_int(sec["probe-count"], path + ("probe-count",), 1, MAX_PROBES_PER_TEST,
                        limit="probes per test: every probe of the test in flight is kept in memory")
        issues += bad
        if not bad:
            ts.probe_count = sec["probe-count"]
    ts.probe_interval = take_number(sec, "probe-interval", path, issues, 0.001, 255, 1.0)
    ts.probe_timeout = take_number(sec, "probe-timeout", path, issues, 0.01, 60, 1.0)
    ts.thresholds, more = _thresholds(sec.get("thresholds"), path + ("thresholds",), base)
    issues += more
    return ts, issues

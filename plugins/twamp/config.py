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

from flowplane.config import check_int, check_keys, check_mapping, check_str
from flowplane.errors import ConfigIssue

from .keepalive import Keepalive
from .wire import MODE_AUTHENTICATED, MODE_ENCRYPTED, MODE_UNAUTHENTICATED

SECTION = ("services", "rpm")
RPM_KEYS = ("twamp",)
TWAMP_KEYS = ("server",)
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


@dataclass
class TwampConfig:
    server: ServerConfig | None = None


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
    issues += check_keys(rpm, RPM_KEYS, SECTION)
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
    return (None if issues else cfg), issues


def _server(sec, path) -> tuple[ServerConfig, list[ConfigIssue]]:
    issues = check_mapping(sec, path, "twamp server settings")
    cfg = ServerConfig()
    if issues:
        return cfg, issues
    issues += check_keys(sec, SERVER_KEYS, path)
    if "port" in sec:
        bad = check_int(sec["port"], path + ("port",), 0, 65535)
        issues += bad
        if not bad:
            cfg.port = sec["port"]
    if "listen-address" in sec:
        try:
            cfg.address = str(ipaddress.ip_address(str(sec["listen-address"])))
        except ValueError:
            issues.append(ConfigIssue(path + ("listen-address",),
                                      f"expected an IPv4 or IPv6 address, got {sec['listen-address']!r}"))
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
        issues.append(ConfigIssue(path + ("authentication-mode",), "expected at least one of: none, authenticated, encrypted"))
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
                    issues.append(ConfigIssue(p + (kid,), f"expected a secret string or {{secret-file: PATH}}, got {val!r}"))
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
    for key, attr, lo, hi in KEEPALIVE_LIMITS:
        if key in sec:
            bad = check_int(sec[key], path + (key,), lo, hi)
            issues += bad
            if not bad:
                values[attr] = sec[key]
    return Keepalive(**values), issues


def _light(sec, path, default_address: str) -> tuple[LightConfig, list[ConfigIssue]]:
    cfg = LightConfig(address=default_address)
    issues = check_mapping(sec, path, "twamp light settings: {port, address, mode}")
    if issues:
        return cfg, issues
    issues += check_keys(sec, LIGHT_KEYS, path)
    if "port" in sec:
        bad = check_int(sec["port"], path + ("port",), 0, 65535)
        issues += bad
        if not bad:
            cfg.port = sec["port"]
    if "address" in sec:
        try:
            cfg.address = str(ipaddress.ip_address(str(sec["address"])))
        except ValueError:
            issues.append(ConfigIssue(path + ("address",), f"expected an IPv4 or IPv6 address, got {sec['address']!r}"))
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

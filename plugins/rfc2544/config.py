"""``services rpm rfc2544-benchmarking``: parse and validate.

YAML (Junos words; the flowplane extensions are marked)::

    services:
      rpm:
        rfc2544-benchmarking:
          profiles:
            test-profile:
              tput:
                test-type: throughput         # throughput | latency | frame-loss | back-back-frames
                packet-size: 512              # bytes with FCS; one size or a list (extension)
                bandwidth-kbps: 100000        # highest rate tried, line rate (preamble and gap included)
                step-percent: 10              # frame-loss: step down by this much (1..100)
                test-duration: 20m            # cap on the whole test (s, or "90s", "20m", "1h")
                resolution-percent: 1         # extension: binary search stops at this rate resolution
          tests:
            test-name:
              t1:
                mode: initiate-and-terminate  # or reflect
                family: inet                  # inet | inet6 | bridge
                test-interface: eth1
                source-ipv4-address: 198.18.0.1
                destination-ipv4-address: 198.19.0.1
                source-udp-port: 49184
                destination-udp-port: 7
                test-profile: tput            # initiator only
                test-iterator-duration: 2     # seconds per trial
                test-iterator-pass-threshold: 0   # loss (percent) an iteration may show and still pass
                test-finish-wait-duration: 2  # seconds to wait for the last frames after a trial
                iteration-count: 1            # extension: repetitions of the whole search
                reflect-mode: mac-swap        # reflector: mac-swap | no-mac-swap
                ip-swap: true                 # reflector
                udp-tcp-port-swap: true       # reflector
                disable-signature-check: false
                check-test-interface-mtu: true

For the initiator the addresses and ports describe the stream it sends; the reflector turns around the
frames of that same stream (source = initiator side, destination = reflector side).  A flag such as
``ip-swap`` may be written with no value (``ip-swap:``), meaning true.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from flowplane.api import (
    ConfigIssue,
    check_address,
    check_int_fields,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    suggest,
)

SECTION = ("services", "rpm", "rfc2544-benchmarking")
TOP_KEYS = ("profiles", "tests")
TEST_TYPES = ("throughput", "latency", "frame-loss", "back-back-frames")
MODES = ("initiate-and-terminate", "reflect")
FAMILIES = ("inet", "inet6", "bridge")
REFLECT_MODES = ("mac-swap", "no-mac-swap")
#: Junos packet sizes (bytes, FCS included); the RFC 2544 seven are among them.
PACKET_SIZES = (64, 68, 72, 128, 256, 512, 768, 1024, 1280, 1518, 1522, 1600, 1728, 2496, 3584, 4016, 9104, 9136)
RFC_SIZES = (64, 128, 256, 512, 1024, 1280, 1518)
PROFILE_KEYS = ("test-type", "packet-size", "bandwidth-kbps", "step-percent", "test-duration", "resolution-percent")
TEST_KEYS = ("mode", "family", "test-interface", "source-ipv4-address", "destination-ipv4-address",
             "source-ipv6-address", "destination-ipv6-address", "source-mac-address", "destination-mac-address",
             "source-udp-port", "destination-udp-port", "test-profile", "test-iterator-duration",
             "test-iterator-pass-threshold", "test-finish-wait-duration", "iteration-count", "reflect-mode",
             "ip-swap", "udp-tcp-port-swap", "disable-signature-check", "check-test-interface-mtu", "reflect-etype")
INITIATOR_ONLY = ("test-profile", "test-iterator-duration", "test-iterator-pass-threshold",
                  "test-finish-wait-duration", "iteration-count")
REFLECTOR_ONLY = ("reflect-mode", "ip-swap", "udp-tcp-port-swap", "disable-signature-check")
BRIDGE_ETHERTYPE = 0x88B5  # IEEE 802 local experimental EtherType: raw Ethernet test frames (family bridge)
#: Smallest frame (FCS included) that carries the headers and the 18-byte test payload.
MIN_SIZE = {"inet": 64, "inet6": 84, "bridge": 64}
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")


@dataclass(frozen=True)
class Profile:
    name: str
    test_type: str = "throughput"
    packet_sizes: tuple[int, ...] = (64,)
    bandwidth_kbps: int = 1_000_000
    step_percent: int = 10
    test_duration: float = 0.0  # seconds, 0 = no cap
    resolution_percent: float = 1.0


@dataclass(frozen=True)
class TestConfig:
    __test__ = False  # not a pytest class
    name: str
    mode: str
    interface: str
    family: str = "inet"
    source_address: str | None = None
    destination_address: str | None = None
    source_mac: str | None = None
    destination_mac: str | None = None
    source_port: int | None = None  # the initiator sends from 49184 when unset; the reflector matches any
    destination_port: int = 7  # RFC 2544 appendix C: UDP echo
    profile: Profile | None = None
    trial_seconds: float = 20.0
    pass_threshold: float = 0.0  # percent loss an iteration may show and still pass
    wait_seconds: float = 2.0  # RFC 2544: wait about 2 s after a trial before counting
    iterations: int = 1
    mac_swap: bool = True
    ip_swap: bool = False
    port_swap: bool = False
    signature_check: bool = True
    check_mtu: bool = True
    reflect_etype: int = BRIDGE_ETHERTYPE


@dataclass
class BenchmarkingConfig:
    profiles: dict[str, Profile] = field(default_factory=dict)
    tests: dict[str, TestConfig] = field(default_factory=dict)


def parse_duration(value) -> float | None:
    """Seconds from ``20``, ``"90s"``, ``"20m"``, ``"1h"``, ``"1d"``; None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value).strip())
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _flag(sec: dict, key: str, path, issues: list, default: bool) -> bool:
    if key not in sec:
        return default
    v = sec[key]
    if v is None:  # Junos presence flag written as `ip-swap:`
        return True
    if not isinstance(v, bool):
        issues.append(ConfigIssue(path + (key,), f"expected true or false (or no value), got {v!r}"))
        return default
    return v


def _named(sec, path, word: str, what: str, issues: list) -> dict:
    """``{word: {NAME: {...}}}`` -> the inner mapping, with issues for a wrong shape."""
    issues += check_mapping(sec, path, f"{word}: {{NAME: ...}}")
    if not isinstance(sec, dict):
        return {}
    issues += check_keys(sec, (word,), path)
    inner = sec.get(word) or {}
    issues += check_mapping(inner, path + (word,), f"{what} by name")
    return inner if isinstance(inner, dict) else {}


def _profile(name: str, sec, path) -> tuple[Profile | None, list[ConfigIssue]]:
    issues = check_mapping(sec, path, "test-profile settings")
    if issues:
        return None, issues
    sec = sec or {}
    issues += check_keys(sec, PROFILE_KEYS, path)
    kw: dict = {"name": str(name)}
    if "test-type" not in sec:
        issues.append(ConfigIssue(path, f"missing test-type; expected one of: {', '.join(TEST_TYPES)}"))
    else:
        issues += check_str(sec["test-type"], path + ("test-type",), TEST_TYPES)
        kw["test_type"] = sec["test-type"]
    if "packet-size" in sec:
        sizes = sec["packet-size"] if isinstance(sec["packet-size"], list) else [sec["packet-size"]]
        bad = False
        for i, s in enumerate(sizes):
            p = path + ("packet-size",) + ((i,) if isinstance(sec["packet-size"], list) else ())
            if isinstance(s, bool) or not isinstance(s, int) or s not in PACKET_SIZES:
                issues.append(ConfigIssue(p, f"packet size {s!r} is not one of {', '.join(map(str, PACKET_SIZES))} "
                                             f"(bytes, FCS included; RFC 2544: {', '.join(map(str, RFC_SIZES))})"))
                bad = True
        if not sizes:
            issues.append(ConfigIssue(path + ("packet-size",), "expected at least one packet size"))
        elif not bad:
            kw["packet_sizes"] = tuple(sizes)
    issues += check_int_fields(sec, path, (("bandwidth-kbps", "bandwidth_kbps", 1000, 100_000_000),
                                           ("step-percent", "step_percent", 1, 100)), kw)
    if "resolution-percent" in sec:
        issues += check_number(sec["resolution-percent"], path + ("resolution-percent",), 0.01, 50)
        kw["resolution_percent"] = sec["resolution-percent"]
    if "test-duration" in sec:
        d = parse_duration(sec["test-duration"])
        if d is None or d <= 0:
            issues.append(ConfigIssue(path + ("test-duration",), f"expected a duration such as 60, '90s', '20m' or "
                                                                 f"'1h', got {sec['test-duration']!r}"))
        else:
            kw["test_duration"] = d
    return (None if issues else Profile(**kw)), issues


def _address(sec, key, path, version: int, issues: list) -> str | None:
    if key not in sec:
        return None
    text, bad = check_address(sec[key], path + (key,))
    if bad:
        issues.append(ConfigIssue(path + (key,), f"expected an IPv{version} address, got {sec[key]!r}"))
        return None
    ip = ipaddress.ip_address(text)
    if ip.version != version:
        issues.append(ConfigIssue(path + (key,), f"expected an IPv{version} address, got IPv{ip.version} {ip}"))
        return None
    return text


def _test(name: str, sec, path, profiles: dict) -> tuple[TestConfig | None, list[ConfigIssue]]:
    issues = check_mapping(sec, path, "test-name settings")
    if issues:
        return None, issues
    sec = sec or {}
    issues += check_keys(sec, TEST_KEYS, path)
    kw: dict = {"name": str(name)}
    mode = sec.get("mode")
    if mode is None:
        issues.append(ConfigIssue(path, f"missing mode; expected one of: {', '.join(MODES)}"))
    else:
        issues += check_str(mode, path + ("mode",), MODES)
    kw["mode"] = mode
    family = sec.get("family", "inet")
    issues += check_str(family, path + ("family",), FAMILIES)
    kw["family"] = family
    if "test-interface" not in sec:
        issues.append(ConfigIssue(path, "missing test-interface (the Linux interface the test frames use)"))
    else:
        issues += check_str(sec["test-interface"], path + ("test-interface",))
    kw["interface"] = sec.get("test-interface")
    v4 = ("source-ipv4-address", "destination-ipv4-address")
    v6 = ("source-ipv6-address", "destination-ipv6-address")
    if family == "inet":
        kw["source_address"] = _address(sec, v4[0], path, 4, issues)
        kw["destination_address"] = _address(sec, v4[1], path, 4, issues)
        wrong = v6
    elif family == "inet6":
        kw["source_address"] = _address(sec, v6[0], path, 6, issues)
        kw["destination_address"] = _address(sec, v6[1], path, 6, issues)
        wrong = v4
    else:
        wrong = v4 + v6
    for k in wrong:
        if k in sec:
            issues.append(ConfigIssue(path + (k,), f"{k} does not apply to family {family}"))
    for k, attr in (("source-mac-address", "source_mac"), ("destination-mac-address", "destination_mac")):
        if k in sec:
            if isinstance(sec[k], str) and _MAC.match(sec[k]):
                kw[attr] = sec[k].lower()
            else:
                issues.append(ConfigIssue(path + (k,),
                                          f"expected a MAC address like 02:00:00:00:00:01, got {sec[k]!r}"))
    issues += check_int_fields(sec, path, (("source-udp-port", "source_port", 1, 65535),
                                           ("destination-udp-port", "destination_port", 1, 65535)), kw)
    if mode == "initiate-and-terminate":
        for k in REFLECTOR_ONLY:
            if k in sec:
                issues.append(ConfigIssue(path + (k,), f"{k} applies to mode reflect only"))
        if family in ("inet", "inet6") and not kw.get("destination_address"):
            key = v4[1] if family == "inet" else v6[1]
            issues.append(ConfigIssue(path, f"missing {key} (where the test frames go)"))
        if family == "bridge" and "destination-mac-address" not in sec:
            issues.append(ConfigIssue(path, "missing destination-mac-address (family bridge sends raw Ethernet)"))
        prof = sec.get("test-profile")
        if prof is None:
            issues.append(ConfigIssue(path, "missing test-profile (an initiator runs a profile)"))
        elif prof not in profiles:
            issues.append(ConfigIssue(path + ("test-profile",), "no test-profile "
                                                                f"{prof!r}{suggest(str(prof), profiles)}"
                                      f"; configured: {', '.join(profiles) or 'none'}"))
        else:
            kw["profile"] = profiles[prof]  # None when the profile itself is wrong (reported there)
        for k, attr, lo, hi in (("test-iterator-duration", "trial_seconds", 0.1, 86400.0),
                                ("test-finish-wait-duration", "wait_seconds", 0.0, 60.0)):
            if k in sec:
                d = parse_duration(sec[k])
                if d is None or not lo <= d <= hi:
                    issues.append(ConfigIssue(path + (k,), f"expected a duration of {lo:g} to {hi:g} seconds, "
                                                           f"got {sec[k]!r}"))
                else:
                    kw[attr] = d
        if "test-iterator-pass-threshold" in sec:
            issues += check_number(sec["test-iterator-pass-threshold"], path + ("test-iterator-pass-threshold",), 0,
                                   100)
            kw["pass_threshold"] = sec["test-iterator-pass-threshold"]
        issues += check_int_fields(sec, path, (("iteration-count", "iterations", 1, 1000),), kw)
    elif mode == "reflect":
        for k in INITIATOR_ONLY:
            if k in sec:
                issues.append(ConfigIssue(path + (k,), f"{k} applies to mode initiate-and-terminate only"))
        if "reflect-mode" in sec:
            issues += check_str(sec["reflect-mode"], path + ("reflect-mode",), REFLECT_MODES)
            kw["mac_swap"] = sec["reflect-mode"] != "no-mac-swap"
        kw["ip_swap"] = _flag(sec, "ip-swap", path, issues, False)
        kw["port_swap"] = _flag(sec, "udp-tcp-port-swap", path, issues, False)
        kw["signature_check"] = not _flag(sec, "disable-signature-check", path, issues, False)
        if family == "bridge" and (kw["ip_swap"] or kw["port_swap"]):
            issues.append(ConfigIssue(path, "ip-swap and udp-tcp-port-swap need family inet or inet6"))
    kw["check_mtu"] = _flag(sec, "check-test-interface-mtu", path, issues, True)
    prof = kw.get("profile")
    if family == "inet6" and prof is not None and min(prof.packet_sizes) < MIN_SIZE["inet6"]:
        issues.append(ConfigIssue(path + ("test-profile",), f"test-profile {prof.name} has packet-size "
                                  f"{min(prof.packet_sizes)}; family inet6 needs at least {MIN_SIZE['inet6']} bytes "
                                  "(Ethernet, IPv6 and UDP headers, the test payload and the FCS)"))
    issues += check_int_fields(sec, path, (("reflect-etype", "reflect_etype", 0x0600, 0xFFFF),), kw)
    return (None if issues else TestConfig(**kw)), issues


def parse(data: dict) -> tuple[BenchmarkingConfig | None, list[ConfigIssue]]:
    """The section as a :class:`BenchmarkingConfig` (None when absent or wrong) and every issue found."""
    rpm = data.get("services", {}).get("rpm") if isinstance(data, dict) and isinstance(data.get("services"), dict) \
        else None
    if not isinstance(rpm, dict) or "rfc2544-benchmarking" not in rpm:
        return None, []
    sec = rpm["rfc2544-benchmarking"] or {}
    issues = check_mapping(sec, SECTION, "rfc2544-benchmarking: {profiles: ..., tests: ...}")
    if issues:
        return None, issues
    issues += check_keys(sec, TOP_KEYS, SECTION)
    cfg = BenchmarkingConfig()
    ppath = SECTION + ("profiles",)
    for name, psec in _named(sec.get("profiles") or {}, ppath, "test-profile", "test profiles", issues).items():
        prof, more = _profile(name, psec, ppath + ("test-profile", name))
        issues += more
        if prof is not None:
            cfg.profiles[str(name)] = prof
    tpath = SECTION + ("tests",)
    names = ((sec.get("profiles") or {}).get("test-profile") or {}) if isinstance(sec.get("profiles"), dict) else {}
    known = {str(n): cfg.profiles.get(str(n)) for n in (names if isinstance(names, dict) else {})}
    for name, tsec in _named(sec.get("tests") or {}, tpath, "test-name", "tests", issues).items():
        test, more = _test(name, tsec, tpath + ("test-name", name), known)
        issues += more
        if test is not None:
            cfg.tests[str(name)] = test
    return (None if issues else cfg), issues

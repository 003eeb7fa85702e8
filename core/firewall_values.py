"""Value vocabularies and parsers for firewall match conditions.

Everything here runs at config time only: names (ports, protocols, DSCP,
ICMP types and codes, precedence), number/range parsing, the Junos
``tcp-flags`` expression language, and IP prefix arithmetic (longest-prefix
match with ``except`` entries normalised into disjoint intervals).

Parsers raise :class:`ValueProblem` with the text that follows
``expected ...; got ...`` so the validator can attach key paths.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass

import numpy as np


class ValueProblem(ValueError):
    """A single bad value; ``str()`` is the whole user-facing message."""


def suggest(word: str, candidates) -> str:
    """``"; did you mean 'x'?"`` or ``""``."""
    if not isinstance(word, str):
        return ""
    m = difflib.get_close_matches(word.lower(), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {m[0]!r}?" if m else ""


# --------------------------------------------------------------------------
# name tables (Junos keywords)
# --------------------------------------------------------------------------

PORT_NAMES: dict[str, int] = {
    "afs": 1483, "bgp": 179, "biff": 512, "bootpc": 68, "bootps": 67, "cmd": 514,
    "cvspserver": 2401, "dhcp": 67, "domain": 53, "dns": 53, "eklogin": 2105,
    "ekshell": 2106, "exec": 512, "finger": 79, "ftp": 21, "ftp-data": 20,
    "http": 80, "https": 443, "ident": 113, "imap": 143, "imaps": 993,
    "kerberos-sec": 88, "klogin": 543, "kpasswd": 761, "krb-prop": 754,
    "krbupdate": 760, "kshell": 544, "ldap": 389, "ldp": 646, "login": 513,
    "mobileip-agent": 434, "mobilip-mn": 435, "msdp": 639, "netbios-dgm": 138,
    "netbios-ns": 137, "netbios-ssn": 139, "nfsd": 2049, "nntp": 119,
    "ntalk": 518, "ntp": 123, "pop3": 110, "pptp": 1723, "printer": 515,
    "radacct": 1813, "radius": 1812, "rip": 520, "rkinit": 2108, "smtp": 25,
    "snmp": 161, "snmptrap": 162, "snpp": 444, "socks": 1080, "ssh": 22,
    "sunrpc": 111, "syslog": 514, "tacacs": 49, "tacacs-ds": 65, "talk": 517,
    "telnet": 23, "tftp": 69, "timed": 525, "who": 513, "xdmcp": 177,
    "zephyr-clt": 2103, "zephyr-hm": 2104, "zephyr-srv": 2102,
    "bfd": 3784, "netflow": 2055, "ipfix": 4739, "sflow": 6343, "twamp": 862,
}

PROTOCOL_NAMES: dict[str, int] = {
    "hop-by-hop": 0, "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8,
    "udp": 17, "ipv6": 41, "routing": 43, "fragment": 44, "rsvp": 46, "gre": 47,
    "esp": 50, "ah": 51, "icmp6": 58, "icmpv6": 58, "no-next-header": 59,
    "dstopts": 60, "ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132,
}

DSCP_NAMES: dict[str, int] = {
    "be": 0, "ef": 46,
    "af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22,
    "af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38,
    **{f"cs{i}": 8 * i for i in range(8)},
}

PRECEDENCE_NAMES: dict[str, int] = {
    "routine": 0, "priority": 1, "immediate": 2, "flash": 3, "flash-override": 4,
    "critical-ecp": 5, "internet-control": 6, "net-control": 7,
}

ICMP4_TYPES: dict[str, int] = {
    "echo-reply": 0, "unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicit": 10,
    "time-exceeded": 11, "parameter-problem": 12, "timestamp": 13,
    "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "mask-request": 17, "mask-reply": 18,
}

ICMP6_TYPES: dict[str, int] = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
    "membership-query": 130, "membership-report": 131,
    "membership-termination": 132, "router-solicit": 133,
    "router-advertisement": 134, "neighbor-solicit": 135,
    "neighbor-advertisement": 136, "redirect": 137, "router-renumbering": 138,
    "node-information-request": 139, "node-information-reply": 140,
    "inverse-neighbor-discovery-solicitation": 141,
    "inverse-neighbor-discovery-advertisement": 142, "mldv2-report": 143,
    "home-agent-address-discovery-request": 144,
    "home-agent-address-discovery-reply": 145,
    "mobile-prefix-solicitation": 146, "mobile-prefix-advertisement": 147,
    "certificate-path-solicitation": 148, "certificate-path-advertisement": 149,
    "private-experimentation-100": 100, "private-experimentation-101": 101,
    "private-experimentation-200": 200, "private-experimentation-201": 201,
}

ICMP4_CODES: dict[str, int] = {
    "network-unreachable": 0, "host-unreachable": 1, "protocol-unreachable": 2,
    "port-unreachable": 3, "fragmentation-needed": 4, "source-route-failed": 5,
    "destination-network-unknown": 6, "destination-host-unknown": 7,
    "source-host-isolated": 8, "destination-network-prohibited": 9,
    "destination-host-prohibited": 10, "network-unreachable-for-tos": 11,
    "host-unreachable-for-tos": 12, "communication-prohibited-by-filtering": 13,
    "host-precedence-violation": 14, "precedence-cutoff-in-effect": 15,
    "redirect-for-network": 0, "redirect-for-host": 1,
    "redirect-for-tos-and-net": 2, "redirect-for-tos-and-host": 3,
    "ttl-eq-zero-during-transit": 0, "ttl-eq-zero-during-reassembly": 1,
    "ip-header-bad": 0, "required-option-missing": 1,
}

ICMP6_CODES: dict[str, int] = {
    "no-route-to-destination": 0, "administratively-prohibited": 1,
    "beyond-scope-of-source-address": 2, "address-unreachable": 3,
    "port-unreachable": 4, "source-address-failed-policy": 5,
    "reject-route-to-destination": 6, "ttl-eq-zero-during-transit": 0,
    "ttl-eq-zero-during-reassembly": 1, "ip6-header-bad": 0,
    "unrecognized-next-header": 1, "unrecognized-option": 2,
}

REJECT_REASONS = frozenset({
    "administratively-prohibited", "bad-host-tos", "bad-network-tos",
    "fragmentation-needed", "host-prohibited", "host-unknown", "host-unreachable",
    "network-prohibited", "network-unknown", "network-unreachable",
    "port-unreachable", "precedence-cutoff", "precedence-violation",
    "protocol-unreachable", "source-host-isolated", "source-route-failed",
    "tcp-reset", "address-unreachable", "beyond-scope", "no-route",
})


# --------------------------------------------------------------------------
# numbers, names, ranges -> inclusive intervals
# --------------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


@dataclass(frozen=True)
class Vocabulary:
    """How one kind of value is written: numbers up to ``maximum``, names, ranges."""

    expected: str  # "a port number 0-65535, a service name like 'http', or a range 'a-b'"
    maximum: int
    names: dict[str, int]
    ranges: bool = True

    def parse(self, value) -> tuple[int, int]:
        """One value -> inclusive ``(lo, hi)``; raises :class:`ValueProblem`."""
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueProblem(f"expected {self.expected}; got {value!r}")
        if isinstance(value, int):
            if 0 <= value <= self.maximum:
                return value, value
            raise ValueProblem(f"expected {self.expected}; got {value!r} (out of range 0-{self.maximum})")
        text = value.strip().lower()
        if text in self.names:
            v = self.names[text]
            return v, v
        if text.isdigit():
            v = int(text)
            if v <= self.maximum:
                return v, v
            raise ValueProblem(f"expected {self.expected}; got {value!r} (out of range 0-{self.maximum})")
        m = _RANGE.match(text)
        if m and self.ranges:
            a, b = int(m.group(1)), int(m.group(2))
            if a > b or b > self.maximum:
                raise ValueProblem(
                    f"expected {self.expected}; got {value!r} (a range needs a <= b <= {self.maximum})")
            return a, b
        raise ValueProblem(f"expected {self.expected}; got {value!r}" + suggest(text, self.names))

    def table(self, values: list) -> np.ndarray:
        """Bool lookup table of ``maximum + 1`` entries, True for every listed value."""
        t = np.zeros(self.maximum + 1, dtype=bool)
        for v in values:
            a, b = self.parse(v)
            t[a : b + 1] = True
        return t


PORTS = Vocabulary("a port number 0-65535, a service name like 'http', or a range 'a-b'", 65535, PORT_NAMES)
PROTOCOLS = Vocabulary("a protocol number 0-255, a name like 'tcp', or a range 'a-b'", 255, PROTOCOL_NAMES)
DSCPS = Vocabulary("a DSCP value 0-63 or a name like 'ef', 'af11', 'cs6', 'be'", 63, DSCP_NAMES, ranges=False)
PRECEDENCES = Vocabulary("an IP precedence 0-7 or a name like 'net-control'", 7, PRECEDENCE_NAMES, ranges=False)
ICMP4_TYPE = Vocabulary("an ICMP type 0-255, a name like 'echo-request', or a range 'a-b'", 255, ICMP4_TYPES)
ICMP6_TYPE = Vocabulary("an ICMPv6 type 0-255, a name like 'echo-request', or a range 'a-b'", 255, ICMP6_TYPES)
ICMP4_CODE = Vocabulary("an ICMP code 0-255, a name like 'port-unreachable', or a range 'a-b'", 255, ICMP4_CODES)
ICMP6_CODE = Vocabulary("an ICMPv6 code 0-255, a name like 'port-unreachable', or a range 'a-b'", 255, ICMP6_CODES)
TTLS = Vocabulary("a TTL 0-255 or a range 'a-b'", 255, {})
HOP_LIMITS = Vocabulary("a hop limit 0-255 or a range 'a-b'", 255, {})
LENGTHS = Vocabulary("a packet length 0-65535 or a range 'a-b'", 65535, {})
FRAG_OFFSETS = Vocabulary("a fragment offset 0-8191 (8-byte units) or a range 'a-b'", 8191, {})


# --------------------------------------------------------------------------
# tcp-flags expressions
# --------------------------------------------------------------------------

TCP_FLAG_BITS: dict[str, int] = {
    "fin": 0x01, "syn": 0x02, "rst": 0x04, "push": 0x08, "psh": 0x08,
    "ack": 0x10, "urgent": 0x20, "urg": 0x20, "ece": 0x40, "cwr": 0x80,
}
_FLAG_KEYWORDS = ("tcp-initial", "tcp-established")
_TOKEN = re.compile(r"\s*(?:(\()|(\))|(!)|([&+])|([|,])|(0x[0-9a-fA-F]+|\d+)|([A-Za-z][A-Za-z-]*))")

TCP_FLAGS_EXPECTED = (
    "a tcp-flags expression over fin, syn, rst, push, ack, urgent, ece, cwr "
    "(or tcp-initial, tcp-established, or a number like 0x12) joined with "
    "'&' (and), '|' (or), '!' (not) and parentheses, e.g. 'syn & !ack'"
)

_ALL = np.arange(256, dtype=np.int64)


def tcp_flags_table(expr) -> np.ndarray:
    """Compile a Junos tcp-flags expression into a 256-entry bool table.

    Grammar (precedence ``!`` > ``&`` > ``|``)::

        or   := and (('|' | ',') and)*
        and  := not (('&' | '+') not)*
        not  := '!' not | atom
        atom := FLAG | NUMBER | 'tcp-initial' | 'tcp-established' | '(' or ')'

    A bare flag is true when that bit is set; a number is true when *all* its
    bits are set (``0x12`` = syn and ack).  ``tcp-initial`` is ``syn & !ack``
    and ``tcp-established`` is ``ack | rst``, as in Junos.
    """
    if isinstance(expr, bool) or not isinstance(expr, (str, int)):
        raise ValueProblem(f"expected {TCP_FLAGS_EXPECTED}; got {expr!r}")
    text = str(expr)
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueProblem(
                f"expected {TCP_FLAGS_EXPECTED}; got {text!r} (cannot read {text[pos:].strip()!r})")
        pos = m.end()
        kind = ("(", ")", "!", "&", "|", "num", "word")[m.lastindex - 1]
        tokens.append((kind, m.group(m.lastindex)))
    if not tokens:
        raise ValueProblem(f"expected {TCP_FLAGS_EXPECTED}; got an empty expression")

    i = 0

    def fail(why: str):
        raise ValueProblem(f"expected {TCP_FLAGS_EXPECTED}; got {text!r} ({why})")

    def peek():
        return tokens[i][0] if i < len(tokens) else None

    def parse_or():
        nonlocal i
        v = parse_and()
        while peek() == "|":
            i += 1
            v = v | parse_and()
        return v

    def parse_and():
        nonlocal i
        v = parse_not()
        while peek() == "&":
            i += 1
            v = v & parse_not()
        return v

    def parse_not():
        nonlocal i
        if peek() == "!":
            i += 1
            return ~parse_not()
        return parse_atom()

    def parse_atom():
        nonlocal i
        if i >= len(tokens):
            fail("expression ends early")
        kind, val = tokens[i]
        i += 1
        if kind == "(":
            v = parse_or()
            if peek() != ")":
                fail("missing ')'")
            i += 1
            return v
        if kind == "num":
            bits = int(val, 0)
            if bits > 0xFF:
                fail(f"{val} is more than 8 bits")
            return (_ALL & bits) == bits
        if kind == "word":
            w = val.lower()
            if w in TCP_FLAG_BITS:
                return (_ALL & TCP_FLAG_BITS[w]) != 0
            if w == "tcp-initial":
                return ((_ALL & 0x02) != 0) & ((_ALL & 0x10) == 0)
            if w == "tcp-established":
                return (_ALL & 0x14) != 0
            fail(f"unknown flag {val!r}" + suggest(w, list(TCP_FLAG_BITS) + list(_FLAG_KEYWORDS)))
        fail(f"unexpected {val!r}")

    table = parse_or()
    if i != len(tokens):
        fail(f"unexpected {tokens[i][1]!r}")
    return np.asarray(table, dtype=bool)


# --------------------------------------------------------------------------
# prefixes
# --------------------------------------------------------------------------

V4_EXPECTED = "an IPv4 prefix like '10.0.0.0/8' (optionally followed by ' except')"
V6_EXPECTED = "an IPv6 prefix like '2001:db8::/32' (optionally followed by ' except')"
MAPPED_BASE = 0xFFFF << 32  # ::ffff:0:0/96 as a 128-bit integer


def parse_prefix_entry(value, family: str) -> tuple[int, int, bool]:
    """``"10.1.0.0/16 except"`` -> ``(start, end, except)`` as 128-bit ints.

    IPv4 prefixes are placed in the IPv4-mapped range ``::ffff:0:0/96``, the
    way :class:`flowplane.batch.PacketBatch` stores IPv4 addresses.  Host bits
    are cleared (``10.1.2.3/8`` means ``10.0.0.0/8``), as Junos does.
    """
    expected = V4_EXPECTED if family == "inet" else V6_EXPECTED
    if not isinstance(value, str):
        raise ValueProblem(f"expected {expected}; got {value!r}")
    parts = value.split()
    exc = False
    if len(parts) == 2 and parts[1].lower() == "except":
        exc = True
    elif len(parts) != 1:
        raise ValueProblem(f"expected {expected}; got {value!r}")
    try:
        net = ipaddress.ip_network(parts[0], strict=False)
    except ValueError:
        raise ValueProblem(f"expected {expected}; got {value!r}") from None
    want = 4 if family == "inet" else 6
    if net.version != want:
        other = "IPv4" if net.version == 4 else "IPv6"
        raise ValueProblem(f"expected {expected}; got {value!r} (an {other} prefix in family {family})")
    start, end = prefix_range(net)
    return start, end, exc


def prefix_range(net) -> tuple[int, int]:
    """Inclusive 128-bit range of an :mod:`ipaddress` network (IPv4 mapped)."""
    base = int(net.network_address)
    size = net.num_addresses
    if net.version == 4:
        base |= MAPPED_BASE
    return base, base + size - 1


def lpm_intervals(entries: list[tuple[int, int, bool]]) -> list[tuple[int, int]]:
    """Longest-prefix-match semantics of a list with ``except`` entries.

    An address matches when the most specific entry containing it is not an
    ``except`` entry (Junos).  Returns the matching set as sorted, disjoint,
    non-adjacent inclusive intervals.  CIDR blocks nest or are disjoint, so
    one sweep with a stack does it.  A prefix listed both plain and with
    ``except`` counts as ``except``.
    """
    dedup: dict[tuple[int, int], bool] = {}
    for s, e, exc in entries:
        dedup[(s, e)] = dedup.get((s, e), False) or exc
    # sort by start, then wider first (end descending)
    items = sorted(((s, e, not exc) for (s, e), exc in dedup.items()), key=lambda t: (t[0], -t[1]))
    out: list[list[int]] = []

    def emit(a: int, b: int, val: bool) -> None:
        if a > b or not val:
            return
        if out and out[-1][1] + 1 == a:
            out[-1][1] = b
        else:
            out.append([a, b])

    stack: list[tuple[int, bool]] = []
    pos = 0
    for s, e, val in items:
        while stack and stack[-1][0] < s:
            end, v = stack.pop()
            emit(pos, end, v)
            pos = end + 1
        emit(pos, s - 1, stack[-1][1] if stack else False)
        pos = s
        stack.append((e, val))
    while stack:
        end, v = stack.pop()
        emit(pos, end, v)
        pos = end + 1
    return [(a, b) for a, b in out]


def intervals_to_cidrs(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive intervals -> minimal list of ``(base, prefix_len)`` 128-bit CIDR blocks."""
    out = []
    for a, b in intervals:
        while a <= b:
            # largest block aligned at a that fits in [a, b]
            size = (a & -a) if a else 1 << 128
            while size > b - a + 1:
                size >>= 1
            out.append((a, 128 - size.bit_length() + 1))
            a += size
    return out

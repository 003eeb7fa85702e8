"""TWAMP wire formats (RFC 5357; control messages from OWAMP, RFC 4656).  Pure functions, ``struct`` only.

All integers are big-endian.  Sizes are exact (checked against twampd on the wire):

=====================  =====  ==========
message                bytes  direction
=====================  =====  ==========
Server Greeting          64   S -> C
Set-Up-Response         164   C -> S
Server-Start             48   S -> C
Request-TW-Session      112   C -> S
Accept-Session           48   S -> C
Start-Sessions           32   C -> S
Start-Ack                32   S -> C
Stop-Sessions            32   C -> S
=====================  =====  ==========

TWAMP-Test: unauthenticated sender 14 + padding, reflector 41 + padding;
authenticated/encrypted sender 48 + padding, reflector 112 + padding.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from dataclasses import dataclass

# -- modes, commands, accept codes ------------------------------------------------------

MODE_UNAUTHENTICATED = 1
MODE_AUTHENTICATED = 2
MODE_ENCRYPTED = 4
MODE_NAMES = {MODE_UNAUTHENTICATED: "unauthenticated", MODE_AUTHENTICATED: "authenticated",
              MODE_ENCRYPTED: "encrypted"}

CMD_START_SESSIONS = 2
CMD_STOP_SESSIONS = 3
CMD_REQUEST_TW_SESSION = 5

ACCEPT_OK = 0
ACCEPT_FAILURE = 1
ACCEPT_INTERNAL_ERROR = 2
ACCEPT_NOT_SUPPORTED = 3
ACCEPT_PERMANENT_LIMIT = 4
ACCEPT_TEMPORARY_LIMIT = 5
ACCEPT_NAMES = {0: "ok", 1: "failure", 2: "internal error", 3: "not supported",
                4: "permanent resource limit", 5: "temporary resource limit"}

GREETING_SIZE = 64
SETUP_RESPONSE_SIZE = 164
SERVER_START_SIZE = 48
REQUEST_TW_SESSION_SIZE = 112
ACCEPT_SESSION_SIZE = 48
START_SESSIONS_SIZE = 32
START_ACK_SIZE = 32
STOP_SESSIONS_SIZE = 32
COMMAND_SIZES = {CMD_REQUEST_TW_SESSION: REQUEST_TW_SESSION_SIZE, CMD_START_SESSIONS: START_SESSIONS_SIZE,
                 CMD_STOP_SESSIONS: STOP_SESSIONS_SIZE}

SENDER_UNAUTH_SIZE = 14
REFLECTOR_UNAUTH_SIZE = 41
SENDER_AUTH_SIZE = 48
REFLECTOR_AUTH_SIZE = 112
# RFC 5357 §4.2.1: the reflector shortens the sender's padding by this much to keep sizes symmetric
PADDING_TRUNCATION = {False: REFLECTOR_UNAUTH_SIZE - SENDER_UNAUTH_SIZE, True: REFLECTOR_AUTH_SIZE - SENDER_AUTH_SIZE}

ZERO16 = bytes(16)


class WireError(ValueError):
    """A message of the wrong size or with impossible fields."""


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise WireError(f"{what}: expected {n} bytes, got {len(data)}")


# -- NTP timestamps (RFC 4656 §4.1.2), error estimate -------------------------------------

NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
_ERA = 1 << 32


def ns_to_ntp(ns: int) -> int:
    """Unix time in ns -> 64-bit NTP timestamp (seconds since 1900 in the high 32 bits, era wraps)."""
    sec, rem = divmod(ns, 1_000_000_000)
    frac = (rem << 32) // 1_000_000_000
    return ((sec + NTP_UNIX_OFFSET) % _ERA) << 32 | frac


def ntp_to_ns(ntp: int, *, pivot_ns: int | None = None) -> int:
    """64-bit NTP timestamp -> Unix ns, picking the NTP era closest to *pivot_ns* (default: now),
    so timestamps after the 2036 rollover (seconds field wrapped to small values) come out right."""
    sec, frac = ntp >> 32, ntp & 0xFFFFFFFF
    pivot = (pivot_ns if pivot_ns is not None else time.time_ns()) // 1_000_000_000 + NTP_UNIX_OFFSET
    era = pivot // _ERA
    best = min((era - 1, era, era + 1), key=lambda e: abs(e * _ERA + sec - pivot))
    unix = best * _ERA + sec - NTP_UNIX_OFFSET
    return unix * 1_000_000_000 + ((frac * 1_000_000_000 + (1 << 31)) >> 32)


def now_ntp() -> int:
    return ns_to_ntp(time.time_ns())


@dataclass(frozen=True)
class ErrorEstimate:
    """S (synchronised to UTC), Z (RFC 8186 timestamp format), Scale (6 bits), Multiplier (8 bits)."""

    synced: bool = False
    z: int = 0
    scale: int = 0
    multiplier: int = 1

    def pack(self) -> int:
        return (int(self.synced) << 15) | ((self.z & 1) << 14) | ((self.scale & 0x3F) << 8) | (self.multiplier & 0xFF)

    @classmethod
    def unpack(cls, v: int) -> ErrorEstimate:
        return cls(bool(v >> 15), (v >> 14) & 1, (v >> 8) & 0x3F, v & 0xFF)

    @property
    def seconds(self) -> float | None:
        """Error in seconds: Multiplier * 2^(Scale-32); None when the multiplier is 0 (invalid)."""
        return None if self.multiplier == 0 else self.multiplier * 2.0 ** (self.scale - 32)

    @classmethod
    def for_seconds(cls, err: float, synced: bool = False) -> ErrorEstimate:
        """The smallest Scale whose multiplier (<= 255) covers *err* seconds."""
        for scale in range(64):
            mult = -(-err // 2.0 ** (scale - 32))
            if mult <= 255:
                return cls(synced, 0, scale, max(1, int(mult)))
        return cls(synced, 0, 63, 255)


# An unsynchronised clock good to about a millisecond: 1 ms -> scale 22, multiplier 5 (~1.19 ms)
DEFAULT_ERROR_ESTIMATE = ErrorEstimate.for_seconds(0.001).pack()


# -- addresses ------------------------------------------------------------------------------


def pack_addr(addr: str | None) -> tuple[int, bytes]:
    """(IPVN, 16-byte field): IPv4 in the first 4 bytes; '' / None / 0.0.0.0 is all zero (use the control peer)."""
    if not addr:
        return 4, ZERO16
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return 4, ip.packed + bytes(12)
    return 6, ip.packed


def unpack_addr(ipvn: int, raw: bytes) -> str | None:
    """The address in a 16-byte field, None when it is all zero."""
    if raw == ZERO16:
        return None
    if ipvn == 6:
        return str(ipaddress.IPv6Address(raw))
    return str(ipaddress.IPv4Address(raw[:4]))


# -- control messages -------------------------------------------------------------------------


@dataclass
class ServerGreeting:
    modes: int
    challenge: bytes = ZERO16
    salt: bytes = ZERO16
    count: int = 1024

    FMT = ">12sI16s16sI12s"

    def pack(self) -> bytes:
        return struct.pack(self.FMT, bytes(12), self.modes, self.challenge, self.salt, self.count, bytes(12))

    @classmethod
    def unpack(cls, data: bytes) -> ServerGreeting:
        _need(data, GREETING_SIZE, "Server Greeting")
        _, modes, challenge, salt, count, _ = struct.unpack(cls.FMT, data)
        return cls(modes, challenge, salt, count)


@dataclass
class SetUpResponse:
    mode: int
    key_id: str = ""
    token: bytes = bytes(64)
    client_iv: bytes = ZERO16

    FMT = ">I80s64s16s"

    def pack(self) -> bytes:
        kid = self.key_id.encode("utf-8")
        if len(kid) > 80:
            raise WireError("KeyID is longer than 80 bytes")
        return struct.pack(self.FMT, self.mode, kid, self.token, self.client_iv)

    @classmethod
    def unpack(cls, data: bytes) -> SetUpResponse:
        _need(data, SETUP_RESPONSE_SIZE, "Set-Up-Response")
        mode, kid, token, iv = struct.unpack(cls.FMT, data)
        return cls(mode, kid.rstrip(b"\0").decode("utf-8", "replace"), token, iv)


@dataclass
class ServerStart:
    accept: int
    server_iv: bytes = ZERO16
    start_time: int = 0  # NTP

    FMT = ">15sB16sQ8s"

    def pack(self) -> bytes:
        return struct.pack(self.FMT, bytes(15), self.accept, self.server_iv, self.start_time, bytes(8))

    @classmethod
    def unpack(cls, data: bytes) -> ServerStart:
        _need(data, SERVER_START_SIZE, "Server-Start")
        _, accept, iv, start, _ = struct.unpack(cls.FMT, data)
        return cls(accept, iv, start)


@dataclass
class RequestTWSession:
    sender_port: int
    receiver_port: int
    sender_address: str | None = None
    receiver_address: str | None = None
    padding_length: int = 0
    start_time: int = 0  # NTP
    timeout: int = 0  # NTP-format duration (seconds << 32)
    type_p: int = 0  # DSCP << 24
    ipvn: int = 4
    conf_sender: int = 0
    conf_receiver: int = 0
    num_slots: int = 0
    num_packets: int = 0
    sid: bytes = ZERO16
    hmac: bytes = ZERO16

    FMT = ">BBBBIIHH16s16s16sIQQI8s16s"

    def pack(self) -> bytes:
        v1, s = pack_addr(self.sender_address)
        v2, r = pack_addr(self.receiver_address)
        ipvn = 6 if 6 in (v1, v2) or self.ipvn == 6 else 4
        return struct.pack(self.FMT, CMD_REQUEST_TW_SESSION, ipvn & 0x0F, self.conf_sender, self.conf_receiver,
                           self.num_slots, self.num_packets, self.sender_port, self.receiver_port, s, r, self.sid,
                           self.padding_length, self.start_time, self.timeout, self.type_p, bytes(8), self.hmac)

    @classmethod
    def unpack(cls, data: bytes) -> RequestTWSession:
        _need(data, REQUEST_TW_SESSION_SIZE, "Request-TW-Session")
        (cmd, ipvn, cs, cr, slots, pkts, sp, rp, s, r, sid, pad, start, timeout, typep, _mbz,
         hmac) = struct.unpack(cls.FMT, data)
        if cmd != CMD_REQUEST_TW_SESSION:
            raise WireError(f"Request-TW-Session: command {cmd}, expected {CMD_REQUEST_TW_SESSION}")
        ipvn &= 0x0F
        return cls(sp, rp, unpack_addr(ipvn, s), unpack_addr(ipvn, r), pad, start, timeout, typep, ipvn, cs, cr,
                   slots, pkts, sid, hmac)

    @property
    def dscp(self) -> int:
        return (self.type_p >> 24) & 0x3F


@dataclass
class AcceptSession:
    accept: int
    port: int = 0
    sid: bytes = ZERO16
    reflected_octets: int = 0  # RFC 6038 (only with mode bit 32)
    server_octets: int = 0
    hmac: bytes = ZERO16

    FMT = ">BBH16sHH8s16s"

    def pack(self) -> bytes:
        return struct.pack(self.FMT, self.accept, 0, self.port, self.sid, self.reflected_octets, self.server_octets,
                           bytes(8), self.hmac)

    @classmethod
    def unpack(cls, data: bytes) -> AcceptSession:
        _need(data, ACCEPT_SESSION_SIZE, "Accept-Session")
        accept, _, port, sid, ro, so, _, hmac = struct.unpack(cls.FMT, data)
        return cls(accept, port, sid, ro, so, hmac)


@dataclass
class StartSessions:
    hmac: bytes = ZERO16

    def pack(self) -> bytes:
        return struct.pack(">B15s16s", CMD_START_SESSIONS, bytes(15), self.hmac)

    @classmethod
    def unpack(cls, data: bytes) -> StartSessions:
        _need(data, START_SESSIONS_SIZE, "Start-Sessions")
        cmd, _, hmac = struct.unpack(">B15s16s", data)
        if cmd != CMD_START_SESSIONS:
            raise WireError(f"Start-Sessions: command {cmd}, expected {CMD_START_SESSIONS}")
        return cls(hmac)


@dataclass
class StartAck:
    accept: int = ACCEPT_OK
    hmac: bytes = ZERO16

    def pack(self) -> bytes:
        return struct.pack(">B15s16s", self.accept, bytes(15), self.hmac)

    @classmethod
    def unpack(cls, data: bytes) -> StartAck:
        _need(data, START_ACK_SIZE, "Start-Ack")
        accept, _, hmac = struct.unpack(">B15s16s", data)
        return cls(accept, hmac)


@dataclass
class StopSessions:
    accept: int = ACCEPT_OK
    num_sessions: int = 1
    hmac: bytes = ZERO16

    FMT = ">BBHI8s16s"

    def pack(self) -> bytes:
        return struct.pack(self.FMT, CMD_STOP_SESSIONS, self.accept, 0, self.num_sessions, bytes(8), self.hmac)

    @classmethod
    def unpack(cls, data: bytes) -> StopSessions:
        _need(data, STOP_SESSIONS_SIZE, "Stop-Sessions")
        cmd, accept, _, n, _, hmac = struct.unpack(cls.FMT, data)
        if cmd != CMD_STOP_SESSIONS:
            raise WireError(f"Stop-Sessions: command {cmd}, expected {CMD_STOP_SESSIONS}")
        return cls(accept, n, hmac)


# -- TWAMP-Test packets -----------------------------------------------------------------------


@dataclass
class SenderPacket:
    seq: int
    timestamp: int  # NTP
    error_estimate: int = DEFAULT_ERROR_ESTIMATE
    padding: bytes = b""
    hmac: bytes = ZERO16  # authenticated/encrypted only


@dataclass
class ReflectorPacket:
    seq: int
    timestamp: int  # T3, NTP
    error_estimate: int
    receive_timestamp: int  # T2, NTP
    sender_seq: int
    sender_timestamp: int  # T1, NTP
    sender_error_estimate: int
    sender_ttl: int = 0
    padding: bytes = b""
    hmac: bytes = ZERO16


def pack_sender(p: SenderPacket, authenticated: bool = False) -> bytes:
    if authenticated:
        return struct.pack(">I12sQH6s16s", p.seq, bytes(12), p.timestamp, p.error_estimate, bytes(6),
                           p.hmac) + p.padding
    return struct.pack(">IQH", p.seq, p.timestamp, p.error_estimate) + p.padding


def unpack_sender(data: bytes, authenticated: bool = False) -> SenderPacket:
    if authenticated:
        if len(data) < SENDER_AUTH_SIZE:
            raise WireError(f"TWAMP-Test sender (authenticated): {len(data)} bytes, need at least 48")
        seq, _, ts, err, _, hmac = struct.unpack_from(">I12sQH6s16s", data)
        return SenderPacket(seq, ts, err, bytes(data[48:]), hmac)
    if len(data) < SENDER_UNAUTH_SIZE:
        raise WireError(f"TWAMP-Test sender: {len(data)} bytes, need at least 14")
    seq, ts, err = struct.unpack_from(">IQH", data)
    return SenderPacket(seq, ts, err, bytes(data[14:]))


def pack_reflector(p: ReflectorPacket, authenticated: bool = False) -> bytes:
    if authenticated:
        return struct.pack(">I12sQH6sQ8sI12sQH6sB15s16s", p.seq, bytes(12), p.timestamp, p.error_estimate, bytes(6),
                           p.receive_timestamp, bytes(8), p.sender_seq, bytes(12), p.sender_timestamp,
                           p.sender_error_estimate, bytes(6), p.sender_ttl, bytes(15), p.hmac) + p.padding
    return struct.pack(">IQHHQIQHHB", p.seq, p.timestamp, p.error_estimate, 0, p.receive_timestamp, p.sender_seq,
                       p.sender_timestamp, p.sender_error_estimate, 0, p.sender_ttl) + p.padding


def unpack_reflector(data: bytes, authenticated: bool = False) -> ReflectorPacket:
    if authenticated:
        if len(data) < REFLECTOR_AUTH_SIZE:
            raise WireError(f"TWAMP-Test reflector (authenticated): {len(data)} bytes, need at least 112")
        (seq, _, ts, err, _, rts, _, sseq, _, sts, serr, _, ttl, _, hmac) = struct.unpack_from(
            ">I12sQH6sQ8sI12sQH6sB15s16s", data)
        return ReflectorPacket(seq, ts, err, rts, sseq, sts, serr, ttl, bytes(data[112:]), hmac)
    if len(data) < REFLECTOR_UNAUTH_SIZE - 1:  # 40: tolerate a reply without the TTL byte
        if len(data) >= 38:  # twampy's Light responder: 38 bytes, the 41-byte layout without MBZ and TTL
            seq, ts, err, _, rts, sseq, sts, serr = struct.unpack_from(">IQHHQIQH", data)
            return ReflectorPacket(seq, ts, err, rts, sseq, sts, serr, 0, b"")
        raise WireError(f"TWAMP-Test reflector: {len(data)} bytes, need at least 41")
    seq, ts, err, _, rts, sseq, sts, serr, _ = struct.unpack_from(">IQHHQIQHH", data)
    ttl = data[40] if len(data) > 40 else 0
    return ReflectorPacket(seq, ts, err, rts, sseq, sts, serr, ttl, bytes(data[41:]))


def reflector_padding(sender_len: int, authenticated: bool, symmetric: bool = True) -> int:
    """Padding octets of the reply to a sender packet of *sender_len* bytes (RFC 5357 §4.2.1: shorten
    the sender's padding so both directions have the same size)."""
    base = SENDER_AUTH_SIZE if authenticated else SENDER_UNAUTH_SIZE
    pad = max(0, sender_len - base)
    return max(0, pad - PADDING_TRUNCATION[authenticated]) if symmetric else pad

"""Packet formats: ICMP/ICMPv6 echo and ICMP timestamp messages, the RPM UDP/TCP probe header, socket cmsgs.

The RPM probe header (udp-ping, udp-ping-timestamp, tcp-ping) is the 40-octet big-endian layout a public
third-party "Juniper RPM compliant" client used (Juniper publishes none, so interoperation with a Junos
probe-server is not claimed)::

    0      t1_sec   t1_usec   t4_sec   t4_usec      uint32 each: client send / client receive
    16     version (1) uint16   magic (0x9610) uint16
    20     reserved uint32      flowplane: the probe's sequence number
    24     t2_sec   t2_usec   t3_sec   t3_usec      uint32 each: server receive / server send

The client sends t2/t3 as zero; the probe server fills them (kernel receive time, send time) and returns the
datagram, padding included.  Anything else that reaches the probe server is echoed unchanged (RFC 862).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from flowplane.api import inet_checksum

# -- ICMP -----------------------------------------------------------------------------------------------------
ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
ICMP_TIMESTAMP, ICMP_TIMESTAMP_REPLY = 13, 14
ICMP6_UNREACH, ICMP6_TIME_EXCEEDED, ICMP6_ECHO, ICMP6_ECHO_REPLY = 1, 3, 128, 129
ICMP_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
ICMP_TS = struct.Struct("!BBHHHIII")  # ... originate, receive, transmit (ms since midnight UT)
MS_PER_DAY = 86_400_000


def icmp_echo(ident: int, seq: int, payload: bytes, v6: bool = False) -> bytes:
    """An echo request; the ICMPv6 checksum is left to the kernel (it covers a pseudo-header)."""
    kind = ICMP6_ECHO if v6 else ICMP_ECHO
    head = ICMP_HEADER.pack(kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if v6:
        return head + payload
    return ICMP_HEADER.pack(kind, 0, inet_checksum(head + payload), ident & 0xFFFF, seq & 0xFFFF) + payload


def ms_since_midnight(ns: int) -> int:
    """RFC 792 timestamp: milliseconds since midnight UT."""
    return (ns // 1_000_000) % MS_PER_DAY


def icmp_timestamp(ident: int, seq: int, originate_ms: int) -> bytes:
    body = ICMP_TS.pack(ICMP_TIMESTAMP, 0, 0, ident & 0xFFFF, seq & 0xFFFF, originate_ms, 0, 0)
    return ICMP_TS.pack(ICMP_TIMESTAMP, 0, inet_checksum(body), ident & 0xFFFF, seq & 0xFFFF, originate_ms, 0, 0)


@dataclass
class IcmpMessage:
    """A received ICMP message, reduced to what probes match on."""

    kind: int
    code: int
    ident: int
    seq: int
    payload: bytes  # after the 8-octet header
    error: bool = False  # an unreachable / time-exceeded about one of our requests (ident/seq are the request's)
    timestamps: tuple[int, int, int] | None = None  # originate, receive, transmit (timestamp replies)


def parse_icmp(data: bytes, v6: bool, has_ip_header: bool) -> IcmpMessage | None:
    """An ICMP(v6) message from a raw socket (IPv4: behind its IP header) or a ping socket (no header)."""
    if has_ip_header and not v6:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 8:
        return None
    kind, code, _, ident, seq = ICMP_HEADER.unpack_from(data)
    unreach = (ICMP6_UNREACH, ICMP6_TIME_EXCEEDED) if v6 else (ICMP_UNREACH, ICMP_TIME_EXCEEDED)
    if kind in unreach:  # the offending datagram follows: our request's identifier and sequence are in it
        inner = data[8:]
        if v6:
            if len(inner) < 48 or inner[6] != 58:
                return None
            inner = inner[40:]
        else:
            if len(inner) < 28 or inner[0] >> 4 != 4 or inner[9] != 1:
                return None
            inner = inner[(inner[0] & 0x0F) * 4:]
        if len(inner) < 8:
            return None
        _, _, _, ident, seq = ICMP_HEADER.unpack_from(inner)
        return IcmpMessage(kind, code, ident, seq, b"", error=True)
    if kind == ICMP_TIMESTAMP_REPLY and not v6:
        if len(data) < ICMP_TS.size:
            return None
        _, _, _, ident, seq, o, r, t = ICMP_TS.unpack_from(data)
        return IcmpMessage(kind, code, ident, seq, b"", timestamps=(o, r, t))
    return IcmpMessage(kind, code, ident, seq, data[8:])


# -- the RPM probe header -------------------------------------------------------------------------------------
RPM_HEADER = struct.Struct("!IIIIHHIIIII")
RPM_SIZE = RPM_HEADER.size  # 40
RPM_VERSION = 1
RPM_MAGIC = 0x9610
_MAGIC_AT = 16


def _split(ns: int) -> tuple[int, int]:
    return (ns // 1_000_000_000) & 0xFFFFFFFF, (ns // 1000) % 1_000_000


def _join(sec: int, usec: int) -> int:
    return sec * 1_000_000_000 + usec * 1000


@dataclass
class RpmHeader:
    seq: int
    t1: int  # ns since the epoch, µs resolution on the wire
    t2: int = 0
    t3: int = 0
    t4: int = 0

    def pack(self) -> bytes:
        return RPM_HEADER.pack(*_split(self.t1), *_split(self.t4), RPM_VERSION, RPM_MAGIC, self.seq & 0xFFFFFFFF,
                               *_split(self.t2), *_split(self.t3))


def rpm_probe(seq: int, t1_ns: int, padding: bytes) -> bytes:
    """A client probe: header (t2/t3 zero) and padding up to ``data-size``."""
    return RpmHeader(seq, t1_ns).pack() + padding[RPM_SIZE:]


def is_rpm(data: bytes) -> bool:
    return len(data) >= RPM_SIZE and data[_MAGIC_AT:_MAGIC_AT + 4] == struct.pack("!HH", RPM_VERSION, RPM_MAGIC)


def parse_rpm(data: bytes) -> RpmHeader | None:
    if not is_rpm(data):
        return None
    t1s, t1u, t4s, t4u, _, _, seq, t2s, t2u, t3s, t3u = RPM_HEADER.unpack_from(data)
    if max(t1u, t2u, t3u, t4u) >= 1_000_000:
        return None
    return RpmHeader(seq, _join(t1s, t1u), _join(t2s, t2u), _join(t3s, t3u), _join(t4s, t4u))


def stamp_reply(data: bytes, t2_ns: int, t3_ns: int | None = None) -> bytes:
    """The probe server's answer: the request with t2 (receive) and t3 (send, default now) filled in."""
    t3 = time.time_ns() if t3_ns is None else t3_ns
    return data[:24] + struct.pack("!IIII", *_split(t2_ns), *_split(t3)) + data[RPM_SIZE:]


# -- socket options Python 3.11 does not name (values from the Linux headers) ----------------------------------
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_TX_SCHED = 1 << 8
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
# kernel send times on the error queue, keyed by a send counter.  TX_SCHED stamps the packet as it enters the
# device's queueing layer (before the qdisc): time a shaped egress queue holds it counts, as it does for
# ping; TX_SOFTWARE (at the driver) would hide it.
TX_TIMESTAMPING = (SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID
                   | SOF_TIMESTAMPING_OPT_TSONLY)
SO_EE_ORIGIN_TIMESTAMPING = 4
IP_RECVERR = 11
IPV6_RECVERR = 25
TIMESPEC = struct.Struct("qq")
ANC_SIZE = 512


def _timespec(ancdata, cmsg_type: int) -> int:
    """The first ``struct timespec`` (ns since the epoch) of the SOL_SOCKET cmsg *cmsg_type*, 0 when absent."""
    for level, kind, data in ancdata:
        if level == 1 and kind == cmsg_type and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return sec * 1_000_000_000 + nsec
    return 0


def kernel_time(ancdata) -> int:
    """The SO_TIMESTAMPNS receive time (ns since the epoch) in *ancdata*, 0 when absent."""
    return _timespec(ancdata, SCM_TIMESTAMPNS)


EXTENDED_ERR = struct.Struct("IBBBBII")  # ee_errno, origin, type, code, pad, info, data


def extended_error(ancdata) -> tuple[int, int, int, int, int] | None:
    """``(errno, origin, icmp type, icmp code, data)`` of an IP_RECVERR / IPV6_RECVERR cmsg (data: the
    OPT_ID send counter of a transmit timestamp)."""
    for level, kind, data in ancdata:
        if (level, kind) in ((0, IP_RECVERR), (41, IPV6_RECVERR)) and len(data) >= EXTENDED_ERR.size:
            errno_, origin, etype, ecode, _, _, edata = EXTENDED_ERR.unpack_from(data)
            return errno_, origin, etype, ecode, edata
    return None


def tx_time(ancdata) -> int:
    """The software transmit time (ns since the epoch) of an SCM_TIMESTAMPING cmsg, 0 when absent."""
    return _timespec(ancdata, SCM_TIMESTAMPING)

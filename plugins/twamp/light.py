"""TWAMP Light (RFC 5357 appendix I): a Session-Reflector on a UDP port without TWAMP-Control.

Configured as ``services rpm twamp server light {port: 862, address: ..., mode: stateless|per-sender}``
(:class:`.config.LightConfig`); one-shot as ``flowplane twamp server --light --listen HOST:PORT``.

- Unauthenticated test packets of every legal size are reflected: 14-byte senders (reply 41 bytes),
  twampy's 41-byte senders (reply 41: symmetric), STAMP-style 44-byte packets (RFC 8762; the sender's
  30 MBZ octets are padding, the reply keeps 3 of them: 44 bytes, the STAMP layout).
- ``stateless``: the reflector's sequence number is the sender's (STAMP stateless mode).
  ``per-sender``: a sequence counter per sender address and port, reset after *idle_timeout* seconds
  without packets (twampy uses 30 s); the table is bounded (least recently seen sender evicted).
- T2 is the kernel's receive timestamp (``SO_TIMESTAMPNS``; user space right after ``recvmsg`` when the
  kernel gives none), T3 is written into the finished reply right before ``sendto`` (never before T2);
  the received TTL / hop limit is copied (``IP_RECVTTL`` / ``IPV6_RECVHOPLIMIT``); padding is shortened
  by 27 octets for symmetric sizes.
- Error Estimate: the S bit only when the kernel says the clock is synchronised (``adjtimex``), the
  error from the kernel's own estimate (:class:`.udp.ClockStatus`, re-read every minute).
- The socket is served by a worker thread blocked in ``recvmsg`` (:class:`.udp.ReflectorThread`): no
  scheduler round trip per packet (the added time T3 - T2 is what tests/bench/bench_twamp.py measures).
- Short datagrams (< 14 bytes) are counted and dropped; nothing a peer sends stops the reflector.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import structlog
import trio

from flowplane.api import hookimpl

from . import wire
from .udp import REFLECTOR_RCVBUF, ClockStatus, ReflectorThread, close_raw, open_udp_raw

log = structlog.get_logger("flowplane.twamp")

PLUGIN_OBJECT = "twamp-light"
MODES = ("stateless", "per-sender")
MAX_SENDERS = 4096
_SEQ = struct.Struct(">I")
_HEAD = struct.Struct(">IQHHQ")  # Seq, Timestamp (T3), Error Estimate, MBZ, Receive Timestamp (T2)
T3_OFFSET = 4  # of the Timestamp field in every reflector packet (unauthenticated)
_T3 = struct.Struct(">Q")


def unauth_reply(seq: int, error_estimate: int, t2_ns: int, data: bytes, ttl: int, pad: int) -> bytearray:
    """The unauthenticated reflector packet for sender packet *data* (at least 14 bytes): Seq, T3
    (stamped now; stamp again right before ``sendto``), Error Estimate, MBZ, T2, the sender's Seq,
    Timestamp and Error Estimate as received, MBZ, the TTL, then the first *pad* padding octets."""
    reply = bytearray(_HEAD.pack(seq, 0, error_estimate, 0, wire.ns_to_ntp(t2_ns)))
    reply += data[:14]
    reply += b"\0\0"
    reply.append(ttl & 0xFF)
    reply += data[14:14 + pad]
    stamp_t3(reply, t2_ns)
    return reply


def stamp_t3(reply: bytearray, t2_ns: int, offset: int = T3_OFFSET) -> None:
    """Write the send timestamp T3 (now, never before T2) into a finished reply."""
    _T3.pack_into(reply, offset, wire.ns_to_ntp(max(time.time_ns(), t2_ns)))


@dataclass
class LightSender:
    """Per-sender state and counters (address, port)."""

    address: str
    port: int
    seq: int = 0  # next reflector sequence number (per-sender mode)
    received: int = 0
    reflected: int = 0
    dropped: dict = field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0
    last_ttl: int = 0
    resets: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return {"sender": f"{self.address}:{self.port}", "address": self.address, "port": self.port,
                "received": self.received, "reflected": self.reflected, "dropped": dict(self.dropped),
                "next_seq": self.seq, "ttl": self.last_ttl, "resets": self.resets,
                "idle_seconds": round((time.time_ns() - self.last_ns) / 1e9, 1) if self.last_ns else None}


class LightReflector:
    """The stateful TWAMP Light reflector: one UDP socket, per-sender counters, global counters."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg  # .config.LightConfig (port, address, mode, idle_timeout, symmetric)
        self.senders: OrderedDict[tuple[str, int], LightSender] = OrderedDict()
        self.counters: dict[str, int] = {}
        self.bound: tuple | None = None
        self.sock = None
        self.clock = ClockStatus()

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # -- hooks --------------------------------------------------------------------------------
    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self.run]

    # -- the reflector ------------------------------------------------------------------------
    def _sender(self, addr: tuple, t2: int) -> LightSender:
        key = (addr[0], addr[1])
        s = self.senders.get(key)
        if s is None:
            s = LightSender(addr[0], addr[1], first_ns=t2)
            self.senders[key] = s
            if len(self.senders) > MAX_SENDERS:
                self.senders.popitem(last=False)
                self.count("senders-evicted")
            self.count("senders")
        else:
            self.senders.move_to_end(key)
            idle = self.cfg.idle_timeout
            if idle and s.last_ns and t2 - s.last_ns > idle * 1e9 and s.seq:
                s.seq = 0  # a new test from the same 5-tuple: start over
                s.resets += 1
        return s

    def reflect(self, data: bytes, addr: tuple, t2_ns: int, ttl: int) -> bytearray | None:
        """The reply to one datagram (None when it is dropped; counted either way)."""
        self.count("received")  # (runs on the reflector thread)
        s = self._sender(addr, t2_ns)
        s.received += 1
        s.last_ns = t2_ns
        s.last_ttl = ttl
        if len(data) < wire.SENDER_UNAUTH_SIZE:
            self.count("dropped-short")
            s.drop("short")
            return None
        if data[13] == 0:
            self.count("invalid-error-estimate")  # RFC 4656: multiplier 0 is invalid; tolerated, reflected
        if self.cfg.mode == "stateless":
            seq = _SEQ.unpack_from(data)[0]
        else:
            seq = s.seq
            s.seq = (s.seq + 1) & 0xFFFFFFFF
        pad = wire.reflector_padding(len(data), False, getattr(self.cfg, "symmetric", True))
        return unauth_reply(seq, self.clock.error_estimate, t2_ns, data, ttl, pad)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = open_udp_raw(self.cfg.address, self.cfg.port, rcvbuf=REFLECTOR_RCVBUF)
        self.sock = sock
        self.bound = sock.getsockname()[:2]
        log.info("twamp_light_listening", address=self.bound[0], port=self.bound[1], mode=self.cfg.mode,
                 **self.clock.as_dict())
        task_status.started(self.bound)
        try:
            await ReflectorThread(sock, self._reflect_one, sent=self._sent, send_failed=self._send_failed,
                                  receive_error=self._receive_error, internal_error=self._internal_error).run()
        finally:
            close_raw(sock)

    # -- the worker thread's callbacks (ReflectorThread) ----------------------------------------
    def _reflect_one(self, data: bytes, addr: tuple, t2: int, ttl: int):
        self.clock.refresh()
        reply = self.reflect(data, addr, t2, ttl)
        return None if reply is None else (reply, T3_OFFSET)

    def _sent(self, addr: tuple) -> None:
        self.count("reflected")
        s = self.senders.get((addr[0], addr[1]))
        if s is not None:
            s.reflected += 1

    def _send_failed(self, addr: tuple, exc: OSError) -> None:
        self.count("send-failed")
        s = self.senders.get((addr[0], addr[1]))
        if s is not None:
            s.drop("send-failed")

    def _receive_error(self, exc: OSError) -> None:  # e.g. ECONNREFUSED from an earlier reply's ICMP
        self.count("receive-errors")

    def _internal_error(self, exc: Exception) -> None:
        self.count("internal-errors")
        log.error("twamp_light_failed", error=f"{type(exc).__name__}: {exc}")

    def status(self) -> dict:
        return {"listening": list(self.bound) if self.bound else None, "mode": self.cfg.mode,
                "senders": [s.as_dict() for s in list(self.senders.values())],  # the thread may add one
                "clock": self.clock.as_dict(), "counters": dict(sorted(dict(self.counters).items()))}


def format_status(d: dict) -> str:
    b = d["listening"]
    lines = [f"TWAMP Light reflector: {'listening on ' + str(b[0]) + ':' + str(b[1]) if b else 'not listening'}"
             f" ({d['mode']})",
             "  Counters:" + ("" if d["counters"] else " none")]
    lines += [f"    {k:<32}{v:>10}" for k, v in d["counters"].items()]
    lines.append(f"{'Sender':<48}{'Received':>10}{'Reflected':>10}{'Next seq':>10}{'TTL':>5}")
    for s in d["senders"]:
        lines.append(f"{s['sender']:<48}{s['received']:>10}{s['reflected']:>10}{s['next_seq']:>10}{s['ttl']:>5}")
        for reason, n in s["dropped"].items():
            lines.append(f"    dropped {reason}: {n}")
    return "\n".join(lines) + "\n"


def show_light(app, args):
    from flowplane.api import configured_object, parse_words

    parse_words(args)
    return configured_object(app, PLUGIN_OBJECT,
                             "the TWAMP Light reflector is not configured (services rpm twamp server light)").status()


def register_commands(register) -> None:
    register("show services rpm twamp server light", show_light,
             help="TWAMP Light reflector: counters and senders", formatter=format_status)

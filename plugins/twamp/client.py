"""TWAMP client: Control-Client and Session-Sender (one control connection, one test session).

:func:`run_test` connects, negotiates the mode (authenticating with a KeyID and secret when asked),
requests one session (using the port the server returns), sends *count* packets paced by absolute
deadlines, waits for the last replies, sends Stop-Sessions and returns the statistics.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field

import trio

from . import wire
from .crypto import ControlCrypto, SessionCrypto, derive_key, make_token, new_keys, session_test_keys
from .server import MessageStream, _host
from .udp import open_udp, recv
from .wire import (ACCEPT_NAMES, ACCEPT_OK, MODE_AUTHENTICATED, MODE_ENCRYPTED, MODE_NAMES, AcceptSession,
                   RequestTWSession, SenderPacket, ServerGreeting, ServerStart, SetUpResponse, StartAck,
                   StartSessions, StopSessions)

SENDER_TTL = 255


class TwampError(Exception):
    """The server refused, or the exchange failed; the message is for the operator."""


@dataclass
class Sample:
    seq: int
    t1: int  # ns, sender TX
    t2: int = 0  # reflector RX
    t3: int = 0  # reflector TX
    t4: int = 0  # sender RX
    reflector_seq: int = -1
    sender_ttl: int = 0  # TTL the reflector saw
    ttl: int = 0  # TTL we saw on the reply
    replies: int = 0

    @property
    def rtt_ns(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)


@dataclass
class Result:
    server: str
    port: int
    test_port: int
    mode: int
    sent: int
    samples: list[Sample] = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    synced: bool = False

    def stats(self) -> dict:
        got = [s for s in self.samples if s.replies]
        rtts = [s.rtt_ns / 1e3 for s in sorted(got, key=lambda s: s.seq)]  # µs
        out = {"server": self.server, "port": self.port, "test_port": self.test_port,
               "mode": MODE_NAMES.get(self.mode, str(self.mode)), "sent": self.sent, "received": len(got),
               "lost": self.sent - len(got),
               "loss_percent": round(100.0 * (self.sent - len(got)) / self.sent, 3) if self.sent else 0.0,
               "duplicates": sum(max(0, s.replies - 1) for s in self.samples),
               "errors": dict(self.errors)}
        if got:
            # forward loss from the stateful reflector's own sequence numbers; the rest was lost on the way back
            last = max(got, key=lambda s: s.seq)
            fwd = (last.seq + 1) - (last.reflector_seq + 1)
            out["forward_lost"] = max(0, fwd)
            out["backward_lost"] = max(0, out["lost"] - max(0, fwd) - (self.sent - last.seq - 1))
        out["rtt_us"] = summary(rtts)
        out["reflector_processing_us"] = summary([(s.t3 - s.t2) / 1e3 for s in got])
        out["forward_us"] = summary([(s.t2 - s.t1) / 1e3 for s in got])
        out["backward_us"] = summary([(s.t4 - s.t3) / 1e3 for s in got])
        out["clock_synchronised"] = self.synced
        out["jitter_us"] = rfc3550_jitter(rtts)
        ipdv = [b - a for a, b in zip(rtts, rtts[1:])]
        out["ipdv_us"] = {"positive_max": max([d for d in ipdv if d > 0], default=0.0),
                          "negative_min": min([d for d in ipdv if d < 0], default=0.0),
                          "mean_abs": (sum(abs(d) for d in ipdv) / len(ipdv)) if ipdv else 0.0}
        seqs = [s.seq for s in sorted(got, key=lambda s: s.t4)]
        out["reordered"] = sum(1 for i, q in enumerate(seqs) if i and q < max(seqs[:i]))
        out["hops"] = {"forward": SENDER_TTL - got[0].sender_ttl if got and got[0].sender_ttl else None}
        return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"samples": 0, "min": None, "avg": None, "max": None, "stddev": None}
    n = len(values)
    avg = sum(values) / n
    sd = math.sqrt(sum((v - avg) ** 2 for v in values) / n)
    return {"samples": n, "min": round(min(values), 3), "avg": round(avg, 3), "max": round(max(values), 3),
            "stddev": round(sd, 3)}


def rfc3550_jitter(values: list[float]) -> float:
    """RFC 3550 §6.4.1 interarrival jitter over successive delays: J += (|D(i-1,i)| - J) / 16."""
    j = 0.0
    for a, b in zip(values, values[1:]):
        j += (abs(b - a) - j) / 16.0
    return round(j, 3)


async def run_test(host: str, port: int = 862, *, mode: int = wire.MODE_UNAUTHENTICATED, key_id: str = "",
                   secret: bytes | str | None = None, count: int = 10, interval_ms: float = 100.0,
                   padding: int | None = None, dscp: int = 0, wait: float = 1.0,
                   connect_timeout: float = 5.0) -> Result:
    """One TWAMP test against *host*:*port*; raises :class:`TwampError` when refused."""
    auth = mode in (MODE_AUTHENTICATED, MODE_ENCRYPTED)
    if auth and secret is None:
        raise TwampError("authenticated and encrypted modes need a shared secret")
    with trio.fail_after(connect_timeout):
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        ms = MessageStream(stream)
        local = _host(stream.socket.getsockname()[0])
        server_addr = _host(stream.socket.getpeername()[0])
        with trio.fail_after(connect_timeout):
            g = ServerGreeting.unpack(await ms.read(wire.GREETING_SIZE))
            if g.modes == 0:
                raise TwampError("the server refused the connection (Modes 0)")
            if not g.modes & mode:
                await ms.send(SetUpResponse(0).pack())
                raise TwampError(f"the server does not offer {MODE_NAMES.get(mode, mode)} mode "
                                 f"(modes {g.modes:#x})")
            crypto = ControlCrypto(mode)
            if auth:
                aes_key, hmac_key = new_keys()
                client_iv = os.urandom(16)
                token = make_token(derive_key(secret, g.salt, g.count), g.challenge, aes_key, hmac_key)
                await ms.send(SetUpResponse(mode, key_id, token, client_iv).pack())
            else:
                await ms.send(SetUpResponse(mode).pack())
            raw = await ms.read(wire.SERVER_START_SIZE)
            if raw[15] != ACCEPT_OK:
                raise TwampError(f"the server refused the set-up: {ACCEPT_NAMES.get(raw[15], raw[15])}")
            if auth:
                crypto = ControlCrypto(mode, aes_key, hmac_key, send_iv=client_iv, recv_iv=raw[16:32])
            ServerStart.unpack(crypto.open_server_start(raw))

            sock = open_udp(local, 0, ttl=SENDER_TTL, tos=dscp << 2)
            sender_port = sock.getsockname()[1]
            base = wire.SENDER_AUTH_SIZE if auth else wire.SENDER_UNAUTH_SIZE
            if padding is None:  # symmetric sizes by default: room for the reflector's longer header
                padding = wire.PADDING_TRUNCATION[auth]
            start_ns = time.time_ns()
            req = RequestTWSession(sender_port, 0, local, server_addr, padding, wire.ns_to_ntp(start_ns),
                                   int(max(wait, 1.0)) << 32, dscp << 24)
            await ms.send(crypto.seal(req.pack()))
            acc = AcceptSession.unpack(crypto.open(await ms.read(wire.ACCEPT_SESSION_SIZE)))
            if acc.accept != ACCEPT_OK:
                sock.close()
                raise TwampError(f"the server refused the session: {ACCEPT_NAMES.get(acc.accept, acc.accept)}")
            sc = SessionCrypto(mode, session_test_keys(acc.sid, aes_key, hmac_key)) if auth else None
            await ms.send(crypto.seal(StartSessions().pack()))
            ack = StartAck.unpack(crypto.open(await ms.read(wire.START_ACK_SIZE)))
            if ack.accept != ACCEPT_OK:
                sock.close()
                raise TwampError(f"the server refused Start-Sessions: {ACCEPT_NAMES.get(ack.accept, ack.accept)}")
        result = Result(server_addr, port, acc.port, mode, 0)
        with sock:
            await _exchange(sock, (server_addr, acc.port), result, count, interval_ms / 1000.0, padding, auth, sc,
                            wait)
        await ms.send(crypto.seal(StopSessions(ACCEPT_OK, 1).pack()))
    return result


async def _exchange(sock, dest, result: Result, count: int, interval: float, padding: int, auth: bool,
                    sc: SessionCrypto | None, wait: float) -> None:
    samples: dict[int, Sample] = {}
    pad = bytes(padding)
    done = trio.Event()

    async def receiver() -> None:
        while True:
            data, addr, t4, ttl = await recv(sock)
            try:
                if auth:
                    data = sc.open(data, 96)
                r = wire.unpack_reflector(data, auth)
            except (wire.WireError, ValueError):
                result.errors["malformed"] = result.errors.get("malformed", 0) + 1
                continue
            s = samples.get(r.sender_seq)
            if s is None or r.sender_timestamp != wire.ns_to_ntp(s.t1):
                result.errors["unknown"] = result.errors.get("unknown", 0) + 1
                continue
            s.replies += 1
            if s.replies == 1:
                s.t2 = wire.ntp_to_ns(r.receive_timestamp, pivot_ns=s.t1)
                s.t3 = wire.ntp_to_ns(r.timestamp, pivot_ns=s.t1)
                s.t4 = t4
                s.reflector_seq = r.seq
                s.sender_ttl = r.sender_ttl
                s.ttl = ttl
                result.synced = bool(r.error_estimate >> 15)
                if len([x for x in samples.values() if x.replies]) == count:
                    done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        t0 = trio.current_time()
        for seq in range(count):
            await trio.sleep_until(t0 + seq * interval)  # absolute deadlines: no drift
            t1 = time.time_ns()
            p = SenderPacket(seq, wire.ns_to_ntp(t1), wire.DEFAULT_ERROR_ESTIMATE, pad)
            # store T1 as it will come back (NTP resolution), so the match below is exact
            samples[seq] = Sample(seq, wire.ntp_to_ns(p.timestamp, pivot_ns=t1))
            data = wire.pack_sender(p, auth)
            if auth:
                data = sc.seal(data, 32)
            await sock.sendto(data, dest)
            result.sent += 1
        with trio.move_on_after(wait):
            await done.wait()
        nursery.cancel_scope.cancel()
    result.samples = [samples[k] for k in sorted(samples)]


async def run_light(host: str, port: int = 862, *, count: int = 10, interval_ms: float = 100.0,
                    padding: int | None = None, dscp: int = 0, wait: float = 1.0) -> Result:
    """One TWAMP Light test (RFC 5357 appendix I): unauthenticated test packets straight to a Light
    reflector's UDP port, no control connection.  Forward/backward loss split is meaningful only
    against a per-sender (stateful) reflector; a stateless one copies our sequence numbers."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise TwampError(f"cannot resolve {host}")
    server_addr = _host(infos[0][4][0])
    sock = open_udp("::" if ":" in server_addr else "0.0.0.0", 0, ttl=SENDER_TTL, tos=dscp << 2)
    if padding is None:  # symmetric sizes by default (41 bytes each way)
        padding = wire.PADDING_TRUNCATION[False]
    result = Result(server_addr, port, port, "light", 0)
    with sock:
        await _exchange(sock, (server_addr, port), result, count, interval_ms / 1000.0, padding, False, None, wait)
    return result

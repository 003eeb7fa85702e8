"""TWAMP client: Control-Client (:class:`ControlClient`) and Session-Sender (:class:`SessionSender`).

One implementation serves both users:

* the one-shot tools (``flowplane twamp client``): :func:`run_test` (one session) and :func:`run_sessions`
  (several sessions on one control connection) connect, request the sessions, send the probes paced by
  absolute deadlines, wait for the last replies, send Stop-Sessions and return the results;
* the configured client service (:mod:`.service`), which keeps a control connection up and runs one test
  after another on it (Request-TW-Session for each test session, Start-Sessions, probes, Stop-Sessions).

While probes fly, :meth:`ControlClient.watch` reads the control connection so that a server that closes
it (or a connection that TCP keepalive declares dead) is noticed at once, not at the next control message.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import trio

from . import wire
from .crypto import ControlCrypto, SessionCrypto, derive_key, make_token, new_keys, session_test_keys
from .keepalive import Keepalive, set_keepalive
from .results import Sample, stats_of_test
from .server import MessageStream, _host
from .udp import open_udp, recv
from .wire import (
    ACCEPT_NAMES,
    ACCEPT_OK,
    MODE_AUTHENTICATED,
    MODE_ENCRYPTED,
    MODE_NAMES,
    AcceptSession,
    RequestTWSession,
    SenderPacket,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartSessions,
    StopSessions,
)

__all__ = ["ControlClient", "ConnectionLost", "Result", "Sample", "SessionSender", "SessionSpec", "TwampError",
           "rfc3550_jitter", "run_light", "run_sessions", "run_test", "summary"]

SENDER_TTL = 255


class TwampError(Exception):
    """The server refused, or the exchange failed; the message is for the operator."""


class ConnectionLost(TwampError):
    """The control connection closed or died (server gone, keepalive timed out)."""


@dataclass
class Result:
    """One test session's outcome: its probes (index = sequence number) and counters."""

    server: str
    port: int
    test_port: int
    mode: int | str
    sent: int
    samples: list[Sample] = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    synced: bool = False

    def stats(self) -> dict:
        """The test's statistics: :class:`.results.TestStats` plus the one-shot tool's summary keys."""
        ts = stats_of_test(self.samples, self.sent, self.synced).as_dict()
        m = ts["measurements_us"]
        got = [s for s in self.samples if s.replies]
        out = {"server": self.server, "port": self.port, "test_port": self.test_port,
               "mode": MODE_NAMES.get(self.mode, str(self.mode)), "sent": self.sent, "received": ts["received"],
               "lost": ts["lost"], "loss_percent": ts["loss_percent"], "duplicates": ts["duplicates"],
               "errors": dict(self.errors)}
        if got:
            out["forward_lost"] = ts["forward_lost"]
            out["backward_lost"] = ts["backward_lost"]
        out["rtt_us"] = _short(m["rtt"])
        out["reflector_processing_us"] = _short(m["reflector_processing"])
        out["forward_us"] = _short(m["egress"])
        out["backward_us"] = _short(m["ingress"])
        out["clock_synchronised"] = self.synced
        out["jitter_us"] = ts["rfc3550_jitter_us"]["rtt"]
        out["ipdv_us"] = {"positive_max": max(m["ipdv_rtt"]["max"] or 0.0, 0.0),
                          "negative_min": min(m["ipdv_rtt"]["min"] or 0.0, 0.0),
                          "mean_abs": m["jitter_rtt"]["avg"] or 0.0}
        out["reordered"] = ts["reordered"]
        out["hops"] = {"forward": SENDER_TTL - got[0].sender_ttl if got and got[0].sender_ttl else None}
        out["test"] = ts  # the same block `show services rpm twamp client probe-results` prints
        return out


def _short(s: dict) -> dict:
    return {k: s[k] for k in ("samples", "min", "avg", "max", "stddev")}


def summary(values: list[float]) -> dict:
    """min/avg/max/stddev of *values* (kept for callers of the first client version)."""
    from .results import Stat

    st = Stat()
    st.add_many(values)
    return _short(st.summary())


def rfc3550_jitter(values: list[float]) -> float:
    """RFC 3550 §6.4.1 interarrival jitter over successive delays: J += (|D(i-1,i)| - J) / 16."""
    j = 0.0
    for a, b in zip(values, values[1:]):
        j += (abs(b - a) - j) / 16.0
    return round(j, 3)


@dataclass
class SessionSpec:
    """What to ask the server for, and how to send: one test session."""

    count: int = 10
    interval: float = 0.1  # seconds between probes
    padding: int | None = None  # None: symmetric sizes (27 octets open, 64 authenticated)
    dscp: int = 0
    wait: float = 1.0  # seconds to wait for the last replies
    target: str | None = None  # reflector address; None: the control connection's peer


class ControlClient:
    """A negotiated TWAMP-Control connection (greeting, Set-Up-Response, Server-Start done)."""

    def __init__(self, stream: trio.SocketStream, ms: MessageStream, crypto: ControlCrypto, mode: int,
                 local: str, server: str, port: int, keys: tuple[bytes, bytes] | None) -> None:
        self.stream = stream
        self.ms = ms
        self.crypto = crypto
        self.mode = mode
        self.local = local
        self.server = server
        self.port = port
        self.keys = keys
        self.requested: list[SessionSender] = []

    @property
    def authenticated(self) -> bool:
        return self.mode in (MODE_AUTHENTICATED, MODE_ENCRYPTED)

    @classmethod
    async def connect(cls, host: str, port: int = 862, *, mode: int = wire.MODE_UNAUTHENTICATED, key_id: str = "",
                      secret: bytes | str | None = None, source: str | None = None,
                      keepalive: Keepalive | None = None, timeout: float = 5.0) -> ControlClient:
        """Open and negotiate a control connection; raises :class:`TwampError` (or OSError) when refused."""
        auth = mode in (MODE_AUTHENTICATED, MODE_ENCRYPTED)
        if auth and secret is None:
            raise TwampError("authenticated and encrypted modes need a shared secret")
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port, local_address=source)
        try:
            if keepalive is not None:
                set_keepalive(stream.socket, keepalive)
            ms = MessageStream(stream)
            local = _host(stream.socket.getsockname()[0])
            server = _host(stream.socket.getpeername()[0])
            with trio.fail_after(timeout):
                g = ServerGreeting.unpack(await ms.read(wire.GREETING_SIZE))
                if g.modes == 0:
                    raise TwampError("the server refused the connection (Modes 0)")
                if not g.modes & mode:
                    await ms.send(SetUpResponse(0).pack())
                    raise TwampError(f"the server does not offer {MODE_NAMES.get(mode, mode)} mode "
                                     f"(modes {g.modes:#x})")
                crypto = ControlCrypto(mode)
                keys = None
                if auth:
                    aes_key, hmac_key = keys = new_keys()
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
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(stream, ms, crypto, mode, local, server, port, keys)

    async def request(self, spec: SessionSpec, timeout: float = 5.0) -> SessionSender:
        """Request-TW-Session for *spec*; the returned sender uses the port the server grants."""
        auth = self.authenticated
        target = spec.target or self.server
        bind = self.local if (":" in self.local) == (":" in target) else ("::" if ":" in target else "0.0.0.0")
        sock = open_udp(bind, 0, ttl=SENDER_TTL, tos=spec.dscp << 2)
        try:
            padding = wire.PADDING_TRUNCATION[auth] if spec.padding is None else spec.padding
            req = RequestTWSession(sock.getsockname()[1], 0, self.local if bind == self.local else None, target,
                                   padding, wire.ns_to_ntp(time.time_ns()), int(max(spec.wait, 1.0)) << 32,
                                   spec.dscp << 24)
            with trio.fail_after(timeout):
                await self.ms.send(self.crypto.seal(req.pack()))
                acc = AcceptSession.unpack(self.crypto.open(await self.ms.read(wire.ACCEPT_SESSION_SIZE)))
            if acc.accept != ACCEPT_OK:
                raise TwampError(f"the server refused the session: {ACCEPT_NAMES.get(acc.accept, acc.accept)}")
        except BaseException:
            sock.close()
            raise
        sc = SessionCrypto(self.mode, session_test_keys(acc.sid, *self.keys)) if auth else None
        sender = SessionSender(sock, (target, acc.port), auth, sc, padding,
                               Result(self.server, self.port, acc.port, self.mode, 0))
        self.requested.append(sender)
        return sender

    async def start(self, timeout: float = 5.0) -> None:
        """Start-Sessions for every requested session."""
        with trio.fail_after(timeout):
            await self.ms.send(self.crypto.seal(StartSessions().pack()))
            ack = StartAck.unpack(self.crypto.open(await self.ms.read(wire.START_ACK_SIZE)))
        if ack.accept != ACCEPT_OK:
            raise TwampError(f"the server refused Start-Sessions: {ACCEPT_NAMES.get(ack.accept, ack.accept)}")

    async def stop(self) -> None:
        """Stop-Sessions for the started sessions, and close their sockets."""
        n = len(self.requested)
        for s in self.requested:
            s.sock.close()
        self.requested = []
        await self.ms.send(self.crypto.seal(StopSessions(ACCEPT_OK, n).pack()))

    async def watch(self) -> None:
        """Read the control connection until it ends: raises :class:`ConnectionLost` (EOF or error).

        The server sends nothing unprompted while tests run; anything it does send is kept for the next read.
        Cancel this before the next request (it must not compete with :meth:`MessageStream.read`)."""
        try:
            while True:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise ConnectionLost("the server closed the control connection")
                self.ms.buf += chunk
        except (trio.BrokenResourceError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
            raise ConnectionLost(f"control connection lost: {_reason(cause)}") from exc

    async def aclose(self) -> None:
        for s in self.requested:
            s.sock.close()
        self.requested = []
        await trio.aclose_forcefully(self.stream)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class SessionSender:
    """The Session-Sender of one test session: sends probes, matches the reflected packets."""

    def __init__(self, sock, dest: tuple, auth: bool, sc: SessionCrypto | None, padding: int,
                 result: Result) -> None:
        self.sock = sock
        self.dest = dest
        self.auth = auth
        self.sc = sc
        self.padding = padding
        self.result = result
        self.received = 0

    async def run(self, count: int, interval: float, wait: float) -> Result:
        """Send *count* probes every *interval* seconds (absolute deadlines: no drift), then wait up to
        *wait* seconds for the last replies.  ``result.samples`` grows as probes go out (live view)."""
        result = self.result
        samples = result.samples
        pad = bytes(self.padding)
        done = trio.Event()

        async def receiver() -> None:
            while True:
                data, _addr, t4, ttl = await recv(self.sock)
                try:
                    if self.auth:
                        data = self.sc.open(data, 96)
                    r = wire.unpack_reflector(data, self.auth)
                except (wire.WireError, ValueError):
                    result.errors["malformed"] = result.errors.get("malformed", 0) + 1
                    continue
                s = samples[r.sender_seq] if r.sender_seq < len(samples) else None
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
                    self.received += 1
                    if self.received == count:
                        done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            t0 = trio.current_time()
            for seq in range(count):
                await trio.sleep_until(t0 + seq * interval)
                t1 = time.time_ns()
                p = SenderPacket(seq, wire.ns_to_ntp(t1), wire.DEFAULT_ERROR_ESTIMATE, pad)
                # store T1 as it will come back (NTP resolution), so the match is exact
                samples.append(Sample(seq, wire.ntp_to_ns(p.timestamp, pivot_ns=t1)))
                data = wire.pack_sender(p, self.auth)
                if self.auth:
                    data = self.sc.seal(data, 32)
                try:
                    await self.sock.sendto(data, self.dest)
                except OSError as exc:  # unreachable, no route: the probe counts as sent and lost
                    result.errors["send-failed"] = result.errors.get("send-failed", 0) + 1
                    result.errors["last-send-error"] = _reason(exc)
                result.sent += 1
            with trio.move_on_after(wait):
                await done.wait()
            nursery.cancel_scope.cancel()
        return result


async def run_sessions(host: str, port: int = 862, specs: list[SessionSpec] | None = None, *,
                       mode: int = wire.MODE_UNAUTHENTICATED, key_id: str = "", secret: bytes | str | None = None,
                       source: str | None = None, keepalive: Keepalive | None = None,
                       connect_timeout: float = 5.0) -> list[Result]:
    """One test on one control connection with several test sessions sent concurrently."""
    specs = specs or [SessionSpec()]
    ctl = await ControlClient.connect(host, port, mode=mode, key_id=key_id, secret=secret, source=source,
                                      keepalive=keepalive, timeout=connect_timeout)
    try:
        senders = [await ctl.request(spec, connect_timeout) for spec in specs]
        await ctl.start(connect_timeout)
        async with trio.open_nursery() as nursery:
            for sender, spec in zip(senders, specs):
                nursery.start_soon(sender.run, spec.count, spec.interval, spec.wait)
        await ctl.stop()
    finally:
        await ctl.aclose()
    return [s.result for s in senders]


async def run_test(host: str, port: int = 862, *, mode: int = wire.MODE_UNAUTHENTICATED, key_id: str = "",
                   secret: bytes | str | None = None, count: int = 10, interval_ms: float = 100.0,
                   padding: int | None = None, dscp: int = 0, wait: float = 1.0,
                   connect_timeout: float = 5.0, source: str | None = None,
                   keepalive: Keepalive | None = None) -> Result:
    """One TWAMP test against *host*:*port*; raises :class:`TwampError` when refused."""
    spec = SessionSpec(count, interval_ms / 1000.0, padding, dscp, wait)
    (result,) = await run_sessions(host, port, [spec], mode=mode, key_id=key_id, secret=secret, source=source,
                                   keepalive=keepalive, connect_timeout=connect_timeout)
    return result


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
    sender = SessionSender(sock, (server_addr, port), False, None, padding,
                           Result(server_addr, port, port, "light", 0))
    with sock:
        return await sender.run(count, interval_ms / 1000.0, wait)

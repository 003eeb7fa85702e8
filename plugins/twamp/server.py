"""TWAMP server: the TWAMP-Control state machine (TCP) and the Session-Reflector (UDP).

One :class:`TwampServer` per config.  Every control connection runs
:meth:`TwampServer.handle_connection`:

    greeting -> Set-Up-Response -> Server-Start -> { Request-TW-Session -> Accept-Session }*
    -> Start-Sessions -> Start-Ack -> (test) -> Stop-Sessions -> ... until the client closes

Messages are read by exact size, so split or coalesced TCP segments are fine.  A refusal is
polite (an Accept code, then close); a protocol error (unknown command, bad size, HMAC) closes the
connection.  Nothing a client sends can crash the server: every connection runs in its own guard.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass, field

import structlog
import trio

from flowplane.api import hookimpl

from . import wire
from .config import ServerConfig
from .crypto import ControlCrypto, HmacError, SessionCrypto, derive_key, open_token, session_test_keys
from .keepalive import set_keepalive
from .light import T3_OFFSET, stamp_t3, unauth_reply
from .udp import REFLECTOR_RCVBUF, ClockStatus, ReflectorThread, close_raw, open_udp_raw
from .wire import (
    ACCEPT_FAILURE,
    ACCEPT_NOT_SUPPORTED,
    ACCEPT_OK,
    ACCEPT_TEMPORARY_LIMIT,
    MODE_AUTHENTICATED,
    MODE_ENCRYPTED,
    AcceptSession,
    ReflectorPacket,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartSessions,
    StopSessions,
    WireError,
)

log = structlog.get_logger("flowplane.twamp")

PLUGIN_OBJECT = "twamp-server"
KDF_COUNT = 1024  # RFC 4656: a power of 2, at least 1024
AUTH_T3_OFFSET = 16  # Seq 4, MBZ 12, then the Timestamp (authenticated / encrypted reflector packet)
MAX_REFLECTOR_THREADS = 4096  # one worker thread per active test session (bounded by the session limits)


class ProtocolError(Exception):
    """The peer broke the protocol: close the connection."""


class MessageStream:
    """Exact-size reads over a trio stream (messages may be split or coalesced)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def read(self, n: int, timeout: float = 0.0) -> bytes:
        with trio.fail_after(timeout) if timeout else _nullcontext():
            while len(self.buf) < n:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError("peer closed the control connection")
                self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_sid(address: str) -> bytes:
    """RFC 4656 §3.5 SID: the receiver's IPv4 address (or 4 bytes of IPv6 hash), an NTP timestamp, 4 random bytes."""
    ip = ipaddress.ip_address(address)
    head = ip.packed if ip.version == 4 else ip.packed[-4:]
    return head + struct.pack(">Q", wire.now_ntp()) + os.urandom(4)


@dataclass
class ReflectorSession:
    """One test session: a UDP socket reflecting one sender's packets."""

    sid: bytes
    mode: int
    sender_address: str
    sender_port: int
    local_address: str
    port: int
    padding_length: int
    start_time_ns: int
    timeout_ns: int
    dscp: int
    crypto: SessionCrypto | None
    sock: object = None
    seq: int = 0
    received: int = 0
    reflected: int = 0
    dropped: dict = field(default_factory=dict)
    started: bool = False
    stopped_ns: int = 0
    last_ns: int = 0
    ended: bool = False
    scope: object = None
    clock: ClockStatus | None = None  # the server's: Error Estimate (S bit only when synchronised)
    _sender_host: str = ""

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def authenticated(self) -> bool:
        return self.mode in (MODE_AUTHENTICATED, MODE_ENCRYPTED)

    def reflect(self, data: bytes, t2_ns: int, ttl: int) -> bytearray | None:
        """The reply to one sender packet, or None (counted) when it is not accepted.

        Unauthenticated: T3 is stamped here and again by :meth:`run` right before ``sendto``.
        Authenticated / encrypted: T3 is stamped after everything else is packed, right before the
        HMAC and encryption that must cover it."""
        auth = self.authenticated
        if t2_ns < self.start_time_ns:
            self.drop("before-start-time")
            return None
        err = self.clock.error_estimate if self.clock is not None else wire.DEFAULT_ERROR_ESTIMATE
        if not auth:
            if len(data) < wire.SENDER_UNAUTH_SIZE:
                self.drop("malformed")
                return None
            out = unauth_reply(self.seq, err, t2_ns, data, ttl, wire.reflector_padding(len(data), False))
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            return out
        try:
            data = self.crypto.open(data, 32)
            p = wire.unpack_sender(data, auth)
        except (WireError, HmacError) as exc:
            self.drop("hmac" if isinstance(exc, HmacError) else "malformed")
            return None
        pad = wire.reflector_padding(len(data), auth)
        r = ReflectorPacket(self.seq, 0, err, wire.ns_to_ntp(t2_ns), p.seq, p.timestamp, p.error_estimate,
                            ttl & 0xFF, p.padding[:pad])
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        out = bytearray(wire.pack_reflector(r, auth))
        stamp_t3(out, t2_ns, AUTH_T3_OFFSET)  # T3 as late as possible: only the HMAC/encryption follow
        return bytearray(self.crypto.seal(bytes(out), 96))

    def stop(self, linger_s: float) -> None:
        """Stop-Sessions (or the control connection closed): keep reflecting *linger_s* seconds more."""
        if not self.stopped_ns:
            self.stopped_ns = time.time_ns()
        if self.scope is not None:
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + linger_s)
        elif linger_s <= 0:
            self.ended = True
            close_raw(self.sock)

    async def run(self, idle_timeout: float, limiter: trio.CapacityLimiter | None = None) -> None:
        sock = self.sock
        self._sender_host = _host(self.sender_address)
        try:
            with trio.CancelScope() as self.scope:
                if self.stopped_ns:
                    self.scope.cancel()
                why = await ReflectorThread(sock, self._reflect_one, sent=self._sent, send_failed=self._send_failed,
                                            receive_error=self._receive_error, internal_error=self._internal_error,
                                            idle_timeout=idle_timeout, limiter=limiter).run()
                if why == "idle":
                    log.info("twamp_reflector_idle", port=self.port)
        except Exception as exc:  # one session's failure never stops the server
            log.error("twamp_reflector_failed", port=self.port, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.ended = True
            close_raw(sock)

    # -- the worker thread's callbacks (ReflectorThread) ----------------------------------------
    def _reflect_one(self, data: bytes, addr: tuple, t2: int, ttl: int):
        self.received += 1
        self.last_ns = t2
        if not self.started:
            self.drop("not-started")
            return None
        if addr[0] != self.sender_address and _host(addr[0]) != self._sender_host:
            self.drop("wrong-sender")
            return None
        if self.clock is not None:
            self.clock.refresh()
        reply = self.reflect(data, t2, ttl)
        if reply is None:
            return None
        return reply, (-1 if self.authenticated else T3_OFFSET)  # sealed replies carry T3 already

    def _sent(self, addr) -> None:
        self.reflected += 1

    def _send_failed(self, addr, exc: OSError) -> None:
        self.drop("send-failed")

    def _receive_error(self, exc: OSError) -> None:  # ICMP error about an earlier reply
        self.drop("receive-error")

    def _internal_error(self, exc: Exception) -> None:
        self.drop("internal-error")
        log.error("twamp_reflector_failed", port=self.port, error=f"{type(exc).__name__}: {exc}")

    def as_dict(self) -> dict:
        return {"sid": self.sid.hex(), "mode": wire.MODE_NAMES.get(self.mode, str(self.mode)),
                "sender": f"{self.sender_address}:{self.sender_port}", "port": self.port,
                "padding_length": self.padding_length, "dscp": self.dscp, "received": self.received,
                "reflected": self.reflected, "dropped": dict(self.dropped), "started": self.started,
                "stopped": bool(self.stopped_ns)}


def _host(a: str) -> str:
    ip = ipaddress.ip_address(a.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass
class Connection:
    client: str
    port: int
    opened_ns: int
    mode: int = 0
    key_id: str = ""
    state: str = "greeting"
    sessions: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"client": self.client, "port": self.port, "mode": wire.MODE_NAMES.get(self.mode, "-"),
                "key_id": self.key_id, "state": self.state, "sessions": len(self.sessions),
                "seconds": round((time.time_ns() - self.opened_ns) / 1e9, 1)}


class TwampServer:
    """The ``services rpm twamp server`` state: listener, connections, reflector sessions, counters."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.connections: list[Connection] = []
        self.sessions: list[ReflectorSession] = []
        self.counters: dict[str, int] = {}
        self.bound: tuple | None = None
        self._nursery: trio.Nursery | None = None
        self.clock = ClockStatus()
        self.threads = trio.CapacityLimiter(MAX_REFLECTOR_THREADS)  # reflector worker threads (not trio's 40)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # -- hooks ------------------------------------------------------------------------------
    @hookimpl
    def flowplane_background_tasks(self, app):
        return [self.run]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        family = socket.AF_INET6 if ":" in self.cfg.address else socket.AF_INET
        listener = trio.socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            await listener.bind((self.cfg.address, self.cfg.port))
        except OSError as exc:
            listener.close()
            where = f"[{self.cfg.address}]" if ":" in self.cfg.address else self.cfg.address
            raise OSError(exc.errno, f"TWAMP server cannot listen on {where}:{self.cfg.port}: "
                                     f"{exc.strerror or exc}") from None
        listener.listen(128)
        self.bound = listener.getsockname()[:2]
        log.info("twamp_server_listening", address=self.bound[0], port=self.bound[1],
                 modes=self.cfg.modes)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self.bound)
            lst = trio.SocketListener(listener)
            await trio.serve_listeners(self._guarded, [lst], handler_nursery=nursery)

    async def _guarded(self, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()
        local = stream.socket.getsockname()
        conn = Connection(_host(peer[0]), peer[1], time.time_ns())
        try:
            async with stream:
                set_keepalive(stream.socket, self.cfg.keepalive)  # a silent client is detected (tcp-keep*)
                await self.handle_connection(MessageStream(stream), conn, _host(local[0]))
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            self.count("closed" if isinstance(exc, EOFError) else "closed-" + type(exc).__name__.lower())
        except ProtocolError as exc:
            self.count("protocol-errors")
            log.info("twamp_protocol_error", client=conn.client, error=str(exc))
        except Exception as exc:  # a bug must not take the server down
            self.count("internal-errors")
            log.error("twamp_connection_failed", client=conn.client, error=f"{type(exc).__name__}: {exc}")
        finally:
            for s in conn.sessions:
                if not s.ended:
                    # after Stop-Sessions the reflector lingers for the session's Timeout; otherwise it ends now
                    s.stop(s.timeout_ns / 1e9 if s.stopped_ns else 0.0)
            if conn in self.connections:
                self.connections.remove(conn)

    async def handle_connection(self, ms: MessageStream, conn: Connection, local_address: str) -> None:
        cfg = self.cfg
        self.count("connections")
        duration = cfg.max_connection_duration or float("inf")
        if not cfg.allowed(conn.client):
            self.count("refused-client-list")
            await ms.send(ServerGreeting(0).pack())  # Modes 0: the server refuses
            return
        per_client = sum(1 for c in self.connections if c.client == conn.client)
        if (cfg.max_connections and len(self.connections) >= cfg.max_connections) or \
                per_client >= cfg.max_connections_per_client or cfg.max_connections == 0:
            self.count("refused-limit")
            await ms.send(ServerGreeting(0).pack())
            return
        self.connections.append(conn)
        with trio.move_on_after(duration):
            await self._control(ms, conn, local_address)

    async def _control(self, ms: MessageStream, conn: Connection, local_address: str) -> None:
        cfg = self.cfg
        wait = cfg.server_inactivity_timeout
        challenge, salt = os.urandom(16), os.urandom(16)
        await ms.send(ServerGreeting(cfg.modes, challenge, salt, KDF_COUNT).pack())
        su = SetUpResponse.unpack(await ms.read(wire.SETUP_RESPONSE_SIZE, wait))
        if su.mode == 0:
            raise EOFError("client declined the offered modes")
        server_iv = os.urandom(16)
        start = ServerStart(ACCEPT_OK, server_iv, wire.now_ntp())
        if su.mode not in (wire.MODE_UNAUTHENTICATED, MODE_AUTHENTICATED, MODE_ENCRYPTED) or not su.mode & cfg.modes:
            self.count("refused-mode")
            await ms.send(ServerStart(ACCEPT_NOT_SUPPORTED, server_iv, 0).pack())
            return
        crypto = ControlCrypto(su.mode)
        if su.mode in (MODE_AUTHENTICATED, MODE_ENCRYPTED):
            secret = cfg.secrets.get(su.key_id, cfg.secrets.get("*"))  # '*': any KeyID (one-shot server)
            ok = False
            if secret is not None:
                got_challenge, aes_key, hmac_key = open_token(derive_key(secret, salt, KDF_COUNT), su.token)
                ok = got_challenge == challenge
            if not ok:
                self.count("refused-authentication")
                log.info("twamp_authentication_failed", client=conn.client, key_id=su.key_id)
                await ms.send(ServerStart(ACCEPT_FAILURE, server_iv, 0).pack())
                return
            crypto = ControlCrypto(su.mode, aes_key, hmac_key, send_iv=server_iv, recv_iv=su.client_iv)
        conn.mode, conn.key_id, conn.state = su.mode, su.key_id, "setup"
        await ms.send(crypto.seal_server_start(start.pack()))
        while True:
            first = crypto.open_first(await ms.read(16, wait))
            cmd = first[0]
            size = wire.COMMAND_SIZES.get(cmd)
            if size is None:
                raise ProtocolError(f"unknown command {cmd}")
            try:
                plain = crypto.open_rest(await ms.read(size - 16, wait))
            except HmacError as exc:
                raise ProtocolError(str(exc)) from None
            if cmd == wire.CMD_REQUEST_TW_SESSION:
                await ms.send(crypto.seal(self._request(RequestTWSession.unpack(plain), conn, crypto,
                                                        local_address).pack()))
            elif cmd == wire.CMD_START_SESSIONS:
                StartSessions.unpack(plain)
                pending = [s for s in conn.sessions if not s.started]
                for s in pending:
                    s.started = True
                conn.state = "test"
                self.count("start-sessions")
                await ms.send(crypto.seal(StartAck(ACCEPT_OK if pending else ACCEPT_FAILURE).pack()))
            else:
                stop = StopSessions.unpack(plain)
                active = [s for s in conn.sessions if s.started and not s.stopped_ns]
                if stop.num_sessions not in (0, len(active)):  # 0: twampy's quirk, tolerated
                    raise ProtocolError(f"Stop-Sessions counts {stop.num_sessions} sessions, {len(active)} active")
                for s in active:
                    s.stop(s.timeout_ns / 1e9)
                conn.state = "setup"
                self.count("stop-sessions")

    def _request(self, req: RequestTWSession, conn: Connection, crypto: ControlCrypto,
                 local_address: str) -> AcceptSession:
        cfg = self.cfg
        self.count("session-requests")
        if req.conf_sender or req.conf_receiver or req.ipvn not in (4, 6) or req.sid != wire.ZERO16:
            self.count("refused-request")
            return AcceptSession(ACCEPT_NOT_SUPPORTED)
        if sum(1 for s in conn.sessions if not s.ended) >= cfg.max_sessions_per_connection:
            self.count("refused-session-limit")
            return AcceptSession(ACCEPT_TEMPORARY_LIMIT)
        receiver = req.receiver_address or local_address
        sender = req.sender_address or conn.client
        if _host(sender) != conn.client:
            self.count("refused-request")  # we reflect only to the controlling client (no third parties)
            return AcceptSession(ACCEPT_FAILURE)
        try:
            if _host(receiver) != _host(local_address):
                self.count("refused-request")
                return AcceptSession(ACCEPT_FAILURE)
        except ValueError:
            return AcceptSession(ACCEPT_FAILURE)
        sock = None
        for port in ([req.receiver_port] if req.receiver_port else []) + [0]:  # requested port first, then any
            try:
                sock = open_udp_raw(local_address, port, ttl=255, tos=req.dscp << 2, rcvbuf=REFLECTOR_RCVBUF)
                break
            except OSError:
                continue
        if sock is None:
            self.count("refused-no-port")
            return AcceptSession(ACCEPT_TEMPORARY_LIMIT)
        port = sock.getsockname()[1]
        sid = make_sid(receiver)
        sc = None
        if crypto.secure:
            sc = SessionCrypto(conn.mode, session_test_keys(sid, crypto.aes_key, crypto.hmac_key))
        start_ns = wire.ntp_to_ns(req.start_time) if req.start_time else 0
        sess = ReflectorSession(sid, conn.mode, sender, req.sender_port, receiver, port, req.padding_length,
                                start_ns,
                                (req.timeout >> 32) * 1_000_000_000 + ((req.timeout & 0xFFFFFFFF) * 10**9 >> 32),
                                req.dscp, sc, sock, clock=self.clock)
        conn.sessions.append(sess)
        self.sessions.append(sess)
        del self.sessions[:-256]  # keep the last 256 for show commands
        self._nursery.start_soon(sess.run, cfg.reflector_inactivity_timeout, self.threads)
        self.count("sessions")
        return AcceptSession(ACCEPT_OK, port, sid)

    def status(self) -> dict:
        return {"listening": list(self.bound) if self.bound else None,
                "modes": [n for b, n in wire.MODE_NAMES.items() if self.cfg.modes & b],
                "connections": [c.as_dict() for c in self.connections],
                "sessions": [s.as_dict() for s in self.sessions], "clock": self.clock.as_dict(),
                "counters": dict(sorted(self.counters.items()))}


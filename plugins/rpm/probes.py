"""One probe of each type, as trio code: ICMP/ICMPv6 echo, ICMP timestamp, UDP and TCP against an RPM probe
server, HTTP GET/HEAD.

A :class:`Prober` serves one test: :meth:`Prober.open` makes its socket, :meth:`Prober.receive` (datagram types)
runs beside the probes and hands every answer to the probe waiting for it, :meth:`Prober.probe` sends probe
*seq* and returns its :class:`Outcome` within the probe timeout.  Receive times are the kernel's
(``SO_TIMESTAMPNS``); datagram probes also read the kernel's send time (``SO_TIMESTAMPING`` TX_SCHED stamps:
the packet entering the device queue, before any qdisc; read from the error queue, matched by the OPT_ID send
counter).  Where a stamp is missing the clock
(CLOCK_REALTIME) just before send / on receipt stands in, and ``timestamp`` says so: ``kernel`` (both),
``kernel-rx`` (receive only), ``user``.  TCP and HTTP probes time the exchange on the socket (kernel receive
time for tcp-ping, the monotonic clock for HTTP).
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from . import sockets, wire
from .config import TestConfig

HTTP_MAX_BODY = 1 << 20  # octets of a response read; the rest is not waited for
HTTP_USER_AGENT = "flowplane-rpm"


@dataclass
class Outcome:
    """What became of one probe.  Times in ns; ``status`` is response, timeout or error."""

    seq: int
    sent: int = 0  # ns since the epoch
    received: int = 0  # answer (or timeout / error) time, ns since the epoch
    status: str = "timeout"
    reason: str = ""  # why a probe failed: "timeout", "port unreachable", "connection refused", "http 503", ...
    rtt: int | None = None  # ns
    egress: int | None = None  # ns, client -> target
    ingress: int | None = None  # ns, target -> client
    timestamp: str = "kernel"  # where the receive time came from: kernel | user
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "response"


class _Waiter:
    __slots__ = ("event", "outcome", "tx")

    def __init__(self, outcome: Outcome) -> None:
        self.event = trio.Event()
        self.outcome = outcome
        self.tx = 0  # the kernel's send time, once the error queue gave it


class Prober:
    """Base: the per-test state of one probe type (see the module docstring)."""

    datagram = False

    def __init__(self, cfg: TestConfig, counters: dict) -> None:
        self.cfg = cfg
        self.counters = counters
        self.sock: socket.socket | None = None

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def open(self) -> None:
        """Make the test's socket (datagram types); raises :class:`sockets.ProbeSocketError`."""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def receive(self) -> None:  # datagram types only
        await trio.sleep_forever()

    async def probe(self, seq: int) -> Outcome:
        raise NotImplementedError

    @property
    def description(self) -> dict:
        return {}


class DatagramProber(Prober):
    """ICMP and UDP: one socket per test, a receive task matching answers to waiting probes by sequence."""

    datagram = True

    shift_egress = True  # egress is T2 - T1 at full resolution: a kernel send time corrects it too

    def __init__(self, cfg: TestConfig, counters: dict) -> None:
        super().__init__(cfg, counters)
        self.waiting: dict[int, _Waiter] = {}
        self.sends = 0  # the kernel's OPT_ID counter: one per successful send
        self.tx_keys: dict[int, int] = {}  # send counter -> probe key

    def key(self, seq: int) -> int:
        return seq & 0xFFFF

    def request(self, seq: int, now_ns: int) -> bytes:
        raise NotImplementedError

    def destination(self) -> tuple | None:
        return None  # connected socket

    def answer(self, data: bytes, t4: int, source) -> None:
        """Match one received datagram to its waiting probe and fill the outcome."""
        raise NotImplementedError

    def error(self, data: bytes, err: tuple, t: int) -> None:
        """An ICMP error from the error queue (IP_RECVERR): *data* is (the start of) what we sent."""

    def settle(self, key: int, t4: int, reason: str = "", **values) -> bool:
        w = self.waiting.get(key)
        if w is None or w.event.is_set():
            self.count("late-or-unknown-answers")
            return False
        o = w.outcome
        o.received = t4
        if reason:
            o.status, o.reason = "error", reason
        else:
            o.status, o.reason = "response", ""
            for k, v in values.items():
                setattr(o, k, v)
        w.event.set()
        return True

    async def probe(self, seq: int) -> Outcome:
        o = Outcome(seq)
        key = self.key(seq)
        w = _Waiter(o)
        self.waiting[key] = w
        try:
            o.sent = time.time_ns()
            mono = time.monotonic_ns()
            data = self.request(seq, o.sent)
            try:
                dest = self.destination()
                if dest is None:
                    self.sock.send(data)
                else:
                    self.sock.sendto(data, dest)
            except BlockingIOError:
                self.count("send-buffer-full")
                o.status, o.reason, o.received = "error", "send buffer full", time.time_ns()
                return o
            except OSError as exc:
                self.count("send-errors")
                o.status, o.reason, o.received = "error", exc.strerror or str(exc), time.time_ns()
                return o
            self.tx_keys[self.sends & 0xFFFFFFFF] = key
            self.sends += 1
            with trio.move_on_after(self.cfg.probe_timeout):
                await w.event.wait()
            if not w.event.is_set():
                o.status, o.reason, o.received = "timeout", "timeout", time.time_ns()
            elif o.ok:
                self._drain_errors()  # the send time may still be on the error queue
                self._kernel_send_time(w)
                elapsed = time.monotonic_ns() - mono
                if o.rtt is not None and not 0 <= o.rtt <= elapsed:  # the wall clock stepped meanwhile
                    self.count("clock-steps")
                    o.rtt, o.egress, o.ingress, o.timestamp = elapsed, None, None, "user"
            return o
        finally:
            if self.waiting.get(key) is w:
                del self.waiting[key]
            if len(self.tx_keys) > 4096:
                self.tx_keys.clear()

    def _kernel_send_time(self, w: _Waiter) -> None:
        """Replace the send time taken in user space by the kernel's, and the figures that depend on it."""
        o = w.outcome
        if not w.tx:
            o.timestamp = "kernel-rx"
            self.count("user-space-send-times")
            return
        shift = w.tx - o.sent
        if shift < 0 or (o.rtt is not None and shift > o.rtt):
            return  # not plausible: keep the user-space time
        o.sent = w.tx
        if o.rtt is not None:
            o.rtt -= shift
        if o.egress is not None and self.shift_egress:
            o.egress -= shift

    async def receive(self) -> None:
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            self._drain_errors()
            while True:
                try:
                    data, anc, _flags, source = sock.recvmsg(65535, wire.ANC_SIZE)
                except BlockingIOError:
                    break
                except OSError:  # a pending ICMP error (ECONNREFUSED ...): its details are on the error queue
                    self._drain_errors()
                    continue
                t4 = wire.kernel_time(anc)
                if not t4:
                    t4 = time.time_ns()
                    self.count("user-space-timestamps")
                try:
                    self.answer(data, t4, source)
                except Exception:  # a malformed answer is counted, never fatal
                    self.count("malformed-answers")

    def _drain_errors(self) -> None:
        for _ in range(256):
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65535, wire.ANC_SIZE, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            err = wire.extended_error(anc)
            if err is not None and err[1] == wire.SO_EE_ORIGIN_TIMESTAMPING:
                key = self.tx_keys.pop(err[4], None)
                w = self.waiting.get(key) if key is not None else None
                if w is not None:
                    w.tx = wire.tx_time(anc)
            elif err is not None:
                self.count("icmp-errors")
                try:
                    self.error(data, err, time.time_ns())
                except Exception:
                    self.count("malformed-answers")


ICMP_REASONS = {(3, 0): "network unreachable", (3, 1): "host unreachable", (3, 3): "port unreachable",
                (3, 13): "administratively prohibited", (11, 0): "ttl exceeded"}
ICMP6_REASONS = {(1, 0): "no route", (1, 1): "administratively prohibited", (1, 3): "address unreachable",
                 (1, 4): "port unreachable", (3, 0): "hop limit exceeded"}


def icmp_reason(v6: bool, kind: int, code: int) -> str:
    table = ICMP6_REASONS if v6 else ICMP_REASONS
    return table.get((kind, code), f"icmp{'6' if v6 else ''} type {kind} code {code}")


class IcmpProber(DatagramProber):
    """icmp-ping / icmp6-ping: echo request, echo reply."""

    def __init__(self, cfg: TestConfig, counters: dict) -> None:
        super().__init__(cfg, counters)
        self.v6 = cfg.probe_type == "icmp6-ping"
        self.raw = False
        self.ident = random.randrange(1, 0xFFFF)
        self.payload = cfg.payload()

    def open(self) -> None:
        c = self.cfg
        self.sock, self.raw = sockets.open_icmp(self.v6, dscp=c.dscp, ttl=c.ttl, source=c.source_address,
                                                netns=c.routing_instance)
        if not self.raw:  # a ping socket: the kernel puts its port in the identifier and matches replies on it
            self.sock.connect((c.address, 0))
            self.ident = self.sock.getsockname()[1]
        else:
            self._filter()

    def _filter(self) -> None:
        try:
            sockets.attach_icmp_filter(self.sock, self.ident, self.v6)
        except OSError:
            self.count("socket-filter-errors")  # still correct, only slower with many tests

    def destination(self):
        return (self.cfg.address, 0) if self.raw else None

    def request(self, seq: int, now_ns: int) -> bytes:
        return wire.icmp_echo(self.ident, seq, self.payload, self.v6)

    def answer(self, data: bytes, t4: int, source) -> None:
        msg = wire.parse_icmp(data, self.v6, has_ip_header=self.raw)
        if msg is None:
            self.count("malformed-answers")
            return
        if self.raw and msg.ident != self.ident:
            return  # another socket's traffic (raw sockets see every ICMP message)
        if msg.error:
            self.settle(msg.seq, t4, icmp_reason(self.v6, msg.kind, msg.code))
            return
        if msg.kind != (wire.ICMP6_ECHO_REPLY if self.v6 else wire.ICMP_ECHO_REPLY):
            return
        o = self.waiting.get(msg.seq)
        if o is not None:
            self.settle(msg.seq, t4, rtt=t4 - o.outcome.sent)
        else:
            self.count("late-or-unknown-answers")

    def error(self, data: bytes, err, t: int) -> None:
        _errno, origin, kind, code, _ = err
        if origin not in (2, 3):  # SO_EE_ORIGIN_ICMP / ICMP6
            return
        if self.raw:  # raw sockets also get the ICMP error itself as a packet; answer() settles it
            return
        if len(data) >= 8:
            seq = int.from_bytes(data[6:8], "big")
            self.settle(seq, t, icmp_reason(self.v6, kind, code))

    @property
    def description(self) -> dict:
        return {"icmp_id": self.ident, "socket": "raw" if self.raw else "ping"}


class IcmpTimestampProber(IcmpProber):
    """icmp-ping-timestamp: ICMP timestamp request (type 13); one-way times in ms from the reply (type 14).
    Ping sockets carry echo only, so this needs a raw socket (CAP_NET_RAW)."""

    shift_egress = False  # millisecond figures

    def open(self) -> None:
        c = self.cfg
        self.sock, self.raw = sockets.open_icmp(False, raw_only=True, dscp=c.dscp, ttl=c.ttl,
                                                source=c.source_address, netns=c.routing_instance)
        self._filter()

    def request(self, seq: int, now_ns: int) -> bytes:
        return wire.icmp_timestamp(self.ident, seq, wire.ms_since_midnight(now_ns))

    def answer(self, data: bytes, t4: int, source) -> None:
        msg = wire.parse_icmp(data, False, has_ip_header=True)
        if msg is None or msg.ident != self.ident:
            return
        if msg.error:
            self.settle(msg.seq, t4, icmp_reason(False, msg.kind, msg.code))
            return
        if msg.kind != wire.ICMP_TIMESTAMP_REPLY or msg.timestamps is None:
            return
        w = self.waiting.get(msg.seq)
        if w is None:
            self.count("late-or-unknown-answers")
            return
        originate, recv, transmit = msg.timestamps
        values = {"rtt": t4 - w.outcome.sent}
        if not (recv | transmit) & 0x80000000:  # the high bit marks a non-standard time (RFC 792)
            egress = ((recv - originate) % wire.MS_PER_DAY) * 1_000_000
            ingress = ((wire.ms_since_midnight(t4) - transmit) % wire.MS_PER_DAY) * 1_000_000
            values.update(egress=egress, ingress=ingress)
        self.settle(msg.seq, t4, **values)


class UdpProber(DatagramProber):
    """udp-ping / udp-ping-timestamp: the RPM header to a probe server, which stamps its receive and send
    times (one-way times), or any RFC 862 echo server (round trip only)."""

    def __init__(self, cfg: TestConfig, counters: dict) -> None:
        super().__init__(cfg, counters)
        self.padding = cfg.payload(wire.RPM_SIZE)

    def key(self, seq: int) -> int:
        return seq & 0xFFFFFFFF

    def open(self) -> None:
        c = self.cfg
        self.sock = sockets.open_datagram(c.address, c.port, dscp=c.dscp, ttl=c.ttl, source=c.source_address,
                                          netns=c.routing_instance)

    def request(self, seq: int, now_ns: int) -> bytes:
        return wire.rpm_probe(seq, now_ns, self.padding)

    def answer(self, data: bytes, t4: int, source) -> None:
        h = wire.parse_rpm(data)
        if h is None:
            self.count("malformed-answers")
            return
        w = self.waiting.get(self.key(h.seq))
        if w is None or h.t1 // 1000 != w.outcome.sent // 1000:
            self.count("late-or-unknown-answers")
            return
        self.settle(self.key(h.seq), t4, **one_way(w.outcome.sent, h, t4))

    def error(self, data: bytes, err, t: int) -> None:
        _errno, origin, kind, code, _ = err
        h = wire.parse_rpm(data)
        if h is not None and origin in (2, 3):
            self.settle(self.key(h.seq), t, icmp_reason(origin == 3, kind, code))


def one_way(t1: int, h: wire.RpmHeader, t4: int) -> dict:
    """RTT without the server's hold time and, when the server stamped, egress T2-T1 and ingress T4-T3 (kept only
    when both lie within the round trip: otherwise the clocks disagree)."""
    if not h.t2 or not h.t3 or h.t3 < h.t2:
        return {"rtt": t4 - t1}
    rtt = (t4 - t1) - (h.t3 - h.t2)
    egress, ingress = h.t2 - t1, t4 - h.t3
    if rtt < 0 or not (0 <= egress <= rtt + 1000 and 0 <= ingress <= rtt + 1000):
        return {"rtt": max(rtt, 0) if rtt >= 0 else t4 - t1}
    return {"rtt": rtt, "egress": egress, "ingress": ingress}


class TcpProber(Prober):
    """tcp-ping: per probe a TCP connection to the probe server, the RPM header there and back."""

    def __init__(self, cfg: TestConfig, counters: dict) -> None:
        super().__init__(cfg, counters)
        self.padding = cfg.payload(wire.RPM_SIZE)

    async def probe(self, seq: int) -> Outcome:
        c = self.cfg
        o = Outcome(seq)
        try:
            raw = sockets.open_stream(c.address, dscp=c.dscp, ttl=c.ttl, source=c.source_address,
                                      netns=c.routing_instance)
        except OSError as exc:
            o.sent = o.received = time.time_ns()
            o.status, o.reason = "error", f"socket: {exc.strerror or exc}"
            return o
        sock = trio.socket.from_stdlib_socket(raw)
        try:
            with trio.move_on_after(c.probe_timeout):
                o.sent = time.time_ns()
                try:
                    await sock.connect((c.address, c.port))
                    o.sent = time.time_ns()
                    await sock.send(wire.rpm_probe(seq, o.sent, self.padding))
                    got, t4 = b"", 0
                    while len(got) < len(self.padding):
                        data, anc, _, _ = await sock.recvmsg(65536, wire.ANC_SIZE)
                        if not data:
                            raise ConnectionResetError(0, "closed by the server")
                        if len(got) < wire.RPM_SIZE <= len(got) + len(data):
                            t4 = wire.kernel_time(anc) or 0
                            o.timestamp = "kernel-rx"  # the send time is the clock just before send()
                            if not t4:
                                t4, o.timestamp = time.time_ns(), "user"
                        got += data
                except OSError as exc:
                    o.received = time.time_ns()
                    o.status, o.reason = "error", _reason(exc)
                    return o
                h = wire.parse_rpm(got)
                o.received = t4
                if h is None or h.seq != seq & 0xFFFFFFFF:
                    self.count("malformed-answers")
                    o.status, o.reason = "error", "not an RPM answer"
                    return o
                for k, v in one_way(o.sent, h, t4).items():
                    setattr(o, k, v)
                o.status, o.reason = "response", ""
                return o
            o.status, o.reason, o.received = "timeout", "timeout", time.time_ns()
            return o
        finally:
            sock.close()


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return (exc.strerror or str(exc)).lower()


class HttpProber(Prober):
    """http-get (GET) / http-metadata-get (HEAD): HTTP/1.1 over one connection per probe; the round trip is
    connect to last octet of the response (headers for HEAD).  A status of 400 or more fails the probe."""

    def __init__(self, cfg: TestConfig, counters: dict) -> None:
        super().__init__(cfg, counters)
        u = urlsplit(cfg.url)
        self.host = u.hostname
        self.port = u.port or 80
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.method = "HEAD" if cfg.probe_type == "http-metadata-get" else "GET"
        host = f"[{self.host}]" if ":" in self.host else self.host
        hosthdr = host if self.port == 80 else f"{host}:{self.port}"
        self.request = (f"{self.method} {self.path} HTTP/1.1\r\nHost: {hosthdr}\r\nUser-Agent: {HTTP_USER_AGENT}\r\n"
                        f"Accept: */*\r\nConnection: close\r\n\r\n").encode()

    async def _address(self) -> str:
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            infos = await trio.socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            return infos[0][4][0]

    async def probe(self, seq: int) -> Outcome:
        c = self.cfg
        o = Outcome(seq, timestamp="user")
        o.sent = time.time_ns()
        start = time.monotonic_ns()
        with trio.move_on_after(c.probe_timeout):
            try:
                address = await self._address()
                raw = sockets.open_stream(address, dscp=c.dscp, ttl=c.ttl, source=c.source_address,
                                          netns=c.routing_instance)
                sock = trio.socket.from_stdlib_socket(raw)
                try:
                    await sock.connect((address, self.port))
                    await sock.send(self.request)
                    status = await self._response(sock)
                finally:
                    sock.close()
            except OSError as exc:
                o.received = time.time_ns()
                o.status, o.reason = "error", _reason(exc)
                return o
            except ValueError as exc:
                self.count("malformed-answers")
                o.received = time.time_ns()
                o.status, o.reason = "error", str(exc)
                return o
            o.received = time.time_ns()
            o.rtt = time.monotonic_ns() - start
            o.http_status = status
            if status >= 400:
                o.status, o.reason = "error", f"http {status}"
            else:
                o.status = "response"
            return o
        o.status, o.reason, o.received = "timeout", "timeout", time.time_ns()
        return o

    async def _response(self, sock) -> int:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await sock.recv(65536)
            if not data:
                raise ValueError("connection closed before the response headers")
            buf += data
            if len(buf) > 65536:
                raise ValueError("response headers longer than 64 KiB")
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        status = int(parts[1])
        if self.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        want = min(length, HTTP_MAX_BODY) if length is not None else HTTP_MAX_BODY
        got = len(body)
        while got < want:
            data = await sock.recv(65536)
            if not data:
                if length is not None:
                    raise ValueError(f"response body ended after {got} of {length} octets")
                break
            got += len(data)
        return status


PROBERS = {"icmp-ping": IcmpProber, "icmp6-ping": IcmpProber, "icmp-ping-timestamp": IcmpTimestampProber,
           "udp-ping": UdpProber, "udp-ping-timestamp": UdpProber, "tcp-ping": TcpProber,
           "http-get": HttpProber, "http-metadata-get": HttpProber}


def make_prober(cfg: TestConfig, counters: dict) -> Prober:
    return PROBERS[cfg.probe_type](cfg, counters)

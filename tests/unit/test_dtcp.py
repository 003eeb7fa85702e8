"""DTCP: the wire format, the sequence window, and the control server over real loopback sockets.

``DtcpClient`` is a DTCP client written here, independently of the plugin's codec (its own
message builder, HMAC-SHA1 and reply check), used by this file, test_flow_capture.py and the
namespace test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import socket
from contextlib import asynccontextmanager

import pytest
import trio

from flowplane.plugins.flow_capture import dtcp
from flowplane.plugins.flow_capture.config import LIMITS, parse
from flowplane.plugins.flow_capture.dtcp import DtcpError, SequenceWindow
from flowplane.plugins.flow_capture.engine import FlowCapture
from flowplane.plugins.flow_capture.server import run_service
from flowplane.profiles import Limits
from flowplane.testing import config_from

KEY = b"s3cret-key-cs1"
KEY2 = b"another-key-cs2"


# ---------------------------------------------------------------------------------------------
# the test's own DTCP client
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict  # upper-case names -> value (CRITERIA repeated: list in criteria)
    criteria: list
    raw: bytes
    signed_ok: bool


def build(method: str, headers: list[tuple[str, object]], key: bytes | None, *, version: str = "DTCP/0.7") -> bytes:
    """A request as draft-cavuto-dtcp-03 / the Junos automation client writes it."""
    text = f"{method} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    raw = text.encode()
    if key is not None:
        raw += b"Authentication-Info: " + hmac.new(key, raw, hashlib.sha1).hexdigest().encode() + b"\r\n"
    return raw + b"\r\n"


def parse_reply(raw: bytes, key: bytes | None) -> Reply:
    assert raw.endswith(b"\r\n\r\n"), raw
    lines = raw[:-4].split(b"\r\n")
    start = lines[0].split(b" ", 2)
    assert start[0] == b"DTCP/0.7", raw
    headers: dict = {}
    criteria = []
    signed_ok = False
    offset = len(lines[0]) + 2
    for line in lines[1:]:
        name, _, value = line.decode().partition(": ")
        if name.upper() == "AUTHENTICATION-INFO":
            want = hmac.new(key or b"", raw[:offset], hashlib.sha1).hexdigest()
            signed_ok = key is not None and hmac.compare_digest(want, value)
        elif name.upper() == "CRITERIA":
            criteria.append(value)
        else:
            headers[name.upper()] = value
        offset += len(line) + 2
    return Reply(int(start[1]), headers, criteria, raw, signed_ok)


class DtcpClient:
    """A control source: numbers its requests, signs them, checks signed replies."""

    def __init__(self, name: str, key: bytes, address: tuple, *, transport: str = "udp", seq: int = 1) -> None:
        self.name, self.key, self.address, self.transport, self.seq = name, key, address, transport, seq
        self.sock = None
        self.buf = b""

    async def __aenter__(self):
        fam = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        if self.transport == "udp":
            self.sock = trio.socket.socket(fam, socket.SOCK_DGRAM)
            await self.sock.bind(("::1" if fam == socket.AF_INET6 else "127.0.0.1", 0))
        else:
            self.sock = trio.socket.socket(fam, socket.SOCK_STREAM)
            await self.sock.connect(self.address)
        return self

    async def __aexit__(self, *exc):
        self.sock.close()

    def message(self, method: str, headers: list, *, seq: int | None = None, key: bytes | None = ...) -> bytes:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        return build(method, [("Csource-ID", self.name), *headers, ("Seq", seq)], self.key if key is ... else key)

    async def send_raw(self, raw: bytes) -> None:
        if self.transport == "udp":
            await self.sock.sendto(raw, self.address)
        else:
            await self.sock.send(raw)

    async def receive(self, timeout: float = 5.0) -> Reply | None:
        with trio.move_on_after(timeout):
            if self.transport == "udp":
                data, _ = await self.sock.recvfrom(65535)
                return parse_reply(data, self.key)
            while b"\r\n\r\n" not in self.buf:
                chunk = await self.sock.recv(65536)
                if not chunk:
                    return None
                self.buf += chunk
            i = self.buf.index(b"\r\n\r\n") + 4
            data, self.buf = self.buf[:i], self.buf[i:]
            return parse_reply(data, self.key)
        return None

    async def request(self, method: str, headers: list = (), *, timeout: float = 5.0, **kw) -> Reply | None:
        await self.send_raw(self.message(method, list(headers), **kw))
        return await self.receive(timeout)


def dfc_yaml(*, cd_port: int = 9, notify_port: int | None = None, extra_source: str = "", extra_group: str = "",
             cd_extra: str = "", address: str = "127.0.0.1") -> str:
    notify = f"\n        notification-targets: [\"127.0.0.1 port {notify_port}\"]" if notify_port else ""
    return f"""\
services:
  dynamic-flow-capture:
    listen-address: 127.0.0.1
    capture-group lab:
      control-source cs1:
        source-addresses: [127.0.0.0/8]
        service-port: 0
        shared-key: {KEY.decode()}
        allowed-destinations: [cd1, cd2]
        minimum-priority: 2{notify}
{extra_source}      control-source cs2:
        source-addresses: [127.0.0.1]
        service-port: 0
        shared-key: {KEY2.decode()}
      control-source far:
        source-addresses: [192.0.2.0/24]
        service-port: 0
        shared-key: farkey
      content-destination cd1:
        address: {address}
        port: {cd_port}
        ttl: 7
{cd_extra}      content-destination cd2:
        address: {address}
        port: {cd_port}
      content-destination cd3:
        address: {address}
        port: {cd_port}
{extra_group}"""


def engine_for(text: str, limits: Limits | None = None, **kw) -> FlowCapture:
    cfg, issues = parse(config_from(text).data, limits or Limits.of(LIMITS))
    assert issues == []
    return FlowCapture(cfg, **kw)


@asynccontextmanager
async def serving(engine: FlowCapture):
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run_service, engine)
        try:
            yield ("127.0.0.1", bound[0])
        finally:
            nursery.cancel_scope.cancel()
            engine.close()


# ---------------------------------------------------------------------------------------------
# wire format
# ---------------------------------------------------------------------------------------------


def test_client_message_parses_and_verifies():
    raw = build("ADD", [("csource-id", "cs1"), ("CDEST-ID", "cd1,cd2"), ("Source-Address", "192.0.2.2"),
                        ("Seq", 18446744073709551615)], KEY)
    m = dtcp.parse(raw)
    assert m.method == "ADD" and m.get("Csource-ID") == "cs1" and m.get("cdest-id") == "cd1,cd2"
    assert m.seq == 2**64 - 1
    assert m.signed == raw[: raw.index(b"Authentication-Info")]
    assert dtcp.verify(KEY, m) and not dtcp.verify(KEY2, m)
    tampered = raw.replace(b"192.0.2.2", b"192.0.2.3")
    assert not dtcp.verify(KEY, dtcp.parse(tampered))
    # the plugin's own encoder signs the same way the client does
    assert dtcp.request("ADD", [("csource-id", "cs1"), ("CDEST-ID", "cd1,cd2"), ("Source-Address", "192.0.2.2"),
                                ("Seq", 2**64 - 1)], KEY) == raw
    reply = parse_reply(dtcp.response(200, [("seq", 5), ("criteria-id", 3)], KEY), KEY)
    assert reply.status == 200 and reply.headers == {"SEQ": "5", "CRITERIA-ID": "3"} and reply.signed_ok


@pytest.mark.parametrize("raw, kind", [
    (b"\xff\xfe ADD DTCP/0.7\r\n\r\n", "not_dtcp"),
    (b"ADD DTCP/0.7\nSeq: 1\n\n", "not_dtcp"),
    (b"GET / HTTP/1.1\r\n\r\n", "not_dtcp"),
    (b"FROB DTCP/0.7\r\nSeq: 1\r\n\r\n", "bad_command"),
    (b"ADD DTCP/1.0\r\nSeq: 1\r\n\r\n", "bad_command"),
    (b"ADD DTCP/0.7\r\nSeq: 1\r\nseq: 2\r\n\r\n", "bad_request"),
    (b"ADD DTCP/0.7\r\nAuthentication-Info: 00\r\nSeq: 1\r\n\r\n", "bad_request"),
    (b"ADD DTCP/0.7\r\nno colon here\r\n\r\n", "not_dtcp"),
    (b"ADD DTCP/0.7\r\n" + b"X-Pad: " + b"a" * 17000 + b"\r\n\r\n", "too_large"),
])
def test_malformed_messages_are_refused_with_a_reason(raw, kind):
    with pytest.raises(DtcpError) as exc:
        dtcp.parse(raw)
    assert exc.value.kind == kind


def test_seq_must_be_64_bit():
    for bad in ("-1", str(2**64), "x"):
        with pytest.raises(DtcpError):
            _ = dtcp.parse(build("ADD", [("Seq", bad)], None)).seq


def test_tcp_stream_split():
    buf = bytearray(build("NOOP", [("Seq", 1)], None) + build("NOOP", [("Seq", 2)], None) + b"LIST DTC")
    msgs = dtcp.split_stream(buf)
    assert [dtcp.parse(m).seq for m in msgs] == [1, 2] and bytes(buf) == b"LIST DTC"
    with pytest.raises(DtcpError):
        dtcp.split_stream(bytearray(b"x" * (dtcp.MAX_MESSAGE + 1)))


def test_sequence_window_edges():
    w = SequenceWindow()
    assert w.check(1000) == "ok"
    w.accept(1000)
    assert w.check(1000) == "replay"
    assert w.check(1000 + 256) == "ok" and w.check(1000 + 257) == "out_of_window"
    assert w.check(1000 - 256) == "ok" and w.check(1000 - 257) == "out_of_window"
    w.accept(1000 - 256)
    assert w.check(1000 - 256) == "replay"
    w.accept(1100)  # the window slides; 1000 is still remembered as seen
    assert w.highest == 1100 and w.check(1000) == "replay" and w.check(999) == "ok"
    assert w.check(1100 - 257) == "out_of_window"
    w.accept(1100 + 256)
    assert w.check(1100) == "replay" and w.check(1099) == "out_of_window"
    top = SequenceWindow()
    top.accept(2**64 - 1)
    assert top.check(2**64 - 1) == "replay" and top.check(2**64 - 2) == "ok"


# ---------------------------------------------------------------------------------------------
# the control server over loopback sockets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_add_list_refresh_delete(transport):
    engine = engine_for(dfc_yaml())
    async with serving(engine) as addr, DtcpClient("cs1", KEY, addr, transport=transport, seq=41) as c:
        r = await c.request("ADD", [("Cdest-ID", "cd1"), ("Source-Address", "192.0.2.0/24"), ("Dest-Port", "80"),
                                    ("Protocol", "6"), ("Priority", "3"), ("Total-Timeout", "600")])
        assert r.status == 200 and r.signed_ok and r.headers["SEQ"] == "41"
        first = int(r.headers["CRITERIA-ID"])
        r = await c.request("ADD", [("Cdest-ID", "cd2"), ("Dest-Address", "2001:db8::/64"), ("Flags", "STATIC")])
        assert r.status == 200
        second = int(r.headers["CRITERIA-ID"])
        r = await c.request("LIST", [("Flags", "Criteria")])
        assert r.status == 200 and r.signed_ok and r.headers["CRITERIA-COUNT"] == "2"
        assert r.criteria[0].startswith(f"id={first}; cdest-id=cd1; priority=3; Source-Address=192.0.2.0/24")
        assert "Dest-Address=2001:db8::/64" in r.criteria[1] and r.criteria[1].endswith("flags=STATIC")
        r = await c.request("LIST", [("Cdest-ID", "cd2")])
        assert r.headers["CRITERIA-COUNT"] == "1"
        r = await c.request("REFRESH", [("Criteria-ID", first), ("Total-Timeout", "900")])
        assert r.status == 200 and r.headers["CRITERIA-COUNT"] == "1"
        assert engine.groups["lab"].criteria[first].total_timeout == 900
        r = await c.request("REFRESH", [("Criteria-ID", second), ("Idle-Timeout", "5")])
        assert r.status == 400 and "STATIC" in r.headers["ERROR"]
        r = await c.request("DELETE", [("Criteria-ID", first)])
        assert r.status == 200 and r.headers["CRITERIA-COUNT"] == "1"
        r = await c.request("DELETE", [("Criteria-ID", first)])
        assert r.status == 404
        r = await c.request("NOOP")
        assert r.status == 200
        r = await c.request("DELETE", [("Criteria-ID", "*")])
        assert r.status == 200 and r.headers["CRITERIA-COUNT"] == "1"
        assert engine.groups["lab"].criteria == {}
    [row] = [s for s in engine.source_rows() if s["control_source"] == "cs1"]
    assert row["requests"] == {"add": 2, "delete": 3, "list": 2, "refresh": 2, "noop": 1}
    assert row["failed"]["delete"] == 1 and row["failed"]["refresh"] == 1
    assert row["criteria_added"] == 2 and row["sequence_number"] == 50


async def test_sources_are_isolated():
    engine = engine_for(dfc_yaml())
    async with serving(engine) as addr, DtcpClient("cs1", KEY, addr) as a, DtcpClient("cs2", KEY2, addr) as b:
        ra = await a.request("ADD", [("Cdest-ID", "cd1"), ("Protocol", "17")])
        rb = await b.request("ADD", [("Cdest-ID", "cd3"), ("Protocol", "6")])
        ida, idb = ra.headers["CRITERIA-ID"], rb.headers["CRITERIA-ID"]
        r = await b.request("LIST")
        assert r.headers["CRITERIA-COUNT"] == "1" and r.criteria[0].startswith(f"id={idb};")
        for method in ("DELETE", "REFRESH", "LIST"):  # another source's criteria do not exist for cs2
            r = await b.request(method, [("Criteria-ID", ida)])
            assert r.status == 404, method
        r = await b.request("DELETE", [("Criteria-ID", "*")])
        assert r.headers["CRITERIA-COUNT"] == "1"
        assert list(engine.groups["lab"].criteria) == [int(ida)]
        # cs2 signing as cs1 with its own key: refused
        forged = build("ADD", [("Csource-ID", "cs1"), ("Cdest-ID", "cd1"), ("Seq", 99)], KEY2)
        await b.send_raw(forged)
        r = await b.receive()
        assert r.status == 401
    assert len(engine.groups["lab"].criteria) == 1


async def test_refusals_are_counted():
    engine = engine_for(dfc_yaml())
    async with serving(engine) as addr, DtcpClient("cs1", KEY, addr, seq=1000) as c:
        assert (await c.request("NOOP")).status == 200  # highest = 1000
        r = await c.request("NOOP", seq=1000)  # replay
        assert r.status == 409 and r.signed_ok and "replay" in r.headers["ERROR"]
        assert (await c.request("NOOP", seq=1000 + 257)).status == 409  # ahead of the window
        assert (await c.request("NOOP", seq=1000 - 257)).status == 409  # behind it
        assert (await c.request("NOOP", seq=1000 - 256)).status == 200  # inside, not seen before
        assert (await c.request("NOOP", seq=1000 + 256)).status == 200
        r = await c.request("ADD", [("Cdest-ID", "cd1")], seq=2000, key=b"wrong key")
        assert r.status == 401 and not r.signed_ok
        r = await c.request("ADD", [("Cdest-ID", "cd1")], seq=2001, key=None)  # unsigned
        assert r.status == 401
        # a refused signature does not move the window: 1001 is still fine
        assert (await c.request("NOOP", seq=1001)).status == 200
        # a replay of a signed message captured off the wire
        captured = c.message("NOOP", [], seq=1002)
        await c.send_raw(captured)
        assert (await c.receive()).status == 200
        await c.send_raw(captured)
        assert (await c.receive()).status == 409
        # silent drops: unknown source, and a known source from an address outside its source-addresses
        await c.send_raw(build("NOOP", [("Csource-ID", "nobody"), ("Seq", 1)], KEY))
        assert await c.receive(0.3) is None
        await c.send_raw(build("NOOP", [("Csource-ID", "far"), ("Seq", 1)], b"farkey"))
        assert await c.receive(0.3) is None
        await c.send_raw(b"\x00\x01garbage")
        assert (await c.receive()).status == 400
    st = engine.statistics()
    assert st["drops"] == {"sequence_replay": 2, "sequence_out_of_window": 2, "bad_authentication": 2,
                           "unknown_control_source": 1, "unauthorized_control_source": 1, "not_dtcp": 1}
    assert st["control_packets"] == 14
    [row] = [s for s in engine.source_rows() if s["control_source"] == "cs1"]
    assert row["refused"] == {"sequence_replay": 2, "sequence_out_of_window": 2, "authentication": 2}
    assert row["requests"]["noop"] == 5 and row["sequence_number"] == 1256


async def test_priority_destinations_and_capacity():
    engine = engine_for(dfc_yaml(extra_group="      pic-memory-threshold: {percentage: 50}\n"),
                        Limits.of(LIMITS, dfc_criteria_max=4))
    async with serving(engine) as addr, DtcpClient("cs1", KEY, addr) as c:
        r = await c.request("ADD", [("Cdest-ID", "cd1"), ("Priority", "1")])
        assert r.status == 403 and "minimum-priority 2" in r.headers["ERROR"]
        assert (await c.request("ADD", [("Cdest-ID", "cd3")])).status == 403  # not in allowed-destinations
        assert (await c.request("ADD", [("Cdest-ID", "nope")])).status == 400
        assert (await c.request("ADD", [("Cdest-ID", "cd1"), ("Colour", "blue")])).status == 400
        assert (await c.request("ADD", [("Cdest-ID", "cd1"), ("Source-Address", "10.0.0.1"),
                                        ("Dest-Address", "2001:db8::1")])).status == 400
        assert (await c.request("ADD", [("Cdest-ID", "cd1"), ("Flags", "STATIC"), ("Packet-Limit", "5")])).status == 400
        assert (await c.request("ADD", [("Cdest-ID", "cd1"), ("X-JTap-Cdest-TTL", "64")])).status == 400
        assert (await c.request("ADD", [("Cdest-ID", "cd1"), ("X-JTap-Cdest-TTL", "7")])).status == 200
        r = await c.request("ADD", [("Cdest-ID", "cd1,cd2")])
        assert r.status == 200
        assert engine.groups["lab"].criteria[int(r.headers["CRITERIA-ID"])].priority == 2  # the minimum by default
        r = await c.request("ADD", [("Cdest-ID", "cd1")])
        assert r.status == 503  # 50 % of dfc_criteria_max 4
    [row] = [s for s in engine.source_rows() if s["control_source"] == "cs1"]
    assert row["criteria_added"] == 2 and row["criteria_add_failed"] == 8
    assert engine.statistics()["groups"][0]["add_refused_capacity"] == 1


async def test_tcp_framing_and_oversize():
    engine = engine_for(dfc_yaml())
    async with serving(engine) as addr, DtcpClient("cs1", KEY, addr, transport="tcp") as c:
        two = c.message("NOOP", []) + c.message("ADD", [("Cdest-ID", "cd1")])
        await c.send_raw(two)  # two requests in one segment
        assert (await c.receive()).status == 200 and (await c.receive()).headers["CRITERIA-ID"]
        one = c.message("LIST", [])
        for i in range(0, len(one), 7):  # one request in many segments
            await c.send_raw(one[i : i + 7])
            await trio.sleep(0.001)
        r = await c.receive()
        assert r.status == 200 and r.headers["CRITERIA-COUNT"] == "1"
        await c.send_raw(b"ADD DTCP/0.7\r\nX: " + b"y" * (dtcp.MAX_MESSAGE + 10))
        r = await c.receive()
        assert r.status == 413
        with trio.fail_after(5):
            assert await c.sock.recv(10) == b""  # the server closed the connection
    assert engine.stats["drops.too_large"] == 1
    assert engine.statistics()["other"] == {"tcp_connections": 1}


def test_mutated_requests_never_crash_the_handler():
    """Random byte flips, cuts and insertions of valid signed requests: always a reply or a
    counted silent drop, never an exception."""
    import random

    engine = engine_for(dfc_yaml())
    rng = random.Random(5)
    seeds = [build("ADD", [("Csource-ID", "cs1"), ("Cdest-ID", "cd1"), ("Source-Address", "10.0.0.0/8"),
                           ("Dest-Port", "1-80"), ("Protocol", "6"), ("Packet-Limit", "9"), ("Seq", 1)], KEY),
             build("LIST", [("Csource-ID", "cs1"), ("Flags", "Criteria"), ("Seq", 2)], KEY),
             build("DELETE", [("Csource-ID", "cs2"), ("Criteria-ID", "*"), ("Seq", 3)], KEY2)]
    replies = 0
    for _round in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.random(), rng.randrange(len(raw))
            if op < 0.4:
                raw[pos] = rng.randrange(256)
            elif op < 0.7:
                del raw[pos : pos + rng.randint(1, 10)]
            else:
                raw[pos:pos] = bytes(rng.choice([b"\r\n", b":", b"\n", b"*", b"-", b"\x00", b"99999999999999999999"]))
        reply = engine.handle(bytes(raw), "127.0.0.1")
        if reply is not None:
            replies += 1
            assert reply.startswith(b"DTCP/0.7 ") and reply.endswith(b"\r\n\r\n")
            dtcp.parse(reply)  # our replies are valid DTCP, whatever the request held
    assert engine.stats["control_packets"] == 3000 and replies > 2000
    assert sum(v for k, v in engine.stats.items() if k.startswith("drops.")) > 0


def test_signed_requests_with_odd_values_are_refused_cleanly():
    """Correctly signed requests whose values are nonsense reach the criteria parser: each one
    gets a signed 200 or 4xx/5xx reply, never an exception."""
    import random

    engine = engine_for(dfc_yaml())
    rng = random.Random(11)
    values = ["*", "", "0", "-1", "65536", "1-", "5-3", "80-90", "10.0.0.0/33", "::/0", "2001:db8::1", "1.2.3.4",
              "STATIC", "static,foo", "ipv5", "ipv6", "cd1", "cd1,cd3", "cd9", "18446744073709551616", "x" * 300,
              "eth0", "3", "17", "300"]
    names = ["Source-Address", "Dest-Address", "Source-Port", "Dest-Port", "Protocol", "Priority", "Flags",
             "Total-Timeout", "Idle-Timeout", "Packet-Limit", "Byte-Limit", "X-JTap-IP-Version", "Cdest-ID",
             "X-JTap-Input-Interface", "X-JTap-Cdest-Dest-Port", "Criteria-ID", "Timeout"]
    codes = set()
    for seq in range(1, 1500):
        method = rng.choice(["ADD", "ADD", "ADD", "DELETE", "REFRESH", "LIST"])
        headers = {n: rng.choice(values) for n in rng.sample(names, rng.randint(0, 6))}
        if method == "ADD":
            headers.setdefault("Cdest-ID", "cd1")
        raw = build(method, [("Csource-ID", "cs1"), *headers.items(), ("Seq", seq)], KEY)
        reply = parse_reply(engine.handle(raw, "127.0.0.1"), KEY)
        assert reply.signed_ok and reply.headers["SEQ"] == str(seq)
        codes.add(reply.status)
    assert {200, 400, 403, 404} <= codes and codes <= {200, 400, 403, 404, 503}

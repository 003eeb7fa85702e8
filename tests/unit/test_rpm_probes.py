"""Every RPM probe type on loopback against real servers: our probe server (UDP, TCP), a trio HTTP server written
here, the kernel's ICMP echo and timestamp replies.  Bad input is counted and timed out, never a crash."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from flowplane.plugins.rpm.config import ServerConfig, TestConfig
from flowplane.plugins.rpm.engine import TestRunner
from flowplane.plugins.rpm.server import ProbeServer


def make(probe_type, *, address="127.0.0.1", url=None, port=7, count=4, interval=0.01, timeout=1.0, **kw):
    return TestConfig("o", "t", probe_type, address=None if url else address, url=url, probe_count=count,
                      probe_interval=interval, probe_timeout=timeout, port=port, test_interval=0, **kw)


async def run(cfg, tests=1):
    runner = TestRunner(cfg)
    with trio.fail_after(30):
        await runner.run(None, tests)
    return runner


async def start_server(nursery, protocol, address="127.0.0.1"):
    srv = ProbeServer(ServerConfig(protocol, 0, address))
    bound = await nursery.start(srv.run)
    return srv, bound[1]


def can_raw():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return True
    except OSError:
        return False


def can_icmp():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
        return True
    except OSError:
        return can_raw()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def assert_all_answered(runner, count):
    last = runner.results.last
    assert (last.sent, last.received) == (count, count), last.reasons
    rtt = last.sets["rtt"]
    assert rtt.samples == count and 0 < rtt.lo <= rtt.hi < 1_000_000
    assert "clock-steps" not in runner.counters and "malformed-answers" not in runner.counters
    return last


@pytest.mark.skipif(not can_icmp(), reason="needs a ping socket (net.ipv4.ping_group_range) or CAP_NET_RAW")
async def test_icmp_ping_loopback():
    runner = await run(make("icmp-ping", count=5, **{"data_size": 56}))
    assert_all_answered(runner, 5)
    st = runner.status()
    assert st["socket"] in ("ping", "raw") and st["icmp_id"] and st["last_probe"]["timestamp"] == "kernel"


@pytest.mark.skipif(not (can_icmp() and ipv6_loopback()), reason="needs ICMPv6 sockets and ::1")
async def test_icmp6_ping_loopback():
    assert_all_answered(await run(make("icmp6-ping", address="::1", count=3)), 3)


@pytest.mark.skipif(not can_raw(), reason="icmp-ping-timestamp needs a raw socket (CAP_NET_RAW)")
async def test_icmp_timestamp_gives_one_way_times():
    last = assert_all_answered(await run(make("icmp-ping-timestamp", count=3)), 3)
    # ms-granular one-way times from RFC 792 timestamps: on loopback they are 0 or 1 ms
    assert last.sets["egress"].samples == 3 and last.sets["egress"].hi <= 1000


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
async def test_udp_and_tcp_ping_against_our_probe_server(nursery, protocol):
    srv, port = await start_server(nursery, protocol)
    runner = await run(make(f"{protocol}-ping", port=port, count=6, data_size=200, dscp=46))
    last = assert_all_answered(runner, 6)
    # one-way times from the server's stamps; same host, same clock: each within the round trip
    for name in ("egress", "ingress"):
        assert last.sets[name].samples == 6
    for e in runner.results.history:
        assert 0 <= e.egress <= e.rtt + 1 and 0 <= e.ingress <= e.rtt + 1
    assert srv.counters["rpm-probes"] == 6


async def test_udp_ping_timestamp_and_ipv6(nursery):
    if not ipv6_loopback():
        pytest.skip("no ::1")
    srv, port = await start_server(nursery, "udp", "::")
    assert_all_answered(await run(make("udp-ping-timestamp", address="::1", port=port, count=3)), 3)
    assert_all_answered(await run(make("udp-ping", address="127.0.0.1", port=port, count=2)), 2)  # dual-stack


async def http_server(nursery, handler):
    """A small trio HTTP/1.1 server: *handler(request_bytes, stream)* answers one request per connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    seen = []

    async def serve(stream):
        buf = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buf += data
            seen.append(buf)
            await handler(buf, stream)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, serve, listeners)
    return port, seen


async def ok_handler(req, stream):
    body = b"x" * 5000 if req.startswith(b"GET /") else b""
    status = b"404 Not Found" if b" /missing " in req else b"200 OK"
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: 5000\r\nContent-Type: text/plain\r\n\r\n"
    await stream.send_all(head + body)


async def test_http_get_and_metadata_get(nursery):
    port, seen = await http_server(nursery, ok_handler)
    runner = await run(make("http-get", url=f"http://127.0.0.1:{port}/index.html", count=3))
    assert_all_answered(runner, 3)
    assert runner.results.last_probe.http_status == 200
    assert seen[0].startswith(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:") and b"Connection: close" in seen[0]
    runner = await run(make("http-metadata-get", url=f"http://127.0.0.1:{port}/", count=2))
    assert_all_answered(runner, 2)
    assert seen[-1].startswith(b"HEAD / HTTP/1.1")
    runner = await run(make("http-get", url=f"http://127.0.0.1:{port}/missing", count=2))
    assert runner.results.last.received == 0 and runner.results.last.reasons == {"http 404": 2}


async def test_hanging_http_server_times_out(nursery):
    async def hang(req, stream):
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await trio.sleep_forever()

    port, _ = await http_server(nursery, hang)
    start = trio.current_time()
    runner = await run(make("http-get", url=f"http://127.0.0.1:{port}/", count=2, timeout=0.3))
    assert trio.current_time() - start < 5
    assert runner.results.last.reasons == {"timeout": 2}
    assert runner.counters["probes-timeout"] == 2


async def test_garbage_answers_are_counted_not_fatal(nursery):
    """A UDP "server" that answers every probe with garbage, then with a wrong sequence number."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def bad_server():
        n = 0
        while True:
            data, peer = await sock.recvfrom(65535)
            n += 1
            await sock.sendto(os.urandom(n % 80), peer)  # short and long garbage
            await sock.sendto(data[:20] + b"\xff\xff\xff\xff" + data[24:], peer)  # not our sequence

    nursery.start_soon(bad_server)
    runner = await run(make("udp-ping", port=port, count=4, timeout=0.2))
    assert runner.results.last.received == 0 and runner.results.last.reasons == {"timeout": 4}
    assert runner.counters["malformed-answers"] + runner.counters["late-or-unknown-answers"] >= 8


async def test_refused_and_unreachable_are_answers_not_hangs(nursery):
    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    start = trio.current_time()
    udp = await run(make("udp-ping", port=port, count=3, timeout=2))
    tcp = await run(make("tcp-ping", port=port, count=3, timeout=2))
    assert trio.current_time() - start < 3  # ICMP port unreachable and RST answer at once
    assert udp.results.last.reasons == {"port unreachable": 3}
    assert tcp.results.last.reasons == {"connection refused": 3}
    assert udp.results.last.received == tcp.results.last.received == 0
    # an address nobody answers (TEST-NET, but the probe only goes as far as the loopback route allows)
    silent = await run(make("udp-ping", address="127.0.0.1", port=port, count=1, timeout=0.2))
    assert silent.results.all.sent == 1


async def test_probe_server_survives_a_garbage_flood(nursery):
    srv, port = await start_server(nursery, "udp")
    tsrv, tport = await start_server(nursery, "tcp")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with trio.fail_after(20):
        for batch in range(20):  # 2000 datagrams of 0..99 random octets, 100 at a time (no kernel drops)
            for i in range(100):
                sender.sendto(os.urandom(i), ("127.0.0.1", port))
            while srv.counters.get("received", 0) < (batch + 1) * 100:
                await trio.sleep(0.001)
    sender.close()
    for i in range(20):  # TCP: garbage, short writes, early closes
        s = await trio.open_tcp_stream("127.0.0.1", tport)
        await s.send_all(os.urandom(i * 7))
        await s.aclose()
    c = srv.counters
    assert c["received"] == 2000 and c["dropped-empty"] == 20 and c["echoed-not-rpm"] == 1980
    # and it still answers real probes, UDP and TCP
    assert_all_answered(await run(make("udp-ping", port=port, count=3)), 3)
    assert_all_answered(await run(make("tcp-ping", port=tport, count=3)), 3)


async def test_missing_namespace_fails_every_probe_with_the_reason():
    runner = await run(make("udp-ping", port=50000, count=2, routing_instance="no-such-ns-fp"))
    assert runner.results.last.reasons and runner.results.last.received == 0
    assert "no-such-ns-fp" in runner.last_error and runner.counters["socket-errors"] == 1


async def test_a_fault_in_a_probe_is_a_counted_failure_not_a_crash(monkeypatch):
    from flowplane.plugins.rpm import probes

    async def broken(self, seq):
        raise RuntimeError("boom")

    monkeypatch.setattr(probes.TcpProber, "probe", broken)
    runner = await run(make("tcp-ping", port=50000, count=2), tests=2)
    assert runner.results.all.sent == 4 and runner.counters["probe-faults"] == 4
    assert runner.results.all.reasons == {"internal error: RuntimeError: boom": 4}

"""Batched UDP reads (plugins/collector/recvmmsg.py) against real loopback sockets: recvmmsg and its fallback."""

from __future__ import annotations

import socket
import time

import pytest
import trio

from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.config import CollectorConfig, Listen
from flowplane.plugins.collector.listener import UdpListener
from flowplane.plugins.collector.recvmmsg import SO_RXQ_OVFL, BatchReceiver, load_recvmmsg

MODES = [pytest.param(True, id="recvmmsg"), pytest.param(False, id="recvfrom")]


def _receiver_socket(family: int, host: str, rcvbuf: int | None = None, rxq: bool = False) -> socket.socket:
    r = socket.socket(family, socket.SOCK_DGRAM)
    if rcvbuf:
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if rxq:
        r.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    r.bind((host, 0))
    r.setblocking(False)
    return r


def _read_all(rx: BatchReceiver, expect: int, room: int = 1000, timeout: float = 5.0) -> list:
    """Read until *expect* datagrams came (loopback delivery is immediate, but be patient)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += rx.read(room)
    return got


def test_recvmmsg_is_available_on_this_linux():
    assert load_recvmmsg() is not None  # else every listener silently takes the slower fallback


@pytest.mark.parametrize("use", MODES)
def test_empty_queue_reads_nothing(use):
    r = _receiver_socket(socket.AF_INET, "127.0.0.1")
    with r:
        rx = BatchReceiver(r, use_recvmmsg=use)
        assert rx.mode == ("recvmmsg" if use else "recvfrom")
        assert rx.read(64) == []
        assert rx.read(0) == []
        rx.close()


@pytest.mark.parametrize("use", MODES)
def test_boundaries_order_and_ipv4_addresses(use):
    r = _receiver_socket(socket.AF_INET, "127.0.0.1", rcvbuf=4 << 20)
    senders = []
    try:
        for k in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.0.{k + 2}", 0))
            senders.append(s)
        sent = []
        for i in range(200):  # more than one recvmmsg call (64), lengths 0 .. 1499 and one of 65507
            payload = bytes([i % 256]) * ((i * 7) % 1500) if i != 100 else b"\xab" * 65507
            s = senders[i % 3]
            s.sendto(payload, r.getsockname())
            sent.append((payload, f"127.0.0.{i % 3 + 2}"))
        rx = BatchReceiver(r, use_recvmmsg=use)
        got = _read_all(rx, len(sent), room=150)
        assert got == sent  # every datagram whole, in order, with its source address
        assert all(isinstance(d, bytes) for d, _ in got)
        assert rx.truncated == 0
        assert rx.read(64) == []
        if use:
            assert rx.calls <= 6  # batched: 200 datagrams in a handful of calls, not 200
        rx.close()
    finally:
        r.close()
        for s in senders:
            s.close()


@pytest.mark.parametrize("use", MODES)
def test_room_is_respected(use):
    r = _receiver_socket(socket.AF_INET, "127.0.0.1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with r, s:
        for i in range(100):
            s.sendto(i.to_bytes(2, "big"), r.getsockname())
        time.sleep(0.05)
        rx = BatchReceiver(r, use_recvmmsg=use)
        first = rx.read(70)
        assert len(first) == 70
        rest = _read_all(rx, 30)
        assert [int.from_bytes(d, "big") for d, _ in first + rest] == list(range(100))
        rx.close()


@pytest.mark.parametrize("use", MODES)
def test_ipv6_addresses(use):
    r = _receiver_socket(socket.AF_INET6, "::1")
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with r, s:
        s.bind(("::1", 0))
        for i in range(10):
            s.sendto(b"v6-%d" % i, r.getsockname()[:2])
        rx = BatchReceiver(r, use_recvmmsg=use)
        got = _read_all(rx, 10)
        assert got == [(b"v6-%d" % i, "::1") for i in range(10)]
        rx.close()


@pytest.mark.parametrize("use", MODES)
def test_truncated_datagrams_are_counted_not_passed_on(use):
    r = _receiver_socket(socket.AF_INET, "127.0.0.1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with r, s:
        for size in (100, 600, 512, 513, 50):
            s.sendto(b"z" * size, r.getsockname())
        rx = BatchReceiver(r, slot=512, use_recvmmsg=use)
        got = _read_all(rx, 3)
        time.sleep(0.05)
        got += rx.read(64)
        assert [len(d) for d, _ in got] == [100, 512, 50]
        assert rx.truncated == 2
        rx.close()


@pytest.mark.parametrize("use", MODES)
def test_kernel_drop_count_from_rxq_ovfl(use):
    # a tiny receive buffer overflows: the kernel stamps the drop count on what it still queues
    r = _receiver_socket(socket.AF_INET, "127.0.0.1", rcvbuf=4096, rxq=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with r, s:
        for _ in range(200):
            s.sendto(b"d" * 1000, r.getsockname())
        rx = BatchReceiver(r, rxq=True, use_recvmmsg=use)
        queued = rx.read(1000)
        assert 0 < len(queued) < 200
        assert rx.rxq_drops == 0  # what was queued came before any drop
        s.sendto(b"after", r.getsockname())  # queued after the drops: carries the count
        got = _read_all(rx, 1)
        assert got == [(b"after", "127.0.0.1")]
        assert rx.rxq_drops == 200 - len(queued)  # every datagram that did not fit
        rx.close()


async def test_listener_counts_truncated_and_reads_in_batches(tmp_path):
    c = Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)]))
    assert isinstance(c.listeners[0], UdpListener) and c.listeners[0].counters is c.counters
    # buffers smaller than the first datagram below: it must be counted, not cut
    lst = UdpListener(Listen("127.0.0.1", 0), c.handle_live, 1 << 20, c.counters, datagram_buffer=64)
    async with trio.open_nursery() as nursery:
        await nursery.start(lst.run)
        assert lst.read_mode == "recvmmsg"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.sendto(b"\x00\x05" + b"x" * 100, lst.bound)
            s.sendto(b"\x00\x63" + b"y" * 10, lst.bound)  # bad version, passed on to the decoder
            for _ in range(200):
                await trio.sleep(0.01)
                if c.counters.drops.get(("receive", "truncated")) and c.counters["datagrams"]:
                    break
        nursery.cancel_scope.cancel()
    assert c.counters.drops[("receive", "truncated")] == 1
    assert c.counters.drops[("decode", "bad-version")] == 1
    assert lst.datagrams == 1

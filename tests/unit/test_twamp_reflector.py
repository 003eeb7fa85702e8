"""Session-Reflector and Light reflector quality over real loopback sockets: every legal sender size
(unauthenticated, authenticated, encrypted), padding truncated for symmetric sizes, the received TTL
copied, T2 <= T3 (T3 stamped last), an honest Error Estimate (the S bit follows the kernel's own
clock state), a burst absorbed with nothing lost and sequence numbers in order, and the worker
thread's lifetime (idle timeout, Stop-Sessions linger, cancellation) owned by trio."""

from __future__ import annotations

import os
import socket
import time

import pytest
import trio

from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.config import LightConfig
from flowplane.plugins.twamp.crypto import SessionCrypto, new_keys, session_test_keys
from flowplane.plugins.twamp.light import LightReflector, stamp_t3
from flowplane.plugins.twamp.server import ReflectorSession, make_sid
from flowplane.plugins.twamp.udp import (
    REFLECTOR_RCVBUF,
    ClockStatus,
    error_estimate_for,
    open_udp_raw,
    read_kernel_clock,
)

# -- the Error Estimate -----------------------------------------------------------------------------


def test_error_estimate_synchronised_clock_sets_s_and_uses_esterror():
    ee = wire.ErrorEstimate.unpack(error_estimate_for(
        {"state": 0, "status": 0x2001, "synchronised": True, "maxerror_us": 250_000, "esterror_us": 300}))
    assert ee.synced and ee.multiplier > 0
    assert 300e-6 <= ee.seconds <= 2 * 300e-6  # covers esterror, no more than one scale step above


def test_error_estimate_unsynchronised_clock_clears_s_and_uses_maxerror():
    ee = wire.ErrorEstimate.unpack(error_estimate_for(
        {"state": 5, "status": 0x40, "synchronised": False, "maxerror_us": 16_000_000, "esterror_us": 16_000_000}))
    assert not ee.synced and 16.0 <= ee.seconds <= 32.0
    ee = wire.ErrorEstimate.unpack(error_estimate_for(
        {"state": 5, "status": 0x40, "synchronised": False, "maxerror_us": 2_000, "esterror_us": 50}))
    assert not ee.synced and 2e-3 <= ee.seconds <= 4e-3  # maxerror, not the optimistic esterror
    unknown = wire.ErrorEstimate.unpack(error_estimate_for(None))
    assert not unknown.synced and unknown.seconds >= 16.0


def test_kernel_clock_reading_decides_the_s_bit():
    clock = read_kernel_clock()
    assert clock is not None, "adjtimex(2) read-only must work on Linux"
    want = clock["state"] != 5 and not clock["status"] & 0x40
    assert clock["synchronised"] is want
    status = ClockStatus()
    assert status.synchronised is want
    assert status.as_dict()["synchronised"] is want


def test_clock_status_rereads_only_after_refresh_interval():
    reads = []

    def reader():
        reads.append(1)
        return {"state": 0, "status": 0, "synchronised": len(reads) > 1, "maxerror_us": 10, "esterror_us": 10}

    cs = ClockStatus(refresh_s=60, reader=reader)
    assert not cs.synchronised and len(reads) == 1
    cs.refresh(now_ns=cs._read_ns + 59 * 10**9)
    assert len(reads) == 1
    cs.refresh(now_ns=cs._read_ns + 60 * 10**9)
    assert len(reads) == 2 and cs.synchronised


def test_stamp_t3_is_later_and_never_before_t2():
    r = LightReflector(LightConfig(mode="stateless"))
    pkt = wire.pack_sender(wire.SenderPacket(1, wire.now_ntp(), 0x3FFF, bytes(27)))
    t2 = time.time_ns()
    reply = r.reflect(pkt, ("192.0.2.1", 1), t2, 64)
    first = wire.unpack_reflector(reply).timestamp
    time.sleep(0.002)
    stamp_t3(reply, t2)
    again = wire.unpack_reflector(reply).timestamp
    assert again > first >= wire.unpack_reflector(reply).receive_timestamp
    future = time.time_ns() + 10**9  # a T2 ahead of the clock (stepped clock): T3 is clamped to it
    stamp_t3(reply, future)
    assert wire.unpack_reflector(reply).timestamp == wire.ns_to_ntp(future)


# -- a real Session-Reflector over loopback ---------------------------------------------------------


def _session(mode: int, sender_port: int, keys=None) -> tuple[ReflectorSession, SessionCrypto | None]:
    sock = open_udp_raw("127.0.0.1", 0, ttl=255, rcvbuf=REFLECTOR_RCVBUF)
    sid = make_sid("127.0.0.1")
    sc = SessionCrypto(mode, session_test_keys(sid, *keys)) if keys else None
    s = ReflectorSession(sid, mode, "127.0.0.1", sender_port, "127.0.0.1", sock.getsockname()[1], 0, 0,
                         10**9, 0, sc, sock, clock=ClockStatus())
    s.started = True
    return s, sc


UNAUTH_SIZES = [14, 15, 27, 40, 41, 42, 44, 100, 1000, 1472]
AUTH_SIZES = [48, 64, 111, 112, 113, 200, 1472]


@pytest.mark.parametrize("mode", [wire.MODE_UNAUTHENTICATED, wire.MODE_AUTHENTICATED, wire.MODE_ENCRYPTED])
async def test_session_reflector_every_legal_size_ttl_and_timestamps(mode):
    auth = mode != wire.MODE_UNAUTHENTICATED
    tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await tx.bind(("127.0.0.1", 0))
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 37)
    keys = new_keys() if auth else None
    sess, sc = _session(mode, tx.getsockname()[1], keys)
    base = wire.SENDER_AUTH_SIZE if auth else wire.SENDER_UNAUTH_SIZE
    kernel_synced = ClockStatus().synchronised
    with tx:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sess.run, 0)
            for seq, size in enumerate(AUTH_SIZES if auth else UNAUTH_SIZES):
                t1 = time.time_ns()
                p = wire.SenderPacket(seq, wire.ns_to_ntp(t1), 0x3FFF, os.urandom(size - base))
                data = wire.pack_sender(p, auth)
                if auth:
                    data = sc.seal(data, 32)
                assert len(data) == size
                await tx.sendto(data, ("127.0.0.1", sess.port))
                with trio.fail_after(2):
                    reply = await tx.recv(4096)
                t4 = time.time_ns()
                want = max(size, (wire.REFLECTOR_AUTH_SIZE if auth else wire.REFLECTOR_UNAUTH_SIZE))
                assert len(reply) == want, (size, len(reply))  # symmetric once the sender pads enough
                if auth:
                    reply = sc.open(reply, 96)
                r = wire.unpack_reflector(reply, auth)
                assert (r.seq, r.sender_seq, r.sender_timestamp) == (seq, seq, p.timestamp)
                assert r.sender_error_estimate == 0x3FFF
                assert r.sender_ttl == 37  # the received TTL, copied
                assert r.padding == p.padding[:len(r.padding)]  # the sender's padding, highest octets dropped
                t2 = wire.ntp_to_ns(r.receive_timestamp)
                t3 = wire.ntp_to_ns(r.timestamp)
                assert t1 - 1000 <= t2 <= t3 <= t4 + 1000
                ee = wire.ErrorEstimate.unpack(r.error_estimate)
                assert ee.synced is kernel_synced and ee.multiplier > 0
            nursery.cancel_scope.cancel()
    assert sess.received == sess.reflected == len(AUTH_SIZES if auth else UNAUTH_SIZES) and not sess.dropped


async def test_session_reflector_counts_bad_packets_and_wrong_sender():
    tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await tx.bind(("127.0.0.1", 0))
    other = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await other.bind(("127.0.0.2", 0))
    sess, _ = _session(wire.MODE_UNAUTHENTICATED, tx.getsockname()[1])
    with tx, other:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sess.run, 0)
            await tx.sendto(b"\x00" * 13, ("127.0.0.1", sess.port))
            await other.sendto(bytes(41), ("127.0.0.1", sess.port))
            await tx.sendto(bytes(41), ("127.0.0.1", sess.port))
            with trio.fail_after(2):
                assert len(await tx.recv(4096)) == 41
            nursery.cancel_scope.cancel()
    assert sess.dropped == {"malformed": 1, "wrong-sender": 1} and sess.reflected == 1 and sess.received == 3


@pytest.mark.parametrize("kind", ["session", "light"])
async def test_burst_absorbed_nothing_lost_sequence_in_order(kind):
    n = 400
    std = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    std.bind(("127.0.0.1", 0))
    std.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    replies = []
    with trio.socket.from_stdlib_socket(std) as tx:
        async with trio.open_nursery() as nursery:
            if kind == "session":
                sess, _ = _session(wire.MODE_UNAUTHENTICATED, std.getsockname()[1])
                nursery.start_soon(sess.run, 0)
                port = sess.port
            else:
                light = LightReflector(LightConfig(port=0, address="127.0.0.1", mode="per-sender"))
                port = (await nursery.start(light.run))[1]
            # the whole burst is queued at once: the 4 MiB receive buffer holds it, the thread drains it
            for seq in range(n):
                pkt = wire.pack_sender(wire.SenderPacket(seq, wire.now_ntp(), 0x3FFF, bytes(27)))
                std.sendto(pkt, ("127.0.0.1", port))
            with trio.fail_after(5):
                while len(replies) < n:
                    replies.append(wire.unpack_reflector(await tx.recv(4096)))
            nursery.cancel_scope.cancel()
    assert [r.sender_seq for r in replies] == list(range(n))
    assert [r.seq for r in replies] == list(range(n))  # per-session / per-sender counter
    t2s = [r.receive_timestamp for r in replies]
    assert t2s == sorted(t2s)
    assert all(r.receive_timestamp <= r.timestamp for r in replies)


async def test_reflector_thread_idle_timeout_and_stop_linger():
    idle, _ = _session(wire.MODE_UNAUTHENTICATED, 9)
    with trio.fail_after(5):
        await idle.run(0.3)  # no datagram: the thread gives up after the inactivity timeout
    assert idle.ended and idle.sock.fileno() == -1

    tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await tx.bind(("127.0.0.1", 0))
    sess, _ = _session(wire.MODE_UNAUTHENTICATED, tx.getsockname()[1])
    with tx:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sess.run, 0)
            pkt = wire.pack_sender(wire.SenderPacket(0, wire.now_ntp(), 0x3FFF, bytes(27)))
            await tx.sendto(pkt, ("127.0.0.1", sess.port))
            with trio.fail_after(2):
                await tx.recv(4096)
            sess.stop(0.2)  # Stop-Sessions: keep reflecting for the session's Timeout, then end
            await tx.sendto(pkt, ("127.0.0.1", sess.port))
            with trio.fail_after(2):
                await tx.recv(4096)  # still reflected inside the linger
            with trio.fail_after(5):
                while not sess.ended:
                    await trio.sleep(0.05)
    assert sess.reflected == 2 and sess.sock.fileno() == -1


async def test_light_reflector_thread_stops_on_cancel_and_closes_socket():
    light = LightReflector(LightConfig(port=0, address="127.0.0.1", mode="stateless"))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(light.run)
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert light.sock.fileno() == -1

"""TWAMP against recorded peers and Wireshark: the twping <-> twampd captures of the corpus (authenticated,
encrypted, open, Light) as known answers, the twampy sender replayed at our reflector, and tshark decoding
what we send."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import trio

from flowplane.plugins.twamp import wire
from flowplane.plugins.twamp.capture import segments, tcp_streams
from flowplane.plugins.twamp.config import LightConfig
from flowplane.plugins.twamp.crypto import (
    ControlCrypto,
    HmacError,
    SessionCrypto,
    derive_key,
    make_token,
    open_token,
    session_test_keys,
)
from flowplane.plugins.twamp.light import LightReflector
from flowplane.plugins.twamp.wire import (
    AcceptSession,
    ErrorEstimate,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartSessions,
    StopSessions,
    ntp_to_ns,
    unpack_reflector,
    unpack_sender,
)
from flowplane.testing import wait_until_async

from corpus import ACTIVE
from test_twamp_light import _sender, _with_reflector
from test_twamp_server import _recorded_exchange

# ---------------------------------------------------------------------------
# known answers from the twping <-> twampd and twampy captures


AUTH = ACTIVE / "twamp-auth.pcapng"


FULL = ACTIVE / "twamp-full.pcapng"


TWL = ACTIVE / "twl.pcapng"


def need(path):
    if not path.exists():
        pytest.skip(f"{path} missing")
    return str(path)


def _control(stream):
    ch = stream.chunks
    assert [d for d, _ in ch] == ["s", "c", "s", "c", "s", "c", "s", "c"]
    assert [len(p) for _, p in ch] == [64, 164, 48, 112, 48, 32, 32, 32]
    return [p for _, p in ch]


AUTH_KAT = {
    # stream: mode, dk, AES session key, HMAC session key, accepted port, SID, sender port
    0: (2, "e93b2e297af3ba1bf3b71dfc8108c56f", "cba1aeb21d4f4930509c4a8ecfc5dbd5",
        "70581577b071e335faf8356d1e78d703157c476e4066069f40f4a405146cc355", 18789,
        "7f000001eeaccb86e8489d27be6904cc", 9656),
    1: (4, "d9a75d25022437ac4c24d7a0c445251b", "0bc151e6a6e8e0f3ded038125939d6d9",
        "fdd593d3496835c028e6d06ae662d78b82f7ac5c1226f0d0ed1e2a34d953fdc3", 18778,
        "7f000001eeaccb8a06f954eba8f4032f", 9214),
}


@pytest.mark.parametrize("index", [0, 1])
def test_auth_capture_known_answers(index):
    segs = segments(need(AUTH))
    streams = tcp_streams(segs)
    greeting, setup, sstart, req, acc, start, ack, stop = _control(streams[index])
    mode, dk_hex, ak_hex, hk_hex, port, sid_hex, sport = AUTH_KAT[index]

    g = ServerGreeting.unpack(greeting)
    assert g.modes == 7 and g.count == 2048  # twampd: open, authenticated, encrypted; Count 2048
    assert g.pack() == greeting
    su = SetUpResponse.unpack(setup)
    assert su.mode == mode and su.key_id == "alice"
    assert su.pack() == setup

    dk = derive_key("testsecret", g.salt, g.count)
    assert dk.hex() == dk_hex
    challenge, ak, hk = open_token(dk, su.token)
    assert challenge == g.challenge
    assert (ak.hex(), hk.hex()) == (ak_hex, hk_hex)
    assert make_token(dk, challenge, ak, hk) == su.token
    # a wrong secret gives a challenge that does not match
    assert open_token(derive_key("wrong", g.salt, g.count), su.token)[0] != g.challenge

    server_iv = sstart[16:32]
    s2c = ControlCrypto(mode, ak, hk, recv_iv=server_iv)
    c2s = ControlCrypto(mode, ak, hk, recv_iv=su.client_iv)
    ss = ServerStart.unpack(s2c.open_server_start(sstart))
    assert ss.accept == 0 and ss.server_iv == server_iv

    r = RequestTWSession.unpack(c2s.open(req))  # HMAC checked: raises on mismatch
    assert (r.sender_port, r.receiver_port) == (sport, sport)
    assert (r.sender_address, r.receiver_address) == ("127.0.0.1", "127.0.0.1")
    assert r.padding_length == 64 and r.type_p == 0 and r.num_packets == 0 and r.sid == bytes(16)
    assert r.timeout >> 32 == 2  # twping's default: reflect 2 s after Stop-Sessions
    a = AcceptSession.unpack(s2c.open(acc))  # covers Server-Start's encrypted block too
    assert a.accept == 0 and a.port == port and a.sid.hex() == sid_hex
    assert a.sid[:4] == bytes([127, 0, 0, 1])
    StartSessions.unpack(c2s.open(start))
    assert StartAck.unpack(s2c.open(ack)).accept == 0
    st = StopSessions.unpack(c2s.open(stop))
    assert st.num_sessions == 1 and st.accept == 0

    # re-sealing the plaintexts reproduces the ciphertext byte for byte (per-direction CBC + HMAC chaining)
    tx_s = ControlCrypto(mode, ak, hk, send_iv=server_iv)
    tx_c = ControlCrypto(mode, ak, hk, send_iv=su.client_iv)
    p_ss = ControlCrypto(mode, ak, hk, recv_iv=server_iv)
    assert tx_s.seal_server_start(p_ss.open_server_start(sstart)) == sstart
    p_s = ControlCrypto(mode, ak, hk, recv_iv=server_iv)
    p_s.open_server_start(sstart)
    p_c = ControlCrypto(mode, ak, hk, recv_iv=su.client_iv)
    assert tx_c.seal(p_c.open(req)) == req
    assert tx_s.seal(p_s.open(acc)) == acc
    assert tx_c.seal(p_c.open(start)) == start
    assert tx_s.seal(p_s.open(ack)) == ack
    assert tx_c.seal(p_c.open(stop)) == stop

    # a flipped bit in the HMAC is caught
    bad = ControlCrypto(mode, ak, hk, recv_iv=su.client_iv)
    with pytest.raises(HmacError):
        bad.open(req[:-1] + bytes([req[-1] ^ 1]))

    # test packets: both directions decrypt and verify with the per-session keys
    tc = SessionCrypto(mode, session_test_keys(a.sid, ak, hk))
    udp = [s for s in segs if s.proto == 17 and port in (s.sport, s.dport)]
    assert len(udp) == 20
    sent = refl = 0
    for s in udp:
        assert len(s.payload) == 112 and s.ttl == 255
        if s.dport == port:
            p = unpack_sender(tc.open(s.payload, 32), authenticated=True)
            assert p.seq == sent and len(p.padding) == 64
            assert tc.seal(tc.open(s.payload, 32), 32)[:48] == s.payload[:48]
            sent += 1
        else:
            p = unpack_reflector(tc.open(s.payload, 96), authenticated=True)
            assert p.seq == refl and p.sender_seq == refl and p.sender_ttl == 255
            assert p.receive_timestamp >= p.sender_timestamp and p.timestamp >= p.receive_timestamp
            assert p.padding == b""  # 64 bytes of padding truncated: symmetric 112/112
            refl += 1
    assert sent == refl == 10


def test_full_capture_open_mode():
    segs = segments(need(FULL))
    streams = tcp_streams(segs)
    greeting, setup, sstart, req, acc, start, ack, stop = _control(streams[0])
    g = ServerGreeting.unpack(greeting)
    assert g.modes & 1 and g.count >= 1024
    su = SetUpResponse.unpack(setup)
    assert su.mode == 1 and su.key_id == "" and su.token == bytes(64)
    ss = ServerStart.unpack(sstart)
    assert ss.accept == 0
    r = RequestTWSession.unpack(req)
    assert r.receiver_port == 9952 and r.padding_length == 27 and r.hmac == bytes(16)
    assert r.pack() == req
    a = AcceptSession.unpack(acc)
    assert a.accept == 0 and a.port == 18761  # twampd granted an alternate port
    assert a.pack() == acc
    assert StartSessions.unpack(start).pack() == start
    assert StartAck.unpack(ack).accept == 0
    st = StopSessions.unpack(stop)
    assert st.num_sessions == 1 and st.pack() == stop
    # the other two connections only got a greeting
    assert [len(s.to_client) for s in streams[1:]] == [64, 64]
    udp = [s for s in segs if s.proto == 17]
    fwd = [unpack_sender(s.payload) for s in udp if s.dport == 18761]
    back = [unpack_reflector(s.payload) for s in udp if s.sport == 18761]
    assert len(fwd) == len(back) == 20
    assert [p.seq for p in fwd] == list(range(20))
    assert [p.sender_seq for p in back] == list(range(20)) and [p.seq for p in back] == list(range(20))
    assert all(len(p.padding) == 27 for p in fwd) and all(p.padding == b"" for p in back)
    assert all(p.sender_ttl == 255 for p in back)
    for f, b in zip(fwd, back):
        assert b.sender_timestamp == f.timestamp
        assert f.timestamp <= b.receive_timestamp <= b.timestamp


def test_light_capture_twampy():
    segs = segments(need(TWL))
    fwd = [s for s in segs if s.dport == 20001]
    back = [s for s in segs if s.sport == 20001]
    assert len(fwd) == len(back) == 5
    for i, (f, b) in enumerate(zip(fwd, back)):
        assert len(f.payload) == 41 and len(b.payload) == 38  # twampy's short Light reply
        p = unpack_sender(f.payload)
        assert p.seq == i and len(p.padding) == 27
        assert ErrorEstimate.unpack(p.error_estimate).multiplier == 0xFF  # twampy sends 0x3FFF
        r = unpack_reflector(b.payload)
        assert r.sender_seq == i and r.sender_timestamp == p.timestamp
        t1, t2, t3 = (ntp_to_ns(x, pivot_ns=f.ts_ns) for x in (p.timestamp, r.receive_timestamp, r.timestamp))
        assert t1 <= t2 <= t3
        assert abs(t1 - f.ts_ns) < 5_000_000_000  # the NTP time is the capture's wall clock


# ---------------------------------------------------------------------------
# the twampy sender replayed at our Light reflector


@pytest.mark.parametrize("mode", ["stateless", "per-sender"])
async def test_replay_twampy_sender_matches_twampy_responder(mode):
    """The twampy sender's packets from twl.pcapng, sent at our reflector with the capture's TTL (64):
    our replies agree field by field with the twampy responder's (except size and TTL, which twampy omits)."""
    if not TWL.exists():
        pytest.skip(f"{TWL} missing")
    segs = segments(str(TWL))
    fwd = [s for s in segs if s.dport == 20001]
    back = [s for s in segs if s.sport == 20001]
    assert len(fwd) == len(back) == 5

    async def body(r):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, fwd[0].ttl)
        await sock.bind(("127.0.0.1", 0))
        with sock:
            for f, b in zip(fwd, back):
                before = time.time_ns()
                await sock.sendto(f.payload, ("127.0.0.1", r.bound[1]))
                with trio.fail_after(2):
                    data = await sock.recv(2048)
                after = time.time_ns()
                ours, theirs = wire.unpack_reflector(data), wire.unpack_reflector(b.payload)
                sent = wire.unpack_sender(f.payload)
                # sizes: twampy answers 38 bytes (no MBZ, no TTL); we answer symmetric 41 = the sender's size
                assert len(b.payload) == 38 and len(data) == len(f.payload) == 41
                assert ours.seq == theirs.seq == sent.seq  # both start at 0 for this sender
                assert ours.sender_seq == theirs.sender_seq == sent.seq
                assert ours.sender_timestamp == theirs.sender_timestamp == sent.timestamp
                assert ours.sender_error_estimate == theirs.sender_error_estimate == 0x3FFF
                assert data[38:41] == bytes(2) + bytes([fwd[0].ttl])  # MBZ, then the sender's TTL (64)
                # timestamp ordering as in the capture: T1 <= T2 <= T3, ours within our send/receive window
                t1 = wire.ntp_to_ns(sent.timestamp, pivot_ns=f.ts_ns)
                tt2, tt3 = (wire.ntp_to_ns(x, pivot_ns=f.ts_ns) for x in (theirs.receive_timestamp, theirs.timestamp))
                assert t1 <= tt2 <= tt3
                t2, t3 = (wire.ntp_to_ns(x, pivot_ns=before) for x in (ours.receive_timestamp, ours.timestamp))
                assert t1 <= before - 1000 <= t2 + 1000 and t2 <= t3 <= after + 1000
                # the error estimate is a valid one (multiplier != 0), as twampy's 0x0001
                assert wire.ErrorEstimate.unpack(ours.error_estimate).seconds is not None
                assert wire.ErrorEstimate.unpack(theirs.error_estimate).seconds is not None
        await wait_until_async(lambda: r.counters["reflected"] == 5, timeout=5)  # counted once sendto returned

    await _with_reflector(LightConfig(port=0, address="127.0.0.1", mode=mode), body)


# ---------------------------------------------------------------------------
# tshark decodes what we send


def test_tshark_decodes_light_replies_without_malformed_fields(tmp_path):
    import shutil

    from flowplane.plugins.twamp.capture import eth_ipv4_udp
    from flowplane.testing import write_pcap

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    r = LightReflector(LightConfig(mode="per-sender"))
    frames = []
    for seq, size in enumerate((14, 41, 44, 100)):
        pkt = _sender(seq, size)
        reply = r.reflect(pkt, ("192.0.2.1", 20000), time.time_ns(), 64)
        frames += [eth_ipv4_udp("192.0.2.1", 20000, "192.0.2.2", 862, pkt),
                   eth_ipv4_udp("192.0.2.2", 862, "192.0.2.1", 20000, reply)]
    path = write_pcap(str(tmp_path / "light.pcap"), frames)

    def run(*extra):
        p = subprocess.run([tshark, "-r", path, "-d", "udp.port==862,twamp.test", *extra], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    bad = run("-Y", "_ws.malformed || _ws.expert.severity >= 0x00800000")
    assert bad.strip() == "", bad
    rows = [ln.split("\t") for ln in run("-Y", "twamp.test && udp.srcport == 862", "-T", "fields", "-e",
                                         "twamp.test.seq_number", "-e", "twamp.test.sender_seq_number", "-e",
                                         "twamp.test.sender_ttl").splitlines() if ln.strip()]
    assert rows == [[str(i), str(i), "64"] for i in range(4)]


@pytest.mark.peer
async def test_tshark_decodes_without_malformed_fields(tmp_path):
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    path, cport, tport = await _recorded_exchange(tmp_path)
    decode = ["-d", f"tcp.port=={cport},twamp.control", "-d", f"udp.port=={tport},twamp.test"]

    def run(*extra):
        p = subprocess.run([tshark, "-r", path, *decode, *extra], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    bad = run("-Y", "_ws.malformed || _ws.expert.severity >= 0x00800000")
    assert bad.strip() == "", bad
    info = run("-T", "fields", "-e", "_ws.col.Info")
    for label in ("Server Greeting", "Setup Response", "Server Start", "Request Session", "Accept Session",
                  "Start Sessions", "Stop Session"):
        assert label in info, info
    fields = run("-Y", "twamp.test", "-T", "fields", "-e", "twamp.test.seq_number", "-e",
                 "twamp.test.sender_seq_number")
    rows = [ln.split("\t") for ln in fields.splitlines() if ln.strip()]
    assert len(rows) == 10
    assert [r[1] for r in rows if r[1]] == [str(i) for i in range(5)]
    modes = run("-Y", "twamp.control.modes", "-T", "fields", "-e", "twamp.control.modes").split()
    assert modes and int(modes[0], 0) & 1

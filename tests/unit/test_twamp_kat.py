"""TWAMP known answers: twping <-> twampd captures (authenticated, encrypted, open, Light)."""

import pytest
from corpus import ACTIVE

from flowplane.plugins.twamp import aes
from flowplane.plugins.twamp.capture import segments, tcp_streams
from flowplane.plugins.twamp.crypto import (ControlCrypto, HmacError, SessionCrypto, derive_key, make_token, open_token,
                                            session_test_keys)
from flowplane.plugins.twamp.wire import (AcceptSession, ErrorEstimate, RequestTWSession, ServerGreeting, ServerStart,
                                          SetUpResponse, StartAck, StartSessions, StopSessions, ns_to_ntp, ntp_to_ns,
                                          unpack_reflector, unpack_sender)

AUTH = ACTIVE / "twamp-auth.pcapng"
FULL = ACTIVE / "twamp-full.pcapng"
TWL = ACTIVE / "twl.pcapng"


def need(path):
    if not path.exists():
        pytest.skip(f"{path} missing")
    return str(path)


def test_aes_fips197():
    key = bytes(range(16))
    pt = bytes.fromhex("00112233445566778899aabbccddeeff")
    c = aes.AES128(key)
    ct = c.encrypt_block(pt)
    assert ct.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert c.decrypt_block(ct) == pt
    with pytest.raises(ValueError, match="16-byte key"):
        aes.AES128(bytes(15))


def test_aes_cbc_sp800_38a():
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    pt = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    ct = aes.cbc_encrypt(key, iv, pt[:16]) + aes.cbc_encrypt(key, aes.cbc_encrypt(key, iv, pt[:16]), pt[16:])
    assert ct.hex() == "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
    # one CBC object carries its state across calls
    cbc = aes.CBC(aes.AES128(key), iv)
    assert cbc.encrypt(pt[:16]) + cbc.encrypt(pt[16:]) == ct
    assert aes.cbc_decrypt(key, iv, ct) == pt


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


def test_ntp_timestamps_and_era():
    ns = 1_700_000_000_123_456_789
    assert abs(ntp_to_ns(ns_to_ntp(ns), pivot_ns=ns) - ns) <= 1
    after_2036 = (2**32 - 2208988800 + 100) * 10**9  # 100 s after the NTP era rollover
    ntp = ns_to_ntp(after_2036)
    assert ntp >> 32 == 100
    assert ntp_to_ns(ntp, pivot_ns=after_2036) == after_2036
    e = ErrorEstimate.for_seconds(0.001)
    assert e.seconds >= 0.001 and ErrorEstimate.unpack(e.pack()) == e
    assert ErrorEstimate.unpack(0x3FFF).seconds is not None and ErrorEstimate.unpack(0x0100).seconds is None

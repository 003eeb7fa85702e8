"""Dynamic flow capture: config validation, the data path (copies over loopback), limits and
notifications, bandwidth limits, the audit log, show commands.

Criteria are added by the DTCP client of test_dtcp.py; copies and notifications are received on
real loopback sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

import numpy as np
import pytest
import structlog
import trio

from flowplane.batch import PacketBatch
from flowplane.decode import decode
from flowplane.errors import ConfigError
from flowplane.plugins.flow_capture.config import LIMITS, parse, parse_rate
from flowplane.plugins.flow_capture.criteria import CriteriaTable, Criterion, Prefix
from flowplane.plugins.flow_capture.engine import FlowCapture
from flowplane.profiles import Limits
from flowplane.testing import config_from

from frames import ETH_IPV4, ETH_IPV6, UDP, eth, ipv4, ipv6, tcp, udp
from test_dtcp import KEY, KEY2, DtcpClient, build, dfc_yaml, engine_for, serving

IP_RECVTTL, IP_TTL_CMSG = 12, 2
IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT = 51, 52


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def receiver(family=socket.AF_INET):
    """A loopback UDP socket that reports the received TTL / hop limit."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    else:
        s.bind(("::1", 0))
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    s.settimeout(2)
    return s


def drain(s, n_max=10000, timeout=0.3):
    """Every datagram waiting on *s*: [(payload, ttl)]."""
    out = []
    s.settimeout(timeout)
    while len(out) < n_max:
        try:
            data, anc, _, _ = s.recvmsg(65535, 256)
        except (TimeoutError, BlockingIOError):
            break
        ttl = None
        for level, kind, value in anc:
            if (level, kind) in ((socket.IPPROTO_IP, IP_TTL_CMSG), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):
                ttl = struct.unpack("i", value[:4])[0]
        out.append((data, ttl))
    return out


def batch_of(frames, iface=0):
    b = PacketBatch.from_frames(frames, iface=iface)
    decode(b)
    return b


def v4_udp(dport, payload=b"x" * 20, src="10.0.0.1", dst="192.0.2.2", sport=4000):
    return eth(ETH_IPV4, ipv4(UDP, udp(sport, dport, payload), src=src, dst=dst))


def add(engine, headers, *, seq, name="cs1", key=KEY, peer="127.0.0.1"):
    reply = engine.handle(build("ADD", [("Csource-ID", name), *headers, ("Seq", seq)], key), peer)
    assert b" 200 OK" in reply, reply
    return int(reply.split(b"CRITERIA-ID: ")[1].split(b"\r\n")[0])


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


def _issues(text, limits=None):
    _, issues = parse(config_from(text).data, limits or Limits.of(LIMITS))
    return {" ".join(map(str, i.path)): i.message for i in issues}


def test_config_parses_the_junos_hierarchy(tmp_path):
    (tmp_path / "cs.key").write_text("from-a-file\n")
    text = f"""\
interfaces:
  eth1: {{source: pcap, file: x.pcap}}
services:
  dynamic-flow-capture:
    capture-group g1:
      interfaces: eth1
      input-packet-rate-threshold: 90k
      pic-memory-threshold: {{percentage: 80}}
      max-duplicates: 2
      duplicates-dropped-periodicity: 30
      control-source cs1:
        source-addresses: [192.0.2.0/24, "2001:db8::1"]
        service-port: 2400
        key-file: {tmp_path}/cs.key
        allowed-destinations: cd1
        minimum-priority: 3
        notification-targets: ["192.0.2.1 port 2100", {{address: "2001:db8::9", port: 2101}}]
      content-destination cd1:
        address: 198.51.100.7
        port: 5000
        ttl: 244
        hard-limit: 100m
        soft-limit: 80m
        soft-limit-clear: 60m
"""
    cfg, issues = parse(config_from(text).data, Limits.of(LIMITS))
    assert issues == []
    g = cfg.groups["g1"]
    assert g.interfaces == ("eth1",) and g.input_rate_threshold == 90_000 and g.memory_threshold_pct == 80
    assert g.max_duplicates == 2 and g.duplicates_periodicity == 30
    cs = g.sources["cs1"]
    assert cs.key == b"from-a-file" and cs.service_port == 2400 and cs.minimum_priority == 3
    assert cs.allows_address("192.0.2.77") and cs.allows_address("::ffff:192.0.2.77")
    assert cs.allows_address("2001:db8::1") and not cs.allows_address("198.51.100.1")
    assert [(t.address, t.port) for t in cs.notification_targets] == [("192.0.2.1", 2100), ("2001:db8::9", 2101)]
    cd = g.destinations["cd1"]
    assert (cd.address, cd.port, cd.ttl, cd.hard_limit, cd.soft_limit, cd.soft_limit_clear) == \
        ("198.51.100.7", 5000, 244, 100_000_000, 80_000_000, 60_000_000)
    assert parse_rate("1.5k") == 1500 and parse_rate("fast") is None and parse_rate(True) is None


def test_config_errors_name_the_key():
    got = _issues("""\
services:
  dynamic-flow-capture:
    capture-group g1:
      interfaces: [eth9]
      max-duplicate: 3
      control-source cs1:
        source-addresses: [192.0.2.300]
        service-port: 70000
        allowed-destinations: [cdx]
        minimum-priority: 300
        notification-targets: ["192.0.2.1 2100"]
      content-destination cd1:
        address: 198.51.100.7
        ttl: 0
        hard-limit: 1m
        soft-limit: 2m
        soft-limit-clear: lots
    capture-group g2:
      control-source cs1: {source-addresses: [127.0.0.1], shared-key: k}
      content-destination cd9: {address: 127.0.0.1, port: 9}
""")
    g = "services dynamic-flow-capture capture-group g1"
    assert "interface 'eth9' is not defined" in got[f"{g} interfaces"]
    assert "did you mean 'max-duplicates'" in got[f"{g} max-duplicate"]
    assert "not an IPv4/IPv6 address or prefix" in got[f"{g} control-source cs1 source-addresses 0"]
    assert "70000 exceeds the maximum 65535" in got[f"{g} control-source cs1 service-port"]
    assert "no content destination 'cdx'" in got[f"{g} control-source cs1 allowed-destinations"]
    assert "300 exceeds the maximum 255" in got[f"{g} control-source cs1 minimum-priority"]
    assert "ADDRESS port N" in got[f"{g} control-source cs1 notification-targets 0"]
    assert "needs shared-key or key-file" in got[f"{g} control-source cs1"]
    assert "below the minimum 1" in got[f"{g} content-destination cd1 ttl"]
    assert "above hard-limit" in got[f"{g} content-destination cd1 soft-limit"]
    assert "expected a rate" in got[f"{g} content-destination cd1 soft-limit-clear"]
    assert "DTCP Csource-ID names must be unique" in \
        got["services dynamic-flow-capture capture-group g2 control-source cs1"]
    got = _issues("services:\n  dynamic-flow-capture:\n    capture-groups: {}\n")
    assert "did you mean 'capture-group'" in got["services dynamic-flow-capture capture-groups"]


def test_plugin_through_the_app(make_app, tmp_path):
    with pytest.raises(ConfigError) as exc:
        make_app({"services": {"dynamic-flow-capture": {"capture-group": {"g": {"max-duplicates": 0}}}}})
    assert "services dynamic-flow-capture capture-group g max-duplicates" in str(exc.value)
    app = make_app(config_from(dfc_yaml()))
    engine = app.pm.get_plugin("dynamic-flow-capture")
    assert isinstance(engine, FlowCapture)
    for words in ("content-destination", "control-source", "statistics"):
        assert f"show services dynamic-flow-capture {words}" in app.registries.commands


# ---------------------------------------------------------------------------------------------
# the data path
# ---------------------------------------------------------------------------------------------


def test_copies_are_the_ip_packets_with_the_configured_ttl(make_app):
    rx = receiver()
    app = make_app(config_from(dfc_yaml(cd_port=rx.getsockname()[1])))
    engine = app.pm.get_plugin("dynamic-flow-capture")
    engine.open()
    try:
        add(engine, [("Cdest-ID", "cd1"), ("Source-Address", "10.0.0.0/24"), ("Dest-Port", "53"),
                     ("Protocol", "17")], seq=1)
        frames = [v4_udp(53, bytes([i]) * (10 + i)) for i in range(20)]
        frames += [v4_udp(54), v4_udp(53, src="10.0.1.1"), eth(ETH_IPV4, ipv4(6, tcp(4000, 53)))]
        # Ethernet padding after a short IP packet is not part of the copy
        frames.append(v4_udp(53, b"") + b"\x00" * 20)
        app.process(PacketBatch.from_frames(frames))  # through the core: decode, filters, process_batch
        got = drain(rx)
    finally:
        engine.close()
        rx.close()
    want = [f[14:] for f in frames[:20]] + [frames[-1][14:-20]]
    assert [d for d, _ in got] == want
    assert {t for _, t in got} == {7}
    [row] = [r for r in engine.destination_rows() if r["content_destination"] == "cd1"]
    assert row["packets"] == 21 and row["bytes"] == sum(map(len, want)) and row["active_criteria"] == 1
    [c] = engine.groups["lab"].criteria.values()
    assert c.packets == 21 and c.bytes == sum(map(len, want))


def test_ipv6_copies_to_an_ipv6_destination():
    rx = receiver(socket.AF_INET6)
    engine = engine_for(dfc_yaml(cd_port=rx.getsockname()[1], address="::1"))
    engine.open()
    try:
        add(engine, [("Cdest-ID", "cd1"), ("Dest-Address", "2001:db8::2"), ("Protocol", "6"),
                     ("Dest-Port", "443")], seq=1)
        frames = [eth(ETH_IPV6, ipv6(6, tcp(1000 + i, 443, payload=b"p" * i))) for i in range(10)]
        frames += [eth(ETH_IPV6, ipv6(6, tcp(1000, 80))), v4_udp(443)]
        engine.process(batch_of(frames))
        got = drain(rx)
    finally:
        engine.close()
        rx.close()
    assert [d for d, _ in got] == [f[14:] for f in frames[:10]] and {t for _, t in got} == {7}


def test_interfaces_restrict_the_group_and_input_interface():
    rx = receiver()
    text = dfc_yaml(cd_port=rx.getsockname()[1]).replace("    capture-group lab:\n",
                                                          "    capture-group lab:\n      interfaces: [eth1, eth2]\n")
    text = "interfaces:\n  eth1: {source: pcap, file: a.pcap}\n  eth2: {source: pcap, file: b.pcap}\n" \
           "  eth3: {source: pcap, file: c.pcap}\n" + text
    from flowplane.interfaces import InterfaceTable

    table = InterfaceTable()
    ids = {n: table.id(n) for n in ("eth1", "eth2", "eth3")}
    engine = engine_for(text, interfaces=table)
    engine.open()
    try:
        add(engine, [("Cdest-ID", "cd1"), ("Dest-Port", "53")], seq=1)
        add(engine, [("Cdest-ID", "cd2"), ("Dest-Port", "54"), ("X-JTap-Input-Interface", "eth2")], seq=2)
        reply = engine.handle(build("ADD", [("Csource-ID", "cs1"), ("Cdest-ID", "cd1"),
                                            ("X-JTap-Input-Interface", "eth7"), ("Seq", 3)], KEY), "127.0.0.1")
        assert b" 400 " in reply
        for name in ("eth1", "eth2", "eth3"):
            engine.process(batch_of([v4_udp(53, name.encode()), v4_udp(54, name.encode())], iface=ids[name]))
        got = [d[-4:] for d, _ in drain(rx)]
    finally:
        engine.close()
        rx.close()
    assert got == [b"eth1", b"eth2", b"eth2"]  # eth3 is not in the group; port 54 only on eth2
    assert engine.statistics()["groups"][0]["packets_seen"] == 4


@pytest.mark.parametrize("exact_port", [False, True], ids=["mixed", "prefiltered"])
def test_matcher_agrees_with_a_scalar_reference(exact_port):
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(400):
        src = f"10.{rng.integers(0, 3)}.0.{rng.integers(1, 5)}"
        dst = f"192.0.2.{rng.integers(1, 5)}"
        if rng.random() < 0.5:
            frames.append(v4_udp(int(rng.integers(50, 60)), src=src, dst=dst, sport=int(rng.integers(1000, 1003))))
        elif rng.random() < 0.5:
            frames.append(eth(ETH_IPV4, ipv4(6, tcp(int(rng.integers(1000, 1003)), int(rng.integers(50, 60))),
                                             src=src, dst=dst)))
        else:
            frames.append(eth(ETH_IPV6, ipv6(UDP, udp(1000, int(rng.integers(50, 60))),
                                             dst=f"2001:db8::{rng.integers(1, 4)}")))
    b = batch_of(frames)
    crits = []
    for i in range(60):
        c = Criterion(i, "cs", "g", ("cd",))
        if rng.random() < 0.5:
            c.src = Prefix.parse(f"10.{rng.integers(0, 3)}.0.0/{rng.choice([16, 24, 32])}")
        if rng.random() < 0.3:
            c.dst = Prefix.parse(f"2001:db8::{rng.integers(1, 4)}/128")
        elif rng.random() < 0.3:
            c.dst = Prefix.parse(f"192.0.2.{rng.integers(1, 5)}")
        if exact_port:
            lo = int(rng.integers(50, 60))
            c.dport = (lo, lo)
        elif rng.random() < 0.5:
            lo = int(rng.integers(50, 60))
            c.dport = (lo, lo + int(rng.integers(0, 3)))
        if rng.random() < 0.3:
            c.sport = (1001, 1001)
        if rng.random() < 0.5:
            c.proto = int(rng.choice([6, 17]))
        crits.append(c)
    table = CriteriaTable(crits, lambda n: 0)
    assert (table.prefilter is not None) == exact_port
    cand = table.candidates(b, np.arange(len(b)))
    got = np.zeros((len(b), len(crits)), dtype=bool)
    got[cand] = table.match(b, cand)

    def ref(i, c):
        import ipaddress

        f = frames[i]
        v6 = f[12:14] == b"\x86\xdd"
        ip = ipaddress.ip_address(f[22:38] if v6 else f[26:30]), ipaddress.ip_address(f[38:54] if v6 else f[30:34])
        l4 = f[54:] if v6 else f[34:]
        proto = f[20] if v6 else f[23]
        sport, dport = struct.unpack("!HH", l4[:4])
        for pfx, addr in ((c.src, ip[0]), (c.dst, ip[1])):
            if pfx is not None and (addr.version != pfx.af or addr not in ipaddress.ip_network(pfx.text)):
                return False
        if c.proto is not None and proto != c.proto:
            return False
        if c.sport and not c.sport[0] <= sport <= c.sport[1]:
            return False
        return not (c.dport and not c.dport[0] <= dport <= c.dport[1])

    want = np.array([[ref(i, c) for c in crits] for i in range(len(frames))])
    assert want.any() and not want.all()
    assert (got == want).all()


# ---------------------------------------------------------------------------------------------
# limits, timeouts and notifications (over the running service)
# ---------------------------------------------------------------------------------------------


def _parse_notify(raw: bytes) -> dict:
    lines = raw[:-4].split(b"\r\n")
    assert lines[0] == b"NOTIFY DTCP/0.7"
    auth = lines[-1].decode()
    assert auth.startswith("Authentication-Info: ")
    signed = raw[: raw.index(b"Authentication-Info: ")]
    assert hmac.compare_digest(hmac.new(KEY, signed, hashlib.sha1).hexdigest(), auth.split(": ")[1])
    return dict(line.decode().split(": ", 1) for line in lines[1:-1])


async def _notifications(sock, n, timeout=5.0):
    out = []
    with trio.fail_after(timeout):
        while len(out) < n:
            data, _ = await sock.recvfrom(4096)
            out.append(_parse_notify(data))
    return out


async def test_each_limit_expires_and_notifies():
    rx = receiver()
    nsock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await nsock.bind(("127.0.0.1", 0))
    clock = FakeClock()
    engine = engine_for(dfc_yaml(cd_port=rx.getsockname()[1], notify_port=nsock.getsockname()[1]), clock=clock,
                        sweep_interval=0.01)
    try:
        with structlog.testing.capture_logs() as logs:
            async with serving(engine) as addr, DtcpClient("cs1", KEY, addr) as c:
                [restart] = await _notifications(nsock, 1)
                assert restart["Notification-Type"] == "Restart" and restart["Csource-ID"] == "cs1"
                ids = {}
                for name, port, limit in (("total", 1000, ("Total-Timeout", 10)), ("idle", 1001, ("Idle-Timeout", 5)),
                                          ("packets", 1002, ("Packet-Limit", 3)), ("bytes", 1003, ("Byte-Limit", 100)),
                                          ("static", 1004, ("Flags", "STATIC"))):
                    r = await c.request("ADD", [("Cdest-ID", "cd1"), ("Dest-Port", port), ("Protocol", "17"), limit])
                    assert r.status == 200, r.headers
                    ids[name] = int(r.headers["CRITERIA-ID"])
                # 5 packets for the packet limit (3 copied), 4 x 48-byte packets for the 100-byte limit:
                # copied while the bytes before a packet are below the limit -> 3 copied (0, 48, 96 before)
                engine.process(batch_of([v4_udp(1002)] * 5 + [v4_udp(1003)] * 4 + [v4_udp(1000), v4_udp(1004)]))
                got = await _notifications(nsock, 2)
                assert {(n["Criteria-ID"], n["Reason"], n["Packets"], n["Bytes"]) for n in got} == {
                    (str(ids["packets"]), "packet-limit", "3", "144"), (str(ids["bytes"]), "byte-limit", "3", "144")}
                assert all(n["Notification-Type"] == "Timeout" for n in got)
                clock.t += 4  # the idle criterion saw nothing for 4 s: still there
                engine.process(batch_of([v4_udp(1000)]))
                await trio.sleep(0.05)
                assert ids["idle"] in engine.groups["lab"].criteria
                clock.t += 1.5
                [idle] = await _notifications(nsock, 1)
                assert (idle["Criteria-ID"], idle["Reason"]) == (str(ids["idle"]), "idle-time")
                r = await c.request("REFRESH", [("Criteria-ID", ids["total"])])  # the total timeout restarts
                assert r.status == 200
                clock.t += 9
                await trio.sleep(0.05)
                assert ids["total"] in engine.groups["lab"].criteria
                clock.t += 1
                [total] = await _notifications(nsock, 1)
                assert (total["Criteria-ID"], total["Reason"],
                        total["Packets"]) == (str(ids["total"]), "total-time", "2")
                clock.t += 10**6
                await trio.sleep(0.05)
                assert list(engine.groups["lab"].criteria) == [ids["static"]]  # STATIC never expires
                r = await c.request("LIST")
                assert r.headers["CRITERIA-COUNT"] == "1"
                seqs = [int(n["Seq"]) for n in [restart, *got, idle, total]]
                assert seqs == sorted(seqs) and len(set(seqs)) == 5
        copies = drain(rx)
    finally:
        rx.close()
        nsock.close()
    assert len(copies) == 3 + 3 + 2 + 1
    audit = [e for e in logs if e["event"] == "dfc_audit"]
    assert [e["action"] for e in audit] == ["add"] * 5 + ["expire", "expire", "expire", "refresh", "expire"]
    expired = {e["criteria_id"]: e["reason"] for e in audit if e["action"] == "expire"}
    assert expired == {ids["packets"]: "packet-limit", ids["bytes"]: "byte-limit", ids["idle"]: "idle-time",
                       ids["total"]: "total-time"}
    assert all(e["source"] == "cs1" and "fields" in e for e in audit)
    [row] = [r for r in engine.source_rows() if r["control_source"] == "cs1"]
    assert row["criteria_deleted"] == {"request": 0, "total-time": 1, "idle-time": 1, "packet-limit": 1,
                                       "byte-limit": 1}
    assert row["notifications"]["timeout"] == 4 and row["notifications"]["restart"] == 1


# ---------------------------------------------------------------------------------------------
# bandwidth limits and duplicates
# ---------------------------------------------------------------------------------------------


def test_hard_limit_drops_and_soft_limit_notifies():
    rx = receiver()
    nrx = receiver()
    clock = FakeClock()
    # 80 kbit/s hard limit: one second of tokens = 10000 bytes = 100 copies of 100 bytes (72 inner + 28 outer)
    cd = "        hard-limit: 80k\n        soft-limit: 40k\n        soft-limit-clear: 20k\n"
    engine = engine_for(dfc_yaml(cd_port=rx.getsockname()[1], notify_port=nrx.getsockname()[1], cd_extra=cd),
                        clock=clock)
    engine.open()
    try:
        cid = add(engine, [("Cdest-ID", "cd1"), ("Dest-Port", "7")], seq=1)
        pkt = v4_udp(7, b"z" * 44)
        assert len(pkt) - 14 == 72
        with structlog.testing.capture_logs() as logs:
            engine.process(batch_of([pkt] * 150))
            assert len(drain(rx)) == 100
            clock.t += 0.5  # half a second refills 50 copies
            engine.process(batch_of([pkt] * 80))
            assert len(drain(rx)) == 50
            clock.t += 0.6  # the 1-second window closes: 150 x 800 bits in 1.1 s is above the soft limit
            engine.process(batch_of([pkt] * 1))
            engine.sweep()
            clock.t += 5
            engine.process(batch_of([pkt] * 1))  # the next window: 2 copies in 5 s is below soft-limit-clear
            engine.sweep()
        notes = drain(nrx)
    finally:
        engine.close()
        rx.close()
        nrx.close()
    [row] = [r for r in engine.destination_rows() if r["content_destination"] == "cd1"]
    assert row["hard_limit_drops"] == 80 and row["packets"] == 152 and row["congestion_events"] == 1
    assert not row["congested"]
    states = [dict(line.split(": ", 1) for line in d.decode().split("\r\n")[1:-3]) for d, _ in notes]
    assert [(s["Notification-Type"], s["State"], s["Cdest-ID"]) for s in states] == \
        [("Congestion", "congested", "cd1"), ("Congestion", "cleared", "cd1")]
    assert [e["event"] for e in logs if e["event"].startswith("dfc_soft")] == \
        ["dfc_soft_limit_exceeded", "dfc_soft_limit_cleared"]
    assert engine.groups["lab"].criteria[cid].packets == 232  # limits count matched traffic, not what fit


def test_max_duplicates_and_isolated_destinations():
    rx = receiver()
    clock = FakeClock()
    text = dfc_yaml(cd_port=rx.getsockname()[1], extra_group="      max-duplicates: 2\n"
                    "      duplicates-dropped-periodicity: 10\n")
    text = text.replace("allowed-destinations: [cd1, cd2]", "allowed-destinations: [cd1, cd2, cd3]")
    nrx = receiver()
    text = text.replace("        minimum-priority: 2\n",
                        "        minimum-priority: 2\n        notification-targets: [\"127.0.0.1 port "
                        f"{nrx.getsockname()[1]}\"]\n")
    engine = engine_for(text, clock=clock)
    engine.open()
    try:
        engine.sweep()
        add(engine, [("Cdest-ID", "cd1,cd2"), ("Dest-Port", "9"), ("Priority", "2")], seq=1)
        add(engine, [("Cdest-ID", "cd3"), ("Protocol", "17"), ("Priority", "5")], seq=2)
        add(engine, [("Cdest-ID", "cd1"), ("Protocol", "17"), ("Priority", "5")], seq=3)  # same target as the first
        engine.process(batch_of([v4_udp(9)] * 4 + [v4_udp(10)]))
        got = drain(rx)
        clock.t += 11
        engine.sweep()
        notes = drain(nrx)
    finally:
        engine.close()
        rx.close()
        nrx.close()
    # port 9 packets go to cd1 and cd2 (cd3 is the third duplicate: dropped); port 10 to cd3 and cd1
    assert len(got) == 4 * 2 + 2
    rows = {r["content_destination"]: r["packets"] for r in engine.destination_rows()}
    assert rows == {"cd1": 5, "cd2": 4, "cd3": 1}
    assert engine.statistics()["groups"][0]["duplicates_dropped"] == 4
    body = [d.decode() for d, _ in notes]
    assert any("Notification-Type: Duplicates-Dropped" in b and "Count: 4" in b for b in body)


def test_unreachable_destination_is_counted_not_raised():
    engine = engine_for(dfc_yaml(cd_port=9, address="::1").replace("address: ::1\n        port: 9\n        ttl: 7",
                                                                    "address: ::1\n        port: 9\n        ttl: 7\n"
                                                                    "        source-address: 2001:db8::dead"))
    engine.open()  # cannot bind a source address the host does not have: kept as an error
    try:
        add(engine, [("Cdest-ID", "cd1")], seq=1)
        engine.process(batch_of([v4_udp(1)] * 3))
    finally:
        engine.close()
    [row] = [r for r in engine.destination_rows() if r["content_destination"] == "cd1"]
    assert row["socket_error"].startswith("EADDRNOTAVAIL") and row["send_drops"] == 3 and row["packets"] == 0


# ---------------------------------------------------------------------------------------------
# show commands
# ---------------------------------------------------------------------------------------------


def test_show_commands_text_and_json(make_app):
    from flowplane.commands import CommandError

    rx = receiver()
    app = make_app(config_from(dfc_yaml(cd_port=rx.getsockname()[1])))
    engine = app.pm.get_plugin("dynamic-flow-capture")
    engine.open()
    try:
        add(engine, [("Cdest-ID", "cd1"), ("Dest-Port", "53")], seq=10)
        add(engine, [("Cdest-ID", "cd3"), ("Flags", "STATIC")], seq=1, name="cs2", key=KEY2)
        engine.handle(build("ADD", [("Csource-ID", "cs1"), ("Cdest-ID", "cd1"), ("Seq", 10)], KEY), "127.0.0.1")
        app.process(PacketBatch.from_frames([v4_udp(53)] * 3))
    finally:
        engine.close()
        rx.close()
    cmds = app.registries.commands

    def run(words):
        cmd, rest = cmds.resolve(words.split())
        data = cmd.fn(app, rest)
        return data, cmd.formatter(data)

    data, text = run("show services dynamic-flow-capture content-destination identifier cd1")
    [row] = data["content_destinations"]
    assert row["packets"] == 3 and row["ttl"] == 7
    assert "Capture group: lab, Content destination: cd1" in text and "Packets sent: 3" in text
    data, text = run("show services dynamic-flow-capture control-source source-identifier cs2 detail")
    [row] = data["control_sources"]
    assert row["static_criteria"] == 1 and row["criteria"][0]["static"]
    assert "Active criteria: 1, Static criteria: 1, Dynamic criteria: 0" in text and "STATIC" in text
    data, text = run("show services dynamic-flow-capture statistics capture-group lab")
    assert data["drops"] == {"sequence_replay": 1} and data["groups"][0]["packets_copied"] == 6
    assert "Sequence replayed: 1" in text and "Packets copied: 6" in text  # cs2's STATIC criterion matches all
    with pytest.raises(CommandError):
        run("show services dynamic-flow-capture control-source source-identifier nobody")


def test_reload_keeps_criteria_and_shutdown_flushes(make_app):
    app = make_app(config_from(dfc_yaml()))
    old = app.pm.get_plugin("dynamic-flow-capture")
    keep = add(old, [("Cdest-ID", "cd1"), ("Dest-Port", "53")], seq=5)
    gone = add(old, [("Cdest-ID", "cd3")], seq=1, name="cs2", key=KEY2)
    # the new config drops cd3: its criterion is deleted (audited), the other one carries over
    text = dfc_yaml().replace("      content-destination cd3:\n        address: 127.0.0.1\n        port: 9\n", "")
    with structlog.testing.capture_logs() as logs:
        app.apply(app.build_graph(config_from(text)))
        new = app.pm.get_plugin("dynamic-flow-capture")
        assert new is not old and list(new.groups["lab"].criteria) == [keep]
        old.flowplane_shutdown(app)  # the core retires the replaced object: nothing left to flush there
        # the sequence window carried over: a replay of seq 5 is still refused
        reply = new.handle(build("NOOP", [("Csource-ID", "cs1"), ("Seq", 5)], KEY), "127.0.0.1")
        assert b" 409 " in reply
        assert add(new, [("Cdest-ID", "cd2")], seq=6) > gone  # ids are never reused
        new.flowplane_shutdown(app)
    audit = [(e["action"], e["criteria_id"], e.get("reason")) for e in logs if e["event"] == "dfc_audit"]
    assert audit == [("delete", gone, "reload"), ("add", gone + 1, None), ("flush", keep, "shutdown"),
                     ("flush", gone + 1, "shutdown")]


def test_input_rate_threshold_logs_crossings():
    clock = FakeClock()
    engine = engine_for(dfc_yaml(extra_group="      input-packet-rate-threshold: 100\n"), clock=clock)
    with structlog.testing.capture_logs() as logs:
        engine.process(batch_of([v4_udp(1)] * 150))
        clock.t += 1.0
        engine.process(batch_of([v4_udp(1)] * 1))  # window closes: 151 packets in 1 s > 100 pps
        clock.t += 0.5
        engine.process(batch_of([v4_udp(1)] * 10))
        clock.t += 1.0
        engine.process(batch_of([v4_udp(1)] * 1))  # 11 packets in 1.5 s: below again
    events = [(e["event"], e["rate_pps"]) for e in logs if e["event"].startswith("dfc_input_rate")]
    assert events == [("dfc_input_rate_threshold_exceeded", 151), ("dfc_input_rate_threshold_cleared", 7)]
    g = engine.statistics()["groups"][0]
    assert g["input_rate_threshold_exceeded"] == 1 and g["packets_seen"] == 162


def test_key_file_errors(tmp_path):
    (tmp_path / "empty.key").write_text("\n")
    base = dfc_yaml().replace(f"shared-key: {KEY.decode()}", "key-file: {}")
    got = _issues(base.format(tmp_path / "missing.key"))
    assert "cannot read the key file" in got["services dynamic-flow-capture capture-group lab control-source cs1 "
                                             "key-file"]
    got = _issues(base.format(tmp_path / "empty.key"))
    assert "is empty" in got["services dynamic-flow-capture capture-group lab control-source cs1 key-file"]
    got = _issues(dfc_yaml().replace(f"shared-key: {KEY.decode()}", f"shared-key: a\n        key-file: {tmp_path}/x"))
    assert "not both" in got["services dynamic-flow-capture capture-group lab control-source cs1 key-file"]

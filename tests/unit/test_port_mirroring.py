"""Port mirroring: config validation, term actions, the rate/run-length sampler,
GRE/ERSPAN header bytes (tshark's view: tests/interop), batched sends on real sockets,
and the whole action path sending GRE to loopback with a raw socket."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from flowplane.batch import PacketBatch
from flowplane.plugins.port_mirroring import commands
from flowplane.plugins.port_mirroring.config import DEFAULT_INSTANCE, LIMITS, parse
from flowplane.plugins.port_mirroring.encap import GRE_HEADER, erspan_header, erspan_headers
from flowplane.plugins.port_mirroring.engine import PortMirror
from flowplane.plugins.port_mirroring.send import REASONS, BatchSender
from flowplane.profiles import Limits
from flowplane.sampling import Sampler
from flowplane.testing import build_app, config_from

from frames import UDP, eth, eth_vlan, ipv4, udp

BASE_FW = """
firewall:
  family inet:
    filter f1:
      term t:
        from: {protocol: [udp]}
        then: THEN
"""


def _errors(text: str, then: str = "{count: c}") -> list[str]:
    app = build_app(config_from(text + BASE_FW.replace("THEN", then)), configure=False)
    return app.validate()


def _pm(body: str) -> str:
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return "forwarding-options:\n  port-mirroring:\n" + indented + "\n"


GOOD = _pm("""
input: {rate: 10, run-length: 2, maximum-packet-length: 128}
family inet:
  output:
    interface: [mirror0, mirror1]
    ip-address 192.0.2.50: {encapsulation: gre, source-address: 192.0.2.1, ttl: 32, dscp: 10}
family inet6:
  output:
    ip-address "2001:db8::50": {encapsulation: erspan, session-id: 7}
instance pm1:
  input: {rate: 1}
  family any:
    output:
      interface mirror0: {}
instance pm2:
  family inet:
    output:
      ip-address: [192.0.2.60, 192.0.2.61]
""")


# -- config -------------------------------------------------------------------------
def test_good_config_parses_every_destination():
    cfg, issues = parse(config_from(GOOD).data, Limits.of(LIMITS))
    assert issues == []
    d = cfg.instances[DEFAULT_INSTANCE]
    assert (d.rate, d.run_length, d.maximum_packet_length) == (10, 2, 128)
    assert [(x.kind, x.target, x.families) for x in d.destinations] == [
        ("interface", "mirror0", ("inet",)), ("interface", "mirror1", ("inet",)),
        ("gre", "192.0.2.50", ("inet",)), ("erspan", "2001:db8::50", ("inet6",))]
    gre = d.destinations[2]
    assert (gre.source_address, gre.ttl, gre.dscp) == ("192.0.2.1", 32, 10)
    assert d.destinations[3].session_id == 7
    assert cfg.instances["pm1"].rate == 1 and cfg.instances["pm1"].destinations[0].families == ("any",)
    assert [x.target for x in cfg.instances["pm2"].destinations] == ["192.0.2.60", "192.0.2.61"]
    assert _errors(GOOD, "{port-mirror: true, port-mirror-instance: pm2}") == []


def test_same_interface_under_two_families_is_one_destination():
    cfg, issues = parse(config_from(_pm("""
family inet: {output: {interface: m0}}
family inet6: {output: {interface: m0}}
""")).data, Limits.of(LIMITS))
    assert issues == []
    [d] = cfg.instances[DEFAULT_INSTANCE].destinations
    assert d.families == ("inet", "inet6")


@pytest.mark.parametrize("body, needle", [
    ("input: {rate: 0}\nfamily inet: {output: {interface: m0}}", "rate: 0 is below the minimum 1"),
    ("input: {rate: 20000000}\nfamily inet: {output: {interface: m0}}",
     "exceeds the maximum 16000000 (hardware profile limit sampling_rate_max)"),
    ("input: {run-length: 21}\nfamily inet: {output: {interface: m0}}", "run-length: 21 exceeds the maximum 20"),
    ("input: {maximum-packet-length: 10000}\nfamily inet: {output: {interface: m0}}",
     "maximum-packet-length: 10000 exceeds the maximum 9216"),
    ("input: {rat: 2}\nfamily inet: {output: {interface: m0}}", "unknown key 'rat' (did you mean 'rate'?)"),
    ("family inet: {output: {}}", "expected 'interface IF' and/or 'ip-address ADDR'"),
    ("family inet: {}", "expected 'output'"),
    ("family mpls: {output: {interface: m0}}", "unknown family 'mpls'"),
    ("family inet: {output: {interface: ge-0/0/1.0}}", "expected a Linux interface name"),
    ("family inet: {output: {ip-address 192.0.2.300: {}}}", "expected the analyzer's IPv4 or IPv6 address"),
    ("family inet: {output: {ip-address 224.0.0.5: {}}}", "must be a unicast address"),
    ("family inet: {output: {ip-address 192.0.2.5: {encapsulation: vxlan}}}",
     "unknown value 'vxlan'"),
    ("family inet: {output: {ip-address 192.0.2.5: {source-address: 2001:db8::1}}}",
     "source-address 2001:db8::1 is IPv6 but the analyzer 192.0.2.5 is IPv4"),
    ("family inet: {output: {ip-address 192.0.2.5: {source-address: nowhere}}}", "expected an IP address"),
    ("family inet: {output: {ip-address 192.0.2.5: {encapsulation: erspan, session-id: 1024}}}",
     "session-id: 1024 exceeds the maximum 1023"),
    ("family inet: {output: {ip-address 192.0.2.5: {session-id: 3}}}", "session-id is for 'encapsulation: erspan'"),
    ("input: {rate: 2}", "the default instance has an input but no output"),
    ("instance pm1: {input: {rate: 2}}", "instance 'pm1' has no output"),
    ("instance default: {family inet: {output: {interface: m0}}}", "reserved for the top-level instance"),
])
def test_bad_config_is_refused_with_a_clear_error(body, needle):
    errors = _errors(_pm(body))
    assert any(needle in e for e in errors), errors
    assert all(e.startswith("<test>:") for e in errors[:-1])  # file:line:col


def test_destination_limit_names_the_profile_limit():
    addrs = ", ".join(f"192.0.2.{i}" for i in range(1, 70))
    errors = _errors(_pm(f"family inet: {{output: {{ip-address: [{addrs}]}}}}"))
    assert any("69 destinations exceed the maximum 64 (hardware profile limit port_mirroring_destinations)" in e
               for e in errors), errors


def test_mirror_interface_that_is_also_captured_is_refused():
    text = "interfaces:\n  eth7: {source: af-packet}\n" + _pm("family inet: {output: {interface: eth7}}")
    errors = _errors(text)
    assert any("mirror interface 'eth7' is also captured" in e for e in errors), errors


def test_port_mirror_action_needs_the_default_instance():
    text = _pm("instance pm1: {family inet: {output: {interface: m0}}}")
    errors = _errors(text, "{port-mirror: true}")
    assert any("'port-mirror' needs the default instance" in e for e in errors), errors
    assert _errors(text, "{port-mirror-instance: pm1}") == []


def test_port_mirror_instance_action_checks_the_name():
    text = _pm("instance pm1: {family inet: {output: {interface: m0}}}")
    errors = _errors(text, "{port-mirror-instance: pm2}")
    assert any("no port-mirroring instance 'pm2' (did you mean 'pm1'?)" in e for e in errors), errors
    errors = _errors(text, "{port-mirror-instance: true}")
    assert any("needs an argument" in e for e in errors), errors
    errors = _errors("", "{port-mirror: true}")
    assert any("needs the default instance" in e for e in errors), errors


# -- sampler ------------------------------------------------------------------------------
def _reference(m: int, rate: int, run: int) -> list[int]:
    """Candidate i is copied if it is a trigger (every rate-th) or within run after one."""
    out = []
    for i in range(m):
        if any((j + 1) % rate == 0 and j <= i <= j + run for j in range(max(0, i - run), i + 1)):
            out.append(i)
    return out


@pytest.mark.parametrize("rate, run", [(1, 0), (1, 3), (10, 0), (10, 2), (3, 5), (7, 6)])
@pytest.mark.parametrize("cuts", [[1000], [1, 2, 3, 994], [9, 1, 10, 980], [13] * 76 + [12]])
def test_sampler_matches_the_reference_whatever_the_batches(rate, run, cuts):
    s = Sampler(rate, run_length=run)
    got, base = [], 0
    for n in cuts:
        got += (s.select(n) + base).tolist()
        base += n
    assert got == _reference(base, rate, run)


# -- encapsulation bytes -----------------------------------------------------------------
def test_gre_header_is_rfc2784_transparent_ethernet_bridging():
    assert GRE_HEADER == bytes.fromhex("00006558")


def test_erspan_header_bytes():
    h = erspan_header(0x01020304, session_id=0x2AB, vlan=0x123, index=0xABCDE)
    assert h.hex() == "100088be01020304" + "1123" + "1aab" + "000abcde"
    h = erspan_header(5, session_id=7, vlan=0, index=3)
    assert h.hex() == "100088be00000005" + "1000" + "0007" + "00000003"


def test_erspan_headers_vector_equals_scalar():
    vlan = np.array([0, 5, 4095, 0], dtype=np.uint16)
    index = np.array([1, 2, 3, (1 << 20) + 9], dtype=np.int32)
    h = erspan_headers(0xFFFFFFFE, session_id=1023, vlan=vlan, index=index)
    assert h.shape == (4, 16) and h.flags.c_contiguous
    for i in range(4):
        assert bytes(h[i]) == erspan_header(0xFFFFFFFE + i, session_id=1023, vlan=int(vlan[i]), index=int(index[i]))


# -- batched sends on real sockets ------------------------------------------------------------
@pytest.mark.parametrize("use_sendmmsg", [True, False])
def test_send_batch_puts_header_plus_slice_in_each_datagram(use_sendmmsg):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b.settimeout(2)
        frames = [bytes([i]) * (10 + i) for i in range(50)]
        batch = PacketBatch.from_frames(frames)
        sender = BatchSender(use_sendmmsg=use_sendmmsg)
        idx = np.arange(0, 50, 3)
        lens = np.minimum(batch.caplen[idx], 20).astype(np.int64)
        st = sender.send_batch(a, batch.data, batch.offset[idx], lens, b"HDR")
        assert (st == 0).all()
        got = [b.recv(100) for _ in idx]
        assert got == [b"HDR" + frames[i][:20] for i in idx]
        hdrs = np.arange(len(idx) * 2, dtype=np.uint8).reshape(len(idx), 2)
        st = sender.send_batch(a, batch.data, batch.offset[idx], lens, hdrs)
        assert (st == 0).all()
        assert [b.recv(100) for _ in idx] == [bytes(hdrs[k]) + frames[i][:20] for k, i in enumerate(idx)]
        st = sender.send_batch(a, batch.data, batch.offset[idx], lens)
        assert [b.recv(100) for _ in idx] == [frames[i][:20] for i in idx]
        assert frames == [bytes(f) for f in batch.frames()]  # the batch buffer is untouched
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("use_sendmmsg", [True, False])
def test_full_socket_buffer_drops_are_counted_not_waited_for(use_sendmmsg):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        batch = PacketBatch.from_frames([b"x" * 1000] * 3000)
        sender = BatchSender(use_sendmmsg=use_sendmmsg)
        st = sender.send_batch(a, batch.data, batch.offset, batch.caplen.astype(np.int64))
        sent = int((st == 0).sum())
        assert 0 < sent < 3000
        assert (st[sent:] == REASONS.index("send_buffer_full")).all() and (st[:sent] == 0).all()
        received = 0
        b.setblocking(False)
        while True:
            try:
                b.recv(2000)
                received += 1
            except BlockingIOError:
                break
        assert received == sent
    finally:
        a.close()
        b.close()


# -- the action path, GRE to loopback -------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root")
@pytest.mark.parametrize("use_sendmmsg", [True, False])
def test_action_handler_sends_gre_copies_to_loopback_and_leaves_the_batch_alone(tmp_path, use_sendmmsg):
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    rx.bind(("127.0.0.77", 0))
    rx.settimeout(2)
    try:
        cfg = config_from(_pm("""
input: {rate: 3, maximum-packet-length: 60}
family inet:
  output:
    ip-address 127.0.0.77: {source-address: 127.0.0.1}
""") + f"system: {{control-socket: {tmp_path}/c.sock}}\n" + BASE_FW.replace("THEN", "{port-mirror: true}"))
        app = build_app(cfg)
        pm = app.pm.get_plugin(commands.PLUGIN_OBJECT)
        assert isinstance(pm, PortMirror)
        for d in pm.destinations():
            d.sender = BatchSender(use_sendmmsg=use_sendmmsg)
        frames = [eth(0x0800, ipv4(UDP, udp(1000 + i, 53, bytes([i]) * (10 + i)), src="10.9.9.9", dst="10.8.8.8"))
                  for i in range(30)]
        batch = PacketBatch.from_frames(frames)
        before = batch.data.copy()
        from flowplane.decode import decode
        decode(batch)
        from flowplane.batch import ActionSelection
        pm.on_port_mirror([ActionSelection("f1", "t", "port-mirror", None, batch)])
        assert np.array_equal(batch.data, before)
        got = []
        rx_deadline = 10
        while len(got) < rx_deadline:
            pkt = rx.recv(4096)
            ihl = (pkt[0] & 15) * 4
            if pkt[12:16] == socket.inet_aton("127.0.0.1") and pkt[16:20] == socket.inet_aton("127.0.0.77"):
                got.append(pkt[ihl:])
        assert got == [GRE_HEADER + frames[i][:60] for i in range(2, 30, 3)]
        data = commands.show(app, [])
        [inst] = data["instances"]
        assert (inst["candidates"], inst["sampled"]) == (30, 10)
        [d] = inst["destinations"]
        assert d["packets"] == 10 and d["bytes"] == sum(min(60, len(frames[i])) for i in range(2, 30, 3))
        assert d["state"] == "up" and d["drops"] == {}
        text = commands.format_show(data)
        assert "Instance Name: default" in text and "127.0.0.77 (gre)" in text
        assert commands.clear(app, []) == {"cleared": ["default"]}
        assert commands.show(app, [])["instances"][0]["destinations"][0]["packets"] == 0
        app.pm.hook.flowplane_shutdown(app=app)
        assert pm.destinations()[0].sock is None
    finally:
        rx.close()


def test_missing_interface_is_counted_as_interface_down_and_logged_once(tmp_path):
    from structlog.testing import capture_logs

    cfg = config_from(_pm("family any: {output: {interface: fpnosuch0}}")
                      + f"system: {{control-socket: {tmp_path}/c.sock}}\n" + BASE_FW.replace("THEN", "{port-mirror: "
                                                                                                     "true}"))
    with capture_logs() as logs:
        app = build_app(cfg)
        pm = app.pm.get_plugin(commands.PLUGIN_OBJECT)
        from flowplane.batch import ActionSelection
        for _ in range(3):
            pm.on_port_mirror([ActionSelection("f1", "t", "port-mirror", None,
                                               PacketBatch.from_frames([b"a" * 60] * 4))])
            pm.reopen_closed()
    failed = [e for e in logs if e["event"] == "port_mirror_destination_failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "interface_down"
    [d] = commands.show(app, [])["instances"][0]["destinations"]
    assert d["state"] == "down" and d["drops"] == {"interface_down": 12} and d["packets"] == 0
    with pytest.raises(Exception, match="no port-mirroring instance 'x'"):
        commands.show(app, ["instance", "x"])


def _gre_rx(family: int, addr: str) -> socket.socket:
    rx = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_GRE)
    rx.bind((addr, 0))
    rx.settimeout(2)
    return rx


@pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root")
def test_erspan_to_an_ipv6_analyzer_on_loopback(tmp_path):
    try:
        rx = _gre_rx(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        cfg = config_from(_pm("""
family any:
  output:
    ip-address "::1": {encapsulation: erspan, session-id: 513, source-address: "::1", ttl: 9}
""") + f"system: {{control-socket: {tmp_path}/c.sock}}\n" + BASE_FW.replace("THEN", "{port-mirror: true}"))
        app = build_app(cfg)
        pm = app.pm.get_plugin(commands.PLUGIN_OBJECT)
        frames = [eth_vlan([7], 0x0800, ipv4(UDP, udp(5000 + i, 53, b"six" * i))) for i in range(5)]
        batch = PacketBatch.from_frames(frames, iface=3)
        from flowplane.batch import ActionSelection
        from flowplane.decode import decode
        decode(batch)
        pm.on_port_mirror([ActionSelection("f1", "t", "port-mirror", None, batch)])
        got = []
        while len(got) < 5:
            data = rx.recv(4096)  # IPv6 raw sockets deliver the payload only: GRE + ERSPAN + frame
            if data[16:] in frames:
                got.append(data)
        assert got == [erspan_header(i, session_id=513, vlan=7, index=3) + frames[i] for i in range(5)]
        [d] = commands.show(app, [])["instances"][0]["destinations"]
        assert d["packets"] == 5 and d["encapsulated_bytes"] == 5 * 16 and d["session_id"] == 513
    finally:
        rx.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root")
def test_reload_keeps_the_counters_of_destinations_still_configured(tmp_path):
    rx = _gre_rx(socket.AF_INET, "127.0.0.79")
    try:
        fw = f"system: {{control-socket: {tmp_path}/c.sock}}\n" + BASE_FW.replace("THEN", "{port-mirror: true}")
        one = _pm("family inet: {output: {ip-address 127.0.0.79: {}}}")
        two = _pm("family inet: {output: {ip-address: [127.0.0.79, 127.0.0.80]}}")
        app = build_app(config_from(one + fw))
        old = app.pm.get_plugin(commands.PLUGIN_OBJECT)
        from flowplane.batch import ActionSelection
        from flowplane.decode import decode
        batch = PacketBatch.from_frames([eth(0x0800, ipv4(UDP, udp(1, 2, b"r" * 30)))] * 4)
        decode(batch)
        sel = [ActionSelection("f1", "t", "port-mirror", None, batch)]
        old.on_port_mirror(sel)
        app.apply(app.build_graph(config_from(two + fw)))
        new = app.pm.get_plugin(commands.PLUGIN_OBJECT)
        assert new is not old and not app.pm.is_registered(old)
        old.flowplane_shutdown(app)  # what the service does to the replaced object
        app.graph.action_handlers["port-mirror"](sel)
        dests = {d["target"]: d for d in commands.show(app, [])["instances"][0]["destinations"]}
        assert dests["127.0.0.79"]["packets"] == 8 and dests["127.0.0.80"]["packets"] == 4
        assert commands.show(app, [])["instances"][0]["candidates"] == 8
        n = 0
        while n < 8:
            pkt = rx.recv(4096)
            n += pkt[16:20] == socket.inet_aton("127.0.0.79")
    finally:
        rx.close()

"""rfc2544 plugin: config validation, test frames, the reflector's batch logic, commands."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import numpy as np
import pytest

from flowplane.api import Config
from flowplane.plugins.rfc2544.commands import format_all, format_run
from flowplane.plugins.rfc2544.config import TestConfig, parse
from flowplane.plugins.rfc2544.frames import SIGNATURE, FrameBatch, Stream, fps_for_kbps, line_kbps
from flowplane.plugins.rfc2544.reflector import ReflectorEngine

ROOT = Path(__file__).resolve().parents[2]


def _cfg(text: str) -> tuple:
    return parse(Config.from_text(text).data)


GOOD = """
services:
  rpm:
    rfc2544-benchmarking:
      profiles:
        test-profile:
          p1: {test-type: throughput, packet-size: [64, 1518], bandwidth-kbps: 100000}
      tests:
        test-name:
          t1: {mode: initiate-and-terminate, test-interface: eth1, destination-ipv4-address: 198.19.0.1,
               test-profile: p1, test-iterator-duration: 2s}
          r1: {mode: reflect, test-interface: eth2, ip-swap: , udp-tcp-port-swap: true}
"""


def test_config_parses_junos_words():
    cfg, issues = _cfg(GOOD)
    assert issues == []
    t1, r1 = cfg.tests["t1"], cfg.tests["r1"]
    assert t1.profile.packet_sizes == (64, 1518) and t1.trial_seconds == 2.0 and t1.destination_port == 7
    assert r1.ip_swap and r1.port_swap and r1.mac_swap and r1.signature_check


@pytest.mark.parametrize("bad, path, words", [
    ("packet-size: 65", "packet-size", "is not one of"),
    ("test-type: speed", "test-type", "speed"),
    ("bandwidth-kbps: 10", "bandwidth-kbps", "below the minimum"),
    ("step-percent: 0", "step-percent", "below the minimum"),
    ("test-duraton: 5", "test-duraton", "test-duration"),
])
def test_profile_errors_name_the_key(bad, path, words):
    text = GOOD.replace("p1: {test-type: throughput, packet-size: [64, 1518], bandwidth-kbps: 100000}",
                        "p1: {test-type: throughput, " + bad + "}" if not bad.startswith("test-type")
                        else "p1: {" + bad + "}")
    _, issues = _cfg(text)
    assert issues and any(path in i.path and words in i.message for i in issues), issues


def test_test_errors():
    text = GOOD.replace("test-profile: p1,", "test-profile: p2, ip-swap: true,")
    _, issues = _cfg(text)
    msgs = " | ".join(i.message for i in issues)
    assert "no test-profile 'p2'" in msgs and "ip-swap applies to mode reflect only" in msgs
    _, issues = _cfg(GOOD.replace("destination-ipv4-address: 198.19.0.1", "destination-ipv4-address: 2001:db8::1"))
    assert any("expected an IPv4 address" in i.message for i in issues)
    _, issues = _cfg(GOOD.replace("mode: reflect,", "mode: reflect, test-profile: p1,"))
    assert any("applies to mode initiate-and-terminate only" in i.message for i in issues)
    _, issues = _cfg(GOOD.replace("mode: reflect, test-interface: eth2,", "mode: reflect,"))
    assert any("missing test-interface" in i.message for i in issues)


def test_inet6_refuses_too_small_frames():
    text = GOOD.replace("test-interface: eth1, destination-ipv4-address: 198.19.0.1",
                        "test-interface: eth1, family: inet6, destination-ipv6-address: '2001:db8::1'")
    _, issues = _cfg(text)
    assert any("needs at least 84 bytes" in i.message for i in issues)


def test_errors_carry_file_line_col(tmp_path):
    from flowplane.app import App

    f = tmp_path / "c.yaml"
    f.write_text(GOOD.replace("step", "x").replace("bandwidth-kbps: 100000", "bandwidth-kbps: 5"))
    app = App.create(Config.load(str(f)))
    lines = app.validate()
    assert any(f"{f}:" in ln and "bandwidth-kbps" in ln and "below the minimum" in ln for ln in lines), lines


@pytest.mark.parametrize("name", ["rfc2544-initiator.yaml", "rfc2544-reflector.yaml"])
def test_examples_pass_check_config(name):
    from flowplane.cli import main

    assert main(["check-config", str(ROOT / "etc" / "examples" / name)]) == 0


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.parametrize("family, src, dst, size", [("inet", "198.18.0.1", "198.19.0.1", 64),
                                                    ("inet6", "2001:db8::1", "2001:db8:1::1", 128)])
def test_frames_are_valid_udp_with_signature(family, src, dst, size):
    fb = FrameBatch(Stream(family, b"\x02" * 6, b"\x04" * 6, src, dst, 49184, 7, tag=0x1234), size, 8)
    rows = fb.stamp(100, 8, 1_700_000_000_123_456_789)
    assert rows.shape == (8, size - 4)
    v4 = family == "inet"
    ip, udp = 14, (34 if v4 else 54)
    for i, row in enumerate(rows):
        b = row.tobytes()
        a = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
        pseudo = a + (struct.pack("!BBH", 0, 17, len(b) - udp) if v4 else struct.pack("!IxxxB", len(b) - udp, 17))
        assert _csum(pseudo + b[udp:]) == 0xFFFF  # the UDP checksum verifies
        if v4:
            assert _csum(b[ip:ip + 20]) == 0xFFFF
        p = udp + 8
        assert b[p:p + 4] == SIGNATURE and b[p + 4:p + 6] == b"\x12\x34"
        assert int.from_bytes(b[p + 6:p + 10], "big") == 100 + i
        assert int.from_bytes(b[p + 10:p + 18], "big") == 1_700_000_000_123_456_789


def test_line_rate_counts_preamble_and_gap():
    assert round(fps_for_kbps(1_000_000, 64)) == 1_488_095
    assert round(fps_for_kbps(1_000_000, 1518)) == 81_274
    assert line_kbps(81_274, 1518) == pytest.approx(1_000_000, rel=1e-5)


def _rows(frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros((len(frames), 2048), np.uint8)
    for i, f in enumerate(frames):
        rows[i, :len(f)] = np.frombuffer(f, np.uint8)
    return rows, np.array([len(f) for f in frames], np.int64)


def test_reflector_swaps_and_counts_bad_frames():
    stream = Stream("inet", b"\x02\0\0\0\0\x01", b"\x02\0\0\0\0\x02", "198.18.0.1", "198.19.0.1", 49184, 7, tag=1)
    good = FrameBatch(stream, 128, 1).stamp(0, 1, 5).tobytes()
    bad_sig = bytearray(good)
    bad_sig[42:46] = b"XXXX"
    other = FrameBatch(Stream("inet", b"\x02" * 6, b"\x04" * 6, "198.18.0.1", "198.19.0.9", 49184, 7), 128, 1)
    other = other.stamp(0, 1, 5).tobytes()
    truncated = good[:50]
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    cfg = TestConfig(name="r", mode="reflect", interface="x", source_address="198.18.0.1",
                     destination_address="198.19.0.1", ip_swap=True, port_swap=True)
    eng = ReflectorEngine(cfg)
    out, lens = eng.process(*_rows([good, bytes(bad_sig), other, truncated, arp, good]))
    assert len(out) == 2 and list(lens) == [124, 124]
    b = out[0, :124].tobytes()
    assert b[0:6] == good[6:12] and b[6:12] == good[0:6]  # mac-swap
    assert b[26:30] == good[30:34] and b[30:34] == good[26:30]  # ip-swap
    assert b[34:36] == good[36:38] and b[36:38] == good[34:36]  # port swap
    assert _csum(b[14:34]) == 0xFFFF
    assert eng.dropped == {"truncated": 1, "bad-signature": 1, "other-test": 1, "oversize": 0}
    assert eng.ignored == 1 and eng.received == 4
    eng2 = ReflectorEngine(TestConfig(name="r", mode="reflect", interface="x", signature_check=False))
    out2, _ = eng2.process(*_rows([bytes(bad_sig)]))
    assert len(out2) == 1 and out2[0, :6].tobytes() == good[6:12]


def test_formatters_render_runs():
    run = {"test_id": 3, "test_name": "t1", "mode": "initiate-and-terminate", "family": "inet", "interface": "eth1",
           "test_type": "throughput", "packet_sizes": [512], "state": "completed", "reason": "", "warning": "",
           "started": 1.0, "ended": 2.0, "elapsed": 1.0, "view": "detail",
           "results": [{"size": 512, "ceiling_fps": 1e5, "iterations": [
               {"iteration": 1, "kind": "search", "offered_kbps": 1e5, "sent": 10, "received": 10,
                "loss_percent": 0.0, "latency_min_us": 1.0, "latency_avg_us": 2.0, "latency_max_us": 3.0,
                "out_of_order": 0, "duplicates": 0, "passed": True}],
               "throughput": {"fps": 23496.2, "kbps": 100000.0, "frame_kbps": 95488.0},
               "latency_us": {"min": 1.0, "avg": 2.0, "max": 3.0, "at_fps": 23496.2}}]}
    text = format_run(run)
    assert "Test id: 3" in text and "Throughput: 100,000.0 kbps" in text and "search" in text
    assert "t1" in format_all({"tests": ["t1"], "runs": [run]})


def test_commands_and_test_verb_registered():
    from flowplane.app import App
    from flowplane.control import ControlServer

    app = App.create(Config.from_text(GOOD))
    app.configure()
    srv = ControlServer(app, "")
    reply = srv.handle({"cmd": ["show", "services", "rpm", "rfc2544-benchmarking"], "format": "text"})
    assert reply["ok"] and "t1" in reply["text"]
    reply = srv.handle({"cmd": ["test", "services", "rpm", "rfc2544-benchmarking", "test", "nope", "start"]})
    assert not reply["ok"] and "no test-name 'nope'" in reply["error"]
    reply = srv.handle({"cmd": ["show", "services", "rpm", "rfc2544-benchmarking", "test-id", "9", "detail"]})
    assert not reply["ok"] and "no test-id 9" in reply["error"]

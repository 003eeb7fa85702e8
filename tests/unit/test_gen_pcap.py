"""tests/bench/gen_pcap.py: the truth file must describe the pcap it wrote.

The pcap is read back with an independent struct-based parser written here (no code shared
with the generator); tests/interop/test_gen_pcap_tshark.py cross-checks it with tshark.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

GEN = Path(__file__).resolve().parents[1] / "bench" / "gen_pcap.py"

PACKETS, CONVERSATIONS, SEED, MALFORMED = 3000, 200, 3, 0.02


def _load_gen():
    spec = importlib.util.spec_from_file_location("gen_pcap", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load_gen()


# --------------------------------------------------------------------------- independent parser
def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def read_pcap(path: Path):
    data = path.read_bytes()
    magic, vmaj, vmin, _tz, _sig, snaplen, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert (magic, vmaj, vmin, linktype) == (0xA1B2C3D4, 2, 4, 1)
    off = 24
    frames = []
    while off < len(data):
        sec, usec, caplen, length = struct.unpack_from("<IIII", data, off)
        off += 16
        assert caplen == length <= snaplen
        assert usec < 1_000_000
        frames.append((sec * 1_000_000 + usec, data[off : off + caplen]))
        off += caplen
    assert off == len(data)
    return frames


L4_MIN = {6: 20, 17: 8, 1: 8, 58: 8, 47: 4}
PROTO_NAME = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 47: "GRE"}


def dissect(frame: bytes) -> dict:
    """Return {'reason': ..., and for OK frames: proto, iplen, key, vlan, checks}."""
    if len(frame) < 14:
        return {"reason": "HEADER_TOO_SMALL"}
    pos, et = 14, struct.unpack_from("!H", frame, 12)[0]
    vlan = False
    while et == 0x8100:
        if len(frame) < pos + 4:
            return {"reason": "HEADER_TOO_SMALL"}
        vlan = True
        et = struct.unpack_from("!H", frame, pos + 2)[0]
        pos += 4
    ip = frame[pos:]
    checks: list[tuple[str, bool]] = []
    if et == 0x0800:
        if len(ip) < 20:
            return {"reason": "HEADER_TOO_SMALL"}
        if ip[0] >> 4 != 4:
            return {"reason": "BAD_IP_VERSION"}
        ihl = (ip[0] & 15) * 4
        if ihl < 20 or ihl > len(ip):
            return {"reason": "BAD_IP_HEADER_LENGTH"}
        total = struct.unpack_from("!H", ip, 2)[0]
        if total < ihl:
            return {"reason": "BAD_TOTAL_LENGTH"}
        checks.append(("ipv4", _csum(ip[:ihl]) == 0xFFFF))
        checks.append(("ip_total_length", total == len(ip)))
        proto = ip[9]
        src, dst = b"\0" * 12 + ip[12:16], b"\0" * 12 + ip[16:20]
        l4 = ip[ihl:total]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, len(l4))
        v6 = False
    elif et == 0x86DD:
        if len(ip) < 40:
            return {"reason": "HEADER_TOO_SMALL"}
        if ip[0] >> 4 != 6:
            return {"reason": "BAD_IP_VERSION"}
        plen, nh = struct.unpack_from("!HB", ip, 4)
        total = 40 + plen
        checks.append(("ip_total_length", total == len(ip)))
        src, dst = ip[8:24], ip[24:40]
        rest = ip[40:total]
        while nh in (0, 43, 60):
            if len(rest) < 8 or len(rest) < (rest[1] + 1) * 8:
                return {"reason": "BAD_EXTENSION_HEADER"}
            nh, rest = rest[0], rest[(rest[1] + 1) * 8 :]
        proto, l4 = nh, rest
        pseudo = src + dst + struct.pack("!IxxxB", len(l4), proto)
        v6 = True
    else:
        return {"reason": "NOT_IP", "arp": et == 0x0806}
    if len(l4) < L4_MIN.get(proto, 0):
        return {"reason": "TRUNCATED_L4"}
    sport = dport = 0
    if proto in (6, 17):
        sport, dport = struct.unpack_from("!HH", l4, 0)
        checks.append((PROTO_NAME[proto], _csum(pseudo + l4) == 0xFFFF))
        if proto == 17:
            checks.append(("udp_length", struct.unpack_from("!H", l4, 4)[0] == len(l4)))
        else:
            checks.append(("tcp_data_offset", l4[12] >> 4 == 5))
    elif proto == 1:
        dport = l4[0] << 8 | l4[1]
        checks.append(("ICMP", _csum(l4) == 0xFFFF))
    elif proto == 58:
        dport = l4[0] << 8 | l4[1]
        checks.append(("ICMPv6", _csum(pseudo + l4) == 0xFFFF))
    elif proto == 47:
        flags_ver, ptype = struct.unpack_from("!HH", l4, 0)
        inner = l4[4:]
        checks.append(("gre_header", flags_ver == 0 and ptype == 0x0800))
        checks.append(("gre_inner_ipv4", inner[0] == 0x45 and _csum(inner[:20]) == 0xFFFF))
        checks.append(("gre_inner_length", struct.unpack_from("!H", inner, 2)[0] == len(inner)))
    return {
        "reason": "OK",
        "proto": PROTO_NAME.get(proto, str(proto)),
        "v6": v6,
        "iplen": total,
        "key": (src, dst, proto, sport, dport),
        "vlan": vlan,
        "checks": checks,
    }


def summarize(frames) -> dict:
    reasons = collections.Counter()
    by_proto = collections.Counter()
    bytes_by_proto = collections.Counter()
    keys = set()
    s = {"ipv4": 0, "ipv6": 0, "ip_bytes": 0, "vlan": 0, "arp": 0, "bad_checks": collections.Counter()}
    for _ts, fr in frames:
        d = dissect(fr)
        reasons[d["reason"]] += 1
        if d.get("arp"):
            s["arp"] += 1
        if d["reason"] != "OK":
            continue
        s["ipv6" if d["v6"] else "ipv4"] += 1
        s["ip_bytes"] += d["iplen"]
        s["vlan"] += d["vlan"]
        by_proto[d["proto"]] += 1
        bytes_by_proto[d["proto"]] += d["iplen"]
        keys.add(d["key"])
        for name, ok in d["checks"]:
            if not ok:
                s["bad_checks"][name] += 1
    s.update(reasons=reasons, by_proto=by_proto, bytes_by_proto=bytes_by_proto, keys=len(keys))
    return s


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "t.pcap"
    gen.generate(str(out), PACKETS, CONVERSATIONS, SEED, MALFORMED)
    truth = json.loads(Path(str(out) + ".truth.json").read_text())
    frames = read_pcap(out)
    return out, truth, frames, summarize(frames)


# --------------------------------------------------------------------------- tests
def test_truth_matches_file_content(sample):
    out, truth, frames, s = sample
    assert len(frames) == truth["frames"]
    assert out.stat().st_size == truth["pcap_bytes"]
    assert truth["ip_packets"] == PACKETS - truth["malformed"]["total"]
    assert s["reasons"]["OK"] == truth["ip_packets"]
    assert s["ipv4"] == truth["ipv4_packets"]
    assert s["ipv6"] == truth["ipv6_packets"]
    assert s["ip_bytes"] == truth["ip_bytes"]
    assert s["keys"] == truth["unidirectional_5tuple_keys"]
    assert s["arp"] == truth["non_ip_frames"] == truth["arp_frames"]
    assert s["vlan"] == truth["vlan_tagged_frames"]
    assert {k: v for k, v in s["by_proto"].items()} == {k: v for k, v in truth["packets_by_protocol"].items() if v}
    assert {k: v for k, v in s["bytes_by_proto"].items()} == {k: v for k, v in truth["bytes_by_protocol"].items() if v}


def test_mix_covers_every_layout(sample):
    _out, truth, _frames, s = sample
    for proto in ("TCP", "UDP", "ICMP", "ICMPv6", "GRE"):
        assert truth["packets_by_protocol"][proto] > 0, proto
    assert truth["ipv6_packets"] > 0 and truth["vlan_tagged_frames"] > 0 and truth["arp_frames"] > 0
    tcp = truth["packets_by_protocol"]["TCP"] / truth["ip_packets"]
    assert 0.5 < tcp < 0.9


def test_malformed_counted_by_kind(sample):
    _out, truth, _frames, s = sample
    mal = truth["malformed"]
    assert mal["total"] == round(MALFORMED * truth["frames"]) > 0
    assert sum(mal["by_kind"].values()) == mal["total"]
    assert set(mal["by_kind"]) == set(gen.MALFORMED_KINDS)
    expected = {k: v for k, v in truth["expected_decode_reasons"].items() if v}
    assert dict(s["reasons"]) == expected
    # every kind maps to its own reason, so the per-kind counts are visible one to one
    for kind, n in mal["by_kind"].items():
        assert s["reasons"][gen.MALFORMED_REASON[kind]] == n, kind


def test_checksums_and_lengths_verify(sample):
    _out, _truth, _frames, s = sample
    assert s["bad_checks"] == collections.Counter()


def test_timestamps_non_decreasing(sample):
    _out, truth, frames, _s = sample
    ts = [t for t, _ in frames]
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert ts[0] == truth["first_ts_us"] and ts[-1] == truth["last_ts_us"]
    assert ts[0] >= gen.EPOCH * 1_000_000


def test_tcp_handshake_and_sequence_numbers(tmp_path):
    """Per TCP connection: first packet is a SYN, seq numbers advance by the bytes sent."""
    out = tmp_path / "tcp.pcap"
    gen.generate(str(out), PACKETS, CONVERSATIONS, SEED, 0.0)
    frames = read_pcap(out)
    flows: dict = collections.defaultdict(list)
    for _ts, fr in frames:
        d = dissect(fr)
        if d["reason"] != "OK" or d["proto"] != "TCP":
            continue
        pos = 18 if d["vlan"] else 14
        ip = fr[pos:]
        l4 = ip[40:] if d["v6"] else ip[20:]
        sport, dport, seq, _ack, _off, flags = struct.unpack_from("!HHIIBB", l4, 0)
        src, dst = d["key"][0], d["key"][1]
        conv = (min((src, sport), (dst, dport)), max((src, sport), (dst, dport)))
        flows[conv].append(((src, sport), seq, flags, len(l4) - 20))
    assert flows
    syn_first = 0
    for pkts in flows.values():
        syn_first += pkts[0][2] == 0x02
        nxt = {}
        for side, seq, flags, plen in pkts:
            if flags & 0x04:  # RST may carry any sequence number
                continue
            if side in nxt:
                assert seq == nxt[side]
            nxt[side] = (seq + plen + bool(flags & 0x02) + bool(flags & 0x01)) & 0xFFFFFFFF
    assert syn_first == len(flows)


def test_deterministic(tmp_path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    gen.generate(str(a), 2000, 100, 11, 0.01)
    gen.generate(str(b), 2000, 100, 11, 0.01)
    gen.generate(str(c), 2000, 100, 12, 0.01)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(a) == digest(b)
    assert Path(f"{a}.truth.json").read_text() == Path(f"{b}.truth.json").read_text()
    assert digest(a) != digest(c)


def test_cli_and_max_payload(tmp_path):
    out = tmp_path / "cli.pcap"
    r = subprocess.run(
        [sys.executable, str(GEN), "-o", str(out), "--packets", "1500", "--conversations", "80",
         "--seed", "5", "--span", "20", "--max-payload", "64"],
        capture_output=True, text=True, check=True,
    )
    assert "1500 IP packets" in r.stderr
    truth = json.loads(Path(f"{out}.truth.json").read_text())
    assert truth["generator"]["max_payload"] == 64 and truth["malformed"]["total"] == 0
    frames = read_pcap(out)
    assert max(len(f) for _, f in frames) <= 18 + 40 + 32 + 64
    s = summarize(frames)
    assert s["reasons"]["OK"] == 1500 and s["ip_bytes"] == truth["ip_bytes"]
    assert s["bad_checks"] == collections.Counter()


def test_committed_sample_matches_its_truth():
    root = Path(__file__).resolve().parents[2]
    pcap = root / "etc" / "samples" / "sample.pcap"
    if not pcap.exists():
        pytest.skip("etc/samples/sample.pcap not generated yet")
    truth = json.loads(Path(f"{pcap}.truth.json").read_text())
    s = summarize(read_pcap(pcap))
    assert s["reasons"]["OK"] == truth["ip_packets"]
    assert s["ip_bytes"] == truth["ip_bytes"]
    assert s["keys"] == truth["unidirectional_5tuple_keys"]
    assert dict(s["reasons"]) == {k: v for k, v in truth["expected_decode_reasons"].items() if v}
    assert truth["malformed"]["total"] > 0

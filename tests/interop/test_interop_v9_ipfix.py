"""v9 / IPFIX encoders against real decoders: nfcapd+nfdump over UDP, and tshark on a pcap.

Needs nfcapd, nfdump and tshark (``apt-get install -y nfdump tshark``); skipped when missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import numpy as np
import pytest

from flowplane.export import EncoderOptions
from flowplane.flows import FLOW_DTYPE, FlowRecords
from flowplane.plugins.encoders import ipfix, netflow9
from flowplane.testing import free_port, write_pcap

from test_encoder_v9 import T0, Collector

pytestmark = pytest.mark.peer

MODULES = {9: netflow9, 10: ipfix}
ALL = ("ipv4", "ipv6", "mpls", "mpls-ipv4", "bridge")


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (apt-get install -y nfdump tshark)")


def realistic(n: int, seed: int, *, mpls: bool = False) -> FlowRecords:
    """Flows a collector would accept as they are: valid masks, ICMP in dport, one row per in_if."""
    rng = np.random.default_rng(seed)
    boot = T0 - 7200 * 10**9 + 123_456_789
    d = np.zeros(n, dtype=FLOW_DTYPE)
    v4 = rng.random(n) < 0.6
    d["af"] = np.where(v4, 4, 6)
    for p in ("src", "dst", "nexthop"):
        d[p + "_hi"] = np.where(v4, 0, np.uint64(0x2001_0db8_0000_0000) | rng.integers(0, 2**32, n, dtype=np.uint64))
        d[p + "_lo"] = np.where(v4,
                                np.uint64(0xFFFF_0000_0000) | rng.integers(2**24, 2**32 - 2**28, n, dtype=np.uint64),
                                rng.integers(1, 2**63, n, dtype=np.uint64))
    d["proto"] = rng.choice([6, 17, 1], n)
    icmp = d["proto"] == 1
    d["proto"][icmp & ~v4] = 58
    d["sport"] = np.where(icmp, 0, rng.integers(1024, 65536, n))
    d["icmp_type"] = np.where(icmp, rng.choice([0, 3, 8, 11], n), 0)
    d["icmp_code"] = np.where(icmp, rng.integers(0, 4, n), 0)
    d["dport"] = np.where(icmp, d["icmp_type"].astype(np.uint16) << 8 | d["icmp_code"], rng.integers(1, 1024, n))
    d["packets"] = rng.integers(1, 10**6, n)
    d["bytes"] = d["packets"] * rng.integers(40, 1500, n).astype(np.uint64)
    d["first_ns"] = boot + rng.integers(0, 3600 * 10**9, n)
    d["last_ns"] = d["first_ns"] + rng.integers(0, 300 * 10**9, n)
    d["in_if"] = np.arange(1, n + 1)
    d["out_if"] = rng.integers(1, 1000, n)
    d["src_mask"] = np.where(v4, rng.integers(0, 33, n), rng.integers(0, 129, n))
    d["dst_mask"] = np.where(v4, rng.integers(0, 33, n), rng.integers(0, 129, n))
    d["src_as"], d["dst_as"] = rng.integers(1, 2**32, n), rng.integers(1, 2**32, n)
    d["tcp_flags"] = np.where(d["proto"] == 6, rng.integers(1, 64, n), 0)
    d["tos"] = rng.integers(0, 256, n)
    d["end_reason"] = rng.integers(1, 6, n)
    d["src_mac"], d["dst_mac"] = rng.integers(1, 2**48, n), rng.integers(1, 2**48, n)
    d["vlan"] = rng.integers(1, 4095, n)
    if mpls:
        depth = np.where(rng.random(n) < 0.3, rng.integers(1, 4, n), 0)
        d["mpls_depth"] = depth
        for k in (1, 2, 3):
            label = rng.integers(16, 2**20, n, dtype=np.uint32) << 4 | rng.integers(0, 8, n, dtype=np.uint32) << 1
            d[f"mpls{k}"] = np.where(depth >= k, label | (depth == k), 0)
    return FlowRecords(d, boot_ns=boot)


def ip_of(r, p: str) -> str:
    if r["af"] == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack(">I", int(r[p + "_lo"]) & 0xFFFFFFFF))
    return socket.inet_ntop(socket.AF_INET6, struct.pack(">QQ", int(r[p + "_hi"]), int(r[p + "_lo"])))


def iso_ms(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns // 10**6 / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 10**6 % 1000:03d}"


# -------------------------------------------------------------------------
# nfcapd / nfdump


def run_nfcapd(tmp_path, dgrams: list[bytes]) -> tuple[str, str]:
    """Send *dgrams* to a fresh nfcapd on 127.0.0.1; returns (flow dir, nfcapd output)."""
    need("nfcapd", "nfdump")
    port = free_port()
    flowdir = tmp_path / f"nfc{port}"
    flowdir.mkdir()
    p = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(flowdir), "-t", "3600"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)  # bind
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, m in enumerate(dgrams):
                s.sendto(m, ("127.0.0.1", port))
                if i % 20 == 19:
                    time.sleep(0.002)  # stay far below nfcapd's receive buffer
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGTERM)  # nfcapd finalises its file on exit
        out = p.communicate(timeout=20)[0].decode(errors="replace")
    return str(flowdir), out


def nfdump_json(flowdir: str) -> list[dict]:
    r = subprocess.run(["nfdump", "-R", flowdir, "-o", "json"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TZ": "UTC"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else []


@pytest.mark.parametrize("version", [9, 10])
@pytest.mark.parametrize("interval", [1, 10])
def test_nfcapd_stores_what_we_encoded(tmp_path, version, interval):
    recs = realistic(3000, seed=version * 100 + interval)
    enc = MODULES[version].ENCODER_TYPE.factory(EncoderOptions(
        version=version, observation_domain_id=7, sampling_interval=interval, template_refresh_packets=40))
    dgrams = enc.encode(recs, T0 + 250_000_000)
    assert len(dgrams) > 80
    flowdir, out = run_nfcapd(tmp_path, dgrams)
    flows = nfdump_json(flowdir)
    assert len(flows) == len(recs), out
    by_if = {f["input_snmp"]: f for f in flows}
    for r in recs.data:
        f = by_if[int(r["in_if"])]
        v = "4" if r["af"] == 4 else "6"
        assert (f[f"src{v}_addr"], f[f"dst{v}_addr"]) == (ip_of(r, "src"), ip_of(r, "dst"))
        assert f["proto"] == r["proto"]
        if r["proto"] in (1, 58):
            assert (f["icmp_type"], f["icmp_code"]) == (r["icmp_type"], r["icmp_code"])
        else:
            assert (f["src_port"], f["dst_port"]) == (r["sport"], r["dport"])
        # nfdump renormalises by the sampling interval it read from our options data
        assert (f["in_packets"], f["in_bytes"]) == (r["packets"] * interval, r["bytes"] * interval)
        assert f["sampled"] == 1  # it read our sampling options (interval 1 too)
        assert (f["first"], f["last"]) == (iso_ms(int(r["first_ns"])), iso_ms(int(r["last_ns"])))
        assert (f["output_snmp"], f["src_as"], f["dst_as"]) == (r["out_if"], r["src_as"], r["dst_as"])
    files = [os.path.join(flowdir, x) for x in os.listdir(flowdir)]
    exp = subprocess.run(["nfdump", "-E", files[0]], capture_output=True, text=True, timeout=30).stdout
    assert f"version: {version}, ID:  7" in exp
    if interval > 1:
        assert f"packet interval: 1, packet space: {interval - 1}" in exp
    # v9: per-packet sequence, nfcapd counts no error.  IPFIX: we count options data records as RFC 7011
    # says; nfdump does not, so it may count one failure per message that carried options data.
    fails = int(exp.split("Sequence failures: ")[1].split(",")[0])
    c = Collector()
    with_options = sum(1 for m in dgrams[:-1] if c.parse(m)["options"])
    assert fails == 0 if version == 9 else fails <= with_options
    assert "Sequence Errors: 0" in out or version == 10


# -------------------------------------------------------------------------
# tshark


def frames_of(dgrams: list[bytes], port: int) -> list[bytes]:
    out = []
    for m in dgrams:
        udp = struct.pack(">HHHH", 40000, port, 8 + len(m), 0) + m
        ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                                   socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.2")))
        s = sum(struct.unpack(">10H", bytes(ip)))
        s = (s & 0xFFFF) + (s >> 16)
        ip[10:12] = struct.pack(">H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
        out.append(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes(ip) + udp)
    return out


def tshark(*args: str) -> str:
    need("tshark")
    r = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def walk(o, flows: list, templates: dict, options: list) -> None:
    if isinstance(o, dict):
        if "cflow.template_id" in o:
            templates[int(o["cflow.template_id"])] = o
        for k, v in o.items():
            if k.startswith("Flow ") and isinstance(v, dict):
                (flows if "cflow.inputint" in v else options).append(v)
            else:
                walk(v, flows, templates, options)
    elif isinstance(o, list):
        for v in o:
            walk(v, flows, templates, options)


@pytest.mark.parametrize("version", [9, 10])
def test_tshark_decodes_without_warnings(tmp_path, version):
    need("tshark")
    recs = realistic(2000, seed=version, mpls=True)
    opts = EncoderOptions(version=version, templates=ALL, sampling_interval=100, observation_domain_id=3)
    enc = MODULES[version].ENCODER_TYPE.factory(opts)
    dgrams = enc.encode(recs, T0) + enc.templates(T0 + 10**9)
    port = free_port()
    pcap = write_pcap(str(tmp_path / f"v{version}.pcap"), frames_of(dgrams, port))
    decode = ["-r", pcap, "-d", f"udp.port=={port},cflow"]
    # no malformed packets, no expert info of any severity
    assert tshark(*decode, "-Y", "_ws.malformed || _ws.expert").strip() == ""
    summary = tshark(*decode)
    assert summary.count("CFLOW") == len(dgrams)
    flows, templates, options = [], {}, []
    walk(json.loads(tshark(*decode, "-T", "json")), flows, templates, options)

    tids = {opts.template_ids[f]: f for f in ALL}
    counts = {"ipv4": 21, "ipv6": 22, "mpls": 11, "mpls-ipv4": 24, "bridge": 12}  # ipv6: + ipv6ExtensionHeaders 64
    if version == 10:
        counts = {k: v + 1 for k, v in counts.items()}  # 2 times (152, 153 vs 22, 21) + flowEndReason 136
    for tid, fam in tids.items():
        assert int(templates[tid]["cflow.template_field_count"]) == counts[fam], fam
    ot = templates[512]
    if version == 9:
        assert (ot["cflow.option_scope_length"], ot["cflow.option_length"]) == ("4", "8")
        assert all(o["cflow.sampling_interval"] == "100" for o in options)
    else:
        assert (ot["cflow.template_ipfix_total_field_count"],
                ot["cflow.template_ipfix_scope_field_count"]) == ("6", "1")
        assert all(o["cflow.sampling_interval"] == "100" and o["cflow.sampling_packet_space"] == "99" for o in options)
    c = Collector()
    assert len(options) == sum(1 for m in dgrams if c.parse(m)["options"]) >= 2

    assert len(flows) == len(recs)
    by_if = {int(f["cflow.inputint"]): f for f in flows}
    for r in recs.data:
        f = by_if[int(r["in_if"])]
        assert int(f["cflow.packets"]) == r["packets"] and int(f["cflow.octets"]) == r["bytes"]
        assert int(f["cflow.outputint"]) == r["out_if"]
        assert float(f["cflow.timedelta"]) == pytest.approx((r["last_ns"] // 10**6 - r["first_ns"] // 10**6) / 1000)
        if r["mpls_depth"] and r["af"] == 6:  # mpls template: labels only
            labels = [v for k, v in f.items() if k.startswith("MPLS-Label")]
            assert [int(x["cflow.mpls_label"]) for x in labels] == [int(r[f"mpls{k}"]) >> 4 for k in (1, 2, 3)]
            assert int(f["cflow.ip_version"]) == 6
            continue
        v6 = "v6" if r["af"] == 6 else ""
        assert (f[f"cflow.srcaddr{v6}"], f[f"cflow.dstaddr{v6}"]) == (ip_of(r, "src"), ip_of(r, "dst"))
        assert (int(f["cflow.srcport"]), int(f["cflow.dstport"]), int(f["cflow.protocol"])) == (
            r["sport"], r["dport"], r["proto"])
        if r["mpls_depth"]:
            labels = [v for k, v in f.items() if k.startswith("MPLS-Label")]
            assert int(labels[0]["cflow.mpls_label"]) == int(r["mpls1"]) >> 4
        if version == 10:
            tree = f["cflow.timedelta_tree"]
            assert tree["cflow.abstimestart"].startswith(
                dt.datetime.fromtimestamp(int(r["first_ns"]) // 10**6 / 1000, tz=dt.UTC)
                .strftime("%b %d, %Y %H:%M:%S.") + f"{int(r['first_ns']) // 10**6 % 1000:03d}")
            assert int(f["cflow.flow_end_reason"]) == r["end_reason"]


def test_tshark_bridge_template(tmp_path):
    need("tshark")
    recs = realistic(300, seed=5)
    enc = ipfix.ENCODER_TYPE.factory(EncoderOptions(templates=("bridge",)))
    dgrams = enc.encode(recs, T0)
    port = free_port()
    pcap = write_pcap(str(tmp_path / "bridge.pcap"), frames_of(dgrams, port))
    decode = ["-r", pcap, "-d", f"udp.port=={port},cflow"]
    assert tshark(*decode, "-Y", "_ws.malformed || _ws.expert").strip() == ""
    flows, templates, options = [], {}, []
    walk(json.loads(tshark(*decode, "-T", "json")), flows, templates, options)
    assert len(flows) == 300
    mac = lambda v: ":".join(f"{b:02x}" for b in int(v).to_bytes(6, "big"))  # noqa: E731
    by_if = {int(f["cflow.inputint"]): f for f in flows}
    for r in recs.data:
        f = by_if[int(r["in_if"])]
        assert (f["cflow.srcmac"], f["cflow.dstmac"]) == (mac(r["src_mac"]), mac(r["dst_mac"]))
        assert int(f["cflow.vlanid"]) == r["vlan"] and int(f["cflow.ip_version"]) == r["af"]

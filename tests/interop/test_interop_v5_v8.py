"""NetFlow v5/v8 encoders against real decoders.

* v5 over real UDP to ``nfcapd`` (nfdump 1.7), read back with ``nfdump -o json``
  and ``-o csv``: addresses, ports, protocol, packets, bytes, ToS, TCP flags,
  AS, interfaces, next hop, ms timestamps, engine type/id.
* v5 and every v8 scheme written into a pcap (Ethernet/IPv4/UDP, correct
  lengths and IPv4 checksum) and decoded by ``tshark`` (``cflow``): no
  malformed packets, every header and record value as expected.

Nobody but tshark decodes v8 any more (REFERENCE-flow.md section 0), so v8 is
checked against tshark alone.  Skipped cleanly when a tool is missing
(``apt-get install nfdump tshark``).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest

from flowplane.export import EncoderOptions
from flowplane.flows import FLOW_DTYPE, SAMPLING_DETERMINISTIC, FlowRecords
from flowplane.plugins.encoders import netflow5, netflow8
from flowplane.testing import free_port, write_pcap

pytestmark = pytest.mark.peer

BOOT = 1_700_000_000_000_000_000  # ms-aligned: nfdump's ms arithmetic is then exact
NOW = BOOT + 3_600_000_000_000 + 250_000_000
MAPPED = 0xFFFF_0000_0000
PCAP_PORT = 9995
SCHEMES = list(netflow8.SCHEMES)


def need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not installed (apt-get install nfdump tshark)")


def a4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def s4(v: int) -> str:
    return str(ipaddress.IPv4Address(int(v)))


# --------------------------------------------------------------------------
# input flows
# --------------------------------------------------------------------------

def flows(n: int = 120, seed: int = 5, **kw) -> FlowRecords:
    """n IPv4 flows with distinct 5-tuples, plus 3 IPv6 ones and one flow too big for 32-bit counters."""
    rng = np.random.default_rng(seed)
    d = np.zeros(n + 4, dtype=FLOW_DTYPE)
    d["af"] = 4
    d["src_lo"] = MAPPED | (np.uint64(a4("10.20.0.0")) + rng.integers(0, 4096, n + 4).astype(np.uint64))
    d["dst_lo"] = MAPPED | (np.uint64(a4("198.51.100.0")) + rng.integers(0, 512, n + 4).astype(np.uint64))
    d["nexthop_lo"] = MAPPED | np.uint64(a4("10.0.0.254"))
    d["proto"] = rng.choice([6, 17, 1], n + 4)
    d["sport"] = 1024 + np.arange(n + 4)  # distinct: the 5-tuple identifies a flow
    d["dport"] = rng.choice([53, 80, 443], n + 4)
    icmp = d["proto"] == 1
    d["sport"][icmp] = 0
    d["dport"][icmp] = 0x0800 + np.arange(int(icmp.sum())) % 256  # type 8, code k: still distinct
    d["src_lo"][icmp] = MAPPED | (np.uint64(a4("10.30.0.0")) + np.arange(int(icmp.sum()), dtype=np.uint64))
    d["tcp_flags"] = np.where(d["proto"] == 6, rng.choice([0x02, 0x12, 0x1B, 0x11, 0x04], n + 4), 0)
    d["tos"] = rng.choice([0, 0x20, 0xB8], n + 4)
    d["packets"] = rng.integers(1, 5000, n + 4)
    d["bytes"] = d["packets"] * rng.integers(40, 1500, n + 4)
    d["first_ns"] = BOOT + rng.integers(1_000, 3_000_000, n + 4) * 1_000_000
    d["last_ns"] = d["first_ns"] + rng.integers(0, 500_000, n + 4) * 1_000_000
    d["src_as"] = rng.choice([0, 64512, 65001, 70000], n + 4)
    d["dst_as"] = rng.choice([15169, 13335, 4_200_000_000], n + 4)
    d["in_if"] = rng.choice([1, 2, 517], n + 4)
    d["out_if"] = rng.choice([3, 4], n + 4)
    d["src_mask"] = rng.choice([0, 16, 24], n + 4)
    d["dst_mask"] = rng.choice([0, 20, 24, 32], n + 4)
    # one flow beyond 32-bit counters: split into several records
    d["packets"][n] = 2**32 + 12345
    d["bytes"][n] = (2**32 + 12345) * 1000
    # three IPv6 flows: not encodable in v5/v8
    for i in range(n + 1, n + 4):
        d["af"][i] = 6
        d["src_hi"][i], d["src_lo"][i] = 0x20010DB8_00000000, i
        d["dst_hi"][i], d["dst_lo"][i] = 0x20010DB8_00000001, i
    kw.setdefault("boot_ns", BOOT)
    return FlowRecords(d, **kw)


def v4(records: FlowRecords) -> np.ndarray:
    return records.data[records.data["af"] == 4]


def ms(t_ns) -> int:
    return (int(t_ns) - BOOT) // 1_000_000


def expected_v5(records: FlowRecords, scale: int = 1) -> dict:
    """5-tuple -> expected values (counts summed: a split flow is several records)."""
    exp = {}
    for r in v4(records):
        key = (s4(int(r["src_lo"]) & 0xFFFFFFFF), s4(int(r["dst_lo"]) & 0xFFFFFFFF),
               int(r["sport"]), int(r["dport"]), int(r["proto"]))
        exp[key] = dict(packets=int(r["packets"]) * scale, bytes=int(r["bytes"]) * scale, tos=int(r["tos"]),
                        flags=int(r["tcp_flags"]), src_as=23456 if r["src_as"] > 65535 else int(r["src_as"]),
                        dst_as=23456 if r["dst_as"] > 65535 else int(r["dst_as"]),
                        input=int(r["in_if"]), output=int(r["out_if"]), first=ms(r["first_ns"]),
                        last=ms(r["last_ns"]), src_mask=int(r["src_mask"]), dst_mask=int(r["dst_mask"]))
    return exp


# --------------------------------------------------------------------------
# nfcapd / nfdump
# --------------------------------------------------------------------------


def udp_bound(port: int) -> bool:
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as fh:
        return any(line.split()[1] == want for line in fh.readlines()[1:])


def nfcapd_collect(tmp_path, datagrams: list[bytes]) -> tuple[list[dict], list[dict]]:
    """Send *datagrams* to a fresh nfcapd; return (nfdump json records, nfdump csv rows)."""
    need("nfcapd", "nfdump")
    port = free_port()
    out = tmp_path / "nfc"
    out.mkdir()
    log = open(tmp_path / "nfcapd.log", "wb")
    proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(out), "-t", "3600",
                             "-P", str(tmp_path / "nfcapd.pid")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not udp_bound(port):
            assert proc.poll() is None, (tmp_path / "nfcapd.log").read_text()
            assert time.monotonic() < deadline, "nfcapd did not bind"
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", port))
                time.sleep(0.001)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)  # nfcapd finalises its file on exit
        proc.wait(timeout=15)
        log.close()
    env = dict(os.environ, TZ="UTC")
    js = subprocess.run(["nfdump", "-R", str(out), "-o", "json"], capture_output=True, text=True, env=env,
                        check=True, timeout=60).stdout
    cs = subprocess.run(["nfdump", "-R", str(out), "-o", "csv"], capture_output=True, text=True, env=env,
                        check=True, timeout=60).stdout
    rows = [r for r in csv.DictReader(io.StringIO(cs.split("\nSummary")[0])) if r.get("sa")]
    return json.loads(js) if js.strip() else [], rows


def utc_ms(text: str) -> int:
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def nf_flags(v: int) -> str:
    return "".join(c if v & (0x80 >> i) else "." for i, c in enumerate("CEUAPRSF"))


def check_nfdump(js: list[dict], rows: list[dict], exp: dict, engine: str) -> None:
    boot_ms = BOOT // 1_000_000
    got: dict = defaultdict(lambda: dict(packets=0, bytes=0, n=0))
    assert len(rows) == len(js)
    for r, row in zip(js, rows):  # same records, same order: json for values, csv for flags and engine
        if r["proto"] == 1:  # nfdump shows ICMP type/code instead of ports (ours: dport = type << 8 | code)
            sport, dport = 0, r["icmp_type"] << 8 | r["icmp_code"]
        else:
            sport, dport = r["src_port"], r["dst_port"]
        key = (r["src4_addr"], r["dst4_addr"], sport, dport, r["proto"])
        assert key in exp, key
        e, g = exp[key], got[key]
        g["packets"] += r["in_packets"]
        g["bytes"] += r["in_bytes"]
        g["n"] += 1
        assert (row["sa"], row["da"], int(row["ipkt"]), int(row["ibyt"])) == (
            r["src4_addr"], r["dst4_addr"], r["in_packets"], r["in_bytes"])
        assert r["src_tos"] == int(row["stos"]) == e["tos"]
        assert row["flg"] == nf_flags(e["flags"])  # json omits tcp_flags for ICMP
        assert row["eng"] == engine
        assert (r["src_as"], r["dst_as"]) == (e["src_as"], e["dst_as"])
        assert (r["input_snmp"], r["output_snmp"]) == (e["input"], e["output"])
        assert r["ip4_next_hop"] == "10.0.0.254"
        assert utc_ms(r["first"]) == boot_ms + e["first"], key
        assert utc_ms(r["last"]) == boot_ms + e["last"], key
    assert set(got) == set(exp), "every IPv4 flow arrived, no IPv6 one"
    for key, g in got.items():
        assert (g["packets"], g["bytes"]) == (exp[key]["packets"], exp[key]["bytes"]), key
    assert max(g["n"] for g in got.values()) > 1, "the 64-bit flow was split into several records"
    assert {r["ra"] for r in rows} == {"127.0.0.1"}


def test_v5_nfcapd_nfdump(tmp_path):
    need("nfcapd", "nfdump")
    r = flows()
    e = netflow5.factory(EncoderOptions(version=5, engine_type=55, engine_id=5))
    dgrams = e.encode(r, NOW)
    assert e.counters["not_ipv4"] == 3 and len(dgrams) == -(-e.counters["records"] // 30)
    js, rows = nfcapd_collect(tmp_path, dgrams)
    assert len(js) == e.counters["records"]
    check_nfdump(js, rows, expected_v5(r), "55/5")
    log = (tmp_path / "nfcapd.log").read_text()
    assert "Sequence Errors: 0" in log and "Bad Packets: 0" in log, log


def test_v5_sampling_nfdump_totals(tmp_path):
    """Sampled 1:100 unscaled (header carries 100) and scale_counts (header 0) give the same totals."""
    need("nfcapd", "nfdump")
    r = flows(40, seed=9, sampling_interval=100, sampling_algorithm=SAMPLING_DETERMINISTIC)
    r.data["packets"][40] = 3  # keep the scaled big flow within nfdump's 64-bit counters
    r.data["bytes"][40] = 3000
    a = netflow5.factory(EncoderOptions(version=5, engine_type=1, engine_id=2)).encode(r, NOW)
    b = netflow5.factory(EncoderOptions(version=5, engine_type=1, engine_id=3, scale_counts=True)).encode(r, NOW)
    js, rows = nfcapd_collect(tmp_path, a + b)
    exp = expected_v5(r, scale=100)
    for eid in (2, 3):
        sel = [j for j, row in zip(js, rows) if row["eng"] == f"1/{eid}"]
        assert len(sel) == len(exp)
        assert sum(j["in_packets"] for j in sel) == sum(v["packets"] for v in exp.values())
        assert sum(j["in_bytes"] for j in sel) == sum(v["bytes"] for v in exp.values())


# --------------------------------------------------------------------------
# tshark
# --------------------------------------------------------------------------

def _csum(h: bytes) -> int:
    s = sum(struct.unpack(f"!{len(h) // 2}H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(payload: bytes, dport: int = PCAP_PORT) -> bytes:
    udp = struct.pack("!HHHH", 50000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                     socket.inet_aton("192.0.2.10"), socket.inet_aton("192.0.2.20"))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return bytes.fromhex("0011223344556677889900aa") + b"\x08\x00" + ip + udp


def tshark(path) -> list[dict]:
    need("tshark")
    base = ["tshark", "-n", "-r", str(path), "-d", f"udp.port=={PCAP_PORT},cflow"]
    bad = subprocess.run(base + ["-Y", "_ws.malformed || _ws.expert.severity >= warning"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 0 and bad.stdout.strip() == "", bad.stdout + bad.stderr
    js = subprocess.run(base + ["-T", "json"], capture_output=True, text=True, timeout=120, check=True).stdout
    return [p["_source"]["layers"] for p in json.loads(js)]


def flat(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v))
        elif k.startswith("cflow."):
            out[k[6:]] = v
    return out


def cflow_packets(layers: list[dict], dgrams: list[bytes]) -> list[tuple[dict, list[dict]]]:
    assert len(layers) == len(dgrams)
    res = []
    for lay, dg in zip(layers, dgrams):
        assert "cflow" in lay and "_ws.malformed" not in lay
        assert int(lay["udp"]["udp.length"]) == 8 + len(dg) and int(lay["ip"]["ip.len"]) == 28 + len(dg)
        c = lay["cflow"]
        hdr = flat({k: v for k, v in c.items() if not k.startswith("pdu ")})
        pdus = [flat(v) for k, v in c.items() if k.startswith("pdu ")]
        assert int(hdr["count"]) == len(pdus)
        res.append((hdr, pdus))
    return res


def sec_ms(v: str) -> int:
    return round(float(v) * 1000)


def check_header(hdr: dict, version: int, seq: int, engine: tuple[int, int]) -> None:
    assert int(hdr["version"]) == version
    assert sec_ms(hdr["sysuptime"]) == (NOW - BOOT) // 1_000_000
    assert int(hdr["unix_secs"]) == NOW // 10**9 and int(hdr["unix_nsecs"]) == NOW % 10**9
    assert int(hdr["sequence"]) == seq
    assert (int(hdr["engine_type"]), int(hdr["engine_id"])) == engine


def test_v5_tshark(tmp_path):
    need("tshark")
    r = flows(sampling_interval=64)
    e = netflow5.factory(EncoderOptions(version=5, engine_type=7, engine_id=3))
    dgrams = e.encode(r, NOW)
    pcap = write_pcap(str(tmp_path / "v5.pcap"), [frame(d) for d in dgrams])
    pkts = cflow_packets(tshark(pcap), dgrams)
    assert len(pkts) == len(dgrams)
    exp = expected_v5(r)
    got: dict = defaultdict(lambda: [0, 0])
    seq = 0
    for hdr, pdus in pkts:
        check_header(hdr, 5, seq, (7, 3))
        assert (int(hdr["samplingmode"]), int(hdr["samplerate"])) == (1, 64)
        assert len(pdus) <= 30
        seq += len(pdus)
        for p in pdus:
            key = (p["srcaddr"], p["dstaddr"], int(p["srcport"]), int(p["dstport"]), int(p["protocol"]))
            x = exp[key]
            got[key][0] += int(p["packets"])
            got[key][1] += int(p["octets"])
            assert p["nexthop"] == "10.0.0.254"
            assert int(p["tos"], 16) == x["tos"] and int(p["tcpflags"], 16) == x["flags"]
            assert (int(p["srcas"]), int(p["dstas"])) == (x["src_as"], x["dst_as"])
            assert (int(p["inputint"]), int(p["outputint"])) == (x["input"], x["output"])
            assert (int(p["srcmask"]), int(p["dstmask"])) == (x["src_mask"], x["dst_mask"])
            assert (sec_ms(p["timestart"]), sec_ms(p["timeend"])) == (x["first"], x["last"])
    assert {k: tuple(v) for k, v in got.items()} == {k: (x["packets"], x["bytes"]) for k, x in exp.items()}
    assert seq == e.counters["records"]


# v8: tshark field names of each scheme's key, in our encoder's key order
V8_KEYS = {
    "as": ("srcas", "dstas", "inputint", "outputint"),
    "protocol-port": ("protocol", "srcport", "dstport"),
    "source-prefix": ("srcnet", "srcmask", "srcas", "inputint"),
    "destination-prefix": ("dstnet", "dstmask", "dstas", "outputint"),
    "source-destination-prefix": ("srcnet", "dstnet", "srcmask", "dstmask", "srcas", "dstas", "inputint", "outputint"),
}
V8_MAX = {"as": 51, "protocol-port": 51, "source-prefix": 44, "destination-prefix": 44,
          "source-destination-prefix": 35}


def v8_reference(scheme: str, records: FlowRecords) -> dict:
    """Plain-Python group-by of the IPv4 flows, keyed like tshark shows the record."""
    def pfx(addr: int, mask: int) -> tuple[str, int]:
        m = 32 if mask == 0 or mask > 32 else mask
        return s4(addr & ((0xFFFFFFFF << (32 - m)) & 0xFFFFFFFF)), m

    agg: dict = {}
    for r in v4(records):
        sas = 23456 if r["src_as"] > 65535 else int(r["src_as"])
        das = 23456 if r["dst_as"] > 65535 else int(r["dst_as"])
        i, o = min(int(r["in_if"]), 65535), min(int(r["out_if"]), 65535)
        sp, sm = pfx(int(r["src_lo"]) & 0xFFFFFFFF, int(r["src_mask"]))
        dp, dm = pfx(int(r["dst_lo"]) & 0xFFFFFFFF, int(r["dst_mask"]))
        key = {"as": (sas, das, i, o), "protocol-port": (int(r["proto"]), int(r["sport"]), int(r["dport"])),
               "source-prefix": (sp, sm, sas, i), "destination-prefix": (dp, dm, das, o),
               "source-destination-prefix": (sp, dp, sm, dm, sas, das, i, o)}[scheme]
        a = agg.setdefault(key, [0, 0, 0, 2**62, -1])
        a[0] += 1
        a[1] += int(r["packets"])
        a[2] += int(r["bytes"])
        a[3] = min(a[3], ms(r["first_ns"]))
        a[4] = max(a[4], ms(r["last_ns"]))
    return {k: tuple(v) for k, v in agg.items()}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_v8_tshark(tmp_path, scheme):
    need("tshark")
    r = flows(1500, seed=11)
    e = netflow8.factory(EncoderOptions(version=8, aggregation=scheme, engine_type=2, engine_id=4))
    dgrams = e.encode(r, NOW)
    assert e.counters["not_ipv4"] == 3
    pcap = write_pcap(str(tmp_path / f"v8-{scheme}.pcap"), [frame(d) for d in dgrams])
    pkts = cflow_packets(tshark(pcap), dgrams)
    assert len(pkts) == len(dgrams)
    number = netflow8.SCHEMES[scheme].number
    got: dict = {}
    seq = 0
    for hdr, pdus in pkts:
        check_header(hdr, 8, seq, (2, 4))
        assert int(hdr["aggmethod"]) == number and int(hdr["aggversion"]) == 2
        assert len(pdus) <= V8_MAX[scheme]
        seq += len(pdus)
        for p in pdus:
            key = tuple(p[f] if f in ("srcnet", "dstnet") else int(p[f]) for f in V8_KEYS[scheme])
            a = got.setdefault(key, [0, 0, 0, 2**62, -1])
            a[0] += int(p["flows"])
            a[1] += int(p["packets"])
            a[2] += int(p["octets"])
            a[3] = min(a[3], sec_ms(p["timestart"]))
            a[4] = max(a[4], sec_ms(p["timeend"]))
    assert {k: tuple(v) for k, v in got.items()} == v8_reference(scheme, r)
    assert seq == e.counters["records"]
    assert len(pkts) > 1 or scheme == "protocol-port"

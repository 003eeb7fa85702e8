"""Dynamic flow capture on a live interface: `flowplane run` in namespace A captures its veth with
AF_PACKET; a DTCP client (the one in tests/unit/test_dtcp.py) adds IPv4 and IPv6 criteria; traffic
sent from namespace B that matches is copied back to a content destination in namespace B, where
`tshark` captures it: the outer IP/UDP carries the configured TTL / hop limit and port, and each
copy's payload is byte for byte the IP packet that was sent."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowplane.control import request

from netns import NotifySocket, make_netns_pair, skip_reason

UNIT = Path(__file__).resolve().parents[1] / "unit"
N = 40
V6_A, V6_B = "fd00:fc::1", "fd00:fc::2"
DTCP_PORT = 2400

CLIENT = r"""
import socket, sys
sys.path.insert(0, sys.argv[1])
from test_dtcp import build, parse_reply
key = sys.argv[2].encode()
port = int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
ids = []
for seq, headers in enumerate([
        [("Cdest-ID", "cd4"), ("Dest-Address", sys.argv[4]), ("Dest-Port", "9999"), ("Protocol", "17")],
        [("Cdest-ID", "cd6"), ("Dest-Address", sys.argv[5]), ("Dest-Port", "9999"), ("Protocol", "17")]], start=1):
    s.sendto(build("ADD", [("Csource-ID", "cs1"), *headers, ("Seq", seq)], key), ("127.0.0.1", port))
    r = parse_reply(s.recv(65535), key)
    assert r.status == 200 and r.signed_ok, r.raw
    ids.append(r.headers["CRITERIA-ID"])
print(",".join(ids))
"""

SENDER = r"""
import socket, struct, sys
a4, a6, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for i in range(n):
    u4.sendto(b"v4-" + struct.pack("!I", i) + bytes(range(i % 200)), (a4, 9999))
    u6.sendto(b"v6-" + struct.pack("!I", i) + bytes(range(i % 150)), (a6, 9999))
    u4.sendto(b"not-me", (a4, 8888))
print("sent")
"""


def _config(tmp: Path, p) -> str:
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json}}
interfaces:
  {p.veth_a}:
    source: af-packet
    direction: input
    promiscuous: true
services:
  dynamic-flow-capture:
    listen-address: 127.0.0.1
    capture-group lab:
      interfaces: [{p.veth_a}]
      control-source cs1:
        source-addresses: [127.0.0.1]
        service-port: {DTCP_PORT}
        shared-key: netns-key
      content-destination cd4:
        address: {p.addr_b}
        port: 5555
        ttl: 9
      content-destination cd6:
        address: "{V6_B}"
        port: 5556
        ttl: 11
"""


def _pcap_frames(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    magic = struct.unpack("<I", raw[:4])[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "expected a classic pcap"
    off, out = 24, []
    while off + 16 <= len(raw):
        incl = struct.unpack("<I", raw[off + 8 : off + 12])[0]
        out.append(raw[off + 16 : off + 16 + incl])
        off += 16 + incl
    return out


def _udp_of(frame: bytes):
    """(IP packet, dport, UDP payload) of an Ethernet IPv4/IPv6 UDP frame, else None."""
    et = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if et == 0x0800 and ip[9] == 17:
        ip = ip[: struct.unpack("!H", ip[2:4])[0]]
        l4 = ip[(ip[0] & 0xF) * 4 :]
    elif et == 0x86DD and ip[6] == 17:
        ip = ip[: 40 + struct.unpack("!H", ip[4:6])[0]]
        l4 = ip[40:]
    else:
        return None
    return ip, struct.unpack("!H", l4[2:4])[0], l4[8:]


@pytest.mark.netns
def test_matched_traffic_is_copied_to_a_content_destination(tmp_path):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if not shutil.which("tshark"):
        pytest.skip("needs tshark")
    with make_netns_pair(tag="fc", ipv6=True) as p:
        for ns, dev, addr in ((p.ns_a, p.veth_a, V6_A), (p.ns_b, p.veth_b, V6_B)):
            p.run(ns, ["ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad"])
        cfg = tmp_path / "flowplane.yaml"
        cfg.write_text(_config(tmp_path, p))
        notify = NotifySocket(tmp_path / "notify.sock")
        env = notify.env()
        log = open(tmp_path / "out.log", "w")
        proc = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], env=env, stdout=log,
                       stderr=subprocess.STDOUT)
        pcap = tmp_path / "veth_b.pcap"
        cap = p.popen(p.ns_b, ["tshark", "-q", "-i", p.veth_b, "-f", "udp", "-w", str(pcap), "-F", "pcap"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        capturing = threading.Event()

        def watch() -> None:  # tshark says "Capturing on 'IF'" once its socket is armed
            for line in cap.stderr:
                if "Capturing on" in line:
                    capturing.set()

        threading.Thread(target=watch, daemon=True).start()
        try:
            notify.wait("READY=1")
            assert capturing.wait(30), "tshark did not start capturing"
            added = p.run(p.ns_a, [sys.executable, "-c", CLIENT, str(UNIT), "netns-key", str(DTCP_PORT),
                                   p.addr_a, V6_A], timeout=60)
            assert len(added.stdout.strip().split(",")) == 2
            sent = p.run(p.ns_b, [sys.executable, "-c", SENDER, p.addr_a, V6_A, str(N)], timeout=60)
            assert sent.stdout.strip() == "sent"
            sock = str(tmp_path / "control.sock")
            deadline = time.monotonic() + 15
            rows = {}
            while time.monotonic() < deadline:
                reply = request(sock, ["show", "services", "dynamic-flow-capture", "content-destination"], fmt="json")
                assert reply["ok"], reply
                rows = {r["content_destination"]: r for r in reply["data"]["content_destinations"]}
                if rows["cd4"]["packets"] >= N and rows["cd6"]["packets"] >= N:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # let the last copies reach the capture
            assert rows["cd4"]["packets"] == N and rows["cd6"]["packets"] == N
            stats = request(sock, ["show", "services", "dynamic-flow-capture", "statistics"], fmt="json")["data"]
            assert stats["requests"]["add"] == 2 and stats["groups"][0]["send_drops"] == 0
        finally:
            cap.send_signal(signal.SIGINT)
            try:
                cap.wait(timeout=20)
            except subprocess.TimeoutExpired:
                cap.kill()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            log.close()
            notify.close()
        assert rc == 0, (tmp_path / "out.log").read_text()[-3000:]
        frames = _pcap_frames(pcap)
        originals = {4: [], 6: []}
        copies = {4: [], 6: []}
        for f in frames:
            u = _udp_of(f)
            if u is None:
                continue
            ip, dport, payload = u
            fam = 4 if ip[0] >> 4 == 4 else 6
            if dport == 9999:
                originals[fam].append(ip)
            elif dport in (5555, 5556):
                copies[fam].append(payload)
        assert len(originals[4]) == N and len(originals[6]) == N
        assert copies[4] == originals[4] and copies[6] == originals[6]  # byte-identical, in order
        # tshark's own reading of the outer and (decoded as IP) inner headers
        out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "udp.dstport == 5555 || udp.dstport == 5556",
                              "-d", "udp.port==5555,ip", "-d", "udp.port==5556,ipv6", "-T", "fields",
                              "-E", "occurrence=a", "-e", "ip.ttl", "-e", "ip.dst", "-e", "ipv6.hlim",
                              "-e", "ipv6.dst", "-e", "udp.dstport", "-e", "_ws.malformed"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
        assert len(out) == 2 * N
        v4 = [line.split("\t") for line in out if line.split("\t")[0]]
        v6 = [line.split("\t") for line in out if not line.split("\t")[0]]
        assert len(v4) == N and len(v6) == N
        for ttl, dst, _, _, ports, malformed in v4:
            assert ttl.split(",")[0] == "9" and dst == f"{p.addr_b},{p.addr_a}" and ports == "5555,9999"
            assert not malformed
        for _, _, hlim, dst, ports, malformed in v6:
            assert hlim.split(",")[0] == "11" and dst == f"{V6_B},{V6_A}" and ports == "5556,9999"
            assert not malformed

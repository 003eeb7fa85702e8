"""The whole appliance on a live interface: `flowplane run` inside a network namespace
captures a veth with AF_PACKET, and its firewall terms count exactly the packets sent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowplane.control import request

from netns import NotifySocket

N_UDP, N_SYN, N_PING = 3000, 200, 300

SENDER = r"""
import socket, struct, sys
dst, n_udp, n_syn, n_ping = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n_udp):
    u.sendto(struct.pack("!I", i) + b"x" * 60, (dst, 9999))
for i in range(n_syn):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.settimeout(2)
    try:
        t.connect((dst, 7777))   # closed port: one SYN, answered by RST
    except OSError:
        pass
    t.close()
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for i in range(n_ping):
    body = struct.pack("!HH", 0x4242, i) + b"ping" * 8
    hdr = struct.pack("!BBH", 8, 0, 0)
    pkt = struct.pack("!BBH", 8, 0, csum(hdr + body)) + body
    r.sendto(pkt, (dst, 0))
print("sent")
"""


def _config(tmp: Path, ifname: str) -> str:
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json}}
interfaces:
  {ifname}:
    source: af-packet
    direction: input
    promiscuous: true
    batch-size: 512
    family inet:
      filter input: edge
firewall:
  family inet:
    filter edge:
      term udp:
        from: {{protocol: [udp], destination-port: [9999]}}
        then: {{count: udp-9999, accept: true}}
      term syn:
        from: {{protocol: [tcp], tcp-flags: "syn & !ack"}}
        then: {{count: syns, accept: true}}
      term ping:
        from: {{protocol: [icmp], icmp-type: [echo-request]}}
        then: {{count: pings, accept: true}}
      term other:
        then: {{count: other, discard: true}}
"""


def _counters(tmp: Path) -> dict[str, int]:
    reply = request(str(tmp / "control.sock"), ["show", "firewall", "filter", "edge"], fmt="json")
    assert reply["ok"], reply
    [data] = reply["data"]["filters"]
    out = {name: c["packets"] for name, c in data["counters"].items()}
    out.update({f"term:{name}": t["packets"] for name, t in data["terms"].items()})
    return out


@pytest.mark.netns
def test_live_capture_filters_count_exactly(netns_pair, tmp_path):
    p = netns_pair
    cfg = tmp_path / "flowplane.yaml"
    cfg.write_text(_config(tmp_path, p.veth_a))
    notify = NotifySocket(tmp_path / "notify.sock")
    env = notify.env()
    log = open(tmp_path / "out.log", "w")
    proc = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], env=env, stdout=log,
                   stderr=subprocess.STDOUT)
    try:
        notify.wait("READY=1")
        sent = p.run(p.ns_b, [sys.executable, "-c", SENDER, p.addr_a, str(N_UDP), str(N_SYN), str(N_PING)], timeout=120)
        assert sent.stdout.strip() == "sent"
        expected = {"udp-9999": N_UDP, "syns": N_SYN, "pings": N_PING, "other": 0}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = _counters(tmp_path)
            if all(got.get(k, 0) >= v for k, v in expected.items()):
                break
            time.sleep(0.2)
        time.sleep(0.5)  # nothing more may arrive: exact, not at-least
        got = _counters(tmp_path)
        assert {k: got[k] for k in expected} == expected
        assert got["term:udp"] == N_UDP and got["term:syn"] == N_SYN and got["term:ping"] == N_PING
        assert got["term:other"] == 0

        errors = request(str(tmp_path / "control.sock"), ["show", "services", "accounting", "errors"],
                         fmt="json")["data"]
        [row] = errors["interfaces"]
        # every IP packet decoded; the only non-IP frames are ARP
        assert row["decoded"] == N_UDP + N_SYN + N_PING
        assert row["received"] - row["decoded"] == row["errors"]["not IP"]
        assert row["kernel_drops"] == 0 and row["ingest_backpressure"] == 0

        proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()

"""Inline monitoring end to end in a namespace pair, decoded by tshark.

ns B sends frames of known content (AF_PACKET, every byte chosen by the test) over the veth to
ns A, where `flowplane run` captures veth A with AF_PACKET and a firewall term sends them to an
inline-monitoring instance with three collectors in ns B (1 in 1, 1 in 10, 1 in 7).  tcpdump in
ns B records the export; tshark (`-d udp.port==N,cflow`) decodes it and the test checks:

* the data template has exactly the seed's elements and lengths (10/4, 14/4, 61/1, 312/2,
  315/variable) and the options template 144/4 (scope), 34/4;
* every record's dataLinkFrameSection equals the first 128 bytes (the clip) of the frame sent,
  dataLinkFrameSize its length, ingressInterface veth A's ifindex, egressInterface 0,
  flowDirection 0;
* each collector got exactly the N-th, 2N-th, ... frame (deterministic 1-in-N);
* sequence numbers count the data records (options data included) per collector, the export
  leaves from source-address with the collector's DSCP;
* options data (exportingProcessId, samplingInterval = the collector's rate) came again
  option-template-refresh-rate (10 s) after the first one, while no traffic flowed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowplane.control import request

from netns import NotifySocket

N_FRAMES = 700
RATES = (1, 10, 7)
PORTS = (4739, 4740, 4741)
CLIP = 128
OPTION_REFRESH = 10

SENDER = r"""
import socket, struct, sys
dev, dst_mac, src_ip, dst_ip, n = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
src_mac = s.getsockname()[4]
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
for i in range(n):
    size = 60 + (i * 37) % 1455                     # 60 .. 1514 bytes
    payload = bytes((i + k) % 256 for k in range(size - 42))
    udp = struct.pack("!HHHH", 20000 + i % 1000, 9999, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    frame = dst_mac + src_mac + b"\x08\x00" + ip + udp
    sys.stdout.write(frame.hex() + "\n")
    s.send(frame)
"""

SINK = r"""
import select, socket, sys
socks = []
for p in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((sys.argv[1], int(p)))
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        s.recv(65535)
"""


def _config(tmp: Path, ifname: str, collector: str, source: str) -> str:
    cols = "".join(f"""\
      collector c{rate}:
        source-address: {source}
        destination-address: {collector}
        destination-port: {port}
        sampling-rate: {rate}
        dscp: 10
""" for rate, port in zip(RATES, PORTS))
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json}}
interfaces:
  {ifname}:
    source: af-packet
    direction: input
    family inet:
      filter input: watch
firewall:
  family inet:
    filter watch:
      term probes:
        from: {{protocol: [udp], destination-port: [9999]}}
        then: {{inline-monitoring-instance: i1, accept: true}}
      term rest:
        then: accept
services:
  inline-monitoring:
    template t1:
      template-refresh-rate: 20
      option-template-refresh-rate: {OPTION_REFRESH}
      template-id: 1024
      option-template-id: 1025
      observation-domain-id: 7
    instance i1:
      template-name: t1
{cols}"""


def _wait_line(stream, needle: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if needle in line:
            return
        if not line:
            time.sleep(0.05)
    raise AssertionError(f"no {needle!r}")


def _tshark(pcap: Path, fields: list[str], port: int) -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), "-d", f"udp.port=={port},cflow", "-Y", f"udp.dstport=={port}",
            "-T", "fields", "-E", "separator=|", "-e", "frame.time_epoch"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.netns
@pytest.mark.peer
@pytest.mark.skipif(not (shutil.which("tshark") and shutil.which("tcpdump")), reason="needs tshark and tcpdump")
def test_inline_monitoring_exports_clipped_frames_to_each_collector(netns_pair, tmp_path):
    p = netns_pair
    cfg = tmp_path / "flowplane.yaml"
    cfg.write_text(_config(tmp_path, p.veth_a, p.addr_b, p.addr_a))
    check = p.run(p.ns_a, [sys.executable, "-m", "flowplane", "check-config", str(cfg)], check=False)
    assert check.returncode == 0, check.stderr
    link = json.loads(p.run(p.ns_a, ["ip", "-j", "link", "show", "dev", p.veth_a]).stdout)[0]
    ifindex, mac = link["ifindex"], link["address"].replace(":", "")

    pcap = tmp_path / "export.pcap"
    ports_expr = " or ".join(f"dst port {x}" for x in PORTS)
    dump = p.popen(p.ns_b,
                   ["tcpdump", "-i", p.veth_b, "-U", "-n", "-s", "0", "-w", str(pcap), f"udp and ({ports_expr})"])
    sink = p.popen(p.ns_b, [sys.executable, "-c", SINK, p.addr_b, *map(str, PORTS)])
    notify = NotifySocket(tmp_path / "notify.sock")
    env = notify.env()
    log = open(tmp_path / "out.log", "w")
    proc = None
    try:
        _wait_line(dump.stderr, "listening on")
        _wait_line(sink.stdout, "ready")
        proc = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], env=env, stdout=log,
                       stderr=subprocess.STDOUT)
        notify.wait("READY=1")
        ready_at = time.time()  # the first options data went out just before READY
        sent = p.run(p.ns_b, [sys.executable, "-c", SENDER, p.veth_b, mac, p.addr_b, p.addr_a, str(N_FRAMES)],
                     timeout=120)
        frames = [bytes.fromhex(x) for x in sent.stdout.split()]
        assert len(frames) == N_FRAMES
        sock = str(tmp_path / "control.sock")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = request(sock, ["show", "services", "inline-monitoring", "statistics"], fmt="json")["data"]
            if stats["instances"][0]["packets_seen"] >= N_FRAMES:
                break
            time.sleep(0.2)
        traffic_done = time.time()
        # no more traffic: wait until the second options data message of every collector is due
        time.sleep(max(0.0, OPTION_REFRESH + 1.5 - (time.time() - ready_at)))
        stats = request(sock, ["show", "services", "inline-monitoring", "statistics"], fmt="json")["data"]
        text = request(sock, ["show", "services", "inline-monitoring", "statistics"])
        proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        for pr in (proc, sink):
            if pr is not None and pr.poll() is None:
                pr.kill()
                pr.wait()
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        log.close()
        notify.close()

    [inst] = stats["instances"]
    assert inst["packets_seen"] == N_FRAMES and inst["drops"] == []
    assert "Instance name: i1" in text["text"] and f"Records exported: {N_FRAMES}" in text["text"]
    by_rate = {c["sampling_rate"]: c for c in inst["collectors"]}
    for rate, port in zip(RATES, PORTS):
        c = by_rate[rate]
        assert c["packets_sampled"] == c["records_exported"] == N_FRAMES // rate
        assert c["dropped"] == 0

        # templates: exactly the seed's elements and lengths
        rows = _tshark(pcap, ["cflow.template_id", "cflow.template_ipfix_field_type", "cflow.template_field_length",
                              "cflow.template_ipfix_scope_field_count"], port)
        tmpl = [r for r in rows if r[2]]
        assert tmpl, f"no template reached collector {port}"
        assert tmpl[0][1] == "1024,1025"
        assert tmpl[0][2].split(",") == ["10", "14", "61", "312", "315", "144", "34"]
        assert tmpl[0][3].split(",") == ["4", "4", "1", "2", "65535", "4", "4"]
        assert tmpl[0][4] == "1"

        # data records: the clipped frame bytes, sizes, interfaces, direction, in sampling order
        rows = _tshark(pcap, ["cflow.od_id", "cflow.sequence", "cflow.inputint", "cflow.outputint", "cflow.direction",
                              "cflow.data_link_frame_size", "cflow.data_link_frame_section", "cflow.flow_exporter",
                              "cflow.sampling_interval", "ip.dsfield.dscp", "ip.src"], port)
        sections, sizes, seq = [], [], 0
        options_at = []
        for r in rows:
            t, od, sq, ins, outs, dirs, fsize, fsec, exporter, interval, dscp, src = r
            # the export packet's own IP header comes first (tshark also dissects the clipped frames)
            assert od == "7" and dscp.split(",")[0] == "10" and src.split(",")[0] == p.addr_a
            assert int(sq) == seq, (port, sq, seq)
            n_rec = len(fsec.split(",")) if fsec else 0
            if fsec:
                assert set(ins.split(",")) == {str(ifindex)} and set(outs.split(",")) == {"0"}
                assert set(dirs.split(",")) == {"0"}
                sections += [bytes.fromhex(x) for x in fsec.split(",")]
                sizes += [int(x) for x in fsize.split(",")]
            if interval:
                assert (exporter, interval) == ("7", str(rate))
                options_at.append(float(t))
                n_rec += 1
            seq += n_rec
        picked = list(range(rate - 1, N_FRAMES, rate))
        assert sections == [frames[i][:CLIP] for i in picked]
        assert sizes == [len(frames[i]) for i in picked]
        # options data: at start, then again option-template-refresh-rate later, with no traffic flowing
        assert len(options_at) >= 2, options_at
        assert abs(options_at[1] - options_at[0] - OPTION_REFRESH) < 1.0
        assert options_at[1] > traffic_done


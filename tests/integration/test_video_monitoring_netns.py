"""Video monitoring end to end: ffmpeg (Debian) sends a paced CBR MPEG-TS stream from ns B over the veth
to ns A, where `flowplane run` captures veth A with AF_PACKET and monitors the flow with the guide's
template (rate media 2972400, interval-duration 1).  tcpdump records the same packets in ns A with
nanosecond kernel timestamps, and the test checks flowplane against its own offline reading of that
capture:

* clean UDP stream: each interval's DF equals RFC 4445's DF computed here from the capture's timestamps
  (the same kernel timestamps AF_PACKET reports), DF is a few milliseconds, MLR 0;
* an nft ``numgen random`` drop rule on veth B's egress (netdev family): over RTP, the RTP packets flowplane finds lost
  equal the nft counter (each one 7 TS packets); over UDP, the TS packets lost by continuity counter equal
  a per-PID CC count made here from tshark's ``mp2t.pid``/``mp2t.cc`` fields, tshark's own ``mp2t.cc.drop``
  events are no more than that, and no more than the nft counter times 7 TS packets.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from flowplane.control import request

from netns import NotifySocket

PORT = 5000
RATE = 2972400
SECONDS = 6
NS = 1_000_000_000

pytestmark = [pytest.mark.netns, pytest.mark.peer,
              pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("tshark") and shutil.which("tcpdump")
                                      and shutil.which("nft")), reason="needs ffmpeg, tshark, tcpdump and nft")]

SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    s.recv(65535)
"""


def ffmpeg_argv(dst: str, rtp: bool) -> list[str]:
    head = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-c:v", "mpeg2video", "-b:v", "2M",
            "-minrate", "2M", "-maxrate", "2M", "-bufsize", "500k", "-c:a", "mp2", "-b:a", "128k"]
    if rtp:
        return head + ["-t", str(SECONDS), "-f", "rtp_mpegts", f"rtp://{dst}:{PORT}?pkt_size=1328"]
    return head + ["-f", "mpegts", "-muxrate", "3M", "-pcr_period", "20", "-flush_packets", "0", "-t", str(SECONDS),
                   f"udp://{dst}:{PORT}?pkt_size=1316&bitrate=3000000&burst_bits=10528"]


def config(tmp: Path, ifname: str) -> str:
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json}}
interfaces:
  {ifname}:
    source: af-packet
    direction: input
    block-timeout: 5
    family inet:
      input-flows video:
        destination-port: {PORT}
        template: t1
services:
  video-monitoring:
    templates t1:
      interval-duration: 1
      inactive-timeout: 30
      rate media: {RATE}
      media-packet-size: 1504
      media-packets-count-in-layer3: 7
"""


def _wait_line(stream, needle: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if needle in line:
            return
        if not line:
            time.sleep(0.05)
    raise AssertionError(f"no {needle!r}")


def _flows(sock: str) -> list[dict]:
    words = ["show", "services", "video-monitoring", "mdi", "flows", "detail"]
    return request(sock, words, fmt="json")["data"]["flows"]


def _settled(sock: str, timeout: float = 20.0) -> dict:
    """The flow once the interval holding its last packet is closed too (the timer closes it once its end
    passed) and no packet arrived between two polls."""
    end = time.monotonic() + timeout
    prev = None
    while time.monotonic() < end:
        flows = _flows(sock)
        if len(flows) == 1:
            f = flows[0]
            done = f["intervals"] == (f["last_seen_ns"] - f["created_ns"]) // NS + 1
            if done and prev is not None and prev["packets"] == f["packets"] and f["intervals"] >= SECONDS - 2:
                return f
            prev = f
        time.sleep(0.3)
    raise AssertionError(f"flow did not settle: {flows}")


def run_stream(p, tmp: Path, *, rtp: bool, drop_per_mille: int = 0) -> tuple[dict, Path, int]:
    """Send one ffmpeg stream; return flowplane's flow (detail), the receiver-side capture and the nft drops."""
    cfg = tmp / "flowplane.yaml"
    cfg.write_text(config(tmp, p.veth_a))
    check = p.run(p.ns_a, [sys.executable, "-m", "flowplane", "check-config", str(cfg)], check=False)
    assert check.returncode == 0, check.stderr
    if drop_per_mille:
        # netdev egress of veth B: the sender's sendto() never sees the drop (an output-hook drop fails it
        # with EPERM and ffmpeg stops), and AF_PACKET in ns A never sees the packet
        rules = (f"table netdev fpvm {{\n chain out {{\n  type filter hook egress device \"{p.veth_b}\" priority 0;\n"
                 f"  udp dport {PORT} numgen random mod 1000 < {drop_per_mille} counter drop\n }}\n}}\n")
        p.run(p.ns_b, ["nft", "-f", "-"], input=rules)
    pcap = tmp / "rx.pcap"
    dump = p.popen(p.ns_a, ["tcpdump", "-i", p.veth_a, "-U", "-n", "-s", "0", "--time-stamp-precision", "nano",
                            "--immediate-mode", "-w", str(pcap), f"udp dst port {PORT}"])
    sink = p.popen(p.ns_a, [sys.executable, "-c", SINK, p.addr_a, str(PORT)])
    notify = NotifySocket(tmp / "notify.sock")
    log = open(tmp / "out.log", "w")
    proc = None
    try:
        _wait_line(dump.stderr, "listening on")
        _wait_line(sink.stdout, "ready")
        proc = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], env=notify.env(),
                       stdout=log, stderr=subprocess.STDOUT)
        notify.wait("READY=1")
        ff = p.run(p.ns_b, ffmpeg_argv(p.addr_a, rtp), check=False, timeout=120)
        assert ff.returncode == 0, ff.stderr
        flow = _settled(str(tmp / "control.sock"))
        flow["interface_stats"] = request(str(tmp / "control.sock"), ["show", "interfaces", "statistics"],
                                          fmt="json")["data"]
        proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        for pr in (proc, sink):
            if pr is not None and pr.poll() is None:
                pr.kill()
                pr.wait()
        if dump.poll() is None:
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=10)
        (tmp / "tcpdump.err").write_text(dump.stderr.read() if dump.stderr else "")
        log.close()
        notify.close()
    dropped = 0
    if drop_per_mille:
        ruleset = json.loads(p.run(p.ns_b, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
        for item in ruleset:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    dropped += expr["counter"]["packets"]
    return flow, pcap, dropped


def _capture(pcap: Path, *, rtp: bool) -> list[tuple[int, int]]:
    """(kernel timestamp ns, media payload bytes) of every captured datagram, from tshark."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch", "-e", "udp.length"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = []
    for line in out.splitlines():
        t, length = line.split("\t")
        rows.append((int(Decimal(t) * NS), int(length) - 8 - (12 if rtp else 0)))
    return rows


def df_reference(arrivals: list[tuple[int, int]], mr: float) -> float:
    """RFC 4445 DF (ms) of one interval, one packet at a time, from the interval's first packet."""
    t0 = arrivals[0][0]
    received = 0
    lo = hi = None
    for t, s in arrivals:
        pre = received - mr * (t - t0) / NS
        lo = pre if lo is None else min(lo, pre)
        hi = pre + s if hi is None else max(hi, pre + s)
        received += s
    return (hi - lo) / mr * 1000.0


def cc_lost_reference(pcap: Path) -> tuple[int, int]:
    """TS packets lost by continuity counter (per PID, payload packets, null PID excluded) and tshark's
    own ``mp2t.cc.drop`` event count."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-d", f"udp.port=={PORT},mp2t", "-T", "fields",
                          "-e", "mp2t.pid", "-e", "mp2t.cc", "-e", "mp2t.afc", "-e", "mp2t.cc.drop"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    last: dict[int, int] = {}
    lost = events = 0
    for line in out.splitlines():
        pids, ccs, afcs, drops = (line.split("\t") + ["", "", "", ""])[:4]
        events += len([d for d in drops.split(",") if d])
        for pid, cc, afc in zip(pids.split(","), ccs.split(","), afcs.split(",")):
            pid, cc, afc = int(pid, 0), int(cc, 0), int(afc, 0)
            if pid == 0x1FFF or not afc & 1:
                continue
            if pid in last and cc != last[pid]:
                lost += (cc - last[pid] - 1) & 15
            last[pid] = cc
    return lost, events


def test_paced_udp_stream_df_matches_the_offline_rfc4445_value_and_mlr_is_zero(netns_pair, tmp_path):
    flow, pcap, _ = run_stream(netns_pair, tmp_path, rtp=False)
    rx = _capture(pcap, rtp=False)
    assert flow["errors"]["cc_lost"] == 0 and flow["errors"]["sync_errors"] == 0
    hist = flow["history"]
    assert len(hist) >= SECONDS - 2
    for rec in hist:
        sel = [(t, s) for t, s in rx if rec["start_ns"] <= t < rec["end_ns"]]
        assert sel and sel[0][0] == rec["start_ns"]  # the same kernel timestamps
        assert len(sel) == rec["datagrams"], (rec, len(rx), flow["packets"], [r["datagrams"] for r in hist],
                                              [(r["start_ns"], r["end_ns"]) for r in hist], flow["created_ns"])
        ref = df_reference(sel, RATE / 8)
        assert rec["df_ms"] == pytest.approx(ref, rel=1e-6, abs=1e-3)
        assert rec["mlr"] == 0 and rec["lost_packets"] == 0
    # the paced stream: DF of a few datagrams once running (the first interval carries ffmpeg's start-up,
    # the last its final flush); ~10 ms on an idle box
    middle = sorted(r["df_ms"] for r in hist[1:-1])
    assert middle[len(middle) // 2] < 30, [r["df_ms"] for r in hist]
    assert all(abs(r["mrv_percent"]) < 5 for r in hist[1:-1])


def test_rtp_loss_from_nft_drops_equals_rtp_sequence_gaps(netns_pair, tmp_path):
    flow, pcap, dropped = run_stream(netns_pair, tmp_path, rtp=True, drop_per_mille=20)
    assert dropped > 0
    assert flow["rtp"] and flow["errors"]["rtp_lost"] == dropped
    assert flow["errors"]["rtp_late"] == 0
    assert sum(r["lost_packets"] for r in flow["history"]) <= 7 * dropped


def test_udp_loss_from_nft_drops_counted_by_continuity_counter(netns_pair, tmp_path):
    flow, pcap, dropped = run_stream(netns_pair, tmp_path, rtp=False, drop_per_mille=20)
    lost, events = cc_lost_reference(pcap)
    assert dropped > 0 and lost > 0
    assert flow["errors"]["cc_lost"] == lost, (flow["packets"], len(_capture(pcap, rtp=False)), dropped,
                                               (pcap.parent / "tcpdump.err").read_text(), flow["errors"])
    assert events <= lost <= 7 * dropped

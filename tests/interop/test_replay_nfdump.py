"""`flowplane replay` exports a capture; nfcapd stores it; nfdump's totals equal the capture's
truth exactly, and every flow equals softflowd's for the same capture and timeouts."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowplane.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "samples" / "sample.pcap"
TRUTH = json.loads((ROOT / "etc" / "samples" / "sample.pcap.truth.json").read_text())
TIMEOUTS = ["--active-timeout", "600", "--inactive-timeout", "600", "--tcp-end-grace", "600"]

pytestmark = pytest.mark.peer
needs_nfdump = pytest.mark.skipif(not (shutil.which("nfcapd") and shutil.which("nfdump")),
                                  reason="nfdump not installed")


class Nfcapd:
    """nfcapd on 127.0.0.1; files are finalised when it stops."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.port = free_port()
        self.proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w", str(self.dir), "-t",
                                      "3600",
                                      "-B", "4194304"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(self.dir.iterdir()):
            time.sleep(0.05)  # nfcapd creates its current file once the socket is up
        time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)

    def totals(self) -> dict[str, int]:
        out = subprocess.run(["nfdump", "-R", str(self.dir), "-I"], capture_output=True, text=True, check=True).stdout
        kv = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        return {k: int(kv[k]) for k in ("Flows", "Packets", "Bytes", "Sequence failures")}

    def flows(self, nf_filter: str = "any") -> dict[tuple, tuple[int, int]]:
        out = subprocess.run(["nfdump", "-R", str(self.dir), "-q", "-N", "-o", "fmt:%pr|%sa|%sp|%da|%dp|%pkt|%byt",
                              nf_filter], capture_output=True, text=True, check=True).stdout
        flows: dict[tuple, list[int]] = {}
        for line in out.splitlines():
            f = [x.strip() for x in line.split("|")]
            if len(f) == 7:
                acc = flows.setdefault(tuple(f[:5]), [0, 0])
                acc[0] += int(f[5])
                acc[1] += int(f[6])
        return {k: (v[0], v[1]) for k, v in flows.items()}


def replay(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "flowplane", "replay", str(SAMPLE), *args], capture_output=True,
                       text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r


@needs_nfdump
@pytest.mark.parametrize("version", [9, 10])
def test_totals_equal_the_capture(tmp_path, version):
    nf = Nfcapd(tmp_path, "nf")
    try:
        r = replay("--version", str(version), "--export", f"127.0.0.1:{nf.port}", *TIMEOUTS)
    finally:
        nf.stop()
    t = nf.totals()
    assert t["Flows"] == TRUTH["unidirectional_5tuple_keys"]
    assert t["Packets"] == TRUTH["ip_packets"]
    assert t["Bytes"] == TRUTH["ip_bytes"]
    assert f"{TRUTH['unidirectional_5tuple_keys']} flows" in r.stderr


@needs_nfdump
def test_v5_carries_ipv4_only(tmp_path):
    nf = Nfcapd(tmp_path, "nf")
    try:
        replay("--version", "5", "--export", f"127.0.0.1:{nf.port}", "--engine-id", "5", "--engine-type", "55",
               *TIMEOUTS)
    finally:
        nf.stop()
    t = nf.totals()
    assert t["Packets"] == TRUTH["ipv4_packets"] and t["Sequence failures"] == 0
    assert all(":" not in k[1] for k in nf.flows())
    out = subprocess.run(["nfdump", "-R", str(nf.dir), "-q", "-N", "-c", "1", "-o", "raw"], capture_output=True,
                         text=True).stdout
    assert "engine type" in out and "55" in out


@needs_nfdump
@pytest.mark.skipif(not shutil.which("softflowd"), reason="softflowd not installed")
def test_every_flow_equals_softflowd(tmp_path):
    ours, theirs = Nfcapd(tmp_path, "ours"), Nfcapd(tmp_path, "theirs")
    try:
        replay("--version", "10", "--export", f"127.0.0.1:{ours.port}", *TIMEOUTS)
        sfd = ["softflowd", "-d", "-r", str(SAMPLE), "-n", f"127.0.0.1:{theirs.port}", "-v", "10", "-m", "200000",
               "-c", "none"] + [a for t in ("maxlife", "general", "tcp", "tcp.rst", "tcp.fin", "udp", "icmp")
                                for a in ("-t", f"{t}=600")]
        subprocess.run(sfd, capture_output=True, timeout=120, check=True)
        time.sleep(0.3)
    finally:
        ours.stop()
        theirs.stop()
    a, b = ours.flows(), theirs.flows()
    assert len(a) == TRUTH["unidirectional_5tuple_keys"]
    assert set(a) <= set(b)
    assert {k: a[k] for k in a} == {k: b[k] for k in a}  # packets and bytes per flow
    # softflowd's extra flows come only from the capture's malformed frames (which we count as decode
    # errors): they hold no more packets than there are malformed frames
    extra = sum(b[k][0] for k in set(b) - set(a))
    malformed = TRUTH["frames"] - TRUTH["ip_packets"] - TRUTH["non_ip_frames"]
    assert 0 < extra <= malformed


@needs_nfdump
@pytest.mark.parametrize("version", [9, 10])
def test_sampling_interval_lets_the_collector_scale(tmp_path, version):
    """1 in 10 sampling: the options data carries 10, nfdump scales the counts back up."""
    nf = Nfcapd(tmp_path, "nf")
    try:
        replay("--version", str(version), "--export", f"127.0.0.1:{nf.port}", "--sampling-rate", "10", *TIMEOUTS)
    finally:
        nf.stop()
    t = nf.totals()
    # deterministic 1-in-10 over the capture's IP packets: exactly a tenth is sampled, scaled x10
    assert t["Packets"] == TRUTH["ip_packets"]
    # bytes: the sampled packets stand for their neighbours; within 5 % on this capture
    assert abs(t["Bytes"] - TRUTH["ip_bytes"]) < 0.05 * TRUTH["ip_bytes"]

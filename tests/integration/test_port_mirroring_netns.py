"""Port mirroring on a live interface, end to end, in two network namespaces.

``flowplane run`` in namespace A captures veth_a (AF_PACKET) and its filter
sends UDP streams to the port-mirroring actions.  A second veth pair (m_a in
A, m_b in B) carries the copies: the default instance sends every 9999 frame
unchanged out of m_a *and* GRE-encapsulated to m_b's address (two
destinations), instance ``sampled`` (rate 10, run-length 2) sends the 9998
stream out of m_a, instance ``analyzer`` sends the 9996 stream as ERSPAN II
(session 77, maximum-packet-length 64).  tcpdump captures the originals on
veth_a (A) and the copies on m_b (B); every copy must be byte-identical to
its original (or its first 64 bytes), counts are exact, tshark decodes GRE
and ERSPAN, and taking m_a down and up again is counted and logged once each.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowplane.control import request

from netns import IP, NotifySocket, make_netns_pair, skip_reason

N = 600  # frames per stream
K = 50  # frames sent while m_a is down, and again after it is up
STREAMS = {9999: "default", 9998: "sampled", 9996: "analyzer", 9995: "shaped"}
SHAPED_MTU = 1000  # m2_a: copies longer than 1000 + 14 + 4 bytes are too big
TBF = ["rate", "1mbit", "burst", "2kb", "limit", "4kb"]  # a tiny queue: ENOBUFS under a burst
RATE, RUN = 10, 2
CLIP = 64
SESSION = 77
_counter = itertools.count()

SENDER = r"""
import socket, struct, sys, time
dev, dst_mac, src_mac, src_ip, dst_ip = sys.argv[1:6]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((dev, 0))
dst_mac, src_mac = bytes.fromhex(dst_mac), bytes.fromhex(src_mac)
src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
def csum(b):
    s_ = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s_ = (s_ >> 16) + (s_ & 0xFFFF); s_ += s_ >> 16
    return ~s_ & 0xFFFF
for spec in sys.argv[6:]:
    dport, first, n, big = map(int, spec.split(":"))
    for i in range(first, first + n):
        extra = (i * 7) % 1250 if big else i % 250
        payload = struct.pack("!HI", dport, i) + bytes((i + k) & 0xFF for k in range(extra))
        udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        s.send(dst_mac + src_mac + b"\x08\x00" + hdr + udp)
        if i % 50 == 49:
            time.sleep(0.002)
print("sent")
"""

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")]


# -- helpers -------------------------------------------------------------------------------------
def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, text=True, timeout=30)


def _mac(ns: str, dev: str, *, colons: bool = False) -> str:
    out = subprocess.run([IP, "-n", ns, "-j", "link", "show", "dev", dev], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    mac = json.loads(out)[0]["address"]
    return mac if colons else mac.replace(":", "")


def _mirror_link(p) -> tuple[str, str, str, str]:
    """A second veth pair, m_a in A and m_b in B, with its own /24 (deleted with the namespaces)."""
    n = next(_counter)
    uid = f"{os.getpid() % 100000}{n}"
    m_a, m_b = f"pm{uid}ma"[:15], f"pm{uid}mb"[:15]
    x = (os.getpid() + n) % 250 + 1
    addr_a, addr_b = f"10.251.{x}.1", f"10.251.{x}.2"
    _ip("-n", p.ns_a, "link", "add", m_a, "type", "veth", "peer", "name", m_b, "netns", p.ns_b)
    for ns, dev, addr in ((p.ns_a, m_a, addr_a), (p.ns_b, m_b, addr_b)):
        subprocess.run([IP, "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1"],
                       capture_output=True, timeout=30)
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        _ip("-n", ns, "link", "set", "dev", dev, "up")
    return m_a, m_b, addr_a, addr_b


def _config(tmp: Path, veth_a: str, m_a: str, addr_a: str, addr_b: str, m2_a: str) -> str:
    return f"""\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json}}
interfaces:
  {veth_a}:
    source: af-packet
    direction: input
    promiscuous: true
    batch-size: 64
    family inet:
      filter input: edge
forwarding-options:
  port-mirroring:
    input: {{rate: 1}}
    family inet:
      output:
        interface: {m_a}
        ip-address {addr_b}: {{encapsulation: gre, source-address: {addr_a}}}
    instance sampled:
      input: {{rate: {RATE}, run-length: {RUN}}}
      family inet:
        output:
          interface: {m_a}
    instance shaped:
      family inet:
        output:
          interface: {m2_a}
    instance analyzer:
      input: {{maximum-packet-length: {CLIP}}}
      family any:
        output:
          ip-address {addr_b}: {{encapsulation: erspan, session-id: {SESSION}, source-address: {addr_a}}}
firewall:
  family inet:
    filter edge:
      term all:
        from: {{protocol: [udp], destination-port: [9999]}}
        then: {{port-mirror: true, count: all-9999}}
      term sampled:
        from: {{protocol: [udp], destination-port: [9998]}}
        then: {{port-mirror-instance: sampled, count: sampled-9998}}
      term shaped:
        from: {{protocol: [udp], destination-port: [9995]}}
        then: {{port-mirror-instance: shaped}}
      term analyzer:
        from: {{protocol: [udp], destination-port: [9996]}}
        then: {{port-mirror-instance: analyzer, count: analyzer-9996}}
      term rest:
        then: accept
"""


def _tcpdump(p, ns: str, dev: str, out: Path, bpf: str, extra=()) -> subprocess.Popen:
    proc = p.popen(ns, ["tcpdump", "-i", dev, "-n", "-U", "-s", "0", "-w", str(out), *extra, bpf],
                   stdout=subprocess.DEVNULL)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stderr], [], [], 0.5)
        if r and "listening on" in proc.stderr.readline():
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"tcpdump on {dev} did not start: {proc.stderr.read() if proc.poll() is not None else ''}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a classic pcap (what tcpdump -w writes)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(end + "IIII", data, off)
        if off + 16 + incl > len(data):
            break  # a record tcpdump is still writing
        out.append(data[off + 16: off + 16 + incl])
        off += 16 + incl
    return out


def _wait_captured(want: dict[Path, int], timeout: float = 20.0) -> None:
    """Until every capture holds at least its number of test frames (plain, GRE or ERSPAN); a shortfall
    at the deadline is left to the checks, which name it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(p.exists() and sum(_udp_key(f) is not None or _inner(f) is not None for f in read_pcap(p)) >= n
               for p, n in want.items()):
            return
        time.sleep(0.05)


def _udp_key(frame: bytes) -> tuple[int, int] | None:
    """(dport, index) of one of our test frames (Ethernet/IPv4/UDP, payload starts with dport, i)."""
    if len(frame) < 48 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 15) * 4
    return struct.unpack_from("!HI", frame, 14 + ihl + 8)


def _show(tmp: Path) -> dict:
    reply = request(str(tmp / "control.sock"), ["show", "forwarding-options", "port-mirroring"], fmt="json")
    assert reply["ok"], reply
    return {i["instance"]: i for i in reply["data"]["instances"]}


def _wait(tmp: Path, pred, timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        data = _show(tmp)
        if pred(data) or time.monotonic() > end:
            return data
        time.sleep(0.2)


def _dest(data: dict, inst: str, kind: str) -> dict:
    [d] = [d for d in data[inst]["destinations"] if d["kind"] == kind]
    return d


def _accounted(d: dict) -> int:
    """Copies sent plus copies dropped (every copy is one or the other)."""
    return d["packets"] + sum(d["drops"].values())


def _expected_sampled(n: int) -> list[int]:
    out = []
    for i in range(n):
        if any((j + 1) % RATE == 0 and j <= i <= j + RUN for j in range(max(0, i - RUN), i + 1)):
            out.append(i)
    return out


# -- the run (once for the module) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("pm")
    with make_netns_pair(tag="pmn") as p:
        m_a, m_b, maddr_a, maddr_b = _mirror_link(p)
        m2_a, m2_b, _, _ = _mirror_link(p)  # shaped and with a small MTU: too_big and send_buffer_full
        _ip("-n", p.ns_a, "link", "set", "dev", m2_a, "mtu", str(SHAPED_MTU))
        subprocess.run([IP, "netns", "exec", p.ns_a, "tc", "qdisc", "add", "dev", m2_a, "root", "tbf", *TBF],
                       check=True, capture_output=True, timeout=30)
        cfg = tmp / "flowplane.yaml"
        cfg.write_text(_config(tmp, p.veth_a, m_a, maddr_a, maddr_b, m2_a))
        notify = NotifySocket(tmp / "notify.sock")
        env = notify.env()
        log = open(tmp / "out.log", "w")
        procs = []
        proc = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], env=env, stdout=log,
                       stderr=subprocess.STDOUT)
        try:
            notify.wait("READY=1")
            # the analyzer's MAC is known before the GRE burst (no copies waiting on ARP)
            _ip("-n", p.ns_a, "neigh", "replace", maddr_b, "lladdr", _mac(p.ns_b, m_b, colons=True), "dev", m_a, "nud",
                "permanent")
            orig = _tcpdump(p, p.ns_a, p.veth_a, tmp / "orig.pcap", "udp and dst portrange 9995-9999", ("-Q", "in"))
            procs.append(orig)
            mirror = _tcpdump(p, p.ns_b, m_b, tmp / "mirror.pcap", "(udp and dst portrange 9995-9999) or ip proto 47")
            procs.append(mirror)
            shaped = _tcpdump(p, p.ns_b, m2_b, tmp / "shaped.pcap", "udp and dst port 9995")
            procs.append(shaped)
            sender = [sys.executable, "-c", SENDER, p.veth_b, _mac(p.ns_a, p.veth_a), _mac(p.ns_b, p.veth_b),
                      p.addr_b, p.addr_a]
            out = p.run(p.ns_b, sender + [f"{d}:0:{N}:{int(d == 9995)}" for d in STREAMS], timeout=120)
            assert out.stdout.strip() == "sent", out.stderr
            n_sampled = len(_expected_sampled(N))
            first = _wait(tmp, lambda d: _dest(d, "default", "interface")["packets"] >= N
                          and _dest(d, "default", "gre")["packets"] >= N
                          and _dest(d, "sampled", "interface")["packets"] >= n_sampled
                          and _dest(d, "analyzer", "erspan")["packets"] >= N
                          and _accounted(_dest(d, "shaped", "interface")) >= N)
            time.sleep(1.0)  # nothing more may arrive: exact, not at-least
            first = _show(tmp)
            # tcpdump stops at SIGINT without reading what is still in its socket (a busy host lags): first
            # every copy flowplane counted as sent is in the captures (the shaper releases what it queued)
            _wait_captured({tmp / "orig.pcap": len(STREAMS) * N,
                            tmp / "mirror.pcap": 3 * N + n_sampled,
                            tmp / "shaped.pcap": _dest(first, "shaped", "interface")["packets"]})
            _stop(orig)
            _stop(mirror)
            _stop(shaped)

            # m_a down: the local copies are dropped as interface_down (logged once), then up again
            _ip("-n", p.ns_a, "link", "set", "dev", m_a, "down")
            p.run(p.ns_b, sender + [f"9999:{N}:{K}:0"], timeout=60)
            down = _wait(tmp, lambda d: _dest(d, "default", "interface")["drops"].get("interface_down", 0) >= K)
            _ip("-n", p.ns_a, "link", "set", "dev", m_a, "up")
            time.sleep(1.0)
            p.run(p.ns_b, sender + [f"9999:{N + K}:{K}:0"], timeout=60)
            up = _wait(tmp, lambda d: _dest(d, "default", "interface")["packets"] >= N + K)
            text = request(str(tmp / "control.sock"), ["show", "forwarding-options", "port-mirroring"])
            proc.send_signal(signal.SIGTERM)
            notify.wait("STOPPING=1")
            rc = proc.wait(timeout=30)
        finally:
            for t in procs:
                _stop(t)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            notify.close()
        events = []
        for line in (tmp / "out.log").read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        yield {"tmp": tmp, "first": first, "down": down, "up": up, "text": text, "rc": rc, "events": events,
               "orig": read_pcap(tmp / "orig.pcap"), "mirror": read_pcap(tmp / "mirror.pcap"),
               "shaped": read_pcap(tmp / "shaped.pcap"),
               "maddr_a": maddr_a, "maddr_b": maddr_b}


def _originals(run) -> dict[tuple[int, int], bytes]:
    out = {}
    for f in run["orig"]:
        k = _udp_key(f)
        if k is not None:
            out[k] = f
    return out


def _inner(frame: bytes) -> tuple[int, bytes] | None:
    """(GRE protocol, payload after the GRE header) of an Ethernet/IPv4/GRE frame."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 47:
        return None
    ihl = (frame[14] & 15) * 4
    g = 14 + ihl
    flags, proto = struct.unpack_from("!HH", frame, g)
    return proto, frame[g + (8 if flags & 0x1000 else 4):]


# -- the checks -----------------------------------------------------------------------------------
def test_originals_were_captured_and_flowplane_exits_cleanly(run):
    orig = _originals(run)
    assert len(orig) == len(STREAMS) * N  # every original arrived once (tcpdump on veth_a)
    assert run["rc"] == 0


def test_local_copies_are_byte_identical_and_exact(run):
    orig = _originals(run)
    local = [f for f in run["mirror"] if _udp_key(f) is not None]
    by_port: dict[int, list[bytes]] = {}
    for f in local:
        by_port.setdefault(_udp_key(f)[0], []).append(f)
    # default instance, rate 1: every 9999 frame once, in order, byte for byte
    assert by_port[9999] == [orig[(9999, i)] for i in range(N)]
    # instance 'sampled', rate 10 run-length 2: exactly the triggers and their runs
    assert by_port[9998] == [orig[(9998, i)] for i in _expected_sampled(N)]
    assert 9996 not in by_port  # ERSPAN copies only travel encapsulated
    first = run["first"]
    d = _dest(first, "default", "interface")
    assert d["packets"] == N and d["bytes"] == sum(len(orig[(9999, i)]) for i in range(N)) and d["drops"] == {}
    s = first["sampled"]
    assert (s["candidates"], s["sampled"]) == (N, len(_expected_sampled(N)))
    assert _dest(first, "sampled", "interface")["packets"] == len(_expected_sampled(N))


def test_gre_copies_carry_the_whole_frame(run):
    orig = _originals(run)
    gre = []
    for f in run["mirror"]:
        inner = _inner(f)
        if inner and inner[0] == 0x6558:
            assert f[26:30] == socket.inet_aton(run["maddr_a"]) and f[30:34] == socket.inet_aton(run["maddr_b"])
            gre.append(inner[1])
    assert gre == [orig[(9999, i)] for i in range(N)]  # second destination of the default instance
    assert _dest(run["first"], "default", "gre")["packets"] == N


def test_erspan_copies_are_clipped_and_sequenced(run):
    orig = _originals(run)
    seqs, inners = [], []
    for f in run["mirror"]:
        inner = _inner(f)
        if inner and inner[0] == 0x88BE:
            ihl = (f[14] & 15) * 4
            seqs.append(struct.unpack_from("!I", f, 14 + ihl + 4)[0])
            w0, w1 = struct.unpack_from("!HH", inner[1], 0)
            assert w0 >> 12 == 1 and w1 & 0x3FF == SESSION
            inners.append(inner[1][8:])
    assert inners == [orig[(9996, i)][:CLIP] for i in range(N)]
    assert seqs == list(range(N))
    a = run["first"]["analyzer"]
    assert a["truncated"] == sum(len(orig[(9996, i)]) > CLIP for i in range(N))
    assert _dest(run["first"], "analyzer", "erspan")["bytes"] == sum(min(CLIP, len(orig[(9996, i)])) for i in range(N))


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_gre_and_erspan(run):
    pcap = run["tmp"] / "mirror.pcap"
    r = subprocess.run(["tshark", "-r", str(pcap), "-Y", "gre", "-T", "fields", "-E", "separator=|",
                        "-e", "frame.protocols", "-e", "gre.proto", "-e", "erspan.spanid", "-e", "udp.dstport"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.splitlines()]
    gre = [x for x in rows if x[1] == "0x6558"]
    ers = [x for x in rows if x[1] == "0x88be"]
    assert len(gre) == N and len(ers) == N
    assert all(x[0] == "eth:ethertype:ip:gre:eth:ethertype:ip:udp:data" and x[3] == "9999" for x in gre)
    assert all("gre:erspan:eth:ethertype:ip" in x[0] and x[2] == str(SESSION) for x in ers)


def test_interface_down_is_counted_and_logged_once_then_recovers(run):
    down = _dest(run["down"], "default", "interface")
    assert down["drops"] == {"interface_down": K} and down["packets"] == N and down["state"] == "down"
    up = _dest(run["up"], "default", "interface")
    assert up["packets"] == N + K and up["state"] == "up" and up["drops"] == {"interface_down": K}
    names = [e.get("event") for e in run["events"]]
    failed = [e for e in run["events"] if e.get("event") == "port_mirror_destination_failed"
              and e.get("destination", "").startswith("interface")]
    recovered = [e for e in run["events"] if e.get("event") == "port_mirror_destination_recovered"
                 and e.get("destination", "").startswith("interface")]
    assert len(failed) == 1 and failed[0]["reason"] == "interface_down", names
    assert len(recovered) == 1 and recovered[0]["dropped_while_down"] == K
    assert "port_mirroring_stopped" in names


def test_show_text_lists_every_instance(run):
    assert run["text"]["ok"], run["text"]
    text = run["text"]["text"] if "text" in run["text"] else str(run["text"]["data"])
    for needle in ("Instance Name: default", "Instance Name: sampled", "Instance Name: analyzer", "(erspan)",
                   "(gre)", "Run-length            : 2"):
        assert needle in text, text


def test_too_big_and_full_queue_are_counted_and_never_block(run):
    """m2_a has MTU 1000 and a tbf with a 4 KB queue: every copy is sent, too_big or send_buffer_full."""
    orig = _originals(run)
    d = _dest(run["first"], "shaped", "interface")
    big = sum(len(orig[(9995, i)]) > SHAPED_MTU + 14 + 4 for i in range(N))
    # a full queue drops the rest of that batch's copies at once, big ones included
    assert big > 0 and 0 < d["drops"].get("too_big", 0) <= big
    assert d["drops"].get("send_buffer_full", 0) > 0  # the burst overran the shaper's queue
    assert set(d["drops"]) <= {"too_big", "send_buffer_full"}
    assert d["packets"] + d["drops"]["too_big"] + d["drops"]["send_buffer_full"] == N
    got = [f for f in run["shaped"] if _udp_key(f) is not None]
    assert len(got) == d["packets"] > 0  # what was counted as sent went out, byte for byte
    assert all(f == orig[_udp_key(f)] for f in got)
    # the pipeline was never held up: every original of every stream was filtered and counted
    assert run["first"]["default"]["candidates"] == N and run["first"]["analyzer"]["candidates"] == N

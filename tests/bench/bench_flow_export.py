#!/usr/bin/env python3
"""Flow export end to end: ``flowplane replay`` against softflowd, memory per flow, profile.

Usage::

    python tests/bench/bench_flow_export.py [--packets 1200000] [--runs 3] [--versions 10,9,5]
        [--cpu N] [--timeout 3600] [--mem-flows 1000000] [--no-check] [--profile]
        [--batch-size N] [--skip export,memory] [--pcap FILE] [--json OUT]

(a) ``flowplane replay PCAP --version V --export 127.0.0.1:PORT`` as a subprocess pinned to one
    CPU (``sched_setaffinity`` in the child), wall and user+sys CPU (``wait4`` rusage), peak RSS.
(b) ``softflowd -d -r PCAP -n 127.0.0.1:PORT -v V -m 200000 -c none`` on the same CPU, same file,
    same timeouts (``-t maxlife|general|tcp|tcp.rst|tcp.fin|udp|icmp=T`` and ours
    ``--active-timeout T --inactive-timeout T --tcp-end-grace T``; softflowd never expires on
    time in file mode, so with T beyond the capture both export one record per flow key).
    A UDP sink thread on 127.0.0.1 (kept off the measured CPU) counts the datagrams each run
    produced; with nfcapd/nfdump installed one extra, untimed pass per tool and version
    exports to nfcapd and ``nfdump -I`` totals are checked against the truth file.
(c) memory at ``--mem-flows`` concurrent flows: flowplane's ``FlowCache.update`` over decoded
    batches of 4096 packets from a generated pcap with one UDP packet per flow
    (``memory_bytes()``, tracemalloc and RSS deltas per flow), and softflowd ``-m 2000000``
    on that pcap (peak RSS ``ru_maxrss`` / VmHWM minus the same run on a pcap with as many
    packets but 1,000 flows, divided by the flow difference); ``flowplane replay`` the same way.
(d) ``--profile``: cProfile of the in-process equivalent (``App.process`` over the pcap source's
    batches with the replay config, exporter sockets connected to the sink, shutdown flush)
    grouped into read / decode / filter / sampler / flowcache update / expiry / encode /
    transport / engine+app / other, numpy and builtins charged to their flowplane caller.

Not a pass/fail test; ``test_bench_flow_export_smoke.py`` runs the machinery on a tiny pcap.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pipeline import DATA, _kernels, ensure_pcap, warm  # noqa: E402

SFD_TIMEOUTS = ("maxlife", "general", "tcp", "tcp.rst", "tcp.fin", "udp", "icmp")
REPLAY_IFACE = "replay0"
STATS_RE_FLOWS = " flows in "


# ---------------------------------------------------------------------------------------
# helpers: tools, pinning, the UDP sink, nfcapd
# ---------------------------------------------------------------------------------------
def softflowd_exe() -> str | None:
    return shutil.which("softflowd") or ("/usr/sbin/softflowd" if os.path.exists("/usr/sbin/softflowd") else None)


def have_nfdump() -> bool:
    return bool(shutil.which("nfcapd") and shutil.which("nfdump"))


def choose_cpu(cpu: int | None) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-1] if cpu is None else cpu


def keep_off(cpu: int) -> None:
    """This process (sink thread, harness) on the other CPUs when there are any."""
    others = set(os.sched_getaffinity(0)) - {cpu}
    if others:
        os.sched_setaffinity(0, others)


class UdpSink:
    """Counts datagrams (and bytes, and v5 records) sent to 127.0.0.1:port, in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
                break
            except OSError:
                continue
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.datagrams = 0
        self.bytes = 0
        self.v5_records = 0
        self.last_rx = time.monotonic()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        buf = bytearray(65536)
        sock = self.sock
        while not self._stop:
            try:
                n = sock.recv_into(buf)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.datagrams += 1
            self.bytes += n
            if n >= 24 and buf[0] == 0 and buf[1] == 5:
                self.v5_records += (buf[2] << 8) | buf[3]
            self.last_rx = time.monotonic()

    def reset(self) -> None:
        self.settle()
        self.datagrams = self.bytes = self.v5_records = 0

    def settle(self, quiet_s: float = 0.2, max_s: float = 5.0) -> None:
        """Wait until nothing arrived for *quiet_s* (the socket buffer is drained)."""
        t0 = time.monotonic()
        while time.monotonic() - self.last_rx < quiet_s and time.monotonic() - t0 < max_s:
            time.sleep(0.02)

    def drops(self) -> int:
        """SO_RXQ_OVFL is not enabled; read the kernel's Udp RcvbufErrors instead (system wide)."""
        return udp_rcvbuf_errors()

    def close(self) -> None:
        self._stop = True
        self._t.join(1)
        self.sock.close()


def udp_rcvbuf_errors() -> int:
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return -1


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Nfcapd:
    """nfcapd on 127.0.0.1 (files are finalised when it stops)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.dir = workdir / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = free_udp_port()
        self.proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w", str(self.dir),
                                      "-t", "3600", "-B", "8388608"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(self.dir.iterdir()):
            time.sleep(0.05)
        time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        out = subprocess.run(["nfdump", "-R", str(self.dir), "-I"], capture_output=True, text=True).stdout
        kv = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        shutil.rmtree(self.dir, ignore_errors=True)
        return {k.lower(): int(kv.get(k, -1)) for k in ("Flows", "Packets", "Bytes")}


# ---------------------------------------------------------------------------------------
# one measured subprocess
# ---------------------------------------------------------------------------------------
@dataclass
class Run:
    tool: str
    version: int
    wall: float
    cpu: float
    maxrss_kb: int
    datagrams: int = 0
    flows_reported: int | None = None  # flowplane's own summary line
    extra: dict = field(default_factory=dict)


def run_pinned(cmd: list[str], cpu: int, *, poll_hwm: bool = True) -> tuple[float, float, int, str, int]:
    """(wall, user+sys, ru_maxrss KB, stdout+stderr, VmHWM KB polled) of *cmd* pinned to *cpu*.

    ``ru_maxrss`` of a child counts the forked Python before exec (tens of MB), so peak RSS is
    read from the exec'd process's VmHWM, polled every 10 ms from this process (another CPU)."""
    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    hwm = 0
    if poll_hwm:
        status = f"/proc/{proc.pid}/status"
        while True:  # until the child is a zombie (not reaped before wait4 below)
            try:
                txt = Path(status).read_text()
            except OSError:
                break
            for ln in txt.splitlines():
                if ln.startswith("VmHWM:"):
                    hwm = max(hwm, int(ln.split()[1]))
            if "State:\tZ" in txt:
                break
            time.sleep(0.01)
    _, st, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(st)
    out.seek(0)
    text = out.read().decode(errors="replace")
    out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {text[-1500:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, text, hwm


def replay_cmd(pcap: Path, version: int, port: int, timeout: int, extra: tuple[str, ...] = ()) -> list[str]:
    t = str(timeout)
    return [sys.executable, "-m", "flowplane", "replay", str(pcap), "--version", str(version), "--export",
            f"127.0.0.1:{port}", "--active-timeout", t, "--inactive-timeout", t, "--tcp-end-grace", t, *extra]


def softflowd_cmd(pcap: Path, version: int, port: int, timeout: int, workdir: Path,
                  max_flows: int = 200_000) -> list[str]:
    cmd = [softflowd_exe() or "softflowd", "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", str(version),
           "-m", str(max_flows), "-c", "none", "-p", str(workdir / "sfd.pid")]
    for name in SFD_TIMEOUTS:
        cmd += ["-t", f"{name}={timeout}"]
    return cmd


def parse_replay_summary(text: str) -> tuple[int | None, int | None, int]:
    """(flows, datagrams, dropped) from flowplane replay's stderr summary lines."""
    flows = dgrams = None
    dropped = 0
    for ln in text.splitlines():
        if STATS_RE_FLOWS in ln and "datagrams/messages" in ln:
            head, _, tail = ln.rpartition(": ")
            parts = tail.split()
            flows = (flows or 0) + int(parts[0])
            dgrams = (dgrams or 0) + int(parts[3])
            if "dropped" in tail:
                dropped += int(tail.split(", ")[-1].split()[0])
    return flows, dgrams, dropped


def parse_sfd_flows(text: str) -> int | None:
    """Records softflowd exported: 'Flows exported: N (R records) in P packets' (its flows are
    bidirectional, a record is one direction)."""
    for ln in text.splitlines():
        s = ln.strip()
        if s.startswith("Flows exported:"):
            try:
                if "records)" in s:
                    return int(s.split("(")[1].split()[0])
                return int(s.split(":")[1].split()[0])
            except (ValueError, IndexError):
                return None
    return None


def one_run(tool: str, pcap: Path, version: int, cpu: int, sink: UdpSink, timeout: int, workdir: Path) -> Run:
    sink.reset()
    if tool == "flowplane":
        cmd = replay_cmd(pcap, version, sink.port, timeout)
    else:
        cmd = softflowd_cmd(pcap, version, sink.port, timeout, workdir)
    wall, cpus, maxrss, text, hwm = run_pinned(cmd, cpu)
    rss = hwm or maxrss
    sink.settle()
    r = Run(tool, version, wall, cpus, rss, datagrams=sink.datagrams)
    if tool == "flowplane":
        flows, dg, dropped = parse_replay_summary(text)
        r.flows_reported = flows
        r.extra = {"sent_datagrams": dg, "dropped": dropped}
    else:
        r.flows_reported = parse_sfd_flows(text)
    if version == 5:
        r.extra["v5_records_received"] = sink.v5_records
    return r


def check_run(tool: str, pcap: Path, version: int, cpu: int, timeout: int, workdir: Path) -> dict[str, int]:
    """An untimed pass into nfcapd: nfdump -I totals."""
    nf = Nfcapd(workdir, f"nf-{tool}-{version}")
    e0 = udp_rcvbuf_errors()
    try:
        cmd = replay_cmd(pcap, version, nf.port, timeout) if tool == "flowplane" else \
            softflowd_cmd(pcap, version, nf.port, timeout, workdir)
        run_pinned(cmd, cpu)
    finally:
        totals = nf.stop()
    totals["rcvbuf_errors"] = udp_rcvbuf_errors() - e0  # datagrams the collector's socket dropped
    return totals


def expected_totals(truth: dict, version: int) -> dict[str, int | None]:
    if version == 5:  # IPv4 only; the truth has no IPv4 flow / byte split: compared with softflowd instead
        return {"flows": None, "packets": truth["ipv4_packets"], "bytes": None}
    return {"flows": truth["unidirectional_5tuple_keys"], "packets": truth["ip_packets"], "bytes": truth["ip_bytes"]}


def export_bench(pcap: Path, truth: dict, args, cpu: int, workdir: Path, say) -> dict:
    versions = [int(v) for v in str(args.versions).split(",") if v.strip()]
    tools = ["flowplane"] + (["softflowd"] if softflowd_exe() else [])
    if "softflowd" not in tools:
        say("  softflowd: not installed (apt-get install softflowd) -- no peer figure in this run")
    sink = UdpSink()
    res: dict = {"versions": versions, "tools": tools, "rows": {}, "checks": {}, "failures": []}
    try:
        for v in versions:
            for tool in tools:
                runs = []
                for _ in range(args.runs):
                    r = one_run(tool, pcap, v, cpu, sink, args.timeout, workdir)
                    runs.append(r)
                    say(f"  {tool:<10} v{v:<2}: {r.wall:6.2f} s wall  {r.cpu:6.2f} s CPU  "
                        f"{truth['frames'] / r.wall / 1e3:7,.0f} kpps  {r.datagrams:6,} datagrams received"
                        + (f"  flows {r.flows_reported:,}" if r.flows_reported is not None else "")
                        + (f"  (sent {r.extra['sent_datagrams']:,}, dropped {r.extra['dropped']})"
                           if tool == "flowplane" and r.extra.get("sent_datagrams") is not None else "")
                        + f"  peak RSS {r.maxrss_kb / 1024:.0f} MB", flush=True)
                    if tool == "flowplane" and r.extra.get("sent_datagrams") not in (None, r.datagrams):
                        res["failures"].append(f"flowplane v{v}: sent {r.extra['sent_datagrams']} datagrams, "
                                               f"sink received {r.datagrams}")
                    if r.datagrams == 0:
                        res["failures"].append(f"{tool} v{v}: no datagram received")
                res["rows"][(tool, v)] = runs
            if args.check and have_nfdump():
                for tool in tools:
                    t = check_run(tool, pcap, v, cpu, args.timeout, workdir)
                    res["checks"][(tool, v)] = t
                    want = expected_totals(truth, v)
                    ok = all(want[k] is None or t[k] == want[k] for k in want)
                    lost = t["rcvbuf_errors"]
                    say(f"  nfdump -I of {tool} v{v}: flows {t['flows']:,} packets {t['packets']:,} bytes "
                        f"{t['bytes']:,}"
                        f"  (truth {', '.join(f'{k} {w:,}' for k, w in want.items() if w is not None)}) "
                        f"{'ok' if ok else 'MISMATCH'}" + (f"; Udp RcvbufErrors +{lost}: nfcapd dropped datagrams "
                                                           "(EOF burst), not an export error" if lost else ""),
                                                           flush=True)
                    if not ok and not lost:
                        res["failures"].append(f"{tool} v{v}: nfdump totals {t} != truth {want}")
                if len(tools) == 2:
                    a, b = res["checks"][("flowplane", v)], res["checks"][("softflowd", v)]
                    if a != b and not (a["rcvbuf_errors"] or b["rcvbuf_errors"]):
                        say(f"  v{v}: flowplane and softflowd totals differ: {a} vs {b}")
                        res["failures"].append(f"v{v}: flowplane {a} != softflowd {b}")
    finally:
        sink.close()
    return res


# ---------------------------------------------------------------------------------------
# (c) memory per flow
# ---------------------------------------------------------------------------------------
def write_flows_pcap(path: Path, packets: int, flows: int) -> Path:
    """*packets* IPv4/UDP packets (42-byte frames) cycling over *flows* distinct 5-tuples
    (distinct source address and port per flow), 1 µs apart from 2024-01-01."""
    hdr = np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes() + \
        np.array([0, 0, 65535, 1], "<u4").tobytes()
    n = packets
    rec = np.zeros((n, 16 + 42), dtype=np.uint8)
    ts_us = 1_704_067_200_000_000 + np.arange(n, dtype=np.int64)
    rec[:, 0:4] = (ts_us // 1_000_000).astype("<u4").view(np.uint8).reshape(n, 4)
    rec[:, 4:8] = (ts_us % 1_000_000).astype("<u4").view(np.uint8).reshape(n, 4)
    rec[:, 8:12] = np.array([42], "<u4").view(np.uint8)
    rec[:, 12:16] = np.array([42], "<u4").view(np.uint8)
    f = rec[:, 16:]
    f[:, 0:6] = [0x02, 0, 0, 0, 0, 2]
    f[:, 6:12] = [0x02, 0, 0, 0, 0, 1]
    f[:, 12:14] = [0x08, 0x00]
    k = (np.arange(n, dtype=np.int64) % flows).astype(np.uint32)
    ip = f[:, 14:34]
    ip[:, 0] = 0x45
    ip[:, 2:4] = np.array([28], ">u2").view(np.uint8)
    ip[:, 8] = 64
    ip[:, 9] = 17
    src = (np.uint32(0x0A00_0000) + (k >> np.uint32(4))).astype(">u4")  # 10.0.0.0/8, 16 ports per address
    ip[:, 12:16] = src.view(np.uint8).reshape(n, 4)
    ip[:, 16:20] = np.array([0xC6120001], ">u4").view(np.uint8)  # 198.18.0.1
    w = ip.astype(np.uint32)
    s = ((w[:, 0::2] << 8) | w[:, 1::2]).sum(axis=1)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    ip[:, 10:12] = (~s & 0xFFFF).astype(">u2").view(np.uint8).reshape(n, 2)
    udp = f[:, 34:42]
    udp[:, 0:2] = (np.uint32(1024) + (k & np.uint32(15)) * np.uint32(3000)).astype(">u2").view(np.uint8).reshape(n, 2)
    udp[:, 2:4] = np.array([53], ">u2").view(np.uint8)
    udp[:, 4:6] = np.array([8], ">u2").view(np.uint8)  # checksum 0: none
    with open(path, "wb") as fh:
        fh.write(hdr)
        fh.write(rec.tobytes())
    return path


def ensure_flows_pcap(packets: int, flows: int, data_dir: Path = DATA) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"udpflows-p{packets}-f{flows}.pcap"
    if not path.exists():
        write_flows_pcap(path, packets, flows)
    return path


def _rss_kb() -> int:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1])
    return 0


def load_decoded(path: Path, batch_size: int) -> list:
    from flowplane.batch import PacketBatch
    from flowplane.decode import decode
    from flowplane.plugins.sources.pcapfile import open_capture

    reader = open_capture(str(path))
    out = []
    for lt, _idb, off, cap, wl, ts in reader.chunks(batch_size, 0):
        b = PacketBatch(reader.data, off, cap, wl, ts, linktype=lt, iface=0)
        decode(b)
        out.append(b)
    return out


def flowcache_memory(pcap: Path, n: int, say) -> dict:
    """FlowCache.update over decoded 4096-packet batches of the 1-packet-per-flow pcap."""
    from flowplane.flowcache import FlowCache

    batches = load_decoded(pcap, 4096)
    gc.collect()
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    cache = FlowCache(max_flows=n, active_timeout_s=1e6, inactive_timeout_s=1e6)
    for b in batches:
        for _recs, _why in cache.update(b):
            pass
    dt = time.perf_counter() - t0
    gc.collect()
    rss1 = _rss_kb()
    flows = len(cache)
    mem = cache.memory_bytes()
    del cache
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    cache = FlowCache(max_flows=n, active_timeout_s=1e6, inactive_timeout_s=1e6)
    for b in batches:
        cache.update(b)
    gc.collect()
    m1, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    d = {"flows": flows, "memory_bytes_per_flow": mem / flows, "tracemalloc_per_flow": (m1 - m0) / flows,
         "tracemalloc_peak_per_flow": (peak - m0) / flows, "rss_delta_per_flow": (rss1 - rss0) * 1024 / flows,
         "fill_flows_per_s": flows / dt, "capacity": cache.cap}
    say(f"  flowplane FlowCache at {flows:,} flows: memory_bytes() {d['memory_bytes_per_flow']:.0f} B/flow, "
        f"tracemalloc {d['tracemalloc_per_flow']:.0f} B/flow (peak while growing "
        f"{d['tracemalloc_peak_per_flow']:.0f}), "
        f"RSS delta {d['rss_delta_per_flow']:.0f} B/flow; filled at {flows / dt / 1e6:.2f} M flows/s", flush=True)
    return d


def process_memory(tool: str, big: Path, base: Path, flows_big: int, flows_base: int, cpu: int, workdir: Path,
                   say) -> dict:
    """Peak RSS of *tool* on the 1 M-flow pcap minus on the baseline pcap, per flow."""
    sink = UdpSink()
    try:
        out = {}
        for name, pcap in (("base", base), ("big", big)):
            sink.reset()
            if tool == "softflowd":
                cmd = softflowd_cmd(pcap, 9, sink.port, 1800, workdir, max_flows=2_000_000)
            else:
                cmd = replay_cmd(pcap, 9, sink.port, 1800, ("--max-flows", str(min(1_000_000, max(flows_big, 1000)))))
            wall, cpus, maxrss, text, hwm = run_pinned(cmd, cpu, poll_hwm=True)
            sink.settle()
            out[name] = {"maxrss_kb": maxrss, "vmhwm_kb": hwm, "wall": wall, "datagrams": sink.datagrams}
    finally:
        sink.close()
    df = flows_big - flows_base
    d = {"base": out["base"], "big": out["big"],
         "per_flow": (out["big"]["vmhwm_kb"] - out["base"]["vmhwm_kb"]) * 1024 / df}
    say(f"  {tool:<10} peak RSS (VmHWM) {out['base']['vmhwm_kb'] / 1024:.1f} MB ({flows_base:,} flows) -> "
        f"{out['big']['vmhwm_kb'] / 1024:.1f} MB ({flows_big:,} flows): {d['per_flow']:.0f} B/flow; "
        f"{out['big']['datagrams']:,} datagrams exported", flush=True)
    return d


def memory_bench(args, cpu: int, workdir: Path, say) -> dict:
    n = args.mem_flows
    base_flows = 1000
    big = ensure_flows_pcap(n, n)
    base = ensure_flows_pcap(n, base_flows)
    out: dict = {"flows": n}
    os.sched_setaffinity(0, {cpu})
    try:
        out["flowcache"] = flowcache_memory(big, n, say)
    finally:
        keep_off(cpu)
    if softflowd_exe():
        out["softflowd"] = process_memory("softflowd", big, base, n, base_flows, cpu, workdir, say)
    out["flowplane_replay"] = process_memory("flowplane", big, base, n, base_flows, cpu, workdir, say)
    return out


# ---------------------------------------------------------------------------------------
# (d) in-process run and profile
# ---------------------------------------------------------------------------------------
def replay_args(pcap: Path, version: int, port: int, timeout: int, **kw) -> SimpleNamespace:
    d = dict(pcap=str(pcap), export=[f"127.0.0.1:{port}"], version=version, transport="udp", sampling_rate=1,
             active_timeout=timeout, inactive_timeout=timeout, tcp_end_grace=timeout, aggregation=None,
             engine_id=0, engine_type=0, max_flows=1_000_000, speed=0.0, print_config=False)
    d.update(kw)
    return SimpleNamespace(**d)


def build_replay_app(pcap: Path, version: int, port: int, timeout: int, workdir: Path, batch_size: int | None = None):
    """The App ``flowplane replay`` builds, its pcap source, and the exporters' sockets connected to *port*
    (what the transports' ``run()`` does, without trio)."""
    import yaml

    from flowplane.app import App
    from flowplane.config import Config
    from flowplane.plugins.flow_monitoring.replay import build_config
    from flowplane.sources import SourceContext

    cfg = build_config(replay_args(pcap, version, port, timeout), str(workdir / "ctl.sock"))
    if batch_size:
        cfg["system"]["batch-size"] = int(batch_size)
    config = Config.from_text(yaml.safe_dump(cfg, sort_keys=False), path="<bench-replay>")
    app = App.create(config, environ={})
    app.configure()
    section = cfg["interfaces"][REPLAY_IFACE]
    driver = app.registries.sources[section["source"]]
    ctx = SourceContext(name=REPLAY_IFACE, config=section, iface_id=app.interfaces.id(REPLAY_IFACE),
                        interfaces=app.interfaces, batch_size=int(app.setting("batch-size")), speed=0.0,
                        log=None, base_dir=str(workdir))
    src = driver.factory(ctx)
    fm = app.pm.get_plugin("flow-monitor")
    socks = []
    for engine in fm.all_engines():
        for e in engine.all_exporters:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.connect(("127.0.0.1", port))
            e.transport._sock = s  # noqa: SLF001 - the bench stands in for run()
            socks.append(s)
    return app, src, fm, socks


def run_inprocess(pcap: Path, version: int, port: int, timeout: int, workdir: Path, *, batch_size: int | None = None,
                  profile: cProfile.Profile | None = None) -> dict:
    app, src, fm, socks = build_replay_app(pcap, version, port, timeout, workdir, batch_size)
    process = app.process
    n = 0
    gc.collect()
    c0 = time.process_time()
    if profile is not None:
        profile.enable()
    t0 = time.perf_counter()
    for batch in src.batches():
        n += len(batch)
        process(batch)
    flushed = sum(e.flush() for e in fm.all_engines())
    dt = time.perf_counter() - t0
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - c0
    exporters = [e for eng in fm.all_engines() for e in eng.all_exporters]
    records = sum(e.counters["records"] for e in exporters)
    sent = sum(e.transport.counters["packets"] for e in exporters)
    dropped = sum(e.transport.counters["dropped"] for e in exporters)
    caches = [c for eng in fm.all_engines() for c in eng.caches.values()]
    pkts = sum(c.counters["packets"] for c in caches)
    for s in socks:
        s.close()
    return {"frames": n, "seconds": dt, "cpu": cpu, "records": records, "datagrams": sent, "dropped": dropped,
            "flushed": flushed, "cache_packets": pkts, "batch_size": int(app.setting("batch-size"))}


def group_of(filename: str, funcname: str) -> str | None:
    """Profile area of a function; None = charge its own time to its callers."""
    base = os.path.basename(filename)
    parts = filename.replace("\\", "/").split("/")
    if base == "pcapfile.py":
        return "read"
    if base == "batch.py":
        return "read" if funcname in ("__init__", "_column") else "batch select"
    if base.startswith("decode"):
        return "decode"
    if base.startswith("firewall"):
        return "filter"
    if base == "sampling.py":
        return "sampler"
    if base == "flowcache.py":
        if funcname == "update":
            return "flowcache update"
        if funcname in ("expire", "flush", "_evict"):
            return "expiry/flush"
        return None
    if "encoders" in parts or base == "export.py":
        return "encode"
    if "transports" in parts:
        return "transport"
    if base in ("engine.py", "routes.py", "app.py", "pluginmanager.py", "stats.py") or \
            (base == "__init__.py" and "flow_monitoring" in parts):
        return "engine/app"
    if base == os.path.basename(__file__):
        return "harness"
    return None


def profile_groups(stats: pstats.Stats, group=group_of) -> tuple[dict[str, float], list]:
    """tottime per group, library/builtin time charged to the flowplane caller edge by edge
    (the bench_pipeline.py method with this bench's groups), and rows (tottime, group, label, calls)."""
    raw = stats.stats  # type: ignore[attr-defined]
    memo: dict = {}

    def shares(func, depth=0) -> dict[str, float]:
        if func in memo:
            return memo[func]
        g = group(func[0], func[2])
        if g is not None:
            memo[func] = {g: 1.0}
            return memo[func]
        memo[func] = {"other": 1.0}  # recursion guard
        callers = raw[func][4] if func in raw else {}
        tot = sum(v[2] for v in callers.values())
        if depth > 30 or not callers or tot <= 0:
            return memo[func]
        out: dict[str, float] = {}
        for caller, edge in callers.items():
            for g2, s in shares(caller, depth + 1).items():
                out[g2] = out.get(g2, 0.0) + edge[2] / tot * s
        memo[func] = out
        return out

    groups: dict[str, float] = {}
    rows = []
    for func, (_cc, nc, tt, _ct, callers) in raw.items():
        g = group(func[0], func[2])
        if g is None and callers:
            split: dict[str, float] = {}
            for caller, edge in callers.items():
                for g2, s in shares(caller).items():
                    split[g2] = split.get(g2, 0.0) + edge[2] * s
            for g2, t in split.items():
                groups[g2] = groups.get(g2, 0.0) + t
            main = max(split.items(), key=lambda kv: kv[1])[0] if split else "other"
        else:
            main = g or "other"
            groups[main] = groups.get(main, 0.0) + tt
        label = f"{func[2]} ({os.path.basename(func[0])}:{func[1]})" if func[0] != "~" else func[2]
        rows.append((tt, main, label, nc))
    rows.sort(reverse=True)
    return groups, rows


def profile_bench(pcap: Path, args, cpu: int, workdir: Path, say, top: int = 30) -> dict:
    sink = UdpSink()
    os.sched_setaffinity(0, {cpu})
    try:
        plains = []
        for bs in dict.fromkeys([args.batch_size, 4096]):  # replay's own batch size (system default), then 4096
            plain = run_inprocess(pcap, 10, sink.port, args.timeout, workdir, batch_size=bs)
            plains.append(plain)
            say(f"  in-process App.process (v10, batch {plain['batch_size']}, no profiler): {plain['seconds']:.2f} s "
                "wall "
                f"{plain['cpu']:.2f} s CPU = {plain['frames'] / plain['seconds'] / 1e3:,.0f} kpps; "
                f"{plain['records']:,} records in {plain['datagrams']:,} datagrams", flush=True)
        prof = cProfile.Profile()
        r = run_inprocess(pcap, 10, sink.port, args.timeout, workdir, batch_size=args.batch_size, profile=prof)
    finally:
        keep_off(cpu)
        sink.settle()
        sink.close()
    groups, rows = profile_groups(pstats.Stats(prof))
    total = sum(groups.values()) or 1.0
    say(f"\n## profile: in-process replay v10 (App.process + shutdown flush), batch {r['batch_size']}: "
        f"{r['frames']:,} frames, {r['seconds']:.2f} s under cProfile")
    say(f"{'area':<18}{'tottime s':>10}{'share':>8}{'ns/pkt':>9}")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        say(f"{g:<18}{t:>10.3f}{t / total:>8.1%}{t / r['frames'] * 1e9:>9.0f}")
    say(f"\ntop {top} functions by tottime (numpy/builtins charged to the area of their main caller)")
    say(f"{'tottime s':>10}{'share':>8}{'calls':>10}  {'area':<17} function")
    for tt, g, label, nc in rows[:top]:
        say(f"{tt:>10.3f}{tt / total:>8.1%}{nc:>10}  {g:<17} {label}")
    return {"plain": plains, "profiled": r, "groups": groups, "top": rows[:top]}


# ---------------------------------------------------------------------------------------
# driver and table
# ---------------------------------------------------------------------------------------
def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def summarise(rows: dict, frames: int) -> dict:
    out = {}
    for (tool, v), runs in rows.items():
        walls = [r.wall for r in runs]
        cpus = [r.cpu for r in runs]
        out[(tool, v)] = {"median_wall": statistics.median(walls), "best_wall": min(walls),
                          "median_cpu": statistics.median(cpus), "pps": frames / statistics.median(walls),
                          "best_pps": frames / min(walls), "pkts_per_cpu_s": frames / statistics.median(cpus),
                          "datagrams": runs[-1].datagrams, "flows": runs[-1].flows_reported,
                          "maxrss_mb": max(r.maxrss_kb for r in runs) / 1024, "walls": walls, "cpus": cpus}
    return out


def table(res: dict | None, frames: int, mem: dict | None, say) -> None:
    if res and res["rows"]:
        export_table(res, frames, say)
    if mem:
        memory_table(mem, say)


def export_table(res: dict, frames: int, say) -> None:
    s = summarise(res["rows"], frames)
    say(f"\n## export throughput on one core, {frames:,} frames, median of {len(next(iter(res['rows'].values())))} "
        "runs "
        f"(ratio = ours / softflowd; per CPU-s = frames / (user+sys))")
    hdr = (f"| {'tool':<9} | {'ver':>3} | {'wall s':>6} | {'CPU s':>6} | {'pkts/s':>10} | {'pkts/CPU-s':>10} | "
           f"{'datagrams':>9} | {'flows':>9} | {'peak RSS MB':>11} | {'ratio pps (wall)':>16} | "
           f"{'ratio pkts/CPU-s':>16} |")
    say(hdr)
    say("|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|")
    for v in res["versions"]:
        peer = s.get(("softflowd", v))
        for tool in res["tools"]:
            d = s[(tool, v)]
            rw = f"{d['pps'] / peer['pps']:.3f}" if peer else "-"
            rc = f"{d['pkts_per_cpu_s'] / peer['pkts_per_cpu_s']:.3f}" if peer else "-"
            say(f"| {tool:<9} | {v:>3} | {d['median_wall']:>6.2f} | {d['median_cpu']:>6.2f} | {d['pps']:>10,.0f} | "
                f"{d['pkts_per_cpu_s']:>10,.0f} | {d['datagrams']:>9,} | "
                f"{d['flows'] if d['flows'] is not None else '-':>9} | "
                f"{d['maxrss_mb']:>11.0f} | {rw:>16} | {rc:>16} |")


def memory_table(mem: dict, say) -> None:
    if mem:
        say(f"\n## memory at {mem['flows']:,} concurrent flows (bytes per flow)")
        fc = mem.get("flowcache", {})
        say(f"| {'what':<66} | {'B/flow':>7} |")
        say(f"|{'-' * 68}|{'-' * 9}|")
        if fc:
            say(f"| {'flowplane FlowCache.memory_bytes() / flows':<66} | {fc['memory_bytes_per_flow']:>7.0f} |")
            say(f"| {'flowplane FlowCache tracemalloc delta / flows':<66} | {fc['tracemalloc_per_flow']:>7.0f} |")
            say(f"| {'flowplane FlowCache tracemalloc peak while filling / flows':<66} | "
                f"{fc['tracemalloc_peak_per_flow']:>7.0f} |")
            say(f"| {'flowplane FlowCache RSS delta / flows':<66} | {fc['rss_delta_per_flow']:>7.0f} |")
        if "flowplane_replay" in mem:
            say(f"| {'flowplane replay -v 9 peak RSS delta (N vs 1k flows) / flows':<66} | "
                f"{mem['flowplane_replay']['per_flow']:>7.0f} |")
        if "softflowd" in mem:
            say(f"| {'softflowd -v 9 -m 2000000 peak RSS delta (N vs 1k flows) / flows':<66} | "
                f"{mem['softflowd']['per_flow']:>7.0f} |")


def bench(args) -> dict:
    say = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **{"flush": True, **k}))
    cpu = choose_cpu(args.cpu)
    keep_off(cpu)
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"cpu": cpu, "loadavg": _loadavg(), "failures": []}
    workdir = Path(tempfile.mkdtemp(prefix="fp-export-bench-"))
    try:
        need_pcap = "export" not in skip or args.profile
        if need_pcap:
            if args.pcap:
                pcap, truth = Path(args.pcap), json.loads(Path(args.pcap + ".truth.json").read_text())
            else:
                pcap, truth, _ = ensure_pcap(args.packets, seed=args.seed, quiet=args.quiet)
            warm(pcap)
            out["pcap"], out["frames"] = str(pcap), truth["frames"]
            say(f"# {pcap.name}: {truth['frames']:,} frames, {truth['ip_packets']:,} IP packets, "
                f"{truth['unidirectional_5tuple_keys']:,} flow keys; measured processes pinned to CPU {cpu}; "
                f"timeouts {args.timeout} s; python {sys.version.split()[0]}; loadavg {out['loadavg']}; "
                f"{_kernels()}")
        if "export" not in skip:
            res = export_bench(pcap, truth, args, cpu, workdir, say)
            out["export"] = res
            out["failures"] += res["failures"]
        if "memory" not in skip:
            say(f"# memory: {args.mem_flows:,} distinct UDP flows, one packet each")
            out["memory"] = memory_bench(args, cpu, workdir, say)
        if args.profile:
            out["profile"] = profile_bench(pcap, args, cpu, workdir, say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out["loadavg"] = f"{out['loadavg']} -> {_loadavg()}"
    table(out.get("export"), out.get("frames", 0), out.get("memory"), say)
    say(f"loadavg {out['loadavg']}")
    if out["failures"]:
        say("FAILURES:\n  " + "\n  ".join(out["failures"]))
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_200_000, help="IP packets in the generated pcap (default 1200000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--pcap", help="use this pcap (with PCAP.truth.json) instead of the generated one")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--versions", default="10,9,5")
    ap.add_argument("--cpu", type=int, default=None, help="CPU the measured processes run on (default: the last)")
    ap.add_argument("--timeout", type=int, default=1800, help="active/inactive/TCP-end timeouts, both tools (s; ours "
                                                              "allows <= 1800)")
    ap.add_argument("--mem-flows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=None, help="in-process/profile batch size (default: replay's)")
    ap.add_argument("--check", dest="check", action="store_true", default=True,
                    help="nfcapd totals check, one untimed pass per tool and version (default on)")
    ap.add_argument("--no-check", dest="check", action="store_false")
    ap.add_argument("--skip", default="", help="comma list of: export, memory")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = bench(args)
    if args.json:
        def conv(o):
            if isinstance(o, dict):
                return {(f"{k[0]} v{k[1]}" if isinstance(k, tuple) else k): conv(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [conv(x) for x in o]
            if isinstance(o, Run):
                return conv(o.__dict__)
            return o
        Path(args.json).write_text(json.dumps(conv(out), indent=1, default=str))
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

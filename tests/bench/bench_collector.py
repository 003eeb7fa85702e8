"""Collector ingest without loss: flowplane (1 and 2 SO_REUSEPORT workers) side by side with nfcapd.

::

    python tests/bench/bench_collector.py [--formats 5,9,10] [--rates 5000,10000,20000,40000,60000,80000]
        [--duration 5] [--streams 8] [--fp-output none|jsonl|msgpack] [--workers 1,2] [--no-nfcapd]
        [--no-netns] [--decode-only-records 200000] [--profile] [--json OUT]

What it does, per format (NetFlow v5, v9, IPFIX):

1. **Datagrams, built once.**  ``--streams`` exporters (source addresses
   127.0.0.2, 127.0.0.3, ...), each with its own flowplane encoder (the
   shipped v5 / v9 / IPFIX encoders, IPv4 records, 1500-byte MTU), encode
   random flow records; each stream's datagrams start with its templates.
   The records per datagram are counted by decoding each stream once, in
   order (v5: the header count); nfcapd's count at the lowest rate checks
   that oracle independently.
2. **A separate sender process** (this file, ``--_send``) binds one socket
   per stream and sends the pool round-robin over the streams, paced at R
   datagrams per second for ``--duration`` seconds (a burst every 0.5 ms),
   looping over the pool; it reports the datagrams and records it sent.
3. **Receivers**, started fresh for every rate, on the same port in turn:
   ``flowplane collect`` (one process; then two processes sharing the port
   with ``SO_REUSEPORT``: the kernel spreads the streams by 4-tuple hash)
   and ``nfcapd -B`` (REFERENCE-flow.md 4d).  Both ask for the same receive
   buffer (``--rcvbuf``, 4 MiB: the kernel doubles it to 8 MiB).  After the
   sender ends, a quiet second, then SIGTERM; flowplane's records come from
   its summary (records written to its file when ``--fp-output`` is a file,
   else records decoded), nfcapd's from ``nfdump -R DIR -I`` ("Flows:").
4. **Loss**: offered records - received records, and the ``Udp
   RcvbufErrors`` delta of the namespace (kernel drops).  Everything runs in
   a network namespace of its own (``ip netns add``; loopback only, deleted
   at the end), so nobody else's traffic moves that counter.  ``--no-netns``
   runs on the host's loopback instead.

Then a table: format, rate offered (datagrams/s and records/s), received
by flowplane with 1 worker, with 2 workers, by nfcapd, lossless yes/no for
each, and per format the highest lossless records/s of each receiver and
the ratio flowplane / nfcapd; and the receivers' CPU (user+sys from
``/proc/PID/stat`` once bound and again just before SIGTERM: start-up is not
counted) per million records, which moves far less than loss with the load
of other processes on the box.  A receiver that lost at two rates in a row
is not run at higher rates.

**Decode only** (no sockets): ``Collector.handle`` over the same pools in
batches of 256 datagrams, records per CPU-second on one core.
``--profile`` runs that under cProfile and prints the top functions.

Wall-clock figures from a shared 2-vCPU VM are noisy: the sender, the
receivers and everyone else share the cores (the load average is printed).
Benchmarks print figures, they never fail on them; a count that does not
add up (a receiver that got *more* records than were offered) is flagged.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pickle
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLOWPLANE = [sys.executable, "-m", "flowplane"]
IP = shutil.which("ip") or "/usr/sbin/ip"
T0 = 1_700_000_000_000_000_000
MAPPED = 0xFFFF_0000_0000
DEFAULT_RATES = (5_000, 10_000, 20_000, 40_000, 60_000, 80_000)
QUIET_S = 1.0


# ---------------------------------------------------------------------------
# datagrams


def flow_records(n: int, seed: int):
    """*n* random IPv4 flow records (FlowRecords) an exporter could send."""
    from flowplane.flows import FLOW_DTYPE, FlowRecords

    rng = np.random.default_rng(seed)
    boot = T0 - 7200 * 10**9
    d = np.zeros(n, dtype=FLOW_DTYPE)
    d["af"] = 4
    for p in ("src", "dst", "nexthop"):
        d[p + "_lo"] = np.uint64(MAPPED) | rng.integers(1, 2**32, n, dtype=np.uint64)
    d["proto"] = rng.choice([6, 17], n)
    d["sport"], d["dport"] = rng.integers(1, 65536, n), rng.integers(1, 65536, n)
    d["packets"] = rng.integers(1, 10**6, n)
    d["bytes"] = d["packets"] * rng.integers(40, 1500, n).astype(np.uint64)
    d["first_ns"] = boot + rng.integers(0, 3600 * 10**9, n) // 10**6 * 10**6
    d["last_ns"] = d["first_ns"] + rng.integers(0, 300 * 10**9, n) // 10**6 * 10**6
    d["in_if"], d["out_if"] = rng.integers(1, 60000, n), rng.integers(1, 60000, n)
    d["src_mask"], d["dst_mask"] = rng.integers(0, 33, n), rng.integers(0, 33, n)
    d["src_as"], d["dst_as"] = rng.integers(1, 60000, n), rng.integers(1, 60000, n)
    d["tcp_flags"] = np.where(d["proto"] == 6, rng.integers(1, 64, n), 0)
    d["tos"] = rng.integers(0, 256, n)
    return FlowRecords(d, boot_ns=boot)


@dataclass
class Pool:
    """Pre-built datagrams of one format: per stream, in send order, with their record counts."""

    version: int
    streams: list[list[bytes]]
    counts: list[list[int]]

    @property
    def datagrams(self) -> int:
        return sum(len(s) for s in self.streams)

    @property
    def records(self) -> int:
        return sum(sum(c) for c in self.counts)


def build_pool(version: int, streams: int, records_per_stream: int, seed: int = 1) -> Pool:
    from flowplane.export import EncoderOptions
    from flowplane.plugins.collector.decoder import Decoder
    from flowplane.plugins.encoders import ipfix, netflow5, netflow9

    mod = {5: netflow5, 9: netflow9, 10: ipfix}[version]
    out, counts = [], []
    for k in range(streams):
        enc = mod.factory(EncoderOptions(version=version, observation_domain_id=k + 1))
        dgrams = enc.encode(flow_records(records_per_stream, seed + 97 * k + version), T0 + 4000 * 10**9)
        dec = Decoder()
        per = []
        for d in dgrams:  # the oracle: records each datagram carries, decoded in order
            dec.feed(d, "192.0.2.1", T0)
            per.append(sum(len(f) for f in dec.flush()))
        assert not dec.counters.drops, dict(dec.counters.drops)
        out.append(dgrams)
        counts.append(per)
    return Pool(version, out, counts)


# ---------------------------------------------------------------------------
# the sender process


def send_main(argv: list[str]) -> int:
    """``--_send POOL PORT RATE DURATION``: send the pool paced at RATE datagrams/s; JSON totals on stdout."""
    pool_path, port, rate, duration = argv[0], int(argv[1]), float(argv[2]), float(argv[3])
    with open(pool_path, "rb") as fh:
        pool = Pool(*pickle.load(fh))
    socks = []
    for k in range(len(pool.streams)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{k + 2}", 0))
        socks.append(s)
    # round-robin over the streams: one flat send order, each stream's datagrams in order
    order: list[tuple[socket.socket, bytes, int]] = []
    longest = max(len(x) for x in pool.streams)
    for i in range(longest):
        for k, st in enumerate(pool.streams):
            if i < len(st):
                order.append((socks[k], st[i], pool.counts[k][i]))
    total = int(rate * duration)
    dest = ("127.0.0.1", port)
    n = len(order)
    sent = records = errors = 0
    t0 = time.perf_counter()
    i = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            s, d, c = order[i]
            try:
                s.sendto(d, dest)
                records += c
            except OSError:
                errors += 1
            sent += 1
            i += 1
            if i == n:
                i = 0
        if sent < total:
            time.sleep(0.0005)
    wall = time.perf_counter() - t0
    print(json.dumps({"datagrams": sent, "records": records, "errors": errors, "wall": wall}), flush=True)
    return 0


# ---------------------------------------------------------------------------
# the namespace and the receivers


class Netns:
    """A network namespace of its own (lo up), or the host when *name* is None."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        if name:
            subprocess.run([IP, "netns", "add", name], check=True)
            subprocess.run([IP, "-n", name, "link", "set", "lo", "up"], check=True)

    def argv(self, argv: list[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *argv] if self.name else list(argv)

    def rcvbuf_errors(self) -> int:
        text = subprocess.run(self.argv(["cat", "/proc/net/snmp"]), capture_output=True, text=True).stdout
        lines = [x.split() for x in text.splitlines() if x.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])

    def free_port(self) -> int:
        code = "import socket;s=socket.socket(2,2);s.bind(('127.0.0.1',0));print(s.getsockname()[1])"
        return int(subprocess.run(self.argv([sys.executable, "-c", code]), capture_output=True, text=True,
                                  check=True).stdout)

    def close(self) -> None:
        if self.name:
            subprocess.run([IP, "netns", "del", self.name], check=False)


def cpu_seconds(pid: int) -> float:
    """user+sys CPU of a process (all its threads) so far."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


def _wait_line(proc: subprocess.Popen, pattern: str, timeout: float = 30.0) -> None:
    """Read *proc*'s stderr until a line matches (flowplane collect prints 'listening on ...')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"receiver exited early: {proc.returncode}")
        if re.search(pattern, line):
            return
    raise RuntimeError("receiver did not start in time")


SUMMARY_RE = re.compile(r"(\d+) datagrams, (\d+) flow records")
WROTE_RE = re.compile(r"wrote (\d+) flows to")
KDROP_RE = re.compile(r"kernel drops: (\d+)")


class FlowplaneReceiver:
    """``flowplane collect`` x *workers* on one port (SO_REUSEPORT)."""

    def __init__(self, ns: Netns, port: int, workers: int, output: str, workdir: Path, rcvbuf: int) -> None:
        self.ns, self.port, self.workers, self.output, self.workdir = ns, port, workers, output, workdir
        self.rcvbuf = rcvbuf
        self.procs: list[subprocess.Popen] = []

    @property
    def name(self) -> str:
        return f"flowplane x{self.workers}"

    def start(self) -> None:
        for w in range(self.workers):
            cmd = FLOWPLANE + ["collect", "--listen", f"udp:127.0.0.1:{self.port}",
                               "--receive-buffer", str(self.rcvbuf)]
            if self.output != "none":
                path = self.workdir / f"fp{self.port}-{w}.{self.output}"
                cmd += ["--output", f"{self.output}:{path}"]
            p = subprocess.Popen(self.ns.argv(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=str(REPO))
            self.procs.append(p)
            _wait_line(p, r"listening on udp:")
        time.sleep(0.2)
        self.cpu0 = sum(cpu_seconds(p.pid) for p in self.procs)  # start-up (imports) is not ingest

    def stop(self) -> dict:
        got = {"records": 0, "datagrams": 0, "kernel_drops": 0, "per_worker": [],
               "cpu_s": sum(cpu_seconds(p.pid) for p in self.procs) - self.cpu0}  # before the shutdown work
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            out, err = p.communicate(timeout=60)
            m = SUMMARY_RE.search(out)
            if not m:
                raise RuntimeError(f"no summary from flowplane collect: {out!r} {err[-2000:]!r}")
            w = WROTE_RE.search(out)
            recs = int(w.group(1)) if w else int(m.group(2))
            k = KDROP_RE.search(out)
            got["records"] += recs
            got["datagrams"] += int(m.group(1))
            got["kernel_drops"] += int(k.group(1)) if k else 0
            got["per_worker"].append(recs)
        for f in self.workdir.glob(f"fp{self.port}-*"):
            f.unlink()
        return got


class NfcapdReceiver:
    name = "nfcapd"

    def __init__(self, ns: Netns, port: int, workdir: Path, rcvbuf: int) -> None:
        self.ns, self.port, self.rcvbuf = ns, port, rcvbuf
        self.dir = workdir / f"nfc{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.proc = subprocess.Popen(self.ns.argv(["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w",
                                                   str(self.dir), "-t", "3600", "-B", str(self.rcvbuf)]),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # nfcapd prints nothing when bound; REFERENCE-flow.md waits too
        self.cpu0 = cpu_seconds(self.proc.pid)

    def stop(self) -> dict:
        assert self.proc is not None
        cpu = cpu_seconds(self.proc.pid) - self.cpu0
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)
        r = subprocess.run(["nfdump", "-R", str(self.dir), "-I"], capture_output=True, text=True, timeout=120)
        m = re.search(r"^Flows:\s+(\d+)", r.stdout, re.M)
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"records": int(m.group(1)) if m else 0, "cpu_s": cpu}


def run_point(ns: Netns, receiver, pool_path: Path, port: int, rate: float, duration: float) -> dict:
    """One receiver, one rate: start, send, settle, stop; offered, received, kernel drops."""
    receiver.start()
    before = ns.rcvbuf_errors()
    try:
        r = subprocess.run(ns.argv([sys.executable, str(Path(__file__).resolve()), "--_send", str(pool_path),
                                    str(port), str(rate), str(duration)]),
                           capture_output=True, text=True, timeout=duration * 4 + 60)
        sent = json.loads(r.stdout.strip().splitlines()[-1])
        time.sleep(QUIET_S)
    finally:
        got = receiver.stop()
    drops = ns.rcvbuf_errors() - before
    return {"receiver": receiver.name, "rate": rate, "offered_datagrams": sent["datagrams"],
            "offered_records": sent["records"], "send_wall": round(sent["wall"], 3),
            "received": got["records"], "kernel_drops": drops, "cpu_s": round(got["cpu_s"], 2),
            "lossless": got["records"] == sent["records"]
            and drops == 0, "over": got["records"] > sent["records"],
            **({"per_worker": got["per_worker"]} if "per_worker" in got else {})}


# ---------------------------------------------------------------------------
# decode only


def decode_only(pool: Pool, repeat: int = 3, profile: bool = False) -> dict:
    """Collector.handle over the pool in batches of 256 (no sockets): records per CPU-second."""
    from flowplane.plugins.collector.collector import Collector
    from flowplane.plugins.collector.config import CollectorConfig, Listen

    c = Collector(CollectorConfig(listen=[Listen("127.0.0.1", 0)]))
    batches = []
    for k, st in enumerate(pool.streams):
        addr = f"127.0.0.{k + 2}"
        items = [(d, addr) for d in st]
        batches += [items[i:i + 256] for i in range(0, len(items), 256)]
    for b in batches:  # templates learnt; warm
        c.handle(b, now_ns=T0)
    prof = cProfile.Profile() if profile else None
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    for _ in range(repeat):
        for b in batches:
            c.handle(b, now_ns=T0)
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    recs = pool.records * repeat
    out = {"records": recs, "cpu_s": round(cpu, 3), "records_per_cpu_s": round(recs / max(cpu, 1e-9)),
           "datagrams_per_cpu_s": round(pool.datagrams * repeat / max(cpu, 1e-9)), "wall_s": round(wall, 3)}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
        out["profile"] = s.getvalue()
    return out


# ---------------------------------------------------------------------------
# driver


@dataclass
class Results:
    points: list[dict] = field(default_factory=list)
    decode: dict = field(default_factory=dict)
    pools: dict = field(default_factory=dict)


def max_lossless(points: list[dict], receiver: str) -> float:
    """Highest offered records/s a receiver took without loss (0 if none)."""
    best = 0.0
    for p in points:
        if p["receiver"] == receiver and p["lossless"]:
            best = max(best, p["offered_records"] / max(p["send_wall"], p["duration"]))
    return best


def bench(args, say=print) -> Results:
    res = Results()
    formats = [int(x) for x in args.formats.split(",")]
    rates = [float(x) for x in args.rates.split(",")]
    workers = [int(x) for x in args.workers.split(",")] if args.workers else []
    use_nfcapd = not args.no_nfcapd and shutil.which("nfcapd") and shutil.which("nfdump")
    if not args.no_nfcapd and not use_nfcapd:
        say("nfcapd/nfdump not installed: apt-get install -y nfdump (nfcapd column left out)")
    ns_name = None
    if not args.no_netns:
        if os.geteuid() != 0:
            say("not root: running on the host's loopback (--no-netns)")
        else:
            ns_name = f"fpbc{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench_collector-"))
    ns = Netns(ns_name)
    try:
        say(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; namespace {ns_name or 'host'}")
        for v in formats:
            pool = build_pool(v, args.streams, args.records_per_stream)
            pool_path = workdir / f"pool{v}.pickle"
            pool_path.write_bytes(pickle.dumps((pool.version, pool.streams, pool.counts)))
            res.pools[v] = {"streams": args.streams, "datagrams": pool.datagrams, "records": pool.records,
                            "records_per_datagram": round(pool.records / pool.datagrams, 2)}
            say(f"format {v}: {pool.datagrams} datagrams, {pool.records} records "
                f"({pool.records / pool.datagrams:.1f} per datagram) in {args.streams} streams")
            if args.decode_only:
                res.decode[v] = decode_only(pool, profile=args.profile)
                say(f"  decode only: {res.decode[v]['records_per_cpu_s']:,} records per CPU-second "
                    f"({res.decode[v]['datagrams_per_cpu_s']:,} datagrams)")
                if args.profile:
                    say(res.decode[v]["profile"])
            lossy: dict[str, int] = {}
            for rate in rates:
                recv = [FlowplaneReceiver(ns, 0, w, args.fp_output, workdir, args.rcvbuf) for w in workers]
                if use_nfcapd:
                    recv.append(NfcapdReceiver(ns, 0, workdir, args.rcvbuf))
                for r in recv:
                    if lossy.get(r.name, 0) >= 2:
                        continue
                    port = ns.free_port()
                    r.port = port
                    if isinstance(r, NfcapdReceiver):
                        r.dir = workdir / f"nfc{port}"
                    p = run_point(ns, r, pool_path, port, rate, args.duration)
                    p.update(format=v, duration=args.duration)
                    res.points.append(p)
                    lossy[r.name] = 0 if p["lossless"] else lossy.get(r.name, 0) + 1
                    say(f"  {v:>2} {int(rate):>7} dg/s ({p['offered_datagrams'] / p['send_wall']:,.0f} sent) "
                        f"{r.name:<14} offered {p['offered_records']:>10,} "
                        f"received {p['received']:>10,} kernel drops {p['kernel_drops']:>7,} "
                        f"CPU {p['cpu_s']:.2f} s {'lossless' if p['lossless'] else 'LOSS'}"
                        f"{' OVER-COUNT' if p['over'] else ''}"
                        + (f" per worker {p['per_worker']}" if len(p.get('per_worker', [])) > 1 else ""))
    finally:
        ns.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def table(res: Results, args, say=print) -> None:
    workers = [int(x) for x in args.workers.split(",")] if args.workers else []
    names = [f"flowplane x{w}" for w in workers] + (["nfcapd"] if any(p["receiver"] == "nfcapd"
                                                                      for p in res.points) else [])
    say("")
    say(f"{'format':<7}{'dg/s':>8}{'rec/s offered':>15}" + "".join(f"{n:>26}" for n in names))
    by = {}
    for p in res.points:
        by[(p["format"], p["rate"], p["receiver"])] = p
    for v in sorted({p["format"] for p in res.points}):
        for rate in sorted({p["rate"] for p in res.points if p["format"] == v}):
            line = None
            cells = []
            for n in names:
                p = by.get((v, rate, n))
                if p is None:
                    cells.append(f"{'-':>26}")
                    continue
                line = line or p
                cells.append(f"{p['received']:>14,} {'yes' if p['lossless'] else 'no':>4} "
                             f"{p['received'] / max(1, p['offered_records']):>6.1%}")
            if line is None:
                continue
            say(f"{v:<7}{int(rate):>8}{line['offered_records'] / max(line['send_wall'], line['duration']):>15,.0f}"
                + "".join(cells))
    say("")
    say("highest lossless records/s (offered records / sending time):")
    for v in sorted({p["format"] for p in res.points}):
        pts = [p for p in res.points if p["format"] == v]
        best = {n: max_lossless(pts, n) for n in names}
        ref = best.get("nfcapd")
        parts = [f"{n} {b:,.0f}" for n, b in best.items()]
        ratios = [f"{n}/nfcapd {best[n] / ref:.2f}" for n in names if n != "nfcapd" and ref]
        say(f"  v{v}: " + ", ".join(parts) + ("; " + ", ".join(ratios) if ratios else ""))
    say("receiver CPU (user+sys, all processes) per million records received, median of the lossless rates:")
    for v in sorted({p["format"] for p in res.points}):
        parts = []
        for n in names:
            xs = sorted(p["cpu_s"] / p["received"] * 1e6 for p in res.points
                        if p["format"] == v and p["receiver"] == n and p["lossless"] and p["received"])
            if xs:
                parts.append(f"{n} {xs[len(xs) // 2]:.2f} s")
        say(f"  v{v}: " + ", ".join(parts))
    if res.decode:
        say("decode only (Collector.handle, batches of 256, one core):")
        for v, d in sorted(res.decode.items()):
            say(f"  v{v}: {d['records_per_cpu_s']:,} records/CPU-s, {d['datagrams_per_cpu_s']:,} datagrams/CPU-s")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default="5,9,10")
    ap.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES), help="datagrams per second")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of sending per rate")
    ap.add_argument("--streams", type=int, default=8, help="exporters (source addresses 127.0.0.2...)")
    ap.add_argument("--records-per-stream", type=int, default=20000, help="records each stream's pool encodes")
    ap.add_argument("--workers", default="1,2", help="flowplane collect processes sharing the port, per run")
    ap.add_argument("--fp-output", default="flows", choices=("none", "flows", "jsonl", "msgpack"),
                    help="what flowplane stores (flows: binary blocks, the peer of nfcapd's files; none: decode "
                         "and count)")
    ap.add_argument("--rcvbuf", type=int, default=4 * 1024 * 1024, help="receive buffer asked by both")
    ap.add_argument("--no-nfcapd", action="store_true")
    ap.add_argument("--no-netns", action="store_true", help="host loopback instead of a namespace of its own")
    ap.add_argument("--decode-only", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile", action="store_true", help="cProfile the decode-only pass")
    ap.add_argument("--json", default=None, help="write the results here")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_send"]:
        return send_main(argv[1:])
    args = parse_args(argv)
    res = bench(args)
    table(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"points": res.points, "decode": {k: {x: y for x, y in d.items()
                                                                                   if x != "profile"}
                                                                               for k, d in res.decode.items()},
                                               "pools": res.pools}, indent=1))
    return 1 if any(p["over"] for p in res.points) else 0


if __name__ == "__main__":
    sys.exit(main())

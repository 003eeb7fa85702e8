#!/usr/bin/env python3
"""TWAMP reflectors under load: packets per second and the latency they add, beside twampy.

Usage::

    python tests/bench/bench_twamp.py [--rates 10000,20000,40000,max] [--duration 3] [--padding 27]
        [--targets light,session,twampy] [--reflector-cpu N] [--sender-cpu N] [--json OUT]

Targets, each a separate process on loopback (127.0.0.1), pinned to ``--reflector-cpu``:

- ``light``: ``flowplane twamp server --light --light-mode per-sender`` (the TWAMP Light reflector);
- ``session``: ``flowplane twamp server`` (full TWAMP); the bench opens an unauthenticated control
  connection, requests one session for its sender port, Start-Sessions, and Stop-Sessions at the end;
- ``twampy``: ``twampy responder`` (nokia/twampy, Light) run from a fetched snapshot copied to a
  temporary directory at run time (:func:`twampy_source`; skipped, with a note, when there is none).

The sender is a forked child pinned to ``--sender-cpu`` that sends 14 + ``--padding`` byte test
packets paced by absolute deadlines (``max``: as fast as it can); the parent receives the replies on
the same socket with kernel receive timestamps (T4) and parses them afterwards.  Per target and
offered rate the table gives: achieved send rate, replies per second, loss, the round trip as the
sender sees it (T4 kernel - T1 user space, median / p99), the reflector's own processing time
T3 - T2 from the timestamps in its replies (median / p99; twampy writes the same user-space time
into both, so it reports 0), and the reflector's CPU time per reflected packet (utime + stime from
``/proc/PID/stat``; far less sensitive to other load on the machine than the wall-clock figures).

Goal (issue 5): under 50 µs median added time (T3 - T2) at 10k packets/s.
Not a pass/fail test; ``test_bench_twamp_smoke.py`` runs it tiny and checks figures come out.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flowplane.plugins.twamp import wire

HERE = Path(__file__).resolve().parent
FLOWPLANE = shutil.which("flowplane", path=str(Path(sys.executable).parent)) or "flowplane"
SO_TIMESTAMPNS = 35
CMSG = socket.CMSG_SPACE(16) + 64
NTP_UNIX = wire.NTP_UNIX_OFFSET
TWAMPY_ENV = "FLOWPLANE_TWAMPY"
MIRROR_GLOB = "/work/.mirror/*twampy*/repo"


# -- twampy from a fetched snapshot ------------------------------------------------------------------


def _git_show(git_dir: str, path: str) -> bytes | None:
    r = subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{path}"], capture_output=True, timeout=30)
    return r.stdout if r.returncode == 0 else None


def twampy_snapshot() -> str | None:
    """Where a twampy snapshot is: ``$FLOWPLANE_TWAMPY`` (a checkout, a bare git directory, or the
    ``twampy.py`` file) or a fetched mirror under ``/work/.mirror``; None when there is none."""
    env = os.environ.get(TWAMPY_ENV)
    candidates = [env] if env else []
    candidates += sorted(glob.glob(MIRROR_GLOB))
    for c in candidates:
        if c and os.path.exists(c):
            return c
    return None


@dataclass(frozen=True)
class Twampy:
    """How to run the temporary copy: ``argv`` (then the twampy subcommand) with ``cwd``."""

    argv: list
    cwd: str

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.argv, *args], cwd=self.cwd, **kw)


@contextlib.contextmanager
def twampy_source() -> Iterator[Twampy | None]:
    """twampy (``python -m twampy`` or ``python twampy.py``) from a copy in a temporary directory,
    removed at exit; None when no snapshot is available.  twampy's code is never part of this
    repository: it is copied from the snapshot at run time only, and nothing touches the network."""
    snap = twampy_snapshot()
    if snap is None or shutil.which("git") is None and not os.path.isfile(snap):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="twampy-") as tmp:
        argv = _materialise_twampy(snap, Path(tmp))
        yield Twampy(argv, tmp) if argv else None


def _materialise_twampy(snap: str, tmp: Path) -> list[str] | None:
    if os.path.isfile(snap):  # a twampy.py file
        shutil.copy(snap, tmp / "twampy.py")
        return [sys.executable, str(tmp / "twampy.py")]
    work_tree = Path(snap)
    for pkg in (work_tree / "src" / "twampy", work_tree / "twampy"):
        if (pkg / "__main__.py").is_file():
            shutil.copytree(pkg, tmp / "twampy")
            return [sys.executable, "-m", "twampy"]
    if (work_tree / "twampy.py").is_file():
        shutil.copy(work_tree / "twampy.py", tmp / "twampy.py")
        return [sys.executable, str(tmp / "twampy.py")]
    # a bare git directory (what the fetch tool leaves): the current layout, then the old single file
    main, init = _git_show(snap, "src/twampy/__main__.py"), _git_show(snap, "src/twampy/__init__.py")
    if main and init:
        (tmp / "twampy").mkdir()
        (tmp / "twampy" / "__main__.py").write_bytes(main)
        (tmp / "twampy" / "__init__.py").write_bytes(init)
        return [sys.executable, "-m", "twampy"]
    single = _git_show(snap, "twampy.py")
    if single:
        (tmp / "twampy.py").write_bytes(single)
        return [sys.executable, str(tmp / "twampy.py")]
    return None


# -- targets -----------------------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            raise RuntimeError(f"reflector exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    raise RuntimeError(f"reflector did not print {needle!r}")


@dataclass
class Target:
    name: str
    proc: subprocess.Popen
    port: int
    kind: str  # light | session | twampy
    control: object = None  # the control socket of the session target
    notes: list = field(default_factory=list)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        if self.control is not None:
            with contextlib.suppress(OSError):
                self.control.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.kind == "twampy" else signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate(timeout=10)
            return out or ""
        return ""


def start_light(cpu: int | None) -> Target:
    proc = subprocess.Popen([FLOWPLANE, "twamp", "server", "--light", "--light-mode", "per-sender",
                             "--listen", "127.0.0.1:0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_pin(cpu))
    line = _wait_line(proc, "listening on")
    port = int(line.split("listening on", 1)[1].split()[0].rsplit(":", 1)[1])
    return Target("flowplane light", proc, port, "light")


def start_session_server(cpu: int | None) -> Target:
    proc = subprocess.Popen([FLOWPLANE, "twamp", "server", "--listen", "127.0.0.1:0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_pin(cpu))
    line = _wait_line(proc, "listening on")
    port = int(line.split("listening on", 1)[1].split()[0].rsplit(":", 1)[1])
    return Target("flowplane session", proc, port, "session")


def open_session(target: Target, sender_port: int, padding: int) -> int:
    """TWAMP-Control (unauthenticated) to *target*: one session for our sender port; its UDP port."""
    c = socket.create_connection(("127.0.0.1", target.port), timeout=10)
    target.control = c

    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("the TWAMP server closed the control connection")
            buf += chunk
        return buf

    g = wire.ServerGreeting.unpack(read(wire.GREETING_SIZE))
    if not g.modes & wire.MODE_UNAUTHENTICATED:
        raise RuntimeError("server does not offer unauthenticated mode")
    c.sendall(wire.SetUpResponse(wire.MODE_UNAUTHENTICATED).pack())
    start = wire.ServerStart.unpack(read(wire.SERVER_START_SIZE))
    if start.accept != wire.ACCEPT_OK:
        raise RuntimeError(f"Server-Start accept {start.accept}")
    req = wire.RequestTWSession(sender_port, 0, "127.0.0.1", "127.0.0.1", padding, 0, 2 << 32)
    c.sendall(req.pack())
    acc = wire.AcceptSession.unpack(read(wire.ACCEPT_SESSION_SIZE))
    if acc.accept != wire.ACCEPT_OK:
        raise RuntimeError(f"Accept-Session {acc.accept}")
    c.sendall(wire.StartSessions().pack())
    if wire.StartAck.unpack(read(wire.START_ACK_SIZE)).accept != wire.ACCEPT_OK:
        raise RuntimeError("Start-Sessions refused")
    return acc.port


def close_session(target: Target) -> None:
    if target.control is not None:
        with contextlib.suppress(OSError):
            target.control.sendall(wire.StopSessions(wire.ACCEPT_OK, 1).pack())
            target.control.close()
        target.control = None


def start_twampy(twampy: Twampy, cpu: int | None) -> Target:
    port = free_udp_port()
    proc = twampy.popen(["responder", f"127.0.0.1:{port}", "-q"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, preexec_fn=_pin(cpu))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # it binds then prints nothing with -q: probe until it answers
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(struct.pack(">IQH", 0, wire.now_ntp(), 0x3FFF), ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                if s.recv(2048):
                    return Target("twampy responder", proc, port, "twampy",
                                  notes=["twampy puts one user-space time in both T2 and T3: its T3-T2 is 0"])
        if proc.poll() is not None:
            raise RuntimeError(f"twampy responder exited: {proc.stderr.read()[-2000:]}")
    proc.kill()
    raise RuntimeError("twampy responder did not answer")


# -- the load ----------------------------------------------------------------------------------------


def _timer_slack_1ns() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK


def _sender(sock: socket.socket, rate: float | None, count: int, padding: int, cpu: int | None) -> None:
    """The forked sender: *count* packets to *dest*, paced at *rate* per second (None: flat out)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _timer_slack_1ns()
    pad = bytes(padding)
    head = struct.Struct(">IIIH")
    t0 = time.perf_counter()
    interval = 1.0 / rate if rate else 0.0
    for seq in range(count):
        if interval:
            d = t0 + seq * interval - time.perf_counter()
            if d > 0:
                time.sleep(d)
        t1 = time.time_ns()
        sec, rem = divmod(t1, 1_000_000_000)
        pkt = head.pack(seq, (sec + NTP_UNIX) & 0xFFFFFFFF, (rem << 32) // 1_000_000_000, 0x3FFF) + pad
        for _ in range(100):  # a full send buffer (the parent made the shared socket non-blocking), ENOBUFS
            try:
                sock.send(pkt)
                break
            except OSError:
                time.sleep(0.0001)
    sock.close()
    os._exit(0)


@dataclass
class RunResult:
    target: str
    offered: str
    sent: int
    send_pps: float
    replies: int
    reply_pps: float
    loss_percent: float
    rtt_p50_us: float | None
    rtt_p99_us: float | None
    proc_p50_us: float | None
    proc_p99_us: float | None
    cpu_us_per_packet: float | None
    notes: list = field(default_factory=list)


def run_load(target: Target, rate: float | None, duration: float, padding: int, sender_cpu: int | None,
             count: int | None = None) -> RunResult:
    count = count or int((rate or 50_000) * duration)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    port = target.port
    if target.kind == "session":
        port = open_session(target, sock.getsockname()[1], padding)
    sock.connect(("127.0.0.1", port))
    cpu0 = target.cpu_seconds()
    t_start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _sender(sock, rate, count, padding, sender_cpu)
        finally:
            os._exit(1)
    got: list[tuple[int, bytes]] = []
    sent_done = None
    sock.settimeout(0.5)
    while True:
        try:
            data, anc, _flags, _addr = sock.recvmsg(2048, CMSG)
        except TimeoutError:
            if sent_done is not None:
                break
            if os.waitpid(pid, os.WNOHANG)[0]:
                sent_done = time.perf_counter()
            continue
        except ConnectionRefusedError:
            continue
        t4 = 0
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                s, ns = struct.unpack("qq", value[:16])
                t4 = s * 1_000_000_000 + ns
        got.append((t4 or time.time_ns(), data))
        if sent_done is None and len(got) % 256 == 0 and os.waitpid(pid, os.WNOHANG)[0]:
            sent_done = time.perf_counter()
        if len(got) >= count and sent_done is None:
            os.waitpid(pid, 0)
            sent_done = time.perf_counter()
            break
    if sent_done is None:
        os.waitpid(pid, 0)
        sent_done = time.perf_counter()
    cpu1 = target.cpu_seconds()
    sock.close()
    if target.kind == "session":
        close_session(target)
    send_s = max(sent_done - t_start, 1e-9)
    return summarise(target, rate, count, send_s, got, cpu1 - cpu0)


def summarise(target: Target, rate, count: int, send_s: float, got: list, cpu_s: float) -> RunResult:
    rtt, proc, t4s = [], [], []
    seen = set()
    for t4, data in got:
        try:
            r = wire.unpack_reflector(data)
        except wire.WireError:
            continue
        if r.sender_seq in seen:
            continue
        seen.add(r.sender_seq)
        t1 = wire.ntp_to_ns(r.sender_timestamp, pivot_ns=t4)
        t2 = wire.ntp_to_ns(r.receive_timestamp, pivot_ns=t4)
        t3 = wire.ntp_to_ns(r.timestamp, pivot_ns=t4)
        rtt.append((t4 - t1) / 1e3)
        proc.append((t3 - t2) / 1e3)
        t4s.append(t4)
    n = len(seen)
    span = (max(t4s) - min(t4s)) / 1e9 if len(t4s) > 1 else 0.0

    def pct(v, q):
        return round(float(np.percentile(np.asarray(v), q)), 1) if v else None

    return RunResult(target.name, "max" if not rate else f"{rate:,.0f}", count, round(count / send_s),
                     n, round(n / span) if span else 0, round(100.0 * (count - n) / count, 2),
                     pct(rtt, 50), pct(rtt, 99), pct(proc, 50), pct(proc, 99),
                     round(cpu_s * 1e6 / n, 1) if n else None, list(target.notes))


# -- the report --------------------------------------------------------------------------------------


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def format_table(results: list[RunResult]) -> str:
    head = (f"{'target':<20}{'offered':>9}{'sent/s':>10}{'replies/s':>11}{'loss %':>8}"
            f"{'RTT p50':>11}{'RTT p99':>11}{'T3-T2 p50':>11}{'T3-T2 p99':>11}{'CPU us/pkt':>12}")
    lines = [head, "-" * len(head)]

    def f(v):
        return "-" if v is None else f"{v:,.1f}"

    for r in results:
        lines.append(f"{r.target:<20}{r.offered:>9}{r.send_pps:>10,}{r.reply_pps:>11,}{r.loss_percent:>8.2f}"
                     f"{f(r.rtt_p50_us):>11}{f(r.rtt_p99_us):>11}{f(r.proc_p50_us):>11}{f(r.proc_p99_us):>11}"
                     f"{f(r.cpu_us_per_packet):>12}")
    notes = sorted({n for r in results for n in r.notes})
    lines += [f"note: {n}" for n in notes]
    lines.append("times in µs; RTT = T4 (sender kernel RX) - T1 (sender user space), T3-T2 from the reflector's "
                 "own timestamps")
    return "\n".join(lines)


def run_bench(targets: list[str], rates: list[float | None], duration: float, padding: int,
              reflector_cpu: int | None, sender_cpu: int | None, count: int | None = None,
              log=print) -> dict:
    results: list[RunResult] = []
    skipped: dict[str, str] = {}
    load_before = _loadavg()
    with twampy_source() as twampy_argv:
        for name in targets:
            if name == "twampy" and twampy_argv is None:
                skipped["twampy"] = (f"no twampy snapshot (set ${TWAMPY_ENV} or fetch nokia/twampy into "
                                     f"{MIRROR_GLOB.rsplit('/', 1)[0]})")
                log(f"skipping twampy: {skipped['twampy']}")
                continue
            starter = {"light": lambda: start_light(reflector_cpu),
                       "session": lambda: start_session_server(reflector_cpu),
                       "twampy": lambda: start_twampy(twampy_argv, reflector_cpu)}[name]
            target = starter()
            try:
                for rate in rates:
                    r = run_load(target, rate, duration, padding, sender_cpu, count)
                    results.append(r)
                    log(f"  {r.target} at {r.offered}: {r.replies}/{r.sent} replies, "
                        f"T3-T2 p50 {r.proc_p50_us} µs, RTT p50 {r.rtt_p50_us} µs")
            finally:
                target.stop()
    return {"results": [asdict(r) for r in results], "skipped": skipped,
            "loadavg": f"{load_before} -> {_loadavg()}", "cpus": sorted(os.sched_getaffinity(0)),
            "reflector_cpu": reflector_cpu, "sender_cpu": sender_cpu, "duration_s": duration, "padding": padding,
            "table": format_table(results)}


def parse_rates(text: str) -> list[float | None]:
    return [None if t.strip() == "max" else float(t) for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="10000,20000,40000,max", help="packets/s per run, 'max' = unpaced")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per run (max: 50k packets/s assumed)")
    ap.add_argument("--count", type=int, default=None, help="packets per run (overrides --duration)")
    ap.add_argument("--padding", type=int, default=27, help="sender padding (27: 41-byte packets both ways)")
    ap.add_argument("--targets", default="light,session,twampy")
    cpus = sorted(os.sched_getaffinity(0))
    ap.add_argument("--reflector-cpu", type=int, default=cpus[-1])
    ap.add_argument("--sender-cpu", type=int, default=cpus[0])
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    out = run_bench([t.strip() for t in a.targets.split(",") if t.strip()], parse_rates(a.rates), a.duration,
                    a.padding, a.reflector_cpu, a.sender_cpu, a.count)
    print(out["table"])
    print(f"loadavg {out['loadavg']}; reflector on CPU {a.reflector_cpu}, sender on CPU {a.sender_cpu}")
    for k, v in out["skipped"].items():
        print(f"skipped {k}: {v}")
    if a.json:
        Path(a.json).write_text(json.dumps({k: v for k, v in out.items() if k != "table"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

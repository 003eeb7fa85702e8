#!/usr/bin/env python3
"""RPM probes: probes per second one core sustains with many concurrent tests, and the timestamp error
against ``ping`` / ``fping`` on an idle link.

Usage::

    python tests/bench/bench_rpm.py [--tests 1000] [--interval 1] [--duration 10] [--types udp,icmp]
        [--ping-count 100] [--json OUT]

Load: ``--tests`` udp-ping tests (15 probes each, ``--interval`` seconds apart, test-interval 0) run in this
one process (one trio loop, one core) against ``flowplane rpm server`` in a separate process on loopback; the
offered rate is tests / interval probes per second.  For each type the table gives the offered and achieved
probes per second, loss, the median and p99 RTT seen, and this process's CPU time per probe.  ``icmp`` runs
the same number of icmp-ping tests to 127.0.0.1 (ping sockets where ``net.ipv4.ping_group_range`` allows,
raw sockets otherwise: every raw socket sees every reply, so raw-socket ICMP costs grow with the number of
tests).

Timestamp error: ``ping -c N -i 0.01 127.0.0.1`` (and ``fping``) beside icmp-ping tests of the same number of
probes on the idle loopback; the difference of the averages and minimums is the error of our timestamps
relative to ping's.

Not a pass/fail test; ``test_bench_rpm_smoke.py`` runs it tiny and checks figures come out.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio

from flowplane.plugins.rpm.config import TestConfig
from flowplane.plugins.rpm.engine import TestRunner

FLOWPLANE = shutil.which("flowplane", path=str(Path(sys.executable).parent)) or "flowplane"


def free_port() -> int:
    for _ in range(200):
        port = random.randint(49160, 65535)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([FLOWPLANE, "rpm", "server", "--udp", str(port), "--listen", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        proc.kill()
        raise RuntimeError(f"probe server did not start: {line!r}")
    return proc


def load(kind: str, tests: int, interval: float, duration: float, port: int) -> dict:
    def cfg(i: int) -> TestConfig:
        probe_type = "udp-ping" if kind == "udp" else "icmp-ping"
        return TestConfig("bench", f"t{i}", probe_type, address="127.0.0.1", port=port, probe_count=15,
                          probe_interval=interval, probe_timeout=max(1.0, interval), test_interval=0,
                          history_size=255)

    runners = [TestRunner(cfg(i)) for i in range(tests)]

    async def main() -> tuple[float, float]:
        async with trio.open_nursery() as nursery:
            for i, r in enumerate(runners):  # spread as the service does
                nursery.start_soon(r.run, None, 0, min(1.0, interval) * i / len(runners))
            await trio.sleep(min(1.0, interval))  # every test started
            cpu0, wall0 = time.process_time(), time.monotonic()
            sent0 = sum(r.results.all.sent for r in runners)
            await trio.sleep(duration)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            nursery.cancel_scope.cancel()
        return cpu, wall, sent0

    cpu, wall, sent0 = trio.run(main)
    done = sum(r.results.all.sent for r in runners) - sent0
    answered = sum(r.results.all.received for r in runners)
    finished = sum(r.results.all.sent for r in runners)
    rtts = [e.rtt for r in runners for e in r.results.history if e.rtt is not None]
    rtts.sort()
    return {"type": kind, "tests": tests, "offered_pps": round(tests / interval, 1),
            "achieved_pps": round(done / wall, 1), "probes": finished,
            "loss_percent": round(100.0 * (finished - answered) / finished, 2) if finished else None,
            "rtt_p50_us": rtts[len(rtts) // 2] if rtts else None,
            "rtt_p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None,
            "cpu_us_per_probe": round(cpu * 1e6 / done, 1) if done else None,
            "cpu_percent": round(100.0 * cpu / wall, 1),
            "socket": runners[0].description.get("socket") if kind == "icmp" else "udp"}


def timestamp_error(count: int) -> dict:
    tests = max(1, count // 15)
    runner = TestRunner(TestConfig("bench", "ts", "icmp-ping", address="127.0.0.1", probe_count=15,
                                   probe_interval=0.01, probe_timeout=1, test_interval=0, history_size=255))
    trio.run(runner.run, None, tests)
    rtt = runner.results.all.sets["rtt"]
    ours = {"avg_us": round(rtt.total / rtt.samples, 1), "min_us": rtt.lo, "samples": rtt.samples}
    out = {"flowplane": ours}
    if shutil.which("ping"):
        r = subprocess.run(["ping", "-n", "-q", "-c", str(tests * 15), "-i", "0.01", "127.0.0.1"],
                           capture_output=True, text=True)
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", r.stdout)
        if m:
            out["ping"] = {"avg_us": round(float(m.group(2)) * 1000, 1), "min_us": round(float(m.group(1)) * 1000, 1)}
    if shutil.which("fping"):
        r = subprocess.run(["fping", "-C", str(tests * 15), "-p", "10", "-q", "127.0.0.1"], capture_output=True,
                           text=True)
        values = [float(x) * 1000 for x in r.stderr.split(":", 1)[-1].split() if x != "-"]
        if values:
            out["fping"] = {"avg_us": round(statistics.mean(values), 1), "min_us": round(min(values), 1)}
    for peer in ("ping", "fping"):
        if peer in out:
            out[f"error_vs_{peer}_us"] = {"avg": round(ours["avg_us"] - out[peer]["avg_us"], 1),
                                          "min": round(ours["min_us"] - out[peer]["min_us"], 1)}
    return out


def table(results: list[dict], ts: dict) -> str:
    lines = [f"{'type':<6}{'tests':>7}{'offered/s':>11}{'achieved/s':>12}{'loss %':>8}{'p50 µs':>8}{'p99 µs':>8}"
             f"{'cpu µs/probe':>14}{'cpu %':>7}  socket"]
    for r in results:
        lines.append(f"{r['type']:<6}{r['tests']:>7}{r['offered_pps']:>11}{r['achieved_pps']:>12}"
                     f"{r['loss_percent']!s:>8}{r['rtt_p50_us']!s:>8}{r['rtt_p99_us']!s:>8}"
                     f"{r['cpu_us_per_probe']!s:>14}{r['cpu_percent']:>7}  {r['socket']}")
    lines.append("")
    lines.append("timestamp error on idle loopback (avg / min RTT, µs):")
    for name in ("flowplane", "ping", "fping"):
        if name in ts:
            lines.append(f"  {name:<10} {ts[name]['avg_us']:>8} / {ts[name]['min_us']}")
    for peer in ("ping", "fping"):
        if f"error_vs_{peer}_us" in ts:
            e = ts[f"error_vs_{peer}_us"]
            lines.append(f"  flowplane - {peer}: avg {e['avg']:+} µs, min {e['min']:+} µs")
    return "\n".join(lines)


def run_bench(types, tests: int, interval: float, duration: float, ping_count: int, log=print) -> dict:
    port = free_port()
    server = start_server(port)
    try:
        results = []
        for kind in types:
            log(f"{kind}: {tests} tests, {tests / interval:.0f} probes/s offered, {duration} s ...")
            results.append(load(kind, tests, interval, duration, port))
    finally:
        server.terminate()
        server.wait(timeout=10)
    ts = timestamp_error(ping_count)
    out = {"results": results, "timestamp_error": ts}
    out["table"] = table(results, ts)
    return out


def quiet() -> None:
    """Only warnings and errors from the probes (a completed test is an info event)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def main(argv=None) -> int:
    quiet()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a test's probes")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--types", default="udp,icmp")
    ap.add_argument("--ping-count", type=int, default=150)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    out = run_bench(args.types.split(","), args.tests, args.interval, args.duration, args.ping_count)
    print(out["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

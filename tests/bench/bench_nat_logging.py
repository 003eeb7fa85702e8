"""NAT event logging: sessions created per second through an nft masquerade and events logged, flowplane
beside ulogd2 (NFCT input, LOGEMU output) measured in the same run.

    python tests/bench/bench_nat_logging.py [--sessions 20000] [--rates 5000,20000,0] [--json]

In a client / NAT router / server namespace topology (tests/integration/nat_netns.py) a generator in
the client sends one UDP datagram per new source port (a raw socket: one new NAT session each) at
the offered rate (0: as fast as it can), then ``conntrack -F`` in the router ends them all at once.
Each logger runs alone in the router: flowplane (``services jflow-log``, IPFIX to a counting sink on
the loopback) and, when installed, ulogd2 (``NFCT`` -> ``IP2STR`` -> ``PRINTFLOW`` -> ``LOGEMU`` file).
Printed per rate: sessions offered, creation rate reached, create and delete events logged, events/s
(from the first session to the last event), lost, and flowplane's overruns and resyncs.
Needs root (namespaces), nft and conntrack.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from flowplane.control import request  # noqa: E402

from nat_netns import CLIENT, SERVER, NatTopology, make_nat_topology  # noqa: E402

SINK_PORT = 4739
PLAIN_MASQUERADE = ("flush ruleset\ntable ip fpnat {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
                    '  oifname "r1" masquerade\n }\n}\n')

ULOGD_PLUGINS = "/usr/lib/x86_64-linux-gnu/ulogd"

GENERATOR = r"""
import socket, struct, sys, time
server, n, rate, base = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
dst = (server, 0)
t0 = time.perf_counter()
w0 = time.time()
for i in range(n):
    if rate and i % 64 == 0:
        ahead = i / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
    port = base + i % 60000
    while True:
        try:
            s.sendto(struct.pack("!HHHH", port, 9001, 8, 0), dst)
            break
        except BlockingIOError:
            time.sleep(0.0001)
print(w0, time.time(), flush=True)
"""

SINK = r"""
import select, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 1 << 25)  # SO_RCVBUFFORCE: past rmem_max
s.bind(("127.0.0.1", int(sys.argv[1])))
s.setblocking(False)
print("ready", flush=True)
n = 0
def drain():
    global n
    while True:
        try:
            d = s.recv(65535)
        except BlockingIOError:
            return
        off = 16
        while off + 4 <= len(d):
            sid, ln = struct.unpack_from("!HH", d, off)
            if sid >= 256:
                n += (ln - 4) // 39
            off += max(ln, 4)
while True:
    r = select.select([s, sys.stdin], [], [])[0]
    drain()
    if sys.stdin in r:
        if not sys.stdin.readline():
            break
        print(n, flush=True)
"""


def _wait(pred, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return None


def _settle(count, target: int, idle_s: float = 2.0, timeout: float = 120.0) -> tuple[int, float]:
    """Poll count() until it reaches target or stops growing for idle_s; (count, time of the last growth)."""
    last, last_t = -1, time.time()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = count()
        if v != last:
            last, last_t = v, time.time()
        if v >= target or time.time() - last_t > idle_s:
            break
        time.sleep(0.02)
    return last, last_t


def _generate(t: NatTopology, n: int, rate: float, base: int) -> tuple[float, float]:
    """(wall clock of the first session, seconds the generator took)."""
    out = t.run(t.client, [sys.executable, "-c", GENERATOR, SERVER, n, rate, base], timeout=300).stdout
    w0, w1 = map(float, out.split())
    return w0, w1 - w0


def run_flowplane(t: NatTopology, tmp: Path, n: int, rate: float, base: int) -> dict:
    cfg = tmp / "nat.yaml"
    sock = str(tmp / "fp.sock")
    cfg.write_text(f"""\
system:
  control-socket: {sock}
  log: {{format: json}}
services:
  jflow-log:
    collector c: {{destination-address: 127.0.0.1, destination-port: {SINK_PORT}}}
    collector-group g: {{collector: [c]}}
    template-profile p: {{collector-group: g, template-type: nat, version: ipfix}}
""")
    sink = t.popen(t.router, [sys.executable, "-u", "-c", SINK, SINK_PORT], stdin=subprocess.PIPE)
    assert sink.stdout.readline().strip() == "ready"
    log = open(tmp / "fp.log", "w")
    proc = t.popen(t.router, [sys.executable, "-m", "flowplane", "run", "-c", str(cfg)], stdout=log,
                   stderr=subprocess.STDOUT)
    try:
        def stats():
            try:
                return request(sock, ["show", "services", "nat-logging", "statistics"], fmt="json")["data"]
            except (OSError, KeyError):
                return None

        assert _wait(stats, 20), (tmp / "fp.log").read_text()[-2000:]
        cpu0 = _cpu(proc.pid)
        t0, gen_s = _generate(t, n, rate, base)
        creates, c_last = _settle(lambda: stats()["events"]["nat44-session-create"], n)
        truth = _sessions(t)
        t1 = time.time()
        t.run(t.router, ["conntrack", "-F"], check=False)
        deletes, d_last = _settle(lambda: stats()["events"]["nat44-session-delete"], creates)
        s = stats()
        cpu = _cpu(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        received = _last_number(sink)
    return {"logger": "flowplane", "creates": creates, "deletes": deletes, "exported": s["exported"],
            "received": received, "overruns": s["conntrack"]["overruns"], "resyncs": s["resyncs"],
            "resync_created": s["resync_created"], "resync_deleted": s["resync_deleted"],
            "delete_without_create": s["delete_without_create"], "truth": truth, "gen_s": gen_s,
            "output_drops": s["drops"], "sent": s["outputs"][0]["sent"], "messages": s["outputs"][0]["messages"],
            "create_eps": creates / max(1e-9, c_last - t0), "delete_eps": deletes / max(1e-9, d_last - t1),
            "cpu_s": cpu}


def run_ulogd(t: NatTopology, tmp: Path, n: int, rate: float, base: int) -> dict | None:
    if not shutil.which("ulogd") or not os.path.isdir(ULOGD_PLUGINS):
        return None
    out = tmp / "ulogd-flows.log"
    conf = tmp / "ulogd.conf"
    conf.write_text(f"""\
[global]
logfile="{tmp}/ulogd.log"
loglevel=5
plugin="{ULOGD_PLUGINS}/ulogd_inpflow_NFCT.so"
plugin="{ULOGD_PLUGINS}/ulogd_filter_IP2STR.so"
plugin="{ULOGD_PLUGINS}/ulogd_filter_PRINTFLOW.so"
plugin="{ULOGD_PLUGINS}/ulogd_output_LOGEMU.so"
stack=ct1:NFCT,ip2str1:IP2STR,print1:PRINTFLOW,emu1:LOGEMU

[ct1]
event_mask=0x00000005
hash_enable=0
netlink_socket_buffer_size=8388608
netlink_socket_buffer_maxsize=8388608

[emu1]
file="{out}"
sync=1
""")
    out.write_text("")
    proc = t.popen(t.router, ["ulogd", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def count(word):
            try:
                return sum(1 for line in out.open() if word in line)
            except OSError:
                return 0

        time.sleep(0.5)  # ulogd gives no readiness signal; it subscribes within milliseconds of starting
        if proc.poll() is not None:
            return None
        cpu0 = _cpu(proc.pid)
        t0, gen_s = _generate(t, n, rate, base)
        creates, c_last = _settle(lambda: count("NEW"), n)
        truth = _sessions(t)
        t1 = time.time()
        t.run(t.router, ["conntrack", "-F"], check=False)
        deletes, d_last = _settle(lambda: count("DESTROY"), n)
        cpu = _cpu(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"logger": "ulogd2", "creates": creates, "deletes": deletes, "exported": creates + deletes,
            "received": creates + deletes, "overruns": None, "resyncs": None, "resync_created": None,
            "truth": truth, "gen_s": gen_s, "create_eps": creates / max(1e-9, c_last - t0),
            "delete_eps": deletes / max(1e-9, d_last - t1), "cpu_s": cpu}


def _sessions(t: NatTopology) -> int:
    """The UDP sessions from the client that conntrack holds now (what the NAT really made)."""
    out = t.run(t.router, ["conntrack", "-L", "-p", "udp", "-s", CLIENT], check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("udp"))


def _cpu(pid: int) -> float:
    """User + system CPU seconds of *pid* and its children that the ip-netns-exec wrapper exec'd into."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def _last_number(proc: subprocess.Popen) -> int:
    """Ask the sink for its count (it reads what is queued first), then stop it."""
    proc.stdin.write("count\n")
    proc.stdin.flush()
    n = int(proc.stdout.readline())
    proc.stdin.close()
    proc.wait(timeout=10)
    return n


def run_bench(sessions: int, rates: list[float], *, log=print) -> dict:
    results = []
    with make_nat_topology("fpb") as t, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t.run(t.router, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=120"], check=False)
        t.run(t.router, ["nft", "-f", "-"], input=PLAIN_MASQUERADE)  # ports kept: room for every session
        for i, rate in enumerate(rates):
            for runner in (run_flowplane, run_ulogd):
                t.run(t.router, ["conntrack", "-F"], check=False)
                r = runner(t, tmp, sessions, rate, 2000 + (i % 2) * 30000)
                if r is None:
                    continue
                r.update(offered_rate=rate, sessions=sessions, created_per_s=sessions / max(1e-9, r["gen_s"]),
                         lost=2 * r["truth"] - r["creates"] - r["deletes"])
                results.append(r)
                log(_row(r))
    return {"results": results, "table": "\n".join([HEADER] + [_row(r) for r in results])}


HEADER = (f"{'logger':<10}{'offered/s':>10}{'sent/s':>10}{'sessions':>9}{'creates':>9}{'deletes':>9}{'create ev/s':>12}"
          f"{'delete ev/s':>12}{'lost':>7}{'overruns':>9}{'resyncs':>8}{'cpu s':>7}")


def _row(r: dict) -> str:
    def opt(v):
        return "-" if v is None else str(v)

    offered = "max" if not r["offered_rate"] else f"{r['offered_rate']:.0f}"
    return (f"{r['logger']:<10}{offered:>10}{r['created_per_s']:>10.0f}{r['truth']:>9}{r['creates']:>9}"
            f"{r['deletes']:>9}"
            f"{r['create_eps']:>12.0f}{r['delete_eps']:>12.0f}{r['lost']:>7}{opt(r['overruns']):>9}"
            f"{opt(r['resyncs']):>8}{r['cpu_s']:>7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--rates", default="5000,20000,0", help="offered sessions/s, comma separated; 0 = flat out")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    print(HEADER)
    out = run_bench(a.sessions, [float(x) for x in a.rates.split(",")])
    if a.json:
        print(json.dumps(out["results"], indent=2))


if __name__ == "__main__":
    main()

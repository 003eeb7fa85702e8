#!/usr/bin/env python3
"""Pipeline throughput on one core: pcap read, decode, firewall, `flowplane run`, softflowd.

Usage::

    python tests/bench/bench_pipeline.py [--packets 1200000] [--batch-size 4096,1024,256]
        [--runs 3] [--cpu N] [--profile] [--keep] [--stages a,b,c,e2e,peer] [--json OUT]

Generates (or reuses) ``tests/bench/data/synth-p{P}-c{C}-s{SEED}-m{MAL}.pcap`` with
``gen_pcap.py`` and measures, pinned to one CPU (``os.sched_setaffinity``):

a. read:   ``PcapSource.batches()`` of the real pcap source plugin (mmap, PacketBatch per batch);
b. decode: those batches through ``App.process`` of an App built from ``bench_config.yaml``
           with the filter bindings removed (core decode + decode counters);
c. filter: the same with the 10-term inet filter (and a 3-term inet6 filter) bound as input
           filters (decode + firewall + ``sample`` plugin action routed to a handler);
e2e:       ``flowplane run -c CFG --exit-on-eof`` as a subprocess (wall time: interpreter
           start, imports, trio channels, reports), inheriting the pinned CPU;
peer:      ``softflowd -d -r FILE -n 127.0.0.1:PORT -v 9 -m 200000 -a -c none`` (REFERENCE-flow.md
           §4a) on the same file and CPU, exporting to a throwaway UDP socket on 127.0.0.1.

Every figure is packets (pcap frames) per second, best-of-N and median, per batch size.
Counts are checked against the truth file on every run (a benchmark that miscounts is
worthless).  ``--profile`` runs cProfile over stage c and groups tottime into read /
decode (vector, scalar) / filter / batch / app / other.  Not a pass/fail test; see
``test_bench_smoke.py`` for the counting check pytest runs.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
CONFIG_TEMPLATE = HERE / "bench_config.yaml"
GEN = HERE / "gen_pcap.py"
IFACE = "replay0"
BOGON_EXTRA = 600  # synthetic bogon prefixes appended to bogons-v4 (searchsorted matcher)


# ---------------------------------------------------------------------------------------
# the benchmark's own plugin: a `sample` term action and a handler that counts
# ---------------------------------------------------------------------------------------
class SamplePlugin:
    """Registers the ``sample`` term action and binds a counting handler (a stand-in for
    the sampling feature, so the filter exercises the plugin-action route)."""

    name = "bench-sample"

    def __init__(self) -> None:
        self.packets = 0
        self.calls = 0

    def _hooks(self):
        from flowplane import hookimpl
        from flowplane.actions import TermAction

        plugin = self

        class _Impl:
            @hookimpl
            def flowplane_register_actions(self, register):
                register("bench-tap", TermAction("bench-tap", help="benchmark: a plugin action that counts the "
                                                                   "packets it gets"))

            @hookimpl
            def flowplane_configure(self, app):
                app.bind_action("bench-tap", plugin.handle)

        return _Impl()

    def handle(self, selections) -> None:
        self.calls += 1
        for s in selections:
            self.packets += len(s.batch)

    def pair(self):
        return (self._hooks(), self.name)


# ---------------------------------------------------------------------------------------
# input: pcap + truth
# ---------------------------------------------------------------------------------------
def pcap_name(packets: int, conversations: int, seed: int, malformed: float) -> str:
    return f"synth-p{packets}-c{conversations}-s{seed}-m{malformed:g}.pcap"


def ensure_pcap(packets: int, *, conversations: int | None = None, seed: int = 42, malformed: float = 0.0,
                data_dir: Path = DATA, max_payload: int | None = None, quiet: bool = False) -> tuple[Path, dict, bool]:
    """(pcap path, truth dict, generated now?) -- reuses a cached file with its truth."""
    if conversations is None:
        conversations = max(1, min(60_000, packets // 20))
    data_dir.mkdir(parents=True, exist_ok=True)
    name = pcap_name(packets, conversations, seed, malformed)
    if max_payload is not None:
        name = name[:-5] + f"-mp{max_payload}.pcap"
    path = data_dir / name
    truth_path = Path(str(path) + ".truth.json")
    made = False
    if not (path.exists() and truth_path.exists()):
        cmd = [sys.executable, str(GEN), "-o", str(path), "--packets", str(packets), "--conversations",
               str(conversations), "--seed", str(seed), "--malformed-fraction", str(malformed)]
        if max_payload is not None:
            cmd += ["--max-payload", str(max_payload)]
        if not quiet:
            print(f"# generating {path.name}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
        made = True
    truth = json.loads(truth_path.read_text())
    return path, truth, made


def _kernels() -> str:
    """Which kernels the measured processes run (FLOWPLANE_NO_EXT=1 in the environment forces Python)."""
    from flowplane import kernels

    return f"kernels {kernels.IMPLEMENTATION} ({kernels.REASON})"


def warm(path: Path) -> None:
    """Read the file once so every run sees it page-cached (as the reference runs did)."""
    buf = bytearray(1 << 24)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


# ---------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------
def bench_config(pcap: Path, batch_size: int, *, filters: bool = True, sock: str | None = None) -> dict:
    """The bench_config.yaml dict for *pcap* and *batch_size* (filters unbound for stage b)."""
    import numpy as np
    import yaml

    cfg = yaml.safe_load(CONFIG_TEMPLATE.read_text())
    cfg["system"]["batch-size"] = int(batch_size)
    cfg["system"]["control-socket"] = sock or str(Path(tempfile.gettempdir()) / f"flowplane-bench-{os.getpid()}.sock")
    iface = cfg["interfaces"][IFACE]
    iface["file"] = str(pcap)
    # 600 more bogons: /16s and /24s that never cover 10/8 or 198.18/15 (deterministic)
    rng = np.random.default_rng(7)
    extra = []
    for a, b, c in rng.integers(1, 223, (BOGON_EXTRA, 3)):
        a = int(a)
        if a in (10, 127, 198):
            a = 223
        extra.append(f"{a}.{int(b)}.0.0/16" if len(extra) % 2 else f"{a}.{int(b)}.{int(c)}.0/24")
    cfg["policy-options"]["prefix-list"]["bogons-v4"] += extra
    if not filters:
        for key in [k for k in iface if k.startswith("family")]:
            del iface[key]
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def build_app(cfg: dict, cfg_path: Path, plugin: SamplePlugin | None = None):
    from flowplane.app import App
    from flowplane.config import Config

    config = Config.from_text(__import__("yaml").safe_dump(cfg, sort_keys=False), path=str(cfg_path))
    app = App.create(config, plugins=[plugin.pair()] if plugin else [], environ={})
    app.configure()
    return app


def make_source(app, cfg: dict, cfg_path: Path):
    """The pcap source plugin exactly as the pipeline builds it (SourceContext from the app)."""
    from flowplane.sources import SourceContext

    section = cfg["interfaces"][IFACE]
    driver = app.registries.sources[section.get("source")]
    ctx = SourceContext(name=IFACE, config=section, iface_id=app.interfaces.id(IFACE), interfaces=app.interfaces,
                        batch_size=int(section.get("batch-size", app.setting("batch-size"))), speed=0.0,
                        log=None, base_dir=str(cfg_path.parent))
    return driver.factory(ctx)


# ---------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    stage: str
    batch_size: int
    seconds: float
    packets: int
    checks: dict = field(default_factory=dict)
    cpu: float = 0.0  # user+sys CPU seconds (robust to other load on the machine)

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0


def run_stage(stage: str, pcap: Path, batch_size: int, workdir: Path, *, profile: cProfile.Profile | None = None):
    """One timed pass of stage a / b / c; returns (RunResult, app, plugin)."""
    cfg = bench_config(pcap, batch_size, filters=(stage == "c"))
    cfg_path = workdir / f"bench-{stage}-{batch_size}.yaml"
    plugin = SamplePlugin()
    app = build_app(cfg, cfg_path, plugin)
    src = make_source(app, cfg, cfg_path)
    n = 0
    c0 = time.process_time()
    if stage == "a":
        t0 = time.perf_counter()
        for batch in src.batches():
            n += len(batch)
        dt = time.perf_counter() - t0
    else:
        process = app.process
        if profile is not None:
            profile.enable()
        t0 = time.perf_counter()
        for batch in src.batches():
            n += len(batch)
            process(batch)
        dt = time.perf_counter() - t0
        if profile is not None:
            profile.disable()
    return RunResult(stage, batch_size, dt, n, cpu=time.process_time() - c0), app, plugin


def check_counts(stage: str, res: RunResult, app, plugin: SamplePlugin, truth: dict) -> dict:
    """Counting checks against the truth; returns {name: (got, want)} (all must be equal)."""
    import numpy as np

    from flowplane.decode import Reason

    checks: dict[str, tuple[int, int]] = {"frames read": (res.packets, truth["frames"])}
    if stage == "a":
        return checks
    counts = app.decode_counts.get(app.interfaces.id(IFACE), np.zeros(len(Reason), dtype=np.int64))
    checks["frames decoded"] = (int(counts.sum()), truth["frames"])
    want = {r.name: 0 for r in Reason}
    want.update(truth["expected_decode_reasons"])
    want["NOT_IP"] = want.get("NOT_IP", 0) or truth["non_ip_frames"]
    for r in Reason:
        if counts[r] or want[r.name]:
            checks[f"decode {r.name}"] = (int(counts[r]), int(want[r.name]))
    if stage != "c":
        return checks
    fam_packets = {"inet": truth["ipv4_packets"], "inet6": truth["ipv6_packets"]}
    # ipv4/ipv6_packets count well-formed packets only when nothing is malformed; use decode's OK split
    seen = 0
    for f in app.graph.firewall:
        c = f.counters()
        terminating = [t for t in c["terms"] if t not in NON_TERMINATING_TERMS]
        decided = sum(c["terms"][t]["packets"] for t in terminating) + c["implicit_discard"]["packets"]
        totals = sum(c["packets"].values())
        checks[f"{f.name}: terms + implicit discard == totals"] = (decided, totals)
        seen += totals
        if not truth["malformed"]["total"]:
            checks[f"{f.name}: packets filtered == {f.family} packets"] = (totals, fam_packets[f.family])
    checks["filtered (all families) == decoded IP packets"] = (seen, int(counts[Reason.OK]))
    syn = app.graph.firewall.get("inet", "edge-v4").counters()["terms"]["syn-to-servers"]["packets"]
    checks["sample action packets == syn-to-servers term"] = (plugin.packets, syn)
    return checks


#: terms of bench_config.yaml that do not decide (``next term``): their packets are
#: counted again by a later term or the implicit discard.
NON_TERMINATING_TERMS = ("syn-to-servers",)


def run_e2e(pcap: Path, batch_size: int, workdir: Path, truth: dict) -> RunResult:
    """``flowplane run --exit-on-eof`` (with the bench plugin) as a subprocess; wall time."""
    sock = str(workdir / f"ctl-{batch_size}.sock")
    cfg_path = write_config(bench_config(pcap, batch_size, sock=sock), workdir / f"bench-e2e-{batch_size}.yaml")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_cli", "run", "-c", str(cfg_path), "--exit-on-eof",
           "--json", "--report", "show firewall", "--report", "show services accounting errors"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"flowplane run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    docs = _json_docs(proc.stdout)
    fw = next(d for d in docs if "filters" in d)
    errs = next(d for d in docs if "interfaces" in d)
    received = sum(r["received"] for r in errs["interfaces"])
    decoded = sum(r["decoded"] for r in errs["interfaces"])
    filtered = sum(sum(f["packets"].values()) for f in fw["filters"])
    res = RunResult("e2e", batch_size, dt, received)
    res.checks = {"frames received": (received, truth["frames"]), "decoded": (decoded, truth["ip_packets"]),
                  "filtered == decoded": (filtered, decoded)}
    res.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


def _json_docs(text: str) -> list:
    dec = json.JSONDecoder()
    out, i = [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


def run_softflowd(pcap: Path, workdir: Path) -> tuple[float, float, str]:
    """One softflowd pass (REFERENCE-flow.md §4a flags) exporting v9 to a bound, unread UDP port."""
    exe = shutil.which("softflowd") or ("/usr/sbin/softflowd" if os.path.exists("/usr/sbin/softflowd") else None)
    assert exe
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # bound but never read: the kernel drops what overflows
    port = sink.getsockname()[1]
    cmd = [exe, "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", "9", "-m", "200000", "-a",
           "-p", str(workdir / "sfd.pid"), "-c", "none"]
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        sink.close()
    if proc.returncode != 0:
        raise RuntimeError(f"softflowd failed ({proc.returncode}): {proc.stderr[-1000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dt, cpu, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------
# profile grouping
# ---------------------------------------------------------------------------------------
def group_of_file(filename: str, funcname: str) -> str | None:
    base = os.path.basename(filename)
    if base == "pcapfile.py":
        return "read"
    if base == "decode_vector.py":
        return "decode (vector)"
    if base == "decode_scalar.py":
        return "decode (scalar)"
    if base in ("decode.py", "decode_common.py"):
        return "decode (other)"
    if base.startswith("firewall"):
        return "filter"
    if base == "batch.py":
        return "read" if funcname in ("__init__", "_column") else "batch select"
    if base in ("app.py", "pluginmanager.py", "stats.py"):
        return "app/actions"
    if base == os.path.basename(__file__):
        return "harness"
    return None  # numpy, builtins, enum ...: charged to the caller


def profile_groups(stats: pstats.Stats) -> tuple[dict[str, float], list[tuple[float, str, str, int]]]:
    """tottime per group (library/builtin time charged to the flowplane caller, edge by edge)
    and the top rows (tottime, group, function label, calls)."""
    raw = stats.stats  # type: ignore[attr-defined]
    memo: dict = {}

    def shares(func, depth=0) -> dict[str, float]:
        """How one second of *func*'s own time splits over groups (via its callers)."""
        if func in memo:
            return memo[func]
        g = group_of_file(func[0], func[2])
        if g is not None:
            memo[func] = {g: 1.0}
            return memo[func]
        memo[func] = {"other": 1.0}  # recursion guard
        callers = raw[func][4] if func in raw else {}
        tot = sum(v[2] for v in callers.values())
        if depth > 20 or not callers or tot <= 0:
            return memo[func]
        out: dict[str, float] = {}
        for caller, edge in callers.items():
            w = edge[2] / tot
            for g2, s in shares(caller, depth + 1).items():
                out[g2] = out.get(g2, 0.0) + w * s
        memo[func] = out
        return out

    groups: dict[str, float] = {}
    rows = []
    for func, (_cc, nc, tt, _ct, callers) in raw.items():
        # builtins/library calls: split by caller edge directly (more exact than the average)
        g = group_of_file(func[0], func[2])
        if g is None and callers:
            for caller, edge in callers.items():
                for g2, s in shares(caller).items():
                    groups[g2] = groups.get(g2, 0.0) + edge[2] * s
            main = max(((sum(edge[2] * s for caller, edge in callers.items()
                                 for gg, s in shares(caller).items() if gg == k), k)
                        for k in {gg for c in callers for gg in shares(c)}), default=(0, "other"))[1]
        else:
            g = g or "other"
            groups[g] = groups.get(g, 0.0) + tt
            main = g
        label = f"{func[2]} ({os.path.basename(func[0])}:{func[1]})" if func[0] != "~" else func[2]
        rows.append((tt, main, label, nc))
    rows.sort(reverse=True)
    return groups, rows


def run_profile(pcap: Path, batch_size: int, workdir: Path, top: int = 30) -> dict:
    prof = cProfile.Profile()
    res, _app, _plugin = run_stage("c", pcap, batch_size, workdir, profile=prof)
    stats = pstats.Stats(prof)
    groups, rows = profile_groups(stats)
    total = sum(groups.values()) or 1.0
    print(f"\n## profile of stage c (decode + filter), batch {batch_size}: {res.packets:,} packets, "
          f"{res.seconds:.2f} s under cProfile ({res.pps / 1e3:,.0f} kpps profiled)")
    print(f"{'group':<18}{'tottime s':>10}{'share':>8}{'ns/pkt':>9}")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{g:<18}{t:>10.3f}{t / total:>8.1%}{t / res.packets * 1e9:>9.0f}")
    print(f"\ntop {top} functions by tottime (builtins/numpy charged to the group of their main caller)")
    print(f"{'tottime s':>10}{'share':>8}{'calls':>10}  {'group':<16} function")
    for tt, g, label, nc in rows[:top]:
        print(f"{tt:>10.3f}{tt / total:>8.1%}{nc:>10}  {g:<16} {label}")
    return {"batch_size": batch_size, "packets": res.packets, "seconds": res.seconds,
            "groups": groups, "top": [(tt, g, label, nc) for tt, g, label, nc in rows[:top]]}


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------
STAGE_TITLES = {
    "a": "(a) pcap read (PcapSource.batches)",
    "b": "(b) read + decode (App.process)",
    "c": "(c) read + decode + 10-term filter",
    "e2e": "flowplane run --exit-on-eof (wall)",
}


def pin(cpu: int | None) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = allowed[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def bench(args) -> dict:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    sizes = [int(x) for x in str(args.batch_size).split(",") if x.strip()]
    cpu = pin(args.cpu)
    pcap, truth, made = (Path(args.pcap), json.loads(Path(args.pcap + ".truth.json").read_text()), False) \
        if args.pcap else ensure_pcap(args.packets, conversations=args.conversations, seed=args.seed,
                                      malformed=args.malformed_fraction, quiet=args.quiet)
    out: dict = {"pcap": str(pcap), "frames": truth["frames"], "ip_packets": truth["ip_packets"], "cpu": cpu,
                 "runs": args.runs, "results": [], "failures": []}
    say = (lambda *a, **k: None) if args.quiet else print
    say(f"# {pcap.name}: {truth['frames']:,} frames, {truth['ip_packets']:,} IP packets; pinned to CPU {cpu}; "
        f"{args.runs} run(s) per cell; python {sys.version.split()[0]}; {_kernels()}")
    out["loadavg"] = _loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="fp-bench-"))
    try:
        warm(pcap)
        for stage in stages:
            if stage not in ("a", "b", "c", "e2e"):
                continue
            for bs in sizes:
                runs = []
                for _ in range(args.runs):
                    if stage == "e2e":
                        r = run_e2e(pcap, bs, workdir, truth)
                    else:
                        r, app, plugin = run_stage(stage, pcap, bs, workdir)
                        r.checks = check_counts(stage, r, app, plugin, truth)
                    bad = {k: v for k, v in r.checks.items() if v[0] != v[1]}
                    if bad:
                        out["failures"].append({"stage": stage, "batch_size": bs, "mismatch": bad})
                    runs.append(r)
                out["results"].append(_summary(stage, bs, runs))
                say(_line(out["results"][-1]), flush=True)
        if "peer" in stages:
            out["peer"] = peer(pcap, truth, workdir, args.runs, say)
        if args.profile:
            out["profile"] = run_profile(pcap, sizes[0], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if made and not args.keep:
            for p in (pcap, Path(str(pcap) + ".truth.json")):
                p.unlink(missing_ok=True)
    out["loadavg"] = f"{out['loadavg']} -> {_loadavg()}"
    table(out, say)
    return out


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _summary(stage: str, bs: int, runs: list[RunResult]) -> dict:
    pps = [r.pps for r in runs]
    d = {"stage": stage, "batch_size": bs, "packets": runs[0].packets, "seconds": [r.seconds for r in runs],
         "best_pps": max(pps), "median_pps": statistics.median(pps), "cpu_s": [r.cpu for r in runs],
         "median_cpu_pps": (statistics.median(r.packets / r.cpu for r in runs if r.cpu > 0)
                            if any(r.cpu > 0 for r in runs) else 0.0),
         "checks": {k: list(v) for k, v in runs[-1].checks.items()}}
    return d


def _line(d: dict) -> str:
    bad = [k for k, v in d["checks"].items() if v[0] != v[1]]
    return (f"  {STAGE_TITLES[d['stage']]:<38} batch {d['batch_size']:>5}: best {d['best_pps'] / 1e3:8,.0f} kpps  "
            f"median {d['median_pps'] / 1e3:8,.0f} kpps  ({', '.join(f'{s:.2f}' for s in d['seconds'])} s)"
            + (f"  COUNT MISMATCH: {bad}" if bad else "  counts ok"))


def peer(pcap: Path, truth: dict, workdir: Path, runs: int, say) -> dict:
    exe = shutil.which("softflowd") or ("/usr/sbin/softflowd" if os.path.exists("/usr/sbin/softflowd") else None)
    if not exe:
        say("  softflowd: not installed (apt-get install softflowd) -- no peer figure in this run")
        return {"installed": False}
    walls, cpus, last = [], [], ""
    for _ in range(runs):
        try:
            dt, cpu, last = run_softflowd(pcap, workdir)
        except (RuntimeError, OSError) as e:
            say(f"  softflowd: failed: {e}")
            return {"installed": True, "error": str(e)}
        walls.append(dt)
        cpus.append(cpu)
    pps = [truth["frames"] / w for w in walls]
    d = {"installed": True, "exe": exe, "seconds": walls, "cpu_s": cpus, "best_pps": max(pps),
         "median_pps": statistics.median(pps), "packets": truth["frames"],
         "median_cpu_pps": statistics.median(truth["frames"] / c for c in cpus if c > 0) if any(cpus) else 0.0}
    say(f"  {'softflowd -v 9 -m 200000 -a (wall)':<38}            : best {d['best_pps'] / 1e3:8,.0f} kpps  "
        f"median {d['median_pps'] / 1e3:8,.0f} kpps  ({', '.join(f'{s:.2f}' for s in walls)} s)")
    return d


def table(out: dict, say) -> None:
    peer_d = out.get("peer") or {}
    ppps = peer_d.get("median_pps")
    pcpu = peer_d.get("median_cpu_pps")
    say(f"\n## throughput, packets/s on one core (CPU {out['cpu']}), {out['frames']:,} frames, "
        f"best of {out['runs']} / median (wall); per CPU-second = packets / (user+sys); "
        f"loadavg {out.get('loadavg', '?')}")
    hdr = (f"| {'stage':<38} | {'batch':>5} | {'best pps':>10} | {'median pps':>10} | {'ns/pkt (median)':>15} |"
           f" {'pkts/CPU-s':>10} |")
    if ppps:
        hdr += f" {'ratio vs softflowd (wall / CPU)':>31} |"
    say(hdr)
    say("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for d in out["results"]:
        row = (f"| {STAGE_TITLES[d['stage']]:<38} | {d['batch_size']:>5} | {d['best_pps']:>10,.0f} | "
               f"{d['median_pps']:>10,.0f} | {1e9 / d['median_pps']:>15,.0f} | {d.get('median_cpu_pps', 0):>10,.0f} |")
        if ppps:
            cpu = f"{d.get('median_cpu_pps', 0) / pcpu:.2f}" if pcpu else "-"
            r = f"{d['median_pps'] / ppps:.2f} / {cpu}"
            row += f" {r:>31} |"
        say(row)
    if ppps:
        say(f"| {'softflowd -v 9 -m 200000 -a (wall)':<38} | {'-':>5} | {peer_d['best_pps']:>10,.0f} | "
            f"{ppps:>10,.0f} | {1e9 / ppps:>15,.0f} | {pcpu or 0:>10,.0f} | {'1.00 / 1.00':>31} |")
    elif peer_d.get("installed") is False:
        say("softflowd is not installed: no peer figure in this run (apt-get install softflowd).")
    if out["failures"]:
        say(f"\nCOUNT MISMATCHES: {json.dumps(out['failures'], indent=1)}")


def _cli_main(argv: list[str]) -> int:
    """``bench_pipeline.py --_cli ARGS``: ``flowplane.cli.main(ARGS)`` with the bench plugin added."""
    from flowplane import app as app_mod
    from flowplane.cli import main

    orig = app_mod.App.create.__func__

    def create(cls, config, **kw):
        kw["plugins"] = list(kw.get("plugins", ())) + [SamplePlugin().pair()]
        return orig(cls, config, **kw)

    app_mod.App.create = classmethod(create)
    return main(argv)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_200_000, help="IP packets in the generated pcap (default 1200000)")
    ap.add_argument("--conversations", type=int, default=None, help="default min(60000, packets/20)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--malformed-fraction", type=float, default=0.0)
    ap.add_argument("--pcap", help="use this pcap (with PCAP.truth.json) instead of generating one")
    ap.add_argument("--batch-size", default="4096,1024,256", help="comma-separated batch sizes (default 4096,1024,256)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell (default 3)")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed one)")
    ap.add_argument("--stages", default="a,b,c,e2e,peer", help="subset of a,b,c,e2e,peer (default all)")
    ap.add_argument("--profile", action="store_true", help="cProfile stage c at the first batch size")
    ap.add_argument("--keep", action="store_true", help="keep a pcap generated by this run (else it is deleted)")
    ap.add_argument("--json", help="also write the figures as JSON here")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_cli"]:
        return _cli_main(argv[1:])
    args = parse_args(argv)
    out = bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

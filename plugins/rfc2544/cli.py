"""``flowplane rfc2544 initiate|reflect``: one RFC 2544 test from the shell, beside the service.

::

    flowplane rfc2544 reflect --interface eth1 --ip-swap --udp-tcp-port-swap [--duration 60]
    flowplane rfc2544 initiate --interface eth1 --source 198.18.0.1 --destination 198.19.0.1 \\
        --test-type throughput --packet-size 512,1518 --bandwidth-kbps 150000 --trial-duration 2 [--json]

The initiator prints a progress line per trial on stderr and a summary table at the end.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from .config import FAMILIES, PACKET_SIZES, TEST_TYPES, Profile, TestConfig


def add_parser(subparsers) -> Any:
    p = subparsers.add_parser("rfc2544", help="run one RFC 2544 test (initiator) or a reflector from the shell")
    sub = p.add_subparsers(dest="rfc2544_command", metavar="initiate|reflect")
    for name, helptext in (("initiate", "measure throughput, latency, frame loss or back-to-back frames"),
                           ("reflect", "turn test frames around until interrupted or --duration")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--interface", required=True, help="test interface (AF_PACKET; needs CAP_NET_RAW)")
        sp.add_argument("--family", choices=FAMILIES, default="inet")
        sp.add_argument("--source", help="initiator-side IP address")
        sp.add_argument("--destination", help="reflector-side IP address")
        sp.add_argument("--source-port", type=int, help="UDP source port (initiator default 49184)")
        sp.add_argument("--destination-port", type=int, default=7, help="UDP destination port (default 7)")
        sp.add_argument("--source-mac", help="source MAC (default: the interface's)")
        sp.add_argument("--destination-mac", help="destination MAC (default: the next hop's, from ARP/ND)")
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
    i = sub.choices["initiate"]
    i.add_argument("--test-type", choices=TEST_TYPES, default="throughput")
    i.add_argument("--packet-size", default="64,128,256,512,1024,1280,1518",
                   help="comma-separated frame sizes with FCS (default: the RFC's seven)")
    i.add_argument("--bandwidth-kbps", type=int, default=1_000_000, help="highest rate tried, line rate")
    i.add_argument("--step-percent", type=int, default=10, help="frame-loss step (default 10)")
    i.add_argument("--resolution-percent", type=float, default=1.0, help="search resolution (default 1)")
    i.add_argument("--trial-duration", type=float, default=20.0, help="seconds per trial (RFC: 60)")
    i.add_argument("--wait", type=float, default=2.0, help="seconds to wait after a trial (default 2)")
    i.add_argument("--pass-threshold", type=float, default=0.0, help="loss percent a trial may show (default 0)")
    i.add_argument("--iterations", type=int, default=1)
    i.add_argument("--no-calibration", action="store_true", help="skip self-calibration (not honest above it)")
    r = sub.choices["reflect"]
    r.add_argument("--no-mac-swap", action="store_true")
    r.add_argument("--ip-swap", action="store_true")
    r.add_argument("--udp-tcp-port-swap", action="store_true")
    r.add_argument("--disable-signature-check", action="store_true")
    r.add_argument("--duration", type=float, help="stop after S seconds")
    return p


def run(args) -> int:
    cmd = getattr(args, "rfc2544_command", None)
    if cmd not in ("initiate", "reflect"):
        print("usage: flowplane rfc2544 initiate|reflect ...", file=sys.stderr)
        return 2
    try:
        return _initiate(args) if cmd == "initiate" else _reflect(args)
    except OSError as exc:
        print(f"flowplane rfc2544: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _common(args) -> dict:
    return {"interface": args.interface, "family": args.family, "source_address": args.source,
            "destination_address": args.destination, "source_port": args.source_port,
            "destination_port": args.destination_port, "source_mac": args.source_mac,
            "destination_mac": args.destination_mac}


def _initiate(args) -> int:
    from .commands import format_run
    from .initiator import Initiator, TestRefused

    try:
        sizes = tuple(int(x) for x in args.packet_size.split(",") if x.strip())
    except ValueError:
        print(f"flowplane rfc2544: bad --packet-size {args.packet_size!r}", file=sys.stderr)
        return 2
    bad = [s for s in sizes if s not in PACKET_SIZES]
    if bad or not sizes:
        print(f"flowplane rfc2544: packet sizes must be among {', '.join(map(str, PACKET_SIZES))}", file=sys.stderr)
        return 2
    if args.family != "bridge" and not args.destination:
        print("flowplane rfc2544: --destination is needed", file=sys.stderr)
        return 2
    prof = Profile("cli", args.test_type, sizes, args.bandwidth_kbps, args.step_percent,
                   resolution_percent=args.resolution_percent)
    cfg = TestConfig(name="cli", mode="initiate-and-terminate", profile=prof, trial_seconds=args.trial_duration,
                     wait_seconds=args.wait, pass_threshold=args.pass_threshold, iterations=args.iterations,
                     **_common(args))
    tty = sys.stderr.isatty()

    def progress(text: str) -> None:
        print(("\r\033[K" if tty else "") + text, end="" if tty else "\n", file=sys.stderr, flush=True)

    ini = Initiator(cfg, progress=progress, calibrate_host=not args.no_calibration)
    try:
        sizes_done = ini.run()
    except TestRefused as exc:
        print(("\n" if tty else "") + f"flowplane rfc2544: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ini.stop.set()
        sizes_done = ini.sizes
    if tty:
        print(file=sys.stderr)
    results = [s.as_dict() for s in sizes_done]
    if args.json:
        print(json.dumps({"test_type": args.test_type, "results": results}, indent=2))
        return 0
    print(format_run({"test_id": 0, "test_name": "cli", "mode": cfg.mode, "family": cfg.family,
                      "interface": cfg.interface, "test_type": prof.test_type, "packet_sizes": list(sizes),
                      "state": "completed", "reason": "", "started": ini.started and None, "ended": None,
                      "elapsed": 0.0, "results": results, "view": "summary"}), end="")
    print(summary_table(prof.test_type, results), end="")
    return 0


def summary_table(test_type: str, results: list[dict]) -> str:
    head = {"throughput": f"{'Size':>6}{'Throughput kbps':>17}{'fps':>12}{'Lat avg us':>12}{'Trials':>8}",
            "latency": f"{'Size':>6}{'Min us':>10}{'Avg us':>10}{'Max us':>10}{'at fps':>12}",
            "frame-loss": f"{'Size':>6}  Offered % -> loss %",
            "back-back-frames": f"{'Size':>6}{'Back-to-back frames':>21}"}[test_type]
    lines = ["", "Summary", head]
    for s in results:
        if test_type == "throughput":
            t = s.get("throughput") or {"kbps": 0.0, "fps": 0.0}
            lat = (s.get("latency_us") or {}).get("avg")
            lines.append(f"{s['size']:>6}{t['kbps']:>17,.1f}{t['fps']:>12,.1f}{'-' if lat is None else lat:>12}"
                         f"{len(s['iterations']):>8}")
        elif test_type == "latency":
            lat = s.get("latency_us") or {}
            lines.append(f"{s['size']:>6}{str(lat.get('min')):>10}{str(lat.get('avg')):>10}{str(lat.get('max')):>10}"
                         f"{lat.get('at_fps', 0):>12,.1f}")
        elif test_type == "frame-loss":
            lines.append(f"{s['size']:>6}  " + ", ".join(f"{x['offered_percent']:g}->{x['loss_percent']:g}"
                                                          for x in s.get("frame_loss", [])))
        else:
            lines.append(f"{s['size']:>6}{s.get('back_to_back_frames', 0):>21,.0f}")
    return "\n".join(lines) + "\n"


def _reflect(args) -> int:
    import signal

    from .commands import format_run
    from .reflector import ReflectorEngine

    cfg = TestConfig(name="cli", mode="reflect", mac_swap=not args.no_mac_swap, ip_swap=args.ip_swap,
                     port_swap=args.udp_tcp_port_swap, signature_check=not args.disable_signature_check,
                     **_common(args))
    from .packetio import PacketIO

    PacketIO(cfg.interface, rx=True).close()  # fail here, with the reason, when the interface is unusable
    engine = ReflectorEngine(cfg)
    stop = threading.Event()
    started = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    worker = threading.Thread(target=engine.run, args=(stop, started), daemon=True)
    worker.start()
    started.wait(5)
    print(f"RFC 2544 reflector on {cfg.interface} (udp port {cfg.destination_port})", file=sys.stderr, flush=True)
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        worker.join()
    status = engine.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_run({"test_id": 0, "test_name": "cli", "mode": "reflect", "family": cfg.family,
                          "interface": cfg.interface, "test_type": None, "packet_sizes": [], "state": "stopped",
                          "reason": "", "started": None, "ended": None, "elapsed": 0.0, "reflector": status}), end="")
    return 0

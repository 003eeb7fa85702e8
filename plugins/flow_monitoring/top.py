"""``flowplane top``: a refreshing top-talkers view of the running service's flow caches.

It reads ``show services accounting flow-detail`` over the control socket; the
flow-monitoring plugin adds the subcommand through ``flowplane_register_cli_subcommands``.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from typing import Any

from flowplane.api import control_request, resolve_socket

PROTO = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmp6", 132: "sctp"}


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000
    return f"{n:.1f}P{unit}"


def render(data: dict, previous: dict | None, elapsed: float, order: str, limit: int) -> str:
    """One screen: top flows by *order*, with rates from the previous snapshot."""
    lines = []
    prev = previous or {}
    for inst in data["instances"]:
        flows = inst["flows"]
        total_p = sum(f["packets"] for f in flows)
        total_b = sum(f["bytes"] for f in flows)
        lines.append(f"flowplane top — instance {inst['name']} — {len(flows)} flows shown, "
                     f"{_human(total_p)} packets, {_human(total_b, 'B')} — ordered by {order}")
        lines.append(f"{'proto':<6} {'source':<41} {'destination':<41} {'packets':>9} {'bytes':>9} {'bit/s':>9}")
        for f in flows[:limit]:
            key = (inst["name"], f["protocol"], f["source"], f["source_port"], f["destination"], f["destination_port"])
            before = prev.get(key, f["bytes"])
            rate = max(0, f["bytes"] - before) * 8 / elapsed if previous is not None and elapsed > 0 else 0.0
            src = _endpoint(f["source"], f["source_port"])
            dst = _endpoint(f["destination"], f["destination_port"])
            lines.append(f"{PROTO.get(f['protocol'], str(f['protocol'])):<6} {src:<41} {dst:<41} "
                         f"{_human(f['packets']):>9} {_human(f['bytes'], 'B'):>9} {_human(rate):>9}")
        lines.append("")
    return "\n".join(lines)


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ipaddress.ip_address(addr).version == 6 else f"{addr}:{port}"


def snapshot_keys(data: dict) -> dict:
    return {(i["name"], f["protocol"], f["source"], f["source_port"], f["destination"],
             f["destination_port"]): f["bytes"]
            for i in data["instances"] for f in i["flows"]}


def run_top(path: str, *, interval: float, limit: int, order: str, once: bool, request) -> int:
    previous = None
    last = time.monotonic()
    try:
        while True:
            reply = request(path,
                            ["show", "services", "accounting", "flow-detail", "limit", str(limit), "order", order],
                            fmt="json")
            if not reply.get("ok"):
                print(f"error: {reply.get('error')}", file=sys.stderr)
                return 1
            now = time.monotonic()
            screen = render(reply["data"], previous, now - last, order, limit)
            if once:
                sys.stdout.write(screen + "\n")
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + screen + f"\n(refresh {interval:g}s, Ctrl-C to quit)\n")
            sys.stdout.flush()
            previous, last = snapshot_keys(reply["data"]), now
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def add_parser(subparsers) -> Any:
    tp = subparsers.add_parser("top", help="live top talkers of the running service's flow caches")
    tp.add_argument("--interval", type=float, default=1.0)
    tp.add_argument("--limit", type=int, default=20)
    tp.add_argument("--order", choices=("bytes", "packets"), default="bytes")
    tp.add_argument("--once", action="store_true", help="print one screen and exit")
    tp.add_argument("-s", "--socket", help="control socket path")
    tp.add_argument("-c", "--config", help="read the control socket path from this config file")
    return tp


def run(args) -> int:
    """``flowplane top``: refresh until Ctrl-C (or one screen with ``--once``)."""
    path = resolve_socket(args.socket, args.config)
    try:
        return run_top(path, interval=args.interval, limit=args.limit, order=args.order, once=args.once,
                       request=control_request)
    except (OSError, ConnectionError) as exc:
        print(f"flowplane: cannot reach the service at {path}: {exc}", file=sys.stderr)
        return 2

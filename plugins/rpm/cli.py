"""``flowplane rpm ping|udp|tcp|http TARGET`` runs one RPM test from the shell; ``flowplane rpm server`` runs a
probe server in the foreground.

::

    flowplane rpm ping 192.0.2.1 --count 5 --interval 0.2 [--timestamp] [--json]
    flowplane rpm udp 192.0.2.1:50000 --count 10          # against a flowplane probe server (or any UDP echo)
    flowplane rpm tcp 192.0.2.1:50001
    flowplane rpm http http://192.0.2.1/ [--head]
    flowplane rpm server --udp 50000 --tcp 50001 [--listen 0.0.0.0] [--duration S]

The result is the block ``show services rpm probe-results`` prints (or its JSON); the exit code is 0 when at
least one probe was answered, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any

from flowplane.api import split_host_port

KINDS = ("ping", "udp", "tcp", "http")


def add_parser(subparsers) -> Any:
    p = subparsers.add_parser("rpm", help="one RPM test (ping, udp, tcp, http) or a probe server, in the foreground")
    sub = p.add_subparsers(dest="rpm_command", metavar="ping|udp|tcp|http|server")
    for kind in KINDS:
        c = sub.add_parser(kind, help=f"run one {kind} RPM test and print its results")
        metavar = {"http": "URL", "ping": "ADDRESS"}.get(kind, "ADDRESS[:PORT]")
        c.add_argument("target", metavar=metavar)
        c.add_argument("--count", type=int, default=5, help="probes in the test (1..15, default 5)")
        c.add_argument("--interval", type=float, default=1.0, help="seconds between probes (default 1)")
        c.add_argument("--timeout", type=float, default=3.0, help="seconds a probe waits for its answer (default 3)")
        c.add_argument("--source", help="source address")
        c.add_argument("--routing-instance", help="network namespace to send from (ip netns)")
        c.add_argument("--dscp", default=None, help="DSCP: 6 bits, an alias (ef, af11, cs6 ...) or 0..63")
        c.add_argument("--json", action="store_true", help="print the results as JSON")
        if kind != "http":
            c.add_argument("--data-size", type=int, default=None, help="payload octets")
        if kind == "ping":
            c.add_argument("--timestamp", action="store_true", help="ICMP timestamp messages (icmp-ping-timestamp)")
        if kind == "http":
            c.add_argument("--head", action="store_true", help="HEAD instead of GET (http-metadata-get)")
    s = sub.add_parser("server", help="run an RPM probe server (udp-ping / tcp-ping answers) in the foreground")
    s.add_argument("--udp", type=int, default=None, metavar="PORT", help="UDP port (7 or 49160..65535)")
    s.add_argument("--tcp", type=int, default=None, metavar="PORT", help="TCP port (7 or 49160..65535)")
    s.add_argument("--listen", default="0.0.0.0", help="listen address (default 0.0.0.0; '::' for both families)")
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds and print the counters")
    s.add_argument("--json", action="store_true", help="print the final counters as JSON")
    return p


def split_target(kind: str, text: str) -> tuple[str, int | None]:
    if kind in ("ping", "http"):
        return text, None
    return split_host_port(text)


def build_config(args) -> dict:
    """The one test as a ``services rpm`` config, so the command line is checked like a config file."""
    kind = args.rpm_command
    target, port = split_target(kind, args.target)
    test: dict = {"probe-count": args.count, "probe-interval": args.interval, "probe-timeout": args.timeout,
                  "test-interval": 0, "history-size": 15}
    if kind == "ping":
        v6 = ":" in target
        test["probe-type"] = "icmp6-ping" if v6 else ("icmp-ping-timestamp" if args.timestamp else "icmp-ping")
        test["target"] = {"address": target}
    elif kind in ("udp", "tcp"):
        test["probe-type"] = "udp-ping" if kind == "udp" else "tcp-ping"
        test["target"] = {"address": target}
        if port is not None:
            test["destination-port"] = port
    else:
        test["probe-type"] = "http-metadata-get" if args.head else "http-get"
        test["target"] = {"url": target}
    if args.source:
        test["source-address"] = args.source
    if args.routing_instance:
        test["routing-instance"] = args.routing_instance
    if args.dscp is not None:
        test["dscp-code-points"] = int(args.dscp) if args.dscp.isdigit() else args.dscp
    if getattr(args, "data_size", None) is not None:
        test["data-size"] = args.data_size
    return {"services": {"rpm": {"probe": {"cli": {"test": {kind: test}}}}}}


def _log_to_stderr() -> None:
    """Events (PING_TEST_COMPLETED ...) go to stderr so stdout stays the result (and valid JSON)."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def run(args) -> int:
    from .config import parse

    _log_to_stderr()
    if args.rpm_command is None:
        print("flowplane rpm: expected ping, udp, tcp, http or server", file=sys.stderr)
        return 2
    if args.rpm_command == "server":
        return run_server(args)
    try:
        data = build_config(args)
    except ValueError as exc:
        print(f"flowplane rpm: bad target: {exc}", file=sys.stderr)
        return 2
    cfg, issues = parse(data)
    if issues or cfg is None:
        for i in issues:
            where = " ".join(str(p) for p in i.path[5:]) or "target"
            print(f"flowplane rpm: {where}: {i.message}", file=sys.stderr)
        return 2
    import trio

    from .commands import format_test
    from .engine import TestRunner

    runner = TestRunner(cfg.tests[0])
    try:
        trio.run(runner.run, None, 1)
    except KeyboardInterrupt:
        return 130
    st = runner.status()
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_test(st))
    return 0 if runner.results.all.received else 1


def run_server(args) -> int:
    from .config import ServerConfig, port_ok

    _log_to_stderr()
    try:
        ipaddress.ip_address(args.listen)
    except ValueError:
        print(f"flowplane rpm server: --listen: expected an address, got {args.listen!r}", file=sys.stderr)
        return 2
    servers = []
    for proto in ("udp", "tcp"):
        port = getattr(args, proto)
        if port is None:
            continue
        if not (port_ok(port) or port == 0):
            print(f"flowplane rpm server: --{proto} {port}: expected 7 or 49160..65535", file=sys.stderr)
            return 2
        servers.append(ServerConfig(proto, port, args.listen))
    if not servers:
        print("flowplane rpm server: give --udp PORT and/or --tcp PORT", file=sys.stderr)
        return 2
    import trio

    from .server import ProbeServer

    probe_servers = [ProbeServer(s) for s in servers]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for s in probe_servers:
                bound = await nursery.start(s.run)
                if bound is None:
                    raise SystemExit(f"flowplane rpm server: cannot listen on {s.cfg.protocol} {s.cfg.port}")
                print(f"listening {s.cfg.protocol} {bound[0]} {bound[1]}", flush=True)
            if args.duration is not None:
                await trio.sleep(args.duration)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    status = [s.status() for s in probe_servers]
    if args.json:
        print(json.dumps({"servers": status}, indent=2, sort_keys=True))
    else:
        for s in status:
            print(f"{s['protocol']} {s['port']}: " + (", ".join(f"{k} {v}" for k, v in s["counters"].items()) or "-"))
    return 0

"""``flowplane twamp client|server``: one-shot TWAMP tools beside the service (like twping and twampd).

::

    flowplane twamp server --listen 127.0.0.1:8620 --mode open,auth,encrypted --secret-file F
    flowplane twamp client 127.0.0.1:8620 --count 10 --interval 100 --mode encrypted --secret-file F [--json]
    flowplane twamp server --light --listen 127.0.0.1:8620 [--light-mode stateless|per-sender]
    flowplane twamp client 127.0.0.1:8620 --light --count 10 --interval 100 [--json]

The secret file holds one secret (any KeyID) or lines ``KEYID SECRET``; the client sends ``--key-id``
(default ``twamp``) and the secret of the first line that names it, or the only secret.
The plugin adds the subcommand through ``flowplane_register_cli_subcommands``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from flowplane.api import split_host_port

MODES = {"open": 1, "none": 1, "unauthenticated": 1, "auth": 2, "authenticated": 2, "encrypted": 4, "enc": 4}


def add_parser(subparsers) -> Any:
    p = subparsers.add_parser("twamp", help="one-shot TWAMP client or server (RFC 5357), like twping / twampd")
    sub = p.add_subparsers(dest="twamp_command", metavar="client|server")
    c = sub.add_parser("client", help="run one test against a TWAMP server and print RTT, jitter and loss")
    c.add_argument("server", metavar="HOST[:PORT]", help="TWAMP server (port 862 by default; IPv6 as [addr]:port)")
    c.add_argument("--count", type=int, default=10, help="test packets (default 10)")
    c.add_argument("--interval", type=float, default=100.0, help="milliseconds between packets (default 100)")
    c.add_argument("--mode", choices=("open", "auth", "encrypted"), default="open")
    c.add_argument("--secret-file", help="shared secret (auth and encrypted modes)")
    c.add_argument("--key-id", default="twamp", help="KeyID sent in Set-Up-Response (default twamp)")
    c.add_argument("--padding", type=int, default=None,
                   help="padding octets (default: symmetric sizes, 27 open / 64 auth)")
    c.add_argument("--dscp", type=int, default=0, help="DSCP of the test packets (0..63)")
    c.add_argument("--wait", type=float, default=1.0, help="seconds to wait for the last replies (default 1)")
    c.add_argument("--json", action="store_true", help="print the statistics as JSON")
    c.add_argument("--light", action="store_true",
                   help="TWAMP Light (RFC 5357 appendix I): test packets straight to a Light reflector, no control")
    s = sub.add_parser("server", help="run a TWAMP server (control + reflector) in the foreground")
    s.add_argument("--listen", default="0.0.0.0:862", metavar="HOST:PORT", help="default 0.0.0.0:862")
    s.add_argument("--mode", default="open", help="comma-separated: open, auth, encrypted (default open)")
    s.add_argument("--secret-file", help="one secret, or lines 'KEYID SECRET'")
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    s.add_argument("--json", action="store_true", help="print the final status as JSON")
    s.add_argument("--light", action="store_true",
                   help="run a TWAMP Light reflector (UDP, no control connection) on --listen instead")
    s.add_argument("--light-mode", choices=("per-sender", "stateless"), default="per-sender",
                   help="Light reflector sequence numbers: own per sender (default) or copied from the sender")
    return p


def read_secrets(path: str) -> dict[str, bytes]:
    with open(path, "rb") as fh:
        lines = [ln.strip() for ln in fh.read().splitlines() if ln.strip() and not ln.startswith(b"#")]
    if len(lines) == 1 and len(lines[0].split()) == 1:
        return {"*": lines[0]}
    out = {}
    for ln in lines:
        kid, _, secret = ln.partition(b" ")
        out[kid.decode()] = secret.strip()
    return out


def format_result(d: dict) -> str:
    """The one-shot test's statistics, in the block ``show services rpm twamp client probe-results`` prints."""
    from .commands import format_test

    lines = [f"TWAMP test to {d['server']}:{d['port']} ({d['mode']}), reflector port {d['test_port']}"]
    lines += format_test("Test", {**d["test"], "test": 1})
    hops = d.get("hops", {}).get("forward")
    if hops is not None:
        lines.append(f"    Hops (forward): {hops}")
    if d.get("errors"):
        lines.append("    Errors: " + ", ".join(f"{k} {v}" for k, v in d["errors"].items()))
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import trio

    if getattr(args, "twamp_command", None) == "client":
        return _client(args, trio)
    if getattr(args, "twamp_command", None) == "server":
        return _server(args, trio)
    print("usage: flowplane twamp client|server ...", file=sys.stderr)
    return 2


def _client(args, trio) -> int:
    from .client import TwampError, run_test

    host, port = split_host_port(args.server, 862)
    if getattr(args, "light", False):
        from .client import run_light

        try:
            result = trio.run(lambda: run_light(host, port, count=args.count, interval_ms=args.interval,
                                                padding=args.padding, dscp=args.dscp, wait=args.wait))
        except (TwampError, OSError, ValueError) as exc:
            print(f"flowplane twamp client: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
        stats = result.stats()
        print(json.dumps(stats, indent=2) if args.json else format_result(stats), end="" if not args.json else "\n")
        return 0 if stats["received"] else 1
    mode = MODES[args.mode]
    secret = None
    if mode != 1:
        if not args.secret_file:
            print("flowplane twamp client: --mode auth/encrypted needs --secret-file", file=sys.stderr)
            return 2
        secrets = read_secrets(args.secret_file)
        secret = secrets.get(args.key_id) or secrets.get("*") or next(iter(secrets.values()))
    try:
        result = trio.run(lambda: run_test(host, port, mode=mode, key_id=args.key_id, secret=secret,
                                           count=args.count, interval_ms=args.interval, padding=args.padding,
                                           dscp=args.dscp, wait=args.wait))
    except (TwampError, OSError, trio.TooSlowError, EOFError, ValueError) as exc:
        print(f"flowplane twamp client: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    stats = result.stats()
    print(json.dumps(stats, indent=2) if args.json else format_result(stats), end="" if not args.json else "\n")
    return 0 if stats["received"] else 1


def _server(args, trio) -> int:
    from .commands import format_server
    from .config import ServerConfig
    from .server import TwampServer

    host, port = split_host_port(args.listen, 862)
    if getattr(args, "light", False):
        return _light_server(args, trio, host, port)
    modes = 0
    for m in args.mode.split(","):
        if m.strip() not in MODES:
            print(f"flowplane twamp server: unknown mode {m!r}; expected open, auth, encrypted", file=sys.stderr)
            return 2
        modes |= MODES[m.strip()]
    secrets = read_secrets(args.secret_file) if args.secret_file else {}
    if modes & 6 and not secrets:
        print("flowplane twamp server: auth/encrypted modes need --secret-file", file=sys.stderr)
        return 2
    server = TwampServer(ServerConfig(port=port, address=host, modes=modes, secrets=secrets))
    return _serve(args, trio, server, "TWAMP server", format_server)


def _light_server(args, trio, host: str, port: int) -> int:
    from .config import LightConfig
    from .light import LightReflector, format_status

    reflector = LightReflector(LightConfig(port=port, address=host, mode=args.light_mode))
    return _serve(args, trio, reflector, "TWAMP Light reflector", format_status, suffix=f" ({args.light_mode})")


def _serve(args, trio, server, label: str, formatter, *, suffix: str = "") -> int:
    """Run *server* in the foreground until SIGINT/SIGTERM or --duration, then print its status."""

    async def main() -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(server.run)
                print(f"{label} listening on {bound[0]}:{bound[1]}{suffix}", flush=True)

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                if args.duration:
                    await trio.sleep(args.duration)
                    nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except OSError as exc:
        print(f"flowplane twamp server: {exc}", file=sys.stderr)
        return 1
    status = server.status()
    print(json.dumps(status, indent=2) if args.json else formatter(status), end="" if not args.json else "\n")
    return 0

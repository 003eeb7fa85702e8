"""Command line: ``flowplane run | check-config | show | clear | request | test | plugins``.  Wiring only."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

DEFAULT_CONFIG = "/etc/flowplane/flowplane.yaml"
DEFAULT_REPORTS = ("show firewall", "show services accounting errors", "show services accounting flow",
                   "show services accounting status", "show services flow-collector",
                   "show services flow-collector flows limit 10")


def plugin_cli_commands(plugins=()) -> dict:
    """Subcommands plugins add (``flowplane_register_cli_subcommands``): name -> (add_parser, run)."""
    from .errors import PluginError
    from .pluginmanager import blocked_from_env, make_plugin_manager

    found: dict = {}

    def register(name: str, add_parser, run) -> None:
        if name in found or name in BUILTIN_COMMANDS:
            raise PluginError(f"CLI command {name!r} registered twice")
        found[name] = (add_parser, run)

    try:
        pm = make_plugin_manager(blocked=blocked_from_env(), plugins=plugins)
        pm.hook.flowplane_register_cli_subcommands(register=register)
    except PluginError as exc:  # the built-in commands still work; `flowplane plugins` shows the cause
        print(f"flowplane: plugin CLI commands unavailable: {exc}", file=sys.stderr)
    return found


BUILTIN_COMMANDS = ("run", "check-config", "show", "clear", "request", "test", "plugins", "replay", "top", "collect")


def _parser(plugin_commands: dict | None = None) -> argparse.ArgumentParser:
    plugin_commands = plugin_commands or {}
    p = argparse.ArgumentParser(prog="flowplane", description="Open software appliance for network flow monitoring.")
    p.add_argument("--version", dest="show_version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the appliance in the foreground (the systemd service runs this)")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument("--speed", type=float, default=0.0,
                     help="pcap sources: 0 = as fast as possible (default), 1 = capture speed, 2 = twice as fast")
    run.add_argument("--exit-on-eof", action="store_true",
                     help="stop (flushing everything) once every source is a finished file, then print reports")
    run.add_argument("--report", action="append", metavar="'show ...'",
                     help=f"command to print after --exit-on-eof (repeatable; default: {', '.join(DEFAULT_REPORTS)})")
    run.add_argument("--json", action="store_true", help="print the --exit-on-eof reports as JSON")
    run.add_argument("--log-format", choices=("auto", "json", "console"), help="override system log format")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override system log level")

    chk = sub.add_parser("check-config", help="validate a config file and exit non-zero on error")
    chk.add_argument("file")

    for verb in ("show", "clear", "request", "test"):
        sp = sub.add_parser(verb, help=f"{verb} ... on the running service (over the control socket)")
        sp.add_argument("words", nargs="*", help="e.g. 'firewall filter F1'")
        sp.add_argument("--json", action="store_true", help="print JSON instead of text")
        sp.add_argument("-s", "--socket", help="control socket path (default: from the config, or $FLOWPLANE_SOCKET)")
        sp.add_argument("-c", "--config", help="read the control socket path from this config file")

    rp = sub.add_parser("replay", help="run a pcap through the flow engine and export every flow (like softflowd -r)")
    rp.add_argument("pcap")
    rp.add_argument("--export", action="append", required=True, metavar="HOST:PORT",
                    help="flow server (repeatable: the same records go to each)")
    rp.add_argument("--version", type=int, choices=(5, 8, 9, 10), default=10, help="export format (default 10, IPFIX)")
    rp.add_argument("--transport", choices=("udp", "tcp"), default="udp", help="tcp for IPFIX only")
    rp.add_argument("--sampling-rate", type=int, default=1, help="sample 1 in N packets (deterministic)")
    rp.add_argument("--active-timeout", type=int, default=60, help="seconds (default 60)")
    rp.add_argument("--inactive-timeout", type=int, default=15, help="seconds (default 15)")
    rp.add_argument("--tcp-end-grace", type=float, default=0.0, help="seconds a flow lives after FIN/RST")
    rp.add_argument("--aggregation", choices=("autonomous-system", "protocol-port", "source-prefix",
                                              "destination-prefix", "source-destination-prefix"), help="v8 scheme")
    rp.add_argument("--engine-id", type=int, default=0)
    rp.add_argument("--engine-type", type=int, default=0)
    rp.add_argument("--max-flows", type=int, default=1_000_000, help="flow table size")
    rp.add_argument("--speed", type=float, default=0.0, help="0 = as fast as possible, 1 = capture speed")
    rp.add_argument("--print-config", action="store_true", help="print the equivalent config file and exit")

    tp = sub.add_parser("top", help="live top talkers of the running service's flow caches")
    tp.add_argument("--interval", type=float, default=1.0)
    tp.add_argument("--limit", type=int, default=20)
    tp.add_argument("--order", choices=("bytes", "packets"), default="bytes")
    tp.add_argument("--once", action="store_true", help="print one screen and exit")
    tp.add_argument("-s", "--socket", help="control socket path")
    tp.add_argument("-c", "--config", help="read the control socket path from this config file")

    from .collect import add_parser as add_collect_parser

    add_collect_parser(sub)
    for name, (add_parser, _) in plugin_commands.items():
        add_parser(sub)

    pl = sub.add_parser("plugins", help="list plugins, versions, hooks and what each registered")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("-c", "--config", help="apply this config's 'system plugins disable'")
    return p


def main(argv: Sequence[str] | None = None, *, plugins=()) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    builtin = bool(argv) and argv[0] in BUILTIN_COMMANDS + ("--version", "-h", "--help")
    plugin_commands = {} if builtin else plugin_cli_commands(plugins)  # only load plugins when needed
    args = _parser(plugin_commands).parse_args(argv)
    if args.show_version:
        from . import __version__

        print(f"flowplane {__version__}")
        return 0
    if args.command is None:
        _parser(plugin_commands).print_help()
        return 2
    handlers = {"run": cmd_run, "check-config": cmd_check_config, "show": cmd_control, "clear": cmd_control,
                "request": cmd_control, "test": cmd_control, "plugins": cmd_plugins, "replay": cmd_replay,
                "top": cmd_top, "collect": cmd_collect}
    handlers.update({name: run for name, (_, run) in plugin_commands.items()})
    handler = handlers[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _load_app(path: str):
    from .app import App
    from .config import Config

    config = Config.load(path)
    return App.create(config)


def cmd_check_config(args) -> int:
    from .errors import ConfigError, PluginError

    try:
        app = _load_app(args.file)
        errors = app.validate()
        if not errors:
            app.build_graph(app.config)  # compile too: what validates must also build
    except ConfigError as exc:
        errors = exc.lines
    except PluginError as exc:
        errors = [f"{args.file}: {exc}"]
    if errors:
        for line in errors:
            print(line, file=sys.stderr)
        print(f"{args.file}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: configuration check succeeds")
    return 0


def cmd_run(args) -> int:
    from . import logging as fplog
    from .errors import ConfigError, PluginError
    from .sdnotify import Notifier
    from .service import run_service

    notifier = Notifier.from_env()
    try:
        app = _load_app(args.config)
        fmt = args.log_format or app.config.get("system", "log", "format", default="auto")
        level = args.log_level or app.config.get("system", "log", "level", default="info")
        fplog.configure(fmt=fmt, level=level, stream=sys.stderr if args.exit_on_eof else sys.stdout)
        app.configure()
    except (ConfigError, PluginError) as exc:
        lines = exc.lines if isinstance(exc, ConfigError) else [str(exc)]
        for line in lines:
            print(line, file=sys.stderr)
        return 1
    reports = args.report or (list(DEFAULT_REPORTS) if args.exit_on_eof else [])

    def print_reports(app) -> None:
        for words in reports:
            # the default reports leave out what this config does not have (e.g. no sampling)
            print_command(app, words.split(), as_json=args.json, quiet_errors=not args.report)

    try:
        return run_service(app, notifier=notifier, speed=args.speed, exit_on_eof=args.exit_on_eof, after=print_reports)
    except (OSError, PluginError, ValueError) as exc:  # e.g. a source that cannot open its interface or file
        import structlog

        structlog.get_logger("flowplane").error("start_failed", error=f"{type(exc).__name__}: {exc}")
        print(f"flowplane: cannot start: {exc}", file=sys.stderr)
        return 1


def print_command(app, words: list[str], *, as_json: bool = False, quiet_errors: bool = False) -> None:
    """Run a registered command in-process and print it (used after --exit-on-eof)."""
    from .control import ControlServer

    reply = ControlServer(app, "").handle({"cmd": words, "format": "json" if as_json else "text"})
    if quiet_errors and not reply.get("ok"):
        return
    _print_reply(reply, as_json, words)


def _print_reply(reply: dict, as_json: bool, words: list[str]) -> int:
    if not reply.get("ok"):
        print(f"error: {reply.get('error')}", file=sys.stderr)
        return 1
    if as_json or reply.get("text") is None:
        print(json.dumps(reply.get("data"), indent=2, sort_keys=False, default=str))
    else:
        sys.stdout.write(reply["text"])
    return 0


def _socket_path(args) -> str:
    if args.socket:
        return args.socket
    if os.environ.get("FLOWPLANE_SOCKET"):
        return os.environ["FLOWPLANE_SOCKET"]
    cfg_path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    if cfg_path:
        from .config import Config

        try:
            sock = Config.load(cfg_path).get("system", "control-socket")
            if isinstance(sock, str):
                return sock
        except Exception:
            pass
    from .app import DEFAULTS

    return DEFAULTS["control-socket"]


def cmd_control(args) -> int:
    from .control import request

    from .control import fallback_path

    words = [args.command, *args.words]
    path = _socket_path(args)
    if not os.path.exists(path) and os.path.exists(fallback_path(path)):
        path = fallback_path(path)
    try:
        reply = request(path, words, fmt="json" if args.json else "text")
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"flowplane: cannot reach the service at {path} (is it running? use -s PATH)", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"flowplane: permission denied on {path} (join the flowplane group)", file=sys.stderr)
        return 2
    except (OSError, ConnectionError) as exc:
        print(f"flowplane: control socket error: {exc}", file=sys.stderr)
        return 2
    return _print_reply(reply, args.json, words)


def cmd_replay(args) -> int:
    from .replay import run_replay

    return run_replay(args)


def cmd_collect(args) -> int:
    from .collect import run_collect

    return run_collect(args)


def cmd_top(args) -> int:
    from .control import fallback_path, request
    from .top import run_top

    path = _socket_path(args)
    if not os.path.exists(path) and os.path.exists(fallback_path(path)):
        path = fallback_path(path)
    try:
        return run_top(path, interval=args.interval, limit=args.limit, order=args.order, once=args.once, request=request)
    except (OSError, ConnectionError) as exc:
        print(f"flowplane: cannot reach the service at {path}: {exc}", file=sys.stderr)
        return 2


def cmd_plugins(args) -> int:
    from .app import App
    from .config import Config
    from .errors import ConfigError, PluginError
    from .pluginmanager import BUILTIN_PLUGINS

    try:
        config = Config.load(args.config) if args.config else Config()
        app = App.create(config)
    except (ConfigError, PluginError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    table = app.plugin_table()
    for row in table:
        row["builtin"] = row["name"] in BUILTIN_PLUGINS
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for row in table:
        kind = "built-in" if row["builtin"] or row["name"] == "flowplane" else ("blocked" if row.get("blocked") else "third-party")
        print(f"{row['name']} {row['version']} ({kind}, {row['module']})")
        if row["hooks"]:
            print(f"    hooks: {', '.join(row['hooks'])}")
        for what, names in sorted(row["registered"].items()):
            print(f"    {what}: {', '.join(names)}")
    return 0

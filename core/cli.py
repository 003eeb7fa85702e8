"""Command line: ``flowplane run | check-config | show | clear | request | test | plugins``.  Wiring only.

Every other subcommand comes from a plugin (:mod:`flowplane.subcommands`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .config import DEFAULT_CONFIG
from .subcommands import CORE_COMMANDS, Subcommand, missing_message, plugin_subcommands


def _parser(subcommands: dict[str, Subcommand] | None = None) -> argparse.ArgumentParser:
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
                     help="command to print after --exit-on-eof (repeatable; default: the commands the plugins "
                          "declare as reports, those this config has)")
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

    for subcommand in sorted((subcommands or {}).values(), key=lambda c: c.name):
        subcommand.add_parser(sub)

    pl = sub.add_parser("plugins", help="list plugins, versions, hooks and what each registered")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("-c", "--config", help="apply this config's 'system plugins disable'")
    return p


def main(argv: Sequence[str] | None = None, *, plugins=()) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0] if argv else ""
    core = first in CORE_COMMANDS or first == "--version"
    subcommands = {} if core else plugin_subcommands(plugins)  # plugins load only for their commands and --help
    if first and not first.startswith("-") and not core and first not in subcommands:
        message = missing_message(first)
        if message:
            print(message, file=sys.stderr)
            return 2
    args = _parser(subcommands).parse_args(argv)
    if args.show_version:
        from . import __version__

        print(f"flowplane {__version__}")
        return 0
    if args.command is None:
        _parser(subcommands).print_help()
        return 2
    handlers = {"run": cmd_run, "check-config": cmd_check_config, "show": cmd_control, "clear": cmd_control,
                "request": cmd_control, "test": cmd_control, "plugins": cmd_plugins}
    handlers.update({name: c.run for name, c in subcommands.items()})
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
    from .service import StartFailed, run_service

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
    reports = args.report or (app.registries.commands.reports() if args.exit_on_eof else [])

    def print_reports(app) -> None:
        for words in reports:
            # the default reports leave out what this config does not have (e.g. no sampling)
            print_command(app, words.split(), as_json=args.json, quiet_errors=not args.report)

    try:
        return run_service(app, notifier=notifier, speed=args.speed, exit_on_eof=args.exit_on_eof, after=print_reports)
    except StartFailed as exc:  # e.g. a listener that cannot bind, a source that cannot open its interface
        import structlog

        structlog.get_logger("flowplane").error("start_failed", error=str(exc))
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


def cmd_control(args) -> int:
    from .control import request, resolve_socket

    words = [args.command, *args.words]
    path = resolve_socket(args.socket, args.config)
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
    rows = {row["name"]: row for row in table if not row.get("blocked")}
    for subcommand in sorted(plugin_subcommands().values(), key=lambda c: c.name):
        if subcommand.plugin in rows:
            rows[subcommand.plugin]["registered"].setdefault("cli subcommands", []).append(subcommand.name)
    for row in table:
        row["builtin"] = row["name"] in BUILTIN_PLUGINS
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for row in table:
        kind = ("built-in" if row["builtin"] or row["name"] == "flowplane"
                else "blocked" if row.get("blocked") else "third-party")
        print(f"{row['name']} {row['version']} ({kind}, {row['module']})")
        if row["hooks"]:
            print(f"    hooks: {', '.join(row['hooks'])}")
        for what, names in sorted(row["registered"].items()):
            print(f"    {what}: {', '.join(names)}")
    return 0

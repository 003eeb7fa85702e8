"""Run a plugin's foreground one-shot tool (a ``flowplane SUBCOMMAND`` that starts the engine) from a
config it builds in memory: the same App and Service as ``flowplane run``, with the control socket in
a temporary directory, ``--print-config`` support and the tool's own summary at the end."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable

import yaml


def run_oneshot(name: str, build: Callable[[str], dict], *, print_config: bool = False,
                plugins: Iterable[tuple[object, str]] = (), check: Callable | None = None,
                after: Callable | None = None, speed: float = 0.0, exit_on_eof: bool = False) -> int:
    """Build, validate and run the service until its sources end (*exit_on_eof*), a signal, or
    ``app.request_stop()``; return the exit code.

    :param name: the tool's name, for messages and the temporary directory.
    :param build: ``build(control_socket_path) -> dict``, the config to run.
    :param print_config: print that config as YAML and return 0 instead.
    :param plugins: extra ``(plugin, name)`` pairs for this run (progress bars, stop conditions).
    :param check: ``check(app) -> str | None``; a message refuses to start.
    :param after: ``after(app)`` runs once the service stopped (the tool's summary).
    """
    from . import logging as fplog
    from .app import App
    from .config import Config
    from .errors import ConfigError, PluginError
    from .sdnotify import Notifier
    from .service import StartFailed, run_service

    with tempfile.TemporaryDirectory(prefix=f"flowplane-{name}-") as tmp:
        cfg = build(os.path.join(tmp, "control.sock"))
        if print_config:
            cfg["system"].pop("control-socket")
            print(yaml.safe_dump(cfg, sort_keys=False), end="")
            return 0
        fplog.configure(fmt="console" if sys.stderr.isatty() else "json", level="warning", stream=sys.stderr)
        try:
            config = Config.from_text(yaml.safe_dump(cfg, sort_keys=False), path=f"<{name}>")
            app = App.create(config, plugins=plugins)
            problem = check(app) if check else None
            if problem:
                print(f"flowplane {name}: {problem}", file=sys.stderr)
                return 1
            app.configure()
        except (ConfigError, PluginError) as exc:
            for line in getattr(exc, "lines", [str(exc)]):
                print(line, file=sys.stderr)
            return 1
        try:
            return run_service(app, notifier=Notifier(None), speed=speed, exit_on_eof=exit_on_eof, after=after)
        except (StartFailed, OSError, ValueError, PluginError) as exc:
            print(f"flowplane {name}: {exc}", file=sys.stderr)
            return 1

"""``flowplane SUBCOMMAND`` tools that plugins add (``flowplane_register_cli_subcommands``).

The core CLI knows only its own commands (:data:`CORE_COMMANDS`); every other
subcommand, and its ``--help``, comes from an enabled plugin.  A subcommand of
a disabled plugin is absent, and :func:`disabled_owner` names that plugin when
someone invokes it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import ENTRYPOINT_GROUP
from .errors import PluginError

#: The commands of the core CLI; a plugin cannot take these names.
CORE_COMMANDS = ("run", "check-config", "show", "clear", "request", "test", "plugins")


@dataclass(frozen=True)
class Subcommand:
    name: str
    plugin: str
    add_parser: Callable[[Any], Any]  # add_parser(subparsers) adds the argparse subparser
    run: Callable[[Any], int]  # run(args) -> exit code


def plugin_subcommands(plugins: Iterable[tuple[object, str]] = ()) -> dict[str, Subcommand]:
    """Every subcommand the enabled plugins register, by name.

    A plugin whose registration fails, or that takes a name already taken,
    loses its subcommands with a message on stderr; the others still work.
    """
    from .pluginmanager import blocked_from_env, make_plugin_manager

    try:
        pm = make_plugin_manager(blocked=blocked_from_env(), plugins=plugins)
    except PluginError as exc:  # the core commands still work; `flowplane plugins` shows the cause
        print(f"flowplane: plugin CLI commands unavailable: {exc}", file=sys.stderr)
        return {}
    found: dict[str, Subcommand] = {}
    for impl in reversed(pm.hook.flowplane_register_cli_subcommands.get_hookimpls()):
        mine: dict[str, Subcommand] = {}

        def register(name: str, add_parser: Callable, run: Callable, _plugin: str = impl.plugin_name,
                     _mine: dict[str, Subcommand] = mine) -> None:
            taken = "the core" if name in CORE_COMMANDS else (
                f"plugin {found[name].plugin!r}" if name in found else f"plugin {_plugin!r}" if name in _mine else None)
            if taken:
                raise PluginError(f"CLI command {name!r} registered twice: by {taken} and by plugin {_plugin!r}")
            _mine[name] = Subcommand(name, _plugin, add_parser, run)

        try:
            impl.function(**{a: register for a in impl.argnames})
        except Exception as exc:
            print(f"flowplane: plugin {impl.plugin_name!r} CLI commands unavailable: {exc}", file=sys.stderr)
            continue
        found.update(mine)
    return found


def disabled_owner(name: str, environ: dict | None = None) -> str | None:
    """The disabled plugin (``$FLOWPLANE_DISABLED_PLUGINS``) whose subcommand *name* would be, if any."""
    from importlib import metadata

    from .pluginmanager import blocked_from_env, make_plugin_manager

    blocked = set(blocked_from_env(environ))
    for ep in sorted(metadata.entry_points(group=ENTRYPOINT_GROUP), key=lambda e: e.name):
        if ep.name not in blocked:
            continue
        names: list[str] = []
        try:
            pm = make_plugin_manager(load_entrypoints=False, plugins=[(ep.load(), ep.name)])
            pm.hook.flowplane_register_cli_subcommands(register=lambda n, *_a, **_k: names.append(n))  # noqa: B023  (called within this iteration)
        except Exception:  # a plugin that cannot even load owns nothing we can name
            continue
        if name in names:
            return ep.name
    return None


def missing_message(name: str) -> str | None:
    """The error for a subcommand that only a disabled plugin has, or None."""
    from .pluginmanager import DISABLED_ENV

    owner = disabled_owner(name)
    if owner is None:
        return None
    return f"flowplane: {name!r} comes from plugin {owner!r}, which is disabled ({DISABLED_ENV})"

"""Operational commands (``show ...``, ``clear ...``, ``request ...``).

Plugins register commands in ``flowplane_register_control_commands``::

    register("show firewall", show_firewall, help="filter and term counters",
             formatter=format_show_firewall)

``fn(app, args)`` returns plain data (msgpack-able); ``args`` is the list of
words after the command (``show firewall filter F1`` -> ``["filter", "F1"]``),
parse them with :func:`parse_words`.  The control socket runs the command in
the daemon and renders text with ``formatter`` unless ``--json`` was asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .registry import Registry


class CommandError(Exception):
    """Bad arguments or an unknown command; the message goes back to the CLI user."""


@dataclass(frozen=True)
class Command:
    words: str
    fn: Callable[[Any, list[str]], Any]
    help: str = ""
    formatter: Callable[[Any], str] | None = None


class CommandRegistry(Registry[Command]):
    """Registry keyed by the command's words; resolves the longest prefix."""

    def __init__(self) -> None:
        super().__init__("command")

    def register(self, words: str, fn: Any = None, help: str = "", formatter: Callable | None = None) -> None:  # type: ignore[override]
        key = " ".join(words.split())
        cmd = fn if isinstance(fn, Command) else Command(key, fn, help, formatter)
        super().register(key, cmd)

    def __call__(self, words: str, fn: Any = None, help: str = "", formatter: Callable | None = None) -> None:  # type: ignore[override]
        self.register(words, fn, help=help, formatter=formatter)

    def resolve(self, words: list[str]) -> tuple[Command, list[str]]:
        """The command whose words are the longest prefix of *words*, and the rest."""
        for cut in range(len(words), 0, -1):
            key = " ".join(words[:cut])
            if key in self:
                return self[key], list(words[cut:])
        prefix = " ".join(words)
        near = [k for k in self if k.startswith(prefix)] or [k for k in self if words and k.split()[0] == words[0]]
        hint = f"; possible completions: {', '.join(near)}" if near else ""
        raise CommandError(f"unknown command {prefix!r}{hint}")


def parse_words(args: list[str], *, values: dict[str, type] | None = None, flags: tuple[str, ...] = ()) -> dict:
    """Junos-style arguments: ``filter F1 limit 10 detail`` -> ``{"filter": "F1", "limit": 10, "detail": True}``."""
    values = values or {}
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        w = args[i]
        if w in flags:
            out[w] = True
            i += 1
        elif w in values:
            if i + 1 >= len(args):
                raise CommandError(f"'{w}' needs a value")
            try:
                out[w] = values[w](args[i + 1])
            except ValueError as exc:
                raise CommandError(f"bad value for '{w}': {args[i + 1]!r}") from exc
            i += 2
        else:
            known = sorted(list(values) + list(flags))
            raise CommandError(f"unexpected argument {w!r}" + (f"; expected one of: {', '.join(known)}" if known else ""))
    return out

"""Operational commands (``show ...``, ``clear ...``, ``request ...``).

Plugins register commands in ``flowplane_register_control_commands``::

    register("show firewall", show_firewall, help="filter and term counters",
             formatter=format_show_firewall, report=True)

``report=True`` (or ``report="limit 10"``, the arguments to run it with) makes
the command one of the reports ``flowplane run --exit-on-eof`` prints when no
``--report`` is given; reports print in the order of their command lines.

``fn(app, args)`` returns plain data (msgpack-able); ``args`` is the list of
words after the command (``show firewall filter F1`` -> ``["filter", "F1"]``),
parse them with :func:`parse_words`.  The control socket runs the command in
the daemon and renders text with ``formatter`` unless ``--json`` was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .registry import Registry


class CommandError(Exception):
    """Bad arguments or an unknown command; the message goes back to the CLI user."""


def configured_object(app: Any, name: str, missing: str) -> Any:
    """The feature object registered as *name* (``app.pm.register(obj, name=...)``); a CommandError
    with the text *missing* when the feature is not configured."""
    obj = app.pm.get_plugin(name)
    if obj is None:
        raise CommandError(missing)
    return obj


def known_instance(name: str | None, known: Iterable[str], what: str) -> str | None:
    """*name* (None: every instance) when it is one of *known*; else a CommandError naming the configured
    ones (``no port-mirroring instance 'x'; configured: a, b``, *what* being ``port-mirroring instance``)."""
    names = list(known)
    if name is not None and name not in names:
        raise CommandError(f"no {what} {name!r}; configured: {', '.join(names) or 'none'}")
    return name


@dataclass(frozen=True)
class Command:
    words: str
    fn: Callable[[Any, list[str]], Any]
    help: str = ""
    formatter: Callable[[Any], str] | None = None
    report: str | None = None  # the command line printed after --exit-on-eof, if the command is a report


def _report_line(words: str, report: bool | str | None) -> str | None:
    if report is None or report is False:
        return None
    if report is True:
        return words
    if isinstance(report, str):
        return " ".join([words, *report.split()])
    raise TypeError(f"command {words!r}: report must be True or a string of arguments, not {report!r}")


class CommandRegistry(Registry[Command]):
    """Registry keyed by the command's words; resolves the longest prefix."""

    def __init__(self) -> None:
        super().__init__("command")
        self._longest = 0  # words in the longest registered command: resolve never looks further


    def register(  # type: ignore[override]
        self, words: str, fn: Any = None, help: str = "", formatter: Callable | None = None,
        report: bool | str | None = None,
    ) -> None:
        key = " ".join(words.split())
        cmd = fn if isinstance(fn, Command) else Command(key, fn, help, formatter, _report_line(key, report))
        super().register(key, cmd)
        self._longest = max(self._longest, len(key.split()))

    def __call__(  # type: ignore[override]
        self, words: str, fn: Any = None, help: str = "", formatter: Callable | None = None,
        report: bool | str | None = None,
    ) -> None:
        self.register(words, fn, help=help, formatter=formatter, report=report)

    def reports(self) -> list[str]:
        """The command lines ``flowplane run --exit-on-eof`` prints by default, in sorted order."""
        return sorted(cmd.report for _, cmd in self.items() if cmd.report)

    def resolve(self, words: list[str]) -> tuple[Command, list[str]]:
        """The command whose words are the longest prefix of *words*, and the rest.

        Linear in the request: only prefixes as long as the longest registered command are tried.
        """
        for cut in range(min(len(words), self._longest), 0, -1):
            key = " ".join(words[:cut])
            if key in self:
                return self[key], list(words[cut:])
        prefix = " ".join(words[: self._longest + 1])
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
            hint = f"; expected one of: {', '.join(known)}" if known else ""
            raise CommandError(f"unexpected argument {w!r}{hint}")
    return out

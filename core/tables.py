"""Text for command formatters and labels: fixed-width tables (one row template gives the header and
the rows) and ``host:port`` endpoints."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from typing import Any


def host_port(host: str, port: int | str) -> str:
    """``host:port``, an IPv6 address in brackets (``[2001:db8::1]:4739``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    """``host:port`` or ``[v6]:port`` as ``(host, port)``; *default_port* when the text has no port (a bare
    name or address, ``[v6]``, or an IPv6 address without brackets).  A port that is not a number raises
    ValueError."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


#: the start of a format spec: fill and alignment, sign, ``z``, ``#``, ``0``, width
_SPEC_HEAD = re.compile(r"(?P<align>.?[<>^=])?[+\- ]?z?#?0?(?P<width>\d*)")


def _title_spec(spec: str) -> str:
    """The fill, alignment and width of *spec* (``">14,.1f"`` -> ``">14"``): what a title takes."""
    m = _SPEC_HEAD.match(spec)
    return (m.group("align") or "") + m.group("width") if m else ""


class Table:
    """A fixed-width table: its header line and its row lines from one row template.

    :param template: a ``str.format`` template of named fields with their specs and the literal text
        between them (``"  {name:<20}{sent:>8}{rate:>10,.1f}  {note}"``).
    :param titles: each field's column title; the header fills the template with the titles, aligned
        and padded as the field's spec says (the type part of a spec, ``,.1f``, applies to rows only).
    """

    def __init__(self, template: str, **titles: str) -> None:
        self.template = template
        head = []
        for literal, field, spec, _conv in string.Formatter().parse(template):
            head.append(literal.replace("{", "{{").replace("}", "}}"))
            if field is not None:
                title_spec = _title_spec(spec or "")
                head.append("{" + field + (":" + title_spec if title_spec else "") + "}")
        self.header = "".join(head).format(**titles)

    def row(self, values: Mapping[str, Any] | None = None, **more: Any) -> str:
        """One row line: *values* and *more* (which wins) give a value for every field."""
        return self.template.format(**{**(values or {}), **more})

    def lines(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """The header line, then one line per row."""
        return [self.header] + [self.template.format(**r) for r in rows]

"""Error types shared by the core and plugins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file.

    ``path`` is the key path from the document root, e.g.
    ``("firewall", "family", "inet", "filter", "F1", "term", "t1", "from", "protocol")``.
    ``message`` says what is wrong and what was expected.  The config loader
    turns the path into ``file:line:column`` (the deepest key of ``path`` that
    exists in the file).
    """

    path: tuple
    message: str


class ConfigError(Exception):
    """Raised by config loading/validation; carries every issue found, already formatted."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class PluginError(Exception):
    """A plugin failed in a rare hook (start, reload); the message names the plugin."""

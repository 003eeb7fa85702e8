"""Reading a config file within bounds: size, encoding, nesting depth and alias expansion.

A hostile or broken file is refused quickly with a ``FILE:LINE:COL`` message, never a traceback and
never gigabytes of memory: an alias chain ("billion laughs") is stopped once the nodes its aliases
stand for pass :data:`MAX_ALIAS_NODES`, long before they are expanded.
"""

from __future__ import annotations

import os

import yaml
from yaml.events import AliasEvent

from .errors import ConfigError

#: Largest config file read (bytes).
MAX_CONFIG_BYTES = 4 << 20
#: Deepest nesting of mappings and lists.
MAX_DEPTH = 64
#: Most nodes all aliases together may stand for (each alias counts the size of what it names).
MAX_ALIAS_NODES = 10_000


def read_text(path: str) -> str:
    """The file's text: at most :data:`MAX_CONFIG_BYTES`, UTF-8 (a bad byte is named by line and column)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: config file is {size} bytes; the limit is {MAX_CONFIG_BYTES}"])
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: config file is over {MAX_CONFIG_BYTES} bytes"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        bad = raw[exc.start]
        raise ConfigError([f"{path}:{line}:{col}: not UTF-8 text: byte 0x{bad:02x} ({exc.reason})"]) from None


def _line_col(data: bytes | str, offset: int) -> tuple[int, int]:
    nl = "\n" if isinstance(data, str) else b"\n"
    line = data.count(nl, 0, offset) + 1  # type: ignore[arg-type]
    col = offset - (data.rfind(nl, 0, offset) + 1) + 1  # type: ignore[arg-type]
    return line, col


class LimitError(yaml.MarkedYAMLError):
    """A bound of this module was passed; carries the position where it happened."""


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses deep nesting and alias expansion past the limits."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):  # noqa: D102 (PyYAML's hook)
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            self._alias_nodes += self._size(node)
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise LimitError(None, None, f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                                 "(an alias chain?); write the values out or use fewer aliases", event.start_mark)
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise LimitError(None, None, f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _size(self, node: yaml.Node) -> int:
        """Nodes under *node*, itself included (memoised: an alias chain is counted without expanding it)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(self._size(v) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = n
        return n


def compose(text: str, path: str) -> yaml.Node | None:
    """The node tree of *text*; every YAML problem and limit as a ConfigError with ``FILE:LINE:COL``."""
    loader = None
    try:
        loader = BoundedLoader(text)  # the reader checks every character here
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark
        where = f"{path}:{m.line + 1}:{m.column + 1}" if m else path
        kind = "config limit" if isinstance(exc, LimitError) else "YAML syntax error"
        raise ConfigError([f"{where}: {kind}: {exc.problem} {exc.context or ''}".rstrip()]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        raise ConfigError([f"{path}:{line}:{col}: YAML error: character #x{code:04x}: {exc.reason}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML error: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: config limit: nesting too deep (more than {MAX_DEPTH} levels)"]) from None
    finally:
        if loader is not None:
            loader.dispose()

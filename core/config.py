"""YAML configuration in the Junos hierarchy, with positions for every key.

``Config.load(path)`` parses the file keeping the line and column of every
key, so each :class:`~flowplane.errors.ConfigIssue` (a key path and a message)
is printed as ``FILE:LINE:COL: a.b.c: message``.

Junos shorthand: a key with spaces is a path, so ``family inet: {...}`` is
the same as ``family: {inet: {...}}`` and ``filter input: F1`` the same as
``filter: {input: F1}``.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable
from typing import Any

import yaml

from .errors import ConfigError, ConfigIssue
from .yaml_bounded import compose, read_text

#: The config file ``flowplane run`` reads, and clients read the control socket path from, by default.
DEFAULT_CONFIG = "/etc/flowplane/flowplane.yaml"

Path = tuple


class Config:
    """A parsed config: plain data plus the position of every key."""

    def __init__(self, data: dict | None = None, *, path: str = "<config>", marks: dict | None = None) -> None:
        self.data: dict = data if data is not None else {}
        self.path = path
        self.marks: dict[Path, tuple[int, int]] = marks or {}

    # -- loading ----------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> Config:
        return cls.from_text(read_text(path), path=path)

    @classmethod
    def from_text(cls, text: str, *, path: str = "<config>") -> Config:
        node = compose(text, path)
        builder = _Builder(path)
        data = builder.build(node, ()) if node is not None else {}
        if builder.issues:
            raise ConfigError(builder.issues)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([f"{path}:1:1: the config must be a mapping of sections "
                               "(system, interfaces, firewall, ...)"])
        return cls(data, path=path, marks=builder.marks)

    @property
    def base_dir(self) -> str:
        """Directory of the config file: relative paths in it resolve against this."""
        import os

        return os.path.dirname(os.path.abspath(self.path)) if not self.path.startswith("<") else os.getcwd()

    # -- access -----------------------------------------------------------
    def get(self, *keys: Any, default: Any = None) -> Any:
        cur: Any = self.data
        for k in keys:
            if isinstance(cur, dict) and k in cur:
                cur = cur[k]
            elif isinstance(cur, list) and isinstance(k, int) and -len(cur) <= k < len(cur):
                cur = cur[k]
            else:
                return default
        return cur

    def section(self, *keys: Any) -> dict:
        v = self.get(*keys)
        return v if isinstance(v, dict) else {}

    # -- positions and messages --------------------------------------------
    def where(self, path: Path) -> tuple[int, int] | None:
        """Line and column of the deepest key of *path* present in the file."""
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return None

    def format_issue(self, issue: ConfigIssue) -> str:
        pos = self.where(issue.path)
        loc = f"{self.path}:{pos[0]}:{pos[1]}" if pos else self.path
        keys = " ".join(str(k) for k in issue.path) or "(top)"
        return f"{loc}: {keys}: {issue.message}"

    def format_issues(self, issues: Iterable[ConfigIssue]) -> list[str]:
        ordered = sorted(issues, key=lambda i: (self.where(i.path) or (0, 0), tuple(map(str, i.path))))
        return [self.format_issue(i) for i in ordered]


class _Builder:
    """Turns a composed YAML node tree into plain data, recording key marks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.marks: dict[Path, tuple[int, int]] = {}
        self.issues: list[str] = []
        self._ctor = yaml.SafeLoader("")

    def _pos(self, node: yaml.Node) -> tuple[int, int]:
        return (node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            seen: dict[tuple, tuple[int, int]] = {}  # the keys of this mapping, as written
            for knode, vnode in node.value:
                key = self._scalar(knode)
                if key == "<<":
                    line, col = self._pos(knode)
                    self.issues.append(f"{self.path}:{line}:{col}: YAML merge keys are not supported")
                    continue
                words = str(key).split() if isinstance(key, str) and " " in str(key).strip() else [key]
                spelled = tuple(words)
                if spelled in seen:  # the same key twice in one mapping: the second would silently win
                    self._dup(knode, path + spelled, seen[spelled])
                    continue
                seen[spelled] = self._pos(knode)
                target = out
                sub = path
                for w in words[:-1]:
                    sub = sub + (w,)
                    self.marks.setdefault(sub, self._pos(knode))
                    nxt = target.setdefault(w, {})
                    if not isinstance(nxt, dict):
                        self._dup(knode, sub)
                        nxt = {}
                    target = nxt
                last = words[-1]
                sub = sub + (last,)
                value = self.build(vnode, sub)
                if last in target:
                    if isinstance(target[last], dict) and isinstance(value, dict):
                        _merge(target[last], value)
                        continue
                    self._dup(knode, sub)
                    continue
                self.marks[sub] = self._pos(knode)
                target[last] = value
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.marks[path + (i,)] = self._pos(item)
                items.append(self.build(item, path + (i,)))
            return items
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            try:
                return self._ctor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:  # e.g. a bad timestamp
                line, col = self._pos(node)
                self.issues.append(f"{self.path}:{line}:{col}: {exc}")
                return node.value
        line, col = self._pos(node)
        self.issues.append(f"{self.path}:{line}:{col}: a key must be a plain word, not a {node.id}")
        return f"<{node.id}>"

    def _dup(self, knode: yaml.Node, path: Path, first: tuple[int, int] | None = None) -> None:
        line, col = self._pos(knode)
        first = first or self.marks.get(path)
        where = f" (first at {self.path}:{first[0]}:{first[1]})" if first else ""
        self.issues.append(f"{self.path}:{line}:{col}: {' '.join(map(str, path))}: duplicate key{where}")


def _merge(into: dict, other: dict) -> None:
    for k, v in other.items():
        if k in into and isinstance(into[k], dict) and isinstance(v, dict):
            _merge(into[k], v)
        else:
            into[k] = v


# ---------------------------------------------------------------------------
# Small validation helpers shared by the core and plugins
# ---------------------------------------------------------------------------


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(section: Any, allowed: Iterable[str], path: Path, what: str = "key") -> list[ConfigIssue]:
    """Issues for keys of *section* not in *allowed*, with a suggestion."""
    if not isinstance(section, dict):
        return []
    allowed = list(allowed)
    out = []
    for k in section:
        if k not in allowed:
            out.append(ConfigIssue(path + (k,), f"unknown {what} {k!r}{suggest(k, allowed)}; "
                                                f"expected one of: {', '.join(sorted(allowed))}"))
    return out


def check_mapping(value: Any, path: Path, what: str) -> list[ConfigIssue]:
    if value is None or isinstance(value, dict):
        return []
    return [ConfigIssue(path, f"expected a mapping ({what}), got {type(value).__name__} {value!r}")]


def check_int(value: Any, path: Path, lo: int | None = None, hi: int | None = None, *,
              limit: str = "") -> list[ConfigIssue]:
    """An integer in ``[lo, hi]``; *limit* names the profile limit behind *hi*."""
    if isinstance(value, bool) or not isinstance(value, int):
        return [ConfigIssue(path, f"expected an integer, got {value!r}")]
    if lo is not None and value < lo:
        return [ConfigIssue(path, f"{value} is below the minimum {lo}")]
    if hi is not None and value > hi:
        why = f" (hardware profile limit {limit})" if limit else ""
        return [ConfigIssue(path, f"{value} exceeds the maximum {hi}{why}")]
    return []


def check_int_fields(section: dict, path: Path, fields: Iterable[tuple[str, str, int | None, int | None]],
                     into: Any) -> list[ConfigIssue]:
    """:func:`check_int` each ``(key, attr, lo, hi)`` of *fields* that *section* has; a valid value is
    stored as attribute *attr* of *into* (as item *attr* when *into* is a dict)."""
    issues: list[ConfigIssue] = []
    for key, attr, lo, hi in fields:
        if key in section:
            bad = check_int(section[key], path + (key,), lo, hi)
            issues += bad
            if bad:
                continue
            if isinstance(into, dict):
                into[attr] = section[key]
            else:
                setattr(into, attr, section[key])
    return issues


def check_address(value: Any, path: Path) -> tuple[str | None, list[ConfigIssue]]:
    """An IPv4 or IPv6 address: ``(its normal text, [])``, else ``(None, [the issue])``."""
    try:
        return str(ipaddress.ip_address(str(value))), []
    except ValueError:
        return None, [ConfigIssue(path, f"expected an IPv4 or IPv6 address, got {value!r}")]


def take_int(sec: dict, key: str, path: Path, issues: list[ConfigIssue], lo: int | None, hi: int | None,
             default: Any) -> Any:
    """``sec[key]`` :func:`check_int`-ed (its issues appended to *issues*); *default* when absent or bad."""
    if key not in sec:
        return default
    bad = check_int(sec[key], path + (key,), lo, hi)
    issues += bad
    return default if bad else sec[key]


def take_number(sec: dict, key: str, path: Path, issues: list[ConfigIssue], lo: float | None, hi: float | None,
                default: Any) -> Any:
    """``sec[key]`` :func:`check_number`-ed, as a float (its issues appended to *issues*); *default* when
    absent or bad."""
    if key not in sec:
        return default
    bad = check_number(sec[key], path + (key,), lo, hi)
    issues += bad
    return default if bad else float(sec[key])


def take_bool(sec: dict, key: str, path: Path, issues: list[ConfigIssue], default: bool = False) -> bool:
    """``sec[key]`` :func:`check_bool`-ed (its issues appended to *issues*); *default* when absent or bad."""
    if key not in sec:
        return default
    bad = check_bool(sec[key], path + (key,))
    issues += bad
    return default if bad else bool(sec[key])


def take_address(sec: dict, key: str, path: Path, issues: list[ConfigIssue]) -> str | None:
    """``sec[key]`` as :func:`check_address` normalises it (its issue appended to *issues*); None when
    absent or bad."""
    if key not in sec:
        return None
    addr, bad = check_address(sec[key], path + (key,))
    issues += bad
    return addr


def check_number(value: Any, path: Path, lo: float | None = None, hi: float | None = None) -> list[ConfigIssue]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [ConfigIssue(path, f"expected a number, got {value!r}")]
    if lo is not None and value < lo:
        return [ConfigIssue(path, f"{value} is below the minimum {lo}")]
    if hi is not None and value > hi:
        return [ConfigIssue(path, f"{value} exceeds the maximum {hi}")]
    return []


def check_bool(value: Any, path: Path) -> list[ConfigIssue]:
    if isinstance(value, bool):
        return []
    return [ConfigIssue(path, f"expected true or false, got {value!r}")]


def check_str(value: Any, path: Path, choices: Iterable[str] | None = None) -> list[ConfigIssue]:
    if not isinstance(value, str):
        return [ConfigIssue(path, f"expected a string, got {value!r}")]
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            return [ConfigIssue(path, f"unknown value {value!r}{suggest(value, choices)}; "
                                      f"expected one of: {', '.join(choices)}")]
    return []

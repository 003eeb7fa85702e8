"""Hardware profiles: what a platform allows, declared by profile plugins.

Limits are open: the core declares the data-path ones (:data:`CORE_LIMITS`) and every feature
plugin declares its own in ``flowplane_register_limits`` (name, default, help); capabilities are
declared the same way in ``flowplane_register_capabilities``.  A profile plugin registers a
:class:`HardwareProfile` in ``flowplane_register_profiles`` that fills limits by name and lists its
capabilities; a limit it does not fill keeps its declared default.  ``system hardware-profile``
picks one (default ``generic-linux``); config validation checks every feature against the
profile's :class:`Limits` and names the limit a value exceeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LimitField:
    """A declared limit.

    :param name: the attribute plugins read (``limits.max_batch``) and error messages quote.
    :param default: the value on a profile that does not set it.
    :param help: one line for ``show system profile``.
    """

    name: str
    default: Any
    help: str = ""


#: The core's own limits: the data path every feature shares.
CORE_LIMITS: tuple[LimitField, ...] = (
    LimitField("max_batch", 8192, "frames per packet batch"),
    LimitField("max_queue", 1024, "batches in a bounded channel"),
    LimitField("max_flows", 1_000_000, "flow cache entries per cache"),
    LimitField("sampling_rate_max", 16_000_000, "largest 1-in-N sampling rate"),
    LimitField("collectors_total", 256, "flow and packet export destinations in all"),
)


class Limits:
    """The limits of a hardware profile: every declared field, filled by the profile or defaulted.

    Read a limit as an attribute (``limits.max_batch``); a name nobody declared raises
    AttributeError naming the declared ones.  ``Limits(max_batch=16)`` holds the core limits with
    the values given; :meth:`of` adds a plugin's own fields (what a plugin's unit tests use).
    """

    __slots__ = ("_values", "_fields")

    def __init__(self, values: Mapping[str, Any] | None = None, fields: Iterable[LimitField] = (), **kw: Any) -> None:
        declared = {f.name: f for f in CORE_LIMITS}
        declared.update((f.name, f) for f in fields)
        given = {**(values or {}), **kw}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ValueError(f"unknown limit {unknown[0]!r}; declared limits: {', '.join(sorted(declared))}")
        object.__setattr__(self, "_fields", declared)
        object.__setattr__(self, "_values", {n: given.get(n, f.default) for n, f in declared.items()})

    @classmethod
    def of(cls, fields: Iterable[LimitField], **values: Any) -> Limits:
        """The core limits plus *fields*, with *values* set by name (defaults elsewhere)."""
        return cls(values, fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            declared = ", ".join(sorted(self._values))
            raise AttributeError(f"no limit {name!r} is declared (declared: {declared})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Limits are read-only")

    def __reduce__(self) -> tuple:
        return (Limits, (dict(self._values), tuple(self._fields.values())))

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._values))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and self._values == other._values

    def __repr__(self) -> str:
        return f"Limits({', '.join(f'{k}={v!r}' for k, v in sorted(self._values.items()))})"

    def field(self, name: str) -> LimitField:
        return self._fields[name]

    def as_dict(self) -> dict:
        return dict(sorted(self._values.items()))


@dataclass(frozen=True)
class HardwareProfile:
    """A named platform.

    :param name: what ``system hardware-profile`` says.
    :param description: one line for ``flowplane plugins`` and ``show system profile``.
    :param limits: ``limit name -> value`` for the declared limits this platform sets; the rest
        keep their declared defaults.  A name no plugin declared fails start-up naming the profile.
    :param capabilities: declared capability names the platform has (``inline-monitoring``, ...).
    """

    name: str
    description: str
    limits: Mapping[str, Any] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "limits": dict(self.limits),
                "capabilities": sorted(self.capabilities)}


def check_value(profile: str, f: LimitField, value: Any) -> str | None:
    """Why *value* cannot fill limit *f* of *profile* (a type unlike the default's), or None."""
    if f.default is None or value is None:
        return None
    want = type(f.default)
    if want in (list, tuple):
        ok = isinstance(value, (list, tuple))
    elif want in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, want)
    if ok:
        return None
    return (f"hardware profile {profile!r} sets limit {f.name!r} to {value!r}; expected "
            f"{'a list' if want in (list, tuple) else 'a number' if want in (int, float) else want.__name__} "
            f"like the default {f.default!r}")


DEFAULT_PROFILE = "generic-linux"

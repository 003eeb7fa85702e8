"""Named registries: plugins register drivers by name, config picks them.

One :class:`Registry` per kind (sources, encoders, transports, actions,
commands, profiles).  Registering a name twice is an error that names both
plugins, so two plugins can never silently fight over ``sample``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from .profiles import LimitField

T = TypeVar("T")


class DuplicateName(ValueError):
    pass


class Registry(Generic[T]):
    """``name -> item`` with the registering plugin remembered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owner: dict[str, str] = {}
        self.current_plugin: str = "?"

    def register(self, name: str, item: T) -> None:
        if name in self._items:
            raise DuplicateName(
                f"{self.kind} {name!r} registered twice: by plugin {self._owner[name]!r} "
                f"and by plugin {self.current_plugin!r}"
            )
        self._items[name] = item
        self._owner[name] = self.current_plugin

    def __call__(self, name: str, item: T) -> None:
        self.register(name, item)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._items.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def owner(self, name: str) -> str:
        return self._owner[name]

    def by_owner(self, plugin: str) -> list[str]:
        return sorted(n for n, o in self._owner.items() if o == plugin)


class SectionRegistry(Registry[str]):
    """Config section claims: ``path -> one-line help``, plus the hardware-profile capability a
    section needs (``register("services inline-monitoring", "help", capability="inline-monitoring")``).

    A claim may also declare what its feature brings, in the same call: ``capability_help=`` declares
    ``capability`` (as ``flowplane_register_capabilities`` does) and ``limits=`` declares limit fields
    (as ``flowplane_register_limits`` does), both owned by the claiming plugin.
    """

    def __init__(self, limits: LimitRegistry | None = None, capabilities: CapabilityRegistry | None = None) -> None:
        super().__init__("config section")
        self.capabilities: dict[str, str] = {}
        self._limit_registry = limits
        self._capability_registry = capabilities

    def register(self, name: str, item: str, capability: str | None = None, *,
                 capability_help: str | None = None, limits: Iterable[LimitField] = ()) -> None:
        super().register(name, item)
        if capability:
            self.capabilities[name] = capability
        if capability_help is not None:
            if not capability:
                raise ValueError(f"config section {name!r}: capability_help without a capability")
            self._declare(self._capability_registry, "capabilities", lambda reg: reg(capability, capability_help))
        fields = tuple(limits)
        if fields:
            self._declare(self._limit_registry, "limits", lambda reg: [reg.declare(f) for f in fields])

    def _declare(self, registry: Registry | None, what: str, declare) -> None:
        if registry is None:
            raise ValueError(f"this section registry takes no {what}")
        registry.current_plugin, before = self.current_plugin, registry.current_plugin
        try:
            declare(registry)
        finally:
            registry.current_plugin = before

    def __call__(self, name: str, item: str, capability: str | None = None, *,
                 capability_help: str | None = None, limits: Iterable[LimitField] = ()) -> None:
        self.register(name, item, capability, capability_help=capability_help, limits=limits)


class RegistryView(Generic[T]):
    """A read-only view of a :class:`Registry` (what config validation gets): look up, list, never register.

    Read-only methods of a specialised registry (``for_version`` of the encoder registry) pass through.
    """

    _EXTRA = ("for_version", "versions")

    def __init__(self, registry: Registry[T]) -> None:
        self._r = registry
        self.kind = registry.kind

    def __getitem__(self, name: str) -> T:
        return self._r[name]

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._r.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._r

    def __iter__(self) -> Iterator[str]:
        return iter(self._r)

    def __len__(self) -> int:
        return len(self._r)

    def items(self) -> list[tuple[str, T]]:
        return self._r.items()

    def owner(self, name: str) -> str:
        return self._r.owner(name)

    def __getattr__(self, name: str):
        if name in self._EXTRA and hasattr(self._r, name):
            return getattr(self._r, name)
        raise AttributeError(name)


class LimitRegistry(Registry[LimitField]):
    """Declared hardware-profile limits: ``register(name, default, help)``."""

    def __init__(self) -> None:
        super().__init__("limit")

    def __call__(self, name: str, default: object, help: str = "") -> None:  # type: ignore[override]
        self.declare(LimitField(name, default, help))

    def declare(self, field: LimitField) -> None:
        """Declare one limit field (its name must be a Python identifier: it is read as ``limits.NAME``)."""
        name = field.name
        if not (isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
            raise ValueError(f"limit name {name!r} is not a Python identifier (it is read as limits.NAME)")
        self.register(name, field)


class CapabilityRegistry(Registry[str]):
    """Declared hardware-profile capabilities: ``register(name, help)``."""

    def __init__(self) -> None:
        super().__init__("capability")

    def __call__(self, name: str, help: str = "") -> None:  # type: ignore[override]
        self.register(name, help)

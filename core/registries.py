"""Every registry plugins fill at start-up, gathered in one object the App owns."""

from __future__ import annotations

from typing import Any

from .actions import TermAction
from .commands import CommandRegistry
from .config import Config
from .profiles import DEFAULT_PROFILE, HardwareProfile
from .registry import Registry, SectionRegistry
from .sources import SourceType


class Registries:
    """Every named thing plugins registered, by kind."""

    def __init__(self) -> None:
        self.profiles: Registry[HardwareProfile] = Registry("hardware profile")
        self.sources: Registry[SourceType] = Registry("source")
        self.encoders: Registry[Any] = Registry("encoder")
        self.transports: Registry[Any] = Registry("transport")
        self.actions: Registry[TermAction] = Registry("term action")
        self.commands = CommandRegistry()
        self.sections: SectionRegistry = SectionRegistry()

    def all(self) -> dict[str, Registry]:
        return {"profiles": self.profiles, "sources": self.sources, "encoders": self.encoders,
                "transports": self.transports, "actions": self.actions, "commands": self.commands,
                "config sections": self.sections}

    def profile_for(self, config: Config) -> HardwareProfile | None:
        """The hardware profile *config* selects (``system hardware-profile``), or None if unknown."""
        name = config.get("system", "hardware-profile", default=DEFAULT_PROFILE)
        return self.profiles.get(name) if isinstance(name, str) else None

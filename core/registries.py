"""Every registry plugins fill at start-up, gathered in one object the App owns."""

from __future__ import annotations

from dataclasses import dataclass

from .actions import TermAction
from .commands import CommandRegistry
from .config import Config, suggest
from .export import EncoderRegistry, TransportType
from .profiles import CORE_LIMITS, DEFAULT_PROFILE, HardwareProfile, Limits, check_value
from .registry import CapabilityRegistry, LimitRegistry, Registry, RegistryView, SectionRegistry
from .sources import SourceType


@dataclass(frozen=True)
class RegistriesView:
    """What config validation may look up: sources, encoders (``for_version``), transports, term actions."""

    sources: RegistryView
    encoders: RegistryView
    transports: RegistryView
    actions: RegistryView


class Registries:
    """Every named thing plugins registered, by kind."""

    def __init__(self) -> None:
        self.profiles: Registry[HardwareProfile] = Registry("hardware profile")
        self.sources: Registry[SourceType] = Registry("source")
        self.encoders: EncoderRegistry = EncoderRegistry()
        self.transports: Registry[TransportType] = Registry("transport")
        self.actions: Registry[TermAction] = Registry("term action")
        self.commands = CommandRegistry()
        self.limits = LimitRegistry()
        self.capabilities = CapabilityRegistry()
        self.sections: SectionRegistry = SectionRegistry(self.limits, self.capabilities)
        self.limits.current_plugin = "flowplane"
        for f in CORE_LIMITS:
            self.limits.register(f.name, f)
        self.limits.current_plugin = "?"

    def view(self) -> RegistriesView:
        """Read-only views of the driver registries (what ``flowplane_config_validate`` gets)."""
        return RegistriesView(RegistryView(self.sources), RegistryView(self.encoders),
                              RegistryView(self.transports), RegistryView(self.actions))

    def all(self) -> dict[str, Registry]:
        return {"profiles": self.profiles, "sources": self.sources, "encoders": self.encoders,
                "transports": self.transports, "actions": self.actions, "commands": self.commands,
                "config sections": self.sections, "limits": self.limits, "capabilities": self.capabilities}

    def limits_of(self, profile: HardwareProfile) -> Limits:
        """*profile*'s values for every declared limit (declared defaults where it sets none)."""
        declared = [f for _, f in self.limits.items()]
        return Limits({k: v for k, v in profile.limits.items() if k in self.limits}, declared)

    def check_profiles(self, *, partial: bool) -> list[str]:
        """Why the registered profiles do not fit the declared limits and capabilities.

        A limit or capability no plugin declared is an error naming the profile, unless *partial*
        (some plugin is disabled, so its declarations are missing): then it is ignored.  A value of
        the wrong type is always an error; so is a section claim needing an undeclared capability.
        """
        errors = []
        for name, profile in self.profiles.items():
            for key, value in sorted(profile.limits.items()):
                f = self.limits.get(key)
                if f is None:
                    if not partial:
                        errors.append(f"hardware profile {name!r} (plugin {self.profiles.owner(name)!r}) sets "
                                      f"unknown limit {key!r}{suggest(key, self.limits)}; declared limits: "
                                      f"{', '.join(self.limits)}")
                elif why := check_value(name, f, value):
                    errors.append(f"{why} (plugin {self.profiles.owner(name)!r})")
            for cap in sorted(profile.capabilities):
                if cap not in self.capabilities and not partial:
                    errors.append(f"hardware profile {name!r} (plugin {self.profiles.owner(name)!r}) has unknown "
                                  f"capability {cap!r}{suggest(cap, self.capabilities)}; declared capabilities: "
                                  f"{', '.join(self.capabilities) or 'none'}")
        for words, cap in sorted(self.sections.capabilities.items()):
            if cap not in self.capabilities and not partial:
                errors.append(f"config section {words!r} (plugin {self.sections.owner(words)!r}) needs capability "
                              f"{cap!r} that no plugin declares (flowplane_register_capabilities)")
        return errors

    def profile_for(self, config: Config) -> HardwareProfile | None:
        """The hardware profile *config* selects (``system hardware-profile``), or None if unknown."""
        name = config.get("system", "hardware-profile", default=DEFAULT_PROFILE)
        return self.profiles.get(name) if isinstance(name, str) else None

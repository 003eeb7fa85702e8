"""Hardware profiles: what a platform allows, declared by profile plugins.

A profile plugin registers a :class:`HardwareProfile` in
``flowplane_register_profiles``.  ``system hardware-profile`` picks one
(default ``generic-linux``); config validation checks every feature against
its :class:`Limits` and names the limit a value exceeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Limits:
    """Platform limits.  Field names are the names error messages quote."""

    # data path
    max_batch: int = 8192  # frames per PacketBatch
    max_queue: int = 1024  # batches in a bounded channel
    max_flows: int = 1_000_000  # flow cache entries per cache
    # inline monitoring (IPFIX packet export)
    inline_monitoring_instances: int = 64
    collectors_per_instance: int = 4
    collectors_total: int = 256
    clip_length_max: int = 9216  # bytes of each frame an inline-monitoring record may carry
    inline_collector_families: tuple[str, ...] = ("inet", "inet6")
    # sampling
    sampling_rate_scope: str = "per-collector"  # or "per-instance"
    sampling_rate_max: int = 16_000_000
    # flow export
    flow_servers_per_family: int = 8
    export_versions: tuple[int, ...] = (5, 8, 9, 10)
    # port mirroring
    port_mirroring_instances: int = 16  # named instances
    port_mirroring_destinations: int = 64  # outputs per instance (multiple port mirroring)
    # dynamic flow capture
    dfc_criteria_max: int = 10_000  # active DTCP criteria (pic-memory-threshold is a percentage of it)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HardwareProfile:
    """A named platform.

    :param name: what ``system hardware-profile`` says.
    :param description: one line for ``flowplane plugins`` and ``show system profile``.
    :param limits: the platform's :class:`Limits`.
    :param capabilities: feature names the platform has (``inline-monitoring``, ...).
    """

    name: str
    description: str
    limits: Limits = field(default_factory=Limits)
    capabilities: frozenset[str] = frozenset()

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "limits": self.limits.as_dict(),
                "capabilities": sorted(self.capabilities)}


DEFAULT_PROFILE = "generic-linux"

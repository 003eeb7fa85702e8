"""``mx-mpc``: limits of an MX Series router with MPC line cards (inline J-Flow / inline monitoring)."""

from flowplane.api import HardwareProfile, hookimpl

PROFILE = HardwareProfile(
    name="mx-mpc",
    description="MX Series with MPCs: inline IPFIX/v9, 16 inline-monitoring instances, 126-byte clip",
    limits={
        "max_batch": 4096,
        "max_flows": 4_000_000,
        "inline_monitoring_instances": 16,
        "collectors_per_instance": 4,
        "collectors_total": 64,
        "clip_length_max": 126,
        "inline_collector_families": ("inet",),  # IPv4 collectors only
        "sampling_rate_scope": "per-collector",
        "sampling_rate_max": 16_000_000,
        "flow_servers_per_family": 4,
        "export_versions": (9, 10),
    },
    capabilities=frozenset({"sampling", "inline-monitoring", "port-mirroring", "discard-accounting",
                            "dynamic-flow-capture", "twamp", "rpm", "rfc2544", "video-monitoring"}),
)


@hookimpl
def flowplane_register_profiles(register):
    register(PROFILE.name, PROFILE)

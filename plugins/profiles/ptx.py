"""``ptx-evo``: limits of a PTX Series router running Junos OS Evolved."""

from flowplane.api import HardwareProfile, hookimpl

PROFILE = HardwareProfile(
    name="ptx-evo",
    description="PTX Series (Junos OS Evolved): inline IPFIX, 7 inline-monitoring instances, 256-byte clip",
    limits={
        "max_batch": 4096,
        "max_flows": 2_000_000,
        "inline_monitoring_instances": 7,
        "collectors_per_instance": 4,
        "collectors_total": 28,
        "clip_length_max": 256,
        "inline_collector_families": ("inet",),
        "sampling_rate_scope": "per-instance",
        "sampling_rate_max": 16_000_000,
        "flow_servers_per_family": 4,
        "export_versions": (10,),
    },
    capabilities=frozenset({"sampling", "inline-monitoring", "port-mirroring", "twamp", "rpm"}),
)


@hookimpl
def flowplane_register_profiles(register):
    register(PROFILE.name, PROFILE)

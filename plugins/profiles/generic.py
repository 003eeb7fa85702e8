"""``generic-linux``: the default profile for an ordinary Linux box."""

from flowplane.api import HardwareProfile, hookimpl

PROFILE = HardwareProfile(
    name="generic-linux",
    description="Linux server, software data path (default)",
    limits={},  # every limit at its declared default
    capabilities=frozenset({"sampling", "inline-monitoring", "port-mirroring", "flow-collector",
                            "discard-accounting", "dynamic-flow-capture", "twamp", "rpm", "rfc2544",
                            "video-monitoring"}),
)


@hookimpl(trylast=True)
def flowplane_register_profiles(register):
    register(PROFILE.name, PROFILE)

"""Fixtures the integration tests share: network-namespace topologies (this folder is on sys.path)."""

from nat_netns import nat_topology  # noqa: F401  (a fixture)
from netns import netns_pair  # noqa: F401  (a fixture)

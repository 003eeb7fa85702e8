"""A NAT topology in three network namespaces: client, NAT router (nft masquerade), server.

Layout (TEST-NET addresses that exist only inside the namespaces)::

    client: c0 192.0.2.2/24, default via .1  <──veth──>  router: r0 192.0.2.1/24
    router: r1 198.51.100.1/24 (masquerade out of r1)   <──veth──>  server: s0 198.51.100.2/24

The router forwards IPv4 and masquerades what leaves by ``r1`` (TCP and UDP to ports 50000-50999);
flowplane runs in the router.
All three namespaces (and with them the veth pairs and the nft table) are deleted at exit.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from netns import IP, namespaces, skip_reason

CLIENT, ROUTER_IN, ROUTER_OUT, SERVER = "192.0.2.2", "192.0.2.1", "198.51.100.1", "198.51.100.2"
MASQUERADE = """\
table ip fpnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "r1" meta l4proto { tcp, udp } masquerade to :50000-50999
    oifname "r1" masquerade
  }
}
"""
_counter = itertools.count()


@dataclass(frozen=True)
class NatTopology:
    client: str
    router: str
    server: str

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", ns, *map(str, argv)]

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(ns, argv), check=check, timeout=timeout, **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(ns, argv), **kw)


def _ip(*args: str, ns: str) -> None:
    r = subprocess.run([IP, "-n", ns, *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"ip -n {ns} {' '.join(args)} failed: {r.stderr.strip()}")


@contextmanager
def make_nat_topology(tag: str = "fpn") -> Iterator[NatTopology]:
    uid = f"{os.getpid() % 100000}{next(_counter)}"
    t = NatTopology(f"{tag}{uid}c", f"{tag}{uid}r", f"{tag}{uid}s")
    with namespaces(t.client, t.router, t.server):
        _ip("link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", t.router, ns=t.client)
        _ip("link", "add", "r1", "type", "veth", "peer", "name", "s0", "netns", t.server, ns=t.router)
        for ns, dev, addr in ((t.client, "c0", CLIENT), (t.router, "r0", ROUTER_IN), (t.router, "r1", ROUTER_OUT),
                              (t.server, "s0", SERVER)):
            _ip("addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            _ip("link", "set", "dev", dev, "up", ns=ns)
        _ip("route", "add", "default", "via", ROUTER_IN, ns=t.client)
        t.run(t.router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        t.run(t.router, ["nft", "-f", "-"], input=MASQUERADE)
        yield t


@pytest.fixture
def nat_topology() -> Iterator[NatTopology]:
    """A fresh :class:`NatTopology`; skips when the machine cannot make one or lacks nft."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    import shutil

    if not shutil.which("nft"):
        pytest.skip("needs nft (Debian nftables)")
    with make_nat_topology() as t:
        yield t

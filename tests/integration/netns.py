"""Two network namespaces joined by a veth pair, for integration tests.

Everything a test sends stays inside the two namespaces: the veth ends live
*in* the namespaces (never in the host's), addresses are 10.250.x.y and only
exist there, and both namespaces (and with them the veth pair) are deleted
when the context ends, whether the test passed, failed or was interrupted.

Use as a fixture::

    # the fixture netns_pair comes from tests/integration/conftest.py

    @pytest.mark.netns
    def test_something(netns_pair):
        p = netns_pair
        proc = p.popen(p.ns_a, [sys.executable, "-c", "..."])     # runs inside ns A
        p.run(p.ns_b, ["ping", "-c1", p.addr_a])                  # inside ns B
        p.run(p.ns_a, ["ip", "link", "show", "dev", p.veth_a]).stdout

or directly: ``with make_netns_pair() as p: ...``.  :func:`skip_reason`
says why the machine cannot do it (not root, no ``ip``, no netns support);
the fixture skips with that reason.

Layout::

    ns_a: lo up, veth_a = addr_a/24  <──veth──>  ns_b: lo up, veth_b = addr_b/24

IPv6 is disabled on both sides by default (no router/neighbour solicitation
noise in captures); pass ``ipv6=True`` to keep it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"
_counter = itertools.count()


@dataclass(frozen=True)
class NetnsPair:
    """Names and addresses of one namespace pair (see the module docstring)."""

    ns_a: str
    ns_b: str
    veth_a: str  # lives in ns_a
    veth_b: str  # lives in ns_b
    addr_a: str  # e.g. 10.250.17.1
    addr_b: str  # e.g. 10.250.17.2
    prefixlen: int = 24

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``ip netns exec NS argv...``."""
        return [IP, "netns", "exec", ns, *map(str, argv)]

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            **kw) -> subprocess.CompletedProcess:
        """Run *argv* inside namespace *ns* and wait (text output captured)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(ns, argv), check=check, timeout=timeout, **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start *argv* inside namespace *ns*; the caller waits/kills it (text pipes by default)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(ns, argv), **kw)


class NotifySocket:
    """A systemd ``NOTIFY_SOCKET`` of the test's own, for a ``flowplane run`` it starts::

        notify = NotifySocket(tmp_path / "notify.sock")
        proc = p.popen(p.ns_a, [..., "flowplane", "run", ...], env=notify.env())
        notify.wait("READY=1")
        ...
        notify.close()
    """

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)

    def env(self, base: dict | None = None) -> dict:
        """*base* (default: this process's environment) with ``NOTIFY_SOCKET`` set to this socket."""
        return dict(os.environ if base is None else base, NOTIFY_SOCKET=self.path)

    def wait(self, needle: str, timeout: float = 20.0) -> None:
        """Wait for a notification line equal to *needle* (``READY=1``, ``STOPPING=1``); AssertionError if none."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if needle in self.sock.recv(4096).decode().split("\n"):
                    return
            except TimeoutError:
                continue
        raise AssertionError(f"no {needle} on {self.path} within {timeout:g} s")

    def close(self) -> None:
        self.sock.close()


def skip_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (network namespaces, veth)"
    if not os.path.exists(IP):
        return "needs the `ip` tool (iproute2)"
    name = f"fpchk{os.getpid()}"
    r = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run([IP, "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    argv = [IP, *args] if ns is None else [IP, "-n", ns, *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")


def _sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run([IP, "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"],
                   capture_output=True, timeout=30)


@contextmanager
def namespaces(*names: str, ipv6: bool = False) -> Iterator[tuple[str, ...]]:
    """Create network namespaces *names* with ``lo`` up (IPv6 off unless *ipv6*); always delete those
    that were created, in reverse order, at exit."""
    created: list[str] = []
    try:
        for ns in names:
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("link", "set", "dev", "lo", "up", ns=ns)
            if not ipv6:
                for scope in ("all", "default"):
                    _sysctl(ns, f"net.ipv6.conf.{scope}.disable_ipv6", "1")
        yield names
    finally:
        for ns in reversed(created):
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=30)


@contextmanager
def make_netns_pair(*, tag: str = "fp", ipv6: bool = False, subnet: int | None = None) -> Iterator[NetnsPair]:
    """Create ns A and ns B joined by a veth pair; always delete both at exit.

    :param tag: short prefix for the names (kept under the 15-character
        interface-name limit together with the pid and a counter).
    :param ipv6: keep IPv6 enabled on the veth ends (default: disabled).
    :param subnet: the ``x`` in 10.250.x.0/24 (default: derived from pid).
    """
    n = next(_counter)
    uid = f"{os.getpid() % 100000}{n}"
    x = subnet if subnet is not None else (os.getpid() + n) % 250 + 1
    pair = NetnsPair(
        ns_a=f"{tag}{uid}a", ns_b=f"{tag}{uid}b",
        veth_a=f"{tag}v{uid}a"[:15], veth_b=f"{tag}v{uid}b"[:15],
        addr_a=f"10.250.{x}.1", addr_b=f"10.250.{x}.2",
    )
    with namespaces(pair.ns_a, pair.ns_b, ipv6=ipv6):
        # create the pair directly inside the namespaces: never visible in the host's
        _ip("link", "add", pair.veth_a, "type", "veth", "peer", "name", pair.veth_b, "netns", pair.ns_b, ns=pair.ns_a)
        for ns, dev, addr in ((pair.ns_a, pair.veth_a, pair.addr_a), (pair.ns_b, pair.veth_b, pair.addr_b)):
            if not ipv6:
                _sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6", "1")
            _ip("addr", "add", f"{addr}/{pair.prefixlen}", "dev", dev, ns=ns)
            _ip("link", "set", "dev", dev, "up", ns=ns)
        yield pair


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """A fresh :class:`NetnsPair`; skips when the machine cannot make one."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with make_netns_pair() as pair:
        yield pair

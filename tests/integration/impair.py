"""A user-space impairment element (this kernel has no netem): client -- relay -- server namespaces.

Three network namespaces joined by two veth pairs; a Python process in the middle one bridges
Ethernet frames between its two veth ends with ``AF_PACKET`` sockets and, per direction, adds delay,
seeded random loss, reordering, duplication, or stops forwarding altogether (a silently dropped peer:
no RST, no ICMP, nothing)::

    ns_client                        ns_middle                           ns_server
    veth_c = addr_client/24  <-->  veth_mc  [relay process]  veth_ms  <-->  veth_s = addr_server/24
                                   (no addresses, promiscuous, AF_PACKET both ends)

Both end hosts are on one subnet (10.249.x.0/24), so ARP, TCP (TWAMP-Control) and UDP (TWAMP-Test)
cross the relay unchanged: MAC and IP headers, TTL, DSCP are untouched.  Frames are forwarded with
their ``virtio_net_hdr`` (``PACKET_VNET_HDR``), so checksum-offloaded and GSO/GRO frames stay valid
without ``ethtool``.  Everything lives inside the three namespaces, which are always deleted at exit.

Impairments (per direction, ``c2s`` = client -> server, ``s2c`` = server -> client):

==============  =======  ====================================================================
field           default  meaning
==============  =======  ====================================================================
``delay_ms``    0        added to every frame of the direction (ARP and TCP too)
``jitter_ms``   0        plus a uniform random 0..jitter (may reorder frames by itself)
``loss``        0.0      probability that a *matching* frame is dropped
``duplicate``   0.0      probability that a matching frame is sent twice (back to back)
``reorder``     0.0      probability that a matching frame is held back ``reorder_ms`` more
``reorder_ms``  0        extra hold for reordered frames (make it > the packet interval)
``match``       "udp"    which frames loss/duplicate/reorder apply to: "udp", "ip" or "all"
``forward``     True     False: drop every frame of the direction (the silent peer switch)
==============  =======  ====================================================================

Randomness is seeded per direction (``random.Random(f"{seed}-{direction}")``) and every matching
frame draws exactly three numbers (loss, duplicate, reorder), so the i-th matching frame of a
direction meets the same fate on every run with the same seed.  The relay reports what it did:
per direction ``frames``, ``matched``, ``forwarded`` (emissions, duplicates included),
``dropped_loss``, ``dropped_stopped``, ``duplicated``, ``held`` (reorder injected), ``reordered``
(matching frames that actually left after a frame that arrived later), and an ``events`` log of
every drop / duplicate / hold of a UDP frame with its ports and the first 48 payload octets
(``payload`` hex), so a test can tell exactly which TWAMP sequence numbers were hit.

Use (pytest fixture ``impaired`` or the context manager)::

    from impair import impaired_path  # tests/integration is on sys.path in integration tests

    with impaired_path(seed=7) as (net, relay):
        relay.set("c2s", delay_ms=20, loss=0.05)          # one direction
        relay.set("s2c", loss=0.05)
        srv = net.popen(net.ns_server, ["flowplane", "twamp", "server", "--listen", f"{net.addr_server}:8620"])
        out = net.run(net.ns_client, ["flowplane", "twamp", "client", f"{net.addr_server}:8620", "--json"])
        st = relay.stats()        # {"c2s": {...counters..., "events": [...]}, "s2c": {...}}
        relay.reset(seed=3)       # zero the counters and the log (and restart the random streams)

A keepalive test (a peer that silently disappears)::

    with impaired_path() as (net, relay):
        ... start the server in net.ns_server and a configured client in net.ns_client ...
        relay.stop_forwarding()   # both directions, every frame (ARP, TCP, UDP): silence
        ... expect the TCP keepalive to declare the control connection dead within
            tcp-keepidle + tcp-keepcnt * tcp-keepintvl seconds ...
        relay.resume_forwarding()
        relay.stats()["c2s"]["dropped_stopped"]   # the keepalive probes the relay swallowed

The relay runs as ``python impair.py serve --a IF --b IF --seed N`` inside ``ns_middle`` and is
driven by JSON lines on its stdin (``{"cmd": "set"|"stats"|"reset"|"quit", ...}``), one JSON reply
line each on stdout; :class:`Relay` does that for you.  It needs root and ``ip`` (iproute2); the
fixture skips otherwise (see :func:`netns.skip_reason`).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
_counter = itertools.count()

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PACKET_VNET_HDR = 15
SOL_PACKET = 263
VNET_HDR_LEN = 10
DIRECTIONS = ("c2s", "s2c")
EVENT_LOG_LIMIT = 20000
PAYLOAD_HEAD = 48


# -- the topology ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetnsTriple:
    """Names and addresses of one client -- middle -- server topology (see the module docstring)."""

    ns_client: str
    ns_middle: str
    ns_server: str
    veth_c: str  # in ns_client
    veth_mc: str  # in ns_middle, towards the client
    veth_ms: str  # in ns_middle, towards the server
    veth_s: str  # in ns_server
    addr_client: str
    addr_server: str
    prefixlen: int = 24

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", ns, *map(str, argv)]

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run *argv* inside namespace *ns* and wait (text output captured)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(ns, argv), check=check, timeout=timeout, **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start *argv* inside namespace *ns*; the caller waits for / kills it (text pipes by default)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(ns, argv), **kw)


def _ip(*args: str, ns: str | None = None) -> None:
    argv = [IP, *args] if ns is None else [IP, "-n", ns, *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")


def _no_ipv6(ns: str) -> None:
    for scope in ("all", "default"):
        subprocess.run([IP, "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"],
                       capture_output=True, timeout=30)


@contextmanager
def make_netns_triple(*, tag: str = "fpi", subnet: int | None = None) -> Iterator[NetnsTriple]:
    """Create the three namespaces and two veth pairs (unique names per process and call); always
    delete the namespaces (and with them every veth) at exit."""
    n = next(_counter)
    uid = f"{os.getpid() % 100000}{n}"
    x = subnet if subnet is not None else (os.getpid() + 7 * n) % 250 + 1
    t = NetnsTriple(
        ns_client=f"{tag}{uid}c", ns_middle=f"{tag}{uid}m", ns_server=f"{tag}{uid}s",
        veth_c=f"{tag}{uid}c"[:15], veth_mc=f"{tag}{uid}mc"[:15], veth_ms=f"{tag}{uid}ms"[:15],
        veth_s=f"{tag}{uid}s"[:15], addr_client=f"10.249.{x}.1", addr_server=f"10.249.{x}.2")
    created: list[str] = []
    try:
        for ns in (t.ns_client, t.ns_middle, t.ns_server):
            _ip("netns", "add", ns)
            created.append(ns)
            _no_ipv6(ns)
            _ip("link", "set", "dev", "lo", "up", ns=ns)
        # the pairs are created inside the namespaces: never visible in the host's
        _ip("link", "add", t.veth_c, "type", "veth", "peer", "name", t.veth_mc, "netns", t.ns_middle, ns=t.ns_client)
        _ip("link", "add", t.veth_s, "type", "veth", "peer", "name", t.veth_ms, "netns", t.ns_middle, ns=t.ns_server)
        for ns, dev, addr in ((t.ns_client, t.veth_c, t.addr_client), (t.ns_server, t.veth_s, t.addr_server)):
            _ip("addr", "add", f"{addr}/{t.prefixlen}", "dev", dev, ns=ns)
            _ip("link", "set", "dev", dev, "up", ns=ns)
        for dev in (t.veth_mc, t.veth_ms):
            _ip("link", "set", "dev", dev, "promisc", "on", "up", ns=t.ns_middle)
        yield t
    finally:
        for ns in reversed(created):
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=30)


# -- the test-side handle ----------------------------------------------------------------------------


class RelayError(RuntimeError):
    """The relay process failed or answered with an error."""


class Relay:
    """Drives the relay process in ``ns_middle`` (JSON lines over its stdin/stdout)."""

    def __init__(self, net: NetnsTriple, seed: int = 1) -> None:
        self.net = net
        self.proc = net.popen(net.ns_middle, [sys.executable, str(Path(__file__).resolve()), "serve",
                                              "--a", net.veth_mc, "--b", net.veth_ms, "--seed", str(seed)],
                              stdin=subprocess.PIPE, bufsize=1)
        hello = self._read(timeout=15)
        if not hello.get("ready"):
            raise RelayError(f"relay did not start: {hello}")

    def _read(self, timeout: float = 10) -> dict:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        if not line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RelayError(f"relay gave no answer (exit {self.proc.poll()}): {err.strip()}")
        return json.loads(line)

    def command(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RelayError(out["error"])
        return out

    def set(self, direction: str = "both", **impairment) -> dict:
        """Change the impairment of ``c2s``, ``s2c`` or ``both`` (fields as in the module docstring)."""
        dirs = DIRECTIONS if direction == "both" else (direction,)
        return self.command("set", **{d: impairment for d in dirs})

    def stop_forwarding(self, direction: str = "both") -> dict:
        return self.set(direction, forward=False)

    def resume_forwarding(self, direction: str = "both") -> dict:
        return self.set(direction, forward=True)

    def stats(self) -> dict:
        return self.command("stats")

    def reset(self, seed: int | None = None) -> dict:
        """Zero the counters and the event log; with *seed*, also restart the random streams."""
        return self.command("reset", **({} if seed is None else {"seed": seed}))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@contextmanager
def impaired_path(*, seed: int = 1, tag: str = "fpi") -> Iterator[tuple[NetnsTriple, Relay]]:
    """The topology plus a running relay (no impairment until :meth:`Relay.set`); all torn down at exit."""
    with make_netns_triple(tag=tag) as net:
        relay = Relay(net, seed)
        try:
            yield net, relay
        finally:
            relay.close()


try:  # the fixture, when imported by pytest (the relay process itself needs only the stdlib)
    import pytest

    @pytest.fixture
    def impaired():
        """``(NetnsTriple, Relay)``; skips when the machine cannot make namespaces."""
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from netns import skip_reason

        reason = skip_reason()
        if reason:
            pytest.skip(reason)
        with impaired_path() as pair:
            yield pair
except ImportError:  # pragma: no cover - the relay process
    pass


# -- the relay (runs inside ns_middle) ---------------------------------------------------------------


@dataclass
class Impairment:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 0.0
    match: str = "udp"
    forward: bool = True

    def update(self, fields: dict) -> None:
        for k, v in fields.items():
            if k not in self.__dataclass_fields__:
                raise ValueError(f"unknown impairment field {k!r}")
            cur = getattr(self, k)
            v = type(cur)(v)
            if k in ("loss", "duplicate", "reorder") and not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} is a probability (0..1), got {v}")
            if k == "match" and v not in ("udp", "ip", "all"):
                raise ValueError(f"match is udp, ip or all, got {v!r}")
            setattr(self, k, v)


@dataclass
class DirectionState:
    name: str
    seed: int
    imp: Impairment = field(default_factory=Impairment)
    counters: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    arrival: int = 0
    max_emitted: int = -1

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}-{self.name}")
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
            self.rng = random.Random(f"{seed}-{self.name}")
            self.arrival, self.max_emitted = 0, -1
        self.counters = dict.fromkeys(("frames", "matched", "forwarded", "dropped_loss", "dropped_stopped",
                                       "duplicated", "held", "reordered", "send_failed"), 0)
        self.events = []

    def count(self, what: str) -> None:
        self.counters[what] += 1

    def log(self, event: str, info: dict | None) -> None:
        if info is not None and len(self.events) < EVENT_LOG_LIMIT:
            self.events.append({"event": event, **info})


def classify(frame: bytes) -> tuple[bool, dict | None]:
    """(is IP, UDP info or None) of an Ethernet frame (802.1Q tags skipped)."""
    off = 12
    etype = struct.unpack_from("!H", frame, off)[0] if len(frame) >= 14 else 0
    while etype in (0x8100, 0x88A8) and len(frame) >= off + 6:
        off += 4
        etype = struct.unpack_from("!H", frame, off)[0]
    off += 2
    if etype == 0x0800 and len(frame) >= off + 20:
        ihl = (frame[off] & 0x0F) * 4
        proto, l4 = frame[off + 9], off + ihl
    elif etype == 0x86DD and len(frame) >= off + 40:
        proto, l4 = frame[off + 6], off + 40
    else:
        return False, None
    if proto != 17 or len(frame) < l4 + 8:
        return True, None
    sport, dport = struct.unpack_from("!HH", frame, l4)
    return True, {"sport": sport, "dport": dport, "payload": frame[l4 + 8:l4 + 8 + PAYLOAD_HEAD].hex()}


class RelayEngine:
    """Two AF_PACKET ports, a timed queue of frames, the impairments and what they did."""

    def __init__(self, if_a: str, if_b: str, seed: int) -> None:
        self.socks = {}
        for name in (if_a, if_b):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((name, ETH_P_ALL))
            s.setblocking(False)
            self.socks[name] = s
        a, b = self.socks[if_a], self.socks[if_b]
        # (receiving socket) -> (direction, sending socket)
        self.route = {a.fileno(): ("c2s", b), b.fileno(): ("s2c", a)}
        self.dirs = {d: DirectionState(d, seed) for d in DIRECTIONS}
        self.queue: list = []
        self.seq = itertools.count()

    def receive(self, sock: socket.socket, now: float) -> None:
        dname, out = self.route[sock.fileno()]
        st = self.dirs[dname]
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(65536 + VNET_HDR_LEN)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING:  # our own transmissions on this port
                continue
            self.admit(st, out, data, now)

    def admit(self, st: DirectionState, out: socket.socket, data: bytes, now: float) -> None:
        imp = st.imp
        st.count("frames")
        is_ip, udp = classify(data[VNET_HDR_LEN:])
        if not imp.forward:
            st.count("dropped_stopped")
            return
        delay = imp.delay_ms / 1e3
        if imp.jitter_ms:
            delay += st.rng.uniform(0, imp.jitter_ms / 1e3)
        matched = imp.match == "all" or (imp.match == "ip" and is_ip) or (imp.match == "udp" and udp is not None)
        idx = -1
        copies = 1
        if matched:
            st.count("matched")
            idx = st.arrival
            st.arrival += 1
            lose, dup, hold = st.rng.random(), st.rng.random(), st.rng.random()
            if lose < imp.loss:
                st.count("dropped_loss")
                st.log("drop", udp)
                return
            if dup < imp.duplicate:
                st.count("duplicated")
                st.log("duplicate", udp)
                copies = 2
            if hold < imp.reorder:
                st.count("held")
                st.log("hold", udp)
                delay += imp.reorder_ms / 1e3
        for _ in range(copies):
            heapq.heappush(self.queue, (now + delay, next(self.seq), st.name, idx, out, data))

    def emit_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, dname, idx, out, data = heapq.heappop(self.queue)
            st = self.dirs[dname]
            if not st.imp.forward:
                st.count("dropped_stopped")
                continue
            if idx >= 0:
                if idx < st.max_emitted:
                    st.count("reordered")
                else:
                    st.max_emitted = idx
            try:
                out.send(data)
                st.count("forwarded")
            except OSError:
                st.count("send_failed")

    def handle(self, msg: dict) -> dict:
        cmd = msg.get("cmd")
        if cmd == "set":
            for d in DIRECTIONS:
                if d in msg:
                    self.dirs[d].imp.update(msg[d])
            return {"ok": True, **{d: asdict(self.dirs[d].imp) for d in DIRECTIONS}}
        if cmd == "stats":
            return {d: {**st.counters, "impairment": asdict(st.imp), "events": st.events}
                    for d, st in self.dirs.items()}
        if cmd == "reset":
            for st in self.dirs.values():
                st.reset(msg.get("seed"))
            return {"ok": True}
        if cmd == "quit":
            return {"ok": True, "quit": True}
        return {"error": f"unknown command {cmd!r}"}

    def serve(self, control_in, control_out) -> None:
        control_out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
        control_out.flush()
        fds = [*self.socks.values(), control_in]
        buf = b""
        while True:
            now = time.monotonic()
            timeout = max(0.0, self.queue[0][0] - now) if self.queue else 1.0
            ready, _, _ = select.select(fds, [], [], timeout)
            now = time.monotonic()
            for r in ready:
                if r is control_in:
                    chunk = os.read(control_in.fileno(), 65536)
                    if not chunk:
                        return  # the test went away: stop
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        try:
                            reply = self.handle(json.loads(line))
                        except (ValueError, TypeError) as exc:
                            reply = {"error": str(exc)}
                        control_out.write(json.dumps(reply) + "\n")
                        control_out.flush()
                        if reply.get("quit"):
                            return
                else:
                    self.receive(r, now)
            self.emit_due(time.monotonic())


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="user-space impairment relay (run inside the middle namespace)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--a", required=True, help="interface towards the client")
    s.add_argument("--b", required=True, help="interface towards the server")
    s.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    engine = RelayEngine(args.a, args.b, args.seed)
    engine.serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

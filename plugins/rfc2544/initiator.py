"""The initiator (``mode initiate-and-terminate``): the four RFC 2544 tests over :func:`.trial.run_trial`.

* **throughput** (RFC 2544 26.1): the highest rate whose loss is within ``test-iterator-pass-threshold``
  (0 by default).  The first trial runs at ``bandwidth-kbps``; after a trial with loss the next rate is the
  rate the frames actually got through at (bracketed by the best pass and the lowest failure, else the
  midpoint), so the search converges in a few trials; it stops when the bracket is within
  ``resolution-percent``.  Then one trial at the found rate measures latency and confirms the rate: when it
  loses frames the rate counts as failed and the search goes on below it (up to ``MAX_CONFIRMATIONS`` times).
* **latency** (26.2): trials at ``bandwidth-kbps``; min/avg/max of (kernel receive time - transmit stamp).
* **frame-loss** (26.3): from ``bandwidth-kbps`` down by ``step-percent`` of it until two trials in a row
  lose nothing.
* **back-back-frames** (26.4): bursts at the ``bandwidth-kbps`` frame rate; binary search on the burst
  length (up to ``test-iterator-duration`` worth of frames) for the longest burst with no loss.

Every rate counts the 20 bytes of preamble and inter-frame gap (``line_kbps``).  Before the test the host
measures its own ceiling (:func:`calibrate`) and a rate above it is refused.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import MIN_SIZE, TestConfig
from .frames import FCS, Stream, fps_for_kbps, line_kbps, mac_bytes, stream_tag
from .packetio import PacketIO, interface_mac
from .trial import TrialResult, run_trial

CALIBRATION_SECONDS = 0.4
CALIBRATION_MARGIN = 0.8  # use at most this share of what the host measured
MAX_SEARCH_TRIALS = 24
MAX_CONFIRMATIONS = 3  # latency trials at a found throughput that may send the search on below it
DEFAULT_SOURCE_PORT = 49184


class TestRefused(Exception):
    """The test cannot run as configured (message says why and what to change)."""


@dataclass
class Iteration:
    kind: str  # search | latency | step | burst
    trial: TrialResult
    passed: bool
    number: int = 0

    def as_dict(self) -> dict:
        return {"iteration": self.number, "kind": self.kind, "passed": self.passed, **self.trial.as_dict()}


@dataclass
class SizeResult:
    size: int
    iterations: list[Iteration] = field(default_factory=list)
    throughput_fps: float | None = None
    latency: dict | None = None
    frame_loss: list[dict] = field(default_factory=list)
    back_to_back: float | None = None
    ceiling_fps: float | None = None

    def as_dict(self) -> dict:
        d: dict = {"size": self.size, "ceiling_fps": _r(self.ceiling_fps),
                   "iterations": [i.as_dict() for i in self.iterations]}
        if self.throughput_fps is not None:
            d["throughput"] = {"fps": round(self.throughput_fps, 1),
                               "kbps": round(line_kbps(self.throughput_fps, self.size), 1),
                               "frame_kbps": round(self.throughput_fps * (self.size - FCS) * 8 / 1000, 1)}
        if self.latency is not None:
            d["latency_us"] = self.latency
        if self.frame_loss:
            d["frame_loss"] = self.frame_loss
        if self.back_to_back is not None:
            d["back_to_back_frames"] = round(self.back_to_back, 1)
        return d


def _r(v):
    return None if v is None else round(v, 1)


def _ip_json(*argv: str) -> list:
    out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, timeout=10)
    try:
        return json.loads(out.stdout or "[]")
    except ValueError:
        return []


def resolve_stream(cfg: TestConfig, tag: int) -> tuple[Stream, socket.socket | None]:
    """The stream to send: MACs from config or the kernel's neighbour table (after learning frames).

    Learning frames (RFC 2544 appendix C) go through the kernel from a UDP socket bound to the test's
    source address and port; the socket stays open for the test so the kernel discards the returning
    frames quietly instead of answering with ICMP port unreachable.
    """
    src_mac = mac_bytes(cfg.source_mac) if cfg.source_mac else interface_mac(cfg.interface)
    sport = cfg.source_port or DEFAULT_SOURCE_PORT
    if cfg.family == "bridge":
        return Stream("bridge", src_mac, mac_bytes(cfg.destination_mac), tag=tag, etype=cfg.reflect_etype,
                      interface=cfg.interface), None
    fam = socket.AF_INET if cfg.family == "inet" else socket.AF_INET6
    src = cfg.source_address
    if src is None:
        route = _ip_json("route", "get", cfg.destination_address)
        src = route[0].get("prefsrc") if route else None
        if not src:
            raise TestRefused(f"no source address for {cfg.destination_address}; configure source-"
                              f"ipv{4 if fam == socket.AF_INET else 6}-address")
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((src, sport))
    except OSError as exc:
        sock.close()
        raise TestRefused(f"cannot use source {src} port {sport}: {exc.strerror}") from exc
    dst_mac = mac_bytes(cfg.destination_mac) if cfg.destination_mac else None
    deadline = time.monotonic() + 3.0
    while dst_mac is None:
        try:
            sock.sendto(b"\0" * 18, (cfg.destination_address, cfg.destination_port))
        except OSError:
            pass
        route = _ip_json("route", "get", cfg.destination_address, "from", src)
        hop = (route[0].get("gateway") or cfg.destination_address) if route else cfg.destination_address
        for n in _ip_json("neigh", "show", "to", hop, "dev", cfg.interface):
            if n.get("lladdr") and n.get("state") not in (["FAILED"], ["INCOMPLETE"]):
                dst_mac = mac_bytes(n["lladdr"])
        if dst_mac is None:
            if time.monotonic() > deadline:
                sock.close()
                raise TestRefused(f"next hop {hop} on {cfg.interface} does not answer ARP/ND; configure "
                                  "destination-mac-address or check the path")
            time.sleep(0.05)
    return Stream(cfg.family, src_mac, dst_mac, str(ipaddress.ip_address(src)), cfg.destination_address, sport,
                  cfg.destination_port, tag, interface=cfg.interface), sock


def calibrate(size: int, want_fps: float, stop: threading.Event, seconds: float = CALIBRATION_SECONDS) -> float:
    """The rate (frames/s of *size*) this host sends and takes back in without loss, checked at *want_fps*.

    Short paced trials on the loopback interface run the same code and kernel path as a real trial (batched
    send, batched receive with timestamps) without touching the test interface.  The first runs at
    ``want_fps / CALIBRATION_MARGIN``; when it passes that rate is returned (the host is at least that
    fast).  When it loses frames the next trial runs at the rate that got through, up to four times, and
    the best lossless rate seen (or the last delivered rate) is returned.
    """
    stream = Stream("bridge", b"\0" * 6, b"\0" * 6, tag=0xCA1B, interface="lo")
    try:
        tx, rx = PacketIO("lo", rx=False), PacketIO("lo", rx=True, timeout=0.05)
    except OSError as exc:
        raise TestRefused(f"self-calibration needs the loopback interface up: {exc}") from exc
    rate, best = want_fps / CALIBRATION_MARGIN, 0.0
    try:
        for _ in range(4):
            stream.tag = (stream.tag + 1) & 0xFFFF
            expired = threading.Event()  # a rate far above the host's must not make the trial last for ages
            timer = threading.Timer(seconds * 1.5, expired.set)
            timer.start()
            try:
                r = run_trial(stream, max(size, 64), rate, max(1, min(int(rate * seconds), 4_000_000)), wait=0.2,
                              stop=_Either(stop, expired), tx=tx, rx=rx)
            finally:
                timer.cancel()
            achieved = r.sent / r.seconds if r.seconds else 0.0
            if r.lost == 0 and r.send_failed == 0 and achieved >= rate * 0.97:
                return max(best, rate)
            delivered = min(achieved, rate) * (r.received / r.sent if r.sent else 0.0)
            rate = delivered * 0.95
            if rate <= 0 or stop.is_set():
                break
    finally:
        tx.close()
        rx.close()
    return max(best, rate)


class _Either:
    """``is_set`` of two events (stop on either)."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


class Initiator:
    """Runs one configured initiator test; results go into ``sizes`` as they come (``progress`` is called
    after every trial with a one-line description)."""

    def __init__(self, cfg: TestConfig, *, stop: threading.Event | None = None,
                 progress: Callable[[str], None] | None = None, calibrate_host: bool = True) -> None:
        if cfg.profile is None:
            raise TestRefused(f"test {cfg.name} has no test-profile")
        self.cfg, self.prof = cfg, cfg.profile
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda text: None)
        self.calibrate_host = calibrate_host
        self.sizes: list[SizeResult] = []
        self.trials = 0
        self.started = time.monotonic()
        self._tag = stream_tag(cfg.name)
        self.stream: Stream | None = None

    # -- checks ------------------------------------------------------------------------------------

    def preflight(self) -> None:
        cfg, prof = self.cfg, self.prof
        for size in prof.packet_sizes:
            if size < MIN_SIZE[cfg.family]:
                raise TestRefused(f"packet-size {size} is too small for family {cfg.family} "
                                  f"(at least {MIN_SIZE[cfg.family]})")
        if cfg.check_mtu:
            from .packetio import interface_mtu

            mtu = interface_mtu(cfg.interface)
            big = [s for s in prof.packet_sizes if s - FCS - 14 > mtu]
            if big:
                raise TestRefused(f"packet-size {big[0]} does not fit the MTU {mtu} of {cfg.interface} "
                                  f"(largest frame {mtu + 18} bytes); check-test-interface-mtu refuses the test")

    def ceiling(self, size: int, want_fps: float) -> float | None:
        """The rate the host measures honestly for *size* (checked at *want_fps*), or None when calibration
        is off."""
        if not self.calibrate_host:
            return None
        return calibrate(size, want_fps, self.stop) * CALIBRATION_MARGIN

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> list[SizeResult]:
        """Blocking: every packet size of the profile, ``iteration-count`` times."""
        self.preflight()
        plan = []
        for size in self.prof.packet_sizes:
            want = fps_for_kbps(self.prof.bandwidth_kbps, size)
            ceiling = self.ceiling(size, want)
            if ceiling is not None and want > ceiling * 1.001:
                best = int(line_kbps(ceiling, size))
                raise TestRefused(f"bandwidth-kbps {self.prof.bandwidth_kbps} is {want:,.0f} frames/s of {size} "
                                  f"bytes, but this host sends and receives about {ceiling:,.0f} frames/s "
                                  "without loss of its own "
                                  f"(self-calibration); lower bandwidth-kbps to {best} or less for this size")
            plan.append((size, ceiling))
        stream, sock = resolve_stream(self.cfg, self._tag)
        self.stream = stream
        try:
            for _ in range(self.cfg.iterations):
                for size, ceiling in plan:
                    if self.stop.is_set():
                        return self.sizes
                    res = SizeResult(size, ceiling_fps=ceiling)
                    self.sizes.append(res)
                    getattr(self, "_" + self.prof.test_type.replace("-", "_"))(res)
        finally:
            if sock is not None:
                sock.close()
        return self.sizes

    def _trial(self, res: SizeResult, kind: str, fps: float, count: int | None = None,
               burst: bool = False) -> Iteration:
        if self.prof.test_duration and time.monotonic() - self.started > self.prof.test_duration:
            raise TestRefused(f"test-duration {self.prof.test_duration:g} s reached before the test finished")
        self.trials += 1
        self.stream.tag = (self._tag + self.trials) & 0xFFFF  # a late frame of an earlier trial is stale
        if count is None:
            count = max(1, int(fps * self.cfg.trial_seconds))
        t = run_trial(self.stream, res.size, fps, count, wait=self.cfg.wait_seconds, stop=self.stop, burst=burst)
        it = Iteration(kind, t, t.sent > 0 and t.loss_percent <= self.cfg.pass_threshold,
                       len(res.iterations) + 1)
        res.iterations.append(it)
        self.progress(f"{self.cfg.name}: {res.size} bytes, {kind} {it.number}: "
                      f"{line_kbps(fps, res.size) / 1000:,.2f} Mb/s offered, {t.sent} sent, {t.received} received, "
                      f"loss {t.loss_percent:.3f} %" + ("" if it.passed else " (fail)"))
        return it

    def _latency_of(self, it: Iteration) -> dict:
        t = it.trial
        return {"min": _r(t.latency_min_us), "avg": _r(t.latency_avg_us), "max": _r(t.latency_max_us),
                "at_fps": round(t.offered_fps, 1)}

    def _throughput(self, res: SizeResult) -> None:
        top = fps_for_kbps(self.prof.bandwidth_kbps, res.size)
        passes: list[float] = []  # every rate that passed
        best, worst = 0.0, None  # highest passing, lowest failing rate
        estimate = 0.0  # the highest rate frames got through at in a failed trial
        rate = top
        searches = confirmations = 0
        while searches < MAX_SEARCH_TRIALS:
            if self.stop.is_set():
                return
            searches += 1
            it = self._trial(res, "search", rate)
            t = it.trial
            if it.passed:
                best = max(best, rate)
                passes.append(rate)
            else:
                worst = rate if worst is None else min(worst, rate)
            if worst is None or worst - best <= worst * self.prof.resolution_percent / 100:
                if best <= 0 or self.stop.is_set():
                    break
                # the latency trial at the found rate confirms it: frames lost there mean the device did not
                # hold that rate after all (a shaper's queue that absorbed a search trial, a device slowed
                # down), so it counts as a failure and the search goes on below it
                it = self._trial(res, "latency", best)
                res.latency = self._latency_of(it)
                confirmations += 1
                if it.passed or confirmations > MAX_CONFIRMATIONS:
                    break
                t, rate, res.latency = it.trial, best, None
                worst = best
                best = max((p for p in passes if p < worst), default=0.0)
            res_step = worst * self.prof.resolution_percent / 100
            delivered = rate * t.received / t.sent if t.sent else 0.0
            if not it.passed:
                estimate = max(estimate, delivered)
            if not it.passed and best < delivered * 0.999 < worst - res_step:
                rate = delivered * 0.999  # the rate the frames got through at: close to the answer
            elif it.passed:  # just above the pass, near the estimate, before halving the bracket
                rate = min((best + worst) / 2, max(best + 2 * res_step, estimate * 1.01))
            else:
                rate = (best + worst) / 2
        res.throughput_fps = best
        if best > 0 and res.latency is None and not self.stop.is_set():
            res.latency = self._latency_of(self._trial(res, "latency", best))

    def _latency(self, res: SizeResult) -> None:
        it = self._trial(res, "latency", fps_for_kbps(self.prof.bandwidth_kbps, res.size))
        res.latency = self._latency_of(it)

    def _frame_loss(self, res: SizeResult) -> None:
        top = fps_for_kbps(self.prof.bandwidth_kbps, res.size)
        step = top * self.prof.step_percent / 100
        clean = 0
        rate = top
        while rate > 0 and clean < 2 and not self.stop.is_set():
            it = self._trial(res, "step", rate)
            res.frame_loss.append({"offered_percent": round(100 * rate / top, 2),
                                   "offered_kbps": round(line_kbps(rate, res.size), 1),
                                   "loss_percent": round(it.trial.loss_percent, 4)})
            clean = clean + 1 if it.trial.lost == 0 else 0
            rate -= step

    def _back_back_frames(self, res: SizeResult) -> None:
        fps = fps_for_kbps(self.prof.bandwidth_kbps, res.size)
        hi_len = max(1, int(fps * self.cfg.trial_seconds))
        it = self._trial(res, "burst", fps, hi_len)
        if it.passed:
            res.back_to_back = float(hi_len)
            return
        lo, hi = 0, hi_len  # lo passes (0 trivially), hi fails
        while hi - lo > max(1, hi * self.prof.resolution_percent / 100) and not self.stop.is_set():
            mid = (lo + hi) // 2
            if self._trial(res, "burst", fps, mid).passed:
                lo = mid
            else:
                hi = mid
        res.back_to_back = float(lo)

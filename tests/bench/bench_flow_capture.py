"""Dynamic flow capture benchmark: criteria matching and copy sending, on one batch.

    python tests/bench/bench_flow_capture.py [--batch 1024] [--criteria 10,1000] [--seconds 2]

Figures printed (not pass/fail):

* **match** — packets/s of ``CriteriaTable.match`` over a decoded batch of mixed IPv4/IPv6
  TCP/UDP with N active criteria (each a /32 or /128 destination and a port, about 1 % of the
  packets match at all);
* **process** — packets/s of the whole data path (``FlowCapture.process``: match, limits,
  copies) on the same batch;
* **copy** — copies/s when one criterion matches every packet and each is sent to a loopback
  UDP content destination, next to a plain ``socket.sendto`` loop of the same payloads measured
  in the same run (the ratio is the cost of the data path around the syscalls).

Criteria are added through :meth:`FlowCapture.handle` with signed DTCP ADD requests, as a
control source would.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from flowplane.batch import PacketBatch  # noqa: E402
from flowplane.decode import decode  # noqa: E402
from flowplane.plugins.flow_capture.config import LIMITS, parse  # noqa: E402
from flowplane.plugins.flow_capture.engine import FlowCapture  # noqa: E402
from flowplane.profiles import Limits  # noqa: E402
from flowplane.testing import config_from  # noqa: E402

from frames import ETH_IPV4, ETH_IPV6, eth, ipv4, ipv6, tcp, udp  # noqa: E402

KEY = b"bench-key"


def make_engine(port: int) -> FlowCapture:
    text = f"""\
services:
  dynamic-flow-capture:
    capture-group bench:
      control-source cs:
        source-addresses: [127.0.0.1]
        shared-key: {KEY.decode()}
      content-destination cd:
        address: 127.0.0.1
        port: {port}
"""
    cfg, issues = parse(config_from(text).data, Limits.of(LIMITS))
    assert not issues, issues
    return FlowCapture(cfg)


class Adder:
    def __init__(self, engine: FlowCapture) -> None:
        self.engine, self.seq = engine, 1

    def add(self, headers: list[tuple[str, object]]) -> None:
        text = "ADD DTCP/0.7\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                            [("Csource-ID", "cs"), ("Cdest-ID", "cd"), *headers, ("Seq", self.seq)])
        raw = text.encode()
        raw += b"Authentication-Info: " + hmac.new(KEY, raw, hashlib.sha1).hexdigest().encode() + b"\r\n\r\n"
        self.seq += 1
        reply = self.engine.handle(raw, "127.0.0.1")
        assert reply and b" 200 " in reply, reply


def make_batch(n: int, seed: int = 1) -> PacketBatch:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        d = int(rng.integers(1, 250))
        port = int(rng.integers(1, 60000))
        body = b"x" * int(rng.integers(0, 400))
        if i % 5 == 4:
            frames.append(eth(ETH_IPV6, ipv6(17, udp(40000, port, body), dst=f"2001:db8::{d:x}")))
        elif i % 2:
            frames.append(eth(ETH_IPV4, ipv4(6, tcp(40000, port, payload=body), dst=f"198.18.0.{d}")))
        else:
            frames.append(eth(ETH_IPV4, ipv4(17, udp(40000, port, body), dst=f"198.18.1.{d}")))
    b = PacketBatch.from_frames(frames)
    decode(b)
    return b


def add_sparse_criteria(adder: Adder, n: int, batch: PacketBatch, kind: str, seed: int = 2) -> None:
    """*n* criteria; every tenth is copied from a packet of *batch*.

    ``exact``: destination host + port (the matcher prefilters on the port);
    ``ranges``: destination /24 (/120) + a two-port range (no prefilter: the full packets x criteria matrix).
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % 10 == 0:
            k = (i * 7) % len(batch)
            lo, port = int(batch.dst_lo[k]), int(batch.dport[k])
            addr = str(ipaddress.ip_address((int(batch.dst_hi[k]) << 64) | lo))
            if batch.af[k] == 4:
                addr = str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
        elif i % 5 == 4:
            addr, port = f"2001:db8::{int(rng.integers(1, 250)):x}", int(rng.integers(1, 60000))
        else:
            addr, port = f"198.18.{i % 2}.{int(rng.integers(1, 250))}", int(rng.integers(1, 60000))
        if kind == "exact":
            adder.add([("Dest-Address", addr), ("Dest-Port", port)])
        else:
            net = f"{addr}/24" if ":" not in addr else f"{addr}/120"
            adder.add([("Dest-Address", net), ("Dest-Port", f"{port}-{port + 1}")])


def timed(fn, seconds: float) -> tuple[int, float]:
    """Run *fn* repeatedly for about *seconds*; (iterations, elapsed)."""
    fn()  # warm up (compiles the criteria table)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n, el


def sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> int:
    k = 0
    while True:
        try:
            s.recv(65535)
        except BlockingIOError:
            return k
        k += 1


def run(batch_size: int, criteria: list[int], seconds: float) -> list[dict]:
    rows = []
    batch = make_batch(batch_size)
    rx = sink()
    port = rx.getsockname()[1]
    try:
        for n, kind in [(n, k) for n in criteria for k in ("exact", "ranges")]:
            engine = make_engine(port)
            engine.open()
            try:
                add_sparse_criteria(Adder(engine), n, batch, kind)
                g = engine.groups["bench"]
                table = g.compiled()[0]
                all_rows = np.arange(len(batch))
                cand = table.candidates(batch, all_rows)
                matched = int(table.match(batch, cand).any(axis=1).sum())
                it, el = timed(lambda t=table, r=all_rows: t.match(batch, t.candidates(batch, r)), seconds)
                rows.append({"what": f"match/{kind}", "criteria": n, "batch": batch_size, "matched": matched,
                             "pps": it * batch_size / el})
                it, el = timed(lambda e=engine: (e.process(batch), drain(rx)), seconds)
                rows.append({"what": f"process/{kind}", "criteria": n, "batch": batch_size, "matched": matched,
                             "pps": it * batch_size / el})
            finally:
                engine.close()
        # copies: one criterion that matches every packet, every copy sent
        engine = make_engine(port)
        engine.open()
        try:
            Adder(engine).add([])
            sent0 = engine.groups["bench"].copiers["cd"].counters["packets"]
            it, el = timed(lambda: (engine.process(batch), drain(rx)), seconds)
            sent = engine.groups["bench"].copiers["cd"].counters["packets"] - sent0
            cps = sent / el * it / (it + 1) if sent else 0.0
            rows.append({"what": "copy", "criteria": 1, "batch": batch_size, "matched": batch_size, "pps": cps,
                         "send_drops": engine.groups["bench"].copiers["cd"].counters["send_drops"]})
        finally:
            engine.close()
        # baseline: the same payloads with a plain sendto loop
        payloads = [bytes(batch.data[o + l3 : o + l3 + int(ln)]) for o, l3, ln in
                    zip(batch.offset.tolist(), batch.l3_off.tolist(), batch.ip_len.tolist())]
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setblocking(False)

        def plain():
            for p in payloads:
                try:
                    tx.sendto(p, ("127.0.0.1", port))
                except BlockingIOError:
                    pass
            drain(rx)

        it, el = timed(plain, seconds)
        tx.close()
        rows.append({"what": "sendto loop", "criteria": 0, "batch": batch_size, "matched": batch_size,
                     "pps": it * batch_size / el})
    finally:
        rx.close()
    return rows


def table(rows: list[dict]) -> str:
    out = [f"{'what':<16}{'criteria':>9}{'batch':>7}{'matched':>9}{'packets/s':>14}"]
    for r in rows:
        out.append(f"{r['what']:<16}{r['criteria']:>9}{r['batch']:>7}{r['matched']:>9}{r['pps']:>14,.0f}")
    copy = next((r for r in rows if r["what"] == "copy"), None)
    base = next((r for r in rows if r["what"] == "sendto loop"), None)
    if copy and base and base["pps"]:
        out.append(f"copy rate / plain sendto loop: {copy['pps'] / base['pps']:.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--criteria", default="10,1000")
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args(argv)
    rows = run(a.batch, [int(x) for x in a.criteria.split(",")], a.seconds)
    print(table(rows))
    return rows


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no audit lines
    main()

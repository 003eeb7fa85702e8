"""TCP keepalive on the TWAMP control connection, both ends, in a namespace pair.

``flowplane run`` serves TWAMP in namespace A, another ``flowplane run`` runs the configured client in
namespace B (tcp-keepidle 1, tcp-keepintvl 1, tcp-keepcnt 2: dead after about 3 s of silence; test-interval
60 s, so nothing but keepalive can notice in time).  Once the first test is done, an nft rule in A drops
everything to and from B: the peer goes silent without closing anything.  Both ends must declare the
connection dead well inside the test-interval; the bound asserted is generous (keepalive budget + 12 s).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from flowplane.control import request
from flowplane.testing import wait_until

PORT = 8620
KEEPALIVE = {"tcp-keepidle": 1, "tcp-keepintvl": 1, "tcp-keepcnt": 2}
BUDGET_S = 1 + 1 * 2
MARGIN_S = 12
TEST_INTERVAL = 60


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _show(sock: Path, *words):
    try:
        reply = request(str(sock), list(words), fmt="json", timeout=5)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    return reply["data"] if reply.get("ok") else None


def wait(pred, timeout, what):
    return wait_until(pred, timeout, 0.1, what=what)


@pytest.mark.netns
def test_keepalive_detects_a_silent_peer_on_both_ends(netns_pair, tmp_path):
    p = netns_pair
    ka = "".join(f"{k}: {v}, " for k, v in KEEPALIVE.items())
    srv_cfg = _write(tmp_path / "server.yaml", f"""\
system: {{control-socket: {tmp_path}/server.sock, log: {{format: json, level: info}}}}
services:
  rpm:
    twamp:
      server: {{port: {PORT}, listen-address: {p.addr_a}, {ka}}}
""")
    cli_cfg = _write(tmp_path / "client.yaml", f"""\
system: {{control-socket: {tmp_path}/client.sock, log: {{format: json, level: info}}}}
services:
  rpm:
    twamp:
      client:
        control-connection c1:
          destination-address: {p.addr_a}
          destination-port: {PORT}
          test-interval: {TEST_INTERVAL}
          {ka.rstrip(', ').replace(', ', chr(10) + '          ')}
          test-session t1: {{probe-count: 3, probe-interval: 0.05, probe-timeout: 0.5}}
""")
    srv_log = open(tmp_path / "server.log", "w+")
    cli_log = open(tmp_path / "client.log", "w+")
    server = p.popen(p.ns_a, [sys.executable, "-m", "flowplane", "run", "-c", str(srv_cfg)], stdout=srv_log,
                     stderr=srv_log)
    client = None
    try:
        wait(lambda: _show(tmp_path / "server.sock", "show", "services", "rpm", "twamp", "server"), 20, "the server")
        client = p.popen(p.ns_b, [sys.executable, "-m", "flowplane", "run", "-c", str(cli_cfg)], stdout=cli_log,
                         stderr=cli_log)

        def session():
            d = _show(tmp_path / "client.sock", "show", "services", "rpm", "twamp", "client", "session")
            return d["control_connections"][0] if d else None

        wait(lambda: (session() or {}).get("tests_done", 0) >= 1, 20, "the first test")
        conns = _show(tmp_path / "server.sock", "show", "services", "rpm", "twamp", "server", "connection")
        assert [c["client"] for c in conns["connections"]] == [p.addr_b]

        # the server's namespace goes silent towards the client: no RST, no FIN, nothing
        rules = (f"table inet fptw {{\n"
                 f"  chain i {{ type filter hook input priority 0; ip saddr {p.addr_b} drop; }}\n"
                 f"  chain o {{ type filter hook output priority 0; ip daddr {p.addr_b} drop; }}\n}}\n")
        _write(tmp_path / "drop.nft", rules)
        p.run(p.ns_a, ["nft", "-f", str(tmp_path / "drop.nft")])
        t0 = time.monotonic()
        wait(lambda: not (session() or {"connected": True})["connected"], BUDGET_S + MARGIN_S, "the client to notice")
        client_s = time.monotonic() - t0
        wait(lambda: not _show(tmp_path / "server.sock", "show", "services", "rpm", "twamp", "server",
                                "connection")["connections"], BUDGET_S + MARGIN_S, "the server to notice")
        server_s = time.monotonic() - t0
        print(f"keepalive budget {BUDGET_S} s: client noticed after {client_s:.1f} s, server after {server_s:.1f} s")
        s = session()
        assert s["last_error"] == "control connection lost: Connection timed out" and s["tests_done"] == 1
        counters = _show(tmp_path / "server.sock", "show", "services", "rpm", "twamp", "server")["counters"]
        assert counters.get("closed-brokenresourceerror", 0) == 1  # the server's read failed: timed out
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        for proc in (client, server):
            if proc is not None:
                proc.wait(timeout=30)
    cli_log.seek(0)
    events = [json.loads(line) for line in cli_log if line.startswith("{")]
    lost = [e for e in events if e.get("event") == "twamp_client_connection_lost"]
    assert len(lost) == 1 and lost[0]["control_connection"] == "c1" and lost[0]["reason"].endswith("Connection timed "
                                                                                                   "out")

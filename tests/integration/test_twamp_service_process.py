"""The configured TWAMP client in a `flowplane run` process against a server in another one.

The server process is killed with SIGKILL in the middle of testing (the kernel closes its sockets, nothing
is said on TWAMP-Control) and started again on the same port: the client reconnects on its own and, with
persistent-results, keeps its statistics.  Everything is read through the `flowplane show` / `request`
command line, text and --json.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from flowplane.control import request
from flowplane.testing import wait_until

FLOWPLANE = [sys.executable, "-m", "flowplane"]


def wait(pred, timeout=30.0, what=""):
    """wait_until, counting a process that is not up yet or a reply without the field yet as "not yet"."""
    return wait_until(pred, timeout, 0.1, what=what, ignore=(OSError, KeyError, TypeError))


def _cli(*words, sock: Path, json_out=True):
    r = subprocess.run([*FLOWPLANE, *words, "-s", str(sock)] + (["--json"] if json_out else []),
                       capture_output=True, text=True, timeout=30)
    return r


def _server(tmp: Path, port: int, log):
    cfg = tmp / f"server{port}.yaml"
    cfg.write_text(f"""\
system: {{control-socket: {tmp}/server.sock, log: {{format: json, level: info}}}}
services:
  rpm:
    twamp:
      server: {{port: {port}, listen-address: 127.0.0.1, authentication-mode: [none, encrypted],
               authentication-key-chain: {{alice: testsecret}}}}
""")
    return subprocess.Popen([*FLOWPLANE, "run", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT)


def test_client_process_survives_a_killed_server(tmp_path):
    log = open(tmp_path / "server.log", "w+")
    server = _server(tmp_path, 0, log)
    client = None
    try:
        srv_sock = tmp_path / "server.sock"
        port = wait(lambda: request(str(srv_sock), ["show", "services", "rpm", "twamp", "server"],
                                     fmt="json")["data"]["listening"][1], what="the server")
        secret = tmp_path / "alice.secret"
        secret.write_text("testsecret\n")
        cfg = tmp_path / "client.yaml"
        cfg.write_text(f"""\
system: {{control-socket: {tmp_path}/client.sock, log: {{format: json, level: info}}}}
services:
  rpm:
    twamp:
      client:
        control-connection c1:
          destination-address: 127.0.0.1
          destination-port: {port}
          authentication-mode: encrypted
          key-id: alice
          secret-file: {secret}
          test-interval: 0.3
          persistent-results: true
          test-session a: {{probe-count: 4, probe-interval: 0.01, probe-timeout: 0.5}}
          test-session b: {{probe-count: 2, probe-interval: 0.01, probe-timeout: 0.5, dscp-code-points: af41}}
""")
        clog = open(tmp_path / "client.log", "w+")
        client = subprocess.Popen([*FLOWPLANE, "run", "-c", str(cfg)], stdout=clog, stderr=subprocess.STDOUT)
        csock = tmp_path / "client.sock"

        def session():
            r = _cli("show", "services", "rpm", "twamp", "client", "session", sock=csock)
            return json.loads(r.stdout)["control_connections"][0] if r.returncode == 0 else None

        wait(lambda: (session() or {}).get("tests_done", 0) >= 3, what="three tests")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        wait(lambda: (session() or {}).get("retries", 0) >= 2, what="the client to retry")
        outage = session()
        assert not outage["connected"] and outage["state"] in ("retrying", "connecting")
        server = _server(tmp_path, port, log)  # same port
        wait(lambda: (session() or {}).get("connects", 0) == 2 and session()["tests_done"] >= outage["tests_done"] + 2,
              what="the client to come back on its own")
        text = _cli("show", "services", "rpm", "twamp", "client", "session", sock=csock, json_out=False).stdout
        assert "TWAMP-Server-Status: Connected" in text and "Number-Of-Retries-With-TWAMP-Server" in text
        stop = _cli("request", "services", "rpm", "twamp", "stop", "client", "c1", sock=csock, json_out=False)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        wait(lambda: (session() or {}).get("connected") is False, what="the stop")
        # stopped: nothing moves any more, so the two views can be compared
        r = _cli("show", "services", "rpm", "twamp", "client", "probe-results", "test-session", "a", sock=csock)
        assert r.returncode == 0, r.stderr
        (a,) = json.loads(r.stdout)["results"]
        s = session()
        assert s["state"] == "stopped"
        assert a["all_tests"]["tests"] == s["tests_done"]  # persistent: nothing lost across the outage
        assert a["all_tests"]["sent"] == 4 * s["tests_done"] and a["all_tests"]["lost"] == 0
        text = _cli("show", "services", "rpm", "twamp", "client", "probe-results", sock=csock, json_out=False)
        assert text.returncode == 0 and "Owner: c1, Test: a" in text.stdout and "Owner: c1, Test: b" in text.stdout
        assert "Round trip time" in text.stdout
        again = _cli("request", "services", "rpm", "twamp", "stop", "client", "c1", sock=csock, json_out=False)
        assert again.returncode != 0 and "not running" in (again.stderr + again.stdout)
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (client, server):
            if p is not None:
                assert p.wait(timeout=30) in (0, -signal.SIGKILL)
    clog.seek(0)
    events = [json.loads(line)["event"] for line in clog if line.startswith("{")]
    assert events.count("twamp_client_connected") == 2 and "twamp_client_connection_lost" in events

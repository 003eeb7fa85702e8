"""``flowplane rpm ping|udp|tcp|http`` and ``flowplane rpm server`` as an operator runs them (subprocesses)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

FLOWPLANE = shutil.which("flowplane", path=str(Path(sys.executable).parent)) or "flowplane"


def flowplane(*args, timeout=30):
    return subprocess.run([FLOWPLANE, *args], capture_output=True, text=True, timeout=timeout)


def test_bad_arguments_exit_2_with_the_reason():
    r = flowplane("rpm", "udp", "127.0.0.1:8000")
    assert r.returncode == 2 and "destination-port: port 8000 is not allowed" in r.stderr
    r = flowplane("rpm", "ping", "127.0.0.1", "--count", "16")
    assert r.returncode == 2 and "probe-count: 16 exceeds the maximum 15" in r.stderr
    r = flowplane("rpm", "http", "ftp://x/")
    assert r.returncode == 2 and "http:// URL" in r.stderr
    r = flowplane("rpm", "server")
    assert r.returncode == 2 and "--udp PORT" in r.stderr


def free_port(kind=socket.SOCK_DGRAM) -> int:
    """A free port in the range the RPM statements allow (49160..65535)."""
    for port in range(61000, 65000, 7):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def test_server_and_udp_tcp_clients_json():
    uport, tport = free_port(), free_port(socket.SOCK_STREAM)
    srv = subprocess.Popen([FLOWPLANE, "rpm", "server", "--udp", str(uport), "--tcp", str(tport), "--listen",
                            "127.0.0.1", "--duration", "30", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().startswith("listening udp")
        assert srv.stdout.readline().startswith("listening tcp")
        for kind, port in (("udp", uport), ("tcp", tport)):
            r = flowplane("rpm", kind, f"127.0.0.1:{port}", "--count", "3", "--interval", "0.01", "--json")
            assert r.returncode == 0, r.stderr
            d = json.loads(r.stdout)  # events went to stderr: stdout is only the JSON
            assert d["probe_type"] == f"{kind}-ping" and d["all_tests"]["probes_received"] == 3
            assert d["all_tests"]["measurements"]["egress"]["samples"] == 3
            assert "ping_test_completed" in r.stderr
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def test_unanswered_test_exits_1():
    port = free_port()  # nothing listens there
    r = flowplane("rpm", "udp", f"127.0.0.1:{port}", "--count", "2", "--interval", "0.01", "--timeout", "0.2")
    assert r.returncode == 1 and "Probe failed: port unreachable" in r.stdout

"""RPM probes across namespaces through the user-space impairment relay (tests/integration/impair.py):
``flowplane rpm server`` in the server namespace, ``flowplane rpm ping|udp|tcp|http --json`` in the client
namespace (two flowplane processes, one-way times through the probe server), system ``ping``, ``fping`` and
``curl -w`` measuring the same targets in the same run.

Tolerances (stated here, checked below):

- 20 ms added client -> server: every probe type's minimum RTT rises by 20 ms within -0.5 / +5 ms (the relay
  never forwards early), its average within -3 / +5 ms plus the two runs' own spread (average − minimum: the
  relay's and a busy machine's scheduling);
  http-get's by twice that (handshake + request, as curl's time_total); udp/tcp minimum egress rises by
  20 ms within -0.5 / +5 ms, average ingress stays below 5 ms.
- ``ping`` / ``fping`` minimum on the same delayed path agrees with ours within 2 ms; ``curl``'s
  fastest ``time_total`` with our fastest http-get within 5 ms (minima: a busy host only ever adds delay).
- Seeded loss: lost probes equal the relay's drops of probe packets (both directions) exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from impair import impaired_path  # noqa: E402
from netns import skip_reason  # noqa: E402

pytestmark = pytest.mark.netns

FLOWPLANE = shutil.which("flowplane", path=str(Path(sys.executable).parent)) or "flowplane"
UDP, TCP, HTTP = 50000, 50001, 8080
DELAY_MS = 20


@pytest.fixture(scope="module")
def path():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with impaired_path(seed=20261207, tag="fpr") as (net, relay):
        srv = net.popen(net.ns_server, [FLOWPLANE, "rpm", "server", "--udp", str(UDP), "--tcp", str(TCP),
                                        "--listen", net.addr_server, "--duration", "300", "--json"])
        web = net.popen(net.ns_server, [sys.executable, "-m", "http.server", str(HTTP), "--bind", net.addr_server])
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # both listen, reached through the relay
                r = net.run(net.ns_client, [sys.executable, "-c",
                                            f"import socket\nfor p in ({TCP}, {HTTP}): "
                                            f"socket.create_connection(('{net.addr_server}', p), 1).close()"],
                            check=False)
                if r.returncode == 0:
                    break
                assert srv.poll() is None, srv.communicate()
                time.sleep(0.2)
            else:
                pytest.fail("the probe server / web server never listened")
            yield net, relay
        finally:
            for p in (srv, web):
                p.terminate()
                p.communicate(timeout=20)


def rpm(net, kind, target, *extra, ns=True) -> dict:
    argv = [FLOWPLANE, "rpm", kind, target, "--count", "10", "--interval", "0.05", "--timeout", "1", "--json",
            *extra]
    r = net.run(net.ns_client, argv, check=False) if ns else subprocess.run(argv, capture_output=True, text=True,
                                                                             timeout=60)
    assert r.stdout, r.stderr
    return json.loads(r.stdout)


def avg_us(res, m="rtt") -> float:
    return res["all_tests"]["measurements"][m]["avg"]


def stat(res, what, m="rtt") -> float:
    return res["all_tests"]["measurements"][m][what]


def targets(net):
    a = net.addr_server
    return {"ping": ("ping", a), "udp": ("udp", f"{a}:{UDP}"), "tcp": ("tcp", f"{a}:{TCP}"),
            "http": ("http", f"http://{a}:{HTTP}/")}


def test_every_type_measures_the_added_delay(path):
    net, relay = path
    relay.set("both", delay_ms=0, loss=0, duplicate=0, reorder=0, match="udp")
    base = {k: rpm(net, *t) for k, t in targets(net).items()}
    relay.set("c2s", delay_ms=DELAY_MS)
    try:
        slow = {k: rpm(net, *t) for k, t in targets(net).items()}
    finally:
        relay.set("c2s", delay_ms=0)
    for k in base:
        assert slow[k]["all_tests"]["probes_received"] == 10, (k, slow[k]["all_tests"])
        trips = 2 if k == "http" else 1  # http-get: the TCP handshake and the request each cross the delay
        added = trips * DELAY_MS * 1000
        rise_min = stat(slow[k], "min") - stat(base[k], "min")  # the relay never forwards early
        rise_avg = stat(slow[k], "avg") - stat(base[k], "avg")  # its scheduling adds a little, now and then
        assert added - 500 <= rise_min <= added + 5000, (k, rise_min, base[k]["all_tests"], slow[k]["all_tests"])
        noise = sum(stat(r[k], "avg") - stat(r[k], "min") for r in (base, slow))  # a busy machine's spread
        assert added - 3000 - noise <= rise_avg <= added + 5000 + noise, (k, rise_avg, noise)
    for k in ("udp", "tcp"):  # one-way times from the probe server's stamps: the delay is on the way out
        rise = stat(slow[k], "min", "egress") - stat(base[k], "min", "egress")
        assert DELAY_MS * 1000 - 500 <= rise <= DELAY_MS * 1000 + 5000, (k, rise)
        assert avg_us(slow[k], "ingress") < 5000
    assert slow["ping"]["last_probe"]["timestamp"] == "kernel"


@pytest.mark.peer
@pytest.mark.parametrize("tool", ["ping", "fping", "curl"])
def test_system_tools_agree(path, tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (Debian: {'iputils-ping' if tool == 'ping' else tool})")
    net, relay = path
    relay.set("both", delay_ms=0, loss=0, duplicate=0, reorder=0, match="udp")
    relay.set("c2s", delay_ms=DELAY_MS)
    a = net.addr_server
    try:
        # minima: scheduling noise on a busy host only ever adds delay, so the fastest probe of each tool is
        # the figure both can agree on within their timestamp error
        if tool == "ping":
            ours = rpm(net, "ping", a)
            out = net.run(net.ns_client, ["ping", "-n", "-q", "-c", "10", "-i", "0.05", a]).stdout
            ping_min = float(re.search(r"= ([\d.]+)/", out).group(1)) * 1000
            assert abs(ping_min - stat(ours, "min")) < 2000, (ping_min, stat(ours, "min"))
        elif tool == "fping":
            ours = rpm(net, "ping", a)
            r = net.run(net.ns_client, ["fping", "-C", "10", "-p", "50", "-q", a], check=False)
            values = [float(x) for x in r.stderr.split(":", 1)[1].split() if x != "-"]
            assert len(values) == 10
            fping_min = min(values) * 1000
            assert abs(fping_min - stat(ours, "min")) < 2000, (fping_min, stat(ours, "min"))
        else:
            http = rpm(net, "http", f"http://{a}:{HTTP}/")
            totals = []
            for _ in range(5):
                r = net.run(net.ns_client, ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}",
                                            f"http://{a}:{HTTP}/"])
                totals.append(float(r.stdout) * 1e6)
            assert abs(min(totals) - stat(http, "min")) < 5000, (totals, stat(http, "min"))
    finally:
        relay.set("c2s", delay_ms=0)


@pytest.mark.parametrize("kind, match", [("udp", "udp"), ("ping", "ip")])
def test_loss_equals_the_relays_drops(path, kind, match):
    net, relay = path
    relay.set("both", delay_ms=0, loss=0.15, duplicate=0, reorder=0, match=match)
    relay.reset(seed=7)
    try:
        target = targets(net)[kind][1]
        runs = [rpm(net, kind, target, "--timeout", "0.5") for _ in range(4)]
    finally:
        relay.set("both", loss=0, match="udp")
    st = relay.stats()
    drops = st["c2s"]["dropped_loss"] + st["s2c"]["dropped_loss"]
    lost = sum(r["all_tests"]["probes_sent"] - r["all_tests"]["probes_received"] for r in runs)
    assert sum(r["all_tests"]["probes_sent"] for r in runs) == 40
    assert drops > 0 and lost == drops, (lost, st["c2s"]["dropped_loss"], st["s2c"]["dropped_loss"])
    assert all(r["all_tests"]["failures"] in ({}, {"timeout": r["all_tests"]["probes_sent"]
                                                   - r["all_tests"]["probes_received"]}) for r in runs)


@pytest.mark.skipif(not shutil.which("tc"), reason="tc (iproute2) is not installed")
def test_tbf_shaped_link_queueing_and_drops(path):
    """tc tbf at 1 Mbit/s with a 15,000-octet queue on the client's link: a burst of 15 probes of 1,400 octets
    every 2 ms queues (the RTT grows towards the queue's drain time) and overflows (lost probes equal the
    qdisc's drop count exactly; the kernel refuses the send at once: ENOBUFS, thanks to IP_RECVERR)."""
    net, relay = path
    relay.set("both", delay_ms=0, loss=0, duplicate=0, reorder=0, match="udp")
    dev = net.veth_c
    net.run(net.ns_client, ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1mbit", "burst", "1600",
                            "limit", "15000"])
    try:
        res = rpm(net, "udp", f"{net.addr_server}:{UDP}", "--count", "15", "--interval", "0.002", "--data-size",
                  "1400", "--timeout", "1")
        stats = net.run(net.ns_client, ["tc", "-s", "qdisc", "show", "dev", dev]).stdout
    finally:
        net.run(net.ns_client, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
    dropped = int(re.search(r"dropped (\d+)", stats).group(1))
    a = res["all_tests"]
    assert dropped > 0 and a["probes_sent"] - a["probes_received"] == dropped, (a, stats)
    rtt = a["measurements"]["rtt"]
    per_packet_ms = 1442 * 8 / 1e6 * 1000  # 1,400 + 28 (IP, UDP) + 14 (Ethernet) octets at 1 Mbit/s
    queue_ms = 15000 * 8 / 1e6 * 1000
    assert rtt["max"] >= 4 * per_packet_ms * 1000, (a, stats)  # the queue built up
    assert rtt["max"] <= (queue_ms + 2 * per_packet_ms + 10) * 1000  # never more than a full queue drains


def test_ping_socket_where_the_namespace_allows_it_and_routing_instance(path):
    net, relay = path
    relay.set("both", delay_ms=0, loss=0, duplicate=0, reorder=0, match="udp")
    net.run(net.ns_client, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"])
    try:
        res = rpm(net, "ping", net.addr_server)
        assert res["socket"] == "ping" and res["all_tests"]["probes_received"] == 10
    finally:
        net.run(net.ns_client, ["sysctl", "-qw", "net.ipv4.ping_group_range=1 0"])
    assert rpm(net, "ping", net.addr_server)["socket"] == "raw"
    # routing-instance: this process stays in the host namespace, its probe sockets are made in ns_client
    res = rpm(net, "udp", f"{net.addr_server}:{UDP}", "--routing-instance", net.ns_client, ns=False)
    assert res["routing_instance"] == net.ns_client and res["all_tests"]["probes_received"] == 10


def test_two_configured_instances_measure_one_way_times(path, tmp_path):
    """``flowplane run`` in each namespace: the server's config has only a probe server, the client's the tests;
    the client's one-way times come from the server's stamps; both read through ``flowplane show``."""
    net, relay = path
    relay.set("both", delay_ms=0, loss=0, duplicate=0, reorder=0, match="udp")
    relay.set("s2c", delay_ms=10)  # on the way back only
    srv_sock, cli_sock = tmp_path / "srv.sock", tmp_path / "cli.sock"
    a = net.addr_server
    server_cfg = {"system": {"control-socket": str(srv_sock)},
                  "services": {"rpm": {"probe-server": {"udp": {"port": 50010}, "tcp": {"port": 50011}}}}}
    test = {"probe-count": 5, "probe-interval": 0.02, "test-interval": 0.1, "probe-timeout": 1,
            "target": {"address": a}}
    client_cfg = {"system": {"control-socket": str(cli_sock)},
                  "services": {"rpm": {"probe": {"far": {"test": {
                      "u": {**test, "probe-type": "udp-ping-timestamp", "destination-port": 50010},
                      "t": {**test, "probe-type": "tcp-ping", "destination-port": 50011}}}}}}}
    (tmp_path / "server.yaml").write_text(json.dumps(server_cfg))
    (tmp_path / "client.yaml").write_text(json.dumps(client_cfg))
    procs = [net.popen(net.ns_server, [FLOWPLANE, "run", "-c", str(tmp_path / "server.yaml")]),
             net.popen(net.ns_client, [FLOWPLANE, "run", "-c", str(tmp_path / "client.yaml")])]

    def show(sock, *words):
        r = subprocess.run([FLOWPLANE, "show", "services", "rpm", *words, "--json", "-s", str(sock)],
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            d = show(cli_sock, "probe-results")
            if d and all(t["tests_completed"] >= 3 for t in d["tests"]):
                break
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.2)
        else:
            pytest.fail("the client never completed three tests")
        for t in d["tests"]:
            m = t["last_test"]["measurements"]
            assert t["last_test"]["probes_received"] == 5, t
            # the 10 ms is added on the way back only: the fastest egress stays clear of it (a busy host may
            # delay any single probe, so the maximum says nothing about the path)
            assert m["egress"]["samples"] == 5 and m["egress"]["min"] < 5000, (t["test"], m["egress"])
            assert 10_000 - 500 <= m["ingress"]["min"] <= 15_000, (t["test"], m["ingress"])
        servers = {s["protocol"]: s for s in show(srv_sock, "active-servers")["servers"]}
        assert servers["udp"]["counters"]["rpm-probes"] >= 15 and servers["tcp"]["counters"]["rpm-probes"] >= 15
    finally:
        relay.set("s2c", delay_ms=0)
        for p in procs:
            p.terminate()
            p.communicate(timeout=20)


def test_unreachable_target_times_out(path):
    net, relay = path
    relay.stop_forwarding("both")
    try:
        start = time.monotonic()
        res = rpm(net, "udp", f"{net.addr_server}:{UDP}", "--timeout", "0.3")
        assert time.monotonic() - start < 10
        assert res["all_tests"]["probes_received"] == 0 and res["all_tests"]["failures"] == {"timeout": 10}
        res = rpm(net, "ping", "10.255.255.1", "--timeout", "0.3")  # no route in the client namespace
        assert res["all_tests"]["probes_received"] == 0 and sum(res["all_tests"]["failures"].values()) == 10
    finally:
        relay.resume_forwarding("both")

"""Configured RPM probes and probe servers inside a flowplane Service on loopback, read through the registered
``show services rpm ...`` commands as an operator would; thresholds across a reload; probe-limit."""

from __future__ import annotations

import random
import socket

import pytest
import trio
import yaml
from structlog.testing import capture_logs

import flowplane.plugins.rpm as rpm_plugin
from flowplane.commands import CommandError
from flowplane.config import Config
from flowplane.service import Service


def free_port(kind=socket.SOCK_DGRAM) -> int:
    """A free port in the range Junos allows for probe servers (49160..65535)."""
    for _ in range(200):
        port = random.randint(49160, 65535)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class Operator:
    def __init__(self, app):
        self.app = app

    def cmd(self, *words):
        cmd, rest = self.app.registries.commands.resolve(["show", "services", "rpm", *words])
        data = cmd.fn(self.app, rest)
        text = cmd.formatter(data)
        assert isinstance(text, str) and text
        return data

    def test(self, owner, test):
        return self.cmd("probe-results", "owner", owner, "test", test)["tests"][0]

    async def wait_for(self, pred, timeout=20.0):
        with trio.fail_after(timeout):
            while not pred():
                await trio.sleep(0.02)


async def http_server(nursery):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def serve(stream):
        buf = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buf += data
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, serve, listeners)
    return listeners[0].socket.getsockname()[1]


def fast(**kw):
    return {"probe-count": 3, "probe-interval": 0.02, "test-interval": 0.05, "probe-timeout": 1, **kw}


async def test_every_type_in_the_service_and_the_show_commands(make_app, nursery):
    uport, tport = free_port(), free_port(socket.SOCK_STREAM)
    hport = await http_server(nursery)
    config = {"services": {"rpm": {
        "probe-server": {"udp": {"port": uport, "listen-address": "127.0.0.1"},
                         "tcp": {"port": tport, "listen-address": "127.0.0.1"}},
        "probe": {
            "net": {"test": {
                "icmp": fast(**{"probe-type": "icmp-ping", "target": {"address": "127.0.0.1"}}),
                "udp": fast(**{"probe-type": "udp-ping", "target": {"address": "127.0.0.1"}, "destination-port": uport,
                               "history-size": 4, "moving-average-size": 2}),
                "tcp": fast(**{"probe-type": "tcp-ping", "target": {"address": "127.0.0.1"},
                               "destination-port": tport})}},
            "web": {"test": {"http": fast(**{"probe-type": "http-get",
                                             "target": {"url": f"http://127.0.0.1:{hport}/"}})}}}}}}
    app = make_app(config, plugins=[(rpm_plugin, "rpm")])
    service = Service(app, control=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(service.serve)
        await service.ready.wait()
        op = Operator(app)
        every = op.cmd("probe-results")["tests"]
        assert {(t["owner"], t["test"]) for t in every} == {("net", "icmp"), ("net", "udp"), ("net", "tcp"),
                                                             ("web", "http")}
        await op.wait_for(lambda: all(t["tests_completed"] >= 3 for t in op.cmd("probe-results")["tests"]))
        for t in op.cmd("probe-results")["tests"]:
            last = t["last_test"]
            assert (last["probes_sent"], last["probes_received"], last["loss_percentage"]) == (3, 3, 0.0), t["test"]
            assert last["measurements"]["rtt"]["samples"] == 3
        udp = op.test("net", "udp")
        assert udp["last_test"]["measurements"]["egress"]["samples"] == 3
        assert udp["moving_average"]["probes_sent"] == 2
        text = rpm_plugin.commands.format_probe_results(op.cmd("probe-results", "owner", "net", "test", "udp"))
        assert "Owner: net, Test: udp" in text and "Probe type: udp-ping" in text and "Test size: 3 probes" in text
        assert "Results over last test:" in text and "Measurement: Egress time" in text
        assert "Probes sent: 3, Probes received: 3, Loss percentage: 0.000000" in text
        hist = op.cmd("history-results", "owner", "net", "test", "udp")["tests"][0]["probes"]
        assert len(hist) == 4  # exactly history-size
        assert all(p["status"] == "response" for p in hist)
        detail = op.cmd("history-results", "detail", "owner", "net", "test", "udp")
        text = rpm_plugin.commands.format_history(detail)
        assert text.count("Response received") == 4 and "Owner: net, Test: udp" in text
        assert op.cmd("history-results", "since", "2999-01-01.00:00:00")["tests"][0]["probes"] == []
        with pytest.raises(CommandError, match="bad value for 'since'"):
            op.cmd("history-results", "since", "yesterday")
        servers = {s["protocol"]: s for s in op.cmd("active-servers")["servers"]}
        assert servers["udp"]["port"] == uport and servers["udp"]["counters"]["rpm-probes"] >= 9
        assert servers["tcp"]["listening"] and servers["tcp"]["counters"]["rpm-probes"] >= 9
        assert "UDP" in rpm_plugin.commands.format_active_servers(op.cmd("active-servers"))
        with pytest.raises(CommandError, match="no probe owner 'nett'.*did you mean 'net'"):
            op.cmd("probe-results", "owner", "nett")
        with pytest.raises(CommandError, match="no test 'ucp'.*did you mean 'udp'"):
            op.cmd("probe-results", "owner", "net", "test", "ucp")
        await service._events_send.send("SIGTERM")


async def test_thresholds_fire_and_clear_across_a_reload_that_keeps_results(make_app, tmp_path):
    path = tmp_path / "flowplane.yaml"

    def write(rtt):
        test = fast(**{"probe-type": "icmp-ping", "target": {"address": "127.0.0.1"}, "thresholds": {"rtt": rtt},
                       "traps": ["rtt-exceeded"]})
        path.write_text(yaml.safe_dump({"system": {"control-socket": str(tmp_path / "control.sock")},
                                        "services": {"rpm": {"probe": {"o": {"test": {"t": test}}}}}}))

    write(1)  # 1 µs: every probe meets it
    app = make_app(Config.load(str(path)), plugins=[(rpm_plugin, "rpm")])
    service = Service(app, control=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(service.serve)
        await service.ready.wait()
        op = Operator(app)
        with capture_logs() as logs:
            await op.wait_for(lambda: op.test("o", "t")["tests_completed"] >= 3)
            exceeded = [e for e in logs if e["event"] == "ping_rtt_threshold_exceeded"]
            assert len(exceeded) == 1 and exceeded[0]["threshold"] == 1 and exceeded[0]["owner"] == "o"
            assert any(e["event"] == "rpm_trap" and e["trap"] == "rtt-exceeded" for e in logs)
            assert op.test("o", "t")["threshold_state"]["exceeded"] == ["rtt"]
            before = op.test("o", "t")["all_tests"]["probes_sent"]
            write(10_000_000)
            await service._events_send.send("SIGHUP")
            await op.wait_for(lambda: any(e["event"] == "ping_rtt_threshold_cleared" for e in logs))
        assert "reload_done" in [e["event"] for e in logs]
        t = op.test("o", "t")
        assert t["thresholds"]["rtt"] == 10_000_000 and t["threshold_state"]["exceeded"] == []
        assert t["all_tests"]["probes_sent"] > before  # the reload kept the results
        await service._events_send.send("SIGTERM")


async def test_probe_limit_bounds_tests_running_at_once(make_app):
    tests = {f"t{i}": fast(**{"probe-type": "icmp-ping", "target": {"address": "127.0.0.1"}, "probe-count": 2,
                              "probe-interval": 0.05, "test-interval": 0}) for i in range(4)}
    app = make_app({"services": {"rpm": {"probe-limit": 1, "probe": {"o": {"test": tests}}}}},
                   plugins=[(rpm_plugin, "rpm")])
    service = Service(app, control=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(service.serve)
        await service.ready.wait()
        svc = app.pm.get_plugin("rpm-probes")
        most = 0
        with trio.fail_after(20):
            while not all(r.results.tests_completed >= 2 for r in svc.runners.values()):
                most = max(most, sum(r.running for r in svc.runners.values()))
                await trio.sleep(0.005)
        assert most == 1
        await service._events_send.send("SIGTERM")

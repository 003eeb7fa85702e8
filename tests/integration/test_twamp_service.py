"""The configured TWAMP client (services rpm twamp client) against our server on loopback, real sockets.

The server is a real :class:`TwampServer` started in the test's nursery (so it can be killed and started
again on the same port); the client runs inside a flowplane :class:`Service` built from YAML-shaped config,
and the test reads it through the registered ``show``/``request`` commands, as an operator would.
"""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

import flowplane.plugins.twamp as twamp_plugin
from flowplane.commands import CommandError
from flowplane.plugins.twamp.config import ServerConfig
from flowplane.plugins.twamp.server import TwampServer
from flowplane.service import Service

SECRET = "testsecret"
ALL_MODES = 1 | 2 | 4


class Server:
    """A real TWAMP server in the test nursery that can be killed and started again on the same port."""

    def __init__(self, nursery, address="127.0.0.1", modes=ALL_MODES):
        self.nursery, self.address, self.modes = nursery, address, modes
        self.port = 0
        self.scope = None
        self.server = None

    async def start(self):
        cfg = ServerConfig(port=self.port, address=self.address, modes=self.modes, secrets={"alice": SECRET.encode()})
        self.server = TwampServer(cfg)
        self.scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with self.scope:
                await self.server.run(task_status=task_status)

        bound = await self.nursery.start(run)
        self.port = bound[1]
        return self

    def kill(self):
        self.scope.cancel()  # listener and every control connection close at once


def client_config(port, *, address="127.0.0.1", mode="none", sessions=None, **conn):
    cc = {"destination-address": address, "destination-port": port, "authentication-mode": mode,
          "test-interval": 0.2,
          "test-session": sessions or {"s1": {"probe-count": 5, "probe-interval": 0.005, "probe-timeout": 0.5}}}
    if mode != "none":
        cc.update({"key-id": "alice", "secret": SECRET})
    cc.update(conn)
    return {"services": {"rpm": {"twamp": {"client": {"control-connection": {"c1": cc}}}}}}


class Client:
    def __init__(self, app):
        self.app = app

    def cmd(self, *words):
        cmd, rest = self.app.registries.commands.resolve(list(words))
        data = cmd.fn(self.app, rest)
        assert isinstance(cmd.formatter(data), str)  # the text form renders too
        return data

    def session(self):
        return self.cmd("show", "services", "rpm", "twamp", "client", "session")["control_connections"][0]

    def results(self, *extra):
        return self.cmd("show", "services", "rpm", "twamp", "client", "probe-results", *extra)["results"]

    async def wait_for(self, pred, timeout=20.0, what=""):
        with trio.fail_after(timeout):
            while not pred():
                await trio.sleep(0.02)


async def with_client(make_app, config, body):
    app = make_app(config, plugins=[(twamp_plugin, "twamp")])
    service = Service(app, control=False)
    code = {}
    async with trio.open_nursery() as nursery:
        async def run():
            code["rc"] = await service.serve()

        nursery.start_soon(run)
        await service.ready.wait()
        try:
            await body(Client(app))
        finally:
            await service.stop()
    assert code["rc"] == 0


@pytest.mark.parametrize("mode", ["none", "authenticated", "encrypted"])
async def test_configured_client_every_mode(make_app, mode):
    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()

        async def body(c):
            await c.wait_for(lambda: c.session()["tests_done"] >= 3)
            s = c.session()
            assert s["connected"] and s["mode"] == {"none": "unauthenticated"}.get(mode, mode)
            assert s["retries"] == 0 and s["connects"] == 1
            (r,) = c.results("control-connection", "c1", "test-session", "s1")
            last, all_ = r["last_test"], r["all_tests"]
            assert (last["sent"], last["received"], last["lost"]) == (5, 5, 0)
            assert all_["tests"] >= 3 and all_["sent"] == 5 * all_["tests"] and all_["lost"] == 0
            rtt = all_["measurements_us"]["rtt"]
            assert rtt["samples"] == all_["received"]
            assert 0 < rtt["min"] <= rtt["p50"] <= rtt["p95"] <= rtt["p99"] <= rtt["max"]
            assert rtt["min"] <= rtt["avg"] <= rtt["max"]
            assert rtt["peak_to_peak"] == pytest.approx(rtt["max"] - rtt["min"], abs=0.01)
            assert all_["measurements_us"]["jitter_rtt"]["samples"] == all_["received"] - all_["tests"]  # IPDV pairs
            assert "history" not in r  # only with the 'history' word
            hist = c.results("history")[0]["history"]
            assert len(hist) == min(50, all_["sent"]) and all(h["status"] == "ok" for h in hist)
            ma = r["moving_average_us"]
            assert ma["samples"] == 8 and rtt["min"] <= ma["rtt"] <= rtt["max"]
            # the server saw our sessions in the configured mode, one per test
            assert srv.server.counters["sessions"] >= 3

        await with_client(make_app, client_config(srv.port, mode=mode, **{"moving-average-size": 8}), body)
        nursery.cancel_scope.cancel()


async def test_several_sessions_per_connection_and_test_count(make_app):
    sessions = {"voice": {"probe-count": 4, "probe-interval": 0.005, "dscp-code-points": "ef", "probe-timeout": 0.5},
                "data": {"probe-count": 6, "probe-interval": 0.002, "data-size": 400, "probe-timeout": 0.5}}
    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()

        async def body(c):
            await c.wait_for(lambda: c.session()["state"] == "completed")
            s = c.session()
            assert s["tests_done"] == 3 and not s["connected"]
            res = {r["test_session"]: r for r in c.results()}
            assert res["voice"]["all_tests"]["sent"] == 12 and res["voice"]["all_tests"]["received"] == 12
            assert res["data"]["all_tests"]["sent"] == 18 and res["data"]["all_tests"]["received"] == 18
            assert res["voice"]["dscp"] == 46
            # two reflector sessions per test on the server, each with its own DSCP and padding
            sess = srv.server.status()["sessions"]
            assert {x["dscp"] for x in sess} == {46, 0} and {x["padding_length"] for x in sess} == {60, 400}
            with pytest.raises(CommandError, match="no test-session 'vioce'.*did you mean 'voice'"):
                c.results("control-connection", "c1", "test-session", "vioce")

        await with_client(make_app, client_config(srv.port, sessions=sessions, **{"test-count": 3}), body)
        nursery.cancel_scope.cancel()


async def test_test_count_zero_runs_until_stopped_and_start_stop(make_app):
    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()

        async def body(c):
            await c.wait_for(lambda: c.session()["tests_done"] >= 4)
            assert c.session()["state"] == "connected"  # test-count 0: still going
            with pytest.raises(CommandError, match="already running"):
                c.cmd("request", "services", "rpm", "twamp", "start", "client", "c1")
            with capture_logs() as logs:
                out = c.cmd("request", "services", "rpm", "twamp", "stop", "client", "c1")
                assert out["state"] == "stopped"
                await c.wait_for(lambda: not c.session()["connected"])
            assert any(e["event"] == "twamp_client_stopped" for e in logs)
            done = c.session()["tests_done"]
            await trio.sleep(0.6)  # three test intervals: nothing runs while stopped
            assert c.session()["tests_done"] == done and c.session()["state"] == "stopped"
            await c.wait_for(lambda: not srv.server.connections)  # the server saw the connection close
            with pytest.raises(CommandError, match="not running"):
                c.cmd("request", "services", "rpm", "twamp", "stop", "client", "c1")
            with pytest.raises(CommandError, match="no control-connection 'c2'"):
                c.cmd("request", "services", "rpm", "twamp", "start", "client", "c2")
            c.cmd("request", "services", "rpm", "twamp", "start", "client", "control-connection", "c1")  # Junos words
            await c.wait_for(lambda: c.session()["connected"] and c.session()["tests_done"] >= 1)
            assert c.session()["connects"] == 2
            # without a name: every running connection stops, then every stopped one starts
            out = c.cmd("request", "services", "rpm", "twamp", "stop", "client")
            assert out == {"control_connections": [{"control_connection": "c1", "state": "stopped"}]}
            with pytest.raises(CommandError, match="no control connection to stop"):
                c.cmd("request", "services", "rpm", "twamp", "stop", "client")
            await c.wait_for(lambda: not c.session()["connected"])
            c.cmd("request", "services", "rpm", "twamp", "start", "client")
            await c.wait_for(lambda: c.session()["connected"] and c.session()["connects"] == 3)

        await with_client(make_app, client_config(srv.port), body)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("persistent", [True, False])
async def test_auto_restart_after_server_outage(make_app, persistent):
    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()

        async def body(c):
            await c.wait_for(lambda: c.session()["tests_done"] >= 3)
            with capture_logs() as logs:
                srv.kill()  # mid-test or between tests: the server goes away
                await c.wait_for(lambda: c.session()["retries"] >= 2)  # refused, refused, ...: every test-interval
                assert c.session()["state"] in ("retrying", "connecting") and not c.session()["connected"]
                outage_done = c.session()["tests_done"]  # no test completes while the server is away
                assert c.results()[0]["all_tests"]["tests"] == outage_done  # results still shown meanwhile
                await srv.start()  # same port
                await c.wait_for(lambda: c.session()["connected"] and c.session()["tests_done"] >= outage_done + 2)
            events = [e["event"] for e in logs]
            assert "twamp_client_connection_lost" in events
            assert events.count("twamp_client_connect_failed") == 1  # one line per outage, not one per retry
            assert events.count("twamp_client_connected") == 1
            lost = next(e for e in logs if e["event"] == "twamp_client_connection_lost")
            assert lost["control_connection"] == "c1" and lost["reason"]
            s = c.session()
            assert s["connects"] == 2 and s["retries"] >= 2 and s["last_error"]
            all_tests = c.results()[0]["all_tests"]
            if persistent:  # kept across the reconnect: every completed test is in
                assert all_tests["tests"] == s["tests_done"]
            else:  # started over when the server came back
                assert all_tests["tests"] == s["tests_done"] - outage_done

        await with_client(make_app, client_config(srv.port, **{"persistent-results": persistent}), body)
        nursery.cancel_scope.cancel()


async def test_nonzero_test_count_does_not_auto_restart(make_app):
    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()
        port = srv.port
        srv.kill()
        await trio.sleep(0.05)

        async def body(c):
            await c.wait_for(lambda: c.session()["state"] == "failed")
            s = c.session()
            assert s["retries"] == 0 and "refused" in s["last_error"].lower()
            await srv.start()
            await trio.sleep(0.5)
            assert c.session()["state"] == "failed"  # Junos: manual start needed when test-count is not 0
            c.cmd("request", "services", "rpm", "twamp", "start", "client", "c1")
            await c.wait_for(lambda: c.session()["state"] == "completed")
            assert c.results()[0]["all_tests"]["received"] == 10

        await with_client(make_app, client_config(port, **{"test-count": 2}), body)
        nursery.cancel_scope.cancel()


async def test_thresholds_raise_and_clear_events_across_a_config_change(make_app, tmp_path):
    """rtt 0 µs is exceeded by every test; a reload raising it to 10 s clears it.  The reload is a config
    change: the client restarts by itself, and persistent-results keeps the statistics."""
    import yaml

    from flowplane.config import Config

    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()
        path = tmp_path / "flowplane.yaml"

        def write(rtt):
            sessions = {"s1": {"probe-count": 3, "probe-interval": 0.005, "probe-timeout": 0.3,
                               "thresholds": {"loss-percent": 50}}}
            cfg = client_config(srv.port, sessions=sessions, thresholds={"rtt": rtt}, **{"persistent-results": True})
            cfg["system"] = {"control-socket": str(tmp_path / "control.sock")}
            path.write_text(yaml.safe_dump(cfg))

        write(0)
        app = make_app(Config.load(str(path)), plugins=[(twamp_plugin, "twamp")])
        service = Service(app, control=False)
        async with trio.open_nursery() as inner:
            inner.start_soon(service.serve)
            await service.ready.wait()
            c = Client(app)
            with capture_logs() as logs:
                await c.wait_for(lambda: c.session()["tests_done"] >= 3)
                exceeded = [e for e in logs if e["event"] == "twamp_threshold_exceeded"]
                assert [e["threshold"] for e in exceeded] == ["rtt"]  # once, not at every test
                assert exceeded[0]["value"] > 0 and exceeded[0]["limit"] == 0 and exceeded[0]["test_session"] == "s1"
                assert c.session()["sessions"][0]["thresholds_exceeded"] == ["rtt"]
                assert c.results()[0]["thresholds"] == {"rtt": 0, "loss-percent": 50}
                before = c.results()[0]["all_tests"]["tests"]
                write(10_000_000)
                await service._events_send.send("SIGHUP")
                await c.wait_for(lambda: any(e["event"] == "twamp_threshold_cleared" for e in logs))
            cleared = next(e for e in logs if e["event"] == "twamp_threshold_cleared")
            assert cleared["threshold"] == "rtt" and cleared["limit"] == 10_000_000
            assert c.session()["sessions"][0]["thresholds_exceeded"] == []
            assert "reload_done" in [e["event"] for e in logs]
            assert c.results()[0]["all_tests"]["tests"] > before  # persistent-results across the config change
            await service.stop()
        nursery.cancel_scope.cancel()


async def test_ipv6_loopback(make_app):
    async with trio.open_nursery() as nursery:
        srv = await Server(nursery, address="::1").start()

        async def body(c):
            await c.wait_for(lambda: c.session()["tests_done"] >= 2)
            s = c.session()
            assert s["local"] == "::1" and s["server"] == "::1"
            r = c.results()[0]["last_test"]
            assert (r["sent"], r["received"]) == (5, 5)
            assert srv.server.status()["sessions"][0]["sender"].startswith("::1")

        await with_client(make_app, client_config(srv.port, address="::1", mode="encrypted"), body)
        nursery.cancel_scope.cancel()


async def test_control_type_light_against_the_light_reflector(make_app):
    from flowplane.plugins.twamp.config import LightConfig
    from flowplane.plugins.twamp.light import LightReflector

    async with trio.open_nursery() as nursery:
        light = LightReflector(LightConfig(port=0, address="127.0.0.1"))
        bound = await nursery.start(light.run)

        async def body(c):
            await c.wait_for(lambda: c.session()["state"] == "completed")
            s = c.session()
            assert s["control_type"] == "light" and s["tests_done"] == 2 and s["connects"] == 0
            (r,) = c.results()
            assert (r["all_tests"]["sent"], r["all_tests"]["received"], r["all_tests"]["lost"]) == (10, 10, 0)
            assert r["last_test"]["measurements_us"]["rtt"]["samples"] == 5
            assert "Control type: light" in c.app.registries.commands.resolve(
                ["show", "services", "rpm", "twamp", "client", "session"])[0].formatter(c.cmd(
                    "show", "services", "rpm", "twamp", "client", "session"))

        await with_client(make_app, client_config(bound[1], **{"control-type": "light", "test-count": 2}), body)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("persistent", [True, False])
async def test_config_change_restarts_the_client(make_app, tmp_path, persistent):
    """A reload (SIGHUP) replaces the client: it starts again by itself with the new settings; the results
    carry over only with persistent-results."""
    import yaml

    from flowplane.config import Config

    async with trio.open_nursery() as nursery:
        srv = await Server(nursery).start()
        path = tmp_path / "flowplane.yaml"

        def write(probes):
            sessions = {"s1": {"probe-count": probes, "probe-interval": 0.005, "probe-timeout": 0.3}}
            cfg = client_config(srv.port, sessions=sessions, **{"persistent-results": persistent})
            cfg["system"] = {"control-socket": str(tmp_path / "control.sock")}
            path.write_text(yaml.safe_dump(cfg))

        write(3)
        app = make_app(Config.load(str(path)), plugins=[(twamp_plugin, "twamp")])
        service = Service(app, control=False)
        async with trio.open_nursery() as inner:
            inner.start_soon(service.serve)
            await service.ready.wait()
            c = Client(app)
            await c.wait_for(lambda: c.session()["tests_done"] >= 2)
            old = app.pm.get_plugin("twamp-client")
            before = c.results()[0]["all_tests"]["tests"]
            write(7)  # a changed probe-count
            await service._events_send.send("SIGHUP")
            await c.wait_for(lambda: app.pm.get_plugin("twamp-client") is not old
                             and c.session()["tests_done"] >= 2)
            r = c.results()[0]
            s = c.session()
            assert r["probe_count"] == 7 and r["last_test"]["sent"] == 7  # the new settings run
            if persistent:
                assert r["all_tests"]["tests"] >= before + s["tests_done"]
            else:
                assert r["all_tests"]["tests"] == s["tests_done"]
            await service.stop()
        nursery.cancel_scope.cancel()

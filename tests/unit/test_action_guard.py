"""Term-action handlers run guarded like batch hooks: counted, logged once per burst, disabled after
repeated consecutive failures, re-enabled by a reload; the other actions and plugins keep running."""

from __future__ import annotations

from structlog.testing import capture_logs

from flowplane import hookimpl
from flowplane.actions import TermAction
from flowplane.batch import PacketBatch
from flowplane.core_commands import format_plugins, format_system_statistics, show_plugins, show_system_statistics
from flowplane.pluginmanager import MAX_CONSECUTIVE_FAILURES
from flowplane.testing import write_pcap

from frames import eth_ipv4_udp

CONFIG = {
    "interfaces": {"pcap0": {"source": "pcap", "file": "unused.pcap", "family": {"inet": {"filter": {"input": "F"}}}}},
    "firewall": {"family": {"inet": {"filter": {"F": {"term": {"udp": {
        "from": {"protocol": ["udp"]}, "then": {"flaky": True, "tap": True, "accept": True}}}}}}}},
}


class Actions:
    """Binds ``flaky`` (raises while ``failing``) and ``tap`` (always works)."""

    def __init__(self):
        self.failing = True
        self.flaky_calls = 0
        self.tapped = 0

    @hookimpl
    def flowplane_register_actions(self, register):
        register("flaky", TermAction("flaky", help="fails on demand"))
        register("tap", TermAction("tap", help="counts"))

    @hookimpl
    def flowplane_configure(self, app):
        app.bind_action("flaky", self.on_flaky)
        app.bind_action("tap", self.on_tap)

    def on_flaky(self, selections):
        self.flaky_calls += 1
        if self.failing:
            raise RuntimeError("flaky broke")

    def on_tap(self, selections):
        self.tapped += sum(len(s.batch) for s in selections)


def _app(make_app, tmp_path):
    write_pcap(str(tmp_path / "unused.pcap"), [])
    cfg = {**CONFIG, "interfaces": {"pcap0": {**CONFIG["interfaces"]["pcap0"], "file": str(tmp_path / "unused.pcap")}}}
    actions = Actions()
    app = make_app(cfg, plugins=[(actions, "actions")])
    return app, actions


def _batch(app, n=4):
    return PacketBatch.from_frames([eth_ipv4_udp(sport=i + 1) for i in range(n)], iface=app.interfaces.id("pcap0"))


def test_failing_handler_is_counted_logged_once_per_burst_and_disabled(make_app, tmp_path):
    app, actions = _app(make_app, tmp_path)
    with capture_logs() as logs:
        for _ in range(3):
            app.process(_batch(app))
    assert app.counters["plugins"]["action_errors.flaky"] == 3
    failed = [e for e in logs if e["event"] == "plugin_failed"]
    assert len(failed) == 1  # one line for the burst, not one per batch
    assert failed[0]["action"] == "flaky" and failed[0]["plugin"] == "actions" and "flaky broke" in failed[0]["error"]
    assert actions.tapped == 12  # the other action still ran every time

    with capture_logs() as logs:
        for _ in range(MAX_CONSECUTIVE_FAILURES - 3):
            app.process(_batch(app))
    assert [e["event"] for e in logs] == ["plugin_disabled"]
    assert logs[0]["action"] == "flaky" and logs[0]["consecutive_failures"] == MAX_CONSECUTIVE_FAILURES
    assert actions.flaky_calls == MAX_CONSECUTIVE_FAILURES

    app.process(_batch(app))  # disabled: not called; its rows are a counted drop; the others still run
    assert actions.flaky_calls == MAX_CONSECUTIVE_FAILURES
    assert app.counters["pipeline"].drops[("action", "disabled:flaky")] == 4
    assert actions.tapped == 4 * (MAX_CONSECUTIVE_FAILURES + 1)
    assert app.counters["pipeline"]["packets"] == 4 * (MAX_CONSECUTIVE_FAILURES + 1)

    stats = show_system_statistics(app, [])
    assert {"action": "flaky", "plugin": "actions", "failures": MAX_CONSECUTIVE_FAILURES, "disabled": True} \
        in stats["batch_hooks"]["term actions"]
    assert "disabled: actions (action flaky) after 100 failures" in format_system_statistics(stats)
    row = {r["name"]: r for r in show_plugins(app, [])["plugins"]}["actions"]
    assert row["failures"] == {"action flaky": {"failures": MAX_CONSECUTIVE_FAILURES, "disabled": True}}
    assert "failures in action flaky: 100 (disabled)" in format_plugins(show_plugins(app, []))


def test_a_success_ends_the_burst(make_app, tmp_path):
    app, actions = _app(make_app, tmp_path)
    with capture_logs() as logs:
        app.process(_batch(app))
        app.process(_batch(app))
        actions.failing = False
        app.process(_batch(app))
        actions.failing = True
        app.process(_batch(app))
    assert [e["event"] for e in logs] == ["plugin_failed", "plugin_failed"]  # two bursts, two lines
    assert app.counters["plugins"]["action_errors.flaky"] == 3
    assert not app.graph.guarded_actions["flaky"].disabled


def test_reload_re_enables_a_disabled_handler(make_app, tmp_path):
    app, actions = _app(make_app, tmp_path)
    with capture_logs():
        for _ in range(MAX_CONSECUTIVE_FAILURES):
            app.process(_batch(app))
    assert app.graph.guarded_actions["flaky"].disabled
    app.apply(app.build_graph(app.config))
    assert not app.graph.guarded_actions["flaky"].disabled
    actions.failing = False
    app.process(_batch(app))
    assert actions.flaky_calls == MAX_CONSECUTIVE_FAILURES + 1

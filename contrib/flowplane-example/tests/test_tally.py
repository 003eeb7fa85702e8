"""Tests of the example plugin through a real flowplane App and Service.

Pattern to copy: build an App with ``make_app`` (flowplane.testing), feed it
real frames (``app.process`` for one batch, or a pcap replayed by a running
service, ``flowplane.testing.serve``), and read the result back through the
plugin's own ``show`` command (``flowplane.testing.command``).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import flowplane_example
from flowplane.api import Config, ConfigError
from flowplane.testing import command, serve, write_pcap
from flowplane_example.tally import STATE_NAME, Tally

from example_frames import arp_frame, icmp_frame, tcp_frame, udp_frame

NAME = "example-tally"

CONFIG = """\
system:
  batch-size: 64
interfaces:
  pcap0:
    source: pcap
    file: {pcap}
    family inet:
      filter input: F
services:
  example-tally:
    top-n: 2
firewall:
  family inet:
    filter F:
      term web:
        from: {{protocol: [tcp], destination-port: [80, 443]}}
        then: {{tally: web, accept: true}}
      term dns:
        from: {{protocol: [udp], destination-port: [53]}}
        then: {{tally: true, accept: true}}
      term rest:
        then: {{tally: other-1, accept: true}}
"""


def _installed() -> bool:
    return any(ep.name == NAME for ep in metadata.entry_points(group="flowplane.plugins"))


@pytest.fixture
def tally_app(make_app, tmp_path):
    """``tally_app(config_text=CONFIG, frames=[])``: an App with the plugin loaded exactly once."""

    def _make(config_text: str = CONFIG, frames=()):
        pcap = write_pcap(str(tmp_path / "in.pcap"), list(frames) or [arp_frame()])
        path = tmp_path / "flowplane.yaml"
        path.write_text(config_text.format(pcap=pcap))
        # installed: found through its entry point like any plugin; else registered by hand
        plugins = [] if _installed() else [(flowplane_example, NAME)]
        return make_app(Config.load(str(path)), plugins=plugins)

    return _make


def run(app, *words):
    """Run a command as the control socket would; returns the reply dict."""
    return command(app, *words)


def traffic():
    """4 web (3x :80, 1x :443), 3 DNS, 2 other (UDP :123, ICMP), 1 ARP (not inet: no filter)."""
    return ([tcp_frame(80)] * 3 + [tcp_frame(443, pad=100)] + [udp_frame(53, pad=10)] * 3
            + [udp_frame(123), icmp_frame(), arp_frame()])


# -- registration ---------------------------------------------------------------------


def test_registers_action_section_and_commands(tally_app):
    app = tally_app()
    reg = app.registries
    assert reg.actions.owner("tally") == NAME
    assert reg.actions["tally"].arg == "optional"
    assert reg.sections.owner("services example-tally") == NAME
    assert reg.commands.by_owner(NAME) == ["clear services example-tally", "show services example-tally"]
    row = {r["name"]: r for r in app.plugin_table()}[NAME]
    assert row["registered"]["actions"] == ["tally"]


# -- validation ---------------------------------------------------------------------


def _errors(tally_app, text):
    with pytest.raises(ConfigError) as exc:
        tally_app(text)
    return [line.split(": ", 1)[1] for line in exc.value.lines]  # drop FILE:LINE:COL


@pytest.mark.parametrize("value, message", [
    ("0", "0 is below the minimum 1"),
    ("101", "101 exceeds the maximum 100"),
    ("ten", "expected an integer, got 'ten'"),
])
def test_top_n_is_checked_with_its_key_path(tally_app, value, message):
    text = CONFIG.replace("top-n: 2", f"top-n: {value}")
    assert _errors(tally_app, text) == [f"services example-tally top-n: {message}"]


def test_unknown_key_and_position(tally_app, tmp_path):
    text = CONFIG.replace("top-n: 2", "top-n: 2\n    topn: 3")
    with pytest.raises(ConfigError) as exc:
        tally_app(text)
    assert exc.value.lines == [f"{tmp_path / 'flowplane.yaml'}:12:5: services example-tally topn: "
                               "unknown key 'topn' (did you mean 'top-n'?); expected one of: top-n"]


@pytest.mark.parametrize("bucket", ["Web", "web_1", "''", "7", "[a]"])
def test_bad_bucket_names_are_rejected(tally_app, bucket):
    errors = _errors(tally_app, CONFIG.replace("tally: web,", f"tally: {bucket},"))
    assert len(errors) == 1
    assert errors[0].startswith("firewall family inet filter F term web then tally: "
                                "expected a tally bucket name of lowercase letters, digits and '-'")


def test_action_needs_the_section(tally_app):
    text = CONFIG.replace("services:\n  example-tally:\n    top-n: 2\n", "")
    errors = _errors(tally_app, text)
    assert len(errors) == 3  # one per term using 'tally'
    assert all(e.endswith("action 'tally' needs the 'services example-tally' section "
                          "(add 'services: {example-tally: {}}')") for e in errors)


# -- configure: stateful object only when enabled ----------------------------------------


def test_no_section_no_state(tally_app):
    text = CONFIG.split("services:")[0]  # interfaces only, no filter using tally
    app = tally_app(text.replace("    family inet:\n      filter input: F\n", ""))
    assert app.pm.get_plugin(STATE_NAME) is None
    assert "tally" not in app.graph.action_handlers
    assert run(app, "show", "services", "example-tally") == {
        "ok": False, "error": "'services example-tally' is not configured"}


@pytest.mark.parametrize("section", ["  example-tally: {{}}\n", "  example-tally:\n"])
def test_empty_section_enables_with_defaults(tally_app, section):
    app = tally_app(CONFIG.replace("  example-tally:\n    top-n: 2\n", section))
    state = app.pm.get_plugin(STATE_NAME)
    assert isinstance(state, Tally) and state.top_n == 10
    assert app.graph.action_handlers["tally"] == state.handle


def test_reload_replaces_the_object(tally_app):
    app = tally_app()
    old = app.pm.get_plugin(STATE_NAME)
    text = Path(app.config.path).read_text().replace("top-n: 2", "top-n: 5")
    app.apply(app.build_graph(Config.from_text(text, path=app.config.path)))
    new = app.pm.get_plugin(STATE_NAME)
    assert new is not old and new.top_n == 5 and not app.pm.is_registered(old)


# -- counting: one batch through the real data path ----------------------------------------


def test_counts_per_bucket_and_port(tally_app, make_batch):
    app = tally_app()
    frames = traffic()
    app.process(make_batch(frames, iface=app.interfaces.id("pcap0")))
    reply = run(app, "show", "services", "example-tally")
    assert reply["ok"], reply
    assert reply["data"] == {"top_n": 2, "buckets": [
        {"bucket": "default", "packets": 3, "bytes": 3 * 52, "packets_without_port": 0,
         "ports": [{"port": 53, "packets": 3, "bytes": 3 * 52}]},
        {"bucket": "other-1", "packets": 2, "bytes": 84, "packets_without_port": 1,
         "ports": [{"port": 123, "packets": 1, "bytes": 42}]},
        {"bucket": "web", "packets": 4, "bytes": 3 * 54 + 154, "packets_without_port": 0,
         "ports": [{"port": 80, "packets": 3, "bytes": 162}, {"port": 443, "packets": 1, "bytes": 154}]},
    ]}


def test_top_n_limits_ports(tally_app, make_batch):
    app = tally_app(CONFIG.replace("top-n: 2", "top-n: 1"))
    app.process(make_batch([tcp_frame(443)] * 2 + [tcp_frame(80)] * 2, iface=app.interfaces.id("pcap0")))
    web = run(app, "show", "services", "example-tally", "bucket", "web")["data"]["buckets"]
    assert web[0]["ports"] == [{"port": 80, "packets": 2, "bytes": 108}]  # tie: lower port first


def test_handler_is_vectorised():
    """Many packets, many ports: counted per batch with numpy (a per-packet loop would take seconds)."""
    from flowplane.api import ActionSelection, PacketBatch

    n = 200_000
    batch = PacketBatch.from_frames([b""] * n)
    batch.status = np.zeros(n, np.uint8)
    batch.l4_off = np.full(n, 34, np.int32)
    batch.proto = np.full(n, 17, np.uint8)
    batch.dport = (np.arange(n) % 1000).astype(np.uint16)
    batch.wirelen = np.full(n, 100, np.int32)
    tally = Tally(top_n=3)
    tally.handle([ActionSelection("F", "t", "tally", None, batch)] * 5)
    data = tally.show()["buckets"][0]
    assert data["packets"] == 5 * n and data["bytes"] == 5 * n * 100
    assert data["ports"] == [{"port": p, "packets": 1000, "bytes": 100_000} for p in (0, 1, 2)]


# -- commands ---------------------------------------------------------------------------------


def test_show_text_bucket_and_clear(tally_app, make_batch):
    app = tally_app()
    app.process(make_batch(traffic(), iface=app.interfaces.id("pcap0")))
    assert run(app, "show", "services", "example-tally", "bucket", "web")["text"] == (
        "Bucket: web\n"
        "  Packets: 4, Bytes: 316, Packets without port: 0\n"
        "  Top destination ports (top 2):\n"
        "    Port               Packets             Bytes\n"
        "    80                       3               162\n"
        "    443                      1               154\n"
    )
    assert run(app, "show", "services", "example-tally", "bucket", "nope") == {
        "ok": False, "error": "no tally bucket named 'nope'; known: default, other-1, web"}
    assert run(app, "show", "services", "example-tally", "detail")["ok"] is False
    assert run(app, "clear", "services", "example-tally", "bucket", "web")["data"] == {"cleared": "web"}
    data = run(app, "show", "services", "example-tally")["data"]
    assert [(b["bucket"], b["packets"]) for b in data["buckets"]] == [("default", 3), ("other-1", 2), ("web", 0)]
    run(app, "clear", "services", "example-tally")
    assert sum(b["packets"] for b in run(app, "show", "services", "example-tally")["data"]["buckets"]) == 0


# -- end to end: a pcap replayed by a real Service ---------------------------------------------


async def test_service_replay(tally_app):
    frames = traffic() * 50  # 500 frames: several batches of 64
    app = tally_app(frames=frames)
    async with serve(app, exit_on_eof=True) as service:
        assert await service.wait() == 0
        data = service.show("services", "example-tally")["data"]
    assert {b["bucket"]: b["packets"] for b in data["buckets"]} == {"default": 150, "other-1": 100, "web": 200}
    assert app.counters["plugins"].snapshot()["counters"] == {}  # the handler never failed
    assert app.counters["pipeline"].snapshot()["drops"] == []  # no 'unbound:tally' drops

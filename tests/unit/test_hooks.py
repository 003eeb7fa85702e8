"""One real test per hook: a plugin implementing it, run through a real App/Service."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from flowplane import hookimpl
from flowplane.actions import TermAction
from flowplane.batch import PacketBatch
from flowplane.config import Config
from flowplane.errors import ConfigError, ConfigIssue, PluginError
from flowplane.profiles import HardwareProfile, LimitField
from flowplane.service import Service
from flowplane.sources import SourceType
from flowplane.stats import Counters
from flowplane.testing import write_pcap

from frames import arp, eth_ipv4_tcp, eth_ipv4_udp


class ListSource:
    """A finite source that sends prepared frames in batches (a real Source implementation)."""

    finite = True

    def __init__(self, ctx, frames):
        self.name, self.ctx, self.frames = ctx.name, ctx, frames
        self.counters = Counters(ctx.name)

    async def run(self, send, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        bs = self.ctx.batch_size
        for i in range(0, len(self.frames), bs):
            chunk = self.frames[i : i + bs]
            batch = PacketBatch.from_frames(chunk, iface=self.ctx.iface_id, source=self.name)
            self.counters.inc("packets", len(chunk))
            await send.send(batch)


class Feature:
    """A feature plugin touching every data-path and life-cycle hook."""

    def __init__(self, frames):
        self.frames = frames
        self.seen = 0
        self.seen_udp = 0
        self.selected: list = []
        self.shutdown_seen_at = None
        self.reloads: list = []
        self.task_started = False
        self.configured = 0

    @hookimpl
    def flowplane_register_sources(self, register):
        register("list", SourceType("list", lambda ctx: ListSource(ctx, self.frames), keys=("note",)))

    @hookimpl
    def flowplane_register_actions(self, register):
        register("tap", TermAction("tap", help="test action"))

    @hookimpl
    def flowplane_register_config_sections(self, register):
        register("services tapper", "test feature")

    @hookimpl
    def flowplane_configure(self, app):
        self.configured += 1
        self.reloads.append(app.config.get("services", "tapper", "v"))  # reload state: app.config, app.previous
        app.bind_action("tap", self.selected.extend)

    @hookimpl
    def flowplane_process_batch(self, batch):
        self.seen += len(batch)
        self.seen_udp += int((batch.proto == 17).sum())

    @hookimpl
    def flowplane_background_tasks(self, app):
        async def task(*, task_status=trio.TASK_STATUS_IGNORED):
            self.task_started = True
            task_status.started()
            await trio.sleep_forever()

        return [task]

    @hookimpl
    def flowplane_shutdown(self, app):
        self.shutdown_seen_at = self.seen


CONFIG = """\
system:
  batch-size: 64
interfaces:
  lst0:
    source: list
    family inet:
      filter input: F
services:
  tapper: {v: 1}
firewall:
  family inet:
    filter F:
      term udp:
        from: {protocol: [udp]}
        then: {tap: true, accept: true}
      term tcp:
        from: {protocol: [tcp]}
        then: discard
"""


def _frames():
    return ([eth_ipv4_udp(sport=i + 1) for i in range(300)] + [eth_ipv4_tcp(sport=i + 1) for i in range(200)]
            + [arp()] * 5)


async def _run_service(make_app, tmp_path, feature, config_text=CONFIG, body=None):
    path = tmp_path / "f.yaml"
    path.write_text(config_text)
    app = make_app(Config.load(str(path)), plugins=[(feature, "feature")])
    service = Service(app, exit_on_eof=body is None, control=False)
    async with trio.open_nursery() as nursery:
        result = {}

        async def run():
            result["code"] = await service.serve()

        nursery.start_soon(run)
        await service.ready.wait()
        if body is not None:
            await body(service, path)
            await service.stop()
    return app, service, result["code"]


async def test_hook_process_batch(make_app, tmp_path):
    feature = Feature(_frames())
    app, _, code = await _run_service(make_app, tmp_path, feature)
    assert code == 0
    # 300 UDP accepted; 200 TCP discarded by the filter; 5 ARP are not inet (no 'any' filter) and pass
    assert feature.seen_udp == 300
    assert feature.seen == 305
    assert app.counters["pipeline"]["filter_discarded"] == 200
    assert app.counters["pipeline"]["packets"] == 505


async def test_hook_register_actions(make_app, tmp_path):
    feature = Feature(_frames())
    await _run_service(make_app, tmp_path, feature)
    assert sum(len(s.batch) for s in feature.selected) == 300
    assert {(s.filter, s.term, s.action) for s in feature.selected} == {("F", "udp", "tap")}
    assert all((s.batch.proto == 17).all() for s in feature.selected)


async def test_hook_register_sources(make_app, tmp_path):
    feature = Feature(_frames())
    app, _, _ = await _run_service(make_app, tmp_path, feature)
    assert app.sources["lst0"].counters["packets"] == 505
    assert app.registries.sources.owner("list") == "feature"


async def test_hook_shutdown(make_app, tmp_path):
    feature = Feature(_frames())
    await _run_service(make_app, tmp_path, feature)
    # shutdown ran after every queued batch was processed: nothing in flight was lost
    assert feature.shutdown_seen_at == 305


async def test_hook_background_tasks(make_app, tmp_path):
    feature = Feature(_frames())
    seen_before_ready = {}

    async def body(service, path):
        seen_before_ready["started"] = feature.task_started

    await _run_service(make_app, tmp_path, feature, body=body)
    assert seen_before_ready["started"] is True


async def test_reload_configures_again(make_app, tmp_path):
    feature = Feature(_frames())

    async def body(service, path):
        path.write_text(CONFIG.replace("{v: 1}", "{v: 2}"))
        assert await service.reload() is True
        path.write_text(CONFIG.replace("{v: 1}", "{v: 3}").replace("protocol: [udp]", "protocol: [nope]"))
        assert await service.reload() is False  # rejected: the old config stays
        assert service.app.config.get("services", "tapper", "v") == 2

    await _run_service(make_app, tmp_path, feature, body=body)
    assert feature.reloads == [1, 2]  # the rejected config never reached configure
    assert feature.configured == 2


async def test_hook_configure(make_app):
    class Stateful:
        @hookimpl
        def flowplane_process_batch(self, batch):
            pass

    class Enabler:
        def __init__(self):
            self.objects = []

        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services stateful", "")

        @hookimpl
        def flowplane_configure(self, app):
            if app.config.get("services", "stateful", "enable"):
                obj = Stateful()
                self.objects.append(obj)
                app.pm.register(obj, name=f"stateful-{len(self.objects)}")

    en = Enabler()
    app = make_app({"services": {"stateful": {"enable": True}}}, plugins=[(en, "enabler")])
    assert app.pm.is_registered(en.objects[0])
    assert "stateful-1" in app.graph.process_batch.order
    # a reload replaces the stateful object rather than mutating it
    new = app.build_graph(Config({"services": {"stateful": {"enable": False}}}))
    app.apply(new)
    assert not app.pm.is_registered(en.objects[0]) and len(en.objects) == 1
    assert app.graph.process_batch.order == []


def test_register_configured_takes_over_the_replaced_objects_state(make_app):
    class Counter:
        def __init__(self, n):
            self.n = n

        def adopt(self, old):
            self.n += old.n

    class Enabler:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services counter", "")

        @hookimpl
        def flowplane_configure(self, app):
            app.register_configured(Counter(app.config.get("services", "counter", "n")), "counter")

    app = make_app({"services": {"counter": {"n": 1}}}, plugins=[(Enabler(), "enabler")])
    first = app.pm.get_plugin("counter")
    assert first.n == 1  # nothing to take over at start-up
    app.apply(app.build_graph(Config({"services": {"counter": {"n": 10}}})))
    second = app.pm.get_plugin("counter")
    assert second is not first and second.n == 11 and not app.pm.is_registered(first)


def test_hook_config_validate(make_app, tmp_path):
    class V:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services widget", "")

        @hookimpl
        def flowplane_config_validate(self, config, limits):
            n = config.get("services", "widget", "count")
            if n is not None and n > limits.collectors_per_instance:
                return [ConfigIssue(("services", "widget", "count"),
                                    f"{n} exceeds {limits.collectors_per_instance} (hardware profile limit "
                                    "collectors_per_instance)")]
            return []

    path = tmp_path / "w.yaml"
    path.write_text("services:\n  widget:\n    count: 9\n")
    with pytest.raises(ConfigError) as e:
        make_app(Config.load(str(path)), plugins=[(V(), "v")])
    assert e.value.lines == [f"{path}:3:5: services widget count: 9 exceeds 4 (hardware profile limit "
                             "collectors_per_instance)"]


def test_hook_register_config_sections(make_app):
    class Claim:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("forwarding-options thing", "")

    app = make_app({"forwarding-options": {"thing": {}}}, plugins=[(Claim(), "claim")])
    assert app.registries.sections.owner("forwarding-options thing") == "claim"
    errors = app.validate(Config({"forwarding-options": {"thin": {}}}))
    assert errors[0].startswith("<config>: forwarding-options thin: no enabled plugin handles 'forwarding-options "
                                "thin' "
                                "(did you mean 'thing'?); known: ")
    assert "thing" in errors[0].split("known: ")[1].split(", ")


def test_register_config_sections_claims_a_key_under_interface_families(make_app, tmp_path):
    class Claim:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("interfaces family watch-flows", "flows to watch")

    pcap = write_pcap(str(tmp_path / "e.pcap"), [])
    iface = {"cap": {"source": "pcap", "file": pcap, "family": {"inet": {"watch-flows": {"f": {}}}}}}
    app = make_app({}, plugins=[(Claim(), "claim")])
    assert "watch-flows" in app.claimed_family_keys() and "filter" not in app.claimed_family_keys()
    assert app.validate(Config({"interfaces": iface})) == []
    iface["cap"]["family"]["inet"] = {"watch-flowz": {}}
    [error] = app.validate(Config({"interfaces": iface}))
    assert "interfaces cap family inet watch-flowz: unknown key 'watch-flowz' (did you mean 'watch-flows'?)" in error


def test_hook_register_capabilities(make_app):
    class Claim:
        @hookimpl
        def flowplane_register_capabilities(self, register):
            register("gizmo", "services gizmo")

        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services gizmo", "a gizmo", capability="gizmo")

        @hookimpl
        def flowplane_register_profiles(self, register):
            register("gizmo-box", HardwareProfile("gizmo-box", "has gizmos", capabilities=frozenset({"gizmo"})))
            register("plain-box", HardwareProfile("plain-box", "no gizmos", capabilities=frozenset({"sampling"})))

    app = make_app({}, plugins=[(Claim(), "claim")])
    assert app.registries.sections.capabilities["services gizmo"] == "gizmo"
    assert app.registries.capabilities.owner("gizmo") == "claim"
    assert app.validate(Config({"system": {"hardware-profile": "gizmo-box"}, "services": {"gizmo": {}}})) == []
    assert app.validate(Config({"system": {"hardware-profile": "plain-box"}, "services": {"gizmo": {}}})) == [
        "<config>: services gizmo: hardware profile 'plain-box' has no 'gizmo' capability (it has: sampling); "
        "pick another system hardware-profile or remove 'services gizmo'"]
    assert app.validate(Config({"system": {"hardware-profile": "plain-box"}})) == []  # not configured: no error


def test_a_section_claim_declares_its_capability_and_limits(make_app):
    class Claim:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services gizmo", "a gizmo", capability="gizmo", capability_help="services gizmo",
                     limits=(LimitField("gizmo_instances", 2, "gizmo instances"),))

    app = make_app({}, plugins=[(Claim(), "claim")])
    assert app.registries.sections.capabilities["services gizmo"] == "gizmo"
    assert app.registries.capabilities["gizmo"] == "services gizmo"
    assert app.registries.capabilities.owner("gizmo") == "claim"
    assert app.registries.limits.owner("gizmo_instances") == "claim"
    assert app.limits.gizmo_instances == 2
    # the built-in features declare theirs with their claims
    assert app.registries.capabilities.owner("inline-monitoring") == "inline-monitoring"
    assert app.registries.limits.owner("clip_length_max") == "inline-monitoring"


def test_a_section_claim_with_capability_help_needs_a_capability(make_app):
    class Claim:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services gizmo", "a gizmo", capability_help="services gizmo")

    with pytest.raises(PluginError, match=r"plugin 'claim' failed in flowplane_register_config_sections: "
                                          r"config section 'services gizmo': capability_help without a capability"):
        make_app({}, plugins=[(Claim(), "claim")])


def test_builtin_features_refused_on_a_profile_without_them(make_app, tmp_path):
    """ptx-evo declares no discard accounting and no dynamic flow capture (plugins/profiles/ptx.py)."""
    app = make_app({})
    cfg = {"system": {"hardware-profile": "ptx-evo"},
           "forwarding-options": {"accounting": {"acc1": {}}},
           "services": {"dynamic-flow-capture": {}}}
    errors = app.validate(Config(cfg))
    assert any(e.startswith("<config>: forwarding-options accounting: hardware profile 'ptx-evo' has no "
                            "'discard-accounting' capability") for e in errors), errors
    assert any(e.startswith("<config>: services dynamic-flow-capture: hardware profile 'ptx-evo' has no "
                            "'dynamic-flow-capture' capability") for e in errors), errors


def test_hook_register_profiles(make_app):
    class Box:
        @hookimpl
        def flowplane_register_profiles(self, register):
            register("tiny-box", HardwareProfile("tiny-box", "test", {"max_batch": 16}))

    app = make_app({"system": {"hardware-profile": "tiny-box", "batch-size": 16}}, plugins=[(Box(), "box")])
    assert app.limits.max_batch == 16
    errors = app.validate(Config({"system": {"hardware-profile": "tiny-box", "batch-size": 17}}))
    assert errors == ["<config>: system batch-size: 17 exceeds the maximum 16 (hardware profile limit max_batch)"]


def test_hook_register_control_commands(make_app):
    from flowplane.control import ControlServer

    class Cmd:
        @hookimpl
        def flowplane_register_control_commands(self, register):
            register("show widgets", lambda app, args: {"n": len(args)}, help="w", formatter=lambda d: "Widgets: "
                                                                                                       f"{d['n']}\n")

    app = make_app({}, plugins=[(Cmd(), "cmd")])
    srv = ControlServer(app, "")
    assert srv.handle({"cmd": ["show", "widgets", "a", "b"]}) == {"ok": True, "data": {"n": 2}, "text": "Widgets: 2\n"}


def test_hook_register_encoders(make_app):
    class Enc:
        @hookimpl
        def flowplane_register_encoders(self, register):
            register("csv", lambda: type("E", (), {"encode": staticmethod(lambda records: [b"a,b"])})())

    app = make_app({}, plugins=[(Enc(), "enc")])
    assert app.registries.encoders["csv"]().encode([]) == [b"a,b"]
    assert {r["name"]: r for r in app.plugin_table()}["enc"]["registered"]["encoders"] == ["csv"]


def test_hook_register_transports(make_app):
    class T:
        @hookimpl
        def flowplane_register_transports(self, register):
            register("null", object)

    app = make_app({}, plugins=[(T(), "t")])
    assert app.registries.transports.owner("null") == "t"


def test_hook_flows_expired(make_app):
    got = []

    class Exporter:
        @hookimpl
        def flowplane_flows_expired(self, records, reason):
            got.append((len(records), reason))

    class Broken:
        @hookimpl
        def flowplane_flows_expired(self, records):
            raise RuntimeError("broken exporter")

    app = make_app({}, plugins=[(Exporter(), "exp"), (Broken(), "broken")])
    app.graph.flows_expired(records=np.zeros(3), reason="idle")
    assert got == [(3, "idle")]  # the broken exporter did not silence this one
    assert app.counters["plugins"]["plugin_errors.broken"] == 1


async def test_flows_expired_observes_flow_monitoring(make_app, tmp_path):
    """A third-party observer sees every flow the flow cache exports, as FlowRecords with the reason."""
    import socket

    from flowplane.flows import FlowRecords
    from flowplane.testing import write_pcap

    seen: list = []

    class Observer:
        @hookimpl
        def flowplane_flows_expired(self, records, reason):
            seen.append((records, reason))

    frames = [eth_ipv4_udp(sport=1000 + i % 30) for i in range(600)]
    pcap = write_pcap(str(tmp_path / "in.pcap"), frames)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:  # receives the export; never read
        collector.bind(("127.0.0.1", 0))
        cfg = {
            "interfaces": {"replay0": {"source": "pcap", "file": pcap,
                                       "family": {"any": {"filter": {"input": "all"}}}}},
            "firewall": {"family": {"any": {"filter": {"all": {
                "term": {"t": {"then": {"sample": True, "accept": True}}}}}}}},
            "forwarding-options": {"sampling": {"input": {"rate": 1}, "family": {"inet": {"output": {
                "flow-server": {"127.0.0.1": {"port": collector.getsockname()[1], "version": 5}}}}}}},
        }
        app = make_app(cfg, plugins=[(Observer(), "observer")])
        assert await Service(app, exit_on_eof=True, control=False).serve() == 0
    assert seen and all(isinstance(r, FlowRecords) for r, _ in seen)
    assert {reason for _, reason in seen} <= {"idle", "active", "tcp", "full", "shutdown"}
    assert sum(len(r) for r, _ in seen) == 30
    assert sum(int(r.data["packets"].sum()) for r, _ in seen) == 600


def test_hook_register_cli_subcommands(capsys):
    from flowplane.cli import main

    class Hello:
        @hookimpl
        def flowplane_register_cli_subcommands(self, register):
            def add_parser(sub):
                p = sub.add_parser("hello", help="say hello")
                p.add_argument("--name", default="world")

            register("hello", add_parser, lambda args: print(f"hello {args.name}") or 7)

    assert main(["hello", "--name", "plane"], plugins=[(Hello(), "hello")]) == 7
    assert capsys.readouterr().out == "hello plane\n"
    with pytest.raises(SystemExit):
        main(["--help"], plugins=[(Hello(), "hello")])
    assert "say hello" in capsys.readouterr().out  # --help lists plugin subcommands
    assert main(["plugins", "--json"]) == 0  # a built-in command: no plugin CLI is loaded for it

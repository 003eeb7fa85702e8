"""Discard accounting: 'then discard accounting NAME' and 'forwarding-options accounting NAME'.

Parsing and validation of both, routing of discarded rows into the group's own flow cache (never
the sampling instance's, and sampled rows never into the group), the show commands, the v8
aggregate export timer, and v5 export of a group to a real UDP socket with the cache flushed at
shutdown.
"""

from __future__ import annotations

import pytest
import trio

from flowplane.actions import DISCARD_ACCOUNTING
from flowplane.commands import CommandError
from flowplane.config import Config
from flowplane.control import ControlServer
from flowplane.firewall_config import parse_firewall
from flowplane.service import Service
from flowplane.testing import serve, wait_until_async, write_pcap

from frames import eth_ipv4_tcp, eth_ipv4_udp, eth_ipv6_tcp
from test_passive_monitoring import _v5_records

GROUPS = """\
forwarding-options:
  sampling:
    input: {{rate: 1}}
    family inet:
      output:
        flow-server 127.0.0.1: {{port: {sport}, version: 5}}
  accounting:
    acc1:
      output:
        flow-active-timeout: 600
        flow-inactive-timeout: 600
        cflowd 127.0.0.1: {{port: {aport}, version: 5}}
        interface sp-0/0/0: {{engine-id: 7, engine-type: 3}}
    acc6:
      output:
        flow-server 127.0.0.1: {{port: {aport}, version-ipfix: {{template: both}}}}
{more}services:
  flow-monitoring:
    version-ipfix:
      template both: {{ipv4-template: true, ipv6-template: true}}
"""

FILTERS = """\
firewall:
  family inet:
    filter f:
      term sampled:
        from: {{protocol: tcp}}
        then: [sample, accept]
      term accounted:
        from: {{protocol: udp}}
        then: {then}
  family inet6:
    filter f6:
      term all:
        then: "discard accounting acc6"
"""


def _config(tmp_path, then: str = '"discard accounting acc1"', *, sport: int = 2055, aport: int = 2056,
            more: str = "", frames=None) -> Config:
    pcap = write_pcap(str(tmp_path / "in.pcap"), frames or [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    path.write_text(f"""\
interfaces:
  replay0:
    source: pcap
    file: {pcap}
    family inet: {{filter input: f}}
    family inet6: {{filter input: f6}}
""" + FILTERS.format(then=then) + GROUPS.format(sport=sport, aport=aport, more=more))
    return Config.load(str(path))


# -- the firewall syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize("then", ['"discard accounting acc1"', "{discard: {accounting: acc1}}",
                                  '{discard: "accounting acc1", count: c1}', '["count c1", "discard accounting acc1"]',
                                  "[{discard: {accounting: acc1}}]"])
def test_every_yaml_shape_discards_and_names_the_group(make_app, tmp_path, then):
    app = make_app(_config(tmp_path, then), configure=False)
    filters, issues = parse_firewall(app.config.data, app.registries.actions)
    assert issues == []
    term = next(t for f in filters if f.name == "f" for t in f.terms if t.name == "accounted")
    assert term.decision == "discard" and term.terminating_action == "discard"
    assert term.plugin_actions == [(DISCARD_ACCOUNTING, "acc1")]
    plain = parse_firewall({"firewall": {"filter": {"g": {"term": {"t": {"then": "discard"}}}}}},
                           app.registries.actions)
    assert plain[1] == [] and plain[0][0].terms[0].plugin_actions == []


@pytest.mark.parametrize("then, message", [
    ('"discard accounting ac1"', "accounting group 'ac1' is not defined under 'forwarding-options accounting' "
                                  "(did you mean 'acc1'?)"),
    ("{discard: {accounting: zzz}}", "accounting group 'zzz' is not defined under 'forwarding-options accounting'; "
                                     "defined: acc1, acc6"),
    ('"discard accounting"', "expected 'discard' alone or 'discard accounting NAME' (YAML: 'discard: {accounting: "
                             "NAME}'); got 'accounting'"),
    ("{discard: {accounting: [acc1]}}", "expected 'discard' alone or 'discard accounting NAME'"),
    ('"discard counting acc1"', "expected 'discard' alone or 'discard accounting NAME'"),
    ("{discard-accounting: acc1}", "write discard accounting as 'discard accounting NAME'"),
    ('["discard accounting acc1", accept]', "term 'accounted' has conflicting terminating actions: discard, accept"),
    ('["discard", "discard accounting acc1"]', "action 'discard' appears twice in term 'accounted'"),
])
def test_bad_discard_accounting_is_a_clear_error(make_app, tmp_path, then, message):
    cfg = _config(tmp_path, then)
    app = make_app(cfg, configure=False)
    errors = app.validate(cfg)
    assert any(message in e for e in errors), errors
    bad = [e for e in errors if message in e][0]
    assert bad.startswith(f"{cfg.path}:") and " then" in bad  # file:line:col and the key path


def test_without_the_plugin_the_error_says_what_is_missing(make_app, tmp_path):
    cfg = _config(tmp_path)
    cfg.data.setdefault("system", {})["plugins"] = {"disable": ["flow-monitoring"]}
    app = make_app(cfg, configure=False)
    text = "\n".join(app.validate(cfg))
    assert "'discard accounting' needs the plugin that implements discard accounting (flow-monitoring)" in text
    assert "no enabled plugin handles 'forwarding-options accounting'" in text


# -- forwarding-options accounting -------------------------------------------------------------------------


@pytest.mark.parametrize("group, message", [
    ("acc1: {}", "forwarding-options accounting acc1: missing: 'output'"),
    ("acc1: {output: {flow-active-timeout: 60}}", "missing: at least one 'flow-server ADDRESS"),
    ("acc1: {output: {aggregate-export-interval: 30, cflowd 127.0.0.1: {port: 1, version: 5}}}",
     "aggregate-export-interval: 30 is below the minimum 90"),
    ("acc1: {output: {cflowd 127.0.0.1: {port: 1, version: 5}, flow-server 127.0.0.2: {port: 1, version: 5}}}",
     "say 'flow-server' or its older spelling 'cflowd', not both"),
    ("acc1: {output: {cflowd 127.0.0.1: {port: 1, version: 9}}}", "version 9 needs a template"),
    ("acc1: {outptu: {}}", "unknown key 'outptu' (did you mean 'output'?)"),
    ("edge: {output: {cflowd 127.0.0.1: {port: 1, version: 5}}}",
     "accounting group 'edge' has the name of a sampling instance; give it its own name"),
])
def test_accounting_group_validation(make_app, tmp_path, group, message):
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    path.write_text(f"""\
interfaces:
  replay0: {{source: pcap, file: {pcap}}}
forwarding-options:
  sampling:
    family inet: {{output: {{flow-server 127.0.0.1: {{port: 2055, version: 5}}}}}}
    instance edge: {{family inet: {{output: {{flow-server 127.0.0.1: {{port: 2058, version: 5}}}}}}}}
  accounting:
    {group}
""")
    cfg = Config.load(str(path))
    errors = make_app(cfg, configure=False).validate(cfg)
    assert any(message in e for e in errors), errors


def test_group_families_follow_its_servers(make_app, tmp_path):
    app = make_app(_config(tmp_path))
    fm = app.pm.get_plugin("flow-monitor")
    assert sorted(fm.accounting) == ["acc1", "acc6"]
    assert list(fm.accounting["acc1"].inst.families) == ["inet"]  # v5: IPv4 only
    assert list(fm.accounting["acc6"].inst.families) == ["inet", "inet6"]  # IPFIX template with ipv6
    fam = fm.accounting["acc1"].inst.families["inet"]
    assert (fam.active_timeout, fam.engine_id, fam.engine_type) == (600, 7, 3)
    assert all(e.kind == "accounting" for e in fm.accounting.values())
    assert fm.engines["(default sampling)"].kind == "sampling"


# -- routing -------------------------------------------------------------------------------------------------


def _flows(engine) -> dict[int, int]:
    """source port -> packets, over every cache of *engine*."""
    out: dict[int, int] = {}
    for cache in engine.caches.values():
        for r in cache.snapshot(limit=10_000, order="packets").data:
            out[int(r["sport"])] = out.get(int(r["sport"]), 0) + int(r["packets"])
    return out


def test_discarded_rows_reach_the_group_and_never_sampling(make_app, make_batch, tmp_path):
    app = make_app(_config(tmp_path))
    udp = [eth_ipv4_udp(sport=1000 + i % 4) for i in range(40)]
    tcp = [eth_ipv4_tcp(sport=2000 + i % 3) for i in range(30)]
    v6 = [eth_ipv6_tcp(sport=3000) for _ in range(5)]
    batch = make_batch(udp + tcp + v6, iface=app.interfaces.id("replay0"))
    app.process(batch)
    fm = app.pm.get_plugin("flow-monitor")
    acc, acc6, sampling = fm.accounting["acc1"], fm.accounting["acc6"], fm.engines["(default sampling)"]
    assert _flows(acc) == {1000: 10, 1001: 10, 1002: 10, 1003: 10}
    assert _flows(sampling) == {2000: 10, 2001: 10, 2002: 10}
    assert _flows(acc6) == {3000: 5}
    assert acc.counters["discarded_packets"] == 40 and acc.counters["discarded_bytes"] == sum(map(len, udp))
    assert acc6.counters["discarded_packets"] == 5
    fw = app.graph.firewall
    assert fw.get("inet", "f").counters()["packets"] == {"accepted": 30, "discarded": 40, "rejected": 0}
    assert app.counters["pipeline"]["filter_discarded"] == 45

    reply = ControlServer(app, "").handle({"cmd": ["show", "services", "accounting", "flow", "name", "acc1"]})
    assert reply["ok"], reply
    (row,) = reply["data"]["instances"]
    assert row["kind"] == "accounting" and row["discarded_packets"] == 40 and row["flow_packets"] == 40
    assert row["active_flows"] == 4 and row["discarded_bytes"] == sum(map(len, udp))


def test_show_text_layout(make_app, make_batch, tmp_path):
    from flowplane.plugins.flow_monitoring.commands import format_flow, format_status, show_flow, show_status

    app = make_app(_config(tmp_path))
    app.process(make_batch([eth_ipv4_udp(sport=7)] * 3, iface=app.interfaces.id("replay0")))
    flow = format_flow(show_flow(app, ["name", "acc1"]))
    assert flow.splitlines()[:4] == [
        "Service Accounting interface: flowplane, Local interface index: 0",
        "Service name: acc1 (discard accounting group)",
        "Flow information",
        f"  Discarded packets: 3, Discarded bytes: {3 * len(eth_ipv4_udp(sport=7))}, Not IP: 0",
    ]
    status = format_status(show_status(app, ["name", "acc1"]))
    assert "Interface state: Accounting" in status and "cflowd v5 to 127.0.0.1:2056/udp" in status
    with pytest.raises(CommandError, match="no sampling instance or group 'acc9'"):
        show_flow(app, ["name", "acc9"])


def test_sampling_and_discard_in_one_term_is_the_sampling_group_case(make_app, make_batch, tmp_path):
    """Junos 'discard accounting with a sampling group': 'sample; discard;' samples discarded packets into the
    sampling instance; the accounting group sees only 'discard accounting' traffic."""
    app = make_app(_config(tmp_path, then="[sample, discard]"))
    app.process(make_batch([eth_ipv4_udp(sport=9)] * 4, iface=app.interfaces.id("replay0")))
    fm = app.pm.get_plugin("flow-monitor")
    assert _flows(fm.engines["(default sampling)"]) == {9: 4}
    assert _flows(fm.accounting["acc1"]) == {}


# -- the v8 aggregate export timer ---------------------------------------------------------------------------


def test_aggregate_export_interval_holds_v8_records(make_app, make_batch, tmp_path):
    acc8 = """\
    acc8:
      output:
        aggregate-export-interval: 90
        flow-inactive-timeout: 10
        cflowd 127.0.0.1: {port: 2057, version: 8, aggregation: protocol-port}
"""
    app = make_app(_config(tmp_path, then='"discard accounting acc8"', more=acc8))
    fm = app.pm.get_plugin("flow-monitor")
    engine = fm.accounting["acc8"]
    (exp,) = engine.all_exporters
    assert exp.hold_ns == 90 * 10**9
    iface = app.interfaces.id("replay0")
    s = 10**9
    app.process(make_batch([eth_ipv4_udp(sport=1)] * 2, ts=[0, s], iface=iface))
    app.process(make_batch([eth_ipv4_udp(sport=2)] * 2, ts=[20 * s, 21 * s], iface=iface))  # sport 1 idles out
    app.process(make_batch([eth_ipv4_udp(sport=3)], ts=[40 * s], iface=iface))  # and sport 2
    assert engine.counters["flows_idle"] == 2
    assert exp.counters["records"] == 0 and sum(len(r) for r in exp._held) == 2  # held, not yet exported
    exp.tick(exp._held_since + 90 * s - 1)  # the timer runs 90 s from the first held record
    assert exp.counters["records"] == 0
    exp.tick(exp._held_since + 90 * s)
    assert exp.counters["records"] == 2 and not exp._held
    engine.flush()  # shutdown exports what is cached and what the timer holds
    assert exp.counters["records"] == 3


# -- end to end: v5 export to a real UDP socket, flush at shutdown -----------------------------------------------


async def test_group_exports_only_discarded_traffic_and_flushes_at_shutdown(make_app, tmp_path):
    udp = [eth_ipv4_udp(sport=1000 + i % 5, dport=53) for i in range(50)]
    tcp = [eth_ipv4_tcp(sport=2000 + i % 2) for i in range(20)]
    frames = [f for pair in zip(udp[:20], tcp) for f in pair] + udp[20:]
    socks = []
    for _ in range(2):
        s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await s.bind(("127.0.0.1", 0))
        socks.append(s)
    sampled_sock, acc_sock = socks
    cfg = _config(tmp_path, sport=sampled_sock.getsockname()[1], aport=acc_sock.getsockname()[1], frames=frames)
    app = make_app(cfg)
    assert await Service(app, exit_on_eof=True, control=False).serve() == 0

    async def drain(sock) -> list[bytes]:
        got = []
        while True:
            with trio.move_on_after(0.3) as scope:
                got.append(await sock.recv(65535))
            if scope.cancelled_caught:
                return got

    acc_records = _v5_records(await drain(acc_sock))
    sampled_records = _v5_records(await drain(sampled_sock))
    # timeouts are 600 s and the capture lasts 70 us: every group flow left at shutdown
    assert sorted((r["sport"], r["packets"], r["bytes"]) for r in acc_records) == \
        [(1000 + i, 10, 10 * (len(udp[0]) - 14)) for i in range(5)]  # v5 counts IP bytes
    assert {r["engine"] for r in acc_records} == {(3, 7)}
    assert sorted((r["sport"], r["packets"]) for r in sampled_records) == [(2000, 10), (2001, 10)]
    fm = app.pm.get_plugin("flow-monitor")
    assert fm.accounting["acc1"].counters["flows_shutdown"] == 5


# -- accounting without sampling; profile limits ------------------------------------------------------------


def _accounting_only(tmp_path, groups: str, profile: str = "generic-linux") -> Config:
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    path.write_text(f"""\
system: {{hardware-profile: {profile}}}
interfaces:
  replay0: {{source: pcap, file: {pcap}, family any: {{filter input: all}}}}
firewall:
  family any:
    filter all:
      term t:
        then: "discard accounting acc1"
forwarding-options:
  accounting:
{groups}""")
    return Config.load(str(path))


def test_accounting_without_sampling(make_app, make_batch, tmp_path):
    app = make_app(_accounting_only(tmp_path, "    acc1: {output: {cflowd 127.0.0.1: {port: 2056, version: 5}}}\n"))
    fm = app.pm.get_plugin("flow-monitor")
    assert fm.engines == {} and list(fm.accounting) == ["acc1"]
    frames = [eth_ipv4_udp(sport=5)] * 3 + [eth_ipv6_tcp()] * 2 + [bytes(60)]  # IPv4, IPv6, not IP
    app.process(make_batch(frames, iface=app.interfaces.id("replay0")))
    acc = fm.accounting["acc1"]
    # every discarded frame is counted; the group meters IPv4 (its v5 server carries nothing else)
    assert acc.counters["discarded_packets"] == 6
    assert (acc.counters["not_ip"], acc.counters["no_family_output"]) == (1, 2)
    assert _flows(acc) == {5: 3}
    server = ControlServer(app, "")
    rows = server.handle({"cmd": ["show", "services", "accounting", "flow"]})["data"]["instances"]
    assert [(r["name"], r["kind"], r["not_ip"]) for r in rows] == [("acc1", "accounting", 1)]
    assert server.handle({"cmd": ["clear", "services", "accounting", "flow", "name", "acc1"]})["ok"]
    assert acc.counters["discarded_packets"] == 0


def test_accounting_groups_count_towards_profile_limits(make_app, tmp_path):
    servers = "".join(f"        flow-server 127.0.0.{i}: {{port: 2055, version: 5}}\n" for i in range(1, 6))
    cfg = _accounting_only(tmp_path, f"    acc1:\n      output:\n{servers}", profile="mx-mpc")
    text = "\n".join(make_app(cfg, configure=False).validate(cfg))
    assert "5 flow servers exceed the maximum 4 (hardware profile limit flow_servers_per_family)" in text
    assert ("export version 5 is not supported by this hardware profile "
            "(hardware profile limit export_versions: 9, 10)") in text
    many = "".join(f"    g{g}:\n      output:\n" + "".join(
        f"        flow-server 127.0.{g}.{i}: {{port: 2055, version-ipfix: {{template: t}}}}\n" for i in range(4))
        for g in range(17)) + "    acc1: {output: {flow-server 127.0.0.1: {port: 1, version-ipfix: {template: t}}}}\n"
    many += "services:\n  flow-monitoring:\n    version-ipfix:\n      template t: {ipv4-template: true}\n"
    cfg = _accounting_only(tmp_path, many, profile="mx-mpc")
    text = "\n".join(make_app(cfg, configure=False).validate(cfg))
    assert "69 flow servers in all exceed the maximum 64 (hardware profile limit collectors_total)" in text


async def test_reload_flushes_the_old_groups_once(make_app, tmp_path):
    sink = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    frames = [eth_ipv4_udp(sport=1000 + i % 8) for i in range(80)]
    cfg = _config(tmp_path, aport=port, frames=frames)
    app = make_app(cfg)

    async def drain() -> list[dict]:
        got = []
        with trio.move_on_after(0.3):
            while True:
                got.append(await sink.recv(65535))
        return _v5_records([d for d in got if d[:2] == b"\x00\x05"])  # the IPFIX group shares the port

    async with serve(app) as service:
        await service.pipeline.finite_done.wait()
        old = app.pm.get_plugin("flow-monitor")
        await wait_until_async(lambda: sum(len(c) for c in old.accounting["acc1"].caches.values()) == 8)
        assert sum(len(c) for c in old.accounting["acc1"].caches.values()) == 8
        assert await drain() == []  # 600 s timeouts: nothing exported yet
        text = open(cfg.path).read().replace("flow-active-timeout: 600", "flow-active-timeout: 300")
        open(cfg.path, "w").write(text)
        assert await service.reload() is True
        new = app.pm.get_plugin("flow-monitor")
        assert new is not old and new.accounting["acc1"].inst.families["inet"].active_timeout == 300
        records = await drain()
        assert sorted((r["sport"], r["packets"]) for r in records) == [(1000 + i, 10) for i in range(8)]
        assert old.accounting["acc1"].counters["flows_shutdown"] == 8
        await service.stop()
    assert new.accounting["acc1"].counters["flows_shutdown"] == 0  # nothing counted twice


def test_a_full_aggregate_hold_is_exported_at_once(make_app, tmp_path, monkeypatch):
    from flowplane.flows import FlowRecords
    from flowplane.plugins.flow_monitoring import engine as engine_mod

    acc8 = ("    acc8: {output: {aggregate-export-interval: 1800, "
            "cflowd 127.0.0.1: {port: 9, version: 8, aggregation: protocol-port}}}\n")
    app = make_app(_config(tmp_path, then='"discard accounting acc8"', more=acc8))
    (exp,) = app.pm.get_plugin("flow-monitor").accounting["acc8"].all_exporters
    monkeypatch.setattr(engine_mod, "HOLD_MAX_RECORDS", 5)
    exp.export(FlowRecords.empty(3), 1)
    assert exp.counters["records"] == 0 and exp._held_count == 3
    exp.export(FlowRecords.empty(2), 2)  # the hold is full: memory stays bounded, nothing is lost
    assert exp.counters["records"] == 5 and exp._held_count == 0 and not exp._held

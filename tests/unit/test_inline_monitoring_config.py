"""services inline-monitoring: validation against each hardware profile, the term action, the loop check."""

from __future__ import annotations

import pytest

from flowplane.config import Config
from flowplane.plugins.inline_monitoring.config import LIMITS, parse
from flowplane.plugins.inline_monitoring.loop import find_loops
from flowplane.profiles import Limits
from flowplane.testing import plugin_registries, write_pcap

from frames import eth_ipv4_udp

FILTER = """\
interfaces:
  replay0:
    source: pcap
    file: {pcap}
    family inet:
      filter input: im
firewall:
  family inet:
    filter im:
      term t:
        then: {{inline-monitoring-instance: {action}, accept: true}}
"""


def _collector(name: str, dst: str = "127.0.0.1", port: int = 4739, extra: str = "") -> str:
    return f"""\
      collector {name}:
        destination-address: {dst}
        destination-port: {port}
{extra}"""


def _instance(name: str, collectors: str, extra: str = "") -> str:
    return f"""\
    instance {name}:
      template-name: t1
{extra}{collectors}"""


def _config(instances: str, *, profile: str = "generic-linux", template: str = "", action: str = "i0",
            pcap: str = "x.pcap") -> str:
    return (f"system:\n  hardware-profile: {profile}\n" + FILTER.format(pcap=pcap, action=action) +
            "services:\n  inline-monitoring:\n    template t1:\n      template-refresh-rate: 30\n"
            + template + instances)


def _errors(make_app, tmp_path, text: str) -> list[str]:
    pcap = write_pcap(str(tmp_path / "x.pcap"), [eth_ipv4_udp()])
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("x.pcap", pcap))
    cfg = Config.load(str(path))
    app = make_app(cfg, configure=False)
    return app.validate(cfg)


def _instances(n: int, collectors_each: int = 1, collector_extra: str = "", instance_extra: str = "") -> str:
    out = []
    for i in range(n):
        cols = "".join(_collector(f"c{j}", f"127.0.{i}.{j + 1}", extra=collector_extra) for j in range(collectors_each))
        out.append(_instance(f"i{i}", cols, instance_extra))
    return "".join(out)


@pytest.mark.parametrize("profile,limit", [("mx-mpc", 16), ("ptx-evo", 7), ("generic-linux", 64)])
def test_instance_limit_per_profile(make_app, tmp_path, profile, limit):
    assert _errors(make_app, tmp_path, _config(_instances(limit), profile=profile)) == []
    errors = _errors(make_app, tmp_path, _config(_instances(limit + 1), profile=profile))
    assert len(errors) == 1, errors
    assert (f"services inline-monitoring instance: {limit + 1} inline-monitoring instances exceed the maximum "
            f"{limit} (hardware profile limit inline_monitoring_instances)") in errors[0]
    assert errors[0].startswith(str(tmp_path / "c.yaml") + ":")  # file:line:col


@pytest.mark.parametrize("profile", ["mx-mpc", "ptx-evo", "generic-linux"])
def test_four_collectors_per_instance(make_app, tmp_path, profile):
    assert _errors(make_app, tmp_path, _config(_instances(2, 4), profile=profile)) == []
    errors = _errors(make_app, tmp_path, _config(_instances(2, 5), profile=profile))
    assert len(errors) == 2, errors  # one per instance, each naming the limit
    assert all("5 collectors exceed the maximum 4 per instance (hardware profile limit collectors_per_instance)" in e
               for e in errors)


def test_full_profiles_fit_and_collectors_total_is_checked():
    cfg = {"services": {"inline-monitoring": {
        "template": {"t1": {}},
        "instance": {f"i{i}": {"template-name": "t1", "collector": {
            f"c{j}": {"destination-address": f"10.0.{i}.{j + 1}", "destination-port": 4739} for j in range(4)}}
            for i in range(16)}}}}
    mx = Limits.of(LIMITS, inline_monitoring_instances=16, collectors_per_instance=4, collectors_total=64)
    inline, issues = parse(cfg, mx)
    assert issues == [] and len(inline.collectors()) == 64
    _, issues = parse(cfg,
                      Limits.of(LIMITS, inline_monitoring_instances=16, collectors_per_instance=4, collectors_total=63))
    assert [i.message for i in issues] == [
        "64 collectors in all exceed the maximum 63 (hardware profile limit collectors_total)"]


@pytest.mark.parametrize("profile,ok", [("mx-mpc", False), ("ptx-evo", False), ("generic-linux", True)])
def test_ipv6_collectors_only_where_the_profile_allows(make_app, tmp_path, profile, ok):
    errors = _errors(make_app, tmp_path, _config(_instance("i0", _collector("c6", "::1")), profile=profile))
    if ok:
        assert errors == []
    else:
        assert len(errors) == 1
        assert ("collector c6 destination-address: IPv6 collectors are not supported on this hardware profile "
                "(hardware profile limit inline_collector_families: inet)") in errors[0]


def test_sampling_rate_scope_per_collector_on_mx(make_app, tmp_path):
    good = _config(_instance("i0", _collector("c1", extra="        sampling-rate: 10000\n")), profile="mx-mpc")
    assert _errors(make_app, tmp_path, good) == []
    bad = _config(_instance("i0", _collector("c1"), extra="      sampling-rate: 100\n"), profile="mx-mpc")
    [e] = _errors(make_app, tmp_path, bad)
    assert ("instance i0 sampling-rate: the sampling rate is set per collector on this hardware profile "
            "(sampling_rate_scope per-collector): move 'sampling-rate' under each 'collector'") in e


def test_sampling_rate_scope_per_instance_on_ptx(make_app, tmp_path):
    good = _config(_instance("i0", _collector("c1") + _collector("c2", "127.0.0.2"),
                             extra="      sampling-rate: 100\n"), profile="ptx-evo")
    assert _errors(make_app, tmp_path, good) == []
    cfg = Config.from_text(good)
    inline, _ = parse(cfg.data,
                      Limits.of(LIMITS, sampling_rate_scope="per-instance", inline_collector_families=("inet",)))
    assert [c.sampling_rate for _, c in inline.collectors()] == [100, 100]  # the instance's rate for every collector
    bad = _config(_instance("i0", _collector("c1", extra="        sampling-rate: 10\n")), profile="ptx-evo")
    [e] = _errors(make_app, tmp_path, bad)
    assert ("collector c1 sampling-rate: the sampling rate is set per instance on this hardware profile "
            "(sampling_rate_scope per-instance): move 'sampling-rate' to the instance") in e
    over = _config(_instance("i0", _collector("c1"), extra="      sampling-rate: 16000001\n"), profile="ptx-evo")
    [e] = _errors(make_app, tmp_path, over)
    assert "16000001 exceeds the maximum 16000000 (hardware profile limit sampling_rate_max)" in e


@pytest.mark.parametrize("profile,max_clip,default", [("mx-mpc", 126, 126), ("ptx-evo", 256, 256),
                                                      ("generic-linux", 1438, 128)])
def test_clip_length_against_the_profile(make_app, tmp_path, profile, max_clip, default):
    cfg = Config.from_text(_config(_instance("i0", _collector("c1")), profile=profile))
    registries = make_app(cfg, configure=False).registries
    limits = registries.limits_of(registries.profiles[profile])
    inline, issues = parse(cfg.data, limits)
    assert issues == [] and inline.instances["i0"].clip_length == default
    ok = _config(_instance("i0", _collector("c1"), extra=f"      clip-length: {max_clip}\n"), profile=profile)
    assert _errors(make_app, tmp_path, ok) == []
    bad = _config(_instance("i0", _collector("c1"), extra=f"      clip-length: {max_clip + 1}\n"), profile=profile)
    [e] = _errors(make_app, tmp_path, bad)
    if profile == "generic-linux":
        assert f"{max_clip + 1} exceeds the maximum {max_clip}: one record must fit one export message at MTU 1500" in e
    else:
        assert (f"clip-length: {max_clip + 1} exceeds the maximum {max_clip} "
                "(hardware profile limit clip_length_max)") in e


def test_clip_for_an_ipv6_collector_fits_the_smaller_message(make_app, tmp_path):
    ok = _config(_instance("i0", _collector("c6", "::1"), extra="      clip-length: 1418\n"))
    assert _errors(make_app, tmp_path, ok) == []
    [e] = _errors(make_app, tmp_path, ok.replace("clip-length: 1418", "clip-length: 1419"))
    assert ("instance i0 clip-length: 1419 exceeds the maximum 1418 for an IPv6 collector: one record must fit one "
            "export message at MTU 1500") in e


def test_every_problem_is_reported_with_its_key(make_app, tmp_path):
    text = _config(
        _instance("i0", _collector("c1", "not-an-ip", port=70000, extra="        dscp: 64\n        colour: red\n"))
        + "    instance i1:\n      template-name: t1x\n      collector c1: {destination-address: 127.0.0.1}\n"
        + "    instance i2:\n      template-name: t1\n",
        template="      template-id: 300\n      option-template-id: 300\n      observation-domain-id: 256\n"
                 "      option-template-refresh-rate: 5\n")
    text = text.replace("inline-monitoring-instance: i0", "inline-monitoring-instance: i9")
    errors = "\n".join(_errors(make_app, tmp_path, text))
    for needle in [
        "template t1 option-template-id: template-id and option-template-id must differ (both 300)",
        "template t1 observation-domain-id: 256 exceeds the maximum 255",
        "template t1 option-template-refresh-rate: 5 is below the minimum 10",
        "collector c1 destination-address: expected an IPv4 or IPv6 address for the collector, got 'not-an-ip'",
        "collector c1 destination-port: 70000 exceeds the maximum 65535",
        "collector c1 dscp: 64 exceeds the maximum 63",
        "collector c1 colour: unknown key 'colour'",
        "instance i1 template-name: template 't1x' is not defined under 'services inline-monitoring template' "
        "(did you mean 't1'?)",
        "collector c1: missing 'destination-port'",
        "instance i2: no 'collector' configured: the instance would export nothing",
        "then inline-monitoring-instance: inline-monitoring instance 'i9' is not defined under "
        "'services inline-monitoring instance'",
    ]:
        assert needle in errors, (needle, errors)


def test_same_collector_twice_and_mixed_families(make_app, tmp_path):
    text = _config(_instance("i0", _collector("a") + _collector("b") +
                             _collector("c", "127.0.0.3", extra="        source-address: ::1\n")))
    errors = "\n".join(_errors(make_app, tmp_path, text))
    assert "collector b: collector 'b' exports to 127.0.0.1:4739 like collector 'a' of the same instance" in errors
    assert "source-address ::1 and destination-address 127.0.0.3 are of different address families" in errors


LOOP = """\
system:
  hardware-profile: generic-linux
interfaces:
  lo:
    source: af-packet
    family inet:
      filter {direction}: watch
firewall:
  family inet:
    filter watch:
{guard}      term all:
        then: {{inline-monitoring-instance: i0, accept: true}}
services:
  inline-monitoring:
    template t1: {{}}
    instance i0:
      template-name: t1
      collector c1: {{destination-address: 127.0.0.1, destination-port: 4739}}
"""
GUARD = """\
      term not-ipfix:
        from: {protocol: [udp], destination-port: [4739]}
        then: accept
"""


@pytest.mark.parametrize("direction", ["input", "output"])
def test_monitoring_the_exports_own_interface_is_a_loop(make_app, tmp_path, direction):
    path = tmp_path / "loop.yaml"
    path.write_text(LOOP.format(direction=direction, guard=""))
    cfg = Config.load(str(path))
    [e] = make_app(cfg, configure=False).validate(cfg)
    assert e.startswith(f"{path}:7:7: interfaces lo family inet filter {direction}: loop: filter 'watch' term 'all' "
                        "sends the IPFIX export of inline-monitoring instance 'i0' collector 'c1' (udp to "
                        "127.0.0.1:4739, "
                        f"via lo {direction}) to inline-monitoring-instance 'i0'"), e
    # a term before it that accepts the export traffic breaks the loop
    path.write_text(LOOP.format(direction=direction, guard=GUARD))
    cfg = Config.load(str(path))
    assert make_app(cfg, configure=False).validate(cfg) == []


def test_loop_needs_the_route_through_the_interface():
    cfg = Config.from_text(LOOP.format(direction="output", guard="").replace("lo:\n", "eth7:\n"))
    inline, issues = parse(cfg.data, Limits.of(LIMITS))
    assert issues == []
    assert find_loops(cfg.data, inline, route=lambda dst, src: "eth0") == []  # the export leaves by another interface
    [issue] = find_loops(cfg.data, inline, route=lambda dst, src: "eth7")
    assert issue.path == ("interfaces", "eth7", "family", "inet", "filter", "output")
    # the input side of a non-loopback interface never carries our own export
    cfg_in = Config.from_text(LOOP.format(direction="input", guard="").replace("lo:\n", "eth7:\n"))
    assert find_loops(cfg_in.data, inline, route=lambda dst, src: "eth7") == []
    # a family any filter sees the export too
    any_text = LOOP.format(direction="output", guard="").replace("family inet:", "family any:")
    cfg_any = Config.from_text(any_text)
    [issue] = find_loops(cfg_any.data, inline, route=lambda dst, src: "lo")
    assert issue.path == ("interfaces", "lo", "family", "any", "filter", "output")
    # a pcap replay never contains the export traffic
    cfg_pcap = Config.from_text(LOOP.format(direction="output", guard="").replace("source: af-packet", "source: pcap"))
    sources = plugin_registries().sources  # the pcap source type declares live=False
    assert find_loops(cfg_pcap.data, inline, route=lambda dst, src: "lo", sources=sources) == []
    # without the registry every interface counts as live: the check errs on the safe side
    assert len(find_loops(cfg_pcap.data, inline, route=lambda dst, src: "lo")) == 1


def test_example_config_is_valid(make_app):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "etc" / "examples" / "inline-monitoring.yaml"
    cfg = Config.load(str(path))
    assert make_app(cfg, configure=False).validate(cfg) == []
    inline, _ = parse(cfg.data, Limits.of(LIMITS, clip_length_max=126, inline_collector_families=("inet",)))
    assert {i: [c.sampling_rate for c in inst.collectors.values()] for i, inst in inline.instances.items()} == {
        "instance-1": [10000, 10000], "instance-2": [1, 1]}

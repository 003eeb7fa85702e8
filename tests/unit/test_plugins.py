"""Plugin engine: entry points, blocking, check_pending, guarded batch hooks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from flowplane import hookimpl
from flowplane.errors import PluginError
from flowplane.pluginmanager import BUILTIN_PLUGINS, BatchHook, call_each, make_plugin_manager, plugin_dists
from flowplane.registry import DuplicateName, Registry
from flowplane.stats import Counters

ROOT = Path(__file__).resolve().parents[2]


def test_builtins_are_entry_points_exactly():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    eps = data["project"]["entry-points"]["flowplane.plugins"]
    assert sorted(eps) == sorted(BUILTIN_PLUGINS)
    pm = make_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(BUILTIN_PLUGINS) <= names
    # loaded from the entry points, so pluggy knows their distribution
    dists = plugin_dists(pm)
    assert all(dists[n] == "flowplane" for n in BUILTIN_PLUGINS)


def test_pyproject_lists_every_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(data["tool"]["setuptools"]["packages"])
    found = set()
    for top, pkg in (("core", "flowplane"), ("plugins", "flowplane.plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    assert found == listed


def test_each_pm_is_fresh():
    a, b = make_plugin_manager(), make_plugin_manager()
    assert a is not b
    obj = type("P", (), {})()
    a.register(obj, name="only-in-a")
    assert b.get_plugin("only-in-a") is None


def test_misspelled_hook_fails_at_start():
    class Typo:
        @hookimpl
        def flowplane_proces_batch(self, batch):  # missing 's'
            pass

    with pytest.raises(PluginError, match="flowplane_proces_batch"):
        make_plugin_manager(load_entrypoints=False, plugins=[(Typo(), "typo")])


def test_block_by_name():
    pm = make_plugin_manager(blocked=["af-packet", "mx-mpc"])
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert "af-packet" not in names and "mx-mpc" not in names
    assert "pcap" in names
    assert pm.is_blocked("af-packet")


def test_block_by_env_and_config(make_app):
    app = make_app({"system": {"plugins": {"disable": ["mx-mpc"]}}}, environ={"FLOWPLANE_DISABLED_PLUGINS": "ptx-evo, "
                                                                                                            "af-packet"})
    assert "mx-mpc" not in app.registries.profiles
    assert "ptx-evo" not in app.registries.profiles
    assert "af-packet" not in app.registries.sources
    assert "generic-linux" in app.registries.profiles
    table = {r["name"]: r for r in app.plugin_table()}
    assert table["mx-mpc"].get("blocked") and table["af-packet"].get("blocked")


class _Rec:
    def __init__(self, name, calls, fail=False):
        self.name, self.calls, self.fail = name, calls, fail

    @hookimpl
    def flowplane_process_batch(self, batch):
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")


def test_batch_hook_isolates_failures_and_keeps_pluggy_order():
    calls: list[str] = []
    plugins = [(_Rec("a", calls), "a"), (_Rec("bad", calls, fail=True), "bad"), (_Rec("c", calls), "c")]
    pm = make_plugin_manager(load_entrypoints=False, plugins=plugins)
    # pluggy itself stops at the failing plugin
    with pytest.raises(RuntimeError):
        pm.hook.flowplane_process_batch(batch=None)
    pluggy_order = list(calls)
    assert pluggy_order[-1] == "bad" and "a" not in pluggy_order  # LIFO: c, bad ... a never ran
    calls.clear()
    counters = Counters("plugins")
    hook = BatchHook.compile(pm, "flowplane_process_batch", counters, max_consecutive=3)
    assert hook.order == ["c", "bad", "a"]
    assert hook.order[: len(pluggy_order)] == pluggy_order
    with capture_logs() as logs:
        hook(batch=None)
    assert calls == ["c", "bad", "a"]  # every plugin ran
    assert counters["plugin_errors.bad"] == 1
    assert [e["event"] for e in logs] == ["plugin_failed"] and logs[0]["plugin"] == "bad"
    with capture_logs() as logs:
        hook(batch=None)
        hook(batch=None)
    assert "plugin_disabled" in [e["event"] for e in logs]
    calls.clear()
    hook(batch=None)
    assert calls == ["c", "a"]  # disabled after 3 consecutive failures
    assert [s for s in hook.status() if s["plugin"] == "bad"][0]["disabled"]


def test_batch_hook_rejects_wrappers():
    class Wrap:
        @hookimpl(wrapper=True)
        def flowplane_process_batch(self, batch):
            return (yield)

    pm = make_plugin_manager(load_entrypoints=False, plugins=[(Wrap(), "wrap")])
    with pytest.raises(PluginError, match="wrapper"):
        BatchHook.compile(pm, "flowplane_process_batch", Counters("x"))


def test_rare_hook_failure_names_plugin():
    class Bad:
        @hookimpl
        def flowplane_shutdown(self, app):
            raise ValueError("disk on fire")

    pm = make_plugin_manager(load_entrypoints=False, plugins=[(Bad(), "bad-plugin")])
    with pytest.raises(PluginError, match="bad-plugin.*disk on fire"):
        call_each(pm, "flowplane_shutdown", app=None)


def test_registry_duplicate_names_both_plugins():
    reg: Registry[int] = Registry("source")
    reg.current_plugin = "first"
    reg("pcap", 1)
    reg.current_plugin = "second"
    with pytest.raises(DuplicateName, match="'first'.*'second'"):
        reg("pcap", 2)
    assert reg.owner("pcap") == "first" and reg.by_owner("first") == ["pcap"]


def test_duplicate_registration_fails_app_start(make_app):
    class Clash:
        @hookimpl
        def flowplane_register_profiles(self, register):
            from flowplane.profiles import HardwareProfile

            register("mx-mpc", HardwareProfile("mx-mpc", "impostor"))

    with pytest.raises(PluginError, match="clash"):
        make_app({}, plugins=[(Clash(), "clash")])


def test_plugins_command_lists_registrations(make_app):
    app = make_app({})
    table = {r["name"]: r for r in app.plugin_table()}
    assert table["pcap"]["registered"]["sources"] == ["pcap"]
    assert table["mx-mpc"]["registered"]["profiles"] == ["mx-mpc"]
    assert "show firewall" in table["core-commands"]["registered"]["commands"]
    assert table["pcap"]["version"] == __import__("flowplane").__version__
    assert "flowplane_register_sources" in table["pcap"]["hooks"]


def test_broken_plugin_named_at_start(tmp_path, monkeypatch):
    """A third-party plugin whose import fails is named with its distribution."""
    site = tmp_path / "site"
    (site / "brokenplug").mkdir(parents=True)
    (site / "brokenplug" / "__init__.py").write_text("raise ImportError('needs libfoo')\n")
    info = site / "brokenplug-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[flowplane.plugins]\nbroken = brokenplug\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError, match=r"plugin 'broken' \(distribution 'brokenplug'.*needs "
                                          r"libfoo.*FLOWPLANE_DISABLED_PLUGINS=broken"):
        make_plugin_manager()
    pm = make_plugin_manager(blocked=["broken"])  # blocking it lets the appliance start
    assert pm.is_blocked("broken")

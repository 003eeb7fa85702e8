"""Open hardware-profile limits and capabilities: plugins declare them, profiles fill them by name."""

from __future__ import annotations

import copy
import pickle

import pytest

from flowplane import hookimpl
from flowplane.config import Config
from flowplane.control import ControlServer
from flowplane.errors import ConfigError, ConfigIssue, PluginError
from flowplane.profiles import HardwareProfile, LimitField, Limits


class Widgets:
    """A third-party feature with a limit of its own, checked in its validation."""

    @hookimpl
    def flowplane_register_limits(self, register):
        register("widget_instances", 3, "services widget instances")

    @hookimpl
    def flowplane_register_capabilities(self, register):
        register("widgets", "services widget")

    @hookimpl
    def flowplane_register_config_sections(self, register):
        register("services widget", "widgets", capability="widgets")

    @hookimpl
    def flowplane_config_validate(self, config, limits):
        n = config.get("services", "widget", "instances")
        if n is not None and n > limits.widget_instances:
            return [ConfigIssue(("services", "widget", "instances"),
                                f"{n} exceeds the maximum {limits.widget_instances} "
                                "(hardware profile limit widget_instances)")]
        return []


class WidgetBox:
    """A profile plugin that fills the third-party limit."""

    @hookimpl
    def flowplane_register_profiles(self, register):
        register("widget-box", HardwareProfile("widget-box", "many widgets", limits={"widget_instances": 10},
                                               capabilities=frozenset({"widgets"})))


def _profile(name, **kw):
    class Box:
        @hookimpl
        def flowplane_register_profiles(self, register):
            register(name, HardwareProfile(name, "test", **kw))

    return Box()


def test_hook_register_limits(make_app):
    app = make_app({"system": {"hardware-profile": "widget-box"}, "services": {"widget": {"instances": 10}}},
                   plugins=[(Widgets(), "widgets"), (WidgetBox(), "widget-box")])
    assert app.limits.widget_instances == 10  # filled by the profile
    assert app.registries.limits.owner("widget_instances") == "widgets"
    errors = app.validate(Config({"system": {"hardware-profile": "widget-box"},
                                  "services": {"widget": {"instances": 11}}}))
    assert errors == ["<config>: services widget instances: 11 exceeds the maximum 10 "
                      "(hardware profile limit widget_instances)"]

    # a profile that does not set it (generic-linux) gets the declared default
    default = app.registries.limits_of(app.registries.profiles["generic-linux"])
    assert default.widget_instances == 3
    # built-in limits keep working by attribute, declared by the plugins of their features
    assert default.clip_length_max == 9216 and app.registries.limits.owner("clip_length_max") == "inline-monitoring"
    assert app.registries.limits.owner("max_batch") == "flowplane"


def test_show_system_profile_names_who_declared_each_limit(make_app):
    app = make_app({"system": {"hardware-profile": "widget-box"}},
                   plugins=[(Widgets(), "widgets"), (WidgetBox(), "widget-box")])
    reply = ControlServer(app, "").handle({"cmd": ["show", "system", "profile"]})
    assert reply["ok"], reply
    fields = {f["name"]: f for f in reply["data"]["limit_fields"]}
    assert fields["widget_instances"] == {"name": "widget_instances", "value": 10, "set": True, "plugin": "widgets",
                                          "help": "services widget instances"}
    assert fields["max_batch"]["plugin"] == "flowplane" and not fields["max_batch"]["set"]
    assert fields["port_mirroring_instances"]["plugin"] == "port-mirroring"
    assert {"name": "widgets", "plugin": "widgets", "help": "services widget"} in reply["data"]["capability_fields"]
    assert "  widget_instances" in reply["text"] and "10  (widgets)" in reply["text"]
    assert "(flowplane, default)" in reply["text"]


def test_mx_profile_fills_the_builtin_feature_limits(make_app):
    app = make_app({"system": {"hardware-profile": "mx-mpc"}})
    assert app.limits.inline_monitoring_instances == 16 and app.limits.clip_length_max == 126
    assert app.limits.inline_collector_families == ("inet",) and app.limits.export_versions == (9, 10)
    assert app.limits.port_mirroring_instances == 16  # not set by mx-mpc: the declared default


def test_unknown_limit_in_a_profile_is_an_error_naming_the_profile(make_app):
    with pytest.raises(PluginError) as e:
        make_app({}, plugins=[(_profile("odd-box", limits={"widget_instances": 2}), "odd")])
    assert "hardware profile 'odd-box' (plugin 'odd') sets unknown limit 'widget_instances'" in str(e.value)
    with pytest.raises(PluginError, match=r"'typo-box'.*unknown limit 'max_batches' \(did you mean 'max_batch'\?\)"):
        make_app({}, plugins=[(_profile("typo-box", limits={"max_batches": 2}), "typo")])


def test_limit_value_of_the_wrong_type_is_an_error_naming_profile_and_limit(make_app):
    with pytest.raises(PluginError, match=r"profile 'bad-box' sets limit 'max_batch' to '64'; expected a number"):
        make_app({}, plugins=[(_profile("bad-box", limits={"max_batch": "64"}), "bad")])


def test_unknown_capability_is_an_error(make_app):
    with pytest.raises(PluginError, match=r"profile 'cap-box' \(plugin 'cap'\) has unknown capability 'teleport'"):
        make_app({}, plugins=[(_profile("cap-box", capabilities=frozenset({"teleport"})), "cap")])

    class Claim:
        @hookimpl
        def flowplane_register_config_sections(self, register):
            register("services gizmo", "a gizmo", capability="gizmo")

    with pytest.raises(PluginError, match=r"section 'services gizmo' \(plugin 'claim'\) needs capability 'gizmo'"):
        make_app({}, plugins=[(Claim(), "claim")])


def test_a_limit_declared_twice_names_both_plugins(make_app):
    class Again:
        @hookimpl
        def flowplane_register_limits(self, register):
            register("clip_length_max", 1, "")

    with pytest.raises(PluginError, match=r"limit 'clip_length_max' registered twice: by plugin 'again' "
                                          r"and by plugin 'inline-monitoring'"):
        make_app({}, plugins=[(Again(), "again")])


def test_profile_limits_of_a_disabled_plugin_are_ignored(make_app, tmp_path):
    """mx-mpc fills inline-monitoring limits; with that plugin disabled nobody declares them."""
    app = make_app({"system": {"hardware-profile": "mx-mpc", "plugins": {"disable": ["inline-monitoring"]}}})
    assert "inline_monitoring_instances" not in app.limits
    assert app.limits.max_batch == 4096
    with pytest.raises(AttributeError, match="no limit 'clip_length_max' is declared"):
        _ = app.limits.clip_length_max


def test_limits_outside_an_app():
    """What a plugin's unit tests use: the core limits plus the plugin's own fields."""
    mine = (LimitField("widget_instances", 3, "widgets"),)
    assert Limits.of(mine).widget_instances == 3 and Limits.of(mine, widget_instances=7).widget_instances == 7
    assert Limits(max_batch=16).max_batch == 16 and Limits().max_queue == 1024
    with pytest.raises(ValueError, match="unknown limit 'widget_instances'"):
        Limits(widget_instances=1)
    with pytest.raises(AttributeError, match="Limits are read-only"):
        Limits().max_batch = 1
    mine_set = Limits.of(mine, widget_instances=7)
    assert pickle.loads(pickle.dumps(mine_set)) == mine_set == copy.deepcopy(mine_set)


def test_config_error_names_the_plugin_limit_field(make_app, tmp_path):
    """On a profile without a value for the plugin's limit: the declared default, named in the error."""
    path = tmp_path / "w.yaml"
    path.write_text("system:\n  hardware-profile: plain-widgets\nservices:\n  widget:\n    instances: 4\n")
    with pytest.raises(ConfigError) as e:
        plain = _profile("plain-widgets", capabilities=frozenset({"widgets"}))
        make_app(Config.load(str(path)), plugins=[(Widgets(), "widgets"), (plain, "p")])
    assert e.value.lines == [f"{path}:5:5: services widget instances: 4 exceeds the maximum 3 "
                             "(hardware profile limit widget_instances)"]


def test_a_limit_name_must_be_an_identifier(make_app):
    class Dashed:
        @hookimpl
        def flowplane_register_limits(self, register):
            register("widget-instances", 1, "")

    with pytest.raises(PluginError, match=r"plugin 'dashed' failed in flowplane_register_limits: limit name "
                                          r"'widget-instances' is not a Python identifier"):
        make_app({}, plugins=[(Dashed(), "dashed")])

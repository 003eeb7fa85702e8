"""Section claims form a tree: several plugins share ``services rpm``, each owning its subsection."""

from __future__ import annotations

from flowplane.api import Config, hookimpl


class A:
    @hookimpl
    def flowplane_register_config_sections(self, register):
        register("services widget alpha", "alpha settings")


class B:
    @hookimpl
    def flowplane_register_config_sections(self, register):
        register("services widget beta", "beta settings")


def test_two_plugins_share_a_section_each_owning_a_key(make_app):
    app = make_app({}, plugins=[(A(), "a"), (B(), "b")])
    assert app.validate(Config({"services": {"widget": {"alpha": {"x": 1}, "beta": None}}})) == []


def test_an_unclaimed_key_under_a_shared_section_names_the_claimed_ones(make_app):
    app = make_app({}, plugins=[(A(), "a"), (B(), "b")])
    [error] = app.validate(Config({"services": {"widget": {"alpha": {}, "betta": {}}}}))
    assert error == ("<config>: services widget betta: no enabled plugin handles 'services widget betta' "
                     "(did you mean 'beta'?); known: alpha, beta")


def test_a_shared_section_must_be_a_mapping(make_app):
    app = make_app({}, plugins=[(A(), "a")])
    [error] = app.validate(Config({"services": {"widget": "alpha"}}))
    assert error.startswith("<config>: services widget: expected ")


def test_rpm_probes_validate_with_the_twamp_plugin_disabled(make_app):
    cfg = {"services": {"rpm": {"probe-limit": 10}}, "system": {"plugins": {"disable": ["twamp"]}}}
    app = make_app(cfg)
    assert "services rpm twamp" not in app.registries.sections
    assert app.validate() == []
    [error] = app.validate(Config({"services": {"rpm": {"twamp": {"server": {}}}}}))
    assert "no enabled plugin handles 'services rpm twamp'" in error

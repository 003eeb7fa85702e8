"""The config hooks of a feature whose section has one ``parse(data) -> (cfg, issues)`` function."""

from __future__ import annotations

from . import hookimpl


def config_validator(parse, *, registries=False):
    """A ``flowplane_config_validate`` implementation returning the issues ``parse`` finds.

    Assign it in the plugin module: ``flowplane_config_validate = config_validator(parse)``.  With
    ``registries=True`` it is called as ``parse(config.data, registries)``.
    """
    if registries:
        @hookimpl
        def flowplane_config_validate(config, registries):
            return parse(config.data, registries)[1]
    else:
        @hookimpl
        def flowplane_config_validate(config):
            return parse(config.data)[1]
    return flowplane_config_validate


def parsed_config(app, parse, *, registries=False):
    """The section's parsed config for ``flowplane_configure``: None when absent or when it has issues."""
    cfg, issues = parse(app.config.data, app.registries) if registries else parse(app.config.data)
    return None if issues else cfg

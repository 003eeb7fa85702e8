"""pytest plugin for flowplane and third-party plugin authors.

Enable it in your ``conftest.py``::

    pytest_plugins = ["flowplane.testing"]

Fixtures:

* ``make_config(text_or_dict)`` -> :class:`flowplane.config.Config`
* ``make_app(config, plugins=[(obj, "name")], load_entrypoints=True)`` ->
  a configured :class:`flowplane.app.App` (control socket placed in tmp_path)
* ``register_plugin(app, obj, name)`` -> registers for the test, always unregistered
* ``make_batch(frames, ...)`` -> :class:`flowplane.batch.PacketBatch`

Helpers: :func:`write_pcap` writes a classic pcap of frames; :func:`plugin_registries`
gives the drivers the installed plugins register (for objects built without an app).
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

import pytest
import yaml

from .app import App
from .batch import LINKTYPE_ETHERNET, PacketBatch
from .config import Config


def config_from(obj: str | dict, path: str = "<test>") -> Config:
    text = obj if isinstance(obj, str) else yaml.safe_dump(obj, sort_keys=False)
    return Config.from_text(text, path=path)


def write_pcap(path: str, frames: Iterable[bytes], *, ts_ns: Iterable[int] | None = None,
               linktype: int = LINKTYPE_ETHERNET) -> str:
    """Write *frames* as a classic microsecond pcap; returns *path*."""
    frames = list(frames)
    stamps = list(ts_ns) if ts_ns is not None else [i * 1000 for i in range(len(frames))]
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for f, t in zip(frames, stamps):
            fh.write(struct.pack("<IIII", t // 1_000_000_000, (t % 1_000_000_000) // 1000, len(f), len(f)))
            fh.write(f)
    return path


def plugin_registries(*, load_entrypoints: bool = True, plugins: Iterable[tuple[object, str]] = ()) -> Any:
    """The registries (``sources``, ``encoders``, ``transports``, ``actions`` ...) that the installed
    plugins (and *plugins*) fill, as an app has them: for a feature object a test builds without an app."""
    return App.create(config_from({}), plugins=plugins, load_entrypoints=load_entrypoints, environ={}).registries


def build_app(config: Config | str | dict, *, plugins: Iterable[tuple[object, str]] = (),
              load_entrypoints: bool = True, environ: dict | None = None, configure: bool = True) -> App:
    cfg = config if isinstance(config, Config) else config_from(config)
    app = App.create(cfg, plugins=plugins, load_entrypoints=load_entrypoints, environ=environ or {})
    if configure:
        app.configure()
    return app


@pytest.fixture
def make_config():
    return config_from


@pytest.fixture
def make_app(tmp_path):
    def _make(config: Config | str | dict = "", **kw: Any) -> App:
        cfg = config if isinstance(config, Config) else config_from(config or {})
        cfg.data.setdefault("system", {}).setdefault("control-socket", str(tmp_path / "control.sock"))
        return build_app(cfg, **kw)

    return _make


@pytest.fixture
def register_plugin():
    registered: list[tuple[App, object]] = []

    def _register(app: App, obj: object, name: str) -> object:
        app.pm.register(obj, name=name)
        registered.append((app, obj))
        return obj

    yield _register
    for app, obj in registered:
        if app.pm.is_registered(obj):
            app.pm.unregister(obj)


@pytest.fixture
def make_batch():
    return PacketBatch.from_frames

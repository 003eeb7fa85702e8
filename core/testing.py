"""pytest plugin for flowplane and third-party plugin authors.

Enable it in your ``conftest.py``::

    pytest_plugins = ["flowplane.testing"]

Fixtures:

* ``make_config(text_or_dict)`` -> :class:`flowplane.config.Config`
* ``make_app(config, plugins=[(obj, "name")], load_entrypoints=True)`` ->
  a configured :class:`flowplane.app.App` (control socket placed in tmp_path)
* ``register_plugin(app, obj, name)`` -> registers for the test, always unregistered
* ``make_batch(frames, ...)`` -> :class:`flowplane.batch.PacketBatch`

Helpers:

* :func:`write_pcap` writes a classic pcap of frames.
* :func:`wait_until` / :func:`wait_until_async` poll a condition under a deadline (never a fixed sleep).
* :func:`free_port` a loopback port nothing listens on.
* :func:`command` / :func:`show` run a control-socket command against an App, in-process.
* :func:`serve` runs a configured App as a service in the test's trio run; :class:`ServiceProcess`
  runs ``flowplane run`` as a subprocess with its control socket in a test directory.  Both answer
  ``show`` and stop flushing with ``stop()``.
* :func:`plugin_registries` the drivers the installed plugins register (for objects built without an app).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from .app import App
from .batch import LINKTYPE_ETHERNET, PacketBatch
from .config import Config
from .control import ControlServer, request
from .service import Service


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


# -- waiting, ports ------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, *, what: str = "",
               ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll *predicate* until it returns something true; return that value.

    Raises AssertionError after *timeout* seconds.  Exceptions of the types in *ignore* (say, a control
    socket that is not there yet) count as "not yet".
    """
    end = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, *,
                           what: str = "") -> Any:
    """:func:`wait_until` for trio tests: polls with ``trio.sleep`` so the tasks under test keep running."""
    end = trio.current_time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if trio.current_time() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await trio.sleep(interval)


def free_port(kind: str = "udp", host: str = "127.0.0.1") -> int:
    """A port on *host* that nothing listens on right now (``kind`` "udp" or "tcp")."""
    types = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    if kind not in types:
        raise ValueError(f"kind must be 'udp' or 'tcp', not {kind!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, types[kind]) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- commands ------------------------------------------------------------------------------------


def command(app: App, *words: str, fmt: str = "text") -> dict:
    """Run one control-socket command in-process; the reply map (``ok``, ``data``, ``text`` or ``error``)."""
    return ControlServer(app, "").handle({"cmd": list(words), "format": fmt})


def show(app: App, *words: str, fmt: str = "text") -> dict:
    """``command(app, "show", *words)``."""
    return command(app, "show", *words, fmt=fmt)


# -- a running service ----------------------------------------------------------------------------


class RunningService:
    """A :class:`flowplane.service.Service` running in the test's nursery (see :func:`serve`)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.app = service.app
        self.code: int | None = None
        self._done = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)  # pipeline, reloads, ... of the Service

    async def _run(self) -> None:
        try:
            self.code = await self.service.serve()
        finally:
            self._done.set()

    def command(self, *words: str, fmt: str = "text") -> dict:
        return command(self.app, *words, fmt=fmt)

    def show(self, *words: str, fmt: str = "text") -> dict:
        return show(self.app, *words, fmt=fmt)

    async def reload(self) -> bool:
        """Re-read the config file as SIGHUP does; True when the new config was applied."""
        return await self.service.reload()

    async def wait(self) -> int | None:
        """Until the service exits on its own (end of input with ``exit_on_eof``); its exit code."""
        await self._done.wait()
        return self.code

    async def stop(self) -> int | None:
        """Stop as SIGTERM does (sources stop, the pipeline drains, outputs flush); the exit code."""
        if not self._done.is_set():
            await self.service.stop()
            await self._done.wait()
        return self.code


@asynccontextmanager
async def serve(app: App, *, control: bool = False, exit_on_eof: bool = False,
                speed: float = 0.0) -> AsyncIterator[RunningService]:
    """Run *app* as a service until the block ends (then stopped flushing, as by SIGTERM).

    The block starts once the service is ready: every source, listener and background task started.
    """
    running = RunningService(Service(app, control=control, exit_on_eof=exit_on_eof, speed=speed))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(running._run)
        await running.service.ready.wait()
        try:
            yield running
        finally:
            if not running._done.is_set():
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + 60
                    await running.stop()
            nursery.cancel_scope.cancel()


class ServiceProcess:
    """``flowplane run -c CONFIG`` as a subprocess, stdout and stderr to ``DIR/NAME.log``.

    The control socket is the config's ``system control-socket``, which the caller places in its test
    directory.  ``show`` asks it (json); ``stop`` sends SIGTERM and waits for the exit code.
    """

    def __init__(self, config_path: str | Path, control_socket: str | Path, *, args: Iterable[str] = (),
                 env: dict | None = None, name: str = "flowplane",
                 popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.config_path = Path(config_path)
        self.control_socket = str(control_socket)
        self.log_path = self.config_path.parent / f"{name}.log"
        self.log = open(self.log_path, "w+")
        cmd = [sys.executable, "-m", "flowplane", "run", "-c", str(self.config_path), *args]
        self.proc = popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                          env=env if env is not None else dict(os.environ, PYTHONUNBUFFERED="1"))

    def command(self, *words: str, timeout: float = 10.0) -> dict:
        return request(self.control_socket, list(words), fmt="json", timeout=timeout)

    def show(self, *words: str, timeout: float = 10.0) -> dict:
        return self.command("show", *words, timeout=timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the control socket answers (the service is up)."""
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"flowplane run exited with {self.proc.returncode}:\n{self.output()}")
            return self.command("show", "version")["ok"]
        wait_until(up, timeout, 0.05, what="the control socket", ignore=(OSError,))

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain and flush), then the exit code; killed if it outlives *timeout*."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

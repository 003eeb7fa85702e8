"""flowplane.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import time

import pytest

from flowplane.sdnotify import Notifier


def _mono_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


@pytest.fixture
def abstract_listener():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"flowplane-test-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield "@" + name, sock
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def _no_more(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


def test_from_env_pops_notify_socket(monkeypatch, listener):
    path, _ = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    sd = Notifier.from_env()
    assert sd.enabled
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    # A second Notifier (e.g. in a child) finds nothing to talk to.
    assert not Notifier.from_env().enabled
    sd.close()


def test_lifecycle_datagrams(monkeypatch, listener):
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    sd = Notifier.from_env()

    assert sd.ready()
    assert _recv(sock) == ["READY=1"]
    assert sd.ready("collecting")
    assert _recv(sock) == ["READY=1", "STATUS=collecting"]

    before = _mono_usec()
    assert sd.reloading()
    after = _mono_usec()
    reloading, monotonic = _recv(sock)
    assert reloading == "RELOADING=1"
    key, _, value = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after

    assert sd.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    assert sd.status("3 sources, 1 exporter")
    assert _recv(sock) == ["STATUS=3 sources, 1 exporter"]
    assert sd.status("two\nlines")  # a newline would start a new assignment
    assert _recv(sock) == ["STATUS=two lines"]
    assert sd.extend_timeout(10_000_000)
    assert _recv(sock) == ["EXTEND_TIMEOUT_USEC=10000000"]
    assert sd.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    _no_more(sock)
    assert (sd.sent, sd.errors) == (8, 0)
    sd.close()


def test_abstract_socket(monkeypatch, abstract_listener):
    address, sock = abstract_listener
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    sd = Notifier.from_env()
    assert sd.ready("up")
    assert _recv(sock) == ["READY=1", "STATUS=up"]
    assert sd.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    sd.close()


def test_unset_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sd = Notifier.from_env()
    assert not sd.enabled
    assert not sd.ready("x")
    assert not sd.reloading()
    assert not sd.watchdog()
    assert not sd.stopping()
    assert (sd.sent, sd.errors) == (0, 0)


@pytest.mark.parametrize("value", ["", "x", "relative/path", "vsock:2:1234"])
def test_unsupported_addresses_disable(monkeypatch, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    sd = Notifier.from_env()
    assert not sd.enabled
    assert not sd.ready()


def test_vanished_socket_does_not_raise(monkeypatch, tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    sd = Notifier.from_env()
    sock.close()  # ECONNREFUSED: bound path, nobody reading
    assert not sd.watchdog()
    path.unlink()  # ENOENT: systemd gone for good
    assert not sd.ready("still here")
    assert not sd.stopping()
    assert (sd.sent, sd.errors) == (0, 3)
    sd.close()
    assert not sd.watchdog()  # closed: a no-op, not an error


def test_full_queue_does_not_block_or_raise(monkeypatch, listener):
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    sd = Notifier.from_env()
    assert sd._sock.getblocking() is False  # a full queue cannot block the caller
    results = [sd.status("x" * 1024) for _ in range(2000)]  # nobody reads: the queue fills
    assert not all(results)
    assert sd.errors == results.count(False) > 0
    sd.close()


def test_watchdog_period_for_this_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_period() == 15.0


def test_watchdog_period_without_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier.from_env().watchdog_period() == 1.5


def test_watchdog_period_for_another_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_env().watchdog_period() is None


@pytest.mark.parametrize("usec,pid", [(None, None), ("0", None), ("junk", None), ("1000", "junk")])
def test_watchdog_period_off(monkeypatch, usec, pid):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Notifier.from_env().watchdog_period() is None


def test_explicit_environ_is_left_alone_elsewhere(listener):
    path, sock = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "OTHER": "1"}
    sd = Notifier.from_env(env)
    assert env == {"OTHER": "1"}
    assert sd.watchdog_period() == 1.0
    assert sd.ready()
    assert _recv(sock) == ["READY=1"]
    sd.close()

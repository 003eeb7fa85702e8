"""flowplane.testing: waiting, ports and the running-service harness."""

from __future__ import annotations

import socket

import pytest
import trio

from flowplane.testing import ServiceProcess, free_port, serve, show, wait_until, wait_until_async


def test_wait_until_returns_the_value_and_times_out():
    calls = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "done"), timeout=5, interval=0) == "done"
    with pytest.raises(AssertionError, match="timed out after 0.05s waiting for nothing"):
        wait_until(lambda: False, timeout=0.05, what="nothing")


def test_wait_until_ignores_the_named_errors_only():
    tries = iter([FileNotFoundError, ConnectionRefusedError, None])

    def probe():
        exc = next(tries)
        if exc:
            raise exc()
        return 7

    assert wait_until(probe, timeout=5, interval=0, ignore=(OSError,)) == 7
    with pytest.raises(KeyError):
        wait_until(lambda: {}["x"], timeout=5, ignore=(OSError,))


async def test_wait_until_async_lets_other_tasks_run():
    box = []
    async with trio.open_nursery() as nursery:
        async def fill():
            await trio.sleep(0.01)
            box.append(1)
        nursery.start_soon(fill)
        assert await wait_until_async(lambda: box, timeout=5) == [1]
    with pytest.raises(AssertionError, match="timed out"):
        await wait_until_async(lambda: False, timeout=0.02)


@pytest.mark.parametrize("kind, stype", [("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)])
@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_free_port_can_be_bound(kind, stype, host, family):
    try:
        port = free_port(kind, host)
    except OSError:
        pytest.skip(f"no {host} on this machine")
    assert 0 < port < 65536
    with socket.socket(family, stype) as s:
        s.bind((host, port))


def test_free_port_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="'udp' or 'tcp'"):
        free_port("sctp")


async def test_serve_answers_show_and_stops_flushing(make_app):
    app = make_app({})
    async with serve(app) as service:
        assert service.app is app
        assert service.show("version")["ok"]
        assert show(app, "version", fmt="json")["text"] is None
        assert await service.stop() == 0
        assert await service.stop() == 0  # stopping twice is harmless
    assert service.code == 0


async def test_serve_stops_the_service_when_the_block_ends(make_app):
    app = make_app({})
    async with serve(app) as service:
        pass
    assert service.code == 0


def test_service_process_ready_show_stop(tmp_path):
    cfg = tmp_path / "flowplane.yaml"
    cfg.write_text(f"system:\n  control-socket: {tmp_path}/control.sock\n")
    with ServiceProcess(cfg, tmp_path / "control.sock") as proc:
        proc.wait_ready()
        reply = proc.show("version")
        assert reply["ok"] and reply["data"]["config"] == str(cfg)
        assert proc.stop() == 0
    assert "service_stopped" in (tmp_path / "flowplane.log").read_text()

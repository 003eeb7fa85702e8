"""Feature subcommands come from their plugins; the core CLI names none; one-shot tools stop themselves."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from flowplane import hookimpl
from flowplane.app import App
from flowplane.cli import main
from flowplane.config import Config
from flowplane.export import EncoderOptions
from flowplane.plugins.encoders import ipfix
from flowplane.service import Service
from flowplane.subcommands import CORE_COMMANDS, plugin_subcommands

from test_collector import T0, sample_records

ROOT = Path(__file__).resolve().parents[2]
FEATURE_COMMANDS = {"replay": "flow-monitoring", "top": "flow-monitoring", "collect": "collector", "twamp": "twamp"}


def test_feature_subcommands_come_from_their_plugins(capsys):
    found = plugin_subcommands()
    assert {name: found[name].plugin for name in FEATURE_COMMANDS} == FEATURE_COMMANDS
    assert not set(found) & set(CORE_COMMANDS)
    assert main(["plugins", "--json"]) == 0  # `flowplane plugins` says which plugin adds which subcommand
    table = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert table["flow-monitoring"]["registered"]["cli subcommands"] == ["replay", "top"]
    assert table["collector"]["registered"]["cli subcommands"] == ["collect"]


def test_core_names_no_feature_subcommand():
    names = sorted(set(plugin_subcommands()) | set(FEATURE_COMMANDS))
    words = re.compile(rf"\b({'|'.join(names)})\b")
    for module in ("cli.py", "subcommands.py", "oneshot.py"):  # the command line: not a word of any feature tool
        assert not words.findall((ROOT / "core" / module).read_text()), module
    tool = re.compile(rf"flowplane ({'|'.join(names)})\b")
    for path in sorted((ROOT / "core").glob("*.py")):
        text = path.read_text()
        assert not tool.findall(text), f"{path.name} names a plugin's subcommand"
        parsers = [n.args[0].value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call)
                   and getattr(n.func, "attr", "") == "add_parser" and n.args and isinstance(n.args[0], ast.Constant)]
        assert not set(parsers) & set(names), f"{path.name} adds a plugin's subcommand"


def test_help_lists_core_and_plugin_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    for name in (*CORE_COMMANDS, *FEATURE_COMMANDS):
        assert re.search(rf"^    {re.escape(name)}\b", out, re.M), f"{name} missing from flowplane --help"
    assert "like softflowd -r" in flat and "like nfcapd" in flat and "top talkers" in flat and "TWAMP" in flat


def test_disabled_plugin_subcommand_is_absent_and_named(capsys, monkeypatch):
    monkeypatch.setenv("FLOWPLANE_DISABLED_PLUGINS", "collector")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert not re.search(r"^    collect\b", out, re.M) and re.search(r"^    replay\b", out, re.M)
    assert main(["collect", "--listen", "udp:127.0.0.1:0"]) == 2
    assert capsys.readouterr().err == ("flowplane: 'collect' comes from plugin 'collector', which is disabled "
                                       "(FLOWPLANE_DISABLED_PLUGINS)\n")
    with pytest.raises(SystemExit) as exc:  # a name no plugin has: argparse's own error
        main(["no-such-tool"])
    assert exc.value.code == 2 and "invalid choice: 'no-such-tool'" in capsys.readouterr().err


def test_a_plugin_cannot_take_a_core_command(capsys):
    class Thief:
        @hookimpl
        def flowplane_register_cli_subcommands(self, register):
            register("show", lambda sub: sub.add_parser("show"), lambda args: 0)

    found = plugin_subcommands(plugins=[(Thief(), "thief")])
    assert "show" not in found and "replay" in found  # the other plugins' commands still load
    assert "CLI command 'show' registered twice: by the core and by plugin 'thief'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# flowplane run --exit-on-eof: the reports plugins declare


def test_exit_on_eof_reports_are_declared_by_plugins_in_a_stable_order():
    app = App.create(Config.load(str(ROOT / "etc" / "flowplane.yaml")))
    assert app.registries.commands.reports() == [
        "show firewall", "show services accounting errors", "show services accounting flow",
        "show services accounting status", "show services flow-collector",
        "show services flow-collector flows limit 10"]

    class Widgets:
        @hookimpl
        def flowplane_register_control_commands(self, register):
            register("show widgets", lambda app, args: {}, report="limit 3")
            register("show gadgets", lambda app, args: {}, report=True)

    app = App.create(Config(), plugins=[(Widgets(), "widgets")])
    reports = app.registries.commands.reports()
    assert reports == sorted(reports) and {"show widgets limit 3", "show gadgets"} <= set(reports)
    with pytest.raises(TypeError, match="report must be True or a string"):
        app.registries.commands.register("show bad", lambda app, args: {}, report=3)


# ---------------------------------------------------------------------------
# stopping from inside: app.request_stop(), the path SIGTERM takes


async def test_request_stop_drains_like_sigterm(make_app):
    class Quitter:
        @hookimpl
        def flowplane_background_tasks(self, app):
            async def quit_soon(*, task_status=trio.TASK_STATUS_IGNORED):
                task_status.started()
                app.request_stop("work done")

            return [quit_soon]

    app = make_app({}, plugins=[(Quitter(), "quitter")])
    with pytest.raises(RuntimeError, match="no service is running"):
        app.request_stop("too early")
    service = Service(app, control=False)
    with trio.fail_after(10):
        assert await service.serve() == 0
    assert service.stopped_by == "request:work done"


def test_collect_count_ends_by_itself(tmp_path):
    out = tmp_path / "flows.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "flowplane", "collect", "--listen", "udp:127.0.0.1:0",
                             "--count", "300", "--output", f"jsonl:{out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("listening on udp:127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        datagrams = ipfix.factory(EncoderOptions(version=10)).encode(sample_records(300, seed=3), T0 + 4000 * 10**9)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", port))
        stdout, stderr = proc.communicate(timeout=30)  # no --duration, no signal: the count stops it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "300 flow records" in stdout and f"wrote 300 flows to {out}" in stdout
    assert len(out.read_text().splitlines()) == 300
    source = (ROOT / "plugins" / "collector" / "cli.py").read_text()
    assert "os.kill" not in source and "import signal" not in source  # it asks the service to stop

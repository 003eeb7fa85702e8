"""Structured logs: JSON lines, journald priority prefix, console renderer, stdlib routing."""

from __future__ import annotations

import json
import logging as stdlib_logging
import os

import pytest
import structlog

from flowplane import logging as fplog


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    structlog.reset_defaults()
    stdlib_logging.getLogger().handlers[:] = []


def _lines(path):
    return [line for line in path.read_text().splitlines() if line]


def test_json_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = tmp_path / "out.log"
    with open(out, "w") as fh:
        fplog.configure(fmt="json", level="info", stream=fh)
        log = structlog.get_logger("t")
        log.info("source_started", source="eth1", packets=3)
        log.debug("hidden_event")
        stdlib_logging.getLogger("some.lib").warning("from stdlib %s", "x")
    lines = _lines(out)
    first = json.loads(lines[0])
    assert first["event"] == "source_started" and first["source"] == "eth1" and first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert not any("hidden_event" in line for line in lines)
    assert json.loads(lines[1])["event"] == "from stdlib x"


def test_journald_priority_prefix(tmp_path, monkeypatch):
    out = tmp_path / "journal.log"
    with open(out, "w") as fh:
        st = os.fstat(fh.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        fplog.configure(fmt="json", level="info", stream=fh)
        log = structlog.get_logger("t")
        log.info("service_ready")
        log.error("reload_rejected", errors=["x"])
        log.warning("watchdog_withheld")
    lines = _lines(out)
    assert lines[0].startswith('<6>{') and json.loads(lines[0][3:])["event"] == "service_ready"
    assert lines[1].startswith("<3>{") and lines[2].startswith("<4>{")


def test_journal_stream_of_another_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    out = tmp_path / "o.log"
    with open(out, "w") as fh:
        fplog.configure(fmt="json", stream=fh)
        structlog.get_logger().info("plain")
    assert _lines(out)[0].startswith("{")


def test_console_format(tmp_path):
    out = tmp_path / "c.log"
    with open(out, "w") as fh:
        fplog.configure(fmt="console", stream=fh)
        structlog.get_logger().info("source_started", source="eth1")
    line = _lines(out)[0]
    assert "source_started" in line and "source=eth1" in line and not line.startswith("{")

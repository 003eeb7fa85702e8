"""The command helpers of flowplane.api: Table, configured_object, known_instance."""

from __future__ import annotations

import pytest

from flowplane.api import CommandError, Table, configured_object, host_port, known_instance


def test_table_header_takes_the_alignment_and_width_of_each_field():
    t = Table("  {name:<6}{rate:>10,.1f}  {note}", name="Name", rate="Rate", note="Note")
    assert t.header == "  Name        Rate  Note"
    assert t.row({"name": "a", "rate": 1234.5, "note": "ok"}) == "  a        1,234.5  ok"
    assert t.row({"name": "a", "rate": 1.0, "note": "x"}, note="overridden") == "  a            1.0  overridden"
    assert t.lines([{"name": "b", "rate": 2, "note": ""}]) == [t.header, "  b            2.0  "]
    assert Table("{a:>3}{{literal}}", a="A").header == "  A{literal}"


def test_table_row_missing_a_field_is_an_error():
    with pytest.raises(KeyError):
        Table("{a}{b}", a="A", b="B").row({"a": 1})


def test_configured_object_or_not_configured(make_app):
    app = make_app({})
    thing = object()
    app.pm.register(thing, name="thing-state")
    assert configured_object(app, "thing-state", "not configured") is thing
    with pytest.raises(CommandError, match="^thing is not configured$"):
        configured_object(app, "other", "thing is not configured")


def test_known_instance():
    assert known_instance(None, ["a"], "thing instance") is None
    assert known_instance("a", {"a": 1, "b": 2}, "thing instance") == "a"
    with pytest.raises(CommandError, match=r"^no thing instance 'c'; configured: a, b$"):
        known_instance("c", {"a": 1, "b": 2}, "thing instance")
    with pytest.raises(CommandError, match=r"configured: none$"):
        known_instance("c", [], "thing instance")


def test_host_port_brackets_ipv6():
    assert host_port("192.0.2.1", 4739) == "192.0.2.1:4739"
    assert host_port("2001:db8::1", 4739) == "[2001:db8::1]:4739"

"""take_int / take_number / take_bool / take_address: one key read, its issue recorded, a default otherwise."""

from __future__ import annotations

from flowplane.api import take_address, take_bool, take_int, take_number

P = ("services", "x")


def test_present_valid_values():
    issues: list = []
    sec = {"n": 5, "t": 2, "b": True, "a": "2001:DB8::1"}
    assert take_int(sec, "n", P, issues, 1, 10, 0) == 5
    assert take_number(sec, "t", P, issues, 0, 10, 1.0) == 2.0
    assert isinstance(take_number(sec, "t", P, issues, 0, 10, 1), float)
    assert take_bool(sec, "b", P, issues) is True
    assert take_address(sec, "a", P, issues) == "2001:db8::1"
    assert issues == []


def test_absent_gives_the_default():
    issues: list = []
    assert take_int({}, "n", P, issues, 1, 10, 7) == 7
    assert take_number({}, "t", P, issues, 0, 10, 1.5) == 1.5
    assert take_bool({}, "b", P, issues, True) is True
    assert take_address({}, "a", P, issues) is None
    assert issues == []


def test_bad_values_give_the_default_and_an_issue_at_the_key():
    issues: list = []
    sec = {"n": 11, "t": "x", "b": "yes", "a": "300.1.1.1"}
    assert take_int(sec, "n", P, issues, 1, 10, 7) == 7
    assert take_number(sec, "t", P, issues, 0, 10, 1.5) == 1.5
    assert take_bool(sec, "b", P, issues) is False
    assert take_address(sec, "a", P, issues) is None
    assert [i.path for i in issues] == [P + ("n",), P + ("t",), P + ("b",), P + ("a",)]
    assert "exceeds the maximum 10" in issues[0].message and "IPv4 or IPv6 address" in issues[3].message

"""Config helpers of flowplane.api that plugins share."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flowplane.api import check_address, check_int_fields, host_port, split_host_port

FIELDS = (("port", "port", 1, 65535), ("ttl", "ttl", 1, 255), ("absent", "absent", 0, 1))


def test_check_int_fields_stores_the_valid_values_and_reports_the_rest():
    target = SimpleNamespace(port=0, ttl=64, absent=None)
    issues = check_int_fields({"port": 4739, "ttl": 300}, ("services", "x"), FIELDS, target)
    assert (target.port, target.ttl, target.absent) == (4739, 64, None)
    assert [(i.path, i.message) for i in issues] == [(("services", "x", "ttl"), "300 exceeds the maximum 255")]


def test_check_int_fields_into_a_dict():
    values: dict = {}
    issues = check_int_fields({"port": "x", "ttl": 9}, ("s",), FIELDS, values)
    assert values == {"ttl": 9}
    assert [str(i.message) for i in issues] == ["expected an integer, got 'x'"]


def test_check_address_normalises_or_reports():
    assert check_address("2001:DB8::1", ("a",)) == ("2001:db8::1", [])
    addr, issues = check_address("nope", ("s", "address"))
    assert addr is None
    assert [(i.path, i.message) for i in issues] == [(("s", "address"), "expected an IPv4 or IPv6 address, got 'nope'")]


def test_split_host_port():
    assert split_host_port("192.0.2.1:862") == ("192.0.2.1", 862)
    assert split_host_port("[2001:db8::1]:50000") == ("2001:db8::1", 50000)
    assert split_host_port("[2001:db8::1]", 862) == ("2001:db8::1", 862)
    assert split_host_port("2001:db8::1", 7) == ("2001:db8::1", 7)  # no brackets: all address
    assert split_host_port("example.net") == ("example.net", None)
    for host, port in (("192.0.2.1", 4739), ("::1", 4739)):
        assert split_host_port(host_port(host, port)) == (host, port)
    with pytest.raises(ValueError):
        split_host_port("192.0.2.1:x")

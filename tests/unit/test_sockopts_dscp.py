"""Shared socket options and DSCP parsing from flowplane.api, on real sockets."""

from __future__ import annotations

import socket

import pytest

from flowplane.api import dscp_tos, grow_rcvbuf, grow_sndbuf, parse_dscp, set_ip_options


@pytest.mark.parametrize("value,dscp", [(0, 0), (63, 63), ("101110", 46), ("EF", 46), (" af41 ", 34), ("cs6", 48),
                                        ("be", 0)])
def test_parse_dscp_forms(value, dscp):
    assert parse_dscp(value) == dscp


@pytest.mark.parametrize("value", [64, -1, True, "gold", "1011", None, 4.0])
def test_parse_dscp_rejects(value):
    assert parse_dscp(value) is None


def test_parse_dscp_aliases_are_the_callers():
    assert parse_dscp("nc1") is None and parse_dscp("nc1", {"nc1": 48}) == 48
    assert parse_dscp("ef", {"ef": 1}) == 46  # the standard names win


def test_ip_options_and_buffers_on_real_sockets():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        set_ip_options(s, ttl=7, tos=dscp_tos(46))
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 7
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 46 << 2
        before = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        grow_rcvbuf(s, 1 << 20)
        grow_sndbuf(s, 1 << 20)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(before, 1 << 20)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        set_ip_options(s, ttl=9, tos=dscp_tos(10))
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 9
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 40

"""routing-options static: longest-prefix match fills next hop, AS and masks of exported records."""

import ipaddress

import numpy as np

from flowplane.config import Config
from flowplane.flows import FlowRecords
from flowplane.plugins.flow_monitoring.routes import parse_routes

MAPPED = 0x0000_FFFF_0000_0000


def _records(pairs):
    r = FlowRecords.empty(len(pairs))
    for i, (src, dst) in enumerate(pairs):
        for side, text in (("src", src), ("dst", dst)):
            a = ipaddress.ip_address(text)
            r.data["af"][i] = a.version
            if a.version == 4:
                r.data[f"{side}_lo"][i] = MAPPED | int(a)
            else:
                r.data[f"{side}_hi"][i], r.data[f"{side}_lo"][i] = int(a) >> 64, int(a) & (2**64 - 1)
    return r


def test_longest_prefix_wins_and_fields_are_filled():
    table, issues = parse_routes({"routing-options": {"autonomous-system": 64512, "static": {"route": {
        "198.18.0.0/15": {"next-hop": "192.0.2.1", "as": 65001},
        "198.18.7.0/24": {"next-hop": "192.0.2.2", "as": 65007},
        "10.0.0.0/8": {"next-hop": "192.0.2.9"},
        "0.0.0.0/0": {"next-hop": "192.0.2.254", "as": 3356},
        "2001:db8:2::/48": {"next-hop": "2001:db8::1", "as": 65002}}}}})
    assert issues == []
    r = _records([("10.1.2.3", "198.18.7.9"), ("10.1.2.3", "198.19.0.1"), ("203.0.113.5", "10.0.0.1"),
                  ("2001:db8:1::1", "2001:db8:2::5")])
    table.annotate(r)
    d = r.data
    assert d["dst_as"].tolist() == [65007, 65001, 64512, 65002]
    assert d["dst_mask"].tolist() == [24, 15, 8, 48]
    assert d["src_as"].tolist() == [64512, 64512, 3356, 0]
    assert d["src_mask"].tolist() == [8, 8, 0, 0]
    assert (d["nexthop_lo"][:3] & np.uint64(0xFFFFFFFF)).tolist() == [
        int(ipaddress.ip_address(a)) for a in ("192.0.2.2", "192.0.2.1", "192.0.2.9")]
    assert (int(d["nexthop_hi"][3]) << 64 | int(d["nexthop_lo"][3])) == int(ipaddress.ip_address("2001:db8::1"))


def test_bad_routes_are_reported_with_paths(make_app):
    cfg = Config.from_text("""\
routing-options:
  autonomous-system: -1
  static:
    route 10.0.0.1/8: {next-hop: 192.0.2.1}
    route 2001:db8::/32: {next-hop: 192.0.2.1}
""", path="r.yaml")
    errors = make_app(cfg, configure=False).validate(cfg)
    text = "\n".join(errors)
    assert "r.yaml:2:3: routing-options autonomous-system: -1 is below the minimum 0" in text
    assert "routing-options static route 10.0.0.1/8: expected a prefix like 198.18.0.0/15" in text
    assert "next-hop: expected an IPv6 address: next hop 192.0.2.1 is not IPv6" in text

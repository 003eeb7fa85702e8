"""ipv6ExtensionHeaders (IPFIX IE 64) bits from the decoder."""

import pytest

from flowplane.batch import PacketBatch
from flowplane.decode import decode

from frames import ETH_IPV6, TCP, eth, eth_ipv6_tcp, ipv6, tcp, v6_ah, v6_ext, v6_frag

HOP, ROUTING, FRAG, DST, AH = 0, 43, 44, 60, 51


@pytest.mark.parametrize("chain, bits", [
    ([], 0),
    ([(HOP, v6_ext)], 0x2),
    ([(HOP, v6_ext), (ROUTING, v6_ext)], 0x2 | 0x20),
    ([(DST, v6_ext), (AH, v6_ah)], 0x1 | 0x4000),
    ([(FRAG, lambda nh: v6_frag(nh, offset=0, more=True))], 0x10),
    ([(FRAG, lambda nh: v6_frag(nh, offset=100, more=False))], 0x40),
])
def test_extension_header_bits(chain, bits):
    payload = tcp(1234, 443)
    nh = TCP
    for ext_nh, build in reversed(chain):  # build inside-out
        payload = build(nh) + payload
        nh = ext_nh
    frame = eth(ETH_IPV6, ipv6(nh, payload))
    b = PacketBatch.from_frames([frame, eth_ipv6_tcp()])
    decode(b)
    assert b.status.tolist() == [0, 0]
    assert int(b.ip6_ext[0]) == bits
    assert int(b.ip6_ext[1]) == 0


def test_esp_after_extension_header():
    frame = eth(ETH_IPV6, ipv6(HOP, v6_ext(50) + b"\x00" * 16))
    b = PacketBatch.from_frames([frame])
    decode(b)
    assert int(b.proto[0]) == 50 and int(b.ip6_ext[0]) == 0x2 | 0x2000


def test_flow_records_carry_the_union_of_extension_headers():
    from flowplane.flowcache import FlowCache

    frames = [eth(ETH_IPV6, ipv6(HOP, v6_ext(TCP) + tcp(1234, 443))),
              eth(ETH_IPV6, ipv6(ROUTING, v6_ext(TCP) + tcp(1234, 443))),
              eth_ipv6_tcp(1234, 443)]
    b = PacketBatch.from_frames(frames, ts=[1, 2, 3])
    decode(b)
    cache = FlowCache(max_flows=1024)
    cache.update(b)
    rec = cache.flush().data
    assert len(rec) == 1 and int(rec["packets"][0]) == 3
    assert int(rec["ip6_ext"][0]) == 0x2 | 0x20

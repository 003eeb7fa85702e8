"""Hypothesis fuzzing of flowplane.decode: random bytes, caplens and link types.

Properties: decode never raises, counts add up, the vectorised path equals
the per-packet path, bytes past caplen are never read, and decoded offsets
stay inside what the headers allow.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.batch import (
    DECODED_COLUMNS,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    PacketBatch,
)
from flowplane.decode import Reason, decode, decode_scalar

import frames as F

LINKTYPES = st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW,
                             LINKTYPE_IPV4, LINKTYPE_IPV6]) | st.integers(0, 300)

SEEDS = [
    F.eth_ipv4_tcp(), F.eth_ipv6_tcp(), F.arp(), F.eth_ipv4_udp(payload=b"d" * 12),
    F.eth_vlan([5, 6], F.ETH_IPV4, F.ipv4(F.ICMP, F.icmp())),
    F.eth(F.ETH_MPLS, F.mpls_stack([1, 2, 3]) + F.ipv6(F.UDP, F.udp())),
    F.eth(F.ETH_IPV6, F.ipv6(F.HOP_BY_HOP, F.v6_ext(F.FRAGMENT) + F.v6_frag(F.TCP, more=True) + F.tcp())),
    F.eth(F.ETH_IPV4, F.ipv4(F.GRE, F.gre(key=3, payload=F.ipv4()), options=b"\x01" * 4)),
    F.eth(F.ETH_PPPOE, F.pppoe_session(0x57, F.ipv6(F.SCTP, F.sctp()))),
    F.sll(F.ETH_IPV4, F.ipv4(F.UDP, F.udp())), F.ipv4(F.TCP, F.tcp()), F.ipv6(F.ICMPV6, F.icmp(1)),
]


@st.composite
def mutated(draw) -> bytes:
    """A real frame with a few bytes overwritten and maybe cut or extended."""
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] = draw(st.integers(0, 255))
    frame = bytes(frame[:draw(st.integers(0, len(frame)))])
    return frame + draw(st.binary(max_size=8))


# caplens just around header ends (Ethernet/VLAN/MPLS + IPv4/IPv6 + L4 fixed parts)
_ENDS = sorted({l2 + l3 + l4 + d for l2 in (0, 14, 16, 18, 22) for l3 in (0, 20, 40, 48)
                for l4 in (0, 4, 8, 12, 20) for d in (-1, 0, 1)})


def _caplen(size: int):
    return st.integers(0, size) | st.sampled_from(_ENDS).map(lambda n: max(0, min(n, size)))


FRAMES = st.lists(st.binary(max_size=96) | mutated(), min_size=0, max_size=40)


def _batch(frames: list[bytes], caplens: list[int], wirelens: list[int], linktype: int) -> PacketBatch:
    """Frames stored whole in the buffer, but only *caplens* bytes of each captured."""
    lens = [len(f) for f in frames]
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if frames else np.zeros(0, np.int64)
    data = np.frombuffer(b"".join(frames), dtype=np.uint8)
    return PacketBatch(data, offs, np.array(caplens, dtype=np.int32), np.array(wirelens, dtype=np.int32),
                       np.zeros(len(frames), dtype=np.int64), linktype=linktype)


def _columns(b: PacketBatch) -> dict[str, np.ndarray]:
    return {name: getattr(b, name) for name in DECODED_COLUMNS}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=FRAMES, linktype=LINKTYPES, data=st.data())
def test_decode_fuzz(frames, linktype, data):
    caplens = [data.draw(_caplen(len(f))) for f in frames]
    wirelens = [c + data.draw(st.sampled_from([0, 0, 4, 1500])) for c in caplens]
    fast = _batch(frames, caplens, wirelens, linktype)
    counts = decode(fast)
    assert fast.decoded and counts.sum() == len(frames) and len(counts) == len(Reason)
    for name, dtype in DECODED_COLUMNS.items():
        assert getattr(fast, name).dtype == np.dtype(dtype) and len(getattr(fast, name)) == len(frames)

    # the per-packet path agrees, and it only ever sees the captured bytes
    cut = PacketBatch.from_frames([f[:c] for f, c in zip(frames, caplens)], wirelen=wirelens, linktype=linktype)
    np.testing.assert_array_equal(decode_scalar(cut), counts)
    for name, column in _columns(fast).items():
        np.testing.assert_array_equal(column, getattr(cut, name), err_msg=name)

    ok = fast.status == 0
    caps = np.array(caplens, dtype=np.int64)
    assert (fast.l3_off[ok] >= 0).all() and (fast.l3_off[ok] + 20 <= caps[ok]).all()
    l4_failed = np.isin(fast.status, [Reason.TRUNCATED_L4, Reason.BAD_TCP_HEADER_LENGTH])
    assert np.isin(fast.af[ok | l4_failed], [4, 6]).all() and not fast.af[~ok & ~l4_failed].any()
    has_l4 = ok & (fast.l4_off >= 0)
    assert (fast.l4_off[has_l4] >= fast.l3_off[has_l4] + fast.ip_hlen[has_l4]).all()
    assert (fast.l4_off[has_l4] <= caps[has_l4]).all()  # == for an empty payload of an unparsed protocol
    assert ((fast.frag == 2) <= (fast.l4_off == -1)).all()
    with_payload = fast.payload_off >= 0
    assert (fast.payload_off[with_payload] > fast.l4_off[with_payload]).all()
    v4 = ok & (fast.af == 4)
    assert (fast.src_hi[v4] == 0).all() and ((fast.src_lo[v4] >> np.uint64(32)) == 0xFFFF).all()


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(mutated(), min_size=1, max_size=30))
def test_each_frame_alone_equals_the_frame_in_a_batch(frames):
    together = PacketBatch.from_frames(frames)
    decode(together)
    for i, frame in enumerate(frames):
        alone = PacketBatch.from_frames([frame])
        decode_scalar(alone)
        for name in DECODED_COLUMNS:
            assert getattr(alone, name)[0] == getattr(together, name)[i], (name, frame.hex())

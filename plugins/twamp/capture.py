"""Small capture helpers for TWAMP: read pcap/pcapng frames, pull out TCP/UDP payloads,
reassemble TCP streams, and build Ethernet/IPv4/TCP/UDP frames to write pcaps for tshark.

Pure ``struct``; used by the known-answer tests and the dissector check, and handy for
offline analysis of a capture of a TWAMP exchange.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from flowplane.api import inet_checksum

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113


def read_frames(path: str) -> Iterator[tuple[int, int, bytes]]:
    """``(timestamp ns, linktype, frame)`` for every packet of a pcap or pcapng file."""
    with open(path, "rb") as fh:
        data = fh.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        yield from _pcap(data)
    elif magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data)
    else:
        raise ValueError(f"{path}: not a pcap or pcapng file")


def _pcap(data: bytes):
    le = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    e = "<" if le else ">"
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0xFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(e + "IIII", data, off)
        off += 16
        yield sec * 1_000_000_000 + (frac if nano else frac * 1000), linktype, data[off:off + incl]
        off += incl


def _pcapng(data: bytes):
    off = 0
    e = "<"
    ifaces: list[tuple[int, int]] = []  # (linktype, units per second)
    while off + 12 <= len(data):
        bt = struct.unpack_from(e + "I", data, off)[0]
        if bt == 0x0A0D0D0A:
            bom = data[off + 8:off + 12]
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        bl = struct.unpack_from(e + "I", data, off + 4)[0]
        if bl < 12 or off + bl > len(data):
            raise ValueError(f"pcapng: bad block length {bl} at {off}")
        body = data[off + 8:off + bl - 4]
        if bt == 1:  # Interface Description Block
            lt = struct.unpack_from(e + "H", body, 0)[0]
            res = 1_000_000
            o = 8
            while o + 4 <= len(body):
                code, ln = struct.unpack_from(e + "HH", body, o)
                if code == 0:
                    break
                if code == 9 and ln >= 1:
                    v = body[o + 4]
                    res = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
                o += 4 + ((ln + 3) & ~3)
            ifaces.append((lt, res))
        elif bt == 6:  # Enhanced Packet Block
            iid, hi, lo, cap, _orig = struct.unpack_from(e + "IIIII", body, 0)
            lt, res = ifaces[iid]
            units = hi << 32 | lo
            yield units * 1_000_000_000 // res, lt, body[20:20 + cap]
        elif bt == 3:  # Simple Packet Block
            lt, _ = ifaces[0]
            yield 0, lt, body[4:]
        off += bl


@dataclass
class Segment:
    ts_ns: int
    proto: int  # 6 or 17
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    ttl: int = 0
    seq: int = 0
    flags: int = 0


def _addr(b: bytes) -> str:
    import ipaddress

    return str(ipaddress.ip_address(b))


def parse_frame(ts_ns: int, linktype: int, frame: bytes) -> Segment | None:
    """The TCP or UDP segment in an Ethernet / SLL / raw IP frame (None for anything else)."""
    if linktype == LINKTYPE_ETHERNET:
        et = struct.unpack_from(">H", frame, 12)[0]
        off = 14
        while et in (0x8100, 0x88A8):
            et = struct.unpack_from(">H", frame, off + 2)[0]
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        et, off = struct.unpack_from(">H", frame, 14)[0], 16
    elif linktype == LINKTYPE_RAW:
        et, off = (0x0800 if frame[0] >> 4 == 4 else 0x86DD), 0
    else:
        return None
    if et == 0x0800:
        ihl = (frame[off] & 15) * 4
        total = struct.unpack_from(">H", frame, off + 2)[0]
        ttl, proto = frame[off + 8], frame[off + 9]
        src, dst = _addr(frame[off + 12:off + 16]), _addr(frame[off + 16:off + 20])
        l4, end = off + ihl, off + total
    elif et == 0x86DD:
        plen = struct.unpack_from(">H", frame, off + 4)[0]
        proto, ttl = frame[off + 6], frame[off + 7]
        src, dst = _addr(frame[off + 8:off + 24]), _addr(frame[off + 24:off + 40])
        l4, end = off + 40, off + 40 + plen
    else:
        return None
    if proto == 6:
        sport, dport, seq, _ack, hl_flags = struct.unpack_from(">HHIIH", frame, l4)
        hl = (hl_flags >> 12) * 4
        return Segment(ts_ns, 6, src, sport, dst, dport, frame[l4 + hl:end], ttl, seq, hl_flags & 0x3F)
    if proto == 17:
        sport, dport, ulen = struct.unpack_from(">HHH", frame, l4)
        return Segment(ts_ns, 17, src, sport, dst, dport, frame[l4 + 8:l4 + ulen], ttl)
    return None


def segments(path: str) -> list[Segment]:
    out = []
    for ts, lt, fr in read_frames(path):
        s = parse_frame(ts, lt, fr)
        if s is not None:
            out.append(s)
    return out


@dataclass
class TcpStream:
    """One TCP connection in capture order: ``client`` opened it (SYN)."""

    index: int
    client: tuple[str, int]
    server: tuple[str, int]
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    # (direction 'c'|'s', payload) per segment with data, in capture order
    chunks: list[tuple[str, bytes]] = field(default_factory=list)


def tcp_streams(segs: list[Segment]) -> list[TcpStream]:
    """Reassemble TCP connections (numbered like tshark's ``tcp.stream``), data in sequence order."""
    streams: list[TcpStream] = []
    by_key: dict[tuple, TcpStream] = {}
    nexts: dict[tuple, int] = {}
    for s in segs:
        if s.proto != 6:
            continue
        key = (s.src, s.sport, s.dst, s.dport)
        rkey = (s.dst, s.dport, s.src, s.sport)
        st = by_key.get(key) or by_key.get(rkey)
        if st is None or (s.flags & 0x12 == 0x02 and key in nexts and st.to_server):
            st = TcpStream(len(streams), (s.src, s.sport), (s.dst, s.dport))
            streams.append(st)
            by_key[key] = by_key[rkey] = st
            nexts.pop(key, None)
            nexts.pop(rkey, None)
        if s.flags & 0x02:  # SYN consumes one sequence number
            nexts[key] = (s.seq + 1) & 0xFFFFFFFF
            continue
        if not s.payload:
            continue
        exp = nexts.get(key, s.seq)
        if s.seq != exp:  # retransmission or a gap: keep only the new bytes
            skip = (exp - s.seq) & 0xFFFFFFFF
            if skip >= len(s.payload) or skip > 1 << 30:
                continue
            payload = s.payload[skip:]
        else:
            payload = s.payload
        nexts[key] = (exp + len(payload)) & 0xFFFFFFFF
        to_server = (s.src, s.sport) == st.client
        (st.to_server if to_server else st.to_client).extend(payload)
        st.chunks.append(("c" if to_server else "s", bytes(payload)))
    return streams


# -- frame builders (for pcaps written by tests and tools) ----------------------


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, ident: int = 0) -> bytes:
    import ipaddress

    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0, s, d)
    hdr = hdr[:10] + struct.pack(">H", inet_checksum(hdr)) + hdr[12:]
    return hdr, s + d


def eth_ipv4_udp(src: str, sport: int, dst: str, dport: int, payload: bytes, ttl: int = 64) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr, pseudo = _ipv4(src, dst, 17, udp, ttl)
    c = inet_checksum(pseudo + struct.pack(">BBH", 0, 17, len(udp)) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack(">H", c) + udp[8:]
    return b"\0" * 12 + b"\x08\x00" + hdr + udp


def eth_ipv4_tcp(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int,
                 payload: bytes = b"", ttl: int = 64) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    tcp += payload
    hdr, pseudo = _ipv4(src, dst, 6, tcp, ttl)
    c = inet_checksum(pseudo + struct.pack(">BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack(">H", c) + tcp[18:]
    return b"\0" * 12 + b"\x08\x00" + hdr + tcp


class TcpConversation:
    """Frames of one TCP connection (handshake, data both ways with ACKs, FIN) for a pcap."""

    SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01

    def __init__(self, client: tuple[str, int], server: tuple[str, int]) -> None:
        self.c, self.s = client, server
        self.cseq, self.sseq = 1000, 5000
        self.frames: list[bytes] = []
        (ca, cp), (sa, sp) = client, server
        self.frames.append(eth_ipv4_tcp(ca, cp, sa, sp, self.cseq, 0, self.SYN))
        self.frames.append(eth_ipv4_tcp(sa, sp, ca, cp, self.sseq, self.cseq + 1, self.SYN | self.ACK))
        self.cseq += 1
        self.sseq += 1
        self.frames.append(eth_ipv4_tcp(ca, cp, sa, sp, self.cseq, self.sseq, self.ACK))

    def send(self, from_client: bool, data: bytes) -> None:
        (ca, cp), (sa, sp) = self.c, self.s
        if from_client:
            self.frames.append(eth_ipv4_tcp(ca, cp, sa, sp, self.cseq, self.sseq, self.PSH | self.ACK, data))
            self.cseq += len(data)
        else:
            self.frames.append(eth_ipv4_tcp(sa, sp, ca, cp, self.sseq, self.cseq, self.PSH | self.ACK, data))
            self.sseq += len(data)

    def close(self) -> None:
        (ca, cp), (sa, sp) = self.c, self.s
        self.frames.append(eth_ipv4_tcp(ca, cp, sa, sp, self.cseq, self.sseq, self.FIN | self.ACK))
        self.cseq += 1
        self.frames.append(eth_ipv4_tcp(sa, sp, ca, cp, self.sseq, self.cseq, self.FIN | self.ACK))
        self.sseq += 1
        self.frames.append(eth_ipv4_tcp(ca, cp, sa, sp, self.cseq, self.sseq, self.ACK))

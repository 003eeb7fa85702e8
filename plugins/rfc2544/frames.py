"""Test frames (RFC 2544 appendix C UDP frames; IPv6 per RFC 5180; raw Ethernet for family bridge).

Every frame carries an 18-byte test payload right after the UDP header (after the Ethernet header for
``bridge``), so a 64-byte IPv4 frame (FCS included) is exactly the RFC's smallest::

    signature  4 bytes  SIGNATURE
    tag        2 bytes  the initiator's stream tag (frames of another test carry another tag)
    sequence   4 bytes  big-endian, from 0 in every trial
    tx time    8 bytes  big-endian nanoseconds (CLOCK_REALTIME), written just before the frame is sent

The rest of the frame is zero fill.  Sizes count the 4-byte FCS the NIC adds; buffers here hold
``size - 4`` bytes.  Parsing and stamping work on whole batches (numpy rows of fixed-size slots).
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from flowplane.api import inet_checksum, ones_complement_sum

SIGNATURE = b"\x25\x44\xf1\x0b"
PAYLOAD_LEN = 18
FCS = 4
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
L1_OVERHEAD = 20  # preamble + start delimiter (8) and inter-frame gap (12) on the wire, per frame
_SIG_U32 = int.from_bytes(SIGNATURE, "big")


def stream_tag(name: str) -> int:
    """The 16-bit tag of a test's frames, from its name."""
    return zlib.crc32(name.encode()) & 0xFFFF


def line_kbps(fps: float, size: int) -> float:
    """Line rate (kbit/s) of *fps* frames of *size* bytes, preamble and inter-frame gap included."""
    return fps * (size + L1_OVERHEAD) * 8 / 1000.0


def fps_for_kbps(kbps: float, size: int) -> float:
    return kbps * 1000.0 / ((size + L1_OVERHEAD) * 8)


@dataclass(frozen=True)
class Layout:
    """Where things sit in a frame of one family."""

    family: str
    ethertype: int
    ip: int  # IP header offset (0 for bridge)
    udp: int  # UDP header offset (0 for bridge)
    payload: int

    @property
    def min_frame(self) -> int:
        return self.payload + PAYLOAD_LEN  # without FCS


LAYOUTS = {
    "inet": Layout("inet", ETH_IPV4, 14, 34, 42),
    "inet6": Layout("inet6", ETH_IPV6, 14, 54, 62),
}


def layout(family: str, etype: int = 0x88B5) -> Layout:
    return LAYOUTS.get(family) or Layout("bridge", etype, 0, 0, 14)


def mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


@dataclass
class Stream:
    """What the initiator sends: family, addresses, ports, tag."""

    family: str
    src_mac: bytes
    dst_mac: bytes
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int = 49184
    dst_port: int = 7
    tag: int = 0
    etype: int = 0x88B5
    interface: str = ""

    @property
    def layout(self) -> Layout:
        return layout(self.family, self.etype)


class FrameBatch:
    """``count`` copies of one test frame in numpy rows, stamped per batch with sequence and time."""

    def __init__(self, stream: Stream, size: int, count: int) -> None:
        lay = stream.layout
        n = size - FCS
        if n < lay.min_frame:
            raise ValueError(f"packet-size {size} is too small for family {stream.family} (at least "
                             f"{lay.min_frame + FCS} bytes)")
        self.size, self.length, self.layout = size, n, lay
        frame = bytearray(n)
        frame[0:6], frame[6:12] = stream.dst_mac, stream.src_mac
        frame[12:14] = lay.ethertype.to_bytes(2, "big")
        pseudo = b""
        if stream.family == "inet":
            src, dst = ipaddress.IPv4Address(stream.src_ip).packed, ipaddress.IPv4Address(stream.dst_ip).packed
            ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, n - 14, 0, 0, 64, 17, 0, src, dst))
            ip[10:12] = inet_checksum(bytes(ip)).to_bytes(2, "big")
            frame[14:34] = ip
            pseudo = src + dst + struct.pack("!BBH", 0, 17, n - 34)
        elif stream.family == "inet6":
            src, dst = ipaddress.IPv6Address(stream.src_ip).packed, ipaddress.IPv6Address(stream.dst_ip).packed
            frame[14:54] = struct.pack("!IHBB16s16s", 6 << 28, n - 54, 17, 64, src, dst)
            pseudo = src + dst + struct.pack("!IxxxB", n - 54, 17)
        p = lay.payload
        if lay.udp:
            frame[lay.udp:lay.udp + 8] = struct.pack("!HHHH", stream.src_port, stream.dst_port, n - lay.udp, 0)
        frame[p:p + 4] = SIGNATURE
        frame[p + 4:p + 6] = stream.tag.to_bytes(2, "big")
        # UDP checksum over everything but sequence and time; those are added per frame (one's complement sums)
        self._base = ones_complement_sum(pseudo + bytes(frame[lay.udp:])) if lay.udp else 0
        self.rows = np.tile(np.frombuffer(bytes(frame), np.uint8), (count, 1))
        self._seq = self.rows[:, p + 6:p + 10].view(">u4")[:, 0]
        self._ts = self.rows[:, p + 10:p + 18].view(">u8")[:, 0]
        self._ck = self.rows[:, lay.udp + 6:lay.udp + 8].view(">u2")[:, 0] if lay.udp else None
        self.count = count

    def stamp(self, first_seq: int, n: int, now_ns: int) -> np.ndarray:
        """Write sequence numbers ``first_seq..`` and *now_ns* into the first *n* rows; returns those rows."""
        seq = np.arange(first_seq, first_seq + n, dtype=np.uint64) & 0xFFFFFFFF
        self._seq[:n] = seq
        self._ts[:n] = now_ns
        if self._ck is not None:
            t = np.uint64(now_ns)
            words = (int(t >> np.uint64(48)) + int((t >> np.uint64(32)) & np.uint64(0xFFFF))
                     + int((t >> np.uint64(16)) & np.uint64(0xFFFF)) + int(t & np.uint64(0xFFFF)))
            s = self._base + words + (seq >> np.uint64(16)) + (seq & np.uint64(0xFFFF))
            s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
            s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
            ck = (~s) & np.uint64(0xFFFF)
            ck[ck == 0] = 0xFFFF
            self._ck[:n] = ck
        return self.rows[:n]


def u16(rows: np.ndarray, off: int) -> np.ndarray:
    return (rows[:, off].astype(np.uint32) << 8) | rows[:, off + 1]


def u32(rows: np.ndarray, off: int) -> np.ndarray:
    return np.ascontiguousarray(rows[:, off:off + 4]).view(">u4")[:, 0].astype(np.uint32)


def u64(rows: np.ndarray, off: int) -> np.ndarray:
    return np.ascontiguousarray(rows[:, off:off + 8]).view(">u8")[:, 0].astype(np.uint64)


def udp_mask(rows: np.ndarray, lens: np.ndarray, lay: Layout) -> np.ndarray:
    """Rows that are UDP over *lay*'s IP family with a plain header (IPv4 without options)."""
    ok = (lens >= lay.udp + 8) & (u16(rows, 12) == lay.ethertype)
    if lay.family == "inet":
        ok &= (rows[:, 14] == 0x45) & (rows[:, 23] == 17)
    else:
        ok &= ((rows[:, 14] >> 4) == 6) & (rows[:, 20] == 17)
    return ok


def signature_ok(rows: np.ndarray, lens: np.ndarray, lay: Layout) -> np.ndarray:
    return (lens >= lay.min_frame) & (u32(rows, lay.payload) == _SIG_U32)

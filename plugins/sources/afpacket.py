"""Live capture with an AF_PACKET TPACKET_V3 ring (``source: af-packet``).

Config, under ``interfaces NAME`` (NAME is the Linux interface unless
``device`` says otherwise)::

    interfaces:
      eth1:
        source: af-packet
        device: eth1          # optional, defaults to NAME
        promiscuous: false    # PACKET_ADD_MEMBERSHIP / PACKET_MR_PROMISC (needs CAP_NET_ADMIN too)
        direction: both       # input | output | both  (sll_pkttype PACKET_OUTGOING = output)
        ring-size: 16MiB      # whole ring, bytes (int, or "64KiB"/"16MiB"/"1GiB")
        block-size: 1MiB      # one ring block; a power of two, >= page size
        block-timeout: 10     # ms before the kernel hands over a partly filled block
        fanout: 42            # optional PACKET_FANOUT hash group id (one process per core)
        batch-size: 512       # optional, overrides the global batch size

How it reads: ``trio.lowlevel.wait_readable(sock)``, then every block whose
``block_status`` has ``TP_STATUS_USER`` is copied with one slice into a
private numpy buffer and handed straight back to the kernel; the block's
packets are then indexed (one ``unpack_from`` per packet, no syscall) and
sent as one :class:`~flowplane.batch.PacketBatch` (split at ``batch-size``).
Batches go out with ``send_nowait``; a full channel is counted as
``drops{ingest, backpressure}``.  Kernel counters (``PACKET_STATISTICS``,
``tpacket_stats_v3``) are read every second and at exit into
``kernel_packets`` / ``kernel_drops`` / ``kernel_freeze_q``.

Timestamps are ``tp_sec * 1e9 + tp_nsec`` (wall clock, ns); ``caplen`` is
``tp_snaplen``, ``wirelen`` ``tp_len``.  VLAN tags the kernel stripped
(``TP_STATUS_VLAN_VALID``) are put back into the frame.
"""

from __future__ import annotations

import fcntl
import mmap
import re
import socket
import struct

import numpy as np
import trio

from flowplane.api import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    ConfigIssue,
    Counters,
    PacketBatch,
    SourceContext,
    SourceType,
    hookimpl,
)

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/if_arp.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
#: link-layer types whose frames start at the IP header
ARPHRD_RAW_IP = {65534, 768, 769, 776, 778, 823}  # NONE, TUNNEL, TUNNEL6, SIT, IPGRE, IP6GRE

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
#   block_status, num_pkts, offset_to_first_pkt, blk_len, seq_num(u64), ts_first, ts_last
BLOCK_HDR = struct.Struct("=IIIIII")
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac(u16), net(u16),
#   rxhash, vlan_tci, vlan_tpid(u16), pad(u16), then sockaddr_ll at TPACKET_ALIGN(48):
#   family(u16), protocol(u16), ifindex(i32), hatype(u16), pkttype(u8), halen(u8)
PKT_NEXT = struct.Struct("=I").unpack_from
SLL_PKTTYPE_AT = 48 + 10

KEYS = ("device", "promiscuous", "direction", "ring-size", "block-size", "block-timeout", "fanout", "batch-size")
DIRECTIONS = ("input", "output", "both")
STATS_INTERVAL = 1.0

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(v) -> int | None:
    """``4096``, ``"64KiB"``, ``"16m"``, ``"1GiB"`` -> bytes; None if not a size."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        m = _SIZE_RE.match(v)
        if m:
            return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return None


def arphrd(sock: socket.socket, dev: str) -> int:
    """ARPHRD_* hardware type of *dev* (SIOCGIFHWADDR; follows the socket's netns)."""
    ifreq = struct.pack("16sH22x", dev.encode()[:15], 0)
    res = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, ifreq)
    return struct.unpack_from("H", res, 16)[0]


class AfPacketSource:
    """One TPACKET_V3 ring on one interface."""

    finite = False

    def __init__(self, ctx: SourceContext) -> None:
        cfg = ctx.config or {}
        issues = validate(ctx.name, cfg, ("interfaces", ctx.name))
        if issues:
            raise ValueError("; ".join(f"{'.'.join(map(str, i.path))}: {i.message}" for i in issues))
        self.name = ctx.name
        self.device = str(cfg.get("device") or ctx.name)
        self.promiscuous = bool(cfg.get("promiscuous", False))
        self.direction = cfg.get("direction", "both")
        self.block_size = parse_size(cfg.get("block-size", 1 << 20))
        ring = parse_size(cfg.get("ring-size", 16 << 20))
        self.block_nr = max(ring // self.block_size, 2)
        self.block_timeout = int(cfg.get("block-timeout", 10))
        self.fanout = cfg.get("fanout")
        self.batch_size = int(cfg.get("batch-size") or ctx.batch_size)
        self.iface_id = ctx.iface_id
        self.log = ctx.log
        self.counters = Counters(ctx.name)
        self.capabilities = frozenset({"CAP_NET_RAW"} | ({"CAP_NET_ADMIN"} if self.promiscuous else set()))
        try:
            self.ifindex = socket.if_nametoindex(self.device)
        except OSError:
            raise ValueError(f"af-packet interface {self.device!r}: no such network interface "
                             f"(interfaces {self.name})") from None
        self.sock: socket.socket | None = None
        self.ring: mmap.mmap | None = None
        self.linktype = LINKTYPE_ETHERNET

    # -- setup --------------------------------------------------------------
    def open(self) -> None:
        """Create the socket and the ring, bind; raises OSError/ValueError with the device named."""
        dev = self.device
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # no traffic until bind
        except PermissionError as e:
            raise PermissionError(f"af-packet {dev!r}: cannot open a packet socket (needs CAP_NET_RAW): {e}") from None
        try:
            hatype = arphrd(sock, dev)
            if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
                self.linktype = LINKTYPE_ETHERNET  # loopback is Ethernet-framed (zero MACs)
            elif hatype in ARPHRD_RAW_IP:
                self.linktype = LINKTYPE_RAW
            else:
                raise ValueError(f"af-packet {dev!r}: unsupported link type ARPHRD {hatype}")
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = 2048
            req = struct.pack("7I", self.block_size, self.block_nr, frame_size,
                              self.block_size // frame_size * self.block_nr, self.block_timeout, 0, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            except OSError as e:
                raise OSError(e.errno, f"af-packet {dev!r}: PACKET_RX_RING ({self.block_nr} x "
                              f"{self.block_size} bytes) refused: {e.strerror}") from None
            self.ring = mmap.mmap(sock.fileno(), self.block_size * self.block_nr,
                                  mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            if self.direction == "input":
                try:  # kernel >= 4.20: do not even queue our outgoing packets
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                except OSError:
                    pass
            sock.bind((dev, ETH_P_ALL))
            if self.promiscuous:
                mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if self.fanout is not None:
                val = (int(self.fanout) & 0xFFFF) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16)
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", val))
            sock.setblocking(False)
        except BaseException:
            if self.ring is not None:
                self.ring.close()
                self.ring = None
            sock.close()
            raise
        self.sock = sock
        self.read_stats()  # reset the kernel counters: count from now on
        self.counters.values["kernel_packets"] = 0
        self.counters.values["kernel_drops"] = 0
        self.counters.values["kernel_freeze_q"] = 0

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.read_stats()
            except OSError:
                pass
        if self.ring is not None:
            try:
                self.ring.close()
            except BufferError:  # pragma: no cover - a view still exported
                pass
            self.ring = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def read_stats(self) -> None:
        """Add ``PACKET_STATISTICS`` (reset on read by the kernel) to the counters."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, freeze = struct.unpack("3I", raw)
        c = self.counters.values
        c["kernel_packets"] += packets  # includes the drops (tpacket_stats_v3)
        c["kernel_drops"] += drops
        c["kernel_freeze_q"] += freeze

    # -- reading ------------------------------------------------------------
    def read_blocks(self) -> list[PacketBatch]:
        """Take every block the kernel handed over; one batch (or more, at batch-size) per block."""
        ring, bsz = self.ring, self.block_size
        out: list[PacketBatch] = []
        while True:
            base = self.cur * bsz
            _ver, _priv, status, num, first, blk_len = BLOCK_HDR.unpack_from(ring, base)
            if not status & TP_STATUS_USER:
                return out
            buf = np.frombuffer(ring[base : base + blk_len], dtype=np.uint8)  # one copy per block
            struct.pack_into("=I", ring, base + 8, TP_STATUS_KERNEL)  # give the block back at once
            self.cur = (self.cur + 1) % self.block_nr
            self.counters.values["blocks"] += 1
            if num:
                out.extend(self._batches(buf, num, first))

    def _batches(self, buf: np.ndarray, num: int, first: int) -> list[PacketBatch]:
        mv = buf.data
        offs = []
        app = offs.append
        off = first
        for _ in range(num):  # the only per-packet Python: follow tp_next_offset
            app(off)
            nxt = PKT_NEXT(mv, off)[0]
            if not nxt:
                break
            off += nxt
        o = np.array(offs, dtype=np.int64)
        u32 = np.ndarray(shape=(len(buf) - 3,), dtype="=u4", buffer=mv, strides=(1,))
        u16 = np.ndarray(shape=(len(buf) - 1,), dtype="=u2", buffer=mv, strides=(1,))
        sec = u32[o + 4].astype(np.int64)
        ts = sec * 1_000_000_000 + u32[o + 8]
        caplen = u32[o + 12].astype(np.int32)
        wirelen = u32[o + 16].astype(np.int32)
        status = u32[o + 20]
        fstart = o + u16[o + 24]
        outgoing = buf[o + SLL_PKTTYPE_AT] == PACKET_OUTGOING
        direction = outgoing.astype(np.int8)  # DIR_OUTPUT == 1
        if self.direction != "both":
            keep = outgoing if self.direction == "output" else ~outgoing
            if not keep.all():
                self.counters.values["filtered_direction"] += int((~keep).sum())
                o, ts, caplen, wirelen, status, fstart, direction = (
                    a[keep] for a in (o, ts, caplen, wirelen, status, fstart, direction))
        data = buf
        if len(o) and (status & TP_STATUS_VLAN_VALID).any():
            data, fstart, caplen = self._reinsert_vlan(buf, o, fstart, caplen, status, u32, u16)
            wirelen = wirelen + ((status & TP_STATUS_VLAN_VALID) != 0) * 4
        n = len(o)
        out = []
        bs = self.batch_size
        for i in range(0, n, bs):
            s = slice(i, i + bs)
            out.append(PacketBatch(data, fstart[s], caplen[s], wirelen[s], ts[s], linktype=self.linktype,
                                   iface=self.iface_id, direction=direction[s], source=self.name))
        return out

    def _reinsert_vlan(self, buf, o, fstart, caplen, status, u32, u16):
        """Put the 802.1Q tag the kernel moved into tp_vlan_tci back after the MACs (rare path)."""
        parts, new_off, new_cap = [], [], []
        pos = 0
        for i in range(len(o)):
            f, c = int(fstart[i]), int(caplen[i])
            frame = bytes(buf[f : f + c])
            if status[i] & TP_STATUS_VLAN_VALID and self.linktype == LINKTYPE_ETHERNET and c >= 12:
                tci = int(u32[o[i] + 32]) & 0xFFFF
                tpid = int(u16[o[i] + 36]) if status[i] & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                frame = frame[:12] + struct.pack("!HH", tpid or ETH_P_8021Q, tci) + frame[12:]
            parts.append(frame)
            new_off.append(pos)
            new_cap.append(len(frame))
            pos += len(frame)
        data = np.frombuffer(b"".join(parts), dtype=np.uint8)
        return data, np.array(new_off, dtype=np.int64), np.array(new_cap, dtype=np.int32)

    async def _stats_loop(self) -> None:
        while True:
            await trio.sleep(STATS_INTERVAL)
            self.read_stats()

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.open()
        self.cur = 0
        c = self.counters.values
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stats_loop)
                if self.log is not None:
                    self.log.info("afpacket_started", device=self.device, ifindex=self.ifindex,
                                  blocks=self.block_nr, block_size=self.block_size,
                                  promiscuous=self.promiscuous, fanout=self.fanout)
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(self.sock)
                    batches = self.read_blocks()
                    if not batches:
                        continue
                    for b in batches:
                        n = len(b)
                        if not n:
                            continue
                        try:
                            send.send_nowait(b)
                        except trio.WouldBlock:
                            self.counters.drop("ingest", "backpressure", n)
                            continue
                        c["packets"] += n
                        c["bytes"] += int(b.wirelen.sum(dtype=np.int64))
                        c["batches"] += 1
                    await trio.lowlevel.checkpoint()
        finally:
            self.close()


def validate(name: str, section: dict, path: tuple, base_dir: str | None = None) -> list[ConfigIssue]:
    """Issues in ``interfaces NAME`` for ``source: af-packet`` (the device is checked at start)."""
    issues: list[ConfigIssue] = []
    s = section or {}
    if "device" in s and (not isinstance(s["device"], str) or not 0 < len(s["device"]) < 16):
        issues.append(ConfigIssue(path + ("device",), "expected an interface name (1-15 characters), got "
                                                      f"{s['device']!r}"))
    if "promiscuous" in s and not isinstance(s["promiscuous"], bool):
        issues.append(ConfigIssue(path + ("promiscuous",), f"expected true or false, got {s['promiscuous']!r}"))
    if "direction" in s and s["direction"] not in DIRECTIONS:
        issues.append(ConfigIssue(path + ("direction",),
                                  f"expected one of input, output, both; got {s['direction']!r}"))
    page = mmap.PAGESIZE
    bsz = parse_size(s.get("block-size", 1 << 20))
    if bsz is None or bsz < page or bsz & (bsz - 1) or bsz > (64 << 20):
        issues.append(ConfigIssue(path + ("block-size",), f"expected a power of two between {page} bytes and 64MiB, "
                                  f"got {s.get('block-size')!r}"))
        bsz = None
    if "ring-size" in s:
        rs = parse_size(s["ring-size"])
        if rs is None or rs <= 0 or (bsz and rs < 2 * bsz) or rs > (4 << 30):
            issues.append(ConfigIssue(path + ("ring-size",), "expected a size of at least two blocks and at most 4GiB "
                                      f"(e.g. 16MiB), got {s['ring-size']!r}"))
    if "block-timeout" in s:
        v = s["block-timeout"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1000:
            issues.append(ConfigIssue(path + ("block-timeout",), f"expected milliseconds 1..1000, got {v!r}"))
    if s.get("fanout") is not None:
        v = s["fanout"]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
            issues.append(ConfigIssue(path + ("fanout",), f"expected a fanout group id 0..65535, got {v!r}"))
    if "batch-size" in s:
        v = s["batch-size"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65536:
            issues.append(ConfigIssue(path + ("batch-size",), f"expected an integer 1..65536, got {v!r}"))
    return issues


SOURCE_TYPE = SourceType(
    name="af-packet",
    factory=AfPacketSource,
    validate=validate,
    capabilities=frozenset({"CAP_NET_RAW"}),  # + CAP_NET_ADMIN when promiscuous (see AfPacketSource.capabilities)
    keys=KEYS,
    help="live capture from a Linux interface (AF_PACKET TPACKET_V3 ring); needs CAP_NET_RAW "
    "(+CAP_NET_ADMIN for promiscuous)",
)


@hookimpl
def flowplane_register_sources(register):
    register("af-packet", SOURCE_TYPE)

#!/usr/bin/env python3
"""Deterministic synthetic traffic generator: classic pcap + ground-truth JSON.

Usage::

    python tests/bench/gen_pcap.py -o big.pcap [--packets 1200000] [--conversations 60000]
        [--seed 42] [--malformed-fraction 0.0] [--span 300] [--max-payload N]

Writes ``OUT`` (classic pcap, little-endian, microsecond timestamps, LINKTYPE_ETHERNET,
snaplen 65535, every frame captured whole) and ``OUT.truth.json``.

Traffic model (see tests/bench/README.md and REFERENCE-flow.md section 3a):

* ``--conversations`` conversations with Pareto(alpha=1.1) sizes scaled so that they hold
  exactly ``--packets`` IP packets.
* Protocol bands by *packets*: ~71 % TCP, ~23.5 % UDP, ~5 % ICMP echo, ~0.5 % GRE
  (conversations are shuffled and assigned by where their packets fall in the cumulative
  share, so packet shares are close to the targets and conversation shares are too).
* TCP: SYN / SYN-ACK / ACK, client request, 1448-byte data segments with an ACK every two
  segments (20 % of conversations upload instead of download), FIN/ACK four-way close or a
  single RST.  One-packet conversations are SYN-only scans, two-packet ones SYN + RST/ACK.
  Sequence and acknowledgement numbers are consistent.
* UDP services: DNS (53), QUIC-like (443), RTP-like (even high ports), NTP (123),
  syslog (514, one-way).
* ICMP echo request/reply (ICMPv6 128/129 over IPv6); GRE (proto 47, no optional fields,
  carrying an inner IPv4/UDP packet).
* ~10 % of the non-GRE conversations are IPv6, ~3 % of conversations are 802.1Q tagged, and
  ARP frames (0.1 % of ``--packets``) are added on top of the IP packets.
* Addresses: clients 10.0.0.0/8 and 2001:db8:1::/48, servers 198.18.0.0/15 and
  2001:db8:2::/48.  Conversations start uniformly over ``--span`` seconds (from
  2024-01-01T00:00:00Z), inter-packet gaps are lognormal; all frames are interleaved in
  time order (ties keep conversation order).
* Payload bytes are zero, so every checksum is correct and cheap to compute: IPv4 header
  checksums, TCP, UDP (IPv4 and IPv6), ICMP, ICMPv6 and the inner IPv4/UDP of GRE.

``--malformed-fraction f`` replaces ``round(f * frames)`` IP-packet frames (never ARP) by
malformed frames of six kinds, counted per kind in the truth together with the decoder
reason each one should produce (names of ``flowplane.decode.Reason``):

=========================  ===============================================  ====================
kind                       frame                                            expected reason
=========================  ===============================================  ====================
truncated_ethernet         1..13 random bytes                               HEADER_TOO_SMALL
ipv4_bad_ihl               IPv4 with IHL 0..4 (rest plausible)              BAD_IP_HEADER_LENGTH
ipv4_bad_total_length      IPv4 with total length 0..19                     BAD_TOTAL_LENGTH
truncated_tcp              IPv4 proto 6, total length 21..39, frame ends    TRUNCATED_L4
                           there (TCP header cut)
ipv6_truncated_ext_header  IPv6 with a hop-by-hop/routing/destination       BAD_EXTENSION_HEADER
                           header shorter than 8 bytes or longer than the
                           payload
random_bytes               Ethernet header (type 0x0800) + 20..200 random   BAD_IP_VERSION
                           bytes whose version nibble is neither 4 nor 6
=========================  ===============================================  ====================

Truth keys: ``frames``, ``ip_packets`` (well-formed IP packets = ``--packets`` minus the
replaced ones), ``ipv4_packets``, ``ipv6_packets``, ``ip_bytes`` (sum of IPv4 total length /
40 + IPv6 payload length, outer header for GRE), ``unidirectional_5tuple_keys`` (distinct
(src, dst, proto, sport, dport); ICMP uses sport 0 and dport type*256+code; GRE ports 0;
VLAN is not part of the key), ``packets_by_protocol`` / ``bytes_by_protocol`` (TCP, UDP,
ICMP, ICMPv6, GRE: outer protocol only), ``non_ip_frames`` (ARP), ``vlan_tagged_frames``,
``malformed`` (``total``, ``by_kind``) and ``expected_decode_reasons``.

Determinism: the same arguments give byte-identical output with the same numpy version
(numpy's Generator streams are not guaranteed across numpy releases).
Only the standard library and numpy are used.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

GENERATOR_VERSION = 1
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CHUNK = 1 << 17  # rows per vectorised scatter

# Conversation kinds and UDP services.
TCP, UDP, ICMP, GRE = 0, 1, 2, 3
DNS, QUIC, RTP, NTP, SYSLOG = 0, 1, 2, 3, 4
PROTO_SHARES = (0.71, 0.235, 0.05, 0.005)  # by packets: TCP, UDP, ICMP, GRE
IPV6_SHARE = 0.10
VLAN_SHARE = 0.03
ARP_SHARE = 0.001
MSS = 1448

MALFORMED_KINDS = (
    "truncated_ethernet",
    "ipv4_bad_ihl",
    "ipv4_bad_total_length",
    "truncated_tcp",
    "ipv6_truncated_ext_header",
    "random_bytes",
)
MALFORMED_REASON = {
    "truncated_ethernet": "HEADER_TOO_SMALL",
    "ipv4_bad_ihl": "BAD_IP_HEADER_LENGTH",
    "ipv4_bad_total_length": "BAD_TOTAL_LENGTH",
    "truncated_tcp": "TRUNCATED_L4",
    "ipv6_truncated_ext_header": "BAD_EXTENSION_HEADER",
    "random_bytes": "BAD_IP_VERSION",
}

GW_MAC = bytes.fromhex("02fe00000001")
V6_CLIENT_PREFIX = bytes.fromhex("20010db80001")  # 2001:db8:1::/48
V6_SERVER_PREFIX = bytes.fromhex("20010db80002")  # 2001:db8:2::/48


# --------------------------------------------------------------------------- helpers
def _put(h: np.ndarray, off: int, v, nbytes: int) -> None:
    """Store integer column *v* big-endian into bytes off..off+nbytes of every row."""
    v = np.asarray(v, dtype=np.int64)
    for i in range(nbytes):
        h[:, off + i] = (v >> (8 * (nbytes - 1 - i))) & 0xFF


def _words(h: np.ndarray, a: int, b: int) -> np.ndarray:
    """Sum of the big-endian 16-bit words in bytes a..b (b - a even) of every row."""
    return (h[:, a:b:2].astype(np.int64) << 8).sum(axis=1) + h[:, a + 1 : b : 2].sum(
        axis=1, dtype=np.int64
    )


def _fold(s: np.ndarray) -> np.ndarray:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _group_excl_cumsum(x: np.ndarray, first: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of *x* restarting at every group (contiguous groups)."""
    c = np.cumsum(x, dtype=np.int64) - x
    return c - c[first][owner]


def _ipv4_checksum_bytes(hdr: bytes) -> int:
    s = sum(struct.unpack("!10H", hdr[:20]))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# --------------------------------------------------------------------------- model
class Model:
    """Per-conversation and per-packet arrays (packets in conversation order)."""

    def __init__(self, rng: np.random.Generator, P: int, N: int, span: float, max_payload: int | None):
        self.P, self.N = P, N
        N = min(N, P)
        self.N = N

        # ---- conversation sizes: Pareto(1.1) scaled to P packets
        raw = rng.pareto(1.1, N) + 1.0
        sizes = np.maximum(1, np.floor(raw * (P / raw.sum()))).astype(np.int64)
        diff = P - int(sizes.sum())
        order = np.argsort(-sizes, kind="stable")
        i = 0
        while diff != 0:  # settle the remainder on the largest conversations
            j = order[i % N]
            if diff > 0:
                sizes[j] += diff
                diff = 0
            else:
                take = min(-diff, int(sizes[j]) - 1)
                sizes[j] -= take
                diff += take
            i += 1
        self.sizes = sizes

        # ---- protocol bands by packets
        perm = rng.permutation(N)
        mid = (np.cumsum(sizes[perm]) - sizes[perm] / 2.0) / P
        bands = np.cumsum(PROTO_SHARES)
        kind = np.empty(N, np.int8)
        kind[perm] = np.minimum(np.searchsorted(bands, mid, side="right"), 3)
        self.kind = kind
        self.v6 = (rng.random(N) < IPV6_SHARE) & (kind != GRE)
        self.vlan = np.where(rng.random(N) < VLAN_SHARE, rng.integers(100, 4095, N), 0)

        # ---- addresses, ports, MACs
        n_clients, n_servers = max(1, N // 3), max(1, N // 30)
        cl_pool4 = (10 << 24) | (rng.integers(0, 1 << 16, n_clients) << 8) | rng.integers(1, 255, n_clients)
        sv_pool4 = ((198 << 24) | (18 << 16) | (rng.integers(0, 1 << 9, n_servers) << 8)
                    | rng.integers(1, 255, n_servers))
        cl_pool6 = rng.integers(0, 256, (n_clients, 10), dtype=np.uint8)
        sv_pool6 = rng.integers(0, 256, (n_servers, 10), dtype=np.uint8)
        ci = rng.integers(0, n_clients, N)
        si = rng.integers(0, n_servers, N)
        self.caddr4 = cl_pool4[ci].astype(np.int64)
        self.saddr4 = sv_pool4[si].astype(np.int64)
        self.caddr6 = np.concatenate([np.tile(np.frombuffer(V6_CLIENT_PREFIX, np.uint8), (N, 1)), cl_pool6[ci]], axis=1)
        self.saddr6 = np.concatenate([np.tile(np.frombuffer(V6_SERVER_PREFIX, np.uint8), (N, 1)), sv_pool6[si]], axis=1)
        self.cmac = np.concatenate(
            [np.tile(np.array([0x02, 0x00], np.uint8), (N, 1)), rng.integers(0, 256, (N, 4), dtype=np.uint8)], axis=1
        )

        # UDP service: small conversations look like DNS/NTP/syslog, big ones like QUIC/RTP.
        r = rng.random(N)
        small = np.select([r < 0.5, r < 0.65, r < 0.8, r < 0.9], [DNS, NTP, SYSLOG, QUIC], RTP)
        big = np.select([r < 0.45, r < 0.8, r < 0.9, r < 0.95], [QUIC, RTP, SYSLOG, DNS], NTP)
        self.service = np.where(sizes <= 4, small, big).astype(np.int8)

        eph = rng.integers(32768, 61000, N)
        svc_port = np.array([53, 443, 0, 123, 514])[self.service]
        rtp_c = rng.integers(8192, 16384, N) * 2
        rtp_s = rng.integers(8192, 16384, N) * 2
        cport = np.where(self.service == RTP, rtp_c, np.where(self.service == NTP, np.where(r < 0.6, 123, eph), eph))
        sport = np.where(self.service == RTP, rtp_s, svc_port)
        tcp_port = np.array([443, 80, 22, 8080, 25, 993])[rng.choice(6, N, p=[0.55, 0.2, 0.05, 0.1, 0.05, 0.05])]
        self.cport = np.where(kind == TCP, eph, np.where(kind == UDP, cport, 0)).astype(np.int64)
        self.sport = np.where(kind == TCP, tcp_port, np.where(kind == UDP, sport, 0)).astype(np.int64)
        self.icmp_id = rng.integers(0, 65536, N)
        self.ipid = rng.integers(0, 65536, (N, 2))
        self.flowlabel = rng.integers(0, 1 << 20, (N, 2))
        self.gre_inner = rng.integers(0, 1 << 16, (N, 2))  # host parts of 172.16/16 inner addresses

        # ---- TCP conversation shape
        n = sizes
        close = np.zeros(N, np.int8)  # 0 none, 1 FIN (4 pkts), 2 RST (1 pkt)
        rc = rng.random(N)
        close[(n >= 4) & (n < 7)] = 2
        close[n >= 7] = np.where(rc[n >= 7] < 0.8, 1, 2)
        self.close = close
        close_len = np.array([0, 4, 1])[close]
        self.dend = np.where(n >= 3, n - close_len, n)  # end of the data phase
        self.upload = rng.random(N) < 0.2
        self.close_side = (rng.random(N) < 0.3).astype(np.int64)  # 0 client, 1 server initiates
        self.isn = rng.integers(0, 1 << 32, (N, 2), dtype=np.int64)
        self.req_len = rng.integers(80, 700, N)
        self.tail_len = rng.integers(1, MSS + 1, N)

        # ---- timing
        start = np.sort(rng.random(N)) * span
        start_us = np.round(start * 1e6).astype(np.int64)
        start_us = start_us[rng.permutation(N)]
        med = np.exp(rng.normal(np.log(0.05), 1.5, N))
        med = np.minimum(np.clip(med, 1e-5, 2.0), 30.0 / np.maximum(n, 1))
        med = np.maximum(med, 2e-6)
        self.start_us = start_us
        self.mu = np.log(med)

        self._packets(rng, max_payload)

    def _packets(self, rng: np.random.Generator, max_payload: int | None) -> None:
        P, N = self.P, self.N
        conv = np.repeat(np.arange(N), self.sizes)
        first = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        k = np.arange(P) - first[conv]
        n = self.sizes[conv]
        kind = self.kind[conv]
        r1 = rng.random(P)
        r2 = rng.random(P)

        direction = np.zeros(P, np.int64)
        plen = np.zeros(P, np.int64)
        flags = np.zeros(P, np.int64)

        # -- TCP
        dend = self.dend[conv]
        upload = self.upload[conv].astype(np.int64)
        j = k - 3
        data = (n >= 3) & (k >= 3) & (k < dend)
        is_req = data & (j == 0)
        rr = np.where(j >= 1, (j - 1) % 3, 0)
        is_seg = data & (j >= 1) & (rr < 2)
        is_ack = data & (j >= 1) & (rr == 2)
        last_seg = is_seg & (k == dend - 1)
        cpos = k - dend
        side = self.close_side[conv]
        fin = (self.close[conv] == 1) & (n >= 3) & (k >= dend)
        rst = (self.close[conv] == 2) & (n >= 3) & (k >= dend)
        tdir = np.select(
            [k == 0, k == 1, k == 2, is_req, is_seg, is_ack, fin & ((cpos == 0) | (cpos == 3)), fin, rst],
            [0, 1, 0, 0, 1 ^ upload, upload, side, 1 - side, side],
            0,
        )
        tflags = np.select(
            [k == 0, (k == 1) & (n == 2), k == 1, k == 2, is_req, last_seg, is_seg | is_ack,
             fin & ((cpos == 0) | (cpos == 2)), fin, rst],
            [0x02, 0x14, 0x12, 0x10, 0x18, 0x18, 0x10, 0x11, 0x10, 0x14],
            0x10,
        )
        tplen = np.select([is_req, last_seg, is_seg], [self.req_len[conv], self.tail_len[conv], MSS], 0)
        m = kind == TCP
        direction[m], flags[m], plen[m] = tdir[m], tflags[m], tplen[m]

        # -- UDP
        svc = self.service[conv]
        udir = np.select(
            [(svc == DNS) | (svc == NTP), svc == QUIC, svc == RTP],
            [k % 2, np.where(k == 0, 0, (r1 >= 0.25).astype(np.int64)), (r1 < 0.5).astype(np.int64)],
            0,
        )
        uplen = np.select(
            [svc == DNS, (svc == QUIC) & (k == 0), svc == QUIC, svc == RTP, svc == NTP],
            [
                np.where(udir == 0, 17 + (r2 * 40).astype(np.int64), 40 + (r2 * 400).astype(np.int64)),
                1200,
                np.where(udir == 0, 25 + (r2 * 40).astype(np.int64), 1200 + (r2 * 150).astype(np.int64)),
                172,
                48,
            ],
            60 + (r2 * 340).astype(np.int64),
        )
        m = kind == UDP
        direction[m], plen[m] = udir[m], uplen[m]
        # -- ICMP echo
        m = kind == ICMP
        direction[m], plen[m] = k[m] % 2, 56
        # -- GRE: inner payload
        m = kind == GRE
        direction[m], plen[m] = (r1[m] < 0.5), 20 + (r2[m] * 1380).astype(np.int64)

        if max_payload is not None:
            plen = np.minimum(plen, max_payload)

        # TCP sequence/acknowledgement numbers
        cons = np.where(kind == TCP, plen + ((flags & 0x02) > 0) + ((flags & 0x01) > 0), 0)
        cons_c = np.where(direction == 0, cons, 0)
        cons_s = np.where(direction == 1, cons, 0)
        rel_c = _group_excl_cumsum(cons_c, first, conv)
        rel_s = _group_excl_cumsum(cons_s, first, conv)
        isn = self.isn[conv]
        seq = np.where(direction == 0, isn[:, 0] + rel_c, isn[:, 1] + rel_s) & 0xFFFFFFFF
        ack = np.where(direction == 0, isn[:, 1] + rel_s, isn[:, 0] + rel_c) & 0xFFFFFFFF
        ack = np.where(k == 0, 0, ack)

        # ICMP type and sequence
        v6 = self.v6[conv]
        icmp_type = np.where(v6, np.where(direction == 0, 128, 129), np.where(direction == 0, 8, 0))

        # timestamps (integer microseconds, strictly increasing within a conversation)
        gap = np.exp(self.mu[conv] + rng.normal(0.0, 1.0, P)) * 1e6
        gap = np.maximum(1, np.round(gap)).astype(np.int64)
        gap[first] = 0
        t = np.cumsum(gap)
        t = t - t[first][conv] + self.start_us[conv]

        self.conv, self.k, self.direction, self.plen, self.flags = conv, k, direction, plen, flags
        self.seq, self.ack, self.icmp_type, self.t_us = seq, ack, icmp_type, t
        self.pkind, self.pv6 = kind, v6
        self.pvlan = self.vlan[conv]
        l4h = np.array([20, 8, 8, 4 + 20 + 8])[kind]
        self.iplen = np.where(v6, 40, 20) + l4h + plen
        self.framelen = 14 + np.where(self.pvlan > 0, 4, 0) + self.iplen


# --------------------------------------------------------------------------- headers
def _build_ip_headers(md: Model, idx: np.ndarray, kind: int, v6: bool, vlan: bool) -> np.ndarray:
    """Header bytes (rows) for packets *idx* of one layout class; payload is left out (zeros)."""
    M = len(idx)
    c = md.conv[idx]
    d = md.direction[idx]
    l2 = 18 if vlan else 14
    l3 = 40 if v6 else 20
    l4h = (20, 8, 8, 32)[kind]
    h = np.zeros((M, l2 + l3 + l4h), np.uint8)

    # Ethernet (+ 802.1Q)
    gw = np.frombuffer(GW_MAC, np.uint8)
    cm = md.cmac[c]
    to_srv = (d == 0)[:, None]
    h[:, 0:6] = np.where(to_srv, gw, cm)
    h[:, 6:12] = np.where(to_srv, cm, gw)
    etype = 0x86DD if v6 else 0x0800
    if vlan:
        _put(h, 12, 0x8100, 2)
        _put(h, 14, md.vlan[c], 2)
    _put(h, l2 - 2, etype, 2)

    a = l2  # IP header
    b = a + l3  # L4 header
    iplen = md.iplen[idx]
    proto = (6, 17, 58 if v6 else 1, 47)[kind]
    if v6:
        _put(h, a, (6 << 28) | md.flowlabel[c, d], 4)
        _put(h, a + 4, iplen - 40, 2)
        h[:, a + 6] = proto
        h[:, a + 7] = np.where(d == 0, 64, 57)
        src = np.where(to_srv, md.caddr6[c], md.saddr6[c])
        dst = np.where(to_srv, md.saddr6[c], md.caddr6[c])
        h[:, a + 8 : a + 24] = src
        h[:, a + 24 : a + 40] = dst
        pseudo = _words(h, a + 8, a + 40) + proto + (iplen - 40)
    else:
        h[:, a] = 0x45
        _put(h, a + 2, iplen, 2)
        _put(h, a + 4, (md.ipid[c, d] + md.k[idx]) & 0xFFFF, 2)
        if kind == TCP:
            h[:, a + 6] = 0x40  # DF
        h[:, a + 8] = np.where(d == 0, 64, 57)
        h[:, a + 9] = proto
        src = np.where(d == 0, md.caddr4[c], md.saddr4[c])
        dst = np.where(d == 0, md.saddr4[c], md.caddr4[c])
        _put(h, a + 12, src, 4)
        _put(h, a + 16, dst, 4)
        _put(h, a + 10, _fold(_words(h, a, a + 20)), 2)
        pseudo = _words(h, a + 12, a + 20) + proto + (iplen - 20)

    if kind in (TCP, UDP):
        ports = (md.cport[c], md.sport[c])
        _put(h, b, np.where(d == 0, ports[0], ports[1]), 2)
        _put(h, b + 2, np.where(d == 0, ports[1], ports[0]), 2)
    if kind == TCP:
        _put(h, b + 4, md.seq[idx], 4)
        _put(h, b + 8, md.ack[idx], 4)
        h[:, b + 12] = 0x50
        h[:, b + 13] = md.flags[idx]
        _put(h, b + 14, np.where(d == 0, 64240, 65160), 2)
        _put(h, b + 16, _fold(pseudo + _words(h, b, b + 20)), 2)
    elif kind == UDP:
        _put(h, b + 4, iplen - l3, 2)
        ck = _fold(pseudo + _words(h, b, b + 8))
        _put(h, b + 6, np.where(ck == 0, 0xFFFF, ck), 2)
    elif kind == ICMP:
        h[:, b] = md.icmp_type[idx]
        _put(h, b + 4, md.icmp_id[c], 2)
        _put(h, b + 6, md.k[idx] // 2 + 1, 2)
        s = _words(h, b, b + 8) + (pseudo if v6 else 0)
        _put(h, b + 2, _fold(s), 2)
    else:  # GRE: 4-byte header, inner IPv4 + UDP
        _put(h, b + 2, 0x0800, 2)
        i = b + 4
        ilen = iplen - 20 - 4
        h[:, i] = 0x45
        _put(h, i + 2, ilen, 2)
        _put(h, i + 4, (md.ipid[c, 1 - d] + md.k[idx]) & 0xFFFF, 2)
        h[:, i + 8] = 63
        h[:, i + 9] = 17
        g = md.gre_inner[c]
        isrc = (172 << 24) | (16 << 16) | np.where(d == 0, g[:, 0], g[:, 1])
        idst = (172 << 24) | (16 << 16) | np.where(d == 0, g[:, 1], g[:, 0])
        _put(h, i + 12, isrc, 4)
        _put(h, i + 16, idst, 4)
        _put(h, i + 10, _fold(_words(h, i, i + 20)), 2)
        u = i + 20
        _put(h, u, 49152, 2)
        _put(h, u + 2, 49153, 2)
        _put(h, u + 4, ilen - 20, 2)
        ck = _fold(_words(h, i + 12, i + 20) + 17 + (ilen - 20) + _words(h, u, u + 8))
        _put(h, u + 6, np.where(ck == 0, 0xFFFF, ck), 2)
    return h


def _arp_frames(rng: np.random.Generator, A: int) -> np.ndarray:
    h = np.zeros((A, 42), np.uint8)
    reply = rng.random(A) < 0.5
    smac = np.concatenate([np.tile(np.array([2, 0], np.uint8), (A, 1)), rng.integers(0, 256, (A, 4), dtype=np.uint8)],
                          1)
    gw = np.frombuffer(GW_MAC, np.uint8)
    h[:, 0:6] = np.where(reply[:, None], gw, 0xFF)
    h[:, 6:12] = smac
    _put(h, 12, 0x0806, 2)
    _put(h, 14, 1, 2)  # hardware Ethernet
    _put(h, 16, 0x0800, 2)
    h[:, 18], h[:, 19] = 6, 4
    _put(h, 20, np.where(reply, 2, 1), 2)
    h[:, 22:28] = smac
    _put(h, 28, (10 << 24) | rng.integers(1, 1 << 24, A), 4)
    h[:, 32:38] = np.where(reply[:, None], gw, 0)
    _put(h, 38, (10 << 24) | rng.integers(1, 1 << 24, A), 4)
    return h


def _malformed_frame(kind: str, rng: np.random.Generator) -> bytes:
    rb = lambda n: rng.integers(0, 256, n, dtype=np.uint8).tobytes()  # noqa: E731
    eth4 = GW_MAC + b"\x02\x00" + rb(4) + b"\x08\x00"
    src = (10 << 24) | int(rng.integers(1, 1 << 24))
    dst = (198 << 24) | (18 << 16) | int(rng.integers(1, 1 << 17))
    if kind == "truncated_ethernet":
        return rb(int(rng.integers(1, 14)))
    if kind == "ipv4_bad_ihl":
        p = int(rng.integers(0, 64))
        ip = bytearray(struct.pack("!BBHHHBBHII", 0x40 | int(rng.integers(0, 5)), 0, 28 + p, 1, 0, 64, 17, 0, src, dst))
        struct.pack_into("!H", ip, 10, _ipv4_checksum_bytes(bytes(ip)))
        return eth4 + bytes(ip) + struct.pack("!HHHH", 40000, 53, 8 + p, 0) + bytes(p)
    if kind == "ipv4_bad_total_length":
        p = int(rng.integers(0, 64))
        ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, int(rng.integers(0, 20)), 1, 0, 64, 17, 0, src, dst))
        struct.pack_into("!H", ip, 10, _ipv4_checksum_bytes(bytes(ip)))
        return eth4 + bytes(ip) + struct.pack("!HHHH", 40000, 53, 8 + p, 0) + bytes(p)
    if kind == "truncated_tcp":
        t = int(rng.integers(1, 20))
        ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + t, 1, 0x4000, 64, 6, 0, src, dst))
        struct.pack_into("!H", ip, 10, _ipv4_checksum_bytes(bytes(ip)))
        tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 0x50, 0x02, 64240, 0, 0)
        return eth4 + bytes(ip) + tcp[:t]
    if kind == "ipv6_truncated_ext_header":
        nh = int(rng.choice([0, 43, 60]))
        a6 = V6_CLIENT_PREFIX + rb(10) + V6_SERVER_PREFIX + rb(10)
        if rng.random() < 0.5:  # fewer than the 8 bytes every extension header has
            ext = struct.pack("!BB", 6, 0) + bytes(int(rng.integers(0, 5)))
        else:  # header length field claims more than the payload holds
            hl = int(rng.integers(2, 10))
            ext = struct.pack("!BB", 6, hl) + bytes(14)
        ip6 = struct.pack("!IHBB", 6 << 28, len(ext), nh, 64) + a6
        return GW_MAC + b"\x02\x00" + rb(4) + b"\x86\xdd" + ip6 + ext
    if kind == "random_bytes":
        body = bytearray(rb(int(rng.integers(20, 201))))
        nib = int(rng.choice([0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15]))
        body[0] = (nib << 4) | (body[0] & 0x0F)
        return eth4 + bytes(body)
    raise ValueError(kind)


# --------------------------------------------------------------------------- main work
def generate(
    out: str,
    packets: int = 1_200_000,
    conversations: int = 60_000,
    seed: int = 42,
    malformed_fraction: float = 0.0,
    span: float = 300.0,
    max_payload: int | None = None,
) -> dict:
    """Write the pcap and its truth file; return the truth dict."""
    if packets < 1 or conversations < 1:
        raise ValueError("--packets and --conversations must be positive")
    if not 0.0 <= malformed_fraction < 1.0:
        raise ValueError("--malformed-fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    md = Model(rng, packets, conversations, span, max_payload)
    P = packets

    # ---- ARP frames and the merged, time-ordered frame list
    A = int(round(ARP_SHARE * P))
    arp_t = np.sort(rng.integers(0, int(span * 1e6), A))
    arp_hdr = _arp_frames(rng, A)
    all_t = np.concatenate([md.t_us, arp_t])
    order = np.argsort(all_t, kind="stable")  # frame -> source index (< P: IP packet, else ARP)
    F = P + A
    ts = all_t[order]
    is_ip = order < P

    # ---- malformed replacements (IP frames only)
    n_mal = int(round(malformed_fraction * F))
    ip_frames = np.flatnonzero(is_ip)
    mal_frames = np.sort(rng.choice(len(ip_frames), n_mal, replace=False)) if n_mal else np.zeros(0, np.int64)
    mal_frames = ip_frames[mal_frames]
    mal_kinds = rng.integers(0, len(MALFORMED_KINDS), n_mal)
    mal_bytes = [_malformed_frame(MALFORMED_KINDS[kk], rng) for kk in mal_kinds]
    valid_pkt = np.ones(P, bool)
    valid_pkt[order[mal_frames]] = False

    # ---- frame lengths and offsets
    flen = np.empty(F, np.int64)
    flen[is_ip] = md.framelen[order[is_ip]]
    flen[~is_ip] = 42
    flen[mal_frames] = [len(b) for b in mal_bytes]
    rec_off = 24 + np.concatenate([[0], np.cumsum(16 + flen)[:-1]])
    total = int(rec_off[-1] + 16 + flen[-1])
    buf = np.zeros(total, np.uint8)
    buf[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), np.uint8)

    def scatter(offs: np.ndarray, rows: np.ndarray) -> None:
        buf[offs[:, None] + np.arange(rows.shape[1])] = rows  # noqa: F821  (`del buf` comes after the last call)

    # pcap record headers
    for s in range(0, F, CHUNK):
        sl = slice(s, s + CHUNK)
        rec = np.empty((len(flen[sl]), 4), "<u4")
        rec[:, 0] = EPOCH + ts[sl] // 1_000_000
        rec[:, 1] = ts[sl] % 1_000_000
        rec[:, 2] = flen[sl]
        rec[:, 3] = flen[sl]
        scatter(rec_off[sl], rec.view(np.uint8).reshape(-1, 16))
    data_off = rec_off + 16

    # IP packets, one layout class at a time
    frame_of_pkt = np.empty(P, np.int64)
    frame_of_pkt[order[is_ip]] = np.flatnonzero(is_ip)
    for kind in (TCP, UDP, ICMP, GRE):
        for v6 in (False, True):
            for vlan in (False, True):
                sel = (md.pkind == kind) & (md.pv6 == v6) & ((md.pvlan > 0) == vlan) & valid_pkt
                idx = np.flatnonzero(sel)
                for s in range(0, len(idx), CHUNK):
                    ii = idx[s : s + CHUNK]
                    scatter(data_off[frame_of_pkt[ii]], _build_ip_headers(md, ii, kind, v6, vlan))
    # ARP
    arp_frames = np.flatnonzero(~is_ip)
    if A:
        scatter(data_off[arp_frames], arp_hdr[order[arp_frames] - P])
    # malformed
    for fi, b in zip(mal_frames.tolist(), mal_bytes):
        o = int(data_off[fi])
        buf[o : o + len(b)] = np.frombuffer(b, np.uint8)

    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(memoryview(buf))
    os.replace(tmp, out)
    del buf

    truth = _truth(md, valid_pkt, F, A, n_mal, mal_kinds, ts, total)
    truth["generator"] = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "packets": packets,
        "conversations": conversations,
        "span": span,
        "malformed_fraction": malformed_fraction,
        "max_payload": max_payload,
        "numpy": np.__version__,
    }
    with open(out + ".truth.json", "w") as f:
        json.dump(truth, f, indent=2, sort_keys=True)
        f.write("\n")
    return truth


def _truth(md: Model, valid: np.ndarray, F: int, A: int, n_mal: int, mal_kinds: np.ndarray, ts: np.ndarray,
           total: int) -> dict:
    kind, v6 = md.pkind[valid], md.pv6[valid]
    iplen = md.iplen[valid]
    by_pkts, by_bytes = {}, {}
    for name, m in (
        ("TCP", kind == TCP),
        ("UDP", kind == UDP),
        ("ICMP", (kind == ICMP) & ~v6),
        ("ICMPv6", (kind == ICMP) & v6),
        ("GRE", kind == GRE),
    ):
        by_pkts[name] = int(m.sum())
        by_bytes[name] = int(iplen[m].sum())

    # distinct unidirectional 5-tuples: one candidate per (conversation, direction) seen
    cd = np.unique(md.conv[valid] * 2 + md.direction[valid])
    c, d = cd // 2, cd % 2
    K = len(cd)
    key = np.zeros((K, 37), np.uint8)
    a4c = np.zeros((K, 16), np.uint8)
    a4s = np.zeros((K, 16), np.uint8)
    _put(a4c, 12, md.caddr4[c], 4)
    _put(a4s, 12, md.saddr4[c], 4)
    cv6 = md.v6[c][:, None]
    ca = np.where(cv6, md.caddr6[c], a4c)
    sa = np.where(cv6, md.saddr6[c], a4s)
    to_srv = (d == 0)[:, None]
    key[:, 0:16] = np.where(to_srv, ca, sa)
    key[:, 16:32] = np.where(to_srv, sa, ca)
    ck = md.kind[c]
    key[:, 32] = np.select([ck == TCP, ck == UDP, (ck == ICMP) & md.v6[c], ck == ICMP], [6, 17, 58, 1], 47)
    sp = np.where(d == 0, md.cport[c], md.sport[c])
    dp = np.where(d == 0, md.sport[c], md.cport[c])
    icmp_t = np.where(md.v6[c], np.where(d == 0, 128, 129), np.where(d == 0, 8, 0))
    dp = np.where(ck == ICMP, icmp_t << 8, dp)
    _put(key, 33, sp, 2)
    _put(key, 35, dp, 2)
    n_keys = len(np.unique(key, axis=0)) if K else 0

    by_kind = {k: 0 for k in MALFORMED_KINDS}
    for kk in mal_kinds.tolist():
        by_kind[MALFORMED_KINDS[kk]] += 1
    reasons = {"OK": int(valid.sum()), "NOT_IP": A}
    for k_, v in by_kind.items():
        reasons[MALFORMED_REASON[k_]] = reasons.get(MALFORMED_REASON[k_], 0) + v

    sizes = np.sort(md.sizes)[::-1]
    return {
        "frames": F,
        "pcap_bytes": total,
        "ip_packets": int(valid.sum()),
        "ipv4_packets": int((~v6).sum()),
        "ipv6_packets": int(v6.sum()),
        "ip_bytes": int(iplen.sum()),
        "unidirectional_5tuple_keys": int(n_keys),
        "packets_by_protocol": by_pkts,
        "bytes_by_protocol": by_bytes,
        "non_ip_frames": A,
        "arp_frames": A,
        "vlan_tagged_frames": int((md.pvlan[valid] > 0).sum()),
        "malformed": {"total": n_mal, "by_kind": by_kind},
        "expected_decode_reasons": reasons,
        "conversations": {
            "total": md.N,
            "by_kind": {nm: int((md.kind == i).sum()) for i, nm in enumerate(("TCP", "UDP", "ICMP", "GRE"))},
            "ipv6": int(md.v6.sum()),
            "vlan_tagged": int((md.vlan > 0).sum()),
            "largest": [int(x) for x in sizes[:3]],
            "at_most_3_packets": int((md.sizes <= 3).sum()),
        },
        "first_ts_us": int(EPOCH * 1_000_000 + ts[0]),
        "last_ts_us": int(EPOCH * 1_000_000 + ts[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="pcap to write (truth goes to OUTPUT.truth.json)")
    ap.add_argument("--packets", type=int, default=1_200_000, help="IP packets (default 1200000)")
    ap.add_argument("--conversations", type=int, default=60_000, help="conversations (default 60000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--malformed-fraction", type=float, default=0.0, help="fraction of frames replaced by malformed "
                                                                          "ones")
    ap.add_argument("--span", type=float, default=300.0, help="seconds over which conversations start")
    ap.add_argument("--max-payload", type=int, default=None, help="cap every payload at N bytes (small samples)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    truth = generate(a.output, a.packets, a.conversations, a.seed, a.malformed_fraction, a.span, a.max_payload)
    dt = time.perf_counter() - t0
    print(
        f"{a.output}: {truth['frames']} frames, {truth['pcap_bytes']} bytes, "
        f"{truth['ip_packets']} IP packets, {truth['unidirectional_5tuple_keys']} 5-tuple keys, "
        f"{truth['malformed']['total']} malformed, {dt:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

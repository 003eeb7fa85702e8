"""IPFIX (RFC 7011) and NetFlow v9 (RFC 3954) encoding of NAT events with RFC 8158 templates.

:class:`NatEncoder` has the encoder interface of the core :class:`flowplane.api.Exporter`
(``encode``, ``templates``, ``options_data``, ``reset_templates``), so the core exporter sends it
through any registered transport and refreshes its templates.  One template per record layout:

* ``nat44`` (id 256): NAT44 session create/delete
* ``nat64`` (id 257): NAT64 session create/delete (IPv6 subscriber, IPv4 translated addresses)
* ``nat66`` (id 258): an IPv6-to-IPv6 translation (nft masquerade on ``ip6``), RFC 8158 session fields
  with postNATSourceIPv6Address / postNATDestinationIPv6Address; natEvent as for NAT44

Templates go out with the first message, every ``refresh_packets`` messages and every
``refresh_seconds`` seconds; the IPFIX sequence number counts data records, the v9 one messages.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from flowplane.api import EncoderOptions, EncoderType

from .events import NUMBERINGS, NatEvent

# (IE number, length); names as IANA's registry
OBS_MS, NAT_EVENT, VRF, PROTO = (323, 8), (230, 1), (234, 4), (4, 1)
SRC4, DST4, SRC6, DST6 = (8, 4), (12, 4), (27, 16), (28, 16)
SPORT, DPORT, POST_SPORT, POST_DPORT = (7, 2), (11, 2), (227, 2), (228, 2)
POST_SRC4, POST_DST4, POST_SRC6, POST_DST6 = (225, 4), (226, 4), (281, 16), (282, 16)
REALM = (229, 1)

LAYOUTS: dict[str, tuple[tuple[int, int], ...]] = {
    "nat44": (OBS_MS, NAT_EVENT, VRF, SRC4, POST_SRC4, PROTO, SPORT, POST_SPORT, DST4, POST_DST4, DPORT, POST_DPORT,
              REALM),
    "nat64": (OBS_MS, NAT_EVENT, VRF, SRC6, POST_SRC4, PROTO, SPORT, POST_SPORT, DST6, POST_DST4, DPORT, POST_DPORT,
              REALM),
    "nat66": (OBS_MS, NAT_EVENT, VRF, SRC6, POST_SRC6, PROTO, SPORT, POST_SPORT, DST6, POST_DST6, DPORT, POST_DPORT,
              REALM),
}
TEMPLATE_IDS = {"nat44": 256, "nat64": 257, "nat66": 258}
_REC = {name: struct.Struct(">QBI" + ("4s4s" if name == "nat44" else "16s4s" if name == "nat64" else "16s16s")
                            + "BHH" + ("4s4s" if name == "nat44" else "16s4s" if name == "nat64" else "16s16s")
                            + "HHB")
        for name in LAYOUTS}

IPFIX_HEADER = struct.Struct(">HHIII")  # version, length, export time, sequence, observation domain
V9_HEADER = struct.Struct(">HHIIII")  # version, count, sysUptime ms, unix secs, sequence, source id
SET_HEADER = struct.Struct(">HH")


@dataclass
class NatEncoderOptions:
    version: int = 10  # 9 or 10 (IPFIX)
    observation_domain_id: int = 0
    numbering: str = "rfc8158"
    refresh_packets: int = 4800
    refresh_seconds: int = 60
    mtu: int = 1500
    ipv6_transport: bool = False
    stream: bool = False


def _addr(a: str, fam: int) -> bytes:
    return socket.inet_pton(fam, a)


def pack_record(ev: NatEvent, event_value: int) -> tuple[str, bytes]:
    """(layout, the data record of *ev*)."""
    lay = ev.layout
    f_src = socket.AF_INET if lay == "nat44" else socket.AF_INET6
    f_post = socket.AF_INET6 if lay == "nat66" else socket.AF_INET
    rec = _REC[lay].pack(ev.time_ms, event_value, ev.zone, _addr(ev.src, f_src), _addr(ev.post_src, f_post),
                         ev.proto, ev.sport, ev.post_sport, _addr(ev.dst, f_src), _addr(ev.post_dst, f_post),
                         ev.dport, ev.post_dport, ev.realm)
    return lay, rec


class NatEncoder:
    """NAT events -> IPFIX or v9 messages (one exporting process: its own sequence numbers)."""

    def __init__(self, opts: NatEncoderOptions) -> None:
        if opts.version not in (9, 10):
            raise ValueError(f"NAT events are exported as version 9 or IPFIX, not {opts.version}")
        self.opts = opts
        self.numbering = NUMBERINGS[opts.numbering]
        self.ipfix = opts.version == 10
        overhead = 48 if opts.ipv6_transport else 28
        self.limit = 65535 if opts.stream else max(256, opts.mtu - overhead)
        self.sequence = 0  # IPFIX: data records sent; v9: messages sent
        self.messages = 0
        self.boot_ns = time.time_ns()
        self._tmpl_due = True
        self._msgs_since_tmpl = 0
        self._tmpl_at_ns = 0

    # -- the exporter's encoder interface ------------------------------------------------
    def encode(self, events: Iterable[NatEvent], now_ns: int) -> list[bytes]:
        """Messages carrying *events* (templates first when due); an empty *events* sends only due templates."""
        out: list[bytes] = []
        if self._templates_due(now_ns):
            out.append(self._template_message(now_ns))
        records: list[tuple[str, bytes]] = []
        for ev in events:
            value = self.numbering.get(ev.kind)
            if value is None:
                continue
            records.append(pack_record(ev, value))
        out += self._data_messages(records, now_ns)
        return out

    def templates(self, now_ns: int) -> list[bytes]:
        return [self._template_message(now_ns)]

    def options_data(self, now_ns: int) -> list[bytes]:
        return []

    def reset_templates(self) -> None:
        self._tmpl_due = True

    # -- internals ---------------------------------------------------------------------------
    def _templates_due(self, now_ns: int) -> bool:
        o = self.opts
        if self._tmpl_due:
            return True
        if o.refresh_packets and self._msgs_since_tmpl >= o.refresh_packets:
            return True
        return bool(o.refresh_seconds) and now_ns - self._tmpl_at_ns >= o.refresh_seconds * 1_000_000_000

    def template_set(self) -> bytes:
        body = b""
        for name, fields in LAYOUTS.items():
            body += struct.pack(">HH", TEMPLATE_IDS[name], len(fields))
            body += b"".join(struct.pack(">HH", ie, ln) for ie, ln in fields)
        set_id = 2 if self.ipfix else 0
        return SET_HEADER.pack(set_id, SET_HEADER.size + len(body)) + body

    def _template_message(self, now_ns: int) -> bytes:
        self._tmpl_due = False
        self._msgs_since_tmpl = 0
        self._tmpl_at_ns = now_ns
        return self._message([self.template_set()], len(LAYOUTS), 0, now_ns)

    def _message(self, sets: list[bytes], count: int, data_records: int, now_ns: int) -> bytes:
        body = b"".join(sets)
        o = self.opts
        if self.ipfix:
            hdr = IPFIX_HEADER.pack(10, IPFIX_HEADER.size + len(body), now_ns // 1_000_000_000, self.sequence,
                                    o.observation_domain_id)
            self.sequence = (self.sequence + data_records) & 0xFFFFFFFF
        else:
            uptime = ((now_ns - self.boot_ns) // 1_000_000) & 0xFFFFFFFF
            hdr = V9_HEADER.pack(9, count, max(0, uptime), now_ns // 1_000_000_000, self.sequence,
                                 o.observation_domain_id)
            self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        self.messages += 1
        self._msgs_since_tmpl += 1
        return hdr + body

    def _data_messages(self, records: list[tuple[str, bytes]], now_ns: int) -> list[bytes]:
        if not records:
            return []
        head = IPFIX_HEADER.size if self.ipfix else V9_HEADER.size
        out: list[bytes] = []
        sets: list[bytes] = []
        size, count = head, 0
        cur: str | None = None
        cur_recs: list[bytes] = []

        def close_set() -> None:
            nonlocal cur_recs, size
            if cur_recs:
                body = b"".join(cur_recs)
                pad = b"" if self.ipfix else b"\0" * (-(SET_HEADER.size + len(body)) % 4)
                sets.append(SET_HEADER.pack(TEMPLATE_IDS[cur], SET_HEADER.size + len(body) + len(pad)) + body + pad)
                size += len(pad)
                cur_recs = []

        for lay, rec in records:
            need = len(rec) + (SET_HEADER.size + 3 if lay != cur or not cur_recs else 0)
            if size + need > self.limit and count:
                close_set()
                out.append(self._message(sets, count, count, now_ns))
                sets, size, count = [], head, 0
            if lay != cur or not cur_recs:
                close_set()
                cur = lay
                size += SET_HEADER.size
            cur_recs.append(rec)
            size += len(rec)
            count += 1
        close_set()
        if count:
            out.append(self._message(sets, count, count, now_ns))
        return out


def encoder_type(version: int) -> EncoderType:
    """The NAT encoder as an :class:`flowplane.api.EncoderType` (used by this plugin; not registered, so
    ``version 9`` / ``version-ipfix`` flow servers keep the flow encoders)."""

    def factory(opts: EncoderOptions | NatEncoderOptions) -> NatEncoder:
        if isinstance(opts, NatEncoderOptions):
            return NatEncoder(opts)
        return NatEncoder(NatEncoderOptions(version=opts.version, observation_domain_id=opts.observation_domain_id,
                                            refresh_packets=opts.template_refresh_packets,
                                            refresh_seconds=opts.template_refresh_seconds, mtu=opts.mtu,
                                            ipv6_transport=opts.ipv6_transport, stream=opts.stream))

    name = "nat-ipfix" if version == 10 else "nat-v9"
    return EncoderType(name, (version,), factory, help="NAT events with RFC 8158 templates", streams=version == 10)


"""What the decoders produce: :class:`CollectedFlows`, FLOW_DTYPE rows plus what a collector adds."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

import numpy as np

from flowplane.api import FLOW_DTYPE

MAPPED = np.uint64(0xFFFF_0000_0000)


@dataclass(slots=True)
class CollectedFlows:
    """Flow records decoded from one template (or one v5 stream) of one exporter.

    :param data: ``np.ndarray`` of :data:`~flowplane.flows.FLOW_DTYPE`; times are
        absolute wall-clock nanoseconds; ``packets``/``bytes`` as exported unless *scaled*.
    :param sampling_interval: uint32 per record, the 1-in-N that applies (1 = unsampled).
    :param exporter: the exporter's address (the datagram's source address).
    :param domain: observation domain id (IPFIX), source id (v9), engine type<<8|id (v5).
    :param version: 5, 9 or 10.
    :param template_id: the data template (0 for v5).
    :param scaled: True when ``packets``/``bytes`` were multiplied by ``sampling_interval``
        (``scale-by-sampling-rate``); the rows then say ``"scaled": true``.
    :param extra: fields not mapped to FLOW_DTYPE columns, by name (``natEvent``,
        ``ie999``, ``e2636.137`` for enterprise elements): a numpy integer array or a
        list of ``bytes`` per record; see :func:`render_extra`.
    """

    data: np.ndarray
    sampling_interval: np.ndarray
    exporter: str
    domain: int
    version: int
    template_id: int = 0
    extra: dict = field(default_factory=dict)
    extra_kinds: dict = field(default_factory=dict)  # name -> kind letter (see fields.py)
    scaled: bool = False  # packets/bytes multiplied by sampling_interval (scale-by-sampling-rate)

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def empty(cls) -> CollectedFlows:
        return cls(np.zeros(0, FLOW_DTYPE), np.zeros(0, np.uint32), "", 0, 0)

    def tail(self, n: int) -> CollectedFlows:
        if n >= len(self.data):
            return self
        s = slice(len(self.data) - n, None)
        return CollectedFlows(self.data[s], self.sampling_interval[s], self.exporter, self.domain, self.version,
                              self.template_id, {k: v[s] for k, v in self.extra.items()}, self.extra_kinds,
                              self.scaled)

    def rows(self) -> list[dict]:
        """One plain dict per flow (the JSON-lines object)."""
        d = self.data
        out = []
        src = addresses(d["src_hi"], d["src_lo"], d["af"])
        dst = addresses(d["dst_hi"], d["dst_lo"], d["af"])
        nh = addresses(d["nexthop_hi"], d["nexthop_lo"], mapped_family(d["nexthop_hi"], d["nexthop_lo"]))
        first = iso_times(d["first_ns"])
        last = iso_times(d["last_ns"])
        cols = {k: d[k].tolist() for k in ("sport", "dport", "proto", "packets", "bytes", "tos", "tcp_flags",
                                            "in_if", "out_if", "src_as", "dst_as", "src_mask", "dst_mask", "vlan",
                                            "direction", "icmp_type", "icmp_code", "mpls1", "mpls2", "mpls3",
                                            "end_reason", "src_mac", "dst_mac")}
        si = self.sampling_interval.tolist()
        extras = {k: render_extra(v, self.extra_kinds.get(k, "b")) for k, v in self.extra.items()}
        for i in range(len(d)):
            row = {"exporter": self.exporter, "domain": self.domain, "version": self.version,
                   "template": self.template_id, "src": src[i], "dst": dst[i], "sport": cols["sport"][i],
                   "dport": cols["dport"][i], "proto": cols["proto"][i], "packets": cols["packets"][i],
                   "bytes": cols["bytes"][i], "first": first[i], "last": last[i], "sampling_interval": si[i],
                   "tos": cols["tos"][i], "tcp_flags": cols["tcp_flags"][i], "in_if": cols["in_if"][i],
                   "out_if": cols["out_if"][i], "nexthop": nh[i], "src_as": cols["src_as"][i],
                   "dst_as": cols["dst_as"][i], "src_mask": cols["src_mask"][i], "dst_mask": cols["dst_mask"][i]}
            if self.scaled:
                row["scaled"] = True
            for k in ("vlan", "direction", "end_reason", "mpls1", "mpls2", "mpls3"):
                if cols[k][i]:
                    row[k] = cols[k][i]
            for k in ("src_mac", "dst_mac"):
                if cols[k][i]:
                    row[k] = mac(cols[k][i])
            if cols["proto"][i] in (1, 58):
                row["icmp_type"], row["icmp_code"] = cols["icmp_type"][i], cols["icmp_code"][i]
            for k, vals in extras.items():
                row[k] = vals[i]
            out.append(row)
        return out


def mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def mapped_family(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """4 where an address is IPv4-mapped (how IPv4 is held), else 6 (0 when unset)."""
    return np.where((hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF)), 4, np.where((hi | lo) != 0, 6, 0))


def addresses(hi: np.ndarray, lo: np.ndarray, af: np.ndarray) -> list[str | None]:
    out: list[str | None] = []
    for h, l_, a in zip(hi.tolist(), lo.tolist(), af.tolist()):
        if a == 4:
            out.append(str(ipaddress.IPv4Address(l_ & 0xFFFF_FFFF)))
        elif a == 6 or h or l_:
            out.append(str(ipaddress.IPv6Address((h << 64) | l_)))
        else:
            out.append(None)
    return out


def iso_times(ns: np.ndarray) -> list[str]:
    out = []
    for t in ns.tolist():
        if t == 0:  # not known (no time in the record, or uptime-relative with no init time)
            out.append(None)
            continue
        try:
            out.append(dt.datetime.fromtimestamp(t / 1e9, dt.UTC).isoformat(timespec="milliseconds")
                       .replace("+00:00", "Z"))
        except (OverflowError, OSError, ValueError):
            out.append(None)
    return out


def render_extra(values, kind: str) -> list:
    """Plain JSON values for an extra column: ints, address strings, text, or hex."""
    if isinstance(values, np.ndarray):
        ints = values.tolist()
        if kind == "4":
            return [str(ipaddress.IPv4Address(v & 0xFFFF_FFFF)) for v in ints]
        return ints
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif kind == "6" and len(v) == 16:
            out.append(str(ipaddress.IPv6Address(bytes(v))))
        elif kind == "4" and len(v) == 4:
            out.append(str(ipaddress.IPv4Address(bytes(v))))
        elif kind == "m" and len(v) == 6:
            out.append(":".join(f"{b:02x}" for b in v))
        elif kind == "s":
            out.append(bytes(v).rstrip(b"\0").decode("utf-8", "replace"))
        else:
            out.append(bytes(v).hex())
    return out

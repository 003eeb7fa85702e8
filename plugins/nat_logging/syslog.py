"""NAT events as RFC 5424 syslog messages (the alternative to flow-monitoring formats).

One message per event, in the style of the Junos session logs::

    <134>1 2026-12-07T21:40:14.123Z nat-router flowplane 4711 NAT44_SESSION_CREATE [nat@32473 event="4"
    protocol="17" source-address="192.0.2.2" source-port="40000" ...] session created
    192.0.2.2/40000->198.51.100.2/9000 udp translated 198.51.100.1/40000->198.51.100.2/9000 source-nat zone 0

:class:`SyslogEncoder` has the core exporter's encoder interface, so a syslog host is an ordinary
:class:`flowplane.api.Exporter` over the ``udp`` transport (one message per datagram) or a
byte-stream transport such as ``tcp`` (octet-counted framing, RFC 6587 section 3.4.1).
The SD-ID uses the documentation enterprise number 32473 (RFC 5612).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

from flowplane.api import TemplatelessEncoder

from .events import NUMBERINGS, NatEvent, proto_name

FACILITIES = {name: i for i, name in enumerate(
    ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
     "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
     "local6", "local7"))}
SEVERITY_INFO = 6
SD_ID = "nat@32473"
TRANSLATION_WORDS = {"source": "source-nat", "destination": "destination-nat",
                     "source+destination": "twice-nat", "none": "no-nat"}


def _sd_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]/{port}" if ":" in addr else f"{addr}/{port}"


def format_message(ev: NatEvent, *, facility: int = FACILITIES["local1"], hostname: str = "-",
                   app: str = "flowplane", procid: str = "-", prefix: str = "", event_value: int = 0) -> str:
    """The RFC 5424 message of one NAT event (no framing)."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ev.time_ms // 1000)) + f".{ev.time_ms % 1000:03d}Z"
    msgid = ev.kind.upper().replace("-", "_")
    sd = {"event": str(event_value), "protocol": str(ev.proto), "source-address": ev.src,
          "source-port": str(ev.sport), "destination-address": ev.dst, "destination-port": str(ev.dport),
          "nat-source-address": ev.post_src, "nat-source-port": str(ev.post_sport),
          "nat-destination-address": ev.post_dst, "nat-destination-port": str(ev.post_dport),
          "translation": TRANSLATION_WORDS.get(ev.translation, ev.translation), "zone": str(ev.zone)}
    if not ev.create:
        sd["packets"], sd["bytes"] = str(ev.packets), str(ev.bytes)
    if ev.resync:
        sd["resync"] = "1"
    sdtext = "[" + SD_ID + "".join(f' {k}="{_sd_escape(v)}"' for k, v in sd.items()) + "]"
    verb = "created" if ev.create else "closed"
    text = (f"{prefix + ' ' if prefix else ''}session {verb} {_ep(ev.src, ev.sport)}->{_ep(ev.dst, ev.dport)} "
            f"{proto_name(ev.proto)} translated {_ep(ev.post_src, ev.post_sport)}->{_ep(ev.post_dst, ev.post_dport)} "
            f"{sd['translation']} zone {ev.zone}")
    pri = facility * 8 + SEVERITY_INFO
    return f"<{pri}>1 {ts} {hostname} {app} {procid} {msgid} {sdtext} {text}"


class SyslogEncoder(TemplatelessEncoder):
    """NAT events -> syslog messages, one payload each (octet-counted on a byte stream)."""

    def __init__(self, *, facility: str = "local1", prefix: str = "", numbering: str = "rfc8158",
                 stream: bool = False, hostname: str | None = None) -> None:
        self.facility = FACILITIES[facility]
        self.prefix = prefix
        self.numbering = NUMBERINGS[numbering]
        self.stream = stream
        self.hostname = (hostname or socket.gethostname() or "-").replace(" ", "_")[:255]
        self.procid = str(os.getpid())
        self.messages = 0

    def encode(self, events: Iterable[NatEvent], now_ns: int) -> list[bytes]:
        out = []
        for ev in events:
            line = format_message(ev, facility=self.facility, hostname=self.hostname, procid=self.procid,
                                  prefix=self.prefix, event_value=self.numbering.get(ev.kind, 0)).encode()
            out.append(b"%d %s" % (len(line), line) if self.stream else line)
        self.messages += len(out)
        return out

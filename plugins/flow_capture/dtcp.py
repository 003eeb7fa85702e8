"""DTCP wire format (draft-cavuto-dtcp-03, as Junos DFC and FlowTap speak it).

A message is HTTP-like text: a start line, ``Name: value`` header lines, each
ended by CRLF, and a blank line that ends the message::

    ADD DTCP/0.7
    Csource-ID: cs1
    Cdest-ID: cd1
    Source-Address: 192.0.2.2
    Dest-Port: 80
    Protocol: 6
    Seq: 1
    Authentication-Info: 6b1d0f...            (hex HMAC-SHA1)

Header names are case-insensitive (Junos answers in upper case).  The
``Authentication-Info`` header is the last one; its value is the lowercase hex
HMAC-SHA1, under the control source's shared key, of every byte of the message
before the ``Authentication-Info`` line (so the ``Seq`` line is covered).
Requests carry a 64-bit ``Seq``; :class:`SequenceWindow` implements the liberal
±256 window around the highest sequence number seen.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

VERSION = "DTCP/0.7"
METHODS = ("ADD", "DELETE", "LIST", "REFRESH", "NOOP", "NOTIFY")
MAX_MESSAGE = 16384  # bytes, terminator included
WINDOW = 256
SEQ_MAX = 2**64 - 1
END = b"\r\n\r\n"
AUTH = "authentication-info"

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           409: "Bad Sequence", 413: "Request Too Large", 503: "Criteria Limit Reached", 505: "Version Not Supported"}


class DtcpError(Exception):
    """A message that is not DTCP, or is malformed.  ``kind`` is the counter it goes to."""

    def __init__(self, message: str, kind: str = "bad_request", code: int = 400) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


@dataclass
class Message:
    """A parsed request (``method`` set) or response (``status`` set).

    ``headers`` maps lower-case names to values in arrival order; ``signed``
    is the byte string the HMAC covers; ``auth`` the hex HMAC sent (or "").
    """

    method: str = ""
    status: int = 0
    reason: str = ""
    version: str = VERSION
    headers: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # lower -> as sent
    lines: list[tuple[str, str]] = field(default_factory=list)  # every header line, repeated names kept
    signed: bytes = b""
    auth: str = ""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def seq(self) -> int:
        raw = self.get("seq")
        if raw is None:
            raise DtcpError("the message has no Seq header")
        try:
            v = int(raw.strip())
        except ValueError:
            raise DtcpError(f"Seq {raw!r} is not an integer") from None
        if not 0 <= v <= SEQ_MAX:
            raise DtcpError(f"Seq {v} is not a 64-bit unsigned number")
        return v


def sign(key: bytes, data: bytes) -> str:
    """Lowercase hex HMAC-SHA1 of *data* under *key*."""
    return hmac.new(key, data, hashlib.sha1).hexdigest()


def verify(key: bytes, msg: Message) -> bool:
    """Constant-time check of the message's Authentication-Info against *key*."""
    if not msg.auth or not key:
        return False
    expected = sign(key, msg.signed).encode()
    return hmac.compare_digest(expected, msg.auth.strip().lower().encode("ascii", "replace"))


def encode(start: str, headers: list[tuple[str, object]], key: bytes | None = None) -> bytes:
    """Serialise a message; with *key*, append the ``Authentication-Info`` header (signed)."""
    head = [start] + [f"{k}: {v}" for k, v in headers]
    for line in head:
        if "\r" in line or "\n" in line or not line.isascii():
            raise ValueError(f"a DTCP line may only hold ASCII without CR or LF: {line!r}")
    body = ("\r\n".join(head) + "\r\n").encode()
    if key is not None:
        body += f"Authentication-Info: {sign(key, body)}\r\n".encode()
    return body + b"\r\n"


def request(method: str, headers: list[tuple[str, object]], key: bytes | None = None) -> bytes:
    return encode(f"{method} {VERSION}", headers, key)


def response(code: int, headers: list[tuple[str, object]], key: bytes | None = None, reason: str = "") -> bytes:
    """A reply; Junos spells reply headers in upper case, and so do we.

    Values are made safe for one line (an error message may quote what the peer sent).
    """
    return encode(f"{VERSION} {code} {reason or REASONS.get(code, 'Error')}",
                  [(k.upper(), _one_line(v)) for k, v in headers], key)


def _one_line(v: object) -> object:
    if isinstance(v, str):
        return "".join(c if c.isprintable() and c.isascii() else "?" for c in v)
    return v


def parse(raw: bytes) -> Message:
    """Parse one complete message (terminator optional); raises :class:`DtcpError`."""
    if len(raw) > MAX_MESSAGE:
        raise DtcpError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE}", "too_large", 413)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise DtcpError("not DTCP: the message is not ASCII text", "not_dtcp") from None
    if text.endswith("\r\n\r\n"):
        text = text[:-2]
    elif not text.endswith("\r\n"):
        raise DtcpError("not DTCP: lines must end with CRLF", "not_dtcp")
    lines = text[:-2].split("\r\n")
    if not lines[0].isprintable():
        raise DtcpError("not DTCP: a control character in the start line", "not_dtcp")
    start = lines[0].split()
    msg = Message()
    if len(start) >= 2 and start[0].startswith("DTCP/"):
        msg.version = start[0]
        try:
            msg.status = int(start[1])
        except ValueError:
            raise DtcpError(f"bad status line {lines[0]!r}", "not_dtcp") from None
        msg.reason = " ".join(start[2:])
    elif len(start) == 2 and start[1].startswith("DTCP/"):
        msg.method, msg.version = start[0].upper(), start[1]
        if msg.method not in METHODS:
            raise DtcpError(f"unknown DTCP method {start[0]!r}; expected one of: {', '.join(METHODS)}", "bad_command")
    else:
        raise DtcpError(f"not DTCP: start line {lines[0][:60]!r}", "not_dtcp")
    if not msg.version.startswith("DTCP/0."):
        raise DtcpError(f"unsupported version {msg.version!r}; this server speaks {VERSION}", "bad_command", 505)
    offset = len(lines[0]) + 2
    for line in lines[1:]:
        if line == "":
            raise DtcpError("an empty line inside the message", "not_dtcp")
        if "\r" in line or "\n" in line or not line.isprintable():
            raise DtcpError("a control character inside a header line", "not_dtcp")
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip() or " " in name:
            raise DtcpError(f"bad header line {line[:60]!r}", "not_dtcp")
        low = name.lower()
        if msg.auth:
            raise DtcpError("Authentication-Info must be the last header")
        if low == AUTH:
            msg.signed = raw[:offset]
            msg.auth = value.strip()
        else:
            if low in msg.headers:
                raise DtcpError(f"header {name!r} appears twice")
            msg.headers[low] = value.strip()
            msg.names[low] = name
            msg.lines.append((name, value.strip()))
        offset += len(line) + 2
    return msg


def split_stream(buf: bytearray) -> list[bytes]:
    """Cut complete messages (ending in a blank line) off the front of a TCP buffer.

    Raises :class:`DtcpError` ("too_large") when the buffer holds more than
    :data:`MAX_MESSAGE` bytes without a terminator.
    """
    out = []
    while True:
        i = buf.find(END)
        if i < 0:
            if len(buf) > MAX_MESSAGE:
                raise DtcpError(f"no end of message within {MAX_MESSAGE} bytes", "too_large", 413)
            return out
        if i + 4 > MAX_MESSAGE:
            raise DtcpError(f"message of {i + 4} bytes exceeds {MAX_MESSAGE}", "too_large", 413)
        out.append(bytes(buf[: i + 4]))
        del buf[: i + 4]


class SequenceWindow:
    """Liberal sequence windowing: accept ``highest - 256 <= seq <= highest + 256`` once each.

    ``highest`` is the highest sequence number accepted so far; a bitmap
    remembers which of the 257 numbers ``highest-256 .. highest`` were seen, so
    a replay inside the window is refused too.  The first message sets the
    window.  :meth:`check` does not change anything; :meth:`accept` records.
    """

    __slots__ = ("highest", "bitmap")

    def __init__(self) -> None:
        self.highest: int | None = None
        self.bitmap = 0  # bit i: highest - i was seen

    def check(self, seq: int) -> str:
        """``"ok"``, ``"replay"`` or ``"out_of_window"``."""
        h = self.highest
        if h is None:
            return "ok"
        if seq > h:
            return "ok" if seq - h <= WINDOW else "out_of_window"
        d = h - seq
        if d > WINDOW:
            return "out_of_window"
        return "replay" if (self.bitmap >> d) & 1 else "ok"

    def accept(self, seq: int) -> None:
        h = self.highest
        if h is None:
            self.highest, self.bitmap = seq, 1
        elif seq > h:
            self.bitmap = ((self.bitmap << (seq - h)) | 1) & ((1 << (WINDOW + 1)) - 1)
            self.highest = seq
        else:
            self.bitmap |= 1 << (h - seq)

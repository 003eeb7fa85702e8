"""TWAMP security (RFC 4656 §3.1 and §4.1.1, RFC 5357 §4.1.2 / §4.2.1).

* Key derivation: ``dk = PBKDF2-HMAC-SHA1(secret, Salt, Count, 16)`` (the greeting carries Salt and Count).
* Token (Set-Up-Response) = ``AES-128-CBC(dk, IV=0)`` of Challenge(16) | AES session key(16) | HMAC key(32).
* Control: after Set-Up-Response every message is AES-CBC with the session key; client->server
  starts from Client-IV, server->client from Server-IV, and each direction's CBC state **carries
  over** across messages.  Only Server-Start's last block (Start-Time, MBZ) is encrypted.
* Control HMAC: HMAC-SHA1 keyed with the 32-byte HMAC key over the plaintext blocks before the
  HMAC field, truncated to 16 bytes and encrypted with the message.  The HMAC context runs per
  direction and is reset after each digest, so the server's first HMAC (Accept-Session) also covers
  Server-Start's encrypted block.  Unauthenticated mode: HMAC fields are zero.
* Test sessions: AES key = ``AES-ECB(key=SID)(session AES key)``, HMAC key =
  ``AES-CBC(key=SID, IV=0)(session HMAC key)``.  Encrypted mode: AES-CBC (IV 0) over the first
  32 (sender) / 96 (reflector) bytes, HMAC over the same plaintext.  Authenticated mode: only the
  first block (Seq, MBZ) is encrypted (AES-ECB); perfSONAR's HMAC covers that block only, RFC
  5357 §4.1.2 the first 32/96 bytes; on receive either is accepted.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from dataclasses import dataclass

from .aes import AES128, CBC, ecb_encrypt
from .wire import MODE_AUTHENTICATED, MODE_ENCRYPTED, ZERO16

HMAC_LEN = 16


def derive_key(secret: bytes | str, salt: bytes, count: int) -> bytes:
    """The key-derivation key (KDK): PBKDF2-HMAC-SHA1 of the shared secret, 16 bytes."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hashlib.pbkdf2_hmac("sha1", secret, salt, count, 16)


def make_token(dk: bytes, challenge: bytes, aes_key: bytes, hmac_key: bytes) -> bytes:
    return CBC(AES128(dk), ZERO16).encrypt(challenge + aes_key + hmac_key)


def open_token(dk: bytes, token: bytes) -> tuple[bytes, bytes, bytes]:
    """(challenge, AES session key, HMAC session key) from a Set-Up-Response token."""
    plain = CBC(AES128(dk), ZERO16).decrypt(token)
    return plain[:16], plain[16:32], plain[32:64]


def hmac16(key: bytes, *parts: bytes) -> bytes:
    h = _hmac.new(key, digestmod=hashlib.sha1)
    for p in parts:
        h.update(p)
    return h.digest()[:HMAC_LEN]


class Direction:
    """One direction of an authenticated/encrypted control connection: a CBC stream and an HMAC context."""

    def __init__(self, aes_key: bytes, hmac_key: bytes, iv: bytes) -> None:
        self.cbc = CBC(AES128(aes_key), iv)
        self.hmac_key = hmac_key
        self._h = _hmac.new(hmac_key, digestmod=hashlib.sha1)

    def add(self, plain: bytes) -> None:
        self._h.update(plain)

    def digest(self) -> bytes:
        d = self._h.digest()[:HMAC_LEN]
        self._h = _hmac.new(self.hmac_key, digestmod=hashlib.sha1)
        return d


class ControlCrypto:
    """Seal and open control messages after Set-Up-Response; a no-op in unauthenticated mode.

    ``seal(plain)`` fills the HMAC (the last 16 bytes) and encrypts; ``open_first(block)`` decrypts
    the first 16 bytes of an incoming message (to learn its command), ``open_rest(rest)`` the rest and
    checks the HMAC.  ``seal_server_start`` / ``open_server_start`` handle Server-Start, whose
    first 32 bytes stay clear.
    """

    def __init__(self, mode: int, aes_key: bytes = b"", hmac_key: bytes = b"", *, send_iv: bytes = ZERO16,
                 recv_iv: bytes = ZERO16) -> None:
        self.mode = mode
        self.secure = mode in (MODE_AUTHENTICATED, MODE_ENCRYPTED) and bool(aes_key)
        self.aes_key, self.hmac_key = aes_key, hmac_key
        if self.secure:
            self.tx = Direction(aes_key, hmac_key, send_iv)
            self.rx = Direction(aes_key, hmac_key, recv_iv)
        self._pending = b""

    # -- sending ------------------------------------------------------------------
    def seal(self, plain: bytes, *, hmac: bool = True) -> bytes:
        if not self.secure:
            return plain
        if hmac:
            self.tx.add(plain[:-HMAC_LEN])
            plain = plain[:-HMAC_LEN] + self.tx.digest()
        else:
            self.tx.add(plain)
        return self.tx.cbc.encrypt(plain)

    def seal_server_start(self, plain: bytes) -> bytes:
        if not self.secure:
            return plain
        return plain[:32] + self.seal(plain[32:], hmac=False)

    # -- receiving ------------------------------------------------------------------
    def open_first(self, block: bytes) -> bytes:
        if not self.secure:
            self._pending = bytes(block)
            return self._pending
        self._pending = self.rx.cbc.decrypt(block)
        return self._pending

    def open_rest(self, rest: bytes, *, hmac: bool = True) -> bytes:
        """The whole plaintext message; raises :class:`HmacError` when its HMAC is wrong."""
        if not self.secure:
            plain = self._pending + bytes(rest)
            self._pending = b""
            return plain
        plain = self._pending + self.rx.cbc.decrypt(rest)
        self._pending = b""
        if hmac:
            self.rx.add(plain[:-HMAC_LEN])
            want = self.rx.digest()
            if not _hmac.compare_digest(want, plain[-HMAC_LEN:]):
                raise HmacError("control message HMAC does not match")
        else:
            self.rx.add(plain)
        return plain

    def open(self, data: bytes, *, hmac: bool = True) -> bytes:
        self.open_first(data[:16])
        return self.open_rest(data[16:], hmac=hmac)

    def open_server_start(self, data: bytes) -> bytes:
        if not self.secure:
            return bytes(data)
        return bytes(data[:32]) + self.open(data[32:], hmac=False)


class HmacError(ValueError):
    """An HMAC did not verify (wrong secret or tampering)."""


def new_keys() -> tuple[bytes, bytes]:
    """A fresh AES session key (16) and HMAC session key (32)."""
    return os.urandom(16), os.urandom(32)


# -- test sessions ------------------------------------------------------------------------------


@dataclass
class SessionKeys:
    aes: bytes
    hmac: bytes


def session_test_keys(sid: bytes, aes_key: bytes, hmac_key: bytes) -> SessionKeys:
    c = AES128(sid)
    return SessionKeys(ecb_encrypt(c, aes_key), CBC(c, ZERO16).encrypt(hmac_key))


class SessionCrypto:
    """Protect and check TWAMP-Test packets of one session (authenticated or encrypted mode).

    *cover* is how many leading bytes are encrypted (encrypted mode) and HMACed per RFC 5357:
    32 for sender packets, 96 for reflector packets; the HMAC sits right after them.
    """

    def __init__(self, mode: int, keys: SessionKeys) -> None:
        self.mode = mode
        self.keys = keys
        self.cipher = AES128(keys.aes)

    def seal(self, plain: bytes, cover: int, *, rfc_hmac: bool = False) -> bytes:
        """*plain* with the HMAC field filled and the covered part encrypted."""
        head, tail = plain[:cover], plain[cover + HMAC_LEN:]
        if self.mode == MODE_ENCRYPTED:
            mac = hmac16(self.keys.hmac, head)
            return CBC(self.cipher, ZERO16).encrypt(head) + mac + tail
        mac = hmac16(self.keys.hmac, head if rfc_hmac else head[:16])
        return self.cipher.encrypt_block(head[:16]) + head[16:] + mac + tail

    def open(self, data: bytes, cover: int) -> bytes:
        """The plaintext packet (HMAC field kept); raises :class:`HmacError`."""
        head, mac, tail = bytes(data[:cover]), bytes(data[cover:cover + HMAC_LEN]), bytes(data[cover + HMAC_LEN:])
        if self.mode == MODE_ENCRYPTED:
            plain = CBC(self.cipher, ZERO16).decrypt(head)
            if not _hmac.compare_digest(hmac16(self.keys.hmac, plain), mac):
                raise HmacError("test packet HMAC does not match")
            return plain + mac + tail
        plain = self.cipher.decrypt_block(head[:16]) + head[16:]
        if not (_hmac.compare_digest(hmac16(self.keys.hmac, plain[:16]), mac)
                or _hmac.compare_digest(hmac16(self.keys.hmac, plain), mac)):
            raise HmacError("test packet HMAC does not match")
        return plain + mac + tail


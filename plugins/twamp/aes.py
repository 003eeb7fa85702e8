"""AES-128 for TWAMP (RFC 4656 uses AES-128 in ECB and CBC), from the ``cryptography`` package.

Only what TWAMP needs: :class:`AES128` with ``encrypt_block``/``decrypt_block``, and :class:`CBC`,
whose chaining value carries over from one call to the next.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class AES128:
    """An AES-128 block cipher keyed with *key* (16 bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError(f"AES-128 needs a 16-byte key, got {len(key)}")
        self.key = bytes(key)
        c = Cipher(algorithms.AES(self.key), modes.ECB())
        self._enc = c.encryptor()
        self._dec = c.decryptor()

    def encrypt_block(self, block: bytes) -> bytes:
        return self._enc.update(bytes(block))

    def decrypt_block(self, block: bytes) -> bytes:
        return self._dec.update(bytes(block))


def ecb_encrypt(cipher: AES128, data: bytes) -> bytes:
    return cipher.encrypt_block(data)


class CBC:
    """AES-CBC whose chaining value carries over from one call to the next (RFC 4656 §3.4:
    each direction of the control connection is one long CBC stream)."""

    def __init__(self, cipher: AES128, iv: bytes) -> None:
        self.cipher = cipher
        self.iv = bytes(iv)

    def _mode(self) -> Cipher:
        return Cipher(algorithms.AES(self.cipher.key), modes.CBC(self.iv))

    def encrypt(self, data: bytes) -> bytes:
        if len(data) % 16:
            raise ValueError("CBC data must be whole 16-byte blocks")
        if not data:
            return b""
        out = self._mode().encryptor().update(bytes(data))
        self.iv = out[-16:]
        return out

    def decrypt(self, data: bytes) -> bytes:
        if len(data) % 16:
            raise ValueError("CBC data must be whole 16-byte blocks")
        if not data:
            return b""
        data = bytes(data)
        out = self._mode().decryptor().update(data)
        self.iv = data[-16:]
        return out


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return CBC(AES128(key), iv).encrypt(data)


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return CBC(AES128(key), iv).decrypt(data)

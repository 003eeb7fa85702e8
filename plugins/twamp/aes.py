"""AES-128 block cipher for TWAMP (RFC 4656 uses AES-128 in ECB and CBC).

AES is not in the Python standard library.  The ``cryptography`` package is used
when it is importable (fast); otherwise a table-driven pure-Python AES-128 runs
(verified against FIPS-197 and the twamp-auth.pcapng known answers).  TWAMP
encrypts at most a few blocks per message or test packet, so the fallback is
fast enough for control traffic and moderate test rates; no new dependency.

Only what TWAMP needs: :class:`AES128` with ``encrypt_block``/``decrypt_block``,
and CBC helpers that carry their chaining state across messages (:class:`CBC`).
"""

from __future__ import annotations

try:  # pragma: no cover - depends on the environment
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    HAVE_CRYPTOGRAPHY = True
except Exception:  # pragma: no cover
    HAVE_CRYPTOGRAPHY = False


def _tables():
    # GF(2^8) exp/log tables with generator 3
    exp, log = [0] * 512, [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x ^= (x << 1) ^ (0x11B if x & 0x80 else 0)
        x &= 0xFF
    for i in range(255, 512):
        exp[i] = exp[i - 255]

    def mul(a: int, b: int) -> int:
        return 0 if a == 0 or b == 0 else exp[log[a] + log[b]]

    sbox = [0] * 256
    for a in range(256):
        inv = 0 if a == 0 else exp[255 - log[a]]
        s = inv
        for k in range(1, 5):
            s ^= ((inv << k) | (inv >> (8 - k))) & 0xFF
        sbox[a] = s ^ 0x63
    inv_sbox = [0] * 256
    for a, s in enumerate(sbox):
        inv_sbox[s] = a

    def ror(w: int, n: int) -> int:
        return ((w >> n) | (w << (32 - n))) & 0xFFFFFFFF

    te0 = [mul(s, 2) << 24 | s << 16 | s << 8 | mul(s, 3) for s in sbox]
    td0 = [mul(s, 14) << 24 | mul(s, 9) << 16 | mul(s, 13) << 8 | mul(s, 11) for s in inv_sbox]
    te = [te0] + [[ror(w, 8 * k) for w in te0] for k in (1, 2, 3)]
    td = [td0] + [[ror(w, 8 * k) for w in td0] for k in (1, 2, 3)]
    return sbox, inv_sbox, te, td


SBOX, INV_SBOX, TE, TD = _tables()
_RCON = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)


class _PyAES128:
    def __init__(self, key: bytes) -> None:
        S = SBOX
        w = [int.from_bytes(key[i:i + 4], "big") for i in range(0, 16, 4)]
        for i in range(4, 44):
            t = w[i - 1]
            if i % 4 == 0:
                t = ((t << 8) | (t >> 24)) & 0xFFFFFFFF
                t = S[t >> 24] << 24 | S[(t >> 16) & 255] << 16 | S[(t >> 8) & 255] << 8 | S[t & 255]
                t ^= _RCON[i // 4 - 1] << 24
            w.append(w[i - 4] ^ t)
        self.ek = w
        td0, td1, td2, td3 = TD
        dk = list(w[40:44])
        for r in range(9, 0, -1):
            for k in w[4 * r:4 * r + 4]:
                dk.append(td0[S[k >> 24]] ^ td1[S[(k >> 16) & 255]] ^ td2[S[(k >> 8) & 255]] ^ td3[S[k & 255]])
        dk += w[0:4]
        self.dk = dk

    def encrypt_block(self, block: bytes) -> bytes:
        te0, te1, te2, te3 = TE
        rk = self.ek
        s0 = int.from_bytes(block[0:4], "big") ^ rk[0]
        s1 = int.from_bytes(block[4:8], "big") ^ rk[1]
        s2 = int.from_bytes(block[8:12], "big") ^ rk[2]
        s3 = int.from_bytes(block[12:16], "big") ^ rk[3]
        for r in range(1, 10):
            k = 4 * r
            t0 = te0[s0 >> 24] ^ te1[(s1 >> 16) & 255] ^ te2[(s2 >> 8) & 255] ^ te3[s3 & 255] ^ rk[k]
            t1 = te0[s1 >> 24] ^ te1[(s2 >> 16) & 255] ^ te2[(s3 >> 8) & 255] ^ te3[s0 & 255] ^ rk[k + 1]
            t2 = te0[s2 >> 24] ^ te1[(s3 >> 16) & 255] ^ te2[(s0 >> 8) & 255] ^ te3[s1 & 255] ^ rk[k + 2]
            t3 = te0[s3 >> 24] ^ te1[(s0 >> 16) & 255] ^ te2[(s1 >> 8) & 255] ^ te3[s2 & 255] ^ rk[k + 3]
            s0, s1, s2, s3 = t0, t1, t2, t3
        S = SBOX
        o0 = (S[s0 >> 24] << 24 | S[(s1 >> 16) & 255] << 16 | S[(s2 >> 8) & 255] << 8 | S[s3 & 255]) ^ rk[40]
        o1 = (S[s1 >> 24] << 24 | S[(s2 >> 16) & 255] << 16 | S[(s3 >> 8) & 255] << 8 | S[s0 & 255]) ^ rk[41]
        o2 = (S[s2 >> 24] << 24 | S[(s3 >> 16) & 255] << 16 | S[(s0 >> 8) & 255] << 8 | S[s1 & 255]) ^ rk[42]
        o3 = (S[s3 >> 24] << 24 | S[(s0 >> 16) & 255] << 16 | S[(s1 >> 8) & 255] << 8 | S[s2 & 255]) ^ rk[43]
        return (o0 << 96 | o1 << 64 | o2 << 32 | o3).to_bytes(16, "big")

    def decrypt_block(self, block: bytes) -> bytes:
        td0, td1, td2, td3 = TD
        rk = self.dk
        s0 = int.from_bytes(block[0:4], "big") ^ rk[0]
        s1 = int.from_bytes(block[4:8], "big") ^ rk[1]
        s2 = int.from_bytes(block[8:12], "big") ^ rk[2]
        s3 = int.from_bytes(block[12:16], "big") ^ rk[3]
        for r in range(1, 10):
            k = 4 * r
            t0 = td0[s0 >> 24] ^ td1[(s3 >> 16) & 255] ^ td2[(s2 >> 8) & 255] ^ td3[s1 & 255] ^ rk[k]
            t1 = td0[s1 >> 24] ^ td1[(s0 >> 16) & 255] ^ td2[(s3 >> 8) & 255] ^ td3[s2 & 255] ^ rk[k + 1]
            t2 = td0[s2 >> 24] ^ td1[(s1 >> 16) & 255] ^ td2[(s0 >> 8) & 255] ^ td3[s3 & 255] ^ rk[k + 2]
            t3 = td0[s3 >> 24] ^ td1[(s2 >> 16) & 255] ^ td2[(s1 >> 8) & 255] ^ td3[s0 & 255] ^ rk[k + 3]
            s0, s1, s2, s3 = t0, t1, t2, t3
        S = INV_SBOX
        o0 = (S[s0 >> 24] << 24 | S[(s3 >> 16) & 255] << 16 | S[(s2 >> 8) & 255] << 8 | S[s1 & 255]) ^ rk[40]
        o1 = (S[s1 >> 24] << 24 | S[(s0 >> 16) & 255] << 16 | S[(s3 >> 8) & 255] << 8 | S[s2 & 255]) ^ rk[41]
        o2 = (S[s2 >> 24] << 24 | S[(s1 >> 16) & 255] << 16 | S[(s0 >> 8) & 255] << 8 | S[s3 & 255]) ^ rk[42]
        o3 = (S[s3 >> 24] << 24 | S[(s2 >> 16) & 255] << 16 | S[(s1 >> 8) & 255] << 8 | S[s0 & 255]) ^ rk[43]
        return (o0 << 96 | o1 << 64 | o2 << 32 | o3).to_bytes(16, "big")


class _LibAES128:  # pragma: no cover - used only where cryptography is installed
    def __init__(self, key: bytes) -> None:
        c = Cipher(algorithms.AES(bytes(key)), modes.ECB())
        self._enc = c.encryptor()
        self._dec = c.decryptor()

    def encrypt_block(self, block: bytes) -> bytes:
        return self._enc.update(bytes(block))

    def decrypt_block(self, block: bytes) -> bytes:
        return self._dec.update(bytes(block))


def AES128(key: bytes, *, pure: bool = False):
    """An AES-128 block cipher keyed with *key* (16 bytes): ``encrypt_block`` / ``decrypt_block``."""
    if len(key) != 16:
        raise ValueError(f"AES-128 needs a 16-byte key, got {len(key)}")
    if HAVE_CRYPTOGRAPHY and not pure:
        return _LibAES128(key)
    return _PyAES128(key)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def ecb_encrypt(cipher, data: bytes) -> bytes:
    return b"".join(cipher.encrypt_block(data[i:i + 16]) for i in range(0, len(data), 16))


def ecb_decrypt(cipher, data: bytes) -> bytes:
    return b"".join(cipher.decrypt_block(data[i:i + 16]) for i in range(0, len(data), 16))


class CBC:
    """AES-CBC whose chaining value carries over from one call to the next (RFC 4656 §3.4:
    each direction of the control connection is one long CBC stream)."""

    def __init__(self, cipher, iv: bytes) -> None:
        self.cipher = cipher
        self.iv = bytes(iv)

    def encrypt(self, data: bytes) -> bytes:
        if len(data) % 16:
            raise ValueError("CBC data must be whole 16-byte blocks")
        out = []
        iv = self.iv
        for i in range(0, len(data), 16):
            iv = self.cipher.encrypt_block(_xor(data[i:i + 16], iv))
            out.append(iv)
        self.iv = iv
        return b"".join(out)

    def decrypt(self, data: bytes) -> bytes:
        if len(data) % 16:
            raise ValueError("CBC data must be whole 16-byte blocks")
        out = []
        iv = self.iv
        for i in range(0, len(data), 16):
            block = bytes(data[i:i + 16])
            out.append(_xor(self.cipher.decrypt_block(block), iv))
            iv = block
        self.iv = iv
        return b"".join(out)


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return CBC(AES128(key), iv).encrypt(data)


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return CBC(AES128(key), iv).decrypt(data)

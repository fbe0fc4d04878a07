"""Name one SRTCP interop fault precisely: a 32-bit SRTCP tag on the _32 suite.

RFC 3711 §3.4 and RFC 4568 §6.2 keep SRTCP's authentication tag at 80 bits in both
AES_CM_128_HMAC_SHA1 suites; only SRTP's tag shrinks to 32 bits in the _32 one. baresip
1.0 (libre) sends, and expects, a 32-bit SRTCP tag on that suite, so libsrtp refuses
every report it sends. We keep the RFC framing and drop those packets; this module only
tells the drop counter why, by checking the HMAC under libre's framing:

    encrypted RTCP || E + SRTCP index (4 bytes) || HMAC-SHA1 truncated to 4 bytes

A packet that passes is from a holder of the peer's key, but it is *still dropped*:
nothing here lets a packet through. The check costs one key derivation and one HMAC per
failed packet, and runs only on calls that negotiated the _32 suite.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Final

__all__ = ["SHORT_TAG_LEN", "authenticates_with_short_tag", "srtcp_auth_key"]

SHORT_TAG_LEN: Final = 4
_INDEX_LEN: Final = 4
_RTCP_HEADER: Final = 8
_LABEL_SRTCP_AUTH: Final = 0x04  # RFC 3711 §4.3.2
_AUTH_KEY_LEN: Final = 20  # n_a for HMAC-SHA1
_MASTER_KEY_LEN: Final = 16
_MASTER_SALT_LEN: Final = 14


@lru_cache(maxsize=8)
def srtcp_auth_key(key_salt: bytes) -> bytes:
    """The SRTCP session authentication key (RFC 3711 §4.3.1, key derivation rate 0)."""
    if len(key_salt) != _MASTER_KEY_LEN + _MASTER_SALT_LEN:
        raise ValueError(f"master key || salt must be 30 bytes, got {len(key_salt)}")
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    master_key, salt = key_salt[:_MASTER_KEY_LEN], bytearray(key_salt[_MASTER_KEY_LEN:])
    salt[_MASTER_SALT_LEN - 7] ^= _LABEL_SRTCP_AUTH  # key_id = label || r (r = 0, 48 bits)
    iv = bytes(salt) + b"\x00\x00"
    encryptor = Cipher(algorithms.AES(master_key), modes.CTR(iv)).encryptor()
    return encryptor.update(b"\x00" * _AUTH_KEY_LEN) + encryptor.finalize()


def authenticates_with_short_tag(key_salt: bytes, packet: bytes) -> bool:
    """True when ``packet`` is SRTCP under ``key_salt`` with a 32-bit tag (libre's framing)."""
    if len(packet) < _RTCP_HEADER + _INDEX_LEN + SHORT_TAG_LEN:
        return False
    body, tag = packet[:-SHORT_TAG_LEN], packet[-SHORT_TAG_LEN:]
    digest = hmac.new(srtcp_auth_key(bytes(key_salt)), body, hashlib.sha1).digest()
    return hmac.compare_digest(digest[:SHORT_TAG_LEN], tag)

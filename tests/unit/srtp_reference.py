"""An independent RFC 3711 reference for the SRTP tests: keystream, key derivation, index.

The gateway protects packets with libsrtp (gateway/media/srtp.py). This module is the
second path the tests check libsrtp's wire bytes against, and the way they build packets
libsrtp would never send (an SRTCP index of our choosing, the E flag cleared). It is
checked itself against the RFC's own vectors in test_srtp.py. Test code only: nothing in
gateway/ imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MASTER_KEY_LEN: Final = 16
MASTER_SALT_LEN: Final = 14
AUTH_KEY_LEN: Final = 20

# Key derivation labels, RFC 3711 §4.3.1 and §4.3.2.
LABEL_RTP_ENCRYPTION: Final = 0x00
LABEL_RTCP_ENCRYPTION: Final = 0x03
LABEL_RTCP_SALT: Final = 0x05

_SEQ_MOD: Final = 1 << 16
_E_FLAG: Final = 1 << 31
_SRTCP_TAG_LEN: Final = 10


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """AES in counter mode (RFC 3711 §4.1.1): the keystream both the cipher and the KDF use."""
    if len(iv) != 16:
        raise ValueError(f"AES-CM IV must be 16 bytes, got {len(iv)}")
    if length < 0:
        raise ValueError(f"keystream length must not be negative, got {length}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive_session_key(
    master_key: bytes,
    master_salt: bytes,
    label: int,
    length: int,
    *,
    index: int = 0,
    kdr: int = 0,
) -> bytes:
    """The AES-CM PRF of RFC 3711 §4.3.1/§4.3.3: one session key, salt or auth key.

    A non-zero key derivation rate is accepted for the SRTP labels 0-2 only.
    """
    if len(master_key) != MASTER_KEY_LEN:
        raise ValueError(f"SRTP master key must be {MASTER_KEY_LEN} bytes, got {len(master_key)}")
    if len(master_salt) != MASTER_SALT_LEN:
        raise ValueError(
            f"SRTP master salt must be {MASTER_SALT_LEN} bytes, got {len(master_salt)}"
        )
    if not 0 <= label <= 0xFF:
        raise ValueError(f"key derivation label must be 0..255, got {label}")
    if kdr and (kdr & (kdr - 1) or kdr > 1 << 24):
        raise ValueError(f"key derivation rate must be 0 or a power of two <= 2^24, got {kdr}")
    if kdr and LABEL_RTCP_ENCRYPTION <= label <= LABEL_RTCP_SALT:
        raise ValueError(f"key derivation rate {kdr} is not supported for SRTCP label {label}")
    r = index // kdr if kdr else 0
    key_id = (label << 48) | (r & ((1 << 48) - 1))
    x = key_id ^ int.from_bytes(master_salt, "big")
    return aes_cm_keystream(master_key, (x << 16).to_bytes(16, "big"), length)


@dataclass(frozen=True)
class SessionKeys:
    """The three keys one direction of SRTP or SRTCP runs on (kdr = 0)."""

    cipher_key: bytes
    auth_key: bytes
    salt: bytes


def derive_session_keys(
    master_key: bytes, master_salt: bytes, *, rtcp: bool = False
) -> SessionKeys:
    """Derive SRTP (labels 0-2) or SRTCP (labels 3-5) session keys from a master key."""
    base = LABEL_RTCP_ENCRYPTION if rtcp else LABEL_RTP_ENCRYPTION
    return SessionKeys(
        cipher_key=derive_session_key(master_key, master_salt, base, MASTER_KEY_LEN),
        auth_key=derive_session_key(master_key, master_salt, base + 1, AUTH_KEY_LEN),
        salt=derive_session_key(master_key, master_salt, base + 2, MASTER_SALT_LEN),
    )


def estimate_index(roc: int, s_l: int, seq: int) -> tuple[int, int]:
    """RFC 3711 Appendix A: guess the ROC ``v`` of ``seq`` from the highest seen ``s_l``."""
    half = _SEQ_MOD // 2
    if s_l < half:
        v = roc - 1 if seq - s_l > half else roc
    else:
        v = roc + 1 if s_l - half > seq else roc
    return v, v * _SEQ_MOD + seq


def srtcp_packet(
    master_key: bytes, master_salt: bytes, rtcp: bytes, index: int, *, encrypt: bool = True
) -> bytes:
    """An SRTCP packet with the SRTCP ``index`` we choose, E set or (encrypt=False) cleared.

    The tag is right either way, so a receiver that refuses it refuses it for what it is,
    not because it fails authentication.
    """
    if not 0 <= index < 1 << 31:
        raise ValueError(f"SRTCP index must be 0..2^31-1, got {index}")
    keys = derive_session_keys(master_key, master_salt, rtcp=True)
    body = rtcp[8:]
    if encrypt:
        (ssrc,) = struct.unpack_from("!I", rtcp, 4)
        iv = (int.from_bytes(keys.salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
        stream = aes_cm_keystream(keys.cipher_key, iv.to_bytes(16, "big"), len(body))
        body = bytes(a ^ b for a, b in zip(body, stream, strict=True))
    packet = rtcp[:8] + body + struct.pack("!I", (_E_FLAG if encrypt else 0) | index)
    tag = hmac.new(keys.auth_key, packet, hashlib.sha1).digest()[:_SRTCP_TAG_LEN]
    return packet + tag


def srtp_packet(
    master_key: bytes, master_salt: bytes, rtp: bytes, *, roc: int = 0, tag_len: int = 10
) -> bytes:
    """An SRTP packet for a plain 12-byte-header RTP packet at rollover counter ``roc``."""
    keys = derive_session_keys(master_key, master_salt)
    seq, ssrc = struct.unpack_from("!H4xI", rtp, 2)
    index = (roc << 16) | seq
    iv = (int.from_bytes(keys.salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    stream = aes_cm_keystream(keys.cipher_key, iv.to_bytes(16, "big"), len(rtp) - 12)
    packet = rtp[:12] + bytes(a ^ b for a, b in zip(rtp[12:], stream, strict=True))
    mac = hmac.new(keys.auth_key, packet + struct.pack("!I", roc), hashlib.sha1)
    return packet + mac.digest()[:tag_len]

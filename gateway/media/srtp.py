"""SRTP and SRTCP (RFC 3711) for the AES-CM / HMAC-SHA1 profiles that SDES (RFC 4568) offers.

Pure code: bytes in, bytes out, no clock and no I/O. One :class:`SrtpContext` holds the
session keys derived from one master key and the per-SSRC state each direction needs:

- sending: the rollover counter (ROC) of each RTP stream and the SRTCP index;
- receiving: the ROC estimate (RFC 3711 Appendix A) and a 64-packet replay window for
  each SRTP stream, and a replay window over the SRTCP index for each SRTCP stream.

With SDES each side sends with its own key, so a call uses two contexts: one built from
our a=crypto key (``protect``/``protect_rtcp``) and one from the peer's (``unprotect``/
``unprotect_rtcp``). Receive state is only created or advanced by a packet whose
authentication tag checks out, so forged packets cannot move a stream's ROC or window.

Not supported: MKI, key derivation rate other than 0, re-keying, the NULL and F8 ciphers.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "PROFILES",
    "SrtpContext",
    "SrtpError",
    "SrtpProfile",
    "ReplayWindow",
    "SessionKeys",
    "aes_cm_keystream",
    "derive_session_key",
    "derive_session_keys",
    "estimate_index",
]

ProfileName = Literal["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
ErrorReason = Literal["short", "malformed", "auth", "replay", "exhausted"]

MASTER_KEY_LEN: Final = 16
MASTER_SALT_LEN: Final = 14
AUTH_KEY_LEN: Final = 20
REPLAY_WINDOW: Final = 64

# Key derivation labels, RFC 3711 §4.3.1 and §4.3.2.
LABEL_RTP_ENCRYPTION: Final = 0x00
LABEL_RTP_AUTH: Final = 0x01
LABEL_RTP_SALT: Final = 0x02
LABEL_RTCP_ENCRYPTION: Final = 0x03
LABEL_RTCP_AUTH: Final = 0x04
LABEL_RTCP_SALT: Final = 0x05

_SEQ_MOD: Final = 1 << 16
_ROC_MOD: Final = 1 << 32
_SRTCP_INDEX_MOD: Final = 1 << 31
_E_FLAG: Final = 1 << 31
_RTP_HEADER: Final = 12
_RTCP_HEADER: Final = 8
_SRTCP_TAG_LEN: Final = 10  # RFC 4568 §6.2: SRTCP keeps an 80-bit tag in both profiles


class SrtpError(ValueError):
    """A packet we must drop; ``reason`` lets the caller count drops by kind.

    ``short``: too small to hold what its header claims; ``malformed``: not RTP/RTCP
    version 2; ``auth``: the tag does not match (forged, damaged or wrong key);
    ``replay``: an index already seen or older than the window; ``exhausted``: the
    SRTCP index ran out and the session must be re-keyed.
    """

    def __init__(self, reason: ErrorReason, message: str) -> None:
        self.reason: ErrorReason = reason
        super().__init__(message)


@dataclass(frozen=True)
class SrtpProfile:
    """What differs between the SDES suites we speak: only the SRTP tag length."""

    name: ProfileName
    rtp_tag_len: int
    rtcp_tag_len: int = _SRTCP_TAG_LEN


PROFILES: Final[dict[str, SrtpProfile]] = {
    "AES_CM_128_HMAC_SHA1_80": SrtpProfile("AES_CM_128_HMAC_SHA1_80", 10),
    "AES_CM_128_HMAC_SHA1_32": SrtpProfile("AES_CM_128_HMAC_SHA1_32", 4),
}
"""Supported profiles by their SDES suite name (RFC 4568 §6.2)."""


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """AES in counter mode (RFC 3711 §4.1.1): the keystream both the cipher and the KDF use.

    The 128-bit IV always has its low 16 bits zero in SRTP, so a plain big-endian CTR
    counter is the RFC's "IV + block number" for any packet under 2^16 blocks.
    """
    if len(iv) != 16:
        raise ValueError(f"AES-CM IV must be 16 bytes, got {len(iv)}")
    if length < 0:
        raise ValueError(f"keystream length must not be negative, got {length}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def _xor_keystream(key: bytes, iv: int, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


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

    ``kdr`` is the key derivation rate (0 or a power of two up to 2^24); with 0, as SDES
    uses by default, ``index`` plays no part and keys are derived once per session.
    A non-zero rate is accepted for the SRTP labels 0-2 only: for the SRTCP labels the
    placement of r (from the 31-bit SRTCP index) differs between published implementations,
    and nothing we negotiate uses it.
    """
    _check_master(master_key, master_salt)
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
    """The three keys one direction of SRTP or SRTCP runs on (kdr = 0: fixed per session)."""

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
    """RFC 3711 Appendix A: guess the ROC ``v`` of ``seq`` from the highest seen ``s_l``.

    Returns (v, index) with index = v * 2^16 + seq. ``v`` can be ``roc - 1`` (a late
    packet from before the last wrap, possibly -1 at the very start) or ``roc + 1`` (the
    sequence number wrapped).
    """
    half = _SEQ_MOD // 2
    if s_l < half:
        v = roc - 1 if seq - s_l > half else roc
    else:
        v = roc + 1 if s_l - half > seq else roc
    return v, v * _SEQ_MOD + seq


class ReplayWindow:
    """A sliding bitmap over the highest index seen, so each index is accepted only once.

    ``check`` is side-effect free and runs before authentication; ``accept`` records an
    index only after the packet has authenticated.
    """

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"replay window must hold at least one packet, got {size}")
        self.size = size
        self.highest: int | None = None
        self._bits = 0  # bit k set: index (highest - k) has been received

    def check(self, index: int) -> bool:
        """True when ``index`` is new and not older than the window."""
        if self.highest is None or index > self.highest:
            return True
        delta = self.highest - index
        if delta >= self.size:
            return False
        return not (self._bits >> delta) & 1

    def accept(self, index: int) -> None:
        """Record ``index`` as received; call only for an authenticated packet."""
        if self.highest is None:
            self.highest, self._bits = index, 1
            return
        if index > self.highest:
            shift = index - self.highest
            self._bits = ((self._bits << shift) | 1) & ((1 << self.size) - 1)
            self.highest = index
        else:
            self._bits |= 1 << (self.highest - index)


@dataclass
class _SendStream:
    roc: int
    s_l: int


@dataclass
class _ReceiveStream:
    roc: int
    s_l: int
    window: ReplayWindow


class SrtpContext:
    """SRTP/SRTCP for one master key, with per-SSRC send and receive state.

    Build one per direction from the SDES keys: ours protects, the peer's unprotects.
    """

    def __init__(
        self,
        master_key: bytes,
        master_salt: bytes,
        profile: ProfileName | str = "AES_CM_128_HMAC_SHA1_80",
        *,
        replay_window: int = REPLAY_WINDOW,
    ) -> None:
        _check_master(master_key, master_salt)
        if profile not in PROFILES:
            raise ValueError(
                f"unsupported SRTP profile {profile!r}; expected one of {', '.join(PROFILES)}"
            )
        self.profile: SrtpProfile = PROFILES[profile]
        self._replay_size = replay_window
        ReplayWindow(replay_window)  # validate the size now, not on the first packet
        self._rtp = derive_session_keys(master_key, master_salt)
        self._rtcp = derive_session_keys(master_key, master_salt, rtcp=True)
        self._rtp_salt = int.from_bytes(self._rtp.salt, "big") << 16
        self._rtcp_salt = int.from_bytes(self._rtcp.salt, "big") << 16
        self._rtp_mac = hmac.new(self._rtp.auth_key, digestmod=hashlib.sha1)
        self._rtcp_mac = hmac.new(self._rtcp.auth_key, digestmod=hashlib.sha1)
        self._send: dict[int, _SendStream] = {}
        self._receive: dict[int, _ReceiveStream] = {}
        self._rtcp_send: dict[int, int] = {}
        self._rtcp_receive: dict[int, ReplayWindow] = {}

    # ----------------------------------------------------------------- SRTP

    def protect(self, rtp: bytes) -> bytes:
        """Encrypt an RTP packet's payload and append the authentication tag."""
        header_len, ssrc, seq = _rtp_header(rtp, 0)
        stream = self._send.get(ssrc)
        if stream is None:
            stream = self._send[ssrc] = _SendStream(roc=0, s_l=seq)
        v, index = estimate_index(stream.roc, stream.s_l, seq)
        if v < 0:
            raise SrtpError(
                "replay",
                f"RTP sequence {seq} for SSRC {ssrc:#010x} is before the first one sent "
                f"({stream.s_l}); it has no packet index",
            )
        if v > stream.roc or (v == stream.roc and seq > stream.s_l):
            stream.roc, stream.s_l = v, seq
        body = _xor_keystream(self._rtp.cipher_key, self._rtp_iv(ssrc, index), rtp[header_len:])
        packet = rtp[:header_len] + body
        return packet + self._rtp_tag(packet, v)

    def unprotect(self, srtp: bytes) -> bytes:
        """Authenticate, check for replay, and decrypt an SRTP packet back to RTP."""
        tag_len = self.profile.rtp_tag_len
        header_len, ssrc, seq = _rtp_header(srtp, tag_len)
        packet, tag = srtp[:-tag_len], srtp[-tag_len:]
        stream = self._receive.get(ssrc)
        if stream is None:
            v, index = 0, seq  # RFC 3711 §3.3.1: the first packet seen sets s_l, ROC 0
        else:
            v, index = estimate_index(stream.roc, stream.s_l, seq)
            if v < 0 or not stream.window.check(index):
                raise SrtpError(
                    "replay",
                    f"SRTP packet seq {seq} (index {index}) for SSRC {ssrc:#010x} "
                    "was already received or is older than the replay window",
                )
        if not hmac.compare_digest(self._rtp_tag(packet, v), tag):
            raise SrtpError("auth", f"SRTP authentication failed for SSRC {ssrc:#010x} seq {seq}")
        if stream is None:
            stream = self._receive[ssrc] = _ReceiveStream(
                roc=0, s_l=seq, window=ReplayWindow(self._replay_size)
            )
        elif v > stream.roc or (v == stream.roc and seq > stream.s_l):
            stream.roc, stream.s_l = v % _ROC_MOD, seq
        stream.window.accept(index)
        body = _xor_keystream(self._rtp.cipher_key, self._rtp_iv(ssrc, index), packet[header_len:])
        return packet[:header_len] + body

    def send_roc(self, ssrc: int) -> int | None:
        """The sender's rollover counter for ``ssrc`` (None before its first packet)."""
        stream = self._send.get(ssrc)
        return None if stream is None else stream.roc

    def receive_roc(self, ssrc: int) -> int | None:
        """The receiver's rollover counter for ``ssrc`` (None before it authenticated)."""
        stream = self._receive.get(ssrc)
        return None if stream is None else stream.roc

    def _rtp_iv(self, ssrc: int, index: int) -> int:
        return self._rtp_salt ^ (ssrc << 64) ^ ((index % (1 << 48)) << 16)

    def _rtp_tag(self, packet: bytes, roc: int) -> bytes:
        mac = self._rtp_mac.copy()
        mac.update(packet)
        mac.update(struct.pack("!I", roc % _ROC_MOD))
        return mac.digest()[: self.profile.rtp_tag_len]

    # ---------------------------------------------------------------- SRTCP

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """Encrypt a (compound) RTCP packet and append E flag, SRTCP index and 80-bit tag.

        The first packet sent for an SSRC carries index 0 (RFC 3711 §3.4).
        """
        ssrc = _rtcp_header(rtcp, 0)
        index = self._rtcp_send.get(ssrc, 0)
        if index >= _SRTCP_INDEX_MOD:
            raise SrtpError(
                "exhausted", f"SRTCP index for SSRC {ssrc:#010x} is used up; re-key the session"
            )
        self._rtcp_send[ssrc] = index + 1
        body = _xor_keystream(
            self._rtcp.cipher_key, self._rtcp_iv(ssrc, index), rtcp[_RTCP_HEADER:]
        )
        packet = rtcp[:_RTCP_HEADER] + body + struct.pack("!I", _E_FLAG | index)
        return packet + self._rtcp_tag(packet)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """Authenticate, check for replay and (if the E flag is set) decrypt an SRTCP packet."""
        tag_len = self.profile.rtcp_tag_len
        ssrc = _rtcp_header(srtcp, 4 + tag_len)
        packet, tag = srtcp[:-tag_len], srtcp[-tag_len:]
        (e_index,) = struct.unpack_from("!I", packet, len(packet) - 4)
        encrypted, index = bool(e_index & _E_FLAG), e_index & (_SRTCP_INDEX_MOD - 1)
        window = self._rtcp_receive.get(ssrc)
        if window is not None and not window.check(index):
            raise SrtpError(
                "replay",
                f"SRTCP index {index} for SSRC {ssrc:#010x} was already received "
                "or is older than the replay window",
            )
        if not hmac.compare_digest(self._rtcp_tag(packet), tag):
            raise SrtpError(
                "auth", f"SRTCP authentication failed for SSRC {ssrc:#010x} index {index}"
            )
        if window is None:
            window = self._rtcp_receive[ssrc] = ReplayWindow(self._replay_size)
        window.accept(index)
        body = packet[_RTCP_HEADER:-4]
        if encrypted:
            body = _xor_keystream(self._rtcp.cipher_key, self._rtcp_iv(ssrc, index), body)
        return packet[:_RTCP_HEADER] + body

    def _rtcp_iv(self, ssrc: int, index: int) -> int:
        return self._rtcp_salt ^ (ssrc << 64) ^ (index << 16)

    def _rtcp_tag(self, packet: bytes) -> bytes:
        mac = self._rtcp_mac.copy()
        mac.update(packet)
        return mac.digest()[: self.profile.rtcp_tag_len]


def _check_master(master_key: bytes, master_salt: bytes) -> None:
    if len(master_key) != MASTER_KEY_LEN:
        raise ValueError(f"SRTP master key must be {MASTER_KEY_LEN} bytes, got {len(master_key)}")
    if len(master_salt) != MASTER_SALT_LEN:
        raise ValueError(
            f"SRTP master salt must be {MASTER_SALT_LEN} bytes, got {len(master_salt)}"
        )


def _rtp_header(data: bytes, trailer: int) -> tuple[int, int, int]:
    """(header length, SSRC, sequence) of an RTP packet followed by ``trailer`` bytes."""
    if len(data) < _RTP_HEADER + trailer:
        raise SrtpError(
            "short",
            f"SRTP/RTP packet of {len(data)} bytes is shorter than "
            f"header and tag ({_RTP_HEADER + trailer})",
        )
    if data[0] >> 6 != 2:
        raise SrtpError("malformed", f"RTP version must be 2, got {data[0] >> 6}")
    header_len = _RTP_HEADER + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < header_len + 4 + trailer:
            raise SrtpError("short", "RTP extension flag set but the packet ends first")
        (words,) = struct.unpack_from("!H", data, header_len + 2)
        header_len += 4 + 4 * words
    if len(data) < header_len + trailer:
        raise SrtpError(
            "short", f"RTP header of {header_len} bytes does not fit a {len(data)}-byte packet"
        )
    seq, ssrc = struct.unpack_from("!H4xI", data, 2)
    return header_len, ssrc, seq


def _rtcp_header(data: bytes, trailer: int) -> int:
    """SSRC of the first RTCP packet in a compound packet followed by ``trailer`` bytes."""
    if len(data) < _RTCP_HEADER + trailer:
        raise SrtpError(
            "short",
            f"SRTCP/RTCP packet of {len(data)} bytes is shorter than "
            f"header and trailer ({_RTCP_HEADER + trailer})",
        )
    if data[0] >> 6 != 2:
        raise SrtpError("malformed", f"RTCP version must be 2, got {data[0] >> 6}")
    (ssrc,) = struct.unpack_from("!I", data, 4)
    return int(ssrc)

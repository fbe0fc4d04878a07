"""SRTP and SRTCP (RFC 3711) on libsrtp 2, for the AES-CM / HMAC-SHA1 suites SDES offers.

Pure code: bytes in, bytes out, no clock and no I/O. The cryptography, the rollover
counter and the replay windows are libsrtp's (through pylibsrtp); this module adds what
libsrtp leaves to its caller:

- a cap on the SSRCs one context keeps state for (:data:`MAX_SSRCS`): libsrtp clones a
  stream for every new SSRC that authenticates, so a peer holding the key could otherwise
  make us keep state for as many SSRCs as it likes. Packets for an SSRC over the cap are
  refused and counted (:attr:`SrtpContext.ssrcs_refused`);
- the SDES key lifetime (RFC 4568 §6.1, ``|2^N|`` after the key): SRTP and SRTCP packets
  under one master key are counted, and once the lifetime is used up the context refuses
  both directions of work until the call is re-keyed;
- SRTCP with the E flag cleared is refused: libsrtp would authenticate it and pass its
  body on in the clear, which on an encrypted session is a downgrade;
- a reason on every refusal (:class:`SrtpError`), so the media path can count drops.

One :class:`SrtpContext` is one master key. With SDES each side sends with its own key,
so a call uses two: one built from our a=crypto key (``protect``/``protect_rtcp``) and one
from the peer's (``unprotect``/``unprotect_rtcp``). A context keeps separate libsrtp
sessions for the two jobs, made on first use.

libsrtp numbers the first SRTCP packet of a stream 1, not 0, and so do we.
Not supported: MKI, key derivation rate other than 0, the NULL and F8 ciphers.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import pylibsrtp
from pylibsrtp import _binding

__all__ = [
    "MAX_SSRCS",
    "PROFILES",
    "REPLAY_WINDOW",
    "SrtpContext",
    "SrtpError",
    "SrtpProfile",
]

ProfileName = Literal["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
ErrorReason = Literal[
    "auth", "replay", "short", "malformed", "exhausted", "unencrypted", "ssrc_limit", "expired"
]

MASTER_KEY_LEN: Final = 16
MASTER_SALT_LEN: Final = 14
REPLAY_WINDOW: Final = 64
"""SRTP replay window in packets (libsrtp takes 64 to 32767); SRTCP's is libsrtp's 128."""
MAX_SSRCS: Final = 32
"""SSRCs one context keeps state for. A call has one; a peer that changes SSRC on every
re-INVITE or transfer still stays far below this."""

_RTP_HEADER: Final = 12
_RTCP_HEADER: Final = 8
_SRTCP_TAG_LEN: Final = 10  # RFC 4568 §6.2: SRTCP keeps an 80-bit tag in both profiles
_E_FLAG: Final = 0x80  # top bit of the first byte of the E || SRTCP index word

# pylibsrtp raises its Error with libsrtp's status text; these are the ones with a meaning
# for the caller, everything else is a packet libsrtp could not parse.
_LIBSRTP_REASONS: Final[dict[str, ErrorReason]] = {
    "authentication failure": "auth",
    "replay check failed (bad index)": "replay",
    "replay check failed (index too old)": "replay",
    "packet index is too old to consider": "replay",
    "can't use key any more": "exhausted",
    "packet index advanced, reset needed": "exhausted",
}


class SrtpError(ValueError):
    """A packet we must drop (or could not protect); ``reason`` lets the caller count it.

    ``short``: too small to hold what its header claims; ``malformed``: not RTP/RTCP
    version 2, or not a packet libsrtp can parse; ``auth``: the tag does not match
    (forged, damaged or wrong key); ``replay``: an index already seen or older than the
    window; ``exhausted``: libsrtp's own index or key-use limit is reached;
    ``unencrypted``: SRTCP with the E flag cleared; ``ssrc_limit``: a new SSRC after
    :data:`MAX_SSRCS` others; ``expired``: the SDES key lifetime is used up.
    """

    def __init__(self, reason: ErrorReason, message: str) -> None:
        self.reason: ErrorReason = reason
        super().__init__(message)


@dataclass(frozen=True)
class SrtpProfile:
    """What differs between the SDES suites we speak: the SRTP tag and libsrtp's profile."""

    name: ProfileName
    rtp_tag_len: int
    libsrtp_profile: int
    rtcp_tag_len: int = _SRTCP_TAG_LEN


PROFILES: Final[dict[str, SrtpProfile]] = {
    "AES_CM_128_HMAC_SHA1_80": SrtpProfile(
        "AES_CM_128_HMAC_SHA1_80", 10, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    ),
    "AES_CM_128_HMAC_SHA1_32": SrtpProfile(
        "AES_CM_128_HMAC_SHA1_32", 4, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
    ),
}
"""Supported profiles by their SDES suite name (RFC 4568 §6.2)."""


class _Side:
    """One libsrtp session (all our sending, or all the peer's) and the SSRCs it holds."""

    __slots__ = ("session", "ssrcs")

    def __init__(self, key: bytes, profile: SrtpProfile, window: int, outbound: bool) -> None:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=(
                pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
            ),
            srtp_profile=profile.libsrtp_profile,
        )
        policy.window_size = window
        policy.allow_repeat_tx = False  # never encrypt two packets with one keystream
        self.session = pylibsrtp.Session(policy)
        self.ssrcs: set[int] = set()


class SrtpContext:
    """SRTP/SRTCP for one master key: libsrtp, plus an SSRC cap and the key lifetime.

    Build one per direction from the SDES keys: ours protects, the peer's unprotects.
    ``lifetime`` is the key's SDES lifetime in packets (None: libsrtp's own 2^48 limit).
    """

    def __init__(
        self,
        master_key: bytes,
        master_salt: bytes,
        profile: ProfileName | str = "AES_CM_128_HMAC_SHA1_80",
        *,
        replay_window: int = REPLAY_WINDOW,
        max_ssrcs: int = MAX_SSRCS,
        lifetime: int | None = None,
    ) -> None:
        _check_master(master_key, master_salt)
        if profile not in PROFILES:
            raise ValueError(
                f"unsupported SRTP profile {profile!r}; expected one of {', '.join(PROFILES)}"
            )
        if not 64 <= replay_window < 0x8000:
            raise ValueError(f"replay window must be 64..32767 packets, got {replay_window}")
        if max_ssrcs < 1:
            raise ValueError(f"max_ssrcs must be at least 1, got {max_ssrcs}")
        if lifetime is not None and lifetime < 1:
            raise ValueError(f"key lifetime must be at least one packet, got {lifetime}")
        self.profile: SrtpProfile = PROFILES[profile]
        self.max_ssrcs = max_ssrcs
        self.lifetime = lifetime
        self.packets = 0
        """SRTP and SRTCP packets protected or authenticated under this key so far."""
        self.ssrcs_refused = 0
        """Packets refused because their SSRC would have been one over ``max_ssrcs``."""
        self._key = master_key + master_salt
        self._window = replay_window
        self._send: _Side | None = None
        self._receive: _Side | None = None

    @property
    def expired(self) -> bool:
        """True once the key lifetime is used up: nothing more is protected or accepted."""
        return self.lifetime is not None and self.packets >= self.lifetime

    @property
    def ssrcs(self) -> int:
        """SSRCs this context holds libsrtp state for, sending and receiving together."""
        return sum(len(side.ssrcs) for side in (self._send, self._receive) if side is not None)

    # ----------------------------------------------------------------- SRTP

    def protect(self, rtp: bytes) -> bytes:
        """Encrypt an RTP packet's payload and append the authentication tag."""
        _, ssrc, _ = _rtp_header(rtp, 0)
        side = self._outbound(ssrc, "SRTP")
        return self._run(side.session.protect, rtp, "SRTP protect", ssrc)

    def unprotect(self, srtp: bytes) -> bytes:
        """Authenticate, check for replay, and decrypt an SRTP packet back to RTP."""
        _, ssrc, _ = _rtp_header(srtp, self.profile.rtp_tag_len)
        side = self._inbound(ssrc, "SRTP")
        plain = self._run(side.session.unprotect, srtp, "SRTP", ssrc)
        side.ssrcs.add(ssrc)  # libsrtp made a stream for it: the packet authenticated
        return plain

    def send_roc(self, ssrc: int) -> int | None:
        """The sender's rollover counter for ``ssrc`` (None before its first packet)."""
        return _stream_roc(self._send, ssrc)

    def receive_roc(self, ssrc: int) -> int | None:
        """The receiver's rollover counter for ``ssrc`` (None before it authenticated)."""
        return _stream_roc(self._receive, ssrc)

    # ---------------------------------------------------------------- SRTCP

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """Encrypt a (compound) RTCP packet and append E flag, SRTCP index and 80-bit tag."""
        ssrc = _rtcp_header(rtcp, 0)
        side = self._outbound(ssrc, "SRTCP")
        return self._run(side.session.protect_rtcp, rtcp, "SRTCP protect", ssrc)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """Authenticate, check for replay and decrypt an SRTCP packet; E=0 is refused."""
        tag_len = self.profile.rtcp_tag_len
        ssrc = _rtcp_header(srtcp, 4 + tag_len)
        if not srtcp[-tag_len - 4] & _E_FLAG:
            raise SrtpError(
                "unencrypted",
                f"SRTCP packet for SSRC {ssrc:#010x} has the E flag cleared; "
                "this session encrypts SRTCP",
            )
        side = self._inbound(ssrc, "SRTCP")
        plain = self._run(side.session.unprotect_rtcp, srtcp, "SRTCP", ssrc)
        side.ssrcs.add(ssrc)
        return plain

    # ------------------------------------------------------------- plumbing

    def _outbound(self, ssrc: int, what: str) -> _Side:
        self._check_lifetime(what, ssrc)
        if self._send is None:
            self._send = _Side(self._key, self.profile, self._window, outbound=True)
        self._admit(self._send, ssrc, what)
        # libsrtp clones the outbound template before it looks at the packet, so the
        # stream exists from here on whether or not protection succeeds.
        self._send.ssrcs.add(ssrc)
        return self._send

    def _inbound(self, ssrc: int, what: str) -> _Side:
        self._check_lifetime(what, ssrc)
        if self._receive is None:
            self._receive = _Side(self._key, self.profile, self._window, outbound=False)
        self._admit(self._receive, ssrc, what)
        return self._receive

    def _check_lifetime(self, what: str, ssrc: int) -> None:
        if self.expired:
            raise SrtpError(
                "expired",
                f"{what} for SSRC {ssrc:#010x} refused: the master key's lifetime of "
                f"{self.lifetime} packets is used up; the call must be re-keyed",
            )

    def _admit(self, side: _Side, ssrc: int, what: str) -> None:
        if ssrc not in side.ssrcs and len(side.ssrcs) >= self.max_ssrcs:
            self.ssrcs_refused += 1
            raise SrtpError(
                "ssrc_limit",
                f"{what} for SSRC {ssrc:#010x} refused: this session already holds state "
                f"for {self.max_ssrcs} SSRCs",
            )

    def _run(self, call: Callable[[bytes], bytes], packet: bytes, what: str, ssrc: int) -> bytes:
        try:
            out = call(packet)
        except pylibsrtp.Error as exc:
            reason = _LIBSRTP_REASONS.get(str(exc), "malformed")
            if reason == "auth":
                message = f"{what} authentication failed for SSRC {ssrc:#010x}"
            elif reason == "replay":
                message = (
                    f"{what} packet for SSRC {ssrc:#010x} was already received "
                    "or is older than the replay window"
                )
            else:
                message = f"{what} failed for SSRC {ssrc:#010x}: {exc}"
            raise SrtpError(reason, message) from None
        except ValueError as exc:  # pylibsrtp's 1500-byte buffer
            raise SrtpError("malformed", f"{what} for SSRC {ssrc:#010x}: {exc}") from None
        self.packets += 1
        return bytes(out)


@functools.cache
def _get_stream_roc() -> Any:
    """libsrtp's srtp_get_stream_roc (libsrtp >= 2.3), which pylibsrtp does not wrap.

    Looked up in the library pylibsrtp already loaded, on first use, so a build without
    it costs only the ROC read-out, never packet protection.
    """
    try:
        func = ctypes.CDLL(_binding.__file__).srtp_get_stream_roc
    except (OSError, AttributeError) as exc:
        raise RuntimeError(f"this libsrtp build cannot report the ROC: {exc}") from None
    func.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
    func.restype = ctypes.c_int
    return func


def _stream_roc(side: _Side | None, ssrc: int) -> int | None:
    if side is None or ssrc not in side.ssrcs:
        return None
    handle = int(_binding.ffi.cast("uintptr_t", side.session._srtp[0]))
    roc = ctypes.c_uint32()
    if _get_stream_roc()(handle, ssrc, ctypes.byref(roc)) != 0:
        return None
    return int(roc.value)


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

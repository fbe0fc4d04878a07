"""Per-trunk SRTP policy on top of SDP offer/answer: which streams carry SDES keys, and when to 488.

Pure code. It wraps :mod:`gateway.sip.sdp` (which negotiates codecs and directions) and
:mod:`gateway.sip.sdes` (which makes and checks ``a=crypto`` lines). The outcome is a
:class:`~gateway.sip.sdes.CryptoSelection` (or None for plain RTP) that
``gateway.media.secure.srtp_pair`` turns into SRTP contexts.

The three policies, and the choices made where RFC 3264 leaves best-effort SRTP messy:

``off``
    Offers are plain ``RTP/AVP`` without keys. An incoming offer is answered on its first
    plain ``RTP/AVP`` audio stream, ignoring any ``a=crypto`` on it (RFC 4568 lets an
    answerer do that); an offer that has only ``RTP/SAVP(F)`` audio gets 488. "off" is
    what an operator picks for a trunk whose signalling is not private, where SDES keys
    would travel in the clear anyway.

``offer``
    Our offer is ``RTP/AVP`` *with* ``a=crypto`` lines. This is the common best-effort
    practice (baresip ``mediaenc=srtp``, Asterisk, FreeSWITCH): a peer that speaks SDES
    answers with a key and media is SRTP; a peer that does not simply ignores the lines,
    answers plain RTP/AVP, and the call goes ahead unencrypted. Offering ``RTP/SAVP`` and
    falling back on 488 would need a second INVITE and confuses proxies; two m= lines
    (SAVP + AVP) are answered wrongly by many phones. An answer that *does* carry crypto
    but unusable crypto is a failure, never a silent downgrade. Incoming: a usable
    ``RTP/SAVP(F)`` stream is preferred, then ``RTP/AVP`` with usable keys (SRTP), then
    plain ``RTP/AVP``; an offer that is only SAVP with no usable key gets 488.

``require``
    Our offer is ``RTP/SAVP`` with ``a=crypto``; an answer without a usable key fails the
    call. Incoming: the answered stream must carry a usable key (``RTP/SAVP(F)`` first,
    else ``RTP/AVP`` with ``a=crypto`` from a best-effort peer: its media is just as
    encrypted); anything else gets 488. What matters for privacy is that the media is
    SRTP, not the profile label.

Multi-stream offers: the chosen audio stream is answered, every other m= line is refused
with port 0 (RFC 3264 §6). Re-INVITEs: pass the call's current selection as ``current``;
when the peer repeats the same key on the same tag we answer with our same key and return
the same selection, so the running SRTP contexts (ROC, replay window) carry on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Final, Literal, get_args

from gateway.sip.errors import SdpError
from gateway.sip.sdes import (
    SECURE_PROTOS,
    SUPPORTED_SUITES,
    CryptoAttribute,
    CryptoSelection,
    SdesError,
    accept_answer,
    add_crypto,
    choose_answer,
    crypto_attributes,
    make_offer,
)
from gateway.sip.sdp import MediaDescription, MediaParams, SessionDescription, answer_offer

__all__ = [
    "SRTP_POLICIES",
    "PendingOffer",
    "SrtpPolicy",
    "check_policy",
    "secure_answer",
    "secure_from_answer",
    "secure_offer",
]

SrtpPolicy = Literal["off", "offer", "require"]
SRTP_POLICIES: Final[tuple[str, ...]] = get_args(SrtpPolicy)
"""The per-trunk ``srtp:`` values, weakest first."""


def check_policy(policy: str) -> SrtpPolicy:
    """The policy as a typed value; a ValueError names the bad value and the choices."""
    if policy not in SRTP_POLICIES:
        raise ValueError(f"srtp policy must be one of {SRTP_POLICIES}, got {policy!r}")
    return policy  # type: ignore[return-value]


@dataclass(frozen=True)
class PendingOffer:
    """What we offered, kept with the call until the answer comes (keys are secret: no repr)."""

    policy: SrtpPolicy
    index: int
    offered: tuple[CryptoAttribute, ...] = ()

    def __repr__(self) -> str:
        return f"PendingOffer(policy={self.policy!r}, index={self.index}, lines={len(self.offered)})"


def _is_audio_rtp(media: MediaDescription) -> bool:
    return media.media == "audio" and media.port != 0 and "RTP" in media.proto.upper()


def _is_secure(media: MediaDescription) -> bool:
    return media.proto.upper() in SECURE_PROTOS


def _audio_index(sdp: SessionDescription) -> int:
    for index, media in enumerate(sdp.media):
        if _is_audio_rtp(media):
            return index
    raise SdpError("no active audio stream")


def secure_offer(
    policy: str,
    offer: SessionDescription,
    *,
    suites: tuple[str, ...] = SUPPORTED_SUITES,
) -> tuple[SessionDescription, PendingOffer]:
    """Dress a plain offer (from ``sdp.build_offer``) for the trunk's policy.

    Returns a new description (the input is not changed) and the pending state that
    :func:`secure_from_answer` needs. Each call makes fresh keys.
    """
    mode = check_policy(policy)
    out = copy.deepcopy(offer)
    index = _audio_index(out)
    if mode == "off":
        return out, PendingOffer(mode, index)
    media = out.media[index]
    if mode == "require":
        media.proto = "RTP/SAVP"
    offered = make_offer(suites)
    for attr in offered:
        add_crypto(media, attr)
    return out, PendingOffer(mode, index, tuple(offered))


def secure_from_answer(pending: PendingOffer, answer: SessionDescription) -> CryptoSelection | None:
    """The SDES outcome of the peer's answer to our offer: keys, or None for plain RTP.

    Raises :class:`~gateway.sip.sdes.SdesError` (an :class:`SdpError`) when the answer
    breaks the policy or its crypto is unusable; after a 2xx the caller must then end the
    call (BYE) rather than let media flow unprotected.
    """
    if pending.index >= len(answer.media):
        raise SdesError("answer has fewer m= lines than our offer")
    media = answer.media[pending.index]
    if pending.policy == "off":
        if _is_secure(media):
            raise SdesError(f"answer switched the audio stream to {media.proto}; we offered RTP/AVP")
        return None
    answered = crypto_attributes(media, strict=True)
    if not answered:
        if pending.policy == "require":
            raise SdesError("answer has no a=crypto line; this trunk requires SRTP")
        if _is_secure(media):
            raise SdesError(f"answer is {media.proto} without an a=crypto line")
        return None  # best effort: the peer ignored our keys and answered plain RTP
    return accept_answer(pending.offered, answered)


def _usable_crypto(media: MediaDescription) -> list[CryptoAttribute]:
    return crypto_attributes(media, strict=False)


def _negotiate(
    offered: list[CryptoAttribute], current: CryptoSelection | None
) -> CryptoSelection:
    if current is not None and current.remote in offered:
        return current  # same tag, suite and key: keep both keys and the running contexts
    return choose_answer(offered)


def _choose_stream(
    mode: SrtpPolicy, offer: SessionDescription, current: CryptoSelection | None
) -> tuple[int, CryptoSelection | None]:
    """Pick the audio stream to answer and its keys, or raise SdpError (-> 488)."""
    candidates = [i for i, m in enumerate(offer.media) if _is_audio_rtp(m)]
    if not candidates:
        raise SdpError("no active audio stream")
    plain = [i for i in candidates if not _is_secure(offer.media[i])]
    if mode == "off":
        if not plain:
            raise SdesError("the offer is SRTP only (RTP/SAVP) and this trunk has srtp: off")
        return plain[0], None
    reasons: list[str] = []
    secure_first = [i for i in candidates if i not in plain] + plain
    for i in secure_first:
        media = offer.media[i]
        offered = _usable_crypto(media)
        if not offered:
            if _is_secure(media):
                reasons.append(f"m= line {i + 1} ({media.proto}) has no readable a=crypto")
            continue
        try:
            return i, _negotiate(offered, current)
        except SdesError as exc:
            reasons.append(f"m= line {i + 1}: {exc}")
    if mode == "offer" and plain:
        return plain[0], None
    detail = "; ".join(reasons) if reasons else "no stream offers SDES keys"
    if mode == "require":
        raise SdesError(f"this trunk requires SRTP: {detail}")
    raise SdesError(f"no usable SRTP stream and no plain RTP/AVP one: {detail}")


def secure_answer(
    policy: str,
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    codecs: list[str],
    session_id: int,
    session_version: int,
    ptime: int = 20,
    direction: str = "sendrecv",
    current: CryptoSelection | None = None,
) -> tuple[SessionDescription, MediaParams, CryptoSelection | None]:
    """``sdp.answer_offer`` under the trunk's SRTP policy: answer, media params and keys.

    Raises :class:`SdpError` (answer 488) when no stream fits the policy or codecs.
    ``current`` is the call's selection when answering a re-INVITE.
    """
    mode = check_policy(policy)
    index, selection = _choose_stream(mode, offer, current)
    chosen = copy.deepcopy(offer)
    for i, media in enumerate(chosen.media):
        if i != index and _is_audio_rtp(media):
            media.port = 0  # answer_offer answers the first live audio stream: make it ours
    answer, params = answer_offer(
        chosen,
        address=address,
        port=port,
        codecs=codecs,
        ptime=ptime,
        session_id=session_id,
        session_version=session_version,
        direction=direction,
    )
    if selection is not None:
        add_crypto(answer.media[index], selection.local)
    return answer, params, selection

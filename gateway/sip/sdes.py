"""SDES key exchange (RFC 4568): the SDP ``a=crypto`` lines that carry SRTP master keys.

Pure code. It parses and prints crypto attributes, makes offers with fresh keys from
:mod:`secrets`, picks the answer to an offer and checks the answer to ours. It only
touches the ``attributes`` list of a :class:`~gateway.sip.sdp.MediaDescription`, where
the SDP parser keeps ``a=crypto`` as a ``("crypto", value)`` pair.

With SDES each side sends with the key it put in its own SDP, so a negotiation yields a
:class:`CryptoSelection` with two keys: ``local`` protects what we send and ``remote``
unprotects what we receive. Build the SRTP contexts from them, e.g.
``SrtpContext(sel.local.master_key, sel.local.master_salt, sel.suite)``.

Keys travel in the clear inside SDP, so SDES is only as private as the signalling: use
it over SIP/TLS.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.sip.errors import SdpError
from gateway.sip.sdp import MediaDescription

__all__ = [
    "SECURE_PROTOS",
    "SUPPORTED_SUITES",
    "CryptoAttribute",
    "CryptoSelection",
    "KeyParam",
    "SdesError",
    "accept_answer",
    "add_crypto",
    "choose_answer",
    "crypto_attributes",
    "make_offer",
    "new_crypto",
]

SUPPORTED_SUITES: Final[tuple[str, ...]] = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
)
"""Suites we can run, in the order we offer them (strongest tag first)."""

SECURE_PROTOS: Final[tuple[str, ...]] = ("RTP/SAVP", "RTP/SAVPF")
"""m= line transports that carry SRTP, and so are where a=crypto belongs."""

KEY_SALT_LEN: Final = 30  # 16-byte master key || 14-byte master salt for both suites
_MAX_LIFETIME: Final = 1 << 48  # RFC 4568 §6.2: SRTP packet limit of the AES-CM suites
_MAX_TAG: Final = 999_999_999

_TAG_RE = re.compile(r"[0-9]{1,9}")
_SUITE_RE = re.compile(r"[A-Za-z0-9_]+")
_METHOD_RE = re.compile(r"[A-Za-z0-9_]+")
_KEY_INFO_RE = re.compile(r"[\x21-\x3a\x3c-\x7e]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME_RE = re.compile(r"(2\^)?([0-9]+)")
_MKI_RE = re.compile(r"([0-9]+):([0-9]{1,3})")
_VCHAR_RE = re.compile(r"[\x21-\x7e]+")

# Session parameters we understand and can honour; anything else makes a line unusable
# unless it starts with "-", which RFC 4568 reserves for optional extensions that a
# receiver may ignore.
_IGNORABLE_PARAMS: Final = ("WSH=",)
_KNOWN_UNSUPPORTED: Final = (
    "KDR=",
    "UNENCRYPTED_SRTP",
    "UNENCRYPTED_SRTCP",
    "UNAUTHENTICATED_SRTP",
    "FEC_ORDER=",
    "FEC_KEY=",
)


class SdesError(SdpError):
    """An a=crypto line or SDES negotiation we cannot accept; the caller answers 488."""


@dataclass(frozen=True)
class KeyParam:
    """One ``inline:`` key: master key || salt, and the optional lifetime and MKI.

    ``lifetime`` is in packets; ``mki`` is (value, length in bytes).
    """

    key_salt: bytes
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def __str__(self) -> str:
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            n = self.lifetime.bit_length() - 1
            is_power = self.lifetime > 0 and self.lifetime == 1 << n
            text += f"|2^{n}" if is_power else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text

    @classmethod
    def parse(cls, text: str) -> KeyParam:
        """Parse ``inline:<base64>[|lifetime][|MKI:len]``, naming the part that is wrong."""
        method, sep, info = text.partition(":")
        if not sep or not _METHOD_RE.fullmatch(method) or not _KEY_INFO_RE.fullmatch(info):
            raise SdesError(f"bad crypto key parameter {text[:60]!r}: expected 'inline:<key>'")
        if method != "inline":
            raise SdesError(f"unsupported crypto key method {method!r}: only 'inline' is known")
        parts = info.split("|")
        if len(parts) > 3:
            raise SdesError(f"bad crypto key {info[:60]!r}: too many '|' fields")
        if not _BASE64_RE.fullmatch(parts[0]):
            raise SdesError(f"crypto key {parts[0][:60]!r} is not base64")
        try:
            key_salt = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError):
            raise SdesError(f"crypto key {parts[0][:60]!r} is not valid base64") from None
        lifetime: int | None = None
        mki: tuple[int, int] | None = None
        for extra in parts[1:]:
            if ":" in extra:
                if mki is not None:
                    raise SdesError(f"bad crypto key {info[:60]!r}: two MKI fields")
                mki = _parse_mki(extra)
            elif lifetime is None and mki is None:
                lifetime = _parse_lifetime(extra)
            else:
                raise SdesError(f"bad crypto key {info[:60]!r}: lifetime must come before MKI")
        return cls(key_salt, lifetime, mki)


def _parse_lifetime(text: str) -> int:
    match = _LIFETIME_RE.fullmatch(text)
    if match is None:
        raise SdesError(f"bad crypto key lifetime {text[:20]!r}: expected '2^N' or a number")
    value = int(match.group(2))
    if match.group(1):
        if value > 64:
            raise SdesError(f"crypto key lifetime 2^{value} is out of range")
        value = 1 << value
    if value == 0:
        raise SdesError("crypto key lifetime must be at least one packet")
    return value


def _parse_mki(text: str) -> tuple[int, int]:
    match = _MKI_RE.fullmatch(text)
    if match is None:
        raise SdesError(f"bad crypto MKI {text[:20]!r}: expected '<value>:<length>'")
    value, length = int(match.group(1)), int(match.group(2))
    if not 1 <= length <= 128:
        raise SdesError(f"crypto MKI length {length} must be 1..128 bytes")
    if value >= 1 << (8 * length):
        raise SdesError(f"crypto MKI value {value} does not fit in {length} bytes")
    return value, length


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line: tag, suite, key(s) and session parameters (RFC 4568 §4)."""

    tag: int
    suite: str
    keys: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value after ``a=crypto:``; syntax errors raise :class:`SdesError`.

        An unknown suite or session parameter is not a syntax error: it parses, and
        :meth:`problem` says why we cannot use it.
        """
        fields = value.split()
        if len(fields) < 3:
            raise SdesError(f"bad a=crypto {value[:80]!r}: expected '<tag> <suite> inline:<key>'")
        tag_text, suite, key_text, *params = fields
        if not _TAG_RE.fullmatch(tag_text):
            raise SdesError(f"bad a=crypto tag {tag_text[:20]!r}: expected 1-9 digits")
        if not _SUITE_RE.fullmatch(suite):
            raise SdesError(f"bad a=crypto suite {suite[:40]!r}")
        for param in params:
            if not _VCHAR_RE.fullmatch(param):
                raise SdesError(f"bad a=crypto session parameter {param[:40]!r}")
        keys = tuple(KeyParam.parse(k) for k in key_text.split(";"))
        return cls(int(tag_text), suite, keys, tuple(params))

    def __str__(self) -> str:
        """The attribute value as it goes after ``a=crypto:``."""
        keys = ";".join(str(k) for k in self.keys)
        return " ".join([str(self.tag), self.suite, keys, *self.session_params])

    def line(self) -> str:
        """The whole SDP line without CRLF, for logs and hand-built SDP."""
        return f"a=crypto:{self}"

    def problem(self) -> str | None:
        """Why we cannot use this line for SRTP, or None if we can."""
        if self.suite not in SUPPORTED_SUITES:
            return (
                f"crypto suite {self.suite} (tag {self.tag}) is not supported; "
                f"we support {', '.join(SUPPORTED_SUITES)}"
            )
        if len(self.keys) != 1:
            return f"tag {self.tag} carries {len(self.keys)} keys; we support exactly one"
        key = self.keys[0]
        if len(key.key_salt) != KEY_SALT_LEN:
            return (
                f"tag {self.tag} key is {len(key.key_salt)} bytes; "
                f"{self.suite} needs {KEY_SALT_LEN} (16-byte key + 14-byte salt)"
            )
        if key.mki is not None:
            return f"tag {self.tag} uses an MKI, which we do not support"
        if key.lifetime is not None and key.lifetime > _MAX_LIFETIME:
            return f"tag {self.tag} key lifetime {key.lifetime} exceeds the suite's 2^48"
        for param in self.session_params:
            if param.startswith("-") or param.startswith(_IGNORABLE_PARAMS):
                continue
            if param.startswith(_KNOWN_UNSUPPORTED):
                return f"tag {self.tag} asks for {param}, which we do not support"
            return f"tag {self.tag} has unknown session parameter {param!r}"
        return None

    @property
    def master_key(self) -> bytes:
        """The 16-byte SRTP master key; raises :class:`SdesError` if the line is unusable."""
        return self._key_salt()[:16]

    @property
    def master_salt(self) -> bytes:
        """The 14-byte SRTP master salt; raises :class:`SdesError` if the line is unusable."""
        return self._key_salt()[16:]

    def _key_salt(self) -> bytes:
        problem = self.problem()
        if problem is not None:
            raise SdesError(problem)
        return self.keys[0].key_salt


@dataclass(frozen=True)
class CryptoSelection:
    """The outcome of SDES negotiation: our key for sending and the peer's for receiving."""

    local: CryptoAttribute
    remote: CryptoAttribute

    @property
    def suite(self) -> str:
        """The agreed suite, which is also the SRTP profile name."""
        return self.local.suite

    @property
    def tag(self) -> int:
        """The tag of the offered line that was chosen."""
        return self.local.tag


def crypto_attributes(media: MediaDescription, *, strict: bool = True) -> list[CryptoAttribute]:
    """The a=crypto lines of one m= section, in SDP order.

    ``strict`` raises :class:`SdesError` on the first malformed line; otherwise malformed
    lines are skipped, as an answerer may do (RFC 4568 lets it ignore lines it
    cannot use).
    """
    out: list[CryptoAttribute] = []
    for name, value in media.attributes:
        if name != "crypto":
            continue
        try:
            out.append(CryptoAttribute.parse(value or ""))
        except SdesError:
            if strict:
                raise
    return out


def add_crypto(media: MediaDescription, attr: CryptoAttribute) -> None:
    """Put ``attr`` on the m= section, replacing any line with the same tag (re-offers)."""
    kept: list[tuple[str, str | None]] = []
    replaced = False
    for name, value in media.attributes:
        if name == "crypto" and value is not None and value.split(" ", 1)[0] == str(attr.tag):
            if not replaced:
                kept.append(("crypto", str(attr)))
                replaced = True
            continue
        kept.append((name, value))
    if not replaced:
        kept.append(("crypto", str(attr)))
    media.attributes[:] = kept


def new_crypto(tag: int = 1, suite: str = SUPPORTED_SUITES[0]) -> CryptoAttribute:
    """A crypto line with a fresh random master key and salt for one of our suites."""
    if suite not in SUPPORTED_SUITES:
        raise SdesError(
            f"cannot make a key for crypto suite {suite}; we support {', '.join(SUPPORTED_SUITES)}"
        )
    if not 1 <= tag <= _MAX_TAG:
        raise SdesError(f"crypto tag must be 1..{_MAX_TAG}, got {tag}")
    return CryptoAttribute(tag, suite, (KeyParam(secrets.token_bytes(KEY_SALT_LEN)),))


def make_offer(suites: Iterable[str] = SUPPORTED_SUITES) -> list[CryptoAttribute]:
    """Offer lines, tags 1, 2, ... in preference order, each with its own fresh key."""
    offer = [new_crypto(tag, suite) for tag, suite in enumerate(suites, start=1)]
    if not offer:
        raise SdesError("an SDES offer needs at least one crypto suite")
    return offer


def choose_answer(offered: Sequence[CryptoAttribute]) -> CryptoSelection:
    """Answer an offer: the first line we can use, same tag and suite, our own fresh key.

    Raises :class:`SdesError` (answer 488) listing why each line was refused.
    """
    if not offered:
        raise SdesError("the offer has no a=crypto line for an SRTP stream")
    reasons: list[str] = []
    seen: set[int] = set()
    for attr in offered:
        if attr.tag in seen:
            reasons.append(f"tag {attr.tag} appears twice")
            continue
        seen.add(attr.tag)
        problem = attr.problem()
        if problem is None:
            return CryptoSelection(local=new_crypto(attr.tag, attr.suite), remote=attr)
        reasons.append(problem)
    raise SdesError("no acceptable a=crypto line: " + "; ".join(reasons))


def accept_answer(
    offered: Sequence[CryptoAttribute], answered: Sequence[CryptoAttribute]
) -> CryptoSelection:
    """Check the peer's answer against our offer and pair its key with the one it chose.

    The answer must hold exactly one crypto line whose tag and suite match one we offered
    (RFC 4568 offer/answer rules); anything else raises :class:`SdesError`.
    """
    if len(answered) != 1:
        raise SdesError(f"an SDES answer must have exactly one a=crypto line, got {len(answered)}")
    answer = answered[0]
    ours = next((attr for attr in offered if attr.tag == answer.tag), None)
    if ours is None:
        offered_tags = ", ".join(str(attr.tag) for attr in offered) or "none"
        raise SdesError(
            f"answer chose crypto tag {answer.tag}, which we did not offer (offered {offered_tags})"
        )
    if answer.suite != ours.suite:
        raise SdesError(
            f"answer changed crypto tag {answer.tag} from suite {ours.suite} to {answer.suite}"
        )
    problem = answer.problem()
    if problem is not None:
        raise SdesError(f"answer is unusable: {problem}")
    return CryptoSelection(local=ours, remote=answer)

"""The two SRTP contexts one call's media runs on, built from an SDES negotiation.

With SDES (RFC 4568) each side sends with the key it put in its own SDP, so a call needs
one :class:`~gateway.media.srtp.SrtpContext` from our key to protect what we send and one
from the peer's key to unprotect what we receive. :class:`SrtpPair` keeps them together
with the keys they came from, so a re-INVITE that repeats the same keys keeps the running
contexts (their rollover counters and replay windows) instead of starting over: a fresh
context on an old key would reuse keystream, which SRTP must never do.

Each context also carries its key's SDES lifetime (RFC 4568 §6.1), so a key that has
protected or authenticated as many packets as its a=crypto line allows stops working.

Pure code, like the rest of the media path. The SRTP implementation (and the crypto library
under it) is imported by the first pair built, not with this module: a gateway whose calls
never negotiate SRTP never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gateway.sip.sdes import CryptoAttribute, CryptoSelection

if TYPE_CHECKING:
    from gateway.media.srtp import SrtpContext, SrtpError

__all__ = ["DROP_REASONS", "SrtpPair", "SrtpError", "srtp_pair"]

DROP_REASONS: Final[tuple[str, ...]] = (
    "auth",
    "replay",
    "short",
    "malformed",
    "exhausted",
    "unencrypted",
    "ssrc_limit",
    "expired",
)
"""Why an SRTP/SRTCP packet was dropped, as counted in MediaStream.stats().

The reasons :class:`~gateway.media.srtp.SrtpError` carries, spelled out here so that
counting them does not load the SRTP implementation."""

_KEY_SALT_LEN: Final = 30


@dataclass(frozen=True, eq=False)
class SrtpPair:
    """Our sending context and the peer's receiving context for one call's audio.

    ``local_key`` and ``remote_key`` are the 30-byte master key || salt of each side;
    they identify the pair (see :meth:`same_keys`) and are kept out of repr(). The
    lifetimes are each key's SDES lifetime in packets (None: none was given).
    """

    suite: str
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)
    local_lifetime: int | None = None
    remote_lifetime: int | None = None
    send: SrtpContext = field(init=False, repr=False)
    receive: SrtpContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from gateway.media.srtp import PROFILES, SrtpContext

        if self.suite not in PROFILES:
            raise ValueError(
                f"unsupported SRTP suite {self.suite!r}; expected one of {', '.join(PROFILES)}"
            )
        for what, key in (("local", self.local_key), ("remote", self.remote_key)):
            if len(key) != _KEY_SALT_LEN:
                raise ValueError(
                    f"{what} SRTP key must be {_KEY_SALT_LEN} bytes (16 key + 14 salt), "
                    f"got {len(key)}"
                )
        if self.local_key == self.remote_key:
            # Both directions would share one keystream per SSRC/index: refuse outright.
            raise ValueError("local and remote SRTP keys must differ")
        send = SrtpContext(
            self.local_key[:16], self.local_key[16:], self.suite, lifetime=self.local_lifetime
        )
        receive = SrtpContext(
            self.remote_key[:16], self.remote_key[16:], self.suite, lifetime=self.remote_lifetime
        )
        object.__setattr__(self, "send", send)
        object.__setattr__(self, "receive", receive)

    @classmethod
    def from_selection(cls, selection: CryptoSelection) -> SrtpPair:
        """Contexts for a finished SDES negotiation: our line's key sends, theirs receives."""
        local = selection.local.master_key + selection.local.master_salt
        remote = selection.remote.master_key + selection.remote.master_salt
        return cls(
            selection.suite,
            local,
            remote,
            local_lifetime=_lifetime(selection.local),
            remote_lifetime=_lifetime(selection.remote),
        )

    @property
    def expired(self) -> bool:
        """True when either key's lifetime is used up: the call needs new keys."""
        return self.send.expired or self.receive.expired

    def same_keys(self, other: SrtpPair | None) -> bool:
        """True when ``other`` runs on exactly our suite and keys (a re-INVITE kept them)."""
        return (
            other is not None
            and other.suite == self.suite
            and other.local_key == self.local_key
            and other.remote_key == self.remote_key
        )


def _lifetime(attr: CryptoAttribute) -> int | None:
    # master_key above has already checked the line carries exactly one usable key.
    return attr.keys[0].lifetime


def srtp_pair(selection: CryptoSelection | None) -> SrtpPair | None:
    """The pair for a negotiation outcome, or None for plain RTP; saves the app an `if`."""
    return None if selection is None else SrtpPair.from_selection(selection)


def __getattr__(name: str) -> Any:
    """``SrtpError`` on demand: importing it would load the SRTP implementation."""
    if name == "SrtpError":
        from gateway.media.srtp import SrtpError

        return SrtpError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

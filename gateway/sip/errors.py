"""Exceptions raised by the SIP core.

Every failure to understand bytes from the network is a :class:`SipParseError`, so the
transport adapter needs exactly one ``except`` to answer 400 (or drop) and count it.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every SIP-layer error, so callers can catch the whole family at once."""


class SipParseError(SipError):
    """Input that is not valid SIP; ``reason`` is short enough to use as a 400 reason phrase."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason if detail is None else f"{reason}: {detail}")


class SdpError(SipError):
    """An offer or answer we cannot accept; the caller answers 488 Not Acceptable Here."""

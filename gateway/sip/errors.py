"""Exceptions raised by the SIP core.

Every failure to understand bytes from the network is a :class:`SipParseError`, so the
transport adapter needs exactly one ``except`` to answer 400 (or drop) and count it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.sip.message import Request, Response


class SipError(Exception):
    """Base of every SIP-layer error, so callers can catch the whole family at once."""


class SipParseError(SipError):
    """Input that is not valid SIP; ``reason`` is short enough to use as a 400 reason phrase.

    ``status`` is the response code to send when the input was a request (400, or 416 / 505
    for an unsupported URI scheme or SIP version); ``message`` is the partially parsed
    message if the headers could be read, else None.
    """

    def __init__(self, reason: str, detail: str | None = None, *, status: int = 400) -> None:
        self.reason = reason
        self.detail = detail
        self.status = status
        # The request or response as far as it could be read, when the start line and the
        # headers were readable: lets the caller build its 400/505 from Via, From, To...
        self.message: Request | Response | None = None
        super().__init__(reason if detail is None else f"{reason}: {detail}")


class SdpError(SipError):
    """An offer or answer we cannot accept; the caller answers 488 Not Acceptable Here."""

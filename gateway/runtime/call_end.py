"""Why a call ended, in words an admin reads in the log (and a call record will store).

Every call leg ends through `SipCalls.end_call` with one `CallEnd`; this module only names
the causes. The user agent reports ends of SIP dialogs as ``CallEnded(reason, status)``;
`from_ua` turns those into the same vocabulary, so a far-end BYE reads "remote BYE", a
caller who gave up reads "CANCEL 487" and a busy far end reads "rejected 486 Busy Here",
never "remote hangup (None)".
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sip.message import default_reason


@dataclass(frozen=True)
class CallEnd:
    """A cause: `kind` is a stable word for records, `text` what the log says."""

    kind: str
    text: str
    status: int | None = None

    def __str__(self) -> str:
        return self.text


def local_hangup() -> CallEnd:
    """The handset on our line hung up an answered call (we sent BYE)."""
    return CallEnd("local-hangup", "local hangup")


def local_cancel() -> CallEnd:
    """Our line hung up before the far end answered (we sent CANCEL)."""
    return CallEnd("local-cancel", "local cancel")


def peer_hangup(line: str) -> CallEnd:
    """The other line of a line-to-line call hung up (or gave up ringing us)."""
    return CallEnd("remote-hangup", f"remote hangup (line {line})")


def rejected(status: int, by: str = "") -> CallEnd:
    """A final failure answer, e.g. "rejected 486 Busy Here" (by: who sent it)."""
    suffix = f" ({by})" if by else ""
    return CallEnd("rejected", f"rejected {status} {default_reason(status)}{suffix}", status)


def no_address(trunk: str, host: str) -> CallEnd:
    """Not sent: the trunk's proxy name has no address (DNS down or no such name); 503."""
    return CallEnd("no-address",
                   f"not sent 503 Service Unavailable (trunk {trunk}: no address for {host})",
                   503)


def shutdown() -> CallEnd:
    """The daemon is stopping and hangs up everything."""
    return CallEnd("shutdown", "gateway stopping")


def media_refused(status: int = 488) -> CallEnd:
    """The far end answered with media our policy refuses (e.g. plain RTP, SRTP required)."""
    return CallEnd("media-refused", f"media refused {status}", status)


def media_timeout() -> CallEnd:
    """No RTP from the far end for too long."""
    return CallEnd("media-timeout", "media timeout")


def from_ua(reason: str, status: int | None, direction: str) -> CallEnd:
    """The cause for a user agent ``CallEnded`` on a call of `direction` ("in" or "out")."""
    if reason == "remote hangup":
        return CallEnd("remote-bye", "remote BYE")
    if reason == "cancelled" and direction == "in":
        return CallEnd("remote-cancel", "CANCEL 487", 487)
    if reason == "timeout" or status == 408:
        return CallEnd("timeout", "timeout 408", 408)
    if reason == "local hangup":
        return CallEnd("local-hangup", "local hangup")
    if status is not None and status >= 300 and reason in (
            "busy", "declined", "rejected", "redirect failed", "cancelled"):
        return rejected(status)
    words = reason or "ended"
    if status is not None:
        return CallEnd(words.replace(" ", "-"), f"{words} {status}", status)
    return CallEnd(words.replace(" ", "-"), words)

"""Session timer arithmetic (RFC 4028), pure functions the user agent uses.

A peer that asks for session timers wants proof every interval that the call is alive:
the refresher re-INVITEs at half the interval, the other side hangs up if no refresh
came before expiry minus min(32 s, interval/3) (RFC 4028 section 10).
"""

from __future__ import annotations

MIN_SE = 90
"""Our minimum Session-Expires (RFC 4028's floor); smaller requests get 422."""

DEFAULT_SE = 1800
"""Interval we offer on our own INVITEs (RFC 4028 recommends 1800 s)."""


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """(interval, refresher "uac"/"uas"/None) from a Session-Expires value, None if unusable."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(";")]
    if not parts[0].isdigit() or len(parts[0]) > 9:
        return None
    refresher: str | None = None
    for param in parts[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return int(parts[0]), refresher


def parse_min_se(value: str | None) -> int | None:
    """The delta-seconds of a Min-SE header, None if absent or unusable."""
    if not value:
        return None
    head = value.split(";")[0].strip()
    return int(head) if head.isdigit() and len(head) <= 9 else None


def supports_timer(supported: list[str]) -> bool:
    """True when a Supported/Require header list names the `timer` option tag."""
    return any(tag.strip().lower() == "timer" for item in supported for tag in item.split(","))


def refresh_delay(interval: int) -> float:
    """When the refresher sends its refresh: half the interval."""
    return interval / 2.0


def expiry_delay(interval: int) -> float:
    """When the non-refresher gives up: interval minus min(32 s, interval/3)."""
    return interval - min(32.0, interval / 3.0)


def format_session_expires(interval: int, refresher: str) -> str:
    """The header value we send, e.g. '1800;refresher=uac'."""
    return f"{interval};refresher={refresher}"

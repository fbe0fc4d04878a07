"""DTMF carried in SIP INFO bodies (application/dtmf-relay and application/dtmf).

Some trunks and phones send digits as INFO instead of RFC 4733 events; the agent turns
them into `DtmfInfo` events so the runtime treats both the same way.
"""

from __future__ import annotations

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
ACCEPTED = f"{DTMF_RELAY}, {DTMF}"
_DIGITS = "0123456789*#ABCD"
_EVENT_DIGITS = {10: "*", 11: "#", 12: "A", 13: "B", 14: "C", 15: "D"}


class UnsupportedInfo(ValueError):
    """The INFO body is not a DTMF format we know: answer 415 with Accept."""


def _digit(text: str) -> str | None:
    text = text.strip().upper()
    if len(text) == 1 and text in _DIGITS:
        return text
    if text.isdigit() and len(text) <= 2:
        value = int(text)
        if value <= 9:
            return str(value)
        return _EVENT_DIGITS.get(value)
    return None


def dtmf_relay_body(digit: str, duration_ms: int) -> bytes:
    """An application/dtmf-relay body for one key press of `duration_ms`."""
    text = digit.upper()
    if len(text) != 1 or text not in _DIGITS:
        raise ValueError(f"DTMF digit must be one of {_DIGITS!r}, got {digit!r}")
    if not 0 < duration_ms <= 999999:
        raise ValueError(f"DTMF duration must be 1..999999 ms, got {duration_ms}")
    return f"Signal={text}\r\nDuration={duration_ms}\r\n".encode()


def parse_dtmf_info(content_type: str, body: bytes) -> tuple[str, int | None] | None:
    """(digit, duration in ms or None) from an INFO body.

    Returns None for a DTMF body without a usable digit (answered 200 and ignored) and
    raises `UnsupportedInfo` for any other content type.
    """
    ctype = content_type.split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if ctype == DTMF_RELAY:
        digit: str | None = None
        duration: int | None = None
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if not sep:
                continue
            key = name.strip().lower()
            if key == "signal":
                digit = _digit(value)
            elif key == "duration" and value.strip().isdigit() and len(value.strip()) <= 6:
                duration = int(value.strip())
        return (digit, duration) if digit is not None else None
    if ctype == DTMF:
        digit = _digit(text)
        return (digit, None) if digit is not None else None
    raise UnsupportedInfo(ctype)

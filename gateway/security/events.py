"""The one-line security event that fail2ban, journald queries and admins read.

Every auth failure, request from an unknown source and rate-limit hit is written as::

    SECURITY event=auth-failure src=203.0.113.7:5060 method=REGISTER user="100" reason="bad password"

The format is a contract with ``systemd/fail2ban/filter.d/branchline.conf``:

- ``SECURITY event=<kind> src=<ip>:<port>`` always comes first, in that order; IPv6 sources
  are written ``[addr]:port`` and IPv4-mapped IPv6 addresses as plain IPv4.
- Further fields follow in the order the caller gave them, as ``key=value``.
- String values are always double-quoted (``method`` is bare when it is a SIP token). Inside
  quotes ``\\`` and ``"`` are backslash-escaped and every non-printable character (CR, LF,
  other controls, Unicode line separators and bidi controls) is written as ``\\xNN`` or
  ``\\uNNNN``. So a hostile user name can neither end the line nor leave the quotes, and the
  only unquoted ``SECURITY event=`` on a line is the real one at its start.
- Keys that would carry secrets (passwords, digest responses, nonces) are refused.

`format_event` is pure; `log_event` is the thin helper that hands the line to `logging`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Final

#: Event kinds that fail2ban counts towards a ban.
AUTH_FAILURE: Final = "auth-failure"
UNKNOWN_SOURCE: Final = "unknown-source"
RATE_LIMITED: Final = "rate-limited"
#: A trusted trunk address over its own (higher) rate limit; logged but not banned on,
#: because a UDP source address can be spoofed and banning it would cut off the provider.
TRUNK_RATE_LIMITED: Final = "trunk-rate-limited"
#: A call refused by route permissions (toll-fraud defence); logged but not banned on,
#: because a local phone dialling a premium number is not an attack on the box.
CALL_DENIED: Final = "call-denied"

#: Kinds the fail2ban filter matches (keep in step with filter.d/branchline.conf).
BANNABLE_KINDS: Final[frozenset[str]] = frozenset({AUTH_FAILURE, UNKNOWN_SOURCE, RATE_LIMITED})

#: The marker every security line starts with.
MARKER: Final = "SECURITY"
#: Logger the runtime writes security events to; handlers may route it separately.
LOGGER_NAME: Final = "branchline.security"

#: Longest value written, in characters before escaping; longer values are cut and end "...".
MAX_VALUE_CHARS: Final = 128

#: Field names refused because their values are secrets or replayable credentials.
SECRET_KEYS: Final[frozenset[str]] = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "response",
        "digest",
        "authorization",
        "proxy_authorization",
        "www_authenticate",
        "ha1",
        "nonce",
        "cnonce",
        "pin",
        "puk",
        "token",
        "passphrase",
    }
)
_RESERVED_KEYS: Final[frozenset[str]] = frozenset({"event", "src"})

_KIND_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,31}")
_KEY_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: RFC 3261 ``token`` characters, used to decide whether ``method`` can go unquoted.
_SIP_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9.!%*_+`'~-]{1,32}")

FieldValue = str | int | float | bool | None


def _escape(value: str) -> str:
    """Backslash-escape quotes and backslashes, and make every non-printable visible."""
    if len(value) > MAX_VALUE_CHARS:
        value = value[:MAX_VALUE_CHARS] + "..."
    out: list[str] = []
    for ch in value:
        if ch == "\\" or ch == '"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def _render(key: str, value: FieldValue) -> str:
    """One ``key=value`` pair: numbers and booleans bare, strings quoted and escaped."""
    if value is None:
        return f'{key}=""'
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, int):
        return f"{key}={value}"
    if isinstance(value, float):
        return f"{key}={value:.3f}" if value == value else f'{key}="nan"'
    if key == "method" and _SIP_TOKEN_RE.fullmatch(value):
        return f"{key}={value}"
    return f'{key}="{_escape(value)}"'


def format_source(src_ip: str, src_port: int) -> str:
    """``ip:port`` as the event writes it, so other log lines can name a source the same way."""
    try:
        addr = ipaddress.ip_address(src_ip)
    except ValueError:
        raise ValueError(f"src_ip: expected an IPv4 or IPv6 address, got {src_ip!r}") from None
    if isinstance(src_port, bool) or not isinstance(src_port, int) or not 0 <= src_port <= 65535:
        raise ValueError(f"src_port: expected an integer 0..65535, got {src_port!r}")
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"{addr.ipv4_mapped}:{src_port}"
        return f"[{addr.compressed}]:{src_port}"
    return f"{addr}:{src_port}"


def format_event(kind: str, src_ip: str, src_port: int, **fields: FieldValue) -> str:
    """The security event line; raises ValueError for a bad kind, source or secret field.

    The source must be a literal IP address (never a host name from a header) because it is
    what fail2ban bans.
    """
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise ValueError(f"kind: expected lower-case letters, digits and '-', got {kind!r}")
    parts = [MARKER, f"event={kind}", f"src={format_source(src_ip, src_port)}"]
    for key, value in fields.items():
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"field {key!r}: expected lower-case letters, digits and '_'")
        if key in _RESERVED_KEYS:
            raise ValueError(f"field {key!r}: reserved (set by kind/src_ip/src_port)")
        if key in SECRET_KEYS:
            raise ValueError(f"field {key!r}: secrets must never be written to the log")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(
                f"field {key!r}: expected str, int, float, bool or None, got {type(value).__name__}"
            )
        parts.append(_render(key, value))
    return " ".join(parts)


def security_logger() -> logging.Logger:
    """The logger security events go to (``branchline.security``)."""
    return logging.getLogger(LOGGER_NAME)


def log_event(
    kind: str,
    src_ip: str,
    src_port: int,
    *,
    logger: logging.Logger | None = None,
    level: int = logging.WARNING,
    **fields: FieldValue,
) -> str:
    """Format and log one security event; returns the line so callers can count or test it.

    The line is passed as an argument, never as the format string, so a ``%`` in a user
    name cannot disturb logging. ``logger`` and ``level`` are this helper's own keywords,
    so they cannot be used as field names here.
    """
    line = format_event(kind, src_ip, src_port, **fields)
    # The journal's EVENT field carries the kind (gateway.runtime.logs.fields names it so).
    (logger or security_logger()).log(level, "%s", line, extra={"EVENT": kind})
    return line

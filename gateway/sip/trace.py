"""What a SIP trace shows of one message: its text with the secrets taken out, and a filter.

The trace exists so an admin can read the signalling, so it must be safe to paste into a
ticket. Digest credentials (Authorization, Proxy-Authorization), a digest ``response=``
wherever it appears, passwords in SIP URIs and SDP keying (``a=crypto`` inline keys,
``k=`` lines, ``a=key-mgmt``) are replaced by ``<redacted>``. Redaction works line by line
on whatever bytes came in, so a malformed message is made safe too; nothing here parses
for the protocol's sake.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from gateway.sip.errors import SipParseError
from gateway.sip.message import parse_message

REDACTED = "<redacted>"

#: Headers whose whole value is a credential (RFC 3261 20.7, 20.28).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})

_SECRET_HEADER = re.compile(r"^[ \t]*(authorization|proxy-authorization)[ \t]*:", re.I)
_SCHEME = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9._-]*)")
# Parameters of a credential that are not secret and tell the admin which account it is.
_KEPT_PARAM = re.compile(r'\b(username|realm)[ \t]*=[ \t]*("[^"\r\n]{0,128}"|[^\s,"]{1,128})',
                         re.I)
_DIGEST_RESPONSE = re.compile(r'\b(response[ \t]*=[ \t]*)("[^"\r\n]*"?|[^\s,;"]+)', re.I)
_URI_PASSWORD = re.compile(r"\b(sips?:[^:@\s;>,<\"]+:)[^@\s;>,<\"]+@", re.I)
_CRYPTO_KEY = re.compile(r"(inline:)[^|\s;]+", re.I)
_SDP_KEY_LINE = re.compile(r"^(k=|a=key-mgmt:)", re.I)
_CALL_ID = re.compile(r"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.I | re.M)


def redact(data: bytes) -> str:
    """The message as text, every secret replaced by ``<redacted>``; line ends are kept."""
    text = data.decode("utf-8", errors="replace")
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if _SECRET_HEADER.match(line):
            value = line
            while i < len(lines) and lines[i][:1] in (" ", "\t"):  # folded continuation
                value += " " + lines[i].strip()
                i += 1
            cr = "\r" if line.endswith("\r") else ""
            out.append(_redact_credentials(value.rstrip("\r")) + cr)
            continue
        out.append(_redact_line(line))
    return "\n".join(out)


def _redact_credentials(line: str) -> str:
    name, _, value = line.partition(":")
    scheme = _SCHEME.match(value)
    kept = [f"{m.group(1)}={m.group(2)}" for m in _KEPT_PARAM.finditer(value)]
    parts = ([scheme.group(1)] if scheme else []) + [", ".join([*kept, REDACTED])]
    return f"{name.strip()}: " + " ".join(parts)


def _redact_line(line: str) -> str:
    if _SDP_KEY_LINE.match(line):
        cr = "\r" if line.endswith("\r") else ""
        head = _SDP_KEY_LINE.match(line)
        assert head is not None
        return head.group(1) + REDACTED + cr
    if "inline:" in line.lower():
        line = _CRYPTO_KEY.sub(lambda m: m.group(1) + REDACTED, line)
    if "response" in line.lower():
        line = _DIGEST_RESPONSE.sub(lambda m: m.group(1) + REDACTED, line)
    if "@" in line:
        line = _URI_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", line)
    return line


def is_keepalive(data: bytes) -> bool:
    """A CRLF keep-alive (RFC 5626 3.5.1) rather than a message."""
    return not data.strip(b"\r\n")


@dataclass(frozen=True)
class MessageInfo:
    """What the trace needs to know of a message: its Call-ID and whether it parses."""

    call_id: str | None
    first_line: str
    malformed: str | None = None


def describe(data: bytes) -> MessageInfo:
    """Call-ID and first line of `data`; `malformed` says why the parser refused it."""
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
    first_line = first[:200].decode("utf-8", errors="replace")
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        call_id = None
        if exc.message is not None:
            call_id = exc.message.headers.get("Call-ID")
        if call_id is None:
            found = _CALL_ID.search(data[:16384].decode("utf-8", errors="replace"))
            call_id = found.group(1) if found else None
        return MessageInfo(call_id, first_line, str(exc) or exc.reason)
    return MessageInfo(msg.headers.get("Call-ID"), first_line)


def _norm_host(host: str) -> str:
    host = host.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def parse_address(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` for the address filter.

    Raises ValueError naming the input when it is not one of those.
    """
    text = text.strip()
    if not text:
        raise ValueError("address filter is empty: expected host or host:port")
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: expected [IPv6] or [IPv6]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a bare IPv6 address or a host
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in {text!r}: expected 1-65535")
        port = int(port_text)
    if not host:
        raise ValueError(f"bad address {text!r}: expected host or host:port")
    return _norm_host(host), port


@dataclass(frozen=True)
class TraceFilter:
    """Which messages a trace watcher wants: a Call-ID and/or the far end's address.

    Every condition given must hold; no condition at all matches every message.
    """

    call_id: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def build(cls, call_id: str | None = None, address: str | None = None) -> TraceFilter:
        """From the command line's ``--call-id`` and ``--address host[:port]``."""
        host, port = parse_address(address) if address else (None, None)
        return cls(call_id or None, host, port)

    def matches(self, call_id: str | None, remote: tuple[str, int]) -> bool:
        """True when a message with this Call-ID to or from `remote` passes the filter."""
        if self.call_id is not None and call_id != self.call_id:
            return False
        if self.host is not None and _norm_host(remote[0]) != self.host:
            return False
        return self.port is None or remote[1] == self.port

    def __str__(self) -> str:
        parts = []
        if self.call_id is not None:
            parts.append(f"Call-ID {self.call_id}")
        if self.host is not None:
            host = f"[{self.host}]" if ":" in self.host else self.host
            parts.append(f"address {host}" + (f":{self.port}" if self.port else ""))
        return ", ".join(parts) or "all messages"

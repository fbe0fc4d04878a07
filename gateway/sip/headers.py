"""Header names and the structured header values the SIP core needs (Via, name-addr, CSeq).

Names are normalised once, on parse, so the rest of the stack can look headers up by one
spelling. Values are parsed lazily by whoever needs them, through the classes here.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError
from gateway.sip.uri import SipUri, split_host_port

COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "b": "Referred-By",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}
"""RFC 3261 section 7.3.3 and later RFCs: single-letter header names and their long forms."""

_SPECIAL_NAMES = [
    "Call-ID",
    "CSeq",
    "WWW-Authenticate",
    "Max-Forwards",
    "Content-Length",
    "Record-Route",
    "MIME-Version",
    "RAck",
    "RSeq",
    "SIP-ETag",
    "SIP-If-Match",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "P-Associated-URI",
    "P-Called-Party-ID",
    "P-Charging-Vector",
    "P-Access-Network-Info",
    "DNS-SRV",
]
_CANONICAL: dict[str, str] = {name.lower(): name for name in _SPECIAL_NAMES}

# Headers whose grammar is a comma-separated list (RFC 3261 section 7.3.1 and extensions).
_MULTI_VALUE = frozenset(
    name.lower()
    for name in (
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Path",
        "Service-Route",
        "Allow",
        "Allow-Events",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Alert-Info",
        "Call-Info",
        "Error-Info",
        "In-Reply-To",
        "Warning",
        "Reason",
        "History-Info",
        "P-Asserted-Identity",
        "P-Associated-URI",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
    )
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    """True if ``text`` is an RFC 3261 token (method names, header names, parameter names)."""
    return bool(_TOKEN_RE.fullmatch(text))


def canonical_name(name: str) -> str:
    """Spell a header name one way (compact forms expanded) so lookups need no case folding."""
    name = name.strip()
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    special = _CANONICAL.get(lower)
    if special is not None:
        return special
    return "-".join(part[:1].upper() + part[1:].lower() for part in lower.split("-"))


def is_multi_value(name: str) -> bool:
    """True if the header's grammar allows several comma-separated values in one line."""
    return canonical_name(name).lower() in _MULTI_VALUE


def _split_outside(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and ``<...>``, honouring backslash escapes."""
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif in_angle:
            if ch == ">":
                in_angle = False
        elif ch == "<":
            in_angle = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_header_values(name: str, value: str) -> list[str]:
    """Split a list-valued header into its elements; other headers come back whole.

    Credentials, challenges, dates and anything not known to be a list are never split,
    because commas are part of their grammar.
    """
    if not is_multi_value(name):
        return [value.strip()]
    stripped = value.strip()
    if stripped == "*":
        return ["*"]
    return [part.strip() for part in _split_outside(value, ",") if part.strip()]


def _parse_params(text: str, context: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (leading ``;`` optional); names lower-cased, quotes kept."""
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if text.startswith(";"):
        text = text[1:]
    for item in _split_outside(text, ";"):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipParseError(f"Bad {context}", f"bad parameter {item.strip()!r}")
        value = value.strip()
        if sep:
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise SipParseError(f"Bad {context}", f"unbalanced quotes in {item!r}")
            elif not value or any(ch.isspace() or ch in '<>"' for ch in value):
                raise SipParseError(f"Bad {context}", f"bad parameter value {item.strip()!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;]+?)\s*(;.*)?",
    re.DOTALL,
)


@functools.lru_cache(maxsize=4096)
def _parse_via(value: str) -> tuple[str, str, int | None, tuple[tuple[str, str | None], ...]]:
    m = _VIA_RE.fullmatch(value)
    if m is None:
        raise SipParseError("Bad Via", value[:200])
    protocol, version, transport, sent_by, ptext = m.groups()
    if protocol.upper() != "SIP" or version != "2.0":
        raise SipParseError("Bad Via", f"unsupported protocol {protocol}/{version}")
    sent_by = re.sub(r"\s*:\s*", ":", sent_by)
    if any(ch.isspace() for ch in sent_by):
        raise SipParseError("Bad Via", f"bad sent-by {sent_by!r}")
    try:
        host, port = split_host_port(sent_by)
    except SipParseError as exc:
        raise SipParseError("Bad Via", exc.detail) from None
    return transport.upper(), host, port, tuple(_parse_params(ptext or "", "Via").items())


@dataclass
class Via:
    """One Via value: where responses go back to, and the branch that names the transaction."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one via-parm (split multi-value lines first with :func:`split_header_values`).

        Parsed fields are memoised per text (bounded LRU): layers above re-read the same
        top Via many times per message, and each call still returns a fresh object that
        the caller may edit (e.g. to stamp ``received``).
        """
        transport, host, port, params = _parse_via(value)
        return cls(transport, host, port, dict(params))

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        return out + _format_params(self.params)

    @property
    def branch(self) -> str | None:
        """The transaction id (RFC 3261 17.2.3); None for RFC 2543 peers without one."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """Source address a server saw, which differs from sent-by behind NAT."""
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """RFC 3581 rport: None if absent, "" if requested, the port text once filled in."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return "" if value is None else value


def _unquote(text: str) -> str:
    """Remove surrounding quotes and backslash escapes from a quoted-string."""
    out: list[str] = []
    i = 1
    while i < len(text) - 1:
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) - 1:
            i += 1
            ch = text[i]
        out.append(ch)
        i += 1
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scan_quoted(text: str, start: int) -> int:
    """Index just past the quoted-string starting at ``text[start] == '"'``."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError("Bad Header", f"unbalanced quotes in {text!r}")


_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:\s+[A-Za-z0-9\-.!%*_+`'~]+)*")


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, and header parameters."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        """Parse name-addr or bare addr-spec; in the bare form ``;params`` belong to the header."""
        text = value.strip()
        display: str | None = None
        if text.startswith('"'):
            end = _scan_quoted(text, 0)
            display = _unquote(text[:end])
            rest = text[end:].lstrip()
            if not rest.startswith("<"):
                raise SipParseError("Bad Header", f"expected <URI> after display name in {value!r}")
            text = rest
        lt = text.find("<")
        if lt >= 0 and (":" in text[:lt] or ";" in text[:lt]):
            lt = -1  # bare addr-spec whose quoted parameter value contains '<'
        if lt >= 0:
            if lt > 0:
                words = text[:lt].strip()
                if words and not _DISPLAY_TOKENS_RE.fullmatch(words):
                    raise SipParseError("Bad Header", f"bad display name {words!r}")
                display = words or None
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError("Bad Header", f"unterminated <URI> in {value!r}")
            uri_text = text[lt + 1 : gt]  # no spaces allowed inside <> (RFC 4475 badaspec)
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipParseError("Bad Header", f"junk after URI in {value!r}")
        else:
            uri_text, sep, rest = text.partition(";")
            uri_text = uri_text.strip()
            rest = sep + rest
            if "?" in uri_text or "," in uri_text:
                raise SipParseError("Bad Header", f"addr-spec needs <> in {value!r}")
        try:
            uri = SipUri.parse(uri_text)
        except SipParseError as exc:
            raise SipParseError("Bad Header", exc.detail or exc.reason) from None
        return cls(display, uri, _parse_params(rest, "Header"))

    def __str__(self) -> str:
        out = f"<{self.uri}>"
        if self.display is not None and self.display != "":
            out = f"{_quote(self.display)} {out}"
        return out + _format_params(self.params)

    @property
    def tag(self) -> str | None:
        """The dialog tag (RFC 3261 19.3), None before the far end has chosen one."""
        return self.params.get("tag")


@dataclass
class CSeq:
    """Command sequence: orders requests in a dialog and ties responses to their method."""

    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        """Parse ``<number> <METHOD>``; the number must fit 32 bits unsigned (RFC 3261 8.1.1.5)."""
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
            raise SipParseError("Bad CSeq", value)
        number = int(parts[0])
        if number >= 2**32:
            raise SipParseError("Bad CSeq", f"sequence number {parts[0]} too large")
        if not is_token(parts[1]):
            raise SipParseError("Bad CSeq", f"bad method {parts[1]!r}")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def generate_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie plus unguessable hex, unique per transaction."""
    return "z9hG4bK" + secrets.token_hex(10)


def generate_tag() -> str:
    """A fresh From/To tag with enough randomness to keep dialogs globally unique."""
    return secrets.token_hex(8)


def generate_call_id(host: str) -> str:
    """A fresh Call-ID; the host part only aids debugging, the random part gives uniqueness."""
    return f"{secrets.token_hex(12)}@{host}"

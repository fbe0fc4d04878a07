"""SIP requests and responses: parse from bytes, serialise to bytes, build replies.

Pure code: no sockets and no clock. :func:`parse_message` is the one door through which
network bytes enter the SIP core, so it is bounded in size and raises nothing but
:class:`SipParseError`, whatever it is fed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError
from gateway.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    split_header_values,
)
from gateway.sip.uri import SipUri

MAX_MESSAGE_BYTES = 65535
MAX_HEADERS = 256
MAX_LINE_BYTES = 8192

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
"""Default reason phrases (RFC 3261 section 21) used when a caller gives none."""


def default_reason(status: int) -> str:
    """Reason phrase for ``status``, falling back to the class name for unlisted codes."""
    if status in REASON_PHRASES:
        return REASON_PHRASES[status]
    return {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error"}.get(
        status // 100, "Global Failure"
    )


class Headers:
    """Case-insensitive, order-preserving multimap of header lines under canonical names.

    Each stored entry is one header line as received (or added); :meth:`get_all` splits
    list-valued headers so ``Via: a, b`` and two ``Via`` lines look the same to callers.
    """

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items or []:
            self.add(name, value)

    def get(self, name: str) -> str | None:
        """First value of ``name`` (first list element for list-valued headers), or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, list-valued headers split into elements."""
        key = canonical_name(name)
        out: list[str] = []
        for item_name, value in self._items:
            if item_name == key:
                out.extend(split_header_values(key, value))
        return out

    def get_lines(self, name: str) -> list[str]:
        """Raw values of each ``name`` line, unsplit, for copying headers verbatim."""
        key = canonical_name(name)
        return [value for item_name, value in self._items if item_name == key]

    def add(self, name: str, value: str) -> None:
        """Append one header line after all existing ones."""
        self._items.append((canonical_name(name), value.strip()))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one; keeps the position of the first if present."""
        key = canonical_name(name)
        for index, (item_name, _) in enumerate(self._items):
            if item_name == key:
                self._items[index] = (key, value.strip())
                self._items = [
                    entry
                    for i, entry in enumerate(self._items)
                    if i <= index or entry[0] != key
                ]
                return
        self._items.append((key, value.strip()))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before all others (a proxy or UAC pushing a Via or Route)."""
        self._items.insert(0, (canonical_name(name), value.strip()))

    def remove(self, name: str) -> None:
        """Drop every ``name`` line; absent names are ignored."""
        key = canonical_name(name)
        self._items = [entry for entry in self._items if entry[0] != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(item_name == key for item_name, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def items(self) -> list[tuple[str, str]]:
        """Header lines in order, as (canonical name, value), for serialising."""
        return list(self._items)

    def copy(self) -> Headers:
        """Independent copy, so a response or retransmission can be edited safely."""
        new = Headers()
        new._items = list(self._items)
        return new


def _require(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"Missing {name}")
    return value


class _MessageMixin:
    """Accessors shared by requests and responses for the headers every layer needs."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        """Call-ID; with the tags it names the dialog."""
        return _require(self.headers, "Call-ID")

    @property
    def cseq(self) -> CSeq:
        """Parsed CSeq, which ties a response to its request's method."""
        return CSeq.parse(_require(self.headers, "CSeq"))

    @property
    def top_via(self) -> Via:
        """The topmost Via: ours on a response, the sender's on a request."""
        return Via.parse(_require(self.headers, "Via"))

    @property
    def vias(self) -> list[Via]:
        """Every Via in order, topmost first."""
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def branch(self) -> str | None:
        """Top Via branch: the transaction key."""
        if "Via" not in self.headers:
            return None
        return self.top_via.branch

    @property
    def from_addr(self) -> NameAddr:
        """Parsed From header."""
        return NameAddr.parse(_require(self.headers, "From"))

    @property
    def to_addr(self) -> NameAddr:
        """Parsed To header."""
        return NameAddr.parse(_require(self.headers, "To"))

    @property
    def from_tag(self) -> str | None:
        """Local or remote dialog tag from From."""
        return self.from_addr.tag

    @property
    def to_tag(self) -> str | None:
        """To tag; None on an out-of-dialog request or a tagless provisional response."""
        return self.to_addr.tag

    def _header_bytes(self) -> bytes:
        lines = [f"{name}: {value}" for name, value in self.headers.items() if name != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


@dataclass
class Request(_MessageMixin):
    """A SIP request; ``uri`` is kept as text so an unparseable one can still be answered."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    @property
    def request_uri(self) -> SipUri:
        """Parsed Request-URI (raises SipParseError, e.g. "Unsupported URI Scheme" -> 416)."""
        return SipUri.parse(self.uri)

    def __bytes__(self) -> bytes:
        start = f"{self.method} {self.uri} {self.version}\r\n".encode()
        return start + self._header_bytes() + self.body


@dataclass
class Response(_MessageMixin):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def __bytes__(self) -> bytes:
        start = f"{self.version} {self.status} {self.reason}\r\n".encode()
        return start + self._header_bytes() + self.body


_VERSION_RE = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# A CTL is allowed only as a quoted-pair ("\\" + CTL, RFC 3261 25.1), and CR/LF never.
_CONTROL_RE = re.compile(r"(?<!\\)[\x00-\x08\x0a-\x1f\x7f]|[\r\n]")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the blank line; tolerate bare LF line ends from sloppy peers."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4 :]
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    if data.endswith(b"\r\n") or data.endswith(b"\n"):
        return data.rstrip(b"\r\n"), b""
    raise SipParseError("Missing Blank Line", "no end of headers")


def _logical_lines(head: str) -> list[str]:
    """Physical lines joined across LWS continuations (RFC 3261 7.3.1 folding)."""
    lines: list[str] = []
    for raw in re.split(r"\r?\n", head):
        if len(raw.encode("utf-8")) > MAX_LINE_BYTES:
            raise SipParseError("Header Too Long", f"{len(raw)} characters")
        if raw[:1] in (" ", "\t"):
            if len(lines) < 2:  # nothing to continue (index 0 is the start line)
                raise SipParseError("Bad Header", "continuation line without a header")
            lines[-1] = lines[-1].rstrip() + " " + raw.strip()
            if len(lines[-1]) > MAX_LINE_BYTES:
                raise SipParseError("Header Too Long", "folded header too long")
        else:
            lines.append(raw)
    return lines


def _parse_start_line(line: str) -> Request | Response:
    if line.startswith("SIP/") or line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2 or not _VERSION_RE.fullmatch(parts[0]):
            raise SipParseError("Bad Status Line", line[:80])
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii() or not 100 <= int(code) <= 699:
            raise SipParseError("Bad Status Code", code[:20])
        reason = parts[2] if len(parts) == 3 else ""
        if any(ord(ch) < 0x20 and ch != "\t" for ch in reason):
            raise SipParseError("Bad Status Line", "control character in reason phrase")
        return Response(int(code), reason, Headers(), b"", parts[0].upper())
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad Request Line", line[:80])
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError("Bad Method", method[:40])
    if not uri or any(ord(ch) <= 0x20 or ch in '<>"' for ch in uri) or ":" not in uri:
        raise SipParseError("Bad Request-URI", uri[:80])
    if not _VERSION_RE.fullmatch(version):
        raise SipParseError("Bad Request Line", f"bad version {version[:20]!r}")
    return Request(method, uri, Headers(), b"", version.upper())


def _check_core_headers(msg: Request | Response) -> None:
    """Mandatory headers present and well-formed, so later layers can rely on them."""
    headers = msg.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in headers:
            raise SipParseError(f"Missing {name}")
    for via in headers.get_all("Via"):
        Via.parse(via)
    for name in ("From", "To"):
        lines = headers.get_lines(name)
        if len(lines) != 1:
            raise SipParseError(f"Bad {name}", "must appear exactly once")
        try:
            NameAddr.parse(lines[0])
        except SipParseError as exc:
            raise SipParseError(f"Bad {name}", exc.detail) from None
    call_ids = headers.get_lines("Call-ID")
    if len(call_ids) != 1 or not call_ids[0] or any(ch.isspace() for ch in call_ids[0]):
        raise SipParseError("Bad Call-ID")
    cseq_lines = headers.get_lines("CSeq")
    if len(cseq_lines) != 1:
        raise SipParseError("Bad CSeq", "must appear exactly once")
    cseq = CSeq.parse(cseq_lines[0])
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise SipParseError("CSeq Method Mismatch", f"{cseq.method} != {msg.method}")
        mf = headers.get_lines("Max-Forwards")
        if mf:
            if len(mf) != 1 or not mf[0].isdigit() or not mf[0].isascii() or int(mf[0]) > 255:
                raise SipParseError("Bad Max-Forwards", mf[0][:20])
    for contact in headers.get_all("Contact"):
        if contact != "*":
            try:
                NameAddr.parse(contact)
            except SipParseError as exc:
                raise SipParseError("Bad Contact", exc.detail) from None


def _frame_body(headers: Headers, rest: bytes) -> bytes:
    """Apply Content-Length: cut extra bytes, refuse a short body (RFC 3261 18.3)."""
    cl_lines = headers.get_lines("Content-Length")
    if not cl_lines:
        return rest
    if len(set(cl_lines)) != 1 or not cl_lines[0].isdigit() or not cl_lines[0].isascii():
        raise SipParseError("Bad Content-Length", cl_lines[0][:20])
    length = int(cl_lines[0])
    if length > len(rest):
        raise SipParseError("Bad Content-Length", f"{length} > {len(rest)} bytes present")
    return rest[:length]


def _parse(data: bytes) -> Request | Response:
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("Message Too Large", f"{len(data)} bytes")
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("Empty Message")
    head_bytes, rest = _split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("Bad Encoding", "headers are not UTF-8") from None
    lines = _logical_lines(head)
    start_error: SipParseError | None = None
    try:
        msg = _parse_start_line(lines[0])
    except SipParseError as exc:
        if lines[0][:4].upper() == "SIP/":
            raise  # a broken response is dropped; nothing to answer
        # Keep reading the headers so the caller can still answer 400 to a bad request line.
        start_error = exc
        words = lines[0].split()
        msg = Request(words[0] if words else "", " ".join(words[1:-1]), Headers(), b"")
    if len(lines) - 1 > MAX_HEADERS:
        raise SipParseError("Too Many Headers", f"{len(lines) - 1} headers")
    for line in lines[1:]:
        if not line.strip():
            raise SipParseError("Bad Header", "empty header line")
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME_RE.fullmatch(name):
            raise SipParseError("Bad Header", f"bad header line {line[:60]!r}")
        if _CONTROL_RE.search(value):  # RFC 3261 25.1: no CTLs but HTAB in a header value
            raise SipParseError(f"Bad {canonical_name(name)}"[:60], "control character")
        msg.headers.add(name, value)
    if start_error is not None:
        start_error.message = msg
        raise start_error
    try:
        if msg.version != "SIP/2.0":
            raise SipParseError("Version Not Supported", msg.version, status=505)
        msg.body = _frame_body(msg.headers, rest)
        _check_core_headers(msg)
        if isinstance(msg, Request):
            scheme = msg.uri.partition(":")[0].lower()
            if scheme in ("sip", "sips", "tel"):
                uri = SipUri.parse(msg.uri)
                if uri.headers:  # RFC 3261 19.1.5: not allowed in a Request-URI
                    raise SipParseError("Bad Request-URI", "headers in Request-URI")
    except SipParseError as exc:
        exc.message = msg
        raise
    return msg


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram (or one framed stream message) into a Request or Response.

    Raises only :class:`SipParseError`; its ``reason`` suits a 400 reason phrase. A body
    longer than Content-Length is cut (a second message in a datagram is ignored); a missing
    Content-Length takes the rest of the datagram.
    """
    try:
        return _parse(bytes(data))
    except SipParseError:
        raise
    except (ValueError, TypeError, IndexError, UnicodeError, OverflowError) as exc:
        raise SipParseError("Bad Request", type(exc).__name__) from None


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
) -> Response:
    """Start a response per RFC 3261 8.2.6: Via (all, in order), From, To, Call-ID, CSeq.

    ``to_tag`` is added to To only when the request's To has none. Record-Route is not
    copied here; dialog code adds it to dialog-creating responses.
    """
    headers = Headers()
    for via in request.headers.get_lines("Via"):
        headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_lines(name):
            if name == "To" and to_tag is not None:
                try:
                    has_tag = NameAddr.parse(value).tag is not None
                except SipParseError:
                    has_tag = True
                if not has_tag:
                    value = f"{value};tag={to_tag}"
            headers.add(name, value)
    return Response(status, reason if reason is not None else default_reason(status), headers)


def build_request(
    method: str,
    uri: str,
    *,
    from_addr: str,
    to_addr: str,
    call_id: str,
    cseq: int,
    via: str,
    contact: str | None = None,
    max_forwards: int = 70,
    body: bytes = b"",
    content_type: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> Request:
    """Assemble a request with the RFC 3261 8.1.1 headers in the customary order."""
    headers = Headers()
    headers.add("Via", via)
    headers.add("Max-Forwards", str(max_forwards))
    headers.add("From", from_addr)
    headers.add("To", to_addr)
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        headers.add("Contact", contact)
    for name, value in extra or []:
        headers.add(name, value)
    if content_type is not None:
        headers.add("Content-Type", content_type)
    return Request(method, uri, headers, body)

"""Cut a SIP byte stream (TCP, TLS) into whole messages, sans-IO.

A stream has no datagram boundaries, so RFC 3261 18.3 makes Content-Length mandatory on
stream transports: the header block ends at the first empty line and the body is exactly
Content-Length bytes. Keep-alives of RFC 5626 3.5.1 travel on the same stream: a
double CRLF is a "ping" that the receiver answers with a single CRLF "pong".

Resync rules (a stream cannot be resynchronised reliably, so the framer is strict):

- CRLFs between messages are keep-alives, never an error; they are counted, not delivered.
- Anything else that does not start with a SIP start line (a method token followed by a
  space, or "SIP/2.0 "), a header block without Content-Length, a malformed or
  contradicting Content-Length, a header block or message larger than `max_message` is
  fatal: the framer records `error` and delivers nothing more. The transport then closes
  the connection. Messages completed before the bad one are still returned.
"""

from __future__ import annotations

import re

MAX_MESSAGE = 64 * 1024
"""Largest message (header block plus body) accepted on a stream."""

_CRLF = b"\r\n"
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)
_REQUEST_LINE = re.compile(rb"^[A-Za-z0-9.!%*_+`'~-]+ \S+ SIP/2\.0$", re.I)
_STATUS_LINE = re.compile(rb"^SIP/2\.0 [0-9]{3}( .*)?$", re.I)


class FramingError(ValueError):
    """The peer broke stream framing; the connection must be closed."""


class StreamFramer:
    """Accumulates bytes of one connection and yields complete SIP messages.

    Pure and bounded: memory never exceeds `max_message` plus one read. `pings` counts
    double-CRLF keep-alives the peer sent since the last `take_pings()` (answer each with
    one CRLF); `pongs` counts single CRLFs (answers to our pings).
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self.error: str | None = None
        self.pings = 0
        self.pongs = 0
        self.messages_framed = 0
        self._buffer = bytearray()
        self._half_ping = False  # a lone CRLF seen; a second one makes it a ping

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a message."""
        return len(self._buffer)

    def take_pings(self) -> int:
        """Pings received since the last call; the caller answers each with b"\\r\\n"."""
        count, self.pings = self.pings, 0
        return count

    def take_pongs(self) -> int:
        """Pongs received since the last call (each proves the flow is alive)."""
        count, self.pongs = self.pongs, 0
        return count

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; returns the messages they complete, in order."""
        if self.error is not None:
            return []
        self._buffer += data
        out: list[bytes] = []
        try:
            while True:
                self._skip_keepalives()
                message = self._next_message()
                if message is None:
                    break
                out.append(message)
                self.messages_framed += 1
        except FramingError as exc:
            self.error = str(exc)
            self._buffer.clear()
        return out

    def _skip_keepalives(self) -> None:
        buf = self._buffer
        while buf[:2] == _CRLF:
            del buf[:2]
            if self._half_ping:
                self._half_ping = False
                self.pongs -= 1  # the CRLF counted as a pong was the first half of a ping
                self.pings += 1
            else:
                self._half_ping = True
                self.pongs += 1
        if buf and buf[:1] != b"\r":
            self._half_ping = False
        if buf[:1] == b"\r" and len(buf) >= 2:
            raise FramingError("stray CR between messages")

    def _next_message(self) -> bytes | None:
        buf = self._buffer
        if not buf or buf[:1] == b"\r":
            return None
        end = buf.find(_HEADER_END)
        if end < 0:
            first_line_end = buf.find(_CRLF)
            if first_line_end >= 0:
                _check_start_line(bytes(buf[:first_line_end]))
            elif len(buf) > 1024:
                raise FramingError("no start line within 1024 bytes")
            if len(buf) > self.max_message:
                raise FramingError(f"header block over {self.max_message} bytes")
            return None
        head = bytes(buf[:end])
        _check_start_line(head.split(_CRLF, 1)[0])
        length = _content_length(head)
        total = end + len(_HEADER_END) + length
        if total > self.max_message:
            raise FramingError(f"message of {total} bytes is over {self.max_message}")
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        return message


def _check_start_line(line: bytes) -> None:
    if not (_REQUEST_LINE.match(line) or _STATUS_LINE.match(line)):
        shown = line[:40].decode("latin-1")
        raise FramingError(f"not a SIP start line: {shown!r}")


def _content_length(head: bytes) -> int:
    values = {m.group(1) for m in _CONTENT_LENGTH.finditer(head)}
    # Folded or comma-joined values are as malformed as contradicting ones.
    if not values:
        raise FramingError("no Content-Length on a stream transport (RFC 3261 18.3)")
    if len(values) > 1:
        raise FramingError("contradicting Content-Length headers")
    raw = values.pop()
    if not raw.isdigit() or len(raw) > 9:
        raise FramingError(f"bad Content-Length {raw[:20].decode('latin-1')!r}")
    return int(raw)


PING = b"\r\n\r\n"
"""The RFC 5626 keep-alive a client sends on a stream."""
PONG = b"\r\n"
"""The answer to a PING."""

"""SIP and tel URIs (RFC 3261 section 19.1, RFC 3966), parsed into fields and printed back.

The parser is strict about structure (one scheme, a valid host and port, no whitespace) so
that a bad Request-URI is refused at the edge, but it keeps escaped characters exactly as
written: comparison and unescaping are the caller's decision, not the parser's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# user = 1*( unreserved / escaped / user-unreserved ); checked loosely (escapes as %HH).
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PARAM_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HEADER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW%]+")

_SIP_SCHEMES = ("sip", "sips")


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise SipParseError("Bad URI", f"port {text!r} in {whole!r}")
    port = int(text)
    if port > 65535:
        raise SipParseError("Bad URI", f"port {port} out of range in {whole!r}")
    return port


def split_host_port(text: str, whole: str | None = None) -> tuple[str, int | None]:
    """Split ``host[:port]`` (host may be a bracketed IPv6 literal); shared with Via sent-by."""
    whole = text if whole is None else whole
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Bad URI", f"unterminated IPv6 reference in {whole!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if not _IPV6_RE.fullmatch(host) or host.count(":") < 2:
            raise SipParseError("Bad URI", f"bad IPv6 reference {host!r}")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError("Bad URI", f"junk after host in {whole!r}")
        return host, _parse_port(rest[1:], whole)
    host, sep, port_text = text.partition(":")
    if not host or not _HOSTNAME_RE.fullmatch(host):
        raise SipParseError("Bad URI", f"bad host {host!r} in {whole!r}")
    return host, (_parse_port(port_text, whole) if sep else None)


def _parse_params(text: str, whole: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name or not _PARAM_RE.fullmatch(name):
            raise SipParseError("Bad URI", f"bad parameter {item!r} in {whole!r}")
        if sep and value and not _PARAM_RE.fullmatch(value):
            raise SipParseError("Bad URI", f"bad parameter value {item!r} in {whole!r}")
        params[name.lower()] = value if sep else None
    return params


def _parse_headers(text: str, whole: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in text.split("&"):
        name, sep, value = item.partition("=")
        if not name or not sep or not _HEADER_RE.fullmatch(name) or not _HEADER_RE.fullmatch(value):
            raise SipParseError("Bad URI", f"bad URI header {item!r} in {whole!r}")
        headers[name] = value
    return headers


@dataclass
class SipUri:
    """A parsed sip:/sips:/tel: URI, so routing and dialogs never slice strings by hand.

    ``host`` keeps IPv6 brackets as written ("[::1]"); :meth:`host_port` strips them for
    sockets. Parameter names are lower-case; values, user and headers are kept as written.
    For ``tel:`` the subscriber number is in ``host`` and ``user`` is None.
    """

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI, raising :class:`SipParseError` for anything malformed or unknown."""
        if not isinstance(text, str):
            raise SipParseError("Bad URI", "not text")
        scheme, sep, rest = text.partition(":")
        if not sep or not _SCHEME_RE.fullmatch(scheme):
            raise SipParseError("Bad URI", f"no scheme in {text!r}")
        scheme = scheme.lower()
        if any(ch.isspace() or ch in '<>"' or ord(ch) < 0x21 for ch in rest):
            raise SipParseError("Bad URI", f"illegal character in {text!r}")
        if scheme == "tel":
            number, _, ptext = rest.partition(";")
            if not _TEL_RE.fullmatch(number):
                raise SipParseError("Bad URI", f"bad telephone number in {text!r}")
            return cls("tel", None, None, number, None, _parse_params(ptext, text), {})
        if scheme not in _SIP_SCHEMES:
            raise SipParseError("Unsupported URI Scheme", text, status=416)
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, psep, pw = userinfo.partition(":")
            if not _USER_RE.fullmatch(user):
                raise SipParseError("Bad URI", f"bad user part in {text!r}")
            if psep:
                if not _PASSWORD_RE.fullmatch(pw):
                    raise SipParseError("Bad URI", f"bad password in {text!r}")
                password = pw
        rest, hsep, htext = rest.partition("?")
        hostport, _, ptext = rest.partition(";")
        host, port = split_host_port(hostport, text)
        headers = _parse_headers(htext, text) if hsep else {}
        return cls(scheme, user, password, host, port, _parse_params(ptext, text), headers)

    def __str__(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if self.scheme == "tel":
            out = f"tel:{host}"
        else:
            out = f"{self.scheme}:"
            if self.user is not None:
                out += self.user
                if self.password is not None:
                    out += f":{self.password}"
                out += "@"
            out += host
            if self.port is not None:
                out += f":{self.port}"
        for name, value in self.params.items():
            out += f";{name}" if value is None else f";{name}={value}"
        if self.headers:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return out

    def host_port(self, default_port: int = 5060) -> tuple[str, int]:
        """Address to send to: host without IPv6 brackets, and the port or the default."""
        host = self.host
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, (self.port if self.port is not None else default_port)

    @property
    def transport(self) -> str | None:
        """The ``transport=`` parameter, lower-case, since next-hop selection keys on it."""
        value = self.params.get("transport")
        return value.lower() if value else None

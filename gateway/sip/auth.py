"""HTTP digest authentication for SIP (RFC 2617, RFC 7616 algorithms, RFC 3261 section 22).

Client side answers a 401/407 challenge; server side (for the local survivable registrar)
issues stateless nonces and checks responses. Pure: the caller passes ``now`` and secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.sip.errors import SipError, SipParseError

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}


def _hash_for(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
    """Hash function and whether the algorithm is a ``-sess`` variant."""
    name = algorithm.upper()
    sess = name.endswith("-SESS")
    base = name[: -len("-SESS")] if sess else name
    if base not in _HASHES:
        raise SipError(f"unsupported digest algorithm {algorithm!r}")
    return _HASHES[base], sess


def _parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme k=v, k="quoted, with \\"escapes\\"", ...`` into scheme and params."""
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if not scheme:
        raise SipParseError("Bad Authentication Header", "empty")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise SipParseError("Bad Authentication Header", f"no '=' after {rest[i:i + 20]!r}")
        name = rest[i:eq].strip().lower()
        if not name or any(ch in name for ch in ' \t,"'):
            raise SipParseError("Bad Authentication Header", f"bad parameter name {name!r}")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                raise SipParseError("Bad Authentication Header", f"unterminated quote in {name}")
            i += 1
            params[name] = "".join(chars)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[name] = rest[i:end].strip()
            i = end
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] != ",":
            raise SipParseError("Bad Authentication Header", f"junk after {name}")
    return scheme, params


@dataclass
class Challenge:
    """A parsed WWW-Authenticate / Proxy-Authenticate digest challenge."""

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    stale: bool = False

    @classmethod
    def parse(cls, header_value: str) -> Challenge:
        """Parse a challenge; raises :class:`SipParseError` if it is not a usable Digest one."""
        scheme, params = _parse_params(header_value)
        if scheme.lower() != "digest":
            raise SipParseError("Bad Authentication Header", f"scheme {scheme!r} is not Digest")
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("Bad Authentication Header", "realm and nonce are required")
        qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            opaque=params.get("opaque"),
            algorithm=params.get("algorithm", "MD5"),
            qop=qop,
            stale=params.get("stale", "").lower() == "true",
        )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _digest(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str,
    cnonce: str,
    body: bytes,
) -> str:
    """The request-digest of RFC 2617 section 3.2.2.1 (RFC 2069 form when qop is None)."""
    h, sess = _hash_for(algorithm)
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def build_authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Authorization / Proxy-Authorization value answering ``challenge``.

    Uses qop=auth when offered (auth-int only if that is all the server offers), else the
    RFC 2069 form. ``nc`` must grow with each request that reuses one nonce.
    """
    qop: str | None = None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    cnonce_value = cnonce if cnonce is not None else secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = _digest(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce_value,
        body=body,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        parts += [f"cnonce={_quote(cnonce_value)}", f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


def _nonce_mac(secret: bytes, stamp: str, salt: str) -> str:
    return hmac.new(secret, f"{stamp}-{salt}".encode(), hashlib.sha256).hexdigest()[:32]


def make_nonce(secret: bytes, now: float) -> str:
    """A stateless nonce: issue time plus an HMAC, so any nonce can be checked later."""
    stamp = f"{max(0, int(now * 1000)):x}"
    salt = secrets.token_hex(4)
    return f"{stamp}-{salt}-{_nonce_mac(secret, stamp, salt)}"


def check_nonce(secret: bytes, nonce: str, now: float, *, max_age: float = 300.0) -> bool:
    """True if we issued ``nonce`` and it is not older than ``max_age`` seconds.

    A False answer on a correct password means "send a new challenge with stale=true".
    """
    parts = nonce.split("-")
    if len(parts) != 3:
        return False
    stamp, salt, mac = parts
    if not hmac.compare_digest(mac, _nonce_mac(secret, stamp, salt)):
        return False
    try:
        issued = int(stamp, 16) / 1000.0
    except ValueError:
        return False
    return 0.0 <= now - issued <= max_age


def parse_authorization(header_value: str) -> dict[str, str]:
    """Parameters of an Authorization header (names lower-case, values unquoted).

    Raises :class:`SipParseError` if the scheme is not Digest or required fields are missing.
    """
    scheme, params = _parse_params(header_value)
    if scheme.lower() != "digest":
        raise SipParseError("Bad Authorization", f"scheme {scheme!r} is not Digest")
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in params:
            raise SipParseError("Bad Authorization", f"missing {name}")
    return params


def verify_response(
    params: dict[str, str], *, method: str, password: str, body: bytes = b""
) -> bool:
    """True if the credentials in ``params`` prove knowledge of ``password``.

    Nonce freshness is a separate question: call :func:`check_nonce` too.
    """
    try:
        qop = params.get("qop")
        if qop is not None:
            qop = qop.lower()
            if qop not in ("auth", "auth-int") or "cnonce" not in params or "nc" not in params:
                return False
        expected = _digest(
            algorithm=params.get("algorithm", "MD5"),
            username=params["username"],
            realm=params["realm"],
            password=password,
            nonce=params["nonce"],
            method=method,
            uri=params["uri"],
            qop=qop,
            nc=params.get("nc", ""),
            cnonce=params.get("cnonce", ""),
            body=body,
        )
    except (KeyError, SipError):
        return False
    return hmac.compare_digest(expected.encode(), params["response"].lower().encode())

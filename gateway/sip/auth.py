"""HTTP digest authentication for SIP (RFC 2617, RFC 7616 algorithms, RFC 3261 section 22).

Client side answers a 401/407 challenge, choosing the best of several (`select_challenge`).
Server side (the edge filter, later the local survivable registrar) issues stateless nonces,
offers MD5 and SHA-256 (RFC 8760; `SERVER_ALGORITHMS`) and checks responses so that a captured header cannot
be replayed (`check_credentials`, `NonceCounts`). Pure: the caller passes ``now`` and secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

from gateway.sip.errors import SipError, SipParseError
from gateway.sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.sip.message import Response

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
try:  # SHA-512/256 (RFC 7616) needs OpenSSL's sha512_256; without it we simply never pick it
    hashlib.new("sha512_256")
    _HASHES["SHA-512-256"] = lambda data: hashlib.new("sha512_256", data).hexdigest()
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass

#: Client preference among digest algorithms, best first; unknown ones are skipped.
CLIENT_PREFERENCE: Final = ("SHA-512-256", "SHA-256", "MD5")
#: What the server offers by default, one challenge each in this order; also the default of
#: the daemon's ``security.digest_algorithms``. MD5 leads because sipp 3.6 and sipvicious
#: answer only the first challenge and baresip 1.0 gives up on a SHA-256 one first; SHA-256
#: is offered beside it for clients that pick the best (RFC 8760 section 2.3).
SERVER_ALGORITHMS: Final[tuple[str, ...]] = ("MD5", "SHA-256")
#: What the server can check; an offer is any ordered subset of these.
SERVER_SUPPORTED: Final = frozenset({"SHA-512-256", "SHA-256", "MD5"}) & frozenset(_HASHES)


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

    def rank(self) -> int:
        """How much we like this challenge: higher is better, -1 if we cannot answer it."""
        name = self.algorithm.upper()
        sess = name.endswith("-SESS")
        base = name[: -len("-SESS")] if sess else name
        if base not in _HASHES or base not in CLIENT_PREFERENCE:
            return -1
        if self.qop and not {"auth", "auth-int"} & set(self.qop):
            return -1  # qop offered, but none we speak: the RFC 2069 form would be refused
        return 2 * (len(CLIENT_PREFERENCE) - CLIENT_PREFERENCE.index(base)) + (0 if sess else 1)


def select_challenge(values: Iterable[str]) -> Challenge:
    """The best challenge we can answer among a 401/407's header values (RFC 7616 3.7).

    Values that do not parse, are not Digest, or name an algorithm or qop we lack are
    skipped; among the rest the strongest algorithm wins, the first listed on a tie.
    Raises :class:`SipParseError` when none is usable.
    """
    best: Challenge | None = None
    best_rank = -1
    for value in values:
        try:
            challenge = Challenge.parse(value)
        except SipParseError:
            continue
        rank = challenge.rank()
        if rank > best_rank:
            best, best_rank = challenge, rank
    if best is None:
        raise SipParseError("Bad Authentication Header", "no usable Digest challenge")
    return best


def challenge_from(response: Response) -> Challenge:
    """The challenge to answer in a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)."""
    name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    return select_challenge(response.headers.get_lines(name))


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


# ---------------------------------------------------------------------- server side


def make_challenges(realm: str, nonce: str, *, stale: bool = False,
                    algorithms: Iterable[str] = SERVER_ALGORITHMS) -> tuple[str, ...]:
    """WWW-Authenticate values, one per algorithm in ``algorithms``, sharing one nonce.

    Best first: RFC 8760 clients take the topmost one they support. Older clients may not:
    sipp 3.6 answers only the first header and baresip 1.0 gives up on any non-MD5 one, so
    a site with such phones offers ``("MD5",)`` alone.
    """
    tail = ', qop="auth"' + (", stale=true" if stale else "")
    return tuple(f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}, algorithm={alg}{tail}"
                 for alg in algorithms)


def nonce_issued_ms(nonce: str) -> int | None:
    """When one of our nonces (see `make_nonce`) was issued, in ms; None if it is not one."""
    stamp = nonce.split("-", 1)[0]
    try:
        return int(stamp, 16) if len(stamp) <= 16 else None
    except ValueError:
        return None


#: The four URI parameters that must match when either side has them (RFC 3261 19.1.4).
_STRICT_URI_PARAMS: Final = ("user", "ttl", "method", "maddr", "transport")


def _host_key(host: str) -> str:
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        return host.lower()


def _uri_param(value: str | None) -> str | None:
    return None if value is None else unquote(value).lower()


def _uri_params_match(a: Mapping[str, str | None], b: Mapping[str, str | None]) -> bool:
    for name in _STRICT_URI_PARAMS:
        if (name in a) != (name in b) or _uri_param(a.get(name)) != _uri_param(b.get(name)):
            return False
    return all(_uri_param(a[name]) == _uri_param(b[name]) for name in a.keys() & b.keys())


def digest_uri_matches(digest_uri: str, request_uri: str) -> bool:
    """True if the credentials' ``uri`` names the Request-URI (RFC 3261 22.4 item 3).

    Compared as SIP URIs (RFC 3261 19.1.4): user and password exactly after unescaping,
    host without case, a missing port unequal to 5060, the strict parameters on both sides
    or neither, other parameters only when both carry them, and URI headers all alike.
    Anything that does not parse must be the very same text.
    """
    if digest_uri == request_uri:
        return True
    try:
        a, b = SipUri.parse(digest_uri), SipUri.parse(request_uri)
    except SipError:
        return False
    if a.scheme != b.scheme or a.port != b.port or _host_key(a.host) != _host_key(b.host):
        return False
    if a.scheme == "tel":
        return a.host.lower() == b.host.lower() and _uri_params_match(a.params, b.params)
    same_user = (None if a.user is None else unquote(a.user)) == \
        (None if b.user is None else unquote(b.user))
    same_password = (None if a.password is None else unquote(a.password)) == \
        (None if b.password is None else unquote(b.password))
    headers_a = {k.lower(): unquote(v) for k, v in a.headers.items()}
    headers_b = {k.lower(): unquote(v) for k, v in b.headers.items()}
    return same_user and same_password and headers_a == headers_b and \
        _uri_params_match(a.params, b.params)


class NonceCounts:
    """The highest ``nc`` each nonce has been used with, so a repeat is refused (RFC 7616 3.4).

    An entry is made only for a response that proved the password, so strangers cannot grow
    the table; it holds at most `max_entries`. When full, the entry used first goes and the
    *floor* rises to that nonce's issue time: a nonce issued no later than the floor and no
    longer in the table is reported ``forgotten`` (answer it as stale). Forgetting thus costs a
    client one more challenge, and never reopens a replay.

    Each entry also keeps the fingerprint of the request its count was accepted with (the
    caller's `request_key`: Call-ID, CSeq, Via branch, source and the header itself). The same
    count again with the same fingerprint is that request retransmitted (UDP resends it when
    our answer is late or lost and no transaction absorbed the copy): ``retransmission``, to
    be answered again. Any other request with that count is ``replayed``.
    """

    def __init__(self, *, max_entries: int = 4096, max_age: float = 300.0) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries: expected at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.max_age = max_age
        # nonce -> (issued ms, nc, fingerprint of the request nc was accepted with)
        self._seen: OrderedDict[str, tuple[int, int, bytes | None]] = OrderedDict()
        self._floor_ms = -1

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, nc: int, now: float, request_key: bytes | None = None) -> str:
        """Record ``nc`` for ``nonce``: "ok", "replayed" (not above the last), "forgotten",
        or "retransmission" (the last count again, from the request it was accepted with)."""
        issued = nonce_issued_ms(nonce)
        if issued is None:
            return "forgotten"
        entry = self._seen.get(nonce)
        if entry is None:
            if issued <= self._floor_ms:
                return "forgotten"
            self._prune(now)
        elif nc <= entry[1]:
            if nc == entry[1] and request_key is not None and request_key == entry[2]:
                return "retransmission"
            return "replayed"
        self._seen[nonce] = (issued, nc, request_key)
        while len(self._seen) > self.max_entries:
            self._forget_oldest()
        return "ok"

    def _forget_oldest(self) -> None:
        _, (issued, _, _) = self._seen.popitem(last=False)
        self._floor_ms = max(self._floor_ms, issued)

    def _prune(self, now: float) -> None:
        """Drop entries from the front whose nonce has expired anyway."""
        limit = int((now - self.max_age) * 1000)
        while self._seen and next(iter(self._seen.values()))[0] < limit:
            self._forget_oldest()


class DigestOutcome(Enum):
    """What `check_credentials` found; the edge turns it into 200-path, 401 or 403."""

    ACCEPTED = "accepted"
    #: The credentials break the rules before any hashing (qop, uri, algorithm, nc format).
    REFUSED = "refused"
    #: The response does not match the password.
    WRONG = "wrong"
    #: Right password, but the nonce expired or was forgotten: challenge again, stale=true.
    STALE = "stale"
    #: Right password, but this nonce count was used already: a replay.
    REPLAYED = "replayed"
    #: The request this nonce count was accepted with, retransmitted: answer it again.
    RETRANSMITTED = "retransmitted"


@dataclass(frozen=True)
class DigestCheck:
    """An outcome and a short reason for the security log (never a secret)."""

    outcome: DigestOutcome
    reason: str


_NC_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")


def check_credentials(
    params: Mapping[str, str], *, method: str, request_uri: str, password: str,
    secret: bytes, counts: NonceCounts, now: float, body: bytes = b"",
    max_age: float = 300.0, algorithms: Iterable[str] = SERVER_ALGORITHMS,
    request_key: bytes | None = None,
) -> DigestCheck:
    """Check credentials answering our challenge (`make_challenges`), replays included.

    The rules, in order: qop must be present (we always offer ``auth``), the algorithm one
    we offered, the ``uri`` the Request-URI, ``nc`` eight hex digits; then the response
    must match ``password``; then the nonce must be ours and fresh; then ``nc`` must exceed
    every count this nonce was accepted with. `counts` is updated only on acceptance.

    `request_key` fingerprints the request (see `request_fingerprint`): the last accepted
    count again with the same fingerprint is RETRANSMITTED, not REPLAYED. Without one, every
    repeat is a replay.
    """
    qop = params.get("qop")
    if qop is None:
        return DigestCheck(DigestOutcome.REFUSED, "qop missing")
    if qop.lower() not in ("auth", "auth-int"):
        return DigestCheck(DigestOutcome.REFUSED, "qop not offered")
    offered = {name.upper() for name in algorithms}
    if params.get("algorithm", "MD5").upper() not in offered:
        return DigestCheck(DigestOutcome.REFUSED, "algorithm not offered")
    if not digest_uri_matches(params.get("uri", ""), request_uri):
        return DigestCheck(DigestOutcome.REFUSED, "uri mismatch")
    nc_text = params.get("nc", "")
    if not _NC_RE.fullmatch(nc_text) or not params.get("cnonce"):
        return DigestCheck(DigestOutcome.REFUSED, "bad nonce count")
    if not verify_response(dict(params), method=method, password=password, body=body):
        return DigestCheck(DigestOutcome.WRONG, "bad password")
    nonce = params["nonce"]
    if not check_nonce(secret, nonce, now, max_age=max_age):
        return DigestCheck(DigestOutcome.STALE, "nonce expired")
    state = counts.advance(nonce, int(nc_text, 16), now, request_key)
    if state == "retransmission":
        return DigestCheck(DigestOutcome.RETRANSMITTED, "retransmission")
    if state == "replayed":
        return DigestCheck(DigestOutcome.REPLAYED, "nonce count reused")
    if state == "forgotten":
        return DigestCheck(DigestOutcome.STALE, "nonce forgotten")
    return DigestCheck(DigestOutcome.ACCEPTED, "ok")


def request_fingerprint(*, call_id: str, cseq: str, branch: str, source: str,
                        credentials: str) -> bytes:
    """16 bytes naming one request: what a UDP retransmission repeats and a replay cannot.

    `cseq` is the CSeq header ("2 INVITE"), `source` the sender's address and port and
    transport, `credentials` the Authorization header as received.
    """
    digest = hashlib.blake2b(digest_size=16)
    for part in (call_id, cseq, branch, source, credentials):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    return digest.digest()

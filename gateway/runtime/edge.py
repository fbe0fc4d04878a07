"""The SIP edge: the request filter the user agent asks before it acts on any request.

Toll fraud starts with one INVITE from a stranger, so every request passes through
`SipEdge.filter` first. The policy, in order:

1. **Trunks are trusted.** A source that matches an address a configured trunk's registrar
   or proxy resolved to (IP and, by default, the port of that RFC 3263 target) is accepted
   without digest, the way providers expect; fail2ban's ``ignoreip`` should list them too.
   A UDP source address can be spoofed, so trunks still have rate limits, only higher
   ones (`TRUNK_LIMITS`, or per trunk from the config): a flood over them is dropped and
   logged as a ``trunk-rate-limited`` event, which fail2ban does not ban on.
2. **Rate limits.** Every other source draws on `RateLimiter`. A limited request is dropped
   without an answer (a scanner learns nothing and costs nothing), and one ``rate-limited``
   event per source per window is logged with the count.
3. **In dialog.** The user agent says when a request belongs to a dialog with that peer;
   those are accepted (the dialog was authorised when it was set up).
4. **ACK and CANCEL** are accepted too: neither can be challenged (RFC 3261 22.1), neither
   creates anything, and the user agent only matches them to transactions it already has.
5. **Everyone else authenticates as a local user** (`LocalUsers`). Without credentials for
   our realm: 401 with a fresh nonce, the same answer whatever user or extension the request
   names, and decided without looking at the name, so scanners cannot enumerate
   extensions. The challenge is one WWW-Authenticate header per offered algorithm sharing
   one nonce, each ``qop="auth"`` (RFC 8760); `SipEdge` and the daemon offer MD5 then SHA-256
   unless told otherwise (``security.digest_algorithms``; one default, `auth.SERVER_ALGORITHMS`).
   With credentials: unknown user and wrong password both get the same 403, after the same
   amount of hashing, an ``auth-failure`` event and an auth-failure on the rate limiter
   (which locks the source out after a few). So do credentials that break the rules before any hashing: no qop, an
   algorithm we did not offer, or a digest ``uri`` that is not this Request-URI (a header
   captured from another request). A correct password with an old nonce gets 401
   ``stale=true``. A correct password with a nonce count already used (the same header sent
   again, from anywhere, with any Call-ID) is a replay: it is logged and counted as an
   auth failure, and answered 401 ``stale=true`` so an honest client recovers. The one
   exception is the accepted request itself retransmitted (same Call-ID, CSeq, Via branch,
   source address and header): UDP resends a request whose answer was late or lost, and
   when no server transaction absorbs the copy it is accepted again (``retransmitted``) so
   the user agent gives it the same answer, instead of locking the phone's address out.

Sources outside `local_networks` (when the list is given) are dropped outright. Requests
that are not authenticated log an ``unknown-source`` event, once per source per window with
a count. Answers to unknown sources carry only the challenge: never a line's number.

`SipEdge` is pure (``now`` comes in, security events go to the log); `build_edge` makes one
from the config, and `gateway.runtime.trunk_trust` keeps its trunk addresses fresh from DNS.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.security.acl import SourceAcl, TrunkSource
from gateway.security.events import (
    AUTH_FAILURE,
    RATE_LIMITED,
    TRUNK_RATE_LIMITED,
    UNKNOWN_SOURCE,
    log_event,
)
from gateway.security.permissions import CallSource, Permissions, TargetPolicy
from gateway.security.ratelimit import Budget, RateLimiter, RateLimits, Verdict, source_key
from gateway.security.routeguard import RouteGuard, default_policies
from gateway.security.trunk_addresses import SourceAddress, TrunkHost, by_trunk, is_ip_literal
from gateway.sip import auth
from gateway.sip.errors import SipError
from gateway.sip.events import Accept, Drop, FilterVerdict, Respond
from gateway.sip.message import Request

Address = tuple[str, int]

#: Seconds an issued nonce stays good; older ones get ``stale=true``.
NONCE_MAX_AGE: Final = 300.0
#: How long a source that authenticated stays "known" (no unknown-source events).
KNOWN_SOURCE_TTL: Final = 3600.0
#: Bound on the per-source tables this module keeps itself.
MAX_TRACKED: Final = 4096
#: How many authenticated INVITEs' users are remembered for `call_source`.
MAX_CALL_USERS: Final = 1024
#: Methods that are never challenged (see the module docstring).
UNCHALLENGED: Final[frozenset[str]] = frozenset({"ACK", "CANCEL"})
#: A trusted trunk's budgets: five times a stranger's, as UDP source addresses can be spoofed.
TRUNK_LIMITS: Final = RateLimits(request=Budget(rate=100.0, burst=500.0),
                                 call=Budget(rate=10.0, burst=60.0))
#: Bound on the nonces whose counts are remembered (see `auth.NonceCounts`).
MAX_NONCES: Final = 4096

_ACCEPT: Final = Accept()


class LocalUsers(Protocol):
    """Who may authenticate as a local SIP user: user name to password, None if unknown.

    `build_edge` makes one from the config's ``sip_phones`` (`users_from_config`).
    """

    def password_for(self, username: str) -> str | None:
        """The user's password, or None when there is no such user."""
        ...


class StaticUsers:
    """`LocalUsers` from a fixed mapping; empty by default (nobody but trunks gets in)."""

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        self._users = dict(users or {})

    def password_for(self, username: str) -> str | None:
        """The configured password for `username`, or None."""
        return self._users.get(username)

    def __len__(self) -> int:
        return len(self._users)


@dataclass
class _Throttle:
    window_start: float
    suppressed: int = 0


class SipEdge:
    """Decides for each incoming request: accept, answer (401/403), or drop."""

    def __init__(
        self,
        acl: SourceAcl,
        *,
        realm: str,
        nonce_secret: bytes,
        users: LocalUsers | None = None,
        limiter: RateLimiter | None = None,
        trunk_limits: Mapping[str, RateLimits] | None = None,
        event_window: float = 60.0,
        nonce_max_age: float = NONCE_MAX_AGE,
        logger: logging.Logger | None = None,
        digest_algorithms: Iterable[str] = auth.SERVER_ALGORITHMS,
    ) -> None:
        """`nonce_secret` signs our nonces; any random bytes, fresh per start is fine.

        `digest_algorithms` is the challenge offer, best first; ``("MD5",)`` for phones
        that cannot skip a challenge they do not know (see `auth.make_challenges`).
        """
        if not realm or '"' in realm or "\\" in realm:
            raise ValueError(f"realm: expected a plain non-empty string, got {realm!r}")
        if len(nonce_secret) < 16:
            raise ValueError("nonce_secret: expected at least 16 bytes")
        algorithms = tuple(name.upper() for name in digest_algorithms)
        if not algorithms or not set(algorithms) <= auth.SERVER_SUPPORTED:
            raise ValueError(f"digest_algorithms: expected some of "
                             f"{sorted(auth.SERVER_SUPPORTED)}, got {list(algorithms)}")
        self.digest_algorithms = algorithms
        self.acl = acl
        self.realm = realm
        self.users: LocalUsers = users if users is not None else StaticUsers()
        self.limiter = limiter if limiter is not None else RateLimiter()
        #: Budgets per trunk name (`TRUNK_LIMITS` for a trunk not named here).
        self.trunk_limits: dict[str, RateLimits] = dict(trunk_limits or {})
        self._trunk_limiters: dict[str, RateLimiter] = {}
        self.event_window = event_window
        self.nonce_max_age = nonce_max_age
        self.logger = logger
        self._secret = nonce_secret
        #: Stand-in password hashed for unknown users, so they cost the same as known ones;
        #: random per edge, so nobody can answer for a user that does not exist.
        self._dummy_password = secrets.token_hex(16)
        self._nonce_counts = auth.NonceCounts(max_entries=MAX_NONCES, max_age=nonce_max_age)
        self._unknown: OrderedDict[str, _Throttle] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()
        self._call_users: OrderedDict[str, str] = OrderedDict()
        self._call_trunks: OrderedDict[str, str] = OrderedDict()
        #: Verdict counts: trunk, in_dialog, unchallenged, authenticated, challenged,
        #: stale, replayed, forbidden, rate_limited, rejected, bad_source.
        self.stats: dict[str, int] = dict.fromkeys(
            ("trunk", "in_dialog", "unchallenged", "authenticated", "challenged", "stale",
             "replayed", "forbidden", "rate_limited", "rejected", "bad_source"), 0)
        self.stats["trunk_rate_limited"] = 0  # trusted trunk sources over their own budget
        self.stats["retransmitted"] = 0  # an accepted request resent (not a replay)

    # ------------------------------------------------------------------ the filter

    def filter(self, request: Request, source: Address, transport: str, now: float,
               in_dialog: bool) -> FilterVerdict:
        """The `UserAgent(request_filter=...)` hook; never raises."""
        ip, port = source
        try:
            decision = self.acl.check(ip, port, any_port=transport.lower() != "udp")
        except ValueError:
            self.stats["bad_source"] += 1
            return Drop("source is not an IP address")
        if decision.is_trunk:
            limited = self._trunk_rate_limited(decision.trunk or "", request.method.upper(),
                                               ip, port, now)
            if limited is not None:
                return limited
            self.stats["trunk"] += 1
            if request.method.upper() == "INVITE" and decision.trunk is not None:
                # Remember it: the source port of a TCP/TLS call says nothing later on.
                self._call_trunks[request.call_id] = decision.trunk
                while len(self._call_trunks) > MAX_CALL_USERS:
                    self._call_trunks.popitem(last=False)
            return _ACCEPT
        method = request.method.upper()
        verdict = self.limiter.check_request(ip, method, now)
        if verdict.limited:
            self._rate_limited(verdict, ip, port, method, now)
            return Drop(f"rate limited ({verdict.bucket})")
        if in_dialog:
            self.stats["in_dialog"] += 1
            return _ACCEPT
        if decision.rejected:
            self.stats["rejected"] += 1
            self._unknown_source(ip, port, method, "outside local networks", now)
            return Drop("unknown source")
        if method in UNCHALLENGED:
            self.stats["unchallenged"] += 1
            return _ACCEPT
        return self._authenticate(request, method, ip, port, now)

    def call_source(self, call_id: str, source: Address) -> CallSource | None:
        """Who placed an incoming call the filter let in: a trunk or a local user.

        None when neither applies (the call came in some other way); callers should then
        refuse to route it anywhere that costs money.
        """
        trunk = self._call_trunks.get(call_id)
        if trunk is not None:
            return CallSource.trunk(trunk)
        try:
            decision = self.acl.check(*source)
        except ValueError:
            return None
        if decision.is_trunk and decision.trunk is not None:
            return CallSource.trunk(decision.trunk)
        user = self._call_users.get(call_id)
        return CallSource.local_user(user) if user is not None else None

    @property
    def nonces_tracked(self) -> int:
        """How many nonces' counts are remembered now (bounded by `MAX_NONCES`)."""
        return len(self._nonce_counts)

    def with_trunk_sources(self, sources: Iterable[TrunkSource]) -> None:
        """Swap in new trunk addresses (fresh DNS answers); limits and counters are kept."""
        self.acl = self.acl.with_trunks(sources)

    def _trunk_rate_limited(self, trunk: str, method: str, ip: str, port: int,
                            now: float) -> Drop | None:
        """A trusted trunk over its own budget: Drop, with one event per window."""
        limiter = self._trunk_limiters.get(trunk)
        if limiter is None:
            limiter = RateLimiter(self.trunk_limits.get(trunk, TRUNK_LIMITS))
            self._trunk_limiters[trunk] = limiter
        verdict = limiter.check_request(ip, method, now)
        if not verdict.limited:
            return None
        self.stats["trunk_rate_limited"] += 1
        if verdict.first:
            log_event(TRUNK_RATE_LIMITED, ip, port, logger=self.logger, method=method,
                      trunk=trunk, bucket=verdict.bucket, suppressed=verdict.suppressed)
        return Drop(f"trunk rate limited ({verdict.bucket})")

    # ------------------------------------------------------------------ authentication

    def _challenge(self, *, stale: bool, now: float) -> Respond:
        nonce = auth.make_nonce(self._secret, now)
        return Respond(401, "Unauthorized", tuple(
            ("WWW-Authenticate", value)
            for value in auth.make_challenges(self.realm, nonce, stale=stale,
                                              algorithms=self.digest_algorithms)))

    def _credentials(self, request: Request) -> str | None:
        """The first Authorization (or Proxy-Authorization) value that names our realm."""
        for name in ("Authorization", "Proxy-Authorization"):
            for line in request.headers.get_lines(name):
                try:
                    params = auth.parse_authorization(line)
                except SipError:
                    return line  # malformed credentials count as a failed attempt
                if params.get("realm") == self.realm:
                    return line
        return None

    def _authenticate(self, request: Request, method: str, ip: str, port: int,
                      now: float) -> FilterVerdict:
        line = self._credentials(request)
        if line is None:
            # Decided before any user name is looked at: every name gets this same answer.
            self.stats["challenged"] += 1
            self._unknown_source(ip, port, method, "no credentials", now)
            return self._challenge(stale=False, now=now)
        try:
            params = auth.parse_authorization(line)
        except SipError:
            params = {}
        username = params.get("username", "")
        if not params:
            return self._auth_failed(method, ip, port, username, "malformed credentials", now)
        password = self.users.password_for(username) if username else None
        # Hash even for unknown users, so both failures take the same path and time.
        check = auth.check_credentials(
            params, method=method, request_uri=request.uri,
            password=password if password is not None else self._dummy_password,
            secret=self._secret, counts=self._nonce_counts, now=now, body=request.body,
            max_age=self.nonce_max_age, algorithms=self.digest_algorithms,
            request_key=_fingerprint(request, ip, port, line))
        if check.outcome is auth.DigestOutcome.REFUSED:
            return self._auth_failed(method, ip, port, username, check.reason, now)
        if password is None or check.outcome is auth.DigestOutcome.WRONG:
            why = "unknown user" if password is None else "bad password"
            return self._auth_failed(method, ip, port, username, why, now)
        if check.outcome is auth.DigestOutcome.REPLAYED:
            self.stats["replayed"] += 1
            self._count_failure(method, ip, port, username, check.reason, now)
            return self._challenge(stale=True, now=now)
        if check.outcome is auth.DigestOutcome.STALE:
            self.stats["stale"] += 1
            return self._challenge(stale=True, now=now)
        if check.outcome is auth.DigestOutcome.RETRANSMITTED:
            # The accepted request itself again (our answer was late or lost and no
            # transaction absorbed the copy): the user agent answers it again.
            self.stats["retransmitted"] += 1
            return Accept(user=username)
        self.stats["authenticated"] += 1
        self._remember_known(ip, now)
        if method == "INVITE":
            self._call_users[request.call_id] = username
            while len(self._call_users) > MAX_CALL_USERS:
                self._call_users.popitem(last=False)
        return Accept(user=username)  # the registrar binds for this user only

    def _auth_failed(self, method: str, ip: str, port: int, username: str, why: str,
                     now: float) -> FilterVerdict:
        self.stats["forbidden"] += 1
        self._count_failure(method, ip, port, username, why, now)
        return Respond(403, "Forbidden")

    def _count_failure(self, method: str, ip: str, port: int, username: str, why: str,
                       now: float) -> None:
        """An ``auth-failure`` event, and one failure on the source's lock-out budget."""
        log_event(AUTH_FAILURE, ip, port, logger=self.logger, method=method, user=username,
                  reason=why)
        verdict = self.limiter.record_auth_failure(ip, now)
        if verdict.limited:
            self._rate_limited(verdict, ip, port, method, now)

    # ------------------------------------------------------------------ bookkeeping

    def _rate_limited(self, verdict: Verdict, ip: str, port: int, method: str,
                      now: float) -> None:
        self.stats["rate_limited"] += 1
        if verdict.first:
            log_event(RATE_LIMITED, ip, port, logger=self.logger, method=method,
                      bucket=verdict.bucket, suppressed=verdict.suppressed,
                      retry_after=round(verdict.retry_after, 1))

    def _remember_known(self, ip: str, now: float) -> None:
        key = source_key(ip)
        self._known[key] = now
        self._known.move_to_end(key)
        while len(self._known) > MAX_TRACKED:
            self._known.popitem(last=False)

    def _is_known(self, key: str, now: float) -> bool:
        seen = self._known.get(key)
        if seen is None:
            return False
        if now - seen > KNOWN_SOURCE_TTL:
            del self._known[key]
            return False
        return True

    def _unknown_source(self, ip: str, port: int, method: str, why: str, now: float) -> None:
        """One ``unknown-source`` event per source per window, carrying the count since."""
        key = source_key(ip)
        if self._is_known(key, now):
            return
        entry = self._unknown.get(key)
        if entry is not None and now - entry.window_start < self.event_window:
            entry.suppressed += 1
            return
        suppressed = entry.suppressed if entry is not None else 0
        self._unknown[key] = _Throttle(now)
        self._unknown.move_to_end(key)
        while len(self._unknown) > MAX_TRACKED:
            self._unknown.popitem(last=False)
        log_event(UNKNOWN_SOURCE, ip, port, logger=self.logger, method=method, reason=why,
                  suppressed=suppressed)


def _fingerprint(request: Request, ip: str, port: int, credentials: str) -> bytes | None:
    """What a retransmission of `request` repeats exactly (see `auth.request_fingerprint`)."""
    try:
        branch = request.top_via.branch or ""
        cseq = request.headers.get("CSeq") or ""
    except SipError:
        return None
    if not branch or not cseq:
        return None
    return auth.request_fingerprint(call_id=request.call_id, cseq=cseq, branch=branch,
                                    source=f"{ip}:{port}", credentials=credentials)


# ---------------------------------------------------------------------- construction


class _HostPort(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class _Trunk(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def registrar(self) -> _HostPort: ...
    @property
    def proxy(self) -> _HostPort: ...


class _Line(Protocol):
    @property
    def name(self) -> str: ...


class _Gateway(Protocol):
    @property
    def name(self) -> str: ...


class _Security(Protocol):
    @property
    def digest_algorithms(self) -> tuple[str, ...]: ...


class EdgeConfig(Protocol):
    """What `build_edge` and `build_route_guard` read of `gateway.config.schema.Config`."""

    @property
    def gateway(self) -> _Gateway: ...
    @property
    def trunks(self) -> tuple[_Trunk, ...]: ...
    @property
    def lines(self) -> tuple[_Line, ...]: ...
    @property
    def security(self) -> _Security: ...


def trunk_sources_pinned(trunks: Iterable[_Trunk],
                         resolved: Mapping[TrunkHost, Iterable[SourceAddress]] | None = None,
                         *, pin_ports: bool = True) -> tuple[TrunkSource, ...]:
    """Trunk sources: what each registrar and proxy resolved to, each pinned to its port.

    An IP literal is trusted as written, on its configured port. A host name is trusted by
    the (address, port) pairs of its RFC 3263 targets in `resolved` (NAPTR/SRV targets
    with their own ports, or A/AAAA on the configured port); before its first answer it is
    trusted by nothing. Pinning matters wherever the trunk shares an address with strangers
    (a NAT, a hosting provider, loopback in tests); pass ``pin_ports=False`` for providers
    that send from many ports.
    """
    named = by_trunk(resolved or {})
    out: list[TrunkSource] = []
    for trunk in trunks:
        pairs: list[SourceAddress] = []
        for hp in (trunk.registrar, trunk.proxy):
            if is_ip_literal(hp.host):
                pair = (hp.host.strip("[]"), hp.port)
                if pair not in pairs:
                    pairs.append(pair)
        pairs += [p for p in named.get(trunk.name, ()) if p not in pairs]
        if not pin_ports:
            out.append(TrunkSource(trunk.name, tuple(dict.fromkeys(h for h, _ in pairs))))
            continue
        out += [TrunkSource(trunk.name, (host,), port) for host, port in pairs]
    return tuple(out)


class _Phone(Protocol):
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...


def users_from_config(config: object) -> StaticUsers:
    """The local SIP phones (``sip_phones``: user, password) as `LocalUsers`.

    Fixed at start; a config reload that changes phones needs a new edge (issue 9).
    """
    phones: Iterable[_Phone] = getattr(config, "sip_phones", ()) or ()
    return StaticUsers({p.user: p.password for p in phones})


def build_edge(
    config: EdgeConfig,
    *,
    resolved: Mapping[TrunkHost, Iterable[SourceAddress]] | None = None,
    users: LocalUsers | None = None,
    local_networks: Iterable[str] | None = None,
    pin_trunk_ports: bool = True,
    nonce_secret: bytes | None = None,
    limiter: RateLimiter | None = None,
    trunk_limits: Mapping[str, RateLimits] | None = None,
) -> SipEdge:
    """The edge for a config: its trunks trusted, its gateway name as the digest realm.

    `resolved` holds DNS answers for the trunks' host names when they are known already;
    the daemon passes none and lets `gateway.runtime.trunk_trust` fill them in and keep
    them fresh.
    """
    acl = SourceAcl(trunk_sources_pinned(config.trunks, resolved, pin_ports=pin_trunk_ports),
                    None, local_networks)
    realm = config.gateway.name.replace('"', "").replace("\\", "") or "branchline"
    if users is None:
        users = users_from_config(config)
    return SipEdge(acl, realm=realm, users=users, limiter=limiter, trunk_limits=trunk_limits,
                   nonce_secret=nonce_secret if nonce_secret is not None
                   else secrets.token_bytes(32),
                   digest_algorithms=config.security.digest_algorithms)


def build_route_guard(config: EdgeConfig, *, allow: Iterable[str] = (),
                      trunk_hairpin: bool = False,
                      extra: Iterable[TargetPolicy] = ()) -> RouteGuard:
    """The toll-fraud check with the default policies for this config's lines and trunks
    (and `extra` ones, such as the GSM routes' policy)."""
    return RouteGuard(Permissions(default_policies(
        trunks=[t.name for t in config.trunks], lines=[ln.name for ln in config.lines],
        allow=allow, trunk_hairpin=trunk_hairpin, extra=extra)))


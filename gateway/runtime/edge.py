"""The SIP edge: the request filter the user agent asks before it acts on any request.

Toll fraud starts with one INVITE from a stranger, so every request passes through
`SipEdge.filter` first. The policy, in order:

1. **Trunks are trusted.** A source that matches a configured trunk's registrar or proxy
   (IP and, by default, the configured port) is accepted without digest and without rate
   limits, the way providers expect; fail2ban's ``ignoreip`` should list them too.
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
   extensions. The challenge is two WWW-Authenticate headers sharing one nonce, SHA-256
   first and MD5 second (RFC 8760), both ``qop="auth"``. With credentials: unknown user and
   wrong password both get the same 403, after the same amount of hashing, an
   ``auth-failure`` event and an auth-failure on the rate limiter (which locks the source
   out after a few). So do credentials that break the rules before any hashing: no qop, an
   algorithm we did not offer, or a digest ``uri`` that is not this Request-URI (a header
   captured from another request). A correct password with an old nonce gets 401
   ``stale=true``. A correct password with a nonce count already used (the same header sent
   again, from anywhere, with any Call-ID) is a replay: it is logged and counted as an
   auth failure, and answered 401 ``stale=true`` so an honest client recovers.

Sources outside `local_networks` (when the list is given) are dropped outright. Requests
that are not authenticated log an ``unknown-source`` event, once per source per window with
a count. Answers to unknown sources carry only the challenge: never a line's number.

`SipEdge` is pure (``now`` comes in, security events go to the log); `build_edge` and
`resolve_trunk_hosts` are the runtime helpers that make one from the config.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.security.acl import SourceAcl, TrunkSource
from gateway.security.events import AUTH_FAILURE, RATE_LIMITED, UNKNOWN_SOURCE, log_event
from gateway.security.permissions import CallSource, Permissions
from gateway.security.ratelimit import RateLimiter, Verdict, source_key
from gateway.security.routeguard import RouteGuard, default_policies
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
#: Bound on the nonces whose counts are remembered (see `auth.NonceCounts`).
MAX_NONCES: Final = 4096

_ACCEPT: Final = Accept()


class LocalUsers(Protocol):
    """Who may authenticate as a local SIP user: user name to password, None if unknown.

    The survivable registrar will provide the real one; until then there are no local users.
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
        event_window: float = 60.0,
        nonce_max_age: float = NONCE_MAX_AGE,
        logger: logging.Logger | None = None,
    ) -> None:
        """`nonce_secret` signs our nonces; any random bytes, fresh per start is fine."""
        if not realm or '"' in realm or "\\" in realm:
            raise ValueError(f"realm: expected a plain non-empty string, got {realm!r}")
        if len(nonce_secret) < 16:
            raise ValueError("nonce_secret: expected at least 16 bytes")
        self.acl = acl
        self.realm = realm
        self.users: LocalUsers = users if users is not None else StaticUsers()
        self.limiter = limiter if limiter is not None else RateLimiter()
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

    def with_resolved(self, resolved: Mapping[str, Iterable[str]]) -> None:
        """Swap in a trunk ACL with fresh DNS answers; limits and counters are kept."""
        self.acl = self.acl.with_resolved(resolved)

    # ------------------------------------------------------------------ authentication

    def _challenge(self, *, stale: bool, now: float) -> Respond:
        nonce = auth.make_nonce(self._secret, now)
        return Respond(401, "Unauthorized", tuple(
            ("WWW-Authenticate", value)
            for value in auth.make_challenges(self.realm, nonce, stale=stale)))

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
            max_age=self.nonce_max_age)
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
        self.stats["authenticated"] += 1
        self._remember_known(ip, now)
        if method == "INVITE":
            self._call_users[request.call_id] = username
            while len(self._call_users) > MAX_CALL_USERS:
                self._call_users.popitem(last=False)
        return _ACCEPT

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


class EdgeConfig(Protocol):
    """What `build_edge` and `build_route_guard` read of `gateway.config.schema.Config`."""

    @property
    def gateway(self) -> _Gateway: ...
    @property
    def trunks(self) -> tuple[_Trunk, ...]: ...
    @property
    def lines(self) -> tuple[_Line, ...]: ...


def trunk_sources_pinned(trunks: Iterable[_Trunk], *, pin_ports: bool = True
                         ) -> tuple[TrunkSource, ...]:
    """Trunk sources from the config: registrar and proxy, each pinned to its port.

    Pinning matters wherever the trunk shares an address with strangers (a NAT, a hosting
    provider, loopback in tests); pass ``pin_ports=False`` for providers that send from
    many ports.
    """
    out: list[TrunkSource] = []
    for trunk in trunks:
        seen: list[tuple[str, int]] = []
        for hp in (trunk.registrar, trunk.proxy):
            if (hp.host, hp.port) not in seen:
                seen.append((hp.host, hp.port))
        if not pin_ports:
            hosts = tuple(dict.fromkeys(h for h, _ in seen))
            out.append(TrunkSource(trunk.name, hosts))
            continue
        for host, port in seen:
            out.append(TrunkSource(trunk.name, (host,), port))
    return tuple(out)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def resolve_trunk_hosts(config: EdgeConfig, loop: asyncio.AbstractEventLoop
                              ) -> dict[str, list[str]]:
    """Resolve the trunks' host names (not IP literals) to addresses for the ACL.

    A name that does not resolve maps to no addresses: its trunk is not trusted until a
    later `SipEdge.with_resolved` call brings answers.
    """
    out: dict[str, list[str]] = {}
    for trunk in config.trunks:
        for hp in (trunk.registrar, trunk.proxy):
            if _is_ip(hp.host) or hp.host in out:
                continue
            try:
                infos = await loop.getaddrinfo(hp.host, hp.port, type=socket.SOCK_DGRAM)
            except OSError:
                out[hp.host] = []
                continue
            out[hp.host] = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return out


def build_edge(
    config: EdgeConfig,
    *,
    resolved: Mapping[str, Iterable[str]] | None = None,
    users: LocalUsers | None = None,
    local_networks: Iterable[str] | None = None,
    pin_trunk_ports: bool = True,
    nonce_secret: bytes | None = None,
    limiter: RateLimiter | None = None,
) -> SipEdge:
    """The edge for a config: its trunks trusted, its gateway name as the digest realm."""
    acl = SourceAcl(trunk_sources_pinned(config.trunks, pin_ports=pin_trunk_ports),
                    resolved, local_networks)
    realm = config.gateway.name.replace('"', "").replace("\\", "") or "branchline"
    return SipEdge(acl, realm=realm, users=users, limiter=limiter,
                   nonce_secret=nonce_secret if nonce_secret is not None
                   else secrets.token_bytes(32))


def build_route_guard(config: EdgeConfig, *, allow: Iterable[str] = (),
                      trunk_hairpin: bool = False) -> RouteGuard:
    """The toll-fraud check with the default policies for this config's lines and trunks."""
    return RouteGuard(Permissions(default_policies(
        trunks=[t.name for t in config.trunks], lines=[ln.name for ln in config.lines],
        allow=allow, trunk_hairpin=trunk_hairpin)))


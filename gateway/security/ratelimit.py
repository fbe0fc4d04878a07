"""Per-source token buckets for the SIP edge: scanners and password guessers slow to a crawl.

Pure: every entry point takes ``now`` (monotonic seconds) and nothing reads the clock. Each
source has three buckets:

- ``request``: every request it sends;
- ``call``: INVITE and REGISTER, which cost us work (a route, a digest check, a modem);
- ``auth-failure``: failed digest checks. While it is empty, every request from the source
  is refused, so a guesser gets a few tries and then one per refill period.

IPv4 sources are keyed by address, IPv6 sources by their /64, since one host can hold a
whole /64. Memory is bounded: at most `RateLimiter.max_sources` entries, least recently
seen evicted first but sparing sources that still owe an auth-failure penalty, so spoofing
thousands of addresses does not wipe a guesser's record. An idle entry is dropped once all
its buckets would be full and its report window has passed, which loses nothing.

So that a flood does not flood the log too, a `Verdict` says whether it is the first limited
verdict for the source in the current report window (`Verdict.first`); only that one should
become a ``rate-limited`` security event, carrying the count of hits suppressed since.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

Bucket = Literal["request", "call", "auth-failure"]

REQUEST: Final[Bucket] = "request"
CALL: Final[Bucket] = "call"
AUTH_FAILURE: Final[Bucket] = "auth-failure"

#: Methods that draw from the ``call`` bucket as well as the ``request`` bucket.
CALL_METHODS: Final[frozenset[str]] = frozenset({"INVITE", "REGISTER"})

DEFAULT_MAX_SOURCES: Final = 4096
DEFAULT_REPORT_WINDOW: Final = 60.0
#: How many of the least recently seen entries eviction looks at to find one to drop.
_EVICTION_SCAN: Final = 16


@dataclass(frozen=True)
class Budget:
    """A token bucket's shape: `burst` tokens at most, refilled at `rate` tokens per second."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate: expected tokens per second > 0, got {self.rate!r}")
        if not self.burst >= 1:
            raise ValueError(f"burst: expected at least 1 token, got {self.burst!r}")

    @property
    def refill_time(self) -> float:
        """Seconds an empty bucket takes to fill up again."""
        return self.burst / self.rate


@dataclass(frozen=True)
class RateLimits:
    """The three budgets; defaults suit a branch box with a few dozen phones behind one NAT."""

    request: Budget = Budget(rate=20.0, burst=100.0)
    call: Budget = Budget(rate=2.0, burst=30.0)
    #: Five wrong passwords in a row, then one more try per minute.
    auth_failure: Budget = Budget(rate=1.0 / 60.0, burst=5.0)

    def budget(self, bucket: Bucket) -> Budget:
        """The budget for a bucket name."""
        if bucket == REQUEST:
            return self.request
        if bucket == CALL:
            return self.call
        return self.auth_failure


@dataclass(frozen=True)
class Verdict:
    """What to do with one request (or auth failure) from one source.

    `bucket` names the budget that ran out when `allowed` is False. `first` is True for the
    first limited verdict in the source's report window: log one ``rate-limited`` event then
    and stay quiet for the rest of the window. `suppressed` counts the limited verdicts that
    were not reported since the previous report. `retry_after` is the seconds until the
    empty bucket has a token again (for a Retry-After header), 0 when allowed.
    """

    allowed: bool
    bucket: Bucket | None = None
    first: bool = False
    suppressed: int = 0
    retry_after: float = 0.0

    @property
    def limited(self) -> bool:
        """The request must be refused (or dropped) rather than processed."""
        return not self.allowed


_ALLOWED: Final = Verdict(allowed=True)


@dataclass
class _TokenBucket:
    tokens: float
    updated: float

    def refill(self, budget: Budget, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(budget.burst, self.tokens + elapsed * budget.rate)
            self.updated = now

    def wait(self, budget: Budget) -> float:
        """Seconds until one whole token is available (0 if one is there now)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / budget.rate


@dataclass
class _Source:
    buckets: dict[Bucket, _TokenBucket]
    last_seen: float
    reported_at: float | None = None
    suppressed: int = 0
    failures: int = 0  # failed authentications since the entry was made


@dataclass(frozen=True)
class Blocked:
    """A source whose requests are refused now, for `branchline security`.

    `source` is the key requests are counted under (an IPv4 address or an IPv6 /64);
    `bucket` is the budget that ran out (``auth-failure`` is the lock-out after wrong
    passwords); `seconds_left` is how long until it lets a request through again.
    """

    source: str
    bucket: Bucket
    seconds_left: float
    failures: int
    last_seen: float


def source_key(ip: str) -> str:
    """The key a source is counted under: the IPv4 address, or the IPv6 /64 prefix.

    IPv4-mapped IPv6 addresses count as their IPv4 address, so a dual-stack socket cannot
    give one host two budgets.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"source ip: expected an IPv4 or IPv6 address, got {ip!r}") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class RateLimiter:
    """Token buckets per source with bounded memory; see the module docstring for the model."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        max_sources: int = DEFAULT_MAX_SOURCES,
        report_window: float = DEFAULT_REPORT_WINDOW,
    ) -> None:
        if max_sources < 1:
            raise ValueError(f"max_sources: expected at least 1, got {max_sources!r}")
        if not report_window > 0:
            raise ValueError(f"report_window: expected seconds > 0, got {report_window!r}")
        self.limits = limits or RateLimits()
        self.max_sources = max_sources
        self.report_window = report_window
        #: After this long unseen, every bucket is full and the window is over: safe to drop.
        self.idle_after = max(
            self.limits.request.refill_time,
            self.limits.call.refill_time,
            self.limits.auth_failure.refill_time,
            report_window,
        )
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        try:
            return source_key(ip) in self._sources
        except ValueError:
            return False

    # ------------------------------------------------------------------ entry points

    def check_request(self, ip: str, method: str, now: float) -> Verdict:
        """Count one request; INVITE and REGISTER also draw on the call budget.

        Refused while the source's auth-failure budget is exhausted. A refused request
        consumes nothing, so a source that backs off recovers at the configured rate.
        """
        src = self._touch(ip, now)
        penalty = src.buckets[AUTH_FAILURE]
        if penalty.tokens < 1:
            return self._limited(src, AUTH_FAILURE, now)
        wanted: list[Bucket] = [REQUEST]
        if method.upper() in CALL_METHODS:
            wanted.append(CALL)
        for name in wanted:
            if src.buckets[name].tokens < 1:
                return self._limited(src, name, now)
        for name in wanted:
            src.buckets[name].tokens -= 1
        return _ALLOWED

    def record_auth_failure(self, ip: str, now: float) -> Verdict:
        """Count one failed authentication; limited once the source has used up its tries."""
        src = self._touch(ip, now)
        src.failures += 1
        penalty = src.buckets[AUTH_FAILURE]
        if penalty.tokens < 1:
            return self._limited(src, AUTH_FAILURE, now)
        penalty.tokens -= 1
        if penalty.tokens < 1:
            # That was the last try: from now on requests are refused, so report it now.
            return self._limited(src, AUTH_FAILURE, now)
        return _ALLOWED

    def forget(self, ip: str) -> None:
        """Drop a source's state, e.g. after an admin unbans it."""
        self._sources.pop(source_key(ip), None)

    def blocked(self, now: float) -> list[Blocked]:
        """Every source refused right now, the longest lock-out first.

        A source is refused while its auth-failure budget is empty (the lock-out) or while
        its request or call budget is; the first of those that applies is reported.
        """
        self.expire(now)
        out: list[Blocked] = []
        for key, src in self._sources.items():
            for name in (AUTH_FAILURE, REQUEST, CALL):
                budget = self.limits.budget(name)
                bucket = _TokenBucket(src.buckets[name].tokens, src.buckets[name].updated)
                bucket.refill(budget, now)  # a copy: looking must not change the state
                if bucket.tokens < 1:
                    out.append(Blocked(key, name, bucket.wait(budget), src.failures,
                                       src.last_seen))
                    break
        out.sort(key=lambda b: -b.seconds_left)
        return out

    def unblock(self, source: str) -> bool:
        """Lift the limits on a source (an address, or a key `blocked` listed).

        Its state is dropped, so it starts again with full budgets; True if it was known.
        """
        key = source.strip()
        if key not in self._sources:
            try:
                key = source_key(key)
            except ValueError:
                return False
        return self._sources.pop(key, None) is not None

    def expire(self, now: float) -> int:
        """Drop idle entries (also done on every call); returns how many were dropped."""
        dropped = 0
        while self._sources:
            key, src = next(iter(self._sources.items()))
            if now - src.last_seen < self.idle_after:
                break
            del self._sources[key]
            dropped += 1
        return dropped

    # ------------------------------------------------------------------ internals

    def _touch(self, ip: str, now: float) -> _Source:
        key = source_key(ip)
        self.expire(now)
        src = self._sources.get(key)
        if src is None:
            self._make_room(now)
            src = _Source(
                buckets={
                    name: _TokenBucket(self.limits.budget(name).burst, now)
                    for name in (REQUEST, CALL, AUTH_FAILURE)
                },
                last_seen=now,
            )
            self._sources[key] = src
        else:
            self._sources.move_to_end(key)
            src.last_seen = max(src.last_seen, now)
            for name, bucket in src.buckets.items():
                bucket.refill(self.limits.budget(name), now)
        return src

    def _make_room(self, now: float) -> None:
        """Evict one entry if full, preferring one that owes no auth-failure penalty."""
        if len(self._sources) < self.max_sources:
            return
        victim: str | None = None
        for i, (key, src) in enumerate(self._sources.items()):
            if i >= _EVICTION_SCAN:
                break
            penalty = src.buckets[AUTH_FAILURE]
            penalty.refill(self.limits.auth_failure, now)
            if penalty.tokens >= self.limits.auth_failure.burst - 1e-9:
                victim = key
                break
        if victim is None:
            victim = next(iter(self._sources))
        del self._sources[victim]

    def _limited(self, src: _Source, bucket: Bucket, now: float) -> Verdict:
        retry = src.buckets[bucket].wait(self.limits.budget(bucket))
        if src.reported_at is None or now - src.reported_at >= self.report_window:
            suppressed, src.suppressed, src.reported_at = src.suppressed, 0, now
            return Verdict(False, bucket, first=True, suppressed=suppressed, retry_after=retry)
        src.suppressed += 1
        return Verdict(False, bucket, first=False, suppressed=src.suppressed, retry_after=retry)

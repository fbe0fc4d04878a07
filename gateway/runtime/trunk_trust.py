"""Keeps the SIP edge's trusted trunk addresses fresh: the asyncio side of `TrunkAddressBook`.

The book (pure) says which trunk host names are due; this adapter looks them up with the
daemon's RFC 3263 resolver, feeds the answers back, swaps the new trunk sources into the
edge's ACL when they changed, and re-arms one timer for the book's next deadline.

The same answers are where the daemon sends to: `targets_for` gives a trunk host's ordered
targets (kept, like the trust, through a DNS outage for up to the policy's `max_stale`),
and `on_targets` is told which trunks' targets changed, so the registrar and proxy follow
DNS from the one lookup that the ACL uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gateway.runtime.edge import SipEdge, trunk_sources_pinned
from gateway.runtime.resolver import TrunkAnswer
from gateway.security.ratelimit import Budget, RateLimiter, RateLimits
from gateway.security.trunk_addresses import (
    RefreshPolicy,
    TrunkAddressBook,
    TrunkHost,
    is_ip_literal,
    trunk_hosts,
)
from gateway.sip.target import Target

log = logging.getLogger("branchline.security.trunks")


def trunk_limits(trunks: Iterable[Any]) -> dict[str, RateLimits]:
    """Each trunk's own rate limits from its `rate_limit` config section."""
    out: dict[str, RateLimits] = {}
    for trunk in trunks:
        r = trunk.rate_limit
        out[trunk.name] = RateLimits(request=Budget(r.requests_per_second, r.request_burst),
                                     call=Budget(r.calls_per_second, r.call_burst))
    return out


def source_limiter(security: Any) -> RateLimiter:
    """The edge's limiter for sources that are not trunks, from `security.rate_limit`
    (the auth-failure lockout keeps its built-in budget)."""
    r = security.rate_limit
    return RateLimiter(RateLimits(request=Budget(r.requests_per_second, r.request_burst),
                                  call=Budget(r.calls_per_second, r.call_burst)))


class TrunkResolver(Protocol):
    """What the adapter needs of `gateway.runtime.resolver.SipResolver`."""

    async def resolve_trunk_answer(self, host: str, port: int | None, transport: str, *,
                                   server_name: str | None = None) -> TrunkAnswer: ...


class TrunkTrust:
    """Resolves the trunks' host names when due and updates `edge` with what they return."""

    def __init__(self, trunks: Iterable[Any], edge: SipEdge, resolver: TrunkResolver,
                 loop: asyncio.AbstractEventLoop, *, policy: RefreshPolicy | None = None,
                 pin_ports: bool = True, clock: Callable[[], float] | None = None,
                 on_targets: Callable[[set[str]], None] | None = None) -> None:
        """`trunks` are `TrunkConfig`s (name, registrar, proxy, transport).

        `clock` (monotonic seconds) is the loop's by default; tests pass a fake one and call
        `refresh()` themselves. `on_targets` is called after a refresh with the names of the
        trunks whose send targets changed.
        """
        self.trunks = tuple(trunks)
        self.edge = edge
        self.resolver = resolver
        self.loop = loop
        self.pin_ports = pin_ports
        self.clock = clock or loop.time
        self.on_targets = on_targets
        self.book = TrunkAddressBook(trunk_hosts(self.trunks), policy, self.clock())
        self._targets: dict[TrunkHost, tuple[Target, ...]] = {}
        self._no_answer: dict[TrunkHost, bool] = {}  # the last lookup got no answer at all
        self._server_names = {
            t.name: (t.tls.server_name or t.domain) if t.transport == "tls" else None
            for t in self.trunks}
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Look every name up once (trusted from the first answer), then keep them fresh."""
        await self.refresh()

    def stop(self) -> None:
        """Cancel the timer and any lookup in flight."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        """Look up every host that is due, apply the answers, and re-arm the timer."""
        due = self.book.due(self.clock())
        answers = await asyncio.gather(*(self._lookup(h) for h in due))
        now = self.clock()
        changed = False
        before = {h: self._current(h) for h in due}
        for host, answer in zip(due, answers, strict=True):
            changed |= self._apply(host, answer, now)
        if changed:
            self.edge.with_trunk_sources(trunk_sources_pinned(
                self.trunks, self.book.addresses(), pin_ports=self.pin_ports))
        moved = {h.trunk for h in due if self._current(h) != before[h]}
        self._arm()
        if moved and self.on_targets is not None and not self._closed:
            self.on_targets(moved)

    def targets_for(self, trunk: Any, which: Any) -> tuple[Target, ...] | None:
        """Where to send to `which` (the trunk's registrar or proxy) as DNS says now.

        None when `which` is an IP literal (nothing to look up); empty before the first
        answer, after an empty one, and once a DNS outage outlasted `max_stale`.
        """
        if is_ip_literal(which.host):
            return None
        return self._current(TrunkHost(trunk.name, which.host, which.lookup_port,
                                       trunk.transport))

    def lookup_failed(self, trunk: Any, which: Any) -> bool:
        """True when the last lookup for `which` got no answer (rather than no such name)."""
        return self._no_answer.get(TrunkHost(trunk.name, which.host, which.lookup_port,
                                             trunk.transport), False)

    def _current(self, host: TrunkHost) -> tuple[Target, ...]:
        return self._targets.get(host, ()) if self.book.addresses().get(host) else ()

    async def _lookup(self, host: TrunkHost) -> TrunkAnswer | None:
        try:
            return await self.resolver.resolve_trunk_answer(
                host.host, host.port, host.transport,
                server_name=self._server_names.get(host.trunk))
        except Exception:  # a resolver bug must not stop the refreshes
            log.exception("trunk %s: looking up %s failed", host.trunk, host.host)
            return None

    def _apply(self, host: TrunkHost, answer: TrunkAnswer | None, now: float) -> bool:
        self._no_answer[host] = answer is None or (answer.failed and not answer.targets)
        if answer is not None and answer.targets:
            self._targets[host] = answer.targets
            pairs = [(t.host, t.port) for t in answer.targets]
            changed = self.book.answered(host, pairs, answer.ttl, now)
            if changed:
                log.info("trunk %s: %s now trusted as %s", host.trunk, host.host,
                         ", ".join(f"{h}:{p}" for h, p in dict.fromkeys(pairs)))
            return changed
        if answer is not None and not answer.failed:
            changed = self.book.answered(host, (), answer.ttl, now)
            log.warning("trunk %s: DNS has no address for %s; not trusted (retry %d)",
                        host.trunk, host.host, self.book.failures(host))
            return changed
        changed = self.book.failed(host, now)
        log.warning("trunk %s: DNS lookup of %s got no answer; %s (retry %d)", host.trunk,
                    host.host, "no longer trusted" if changed else "kept as it was",
                    self.book.failures(host))
        return changed

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.book.next_deadline()
        if when is None or self._closed:
            return
        self._timer = self.loop.call_later(max(when - self.clock(), 0.0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._task = self.loop.create_task(self.refresh())
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("trunk address refresh failed", exc_info=task.exception())

"""OPTIONS probes (RFC 3261 11): "is this next hop alive?", asked by the runtime.

Why it exists: trunk health (gateway/routing/health.py) needs one probe stream per trunk,
with a sub-second timeout, not one per registration account. The runtime asks for one
probe at a time with `send`; each probe ends in exactly one event:
- `OptionsAnswered(handle, status)` for any final response, whatever its status: a 404 or
  405 proves the peer is there just as well as a 200;
- `OptionsFailed(handle, reason)` when nothing final came back within `timeout`
  ("timeout") or the transport could not reach any target ("transport error").

With several RFC 3263 targets the probe goes to the trunk's preferred (sticky) target,
the one calls would use now; a transport error (ICMP unreachable, refused connection)
moves it on to the next target while time is left. A timeout does not: silence for
`timeout` is exactly what the health monitor wants to hear about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.sip.events import OptionsAnswered, OptionsFailed
from gateway.sip.headers import generate_call_id, generate_tag
from gateway.sip.message import Request, build_request
from gateway.sip.target import Target, TargetSet, as_targets
from gateway.sip.transaction import (
    ClientNonInviteTransaction,
    ResponseReceived,
    TransactionTimedOut,
    TxEvent,
    TxState,
)
from gateway.sip.ua_core import Address, SipCore

#: Probes in flight at once; beyond it `send` fails at once (one per trunk is the norm).
MAX_PROBES = 256
#: Below this, a timeout is treated as this (a transaction needs some time to exist).
MIN_TIMEOUT = 0.01


@dataclass
class _Probe:
    """One OPTIONS request until its outcome."""

    handle: str
    request: Request
    targets: list[Target]
    index: int
    tset: TargetSet | None
    deadline: float
    tried: int = 1
    tx: ClientNonInviteTransaction | None = None


class Probes:
    """The user agent's OPTIONS probes: one transaction per probe, one event per outcome."""

    def __init__(self, core: SipCore) -> None:
        self._core = core
        self._live: dict[str, _Probe] = {}

    def send(self, *, target_uri: str, from_uri: str, dest: Address | Sequence[Target],
             timeout: float, now: float) -> str:
        """Send one OPTIONS; returns its handle (the Call-ID), the key of its outcome."""
        core = self._core
        targets = as_targets(dest, core.transport.lower())
        tset = core.target_set(targets) if len(targets) > 1 else None
        index = tset.start() if tset is not None else 0
        call_id = generate_call_id(core.local_host)
        if len(self._live) >= MAX_PROBES:
            core.emit(OptionsFailed(call_id, "too many probes in flight"))
            return call_id
        req = build_request(
            "OPTIONS", target_uri, from_addr=f"<{from_uri}>;tag={generate_tag()}",
            to_addr=f"<{target_uri}>", call_id=call_id, cseq=1,
            via=core.via(targets[index].transport),
            extra=[("User-Agent", core.user_agent), ("Accept", "application/sdp")])
        probe = _Probe(call_id, req, targets, index, tset,
                       deadline=now + max(timeout, MIN_TIMEOUT))
        self._live[call_id] = probe
        self._transmit(probe, now)
        return call_id

    def _transmit(self, probe: _Probe, now: float) -> None:
        core = self._core
        target = probe.targets[probe.index]
        tx = ClientNonInviteTransaction(probe.request, now, reliable=target.reliable,
                                        timeout=max(probe.deadline - now, MIN_TIMEOUT),
                                        t1=core.t1, t2=core.t2, dest=target.addr)
        tx.transport = target.transport
        tx.server_name = target.server_name
        probe.tx = tx
        core.track(tx, lambda ev, t: self._on_events(probe, tx, ev, t))

    def _next_target(self, probe: _Probe, now: float) -> bool:
        """After a transport error: the same probe to the next untried target, if time is left."""
        if probe.tset is None or now >= probe.deadline:
            return False
        nxt = probe.tset.next_after(probe.index, probe.tried)
        if nxt is None:
            return False
        probe.index = nxt
        probe.tried += 1
        old = probe.request
        headers = old.headers.copy()
        headers.set("Via", self._core.via(probe.targets[nxt].transport))
        headers.set("CSeq", f"{old.cseq.number + 1} OPTIONS")
        probe.request = Request("OPTIONS", old.uri, headers, old.body)
        if probe.tx is not None and probe.tx.state in (TxState.TRYING, TxState.PROCEEDING):
            probe.tx.abandon()
        self._transmit(probe, now)
        return True

    def _on_events(self, probe: _Probe, tx: ClientNonInviteTransaction,
                   events: list[TxEvent], now: float) -> None:
        for event in events:
            if tx is not probe.tx or probe.handle not in self._live:
                return
            if isinstance(event, ResponseReceived):
                status = event.response.status
                if status < 200:
                    continue  # a 100 is no answer yet; the deadline still runs
                if probe.tset is not None:
                    probe.tset.succeeded(probe.index)
                self._finish(probe, OptionsAnswered(probe.handle, status))
            elif isinstance(event, TransactionTimedOut):
                if event.reason == "transport error":
                    if self._next_target(probe, now):
                        continue
                    self._finish(probe, OptionsFailed(probe.handle, "transport error"))
                else:
                    self._finish(probe, OptionsFailed(probe.handle, "timeout"))

    def _finish(self, probe: _Probe, event: OptionsAnswered | OptionsFailed) -> None:
        self._live.pop(probe.handle, None)
        self._core.emit(event)

    def sizes(self) -> dict[str, int]:
        """Entries this part holds (flood tests check they stay bounded)."""
        return {"probes": len(self._live)}


__all__ = ["MAX_PROBES", "Probes"]

"""OPTIONS probes (RFC 3261 11): "is this next hop alive?", asked by the runtime.

Why it exists: trunk health (gateway/routing/health.py) needs one probe stream per trunk,
with a sub-second timeout, not one per registration account. The runtime asks for one
probe at a time with `send`; each probe ends in exactly one event:
- `OptionsAnswered(handle, status)` for any final response, whatever its status: a 404 or
  405 proves the peer is there just as well as a 200;
- `OptionsFailed(handle, reason)` when nothing final came back within `timeout`
  ("timeout") or the transport could not reach any target ("transport error").

With several RFC 3263 targets the same OPTIONS goes to every target at once (one
transaction each, each with its own branch), because the trunk is reachable when any of them
answers: a dead primary must not make a trunk with a live secondary look DOWN. The first
final answer is the outcome. If the target calls would use now (the sticky one) failed in
that probe while another answered, the one that answered becomes sticky, so the next call
or REGISTER goes straight to it instead of waiting out a silent target first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.sip.events import OptionsAnswered, OptionsFailed
from gateway.sip.headers import generate_call_id, generate_tag
from gateway.sip.message import build_request
from gateway.sip.target import Target, TargetSet, as_targets
from gateway.sip.transaction import (
    ClientNonInviteTransaction,
    ResponseReceived,
    TransactionTimedOut,
    TxEvent,
)
from gateway.sip.ua_core import Address, SipCore

#: Probes in flight at once; beyond it `send` fails at once (one per trunk is the norm).
MAX_PROBES = 256
#: Below this, a timeout is treated as this (a transaction needs some time to exist).
MIN_TIMEOUT = 0.01


@dataclass
class _Probe:
    """One OPTIONS probe until every target's transaction has ended."""

    handle: str
    targets: list[Target]
    tset: TargetSet | None
    sticky: int
    live: dict[int, ClientNonInviteTransaction] = field(default_factory=dict)
    answered: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reported: bool = False


class Probes:
    """The user agent's OPTIONS probes: one event per probe, whatever the number of targets."""

    def __init__(self, core: SipCore) -> None:
        self._core = core
        self._live: dict[str, _Probe] = {}

    def send(self, *, target_uri: str, from_uri: str, dest: Address | Sequence[Target],
             timeout: float, now: float) -> str:
        """Send one OPTIONS (to each target); returns its handle, the key of its outcome."""
        core = self._core
        targets = as_targets(dest, core.transport.lower())
        tset = core.target_set(targets) if len(targets) > 1 else None
        call_id = generate_call_id(core.local_host)
        if len(self._live) >= MAX_PROBES:
            core.emit(OptionsFailed(call_id, "too many probes in flight"))
            return call_id
        probe = _Probe(call_id, targets, tset, tset.start() if tset is not None else 0)
        self._live[call_id] = probe
        from_addr = f"<{from_uri}>;tag={generate_tag()}"
        for index, target in enumerate(targets):
            req = build_request(
                "OPTIONS", target_uri, from_addr=from_addr, to_addr=f"<{target_uri}>",
                call_id=call_id, cseq=1 + index, via=core.via(target.transport),
                extra=[("User-Agent", core.user_agent), ("Accept", "application/sdp")])
            tx = ClientNonInviteTransaction(req, now, reliable=target.reliable,
                                            timeout=max(timeout, MIN_TIMEOUT), t1=core.t1,
                                            t2=core.t2, dest=target.addr)
            tx.transport = target.transport
            tx.server_name = target.server_name
            probe.live[index] = tx
            core.track(tx, self._handler(probe, index, tx))
        return call_id

    def _handler(self, probe: _Probe, index: int,
                 tx: ClientNonInviteTransaction) -> Callable[[list[TxEvent], float], None]:
        return lambda events, now: self._on_events(probe, index, tx, events, now)

    def _on_events(self, probe: _Probe, index: int, tx: ClientNonInviteTransaction,
                   events: list[TxEvent], now: float) -> None:
        if probe.handle not in self._live:
            return
        for event in events:
            if probe.live.get(index) is not tx:
                break  # this target is done (e.g. Terminated after TimedOut)
            if isinstance(event, ResponseReceived):
                status = event.response.status
                if status < 200:
                    continue  # a 100 is no answer yet; the deadline still runs
                del probe.live[index]
                probe.answered.append(index)
                if not probe.reported:
                    probe.reported = True
                    self._core.emit(OptionsAnswered(probe.handle, status))
            elif isinstance(event, TransactionTimedOut):
                del probe.live[index]
                probe.failures.append(
                    "transport error" if event.reason == "transport error" else "timeout")
        if not probe.live:
            self._finish(probe)

    def _finish(self, probe: _Probe) -> None:
        """Every target has answered or failed: the outcome if none answered, stickiness."""
        self._live.pop(probe.handle, None)
        if not probe.answered:
            reason = "transport error" if probe.failures and all(
                f == "transport error" for f in probe.failures) else "timeout"
            self._core.emit(OptionsFailed(probe.handle, reason))
            return
        if probe.tset is not None and probe.sticky not in probe.answered \
                and probe.tset.sticky == probe.sticky:
            probe.tset.succeeded(probe.answered[0])

    def sizes(self) -> dict[str, int]:
        """Entries this part holds (flood tests check they stay bounded)."""
        return {"probes": len(self._live)}


__all__ = ["MAX_PROBES", "Probes"]

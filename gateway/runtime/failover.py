"""Ordered failover: one outgoing call tried over a route's targets, in order, until one takes.

`Attempt` is pure (no I/O, no clock): it holds the port, the number, the targets still to
try and why each earlier one failed, and decides whether a failure passes the call on.
`FailoverCalls` is the runtime part, mixed into `Gateway` like `SipCalls`: it routes what a
port dialled, places the current target and, when a target fails before the far end showed
any sign of life (no 180/183/200), places the next one at once on the same port. The port's
machine stays in CALLING throughout (silence, never a reorder in between) and only hears
the last failure when no target is left.

Emergency numbers take every target in health order (`Router.attempt_order(...,
emergency)`), are never refused by the route guard and are logged at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, TrunkConfig
from gateway.lines import events as lev
from gateway.routing.health import HealthState
from gateway.routing.router import NoRoute, RouteDecision, Router
from gateway.routing.targets import (
    FxoTarget,
    GsmTarget,
    LineTarget,
    LocalTarget,
    RouteTarget,
    TrunkTarget,
)
from gateway.runtime import call_end
from gateway.runtime.call_end import CallEnd
from gateway.runtime.ports import LinePort, Port, machine_for
from gateway.runtime.sip_calls import Call
from gateway.security.permissions import CallSource, Denied
from gateway.security.routeguard import LOCAL_TARGET, RouteGuard, trunk_target

log = logging.getLogger("branchline")

#: Final answers that mean "this target cannot take calls now", not "the callee said no":
#: the next target is tried. 4xx such as 403/404/486 are the callee's or the PBX's verdict
#: and end the call (another route would only ring the same busy person).
FAILOVER_STATUSES = frozenset({408, 500, 502, 503, 504})
#: Reasons (the user agent's or the runtime's) that pass the call on whatever the status.
FAILOVER_REASONS = frozenset({"timeout", "transport error", "no address", "no modem",
                              "no such target"})


def fails_over(reason: str, status: int | None) -> bool:
    """Whether a failure of one target (before any 180/183/200) lets the next one be tried."""
    return reason in FAILOVER_REASONS or (status is not None and status in FAILOVER_STATUSES)


@dataclass(frozen=True)
class TargetFailure:
    """One target that did not take the call, and why (for the log and the call record)."""

    target: str
    reason: str
    status: int | None
    at: float

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "result": self.reason, "status": self.status}


@dataclass
class Attempt:
    """One outgoing call from `port` to `number` over `targets`, in the order they are tried.

    `call_ids` are every call id the runtime gave the port for this attempt: the port's
    machine only learns the first, so its later actions (CancelCall, ConnectAudio, HangUp)
    name that one and `current_id` maps them to the call that is live now.
    """

    port: str
    number: str
    targets: tuple[RouteTarget, ...]
    started: float
    emergency: bool = False
    index: int = 0
    failures: list[TargetFailure] = field(default_factory=list)
    call_ids: set[str] = field(default_factory=set)
    current_call: str | None = None
    done: bool = False

    @property
    def target(self) -> RouteTarget | None:
        """The target being tried now; None once every target was tried."""
        return self.targets[self.index] if self.index < len(self.targets) else None

    @property
    def remaining(self) -> tuple[RouteTarget, ...]:
        """Targets not tried yet, after the current one."""
        return self.targets[self.index + 1:]

    def placed(self, call_id: str) -> None:
        """The current target's call got `call_id` on the port."""
        self.call_ids.add(call_id)
        self.current_call = call_id

    def current_id(self, call_id: str | None) -> str | None:
        """The live call for an id the port's machine holds (itself when not ours)."""
        if call_id is not None and call_id in self.call_ids and self.current_call is not None:
            return self.current_call
        return call_id

    def failed(self, reason: str, status: int | None, now: float, *,
               progressed: bool = False) -> RouteTarget | None:
        """The current target failed: the next target to try, or None (the call ends with
        this failure). `progressed`: the far end had already rung or answered."""
        target = self.target
        if target is None or self.done:
            return None
        self.failures.append(TargetFailure(str(target), reason, status, now))
        self.current_call = None
        if progressed or not fails_over(reason, status) or not self.remaining:
            self.done = True
            return None
        self.index += 1
        return self.target

    def history(self) -> list[dict[str, Any]]:
        """Every target tried so far, failed ones with why, the current one last."""
        tried = [f.describe() for f in self.failures]
        if self.target is not None and not self.done:
            tried.append({"target": str(self.target), "result": "placed", "status": None})
        return tried


def ordered_targets(router: Router, decision: RouteDecision,
                    health: Mapping[str, HealthState] | None) -> tuple[RouteTarget, ...]:
    """The targets to try, in order: with trunk health known, the router skips trunks that
    are down (or, for an emergency call, tries them last); without it, the configured order."""
    if health is None:
        return decision.targets
    return router.attempt_order(decision, health)


class FailoverCalls:
    """Routing and ordered failover of outgoing calls; mixed into `Gateway`."""

    config: Config
    loop: asyncio.AbstractEventLoop
    calls: dict[str, Call]
    lines: dict[str, LinePort]
    trunks: dict[str, TrunkConfig]
    router: Router
    route_guard: RouteGuard

    if TYPE_CHECKING:  # provided by Gateway and the other mixins (no stubs at run time:
        # a stub here would shadow them in Gateway's method order)
        def _spawn(self, coro: Any) -> None: ...

        def _place_local_call(self, lp: Port, number: str, now: float,
                              target: Port | None = None) -> None: ...

        def _place_gsm_call(self, lp: Port, group: str, number: str, now: float, *,
                            emergency: bool = False) -> None: ...

        def _place_fxo_call(self, lp: Port, name: str, number: str, now: float, *,
                            emergency: bool = False) -> None: ...

        async def _place_sip_call(self, lp: Port, number: str, trunk_name: str,
                                  attempt: Attempt | None = None) -> None: ...

    # ------------------------------------------------------------------ attempts

    def _attempts(self) -> dict[str, Attempt]:
        attempts: dict[str, Attempt] | None = getattr(self, "attempts", None)
        if attempts is None:
            attempts = {}
            self.attempts = attempts
        return attempts

    @property
    def failover_counts(self) -> dict[str, int]:
        """Attempts moved on to the next target since start, by the target that failed
        (the metrics read it: `branchline_failovers_total`)."""
        counts: dict[str, int] | None = self.__dict__.get("_failover_counts")
        if counts is None:
            counts = self.__dict__["_failover_counts"] = {}
        return counts

    def attempt_for(self, port: Port) -> Attempt | None:
        """The port's latest outgoing attempt (None when it never placed one)."""
        return self._attempts().get(port.name)

    def _health_states(self) -> Mapping[str, HealthState] | None:
        health = getattr(self, "trunk_health", None)
        return health.states() if health is not None else None

    def _route_call(self, lp: Port, number: str, now: float) -> None:
        """Route what `lp` dialled and place the first target that can take it."""
        try:
            decision = self.router.route(number)
        except NoRoute:
            log.info("line %s: no route for %s", lp.name, number)
            lp.machine.call_ended("no route", 404, now)
            self._record_no_leg(lp, number, CallEnd("no-route", "no route 404", 404), now)
            return
        emergency = decision.emergency
        targets = ordered_targets(self.router, decision, self._health_states())
        if emergency:
            log.warning("line %s: EMERGENCY call to %s, targets %s", lp.name, number,
                        ", ".join(str(t) for t in targets) or "none")
        attempt = Attempt(lp.name, decision.number, targets, now, emergency=emergency)
        self._attempts()[lp.name] = attempt
        if not targets:
            log.warning("line %s: call to %s refused: every trunk of the route is down",
                        lp.name, number)
            lp.machine.call_ended("trunk down", 503, now)
            self._record_no_leg(lp, number, CallEnd("trunk-down", "trunk down 503", 503), now)
            return
        self._try_target(lp, attempt, now)

    def _try_target(self, lp: Port, attempt: Attempt, now: float) -> None:
        """Place `attempt`'s current target; targets that cannot exist pass to the next."""
        dest = attempt.target
        if dest is None:
            return
        number = attempt.number
        if isinstance(dest, GsmTarget) and dest.group in {g.name for g in
                                                          self.config.gsm_groups}:
            self._place_gsm_call(lp, dest.group, number, now, emergency=attempt.emergency)
            return
        if isinstance(dest, FxoTarget) and dest.name in getattr(self, "fxo_lines", {}):
            # The exchange line dials it (gateway.runtime.fxo_calls); busy passes it on.
            self._place_fxo_call(lp, dest.name, number, now, emergency=attempt.emergency)
            return
        if isinstance(dest, (GsmTarget, FxoTarget)):
            # No such GSM group or FXO line: the next target, or 404 by name.
            what = (f"no GSM group {dest.group!r}" if isinstance(dest, GsmTarget)
                    else f"no FXO line {dest.name!r}")
            self._target_failed(lp, attempt, "no such target", 404, now, detail=what)
            return
        if not attempt.emergency:
            # Ringing a line of this box, by number or by name, is the "local" policy target.
            guard_target = (trunk_target(dest.name) if isinstance(dest, TrunkTarget)
                            else LOCAL_TARGET)
            verdict = self.route_guard.check(self._call_source(lp), number, guard_target)
            if isinstance(verdict, Denied):
                # A policy verdict on the caller or the number: never routed around.
                log.warning("line %s: call to %s refused: %s", lp.name, number,
                            verdict.reason)
                attempt.done = True
                lp.machine.call_ended("not permitted", verdict.status, now)
                self._record_no_leg(lp, number, call_end.rejected(verdict.status,
                                                                  "not permitted"), now)
                return
        match dest:
            case LocalTarget():
                self._place_local_call(lp, number, now)
                self._note_route(lp)
            case LineTarget(name=name):
                target = self.lines.get(name)
                if target is None:
                    self._target_failed(lp, attempt, "not found", 404, now,
                                        detail=f"no line {name!r}")
                    return
                self._place_local_call(lp, target.number, now, target)
                self._note_route(lp)
            case TrunkTarget(name=trunk):
                if trunk not in self.trunks:
                    self._target_failed(lp, attempt, "no such target", 404, now,
                                        detail=f"no trunk {trunk!r}")
                    return
                self._spawn(self._place_sip_call(lp, number, trunk, attempt))

    def _record_no_leg(self, lp: Port, number: str, cause: CallEnd, now: float) -> None:
        """A call that ended before any leg existed still gets its call record."""
        record: Any = getattr(self, "_record_unplaced", None)
        if record is not None:
            record(lp, number, cause, now)

    def _call_source(self, lp: Port) -> CallSource:
        """Who is calling, for the route guard: a line of this box, or a local SIP user."""
        forwarded_from = getattr(lp, "forwarded_from", None)
        if forwarded_from:  # a call the line forwarded: the line's own permissions
            return CallSource.line(forwarded_from)
        if lp.kind == "phone":
            return CallSource.local_user(getattr(lp.config, "user", lp.name))
        return CallSource.line(lp.name)

    def _note_route(self, lp: Port) -> None:
        """The port's call (just placed on its attempt's current target) carries that target
        and the targets tried before it."""
        call = self.calls.get(lp.call_id or "")
        attempt = self.attempt_for(lp)
        if call is None or attempt is None or attempt.done or attempt.target is None:
            return
        attempt.placed(call.call_id)
        call.route = str(attempt.target)
        call.attempts = attempt.history()

    def _target_failed(self, lp: Port, attempt: Attempt, reason: str, status: int | None,
                       now: float, *, detail: str = "", progressed: bool = False) -> bool:
        """The attempt's current target did not take the call: try the next one (True),
        or give the port's machine this failure (False)."""
        failed = attempt.target
        nxt = attempt.failed(reason, status, now, progressed=progressed)
        why = f"{reason} {status}" if status is not None and str(status) not in reason \
            else reason
        if detail:
            why = f"{why}: {detail}"
        level = logging.WARNING if attempt.emergency else logging.INFO
        if nxt is None:
            log.log(level, "line %s: %s failed (%s)%s", lp.name, failed, why,
                    "" if progressed or len(attempt.failures) <= 1
                    else f", no target left after {len(attempt.failures)}")
            lp.machine.call_ended(reason, status, now)
            return False
        log.log(level, "line %s: %s failed (%s), trying %s", lp.name, failed, why, nxt)
        counts = self.failover_counts
        counts[str(failed)] = counts.get(str(failed), 0) + 1
        self._try_target(lp, attempt, now)
        return True

    def _port_call_failed(self, lp: Port, reason: str, status: int | None,
                          now: float) -> None:
        """A target placed synchronously (a GSM group) could not take the call: fail over
        when the port's attempt allows it, else the port hears the failure."""
        attempt = self.attempt_for(lp)
        if attempt is not None and not attempt.done and attempt.port == lp.name and \
                lp.machine.state is lev.LineState.CALLING:
            self._target_failed(lp, attempt, reason, status, now)
            return
        lp.machine.call_ended(reason, status, now)

    def _sip_call_failed(self, call: Call, reason: str, status: int | None,
                         now: float) -> None:
        """A SIP call leg of `call.port` ended (already through `end_call`): an outgoing one
        that failed before any sign of life passes to the next target; everything else is
        told to the port's machine as before."""
        lp = call.port
        attempt = self.attempt_for(lp)
        if reason == "timeout" and call.direction == "out" and call.state == "setup":
            self._invite_timed_out(call, now)
        ours = (attempt is not None and not attempt.done and call.direction == "out"
                and call.call_id == attempt.current_call)
        if attempt is None or not ours:
            machine_for(lp, call.call_id).call_ended(reason, status, now)  # which of its calls
            return
        if call.state != "setup":  # it rang or was answered: an ordinary end, never failover
            attempt.done = True
            machine_for(lp, call.call_id).call_ended(reason, status, now)
            return
        self._target_failed(lp, attempt, reason, status, now)

    def _invite_timed_out(self, call: Call, now: float) -> None:
        """Tell trunk health an INVITE to the call's trunk got no answer at all."""
        health = getattr(self, "trunk_health", None)
        trunk = call.route.split(":", 1)[1] if call.route and \
            call.route.startswith("trunk:") else None
        if health is not None and trunk is not None:
            try:
                health.invite_timed_out(trunk, now)
            except Exception:  # noqa: BLE001  health must never break a call
                log.exception("trunk health: invite_timed_out(%s) failed", trunk)

    def _current_call_action(self, lp: Port, action: lev.Action) -> lev.Action:
        """The port's machine knows its attempt's first call id only: name the live call."""
        call_id = getattr(action, "call_id", None)
        attempt = self.attempt_for(lp)
        if call_id is None or attempt is None:
            return action
        live = attempt.current_id(call_id)
        if live == call_id:
            return action
        retargeted: lev.Action = replace(action, call_id=live)  # type: ignore[arg-type]
        return retargeted

    def _attempt_live(self, lp: Port, attempt: Attempt | None) -> bool:
        """Whether a target being placed asynchronously is still wanted by its port."""
        if lp.machine.state is not lev.LineState.CALLING:
            return False
        if attempt is None:
            return lp.machine.call_id is None
        return self.attempt_for(lp) is attempt and not attempt.done


"""Blind transfer of a call between two ports of this box, done on the box (no REFER).

Line 1 talks to line 2 (an FXS line or a local SIP phone), flashes, dials line 3 and hangs
up while it rings: the line asks for `TransferCall(held, "103", None)`. The held call's far
leg (the transferee's, on line 2) is offered to line 3 as a new incoming leg whose peer is
that far leg. Meanwhile:

- the transferee hears ringback (played by its port when the port plays tones; a local SIP
  phone hears silence) and line 1 is idle with the transfer pending;
- line 3 answers: the transferee's leg is joined to it, line 1's old leg ends
  ("transferred") and line 1 hears `transfer_result(True)`;
- line 3 is busy, refuses, or rings out (its `timers.ring_no_answer`, or `RECALL_AFTER`
  if that comes first): the new leg ends and line 1 hears `transfer_result(False)`, so it
  rings with the held call (recall, as Cisco SPA and Grandstream ATAs do): picking up
  talks to the transferee again;
- the transferee hangs up first: line 3 stops ringing and line 1 forgets the transfer.

Only a target that is a port of this box (the "local" target: an FXS line's or local
phone's number) is transferred here; any other number fails, and line 1 gets the call back.
The target's forward and do-not-disturb settings are not applied to a transferred call.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.lines import events as lev
from gateway.runtime import call_end
from gateway.runtime.call_end import CallEnd
from gateway.runtime.sip_calls import Call

log = logging.getLogger("branchline")

__all__ = ["RECALL_AFTER", "LocalBlindTransfers"]

RECALL_AFTER = 60.0
"""Seconds the target of a blind transfer may ring before line 1 gets the call back."""


def _transferred() -> CallEnd:
    return CallEnd("transferred", "transferred")


@dataclass
class _Ringing:
    """A transferee's leg offered to the transfer target, until it answers or gives up."""

    line: Any  # the transferor's port: it hears `transfer_result`
    held: Call  # the transferor's leg of the held call
    far: Call  # the transferee's leg of it (its peer)
    target: Call  # the new leg ringing the target, whose peer is `far`
    timer: Any = None  # RECALL_AFTER


class LocalBlindTransfers:
    """Blind transfers joined on the box (see the module docstring)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self._ringing: dict[str, _Ringing] = {}  # target leg's call id -> the transfer

    def start(self, lp: Any, held: Call, number: str, now: float) -> bool:
        """Offer `held`'s far party to the port whose number is `number`; False (nothing
        done) when that is not possible: the caller gives the user the call back."""
        gw = self.gw
        far = held.peer
        finder = getattr(gw, "_local_port_for", None)
        target = finder(number) if far is not None and finder is not None else None
        if far is None or target is None or target is lp or target is far.port \
                or far.state != "connected" or far.call_id not in gw.calls:
            return False
        caller = str(getattr(far.port, "number", "") or "")  # the transferee port's number
        leg = Call(f"local-{secrets.token_hex(8)}", target, "in", caller, "local", now)
        leg.peer = far
        gw.calls[leg.call_id] = leg
        name = getattr(getattr(far.port, "config", None), "display_name", None)
        offered = target.machine.incoming_call(leg.call_id, caller, name, now)
        if offered is not lev.IncomingResult.ACCEPTED:
            gw.end_call(leg, call_end.rejected(486), now)  # its RejectCall finds nothing
            log.info("line %s: transfer of %s to %s: line %s is busy", lp.name,
                     held.call_id, number, target.name)
            return False
        if target.call_id is None or target.machine.call_id == leg.call_id:
            target.call_id = leg.call_id
        leg.state = "ringing"
        ringing = self._ringing[leg.call_id] = _Ringing(lp, held, far, leg)
        ringing.timer = gw.loop.call_later(RECALL_AFTER, self._ring_out, leg.call_id)
        _tone(far.port, "ringback")
        log.info("line %s: blind transfer of %s: ringing line %s for line %s", lp.name,
                 held.call_id, target.name, far.port.name)
        return True

    # -- the target's answer, refusal, and the transferee giving up ----------------------

    def _pop(self, key: str) -> _Ringing | None:
        ringing = self._ringing.pop(key, None)
        if ringing is not None and ringing.timer is not None:
            ringing.timer.cancel()
        return ringing

    def _ring_out(self, key: str) -> None:
        """Nobody answered within RECALL_AFTER: stop the target ringing, recall line 1."""
        ringing = self._ringing.get(key)
        if ringing is None:
            return
        gw = self.gw
        now = gw.loop.time()
        leg = ringing.target
        self.refused(leg, 480, now)
        self.gw_machine(leg).incoming_cancelled(now)
        gw._pump()

    def answered(self, leg: Call, now: float) -> bool:
        """The target answered `leg`: join the transferee to it. False: not ours."""
        ringing = self._pop(leg.call_id)
        if ringing is None:
            return False
        gw = self.gw
        far = ringing.far
        _tone(far.port, None)
        far.peer = leg
        far.held = False
        far.audio = True
        gw.end_call(ringing.held, _transferred(), now)  # line 1 had let go of it
        log.info("line %s: transferred: line %s joined to line %s", ringing.line.name,
                 far.port.name, leg.port.name)
        _result(ringing.line, True, now)
        return True

    def refused(self, leg: Call, status: int, now: float) -> bool:
        """The target is busy, refused or rang out: line 1 gets the call back (recall)."""
        ringing = self._pop(leg.call_id)
        if ringing is None:
            return False
        gw = self.gw
        gw.end_call(leg, call_end.rejected(status, f"line {leg.port.name}"), now)
        _tone(ringing.far.port, None)
        log.info("line %s: transfer to line %s failed (%s): recall", ringing.line.name,
                 leg.port.name, status)
        _result(ringing.line, False, now)
        return True

    def leg_ended(self, call: Call, now: float) -> None:
        """Any leg ended (gateway.runtime.sip_calls `end_call`): the transferee hung up
        while the target rang: stop the ringing and let line 1 forget the transfer."""
        if not self._ringing:
            return
        for key, ringing in list(self._ringing.items()):
            if call is not ringing.far:
                continue
            self._pop(key)
            _tone(call.port, None)
            leg = ringing.target
            if self.gw.end_call(leg, call_end.peer_hangup(call.port.name), now):
                self.gw_machine(leg).incoming_cancelled(now)
            self.gw.end_call(ringing.held, _transferred(), now)
            log.info("line %s: the transferee hung up before line %s answered",
                     ringing.line.name, leg.port.name)
            _result(ringing.line, True, now)  # nothing to give back

    def gw_machine(self, leg: Call) -> Any:
        from gateway.runtime.ports import machine_for

        return machine_for(leg.port, leg.call_id)


def _tone(port: Any, name: str | None) -> None:
    """Ringback to a port that plays tones (an FXS line); a SIP phone's port plays none."""
    if name is not None and hasattr(port, "play_tone"):
        port.play_tone(name)
    elif name is None and getattr(port, "tone_name", None) == "ringback":
        port.stop_tone()


def _result(lp: Any, ok: bool, now: float) -> None:
    result = getattr(lp.machine, "transfer_result", None)
    if result is not None:
        result(ok, now)

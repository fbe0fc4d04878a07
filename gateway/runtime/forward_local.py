"""Call forward for calls between ports of this box: an FXS line or a local phone (or a
call forwarded once already) calling an FXS line that is forwarded.

The forwarded call gets a transient `ForwardPort` (gateway.runtime.forwarding) that dials
the forward number as the forwarding line would (router, route guard with that line's
permissions, its trunk account, a Diversion header), showing the original caller. The
caller's own leg waits meanwhile (`ForwardPort.caller_call`), the handset hearing
ringback. The forward port's machine says what became of the forward:

- alerting: the caller hears ringback (it may be hearing it already: no answer); early
  media (a trunk's 183 with SDP) is handed over as an answer is, for the caller to hear;
- answered: the caller's port takes the forward port's call over (the target line's leg
  or the trunk's dialog now talks to the caller), the waiting leg ends as "forwarded";
- refused or failed: the caller hears it (busy, reorder).

A caller that hangs up first gives the forward up (`caller_left`). A call forwarded again
has the previous forward port as its caller; each forward counts one hop, and past
`MAX_FORWARD_HOPS` a line rings as if it were not forwarded (A -> B -> A loops end there,
with one log line saying so).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from gateway.lines import events as lev
from gateway.lines.features import Forward, Refuse
from gateway.lines.sip_phone import AlertPhone, AnswerPhone, ByePhone, RefusePhone
from gateway.runtime import call_end
from gateway.runtime.call_end import CallEnd
from gateway.runtime.forwarding import (
    MAX_FORWARD_HOPS,
    ForwardPort,
    _decision,
    caller_of,
    caller_status,
    forward_port,
    no_answer_forward,
)
from gateway.runtime.ports import machine_for
from gateway.runtime.sip_calls import Call

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

log = logging.getLogger("branchline")

__all__ = ["arm_no_answer", "caller_left", "forward_local", "hops_of"]


def hops_of(port: Any) -> int:
    """How many times a call from `port` was forwarded already."""
    return port.hops if isinstance(port, ForwardPort) else 0


def _loop_stop(target: Any, lp: Any, number: str, hops: int) -> bool:
    """True (and one warning) when a call that went through `hops` - 1 forwards must not
    be forwarded again."""
    if hops <= MAX_FORWARD_HOPS:
        return False
    caller, _ = caller_of(lp)
    log.warning("line %s: call from %s not forwarded to %s: forwarded %d times already "
                "(limit %d, a forward loop?); the line rings instead", target.name, caller,
                number, hops - 1, MAX_FORWARD_HOPS)
    return True


def forward_local(gw: Gateway, lp: Any, target: Any, now: float) -> bool:
    """A call from port `lp` to FXS line `target`: DND refuses it, forward always/busy
    send it on (True: done here); else the target is to ring (False)."""
    if getattr(target, "kind", None) != "fxs" or target is lp:
        return False
    decision = _decision(gw, target)
    if isinstance(decision, Refuse):
        log.info("line %s: call from %s refused %d (%s)", target.name, lp.name,
                 decision.status, decision.why)
        lp.machine.call_ended(decision.why, decision.status, now)
        return True
    if not isinstance(decision, Forward):
        return False
    hops = hops_of(lp) + 1
    if _loop_stop(target, lp, decision.number, hops):
        return False
    log.info("line %s: call from %s forwarded (%s) to %s", target.name, lp.name,
             decision.why, decision.number)
    waiting = Call(f"local-{secrets.token_hex(8)}", lp, "out", target.number, "local", now)
    gw.calls[waiting.call_id] = waiting
    lp.call_id = waiting.call_id
    lp.machine.set_call_id(waiting.call_id)
    _start(gw, lp, waiting, target, decision.number, decision.why, hops, now)
    return True


def arm_no_answer(gw: Gateway, caller: Call, ringing: Call) -> None:
    """Target line `ringing.port` rings for `caller`'s leg: with forward on no answer set,
    the call goes to the forward number when that time runs out."""
    armed = no_answer_forward(gw, ringing.port)
    if armed is not None:
        after, number = armed
        gw.loop.call_later(after, _no_answer, gw, ringing.call_id, ringing.port.name, number)


def _no_answer(gw: Gateway, call_id: str, line: str, number: str) -> None:
    ringing = gw.calls.get(call_id)
    if ringing is None or ringing.state != "ringing" or ringing.port.name != line:
        return  # answered, or over
    waiting = ringing.peer
    if waiting is None or gw.calls.get(waiting.call_id) is not waiting:
        return
    lp, target = waiting.port, ringing.port
    hops = hops_of(lp) + 1
    if _loop_stop(target, lp, number, hops):
        return
    now = gw.loop.time()
    waiting.peer = None  # the caller's leg waits for the forward
    gw.end_call(ringing, CallEnd("forwarded", f"forwarded on no answer to {number}"), now)
    machine_for(target, call_id).incoming_cancelled(now)  # the line stops ringing
    log.info("line %s: call from %s not answered; forwarded to %s", line, lp.name, number)
    _start(gw, lp, waiting, target, number, "no-answer", hops, now)
    gw._pump()


def _start(gw: Gateway, lp: Any, waiting: Call, target: Any, number: str, why: str,
           hops: int, now: float) -> None:
    """A forward port for `target` dials `number` for the caller `lp`, whose leg
    `waiting` waits for it."""
    caller, caller_name = caller_of(lp)
    before = lp.invite_headers if isinstance(lp, ForwardPort) else ()
    port = forward_port(gw, target, why, caller=caller, caller_name=caller_name, hops=hops,
                        before=before)
    port.caller_port, port.caller_call = lp.name, waiting.call_id
    port.line.on_signal = lambda signal, port=port: _signal(gw, port, signal)
    gw.ports[port.name] = port
    port.line.phone_dialled(number, now)


def _signal(gw: Gateway, port: ForwardPort, signal: Any) -> None:
    """What the forward port's machine says about the forwarded call, for its caller."""
    now = gw.loop.time()
    caller = gw.ports.get(port.caller_port or "")
    waiting = gw.calls.get(port.caller_call or "")
    live = caller is not None and waiting is not None and waiting.port is caller
    match signal:
        case AlertPhone(early_media=True) if live and not port.handed_over:
            assert caller is not None and waiting is not None
            _hand_over(gw, port, caller, waiting, now, answered=False)  # its announcement
        case AlertPhone() if live:
            assert caller is not None and waiting is not None
            machine_for(caller, waiting.call_id).call_progress(180, now)
        case AnswerPhone():
            if live:
                assert caller is not None and waiting is not None
                _hand_over(gw, port, caller, waiting, now)
            else:
                port.line.phone_hung_up(now)  # the caller is gone: hang up the target
        case RefusePhone(status=status) if live and not port.handed_over:
            assert caller is not None and waiting is not None
            status = caller_status(status)
            gw.end_call(waiting, call_end.rejected(status, f"forwarded by line "
                                                           f"{port.forwarded_from}"), now)
            machine_for(caller, waiting.call_id).call_ended(
                "busy" if status == 486 else "forward failed", status, now)
        case ByePhone() if live and not port.handed_over:
            assert caller is not None and waiting is not None
            gw.end_call(waiting, call_end.peer_hangup(port.name), now)
            machine_for(caller, waiting.call_id).call_ended("remote hangup", None, now)
        case _:
            pass
    if port.line.state is lev.LineState.IDLE:
        gw.loop.call_soon(_drop, gw, port)


def _hand_over(gw: Gateway, port: ForwardPort, caller: Any, waiting: Call,
               now: float, *, answered: bool = True) -> None:
    """The forward target answered (or sent early media: its ringback or announcement is
    the caller's to hear): the caller's port takes the call over."""
    call = gw.calls.get(port.line.call_id or port.call_id or "")
    if call is None:
        port.line.phone_hung_up(now)
        return
    port.handed_over = True
    call.port = caller
    port.call_id = None
    gw.end_call(waiting, CallEnd("forwarded", f"answered at {call.remote}"), now)
    caller.call_id = call.call_id
    replace = getattr(caller.machine, "replace_call", None)
    if replace is None or not replace(waiting.call_id, call.call_id):
        caller.machine.set_call_id(call.call_id)
    log.info("line %s: forwarded call from %s %s (%s)", port.forwarded_from, caller.name,
             "answered" if answered else "hears the target's early media", call.call_id)
    if answered:
        machine_for(caller, call.call_id).call_answered(now)
    else:
        machine_for(caller, call.call_id).call_progress(183, now, early_media=True)
    port.line.call_ended("handed over", None, now)  # the forward port is done


def caller_left(gw: Gateway, port: Any) -> None:
    """Port `port` went idle: a forward still placed for its call is given up."""
    for fp in [p for p in gw.ports.values() if isinstance(p, ForwardPort)
               and p.caller_port == port.name and not p.handed_over
               and p.caller_call not in gw.calls
               and p.line.state is not lev.LineState.IDLE]:
        log.info("line %s: caller %s hung up; forward %s given up", fp.forwarded_from,
                 port.name, fp.name)
        fp.line.phone_hung_up(gw.loop.time())


def _drop(gw: Gateway, port: ForwardPort) -> None:
    if port.line.state is lev.LineState.IDLE and gw.ports.get(port.name) is port:
        del gw.ports[port.name]
        getattr(gw, "attempts", {}).pop(port.name, None)  # its route attempt goes too

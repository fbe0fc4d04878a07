"""A port with two calls at run time: what the daemon does for an FXS line's call waiting,
hold and swap, three-way conference and transfer actions (gateway/lines/fxs_calls.py).

The port's `call_id` is the call its handset hears: `ConnectAudio` moves it there and
`DisconnectAudio` takes it away, so a held call is no longer bridged (a held local leg's
phone hears silence) and the bridge needs nothing new for two calls. A conference is the
port's `mixing` (gateway/runtime/bridge.py mixes its legs). Holding a SIP call re-INVITEs
it inactive (gateway/runtime/sip_calls.py `_set_hold`). `TransferCall` goes to the
transfer code (gateway/runtime/transfer.py, `_transfer_call`) when it is there; two local
legs are simply joined here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.lines import events as lev
from gateway.runtime import call_end

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway
    from gateway.runtime.ports import Port
    from gateway.runtime.sip_calls import Call

log = logging.getLogger("branchline")

__all__ = ["carry_out", "line_features"]


def line_features(lc: Any, profile: Any) -> dict[str, Any]:
    """FxsLine keyword arguments from a line's config (LineConfig `features:`, on by
    default) and country profile (the call-waiting tone's period repeats the alert)."""
    out: dict[str, Any] = {}
    features = getattr(lc, "features", None)
    for key in ("call_waiting", "three_way", "transfer_on_hangup"):
        value = getattr(features, key, None)
        if value is not None:
            out[key] = bool(value)
    cadence = getattr(getattr(profile, "call_waiting", None), "cadence", ())
    if cadence and sum(cadence) > 0:
        out["call_waiting_repeat"] = float(sum(cadence))  # the tone's own period
    return out


def carry_out(gw: Gateway, lp: Port, action: lev.Action, now: float) -> bool:
    """Do a multi-call action for `lp`; False for actions the caller still has to do."""
    match action:
        case lev.ConnectAudio(call_id=call_id):
            call = gw.calls.get(call_id)
            if call is not None and call.port is lp:
                lp.call_id = call_id  # the handset hears this call now
            return False
        case lev.DisconnectAudio(call_id=call_id):
            if lp.call_id == call_id:
                lp.call_id = None
            return False
        case lev.HoldCall(call_id=call_id) | lev.ResumeCall(call_id=call_id):
            call = gw.calls.get(call_id)
            if call is not None:
                hold = isinstance(action, lev.HoldCall)
                if call.kind == "sip":
                    gw._set_hold(call, hold, now)
                else:
                    call.held = hold  # a local leg: its phone is simply not bridged
            return True
        case lev.MixCalls(call_ids=call_ids):
            for call_id in call_ids:
                call = gw.calls.get(call_id)
                if call is not None:
                    call.audio = True
            if hasattr(lp, "mixing"):
                lp.mixing = tuple(call_ids)
            log.info("line %s: %s", lp.name,
                     f"conference of {', '.join(call_ids)}" if call_ids else "conference over")
            return True
        case lev.TransferCall():
            transfer = getattr(gw, "_transfer_call", None)
            if transfer is not None:
                transfer(lp, action, now)
            elif not _join_local(gw, lp, action, now):
                log.info("line %s: transfer of %s not possible here", lp.name, action.call_id)
                _transfer_result(lp, False, now)
            return True
    return False


def _transfer_result(lp: Port, ok: bool, now: float) -> None:
    result = getattr(lp.machine, "transfer_result", None)
    if result is not None:
        result(ok, now)


def _join_local(gw: Gateway, lp: Port, action: lev.TransferCall, now: float) -> bool:
    """Attended transfer of two local legs: their two far phones are joined to each other
    and this port's two legs end. False when either leg is not local."""
    if action.replaces is None:
        return False
    held, consult = gw.calls.get(action.call_id), gw.calls.get(action.replaces)
    if held is None or consult is None or held.kind != "local" or consult.kind != "local":
        return False
    a, b = held.peer, consult.peer
    if a is None or b is None:
        return False
    gw.end_call(held, call_end.local_hangup(), now)
    gw.end_call(consult, call_end.local_hangup(), now)
    _pair(a, b)
    log.info("line %s: transferred: %s joined to %s", lp.name, a.port.name, b.port.name)
    _transfer_result(lp, True, now)
    return True


def _pair(a: Call, b: Call) -> None:
    a.peer, b.peer = b, a
    a.held = b.held = False
    a.audio = b.audio = True

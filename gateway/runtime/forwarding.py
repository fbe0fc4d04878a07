"""Call forward, do-not-disturb, star codes and distinctive ring at run time.

The decisions are gateway.lines.features' (pure); this module keeps each FXS line's
`ForwardState` (from the config, changed from the handset, saved to
``<state_dir>/forwarding.json`` with an atomic write so a restart keeps it) and carries
them out:

- **Star codes.** What a line dials is looked at before it is routed: a feature code
  changes the state and the handset hears confirm tone (or reorder: no number, or a
  forward target the line itself may not dial: the router and the route guard are asked
  exactly as if the line dialled it).
- **A SIP call for a line** (`forward_incoming`, from `SipCalls._incoming_call`): DND
  answers 486 (or goes to the busy forward), forward always and forward busy (line not
  idle) send it on at once, forward on no answer lets the line ring that long first.
  A forwarded call is the box's own B2BUA leg: the caller's dialog becomes a transient
  port (`ForwardPort`, a local-phone port whose dialog is the caller's) that dials the
  forward number through the router, the route guard (with the *forwarding line's*
  permissions: a forward to a premium or international number is refused as dialling it
  would be) and ordered failover; its answer answers the caller.
- **A line-to-line call** (`forward_local`): DND refuses with 486, forward always/busy
  re-route the caller's own call to the forward number (one hop).
- **Distinctive ring** (`ring_kwargs`): the call's Alert-Info names a cadence in the
  line's country profile.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.lines import events as lev
from gateway.lines.features import (
    FeatureRequest,
    Forward,
    ForwardState,
    Refuse,
    Ring,
    decide_incoming,
    ring_name,
)
from gateway.lines.sip_phone import SipPhoneLine
from gateway.runtime.phone_port import PhonePort
from gateway.runtime.ports import machine_for
from gateway.store.atomic import write_atomic

if TYPE_CHECKING:
    from gateway.routing.dialplan import DigitMap
    from gateway.runtime.app import Gateway
    from gateway.runtime.sip_calls import Call

log = logging.getLogger("branchline")

STATE_FILE = "forwarding.json"

__all__ = ["ForwardPort", "feature_code", "forward_incoming", "forward_local",
           "forwarding_status", "line_digit_map", "line_setup", "load_forwarding",
           "ring_kwargs"]


@dataclass
class ForwardPort(PhonePort):
    """A forwarded call as a port that dials the forward number: its leg is the caller's
    SIP dialog, or (a caller on this box) none, its caller being `caller_port`'s call."""

    forwarded_from: str = ""
    """The line that forwarded the call: its permissions apply to the number dialled."""
    invite_headers: tuple[tuple[str, str], ...] = ()
    """Sent with the forwarded INVITE: Diversion (RFC 5806), the line and why, newest
    first (a call forwarded again carries every line it passed)."""
    caller: str = ""
    """Who called (a SIP URI or a line's number): shown to the forward target."""
    caller_name: str | None = None
    hops: int = 1
    """How many times this call was forwarded (the Diversion headers it carries)."""
    caller_port: str | None = None
    """A caller on this box: its port, whose call `caller_call` waits for this one."""
    caller_call: str | None = None
    handed_over: bool = False
    """The forward target answered and the caller's port took the call over."""


MAX_FORWARD_HOPS = 5
"""A call forwarded this many times is not forwarded again (A -> B -> A loops): the line
it reached rings as if it had no forward set."""


#: Diversion reasons (RFC 5806) for `decide_incoming`'s `why`.
DIVERSION_REASONS = {"always": "unconditional", "busy": "user-busy", "dnd": "do-not-disturb",
                     "no-answer": "no-answer"}


# ------------------------------------------------------------------ line setup


def line_setup(lc: Any, digit_map: DigitMap) -> dict[str, Any]:
    """FxsLine keyword arguments from a line's `timers` and `features`: the digit map with
    the line's star codes added, the digit and ringing timers, the hook-flash window."""
    from gateway.config.line_features import LineFeatures, LineTimers

    timers = getattr(lc, "timers", None) or LineTimers()
    features = getattr(lc, "features", None) or LineFeatures()
    out = timers.line_kwargs()
    out["digit_map"] = with_star_codes(digit_map, features.star_codes.digit_map_alternatives())
    return out


def line_digit_map(lc: Any, digit_map: DigitMap) -> DigitMap:
    """The digit map of line `lc`: the dial plan's with the line's star codes."""
    return line_setup(lc, digit_map)["digit_map"]  # type: ignore[no-any-return]


def with_star_codes(digit_map: DigitMap, extra: tuple[str, ...]) -> DigitMap:
    """`digit_map` with more alternatives (the line's feature codes)."""
    from gateway.routing.dialplan import DigitMap

    source = digit_map.source.strip()
    inner = source[1:-1] if source.startswith("(") and source.endswith(")") else source
    return DigitMap("(" + "|".join((inner, *extra)) + ")")


# ------------------------------------------------------------------ state


def load_forwarding(gw: Gateway) -> dict[str, ForwardState]:
    """Each FXS line's forward state: what the handset set last, unless the config's own
    settings changed since (then the config's)."""
    path = Path(gw.config.gateway.state_dir) / STATE_FILE
    stored: dict[str, Any] = {}
    try:
        data = json.loads(path.read_text("utf-8"))
        stored = data.get("lines", {}) if isinstance(data, dict) else {}
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("forwarding: %s unreadable (%s); using the config", path, exc)
    out: dict[str, ForwardState] = {}
    for lc in gw.config.lines:
        if lc.type != "fxs":
            continue
        configured = lc.features.forward
        entry = stored.get(lc.name)
        state = configured
        if isinstance(entry, dict) and entry.get("config") == configured.to_json():
            try:
                state = ForwardState.from_json(entry.get("state"))
            except ValueError as exc:
                log.warning("forwarding: line %s: stored state refused (%s)", lc.name, exc)
        out[lc.name] = state
    return out


def _states(gw: Gateway) -> dict[str, ForwardState]:
    """The lines' forward states, loaded on first use; a line whose configured forward
    settings changed (a reload) starts again from them."""
    states: dict[str, ForwardState] | None = getattr(gw, "forward_states", None)
    configured = {lc.name: lc.features.forward for lc in gw.config.lines if lc.type == "fxs"}
    if states is None:
        states = load_forwarding(gw)
        gw.__dict__["forward_states"] = states
    elif configured != gw.__dict__.get("forward_configured"):
        before: dict[str, ForwardState] = gw.__dict__.get("forward_configured") or {}
        for name, forward in configured.items():
            if before.get(name) != forward or name not in states:
                states[name] = forward
        for name in set(states) - set(configured):
            del states[name]
    gw.__dict__["forward_configured"] = configured
    return states


def _save(gw: Gateway) -> None:
    configured = {lc.name: lc.features.forward for lc in gw.config.lines}
    lines = {name: {"config": configured[name].to_json() if name in configured else None,
                    "state": state.to_json()}
             for name, state in _states(gw).items()}
    path = Path(gw.config.gateway.state_dir) / STATE_FILE
    try:
        write_atomic(path, json.dumps({"lines": lines}, indent=1).encode())
    except OSError as exc:
        log.warning("forwarding: cannot save %s (%s); kept until restart", path, exc)


def forwarding_status(gw: Gateway, line: str) -> dict[str, Any] | None:
    """A line's forward and DND state for `branchline status`."""
    state = _states(gw).get(line)
    return None if state is None else state.to_json()


# ------------------------------------------------------------------ star codes


def feature_code(gw: Gateway, lp: Any, number: str, now: float) -> bool:
    """`number` (what `lp` dialled) is one of its feature codes: carry it out and answer
    the handset (True); anything else is a number to route (False)."""
    if getattr(lp, "kind", None) != "fxs":
        return False
    request = lp.config.features.star_codes.parse(number)
    if request is None:
        return False
    ok = request.complete and _may_forward_to(gw, lp.name, request)
    if ok:
        states = _states(gw)
        states[lp.name] = states.get(lp.name, ForwardState()).apply(request)
        _save(gw)
    log.info("line %s: feature %s %s%s: %s", lp.name, request.kind,
             "on" if request.on else "off", f" {request.number}" if request.number else "",
             "done" if ok else "refused")
    lp.machine.feature_done(ok, now)
    return True


def _may_forward_to(gw: Gateway, line: str, request: FeatureRequest) -> bool:
    """A forward target must be one the line could dial: routed, and allowed by the route
    guard for that line (toll-fraud rules)."""
    if not request.on or request.number is None:
        return True
    verdict = _guard(gw, line, request.number)
    if verdict is not None:
        log.warning("line %s: forward to %s refused: %s", line, request.number, verdict)
        return False
    return True


def _guard(gw: Gateway, line: str, number: str) -> str | None:
    """Why `line` may not send a call to `number` (None: it may)."""
    from gateway.routing.router import NoRoute
    from gateway.routing.targets import TrunkTarget
    from gateway.security.permissions import CallSource, Denied
    from gateway.security.routeguard import LOCAL_TARGET, trunk_target

    try:
        decision = gw.router.route(number)
    except NoRoute:
        return "no route"
    if decision.emergency:
        return None
    dest = decision.target
    target = trunk_target(dest.name) if isinstance(dest, TrunkTarget) else LOCAL_TARGET
    verdict = gw.route_guard.check(CallSource.line(line), decision.number, target)
    return verdict.reason if isinstance(verdict, Denied) else None


# ------------------------------------------------------------------ incoming calls


def ring_kwargs(lp: Any, alert_info: str | None) -> dict[str, Any]:
    """`incoming_call` keywords for `lp`: a distinctive ring cadence from Alert-Info."""
    if getattr(lp, "kind", None) != "fxs":
        return {}
    cadence = lp.profile.ring_for(ring_name(alert_info)) if alert_info else None
    return {"ring_cadence": cadence} if cadence else {}


def _decision(gw: Gateway, lp: Any) -> Ring | Forward | Refuse:
    state = _states(gw).get(lp.name)
    if state is None or getattr(lp, "kind", None) != "fxs":
        return Ring()
    return decide_incoming(state, lp.machine.state is not lev.LineState.IDLE)


async def forward_incoming(gw: Gateway, ev: Any, lp: Any, now: float) -> bool:
    """DND or a forward for a SIP call offered to `lp`: answered here (True), or the line
    is to ring (False; `arm_no_answer` then starts the no-answer forward)."""
    decision = _decision(gw, lp)
    if isinstance(decision, Refuse):
        log.info("line %s: call %s refused %d (%s)", lp.name, ev.call_id, decision.status,
                 decision.why)
        gw._refuse_incoming(ev, lp, decision.status, decision.why, now)
        return True
    if isinstance(decision, Forward):
        await _forward_dialog(gw, ev, lp, decision.number, decision.why)
        return True
    return False


def no_answer_forward(gw: Gateway, lp: Any) -> tuple[float, str] | None:
    """(seconds, number) when a call `lp` rings is forwarded if not answered by then.

    Asked once the line rings, so the line is no longer idle: its busy forward (set too)
    must not hide the no-answer one (the call was offered as to an idle line)."""
    state = _states(gw).get(lp.name)
    if state is None or getattr(lp, "kind", None) != "fxs":
        return None
    decision = decide_incoming(state, False)
    if isinstance(decision, Ring) and decision.forward_after and decision.number:
        return decision.forward_after, decision.number
    return None


def arm_no_answer(gw: Gateway, call: Call, caller_name: str | None = None) -> None:
    """The line rings `call` (from `caller_name`, the INVITE's display name): with forward
    on no answer set, forward it when that runs out."""
    armed = no_answer_forward(gw, call.port)
    if armed is not None:
        after, number = armed
        gw.loop.call_later(after, lambda: _no_answer(gw, call.call_id, call.port.name, number,
                                                     caller_name))


def _no_answer(gw: Gateway, call_id: str, line: str, number: str,
               caller_name: str | None = None) -> None:
    from gateway.runtime.call_end import CallEnd

    call = gw.calls.get(call_id)
    if call is None or call.state != "ringing" or call.port.name != line or call.rtp is None:
        return
    now = gw.loop.time()
    lp = call.port
    leg = _leg_from(call)
    call.rtp = None  # the caller's media goes with the dialog to the forward leg
    gw.end_call(call, CallEnd("forwarded", f"forwarded on no answer to {number}"), now)
    machine_for(lp, call_id).incoming_cancelled(now)  # that call, not a waiting one
    log.info("line %s: call %s not answered; forwarded to %s", line, call_id, number)
    _start_forward(gw, lp, leg, number, now, "no-answer", caller=call.remote,
                   caller_name=caller_name)
    gw._pump()


def _leg_from(call: Call) -> Call:
    from gateway.runtime.sip_calls import Call

    return Call(call.call_id, call.port, "in", call.remote, "sip", call.started, rtp=call.rtp,
                answer_sdp=call.answer_sdp, params=call.params, srtp=call.srtp,
                srtp_policy=call.srtp_policy, sdp_id=call.sdp_id)


async def _forward_dialog(gw: Gateway, ev: Any, lp: Any, number: str, why: str) -> None:
    """Take the caller's INVITE as a forward leg: our SDP answer now, the forward call
    placed through the router; its progress and answer go back to the caller."""
    from gateway.runtime.rtp import RtpEndpoint
    from gateway.runtime.sip_calls import Call
    from gateway.sip.errors import SdpError
    from gateway.sip.sdp import SessionDescription
    from gateway.sip.sdp_secure import secure_answer

    assert gw.ua is not None
    cfg = gw.config
    now = gw.loop.time()
    try:
        offer = SessionDescription.parse(ev.sdp)
    except SdpError:
        gw._refuse_incoming(ev, lp, 488, "unreadable SDP", now)
        return
    rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                 (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
    now = gw.loop.time()
    if gw.ua.call_state(ev.call_id) in (None, "ended"):
        rtp.close()  # CANCELled while the socket was being opened
        return
    policy = gw._srtp_policy_for(ev.source)
    sdp_id = secrets.randbits(31)
    try:
        answer, params, selection = secure_answer(
            policy, offer, address=cfg.sip.public_host, port=rtp.port,
            codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1)
    except SdpError:
        rtp.close()
        gw._refuse_incoming(ev, lp, 488, "no usable media", now)
        return
    leg = Call(ev.call_id, lp, "in", ev.from_uri, "sip", now, rtp=rtp, answer_sdp=bytes(answer),
               params=params, srtp=selection, srtp_policy=policy, sdp_id=sdp_id)
    log.info("line %s: call %s from %s forwarded (%s) to %s", lp.name, ev.call_id,
             ev.from_uri, why, number)
    _start_forward(gw, lp, leg, number, now, why, caller=ev.from_uri,
                   caller_name=ev.from_display)
    gw._pump()


def forward_port(gw: Gateway, lp: Any, why: str, *, caller: str,
                 caller_name: str | None, hops: int = 1,
                 before: tuple[tuple[str, str], ...] = ()) -> ForwardPort:
    """A transient port for a call line `lp` forwards (`why`): it dials with the line's
    permissions and account, shows `caller` to the target and names the line in a
    Diversion header (before the `before` ones of earlier forwards)."""
    name = f"fwd:{lp.name}:{secrets.token_hex(3)}"
    user = lp.config.trunk.username if lp.config.trunk is not None else lp.number
    diversion = (f"<sip:{user}@{gw.config.sip.public_host}>"
                 f";reason={DIVERSION_REASONS.get(why, 'unknown')};counter=1")
    return ForwardPort(name, lp.number, lp.name, lp.config, SipPhoneLine(name), gw.loop.time,
                       forwarded_from=lp.name,
                       invite_headers=(("Diversion", diversion), *before),
                       caller=caller, caller_name=caller_name, hops=hops)


def _start_forward(gw: Gateway, lp: Any, leg: Call, number: str, now: float,
                   why: str, *, caller: str, caller_name: str | None) -> None:
    port = forward_port(gw, lp, why, caller=caller, caller_name=caller_name)
    leg.port = port
    port.line.on_signal = lambda signal, port=port: _signal(gw, port, signal)
    gw.ports[port.name] = port
    gw._attach_phone_leg(port, leg)
    port.line.phone_dialled(number, now)


# ------------------------------------------------------------------ caller identity


def caller_of(lp: Any) -> tuple[str, str | None]:
    """Who a call from port `lp` is from, for the target's caller ID: a forwarded call's
    original caller, else the port's own number and name."""
    if isinstance(lp, ForwardPort) and lp.caller:
        return lp.caller, lp.caller_name
    return lp.number, getattr(lp.config, "display_name", None)


def _withheld(caller: str, name: str | None) -> bool:
    user = _user_part(caller).lower()
    return user in ("", "anonymous") or "anonymous.invalid" in caller.lower() or \
        (name or "").lower() in ("anonymous", "withheld")


def _user_part(uri: str) -> str:
    text = uri.strip().strip("<>")
    for scheme in ("sip:", "sips:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    return text.split("@", 1)[0].split(";", 1)[0]


def invite_identity(lp: Any, user: str, domain: str) -> dict[str, Any]:
    """`UserAgent.invite` keywords naming the caller of a call port `lp` places on a trunk
    as `user` (its account there).

    A forwarded call shows its original caller, as an ATA does: From is the caller's
    number (with the caller's name), P-Asserted-Identity (RFC 3325) the forwarding line's
    account (the identity a trunk that screens callers checks and bills), and the
    Diversion header names the line. A withheld caller stays withheld (anonymous From,
    Privacy: id). A line set to ``forwarded_caller_id: line`` sends its own identity."""
    own = f"sip:{user}@{domain}"
    if not isinstance(lp, ForwardPort) or not lp.caller or \
            getattr(getattr(lp.config, "features", None), "forwarded_caller_id",
                    "original") == "line":
        return {"from_uri": own, "display_name": lp.config.display_name}
    if _withheld(lp.caller, lp.caller_name):
        return {"from_uri": "sip:anonymous@anonymous.invalid", "display_name": "Anonymous",
                "asserted_identity": own, "privacy": True}
    return {"from_uri": f"sip:{_user_part(lp.caller)}@{domain}",
            "display_name": lp.caller_name, "asserted_identity": own}


def caller_status(status: int) -> int:
    """The status a forwarded call's caller is given for the forward leg's `status`: a
    trunk's challenge (401/407) was for this box's credentials, never the caller's (its
    phone would answer it and call again): 480."""
    return 480 if status in (401, 407) else status


def _signal(gw: Gateway, port: ForwardPort, signal: Any) -> None:
    from gateway.lines.sip_phone import RefusePhone

    if isinstance(signal, RefusePhone) and caller_status(signal.status) != signal.status:
        signal = RefusePhone(caller_status(signal.status))
    gw._phone_signal(port, signal)
    if port.leg is None and port.line.state is lev.LineState.IDLE:
        gw.loop.call_soon(_drop_port, gw, port)


def _drop_port(gw: Gateway, port: ForwardPort) -> None:
    """The forwarded call is over: the transient port goes."""
    if port.leg is None and port.line.state is lev.LineState.IDLE and \
            gw.ports.get(port.name) is port:
        del gw.ports[port.name]
        getattr(gw, "attempts", {}).pop(port.name, None)  # its route attempt goes too


def forward_port_idle(gw: Gateway, port: Any) -> None:
    """A port went idle: a forward port whose caller is gone is dropped, and a forward
    placed for a caller of this box that hung up is given up."""
    from gateway.runtime.forward_local import caller_left

    if isinstance(port, ForwardPort):
        gw.loop.call_soon(_drop_port, gw, port)
    caller_left(gw, port)


# ------------------------------------------------------------------ line to line


def forward_local(gw: Gateway, lp: Any, target: Any, now: float) -> bool:
    """A call from port `lp` to FXS line `target`: DND refuses it, forward always/busy
    send it on at once (True: done here); else the target is to ring (False)."""
    from gateway.runtime.forward_local import forward_local as local

    return local(gw, lp, target, now)


def arm_local_no_answer(gw: Gateway, caller: Call, ringing: Call) -> None:
    """Line-to-line: the target line rings `ringing` (for the caller's leg `caller`): with
    forward on no answer set, the call goes to the forward number when that runs out."""
    from gateway.runtime.forward_local import arm_no_answer as arm

    arm(gw, caller, ringing)

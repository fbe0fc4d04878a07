"""Call transfer at run time: the handset's `TransferCall` carried out with REFER, a peer's
REFER carried out by us, and INVITE with Replaces taking over a call.

The SIP side is pure (gateway/sip/refer.py); this adapter decides and moves calls:
- `transfer_call` (the line's `TransferCall`, reached through `Gateway._transfer_call`):
  a SIP call is transferred with REFER (blind: Refer-To the dialled number at the call's
  trunk; attended: Refer-To the consultation party with Replaces naming that dialog). The
  REFER's NOTIFYs say how it went: a 2xx ends both our legs (BYE) and tells the line
  `transfer_result(True)`; a failure or no final word within `TRANSFER_TIMEOUT` gives the
  user the call back (`transfer_result(False)`). A blind transfer of a local call is
  done on the box (gateway/runtime/transfer_local.py). Two local legs are joined as
  gateway.runtime.line_calls does; a SIP leg and a local leg are joined here: the far
  phone of the local leg takes over the SIP call.
- A REFER from a call's peer (`ReferReceived`, already checked to come from the peer) is
  carried out only for a call over a trunk, to a host of that trunk, for a number the line
  may call through it (the route guard's toll-fraud rules); the new call goes to that
  trunk. We answer 202, place the new call from
  the same line with Referred-By (and Replaces when the Refer-To carried one), NOTIFY its
  progress, and when it is answered it takes the line over and the old dialog is ended.
- An INVITE with Replaces (RFC 3891) naming a call of ours is answered at once on that
  call's port and the replaced call is ended; one naming nothing of ours gets 481.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.lines import events as lev
from gateway.runtime import call_end
from gateway.runtime.call_end import CallEnd
from gateway.runtime.rtp import RtpEndpoint
from gateway.runtime.sip_calls import Call, route_trunk
from gateway.runtime.transfer_local import LocalBlindTransfers
from gateway.security.permissions import CallSource, Denied
from gateway.security.routeguard import trunk_target
from gateway.sip import events as sev
from gateway.sip.errors import SdpError, SipError
from gateway.sip.refer import parse_replaces, refer_to_value
from gateway.sip.sdp import SessionDescription, build_offer
from gateway.sip.sdp_secure import secure_answer, secure_offer
from gateway.sip.uri import SipUri

log = logging.getLogger("branchline")

#: Seconds to wait for the final NOTIFY of a REFER we sent before giving the call back.
TRANSFER_TIMEOUT = 32.0


def transferred() -> CallEnd:
    """The call was handed to someone else (REFER or Replaces): not a failure."""
    return CallEnd("transferred", "transferred")


@dataclass
class _Outgoing:
    """A REFER we sent for the handset, until its final NOTIFY."""

    line: Any
    held: str
    consult: str | None
    timer: Any = None


class Transfers:
    """Transfer both ways for a running gateway (see the module docstring)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self._out: dict[str, _Outgoing] = {}  # held call id -> our REFER in progress
        self._new: dict[str, str] = {}  # the call a REFER made us place -> the old call
        self.local = LocalBlindTransfers(gw)  # blind transfer to a port of this box

    # -- the handset transfers (TransferCall) --------------------------------------------

    def transfer_call(self, lp: Any, action: lev.TransferCall, now: float) -> None:
        """Carry out the line's `TransferCall`; the line hears `transfer_result` later."""
        gw = self.gw
        held = gw.calls.get(action.call_id)
        consult = gw.calls.get(action.replaces) if action.replaces is not None else None
        if held is None or (action.replaces is not None and consult is None):
            self._result(lp, False, now)
            return
        if consult is not None and held.kind == consult.kind == "local":
            from gateway.runtime.line_calls import _join_local

            if not _join_local(gw, lp, action, now):
                self._result(lp, False, now)
            return
        if consult is not None and "local" in (held.kind, consult.kind):
            self._join_mixed(lp, held, consult, now)
            return
        if consult is None and held.kind == "local":  # blind, joined on the box
            if not action.target or not self.local.start(lp, held, action.target, now):
                self._result(lp, False, now)
            return
        if held.kind != "sip" or gw.ua is None:
            self._result(lp, False, now)
            return
        if consult is not None:
            replaces = gw.ua.replaces(consult.call_id)
            if replaces is None:
                self._result(lp, False, now)
                return
            refer_to = refer_to_value(self._reachable(consult), parse_replaces(replaces))
        else:
            trunk = self._trunk_of(held)
            if trunk is None or not action.target:
                self._result(lp, False, now)
                return
            refer_to = refer_to_value(f"sip:{action.target}@{_trunk_hostport(trunk)}")
        if not gw.ua.refer(held.call_id, refer_to, now, referred_by=f"<{self._our_uri(lp)}>"):
            log.info("line %s: call %s cannot be transferred now", lp.name, held.call_id)
            self._result(lp, False, now)
            return
        log.info("line %s: transferring %s: REFER to %s", lp.name, held.call_id, refer_to)
        pending = _Outgoing(lp, held.call_id, consult.call_id if consult is not None else None)
        pending.timer = gw.loop.call_later(TRANSFER_TIMEOUT, self._timed_out, held.call_id)
        self._out[held.call_id] = pending
        gw._pump()

    def _timed_out(self, held: str) -> None:
        pending = self._out.pop(held, None)
        if pending is not None:
            log.info("call %s: no final NOTIFY for the transfer: the user gets it back", held)
            self._result(pending.line, False, self.gw.loop.time())
            self.gw._pump()

    def _refer_progress(self, ev: sev.ReferProgress, now: float) -> None:
        pending = self._out.get(ev.call_id)
        if pending is None:
            return
        log.info("call %s: transfer %s %s", ev.call_id, "ended" if ev.final else "progress",
                 ev.status)
        if not ev.final:
            return
        del self._out[ev.call_id]
        if pending.timer is not None:
            pending.timer.cancel()
        ok = 200 <= ev.status < 300
        if ok:
            for call_id in (pending.held, pending.consult):
                call = self.gw.calls.get(call_id) if call_id is not None else None
                if call is not None:
                    self.gw._end_call_locally(call, now, transferred())
        self._result(pending.line, ok, now)

    def _join_mixed(self, lp: Any, held: Call, consult: Call, now: float) -> None:
        """One leg SIP, one local: the local leg's far phone takes over the SIP call."""
        gw = self.gw
        sip_leg, local_leg = (held, consult) if held.kind == "sip" else (consult, held)
        far = local_leg.peer
        replace = getattr(far.port.machine, "replace_call", None) if far is not None else None
        if far is None or replace is None or sip_leg.state != "connected" \
                or far.state != "connected" or not replace(far.call_id, sip_leg.call_id):
            self._result(lp, False, now)
            return
        gw.end_call(local_leg, transferred(), now)
        gw.end_call(far, transferred(), now)
        sip_leg.port = far.port
        sip_leg.audio = True
        far.port.call_id = sip_leg.call_id
        if sip_leg.held:
            gw._set_hold(sip_leg, False, now)  # it was on hold for the consultation
        log.info("line %s: transferred: %s joined to line %s", lp.name, sip_leg.call_id,
                 far.port.name)
        self._result(lp, True, now)

    # -- we are transferred (ReferReceived) ----------------------------------------------

    def _refer_received(self, ev: sev.ReferReceived, now: float) -> None:
        gw = self.gw
        ua = gw.ua
        call = gw.calls.get(ev.call_id)
        why = self._refuse_why(call, ev)
        if why is not None:
            status, reason = why
            log.warning("call %s: REFER to %s from %s:%s refused: %s", ev.call_id,
                        ev.refer_to, *ev.source, reason)
            ua.reject_refer(ev.call_id, status, now)
            return
        assert call is not None
        ua.accept_refer(ev.call_id, now)
        gw._spawn(self._place(call, ev))

    def _refuse_why(self, call: Call | None, ev: sev.ReferReceived) -> tuple[int, str] | None:
        """Why a REFER may not be carried out (status, reason), or None."""
        gw = self.gw
        if call is None or call.kind != "sip" or call.state != "connected":
            return 481, "no such call here"
        if getattr(call.port.machine, "replace_call", None) is None:
            return 501, "this port cannot be transferred"
        if any(old == call.call_id for old in self._new.values()):
            return 491, "a transfer of this call is in progress"
        trunk = self._trunk_of(call)
        if trunk is None:
            return 403, "the call runs over no trunk"
        try:
            uri = SipUri.parse(ev.refer_to)
        except SipError:
            return 400, "unreadable Refer-To"
        if not uri.user:
            return 403, "no number in Refer-To"
        hosts = {trunk.domain, trunk.proxy.host, trunk.registrar.host,
                 *(t.host for t in gw.proxy_targets.get(trunk.name, ()))}
        if uri.host not in hosts:
            return 403, f"Refer-To host {uri.host} is not trunk {trunk.name}'s"
        verdict = gw.route_guard.check(CallSource.line(call.port.name), uri.user,
                                       trunk_target(trunk.name), src_addr=ev.source,
                                       call_id=ev.call_id)
        if isinstance(verdict, Denied):
            return verdict.status, f"not permitted: {verdict.reason}"
        return None

    async def _place(self, old: Call, ev: sev.ReferReceived) -> None:
        """The new call of a REFER we accepted, from the old call's port."""
        gw = self.gw
        cfg = gw.config
        trunk = self._trunk_of(old)
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = gw.loop.time()
        if gw.calls.get(old.call_id) is not old:
            rtp.close()  # the old call ended meanwhile: nothing to transfer
            return
        sdp_id = secrets.randbits(31)
        offer, pending = secure_offer(trunk.srtp, build_offer(
            address=cfg.sip.public_host, port=rtp.port,
            codecs=list(trunk.codecs or cfg.sip.codecs), session_id=sdp_id, session_version=1))
        lp = old.port
        lc = lp.config
        account = lp.name if lc.trunk is not None and lc.trunk.name == trunk.name else None
        user = lc.trunk.username if account and lc.trunk else lp.number
        extra = []
        if ev.referred_by:
            extra.append(("Referred-By", ev.referred_by))
        if ev.replaces:
            extra.append(("Replaces", ev.replaces))
        call_id = gw.ua.invite(
            target_uri=ev.refer_to, from_uri=f"sip:{user}@{trunk.domain}",
            dest=gw.proxy_targets.get(trunk.name) or (trunk.proxy.host, trunk.proxy.port),
            sdp=bytes(offer), account_id=account, display_name=lc.display_name, now=now,
            extra=extra)
        new = Call(call_id, lp, "out", ev.refer_to, "sip", now, rtp=rtp, offer=offer,
                   srtp_pending=pending, srtp_policy=trunk.srtp, sdp_id=sdp_id,
                   route=f"trunk:{trunk.name}")
        gw.calls[call_id] = new
        gw._attach_rtp(new)
        self._new[call_id] = old.call_id
        log.info("line %s: transferred by %s: calling %s (%s)", lp.name, old.call_id,
                 ev.refer_to, call_id)
        gw._pump()

    def _new_call_event(self, ev: Any, now: float) -> bool:
        """Progress of a call placed for a REFER: NOTIFY it; answered, it takes over."""
        old_id = self._new.get(ev.call_id)
        if old_id is None:
            return False
        gw = self.gw
        new = gw.calls.get(ev.call_id)
        old = gw.calls.get(old_id)
        if isinstance(ev, sev.CallProgress):
            if new is not None and ev.sdp and new.offer is not None:
                gw._apply_answer(new, ev.sdp, now)
            gw.ua.notify_refer(old_id, 183 if ev.sdp else 180, now)
            return True
        if isinstance(ev, sev.CallAnswered):
            del self._new[ev.call_id]
            if new is None:
                return True
            if old is None or (new.offer is not None and ev.sdp
                               and not gw._apply_answer(new, ev.sdp, now)):
                gw.ua.notify_refer(old_id, 488 if old is not None else 487, now)
                gw._end_call_locally(new, now)
                return True
            new.state, new.answered_at = "connected", now
            gw.ua.notify_refer(old_id, 200, now)
            if old.port.machine.replace_call(old_id, ev.call_id):
                new.audio = old.audio
                old.port.call_id = ev.call_id
                gw._end_call_locally(old, now, transferred())
                log.info("line %s: transfer done: %s replaces %s", new.port.name,
                         ev.call_id, old_id)
            else:
                gw._end_call_locally(new, now)
            return True
        if isinstance(ev, sev.CallEnded):
            del self._new[ev.call_id]
            gw.ua.notify_refer(old_id, ev.status or 487, now)
            if new is not None:
                gw.end_call(new, call_end.from_ua(ev.reason, ev.status, "out"), now)
            log.info("call %s: transfer failed (%s %s); the call goes on", old_id,
                     ev.status, ev.reason)
            return True
        return False

    # -- INVITE with Replaces ------------------------------------------------------------

    def _replacing_invite(self, ev: sev.IncomingCall) -> bool:
        """Take an INVITE with Replaces; False leaves any other INVITE to the usual path."""
        if not ev.replaces:
            return False
        gw = self.gw
        now = gw.loop.time()
        old_id = gw.ua.replaced_call(ev.replaces)
        old = gw.calls.get(old_id) if old_id is not None else None
        source = gw.edge.call_source(ev.call_id, ev.source) if gw.edge else None
        if old is None or old.kind != "sip" or old.state != "connected" \
                or getattr(old.port.machine, "replace_call", None) is None:
            gw.ua.reject(ev.call_id, 481, now)
            return True
        if source is None:
            gw.ua.reject(ev.call_id, 403, now)
            return True
        gw._spawn(self._answer_replacing(ev, old))
        return True

    async def _answer_replacing(self, ev: sev.IncomingCall, old: Call) -> None:
        gw = self.gw
        cfg = gw.config
        try:
            offer = SessionDescription.parse(ev.sdp)
        except SdpError:
            gw.ua.reject(ev.call_id, 488, gw.loop.time())
            gw._pump()
            return
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = gw.loop.time()
        policy = gw._srtp_policy_for(ev.source)
        sdp_id = secrets.randbits(31)
        try:
            answer, params, selection = secure_answer(
                policy, offer, address=cfg.sip.public_host, port=rtp.port,
                codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1)
        except SdpError:
            rtp.close()
            gw.ua.reject(ev.call_id, 488, now)
            gw._pump()
            return
        if gw.calls.get(old.call_id) is not old or not old.port.machine.replace_call(
                old.call_id, ev.call_id):
            rtp.close()
            gw.ua.reject(ev.call_id, 481, now)
            gw._pump()
            return
        new = Call(ev.call_id, old.port, "in", ev.from_uri, "sip", now, rtp=rtp,
                   answer_sdp=bytes(answer), params=params, srtp=selection,
                   srtp_policy=policy, sdp_id=sdp_id, state="connected", audio=old.audio)
        new.answered_at = now
        gw.calls[ev.call_id] = new
        gw._attach_rtp(new)
        gw.ua.answer(ev.call_id, bytes(answer), now)
        gw._start_media(new, params, now)
        old.port.call_id = ev.call_id
        gw._end_call_locally(old, now, transferred())
        log.info("line %s: %s replaces %s (INVITE with Replaces)", new.port.name,
                 ev.call_id, old.call_id)
        gw._pump()

    # -- dispatch --------------------------------------------------------------------------

    def on_sip_event(self, ev: Any) -> bool:
        """Take the events that are transfer business; False for everything else."""
        now = self.gw.loop.time()
        if isinstance(ev, sev.ReferProgress):
            self._refer_progress(ev, now)
            return True
        if isinstance(ev, sev.ReferReceived):
            self._refer_received(ev, now)
            return True
        if isinstance(ev, sev.IncomingCall):
            return self._replacing_invite(ev)
        if isinstance(ev, (sev.CallProgress, sev.CallAnswered, sev.CallEnded)):
            return self._new_call_event(ev, now)
        return False

    # -- helpers ---------------------------------------------------------------------------

    def _result(self, lp: Any, ok: bool, now: float) -> None:
        result = getattr(lp.machine, "transfer_result", None)
        if result is not None:
            result(ok, now)

    def _trunk_of(self, call: Call) -> Any:
        """The trunk a SIP call runs over: its route, else the trunk its peer's URI names,
        else the only trunk."""
        gw = self.gw
        name = route_trunk(call.route)
        if name in gw.trunks:
            return gw.trunks[name]
        try:
            host = SipUri.parse(_plain_uri(call.remote)).host
        except SipError:
            host = ""
        for t in gw.trunks.values():
            if host in (t.domain, t.proxy.host, t.registrar.host):
                return t
        return next(iter(gw.trunks.values())) if len(gw.trunks) == 1 else None

    def _reachable(self, call: Call) -> str:
        """The URI of a call's far party as a transferee can reach it: at its trunk's
        domain, with the proxy's port where `_trunk_hostport` says so."""
        uri = _plain_uri(call.remote)
        trunk = self._trunk_of(call)
        try:
            parsed = SipUri.parse(uri)
        except SipError:
            return uri
        if trunk is not None and parsed.user and parsed.host == trunk.domain \
                and parsed.port is None:
            return f"sip:{parsed.user}@{_trunk_hostport(trunk)}"
        return uri

    def _our_uri(self, lp: Any) -> str:
        gw = self.gw
        lc = lp.config
        if lc.trunk is not None and lc.trunk.name in gw.trunks:
            return f"sip:{lc.trunk.username}@{gw.trunks[lc.trunk.name].domain}"
        return f"sip:{lp.number}@{gw.config.sip.public_host}"


def _trunk_hostport(trunk: Any) -> str:
    """Where the transferee should call: the trunk's domain, with the proxy's port when the
    domain is the proxy itself on a port of its own (else the peer would try 5060)."""
    proxy = trunk.proxy
    if trunk.domain == proxy.host and proxy.port not in (None, 5060):
        return f"{trunk.domain}:{proxy.port}"
    return str(trunk.domain)


def _plain_uri(value: str) -> str:
    """A URI from a name-addr or bare URI, without display name or header parameters."""
    text = value.strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.index(">")]
    return text


__all__ = ["TRANSFER_TIMEOUT", "Transfers", "transferred"]

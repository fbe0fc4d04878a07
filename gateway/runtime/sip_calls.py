"""SIP calls at run time: offers and answers, SRTP, RTP sockets and the user agent's events.

Split from the daemon (`gateway.runtime.app`) so that each stays readable: `Gateway`
inherits these methods and owns the state they use (declared below for type checking).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, TrunkConfig
from gateway.lines import events as lev
from gateway.media.secure import srtp_pair
from gateway.media.stream import MediaStream
from gateway.media.telephone_event import DigitReceived, DigitStarted
from gateway.runtime import call_end
from gateway.runtime.call_end import CallEnd
from gateway.runtime.clock import AudioClock
from gateway.runtime.edge import SipEdge
from gateway.runtime.logs import fields
from gateway.runtime.ports import LinePort, Port, machine_for
from gateway.runtime.rtp import RtpEndpoint
from gateway.security.permissions import Denied
from gateway.security.routeguard import LOCAL_TARGET, RouteGuard
from gateway.sip import events as sev
from gateway.sip.dns import is_ip
from gateway.sip.errors import SdpError
from gateway.sip.sdes import CryptoSelection
from gateway.sip.sdp import MediaParams, SessionDescription, build_offer, params_from_answer
from gateway.sip.sdp_secure import PendingOffer, secure_answer, secure_from_answer, secure_offer
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent

if TYPE_CHECKING:
    from gateway.runtime.failover import Attempt

log = logging.getLogger("branchline")


@dataclass
class Call:
    """One leg of a call on one port: a SIP dialog with its RTP, or a local port-to-port leg.

    `port` is any kind of port (gateway.runtime.ports.Port); the bridge joins it to `rtp`
    or to the peer leg's port.
    """

    call_id: str
    port: Port
    direction: str  # "in" | "out"
    remote: str
    kind: str  # "sip" | "local"
    started: float
    state: str = "setup"
    peer: Call | None = None
    rtp: RtpEndpoint | None = None
    media: MediaStream | None = None
    offer: SessionDescription | None = None
    answer_sdp: bytes | None = None
    params: MediaParams | None = None
    audio: bool = False
    answered_at: float | None = None
    codecs: tuple[str, ...] = ()
    srtp_pending: PendingOffer | None = None
    srtp: CryptoSelection | None = None
    srtp_policy: str = "off"
    held: bool = False  # we put the far end on hold (hook flash)
    hold_pending: bool = False  # our hold/resume re-INVITE awaits its answer
    hold_next: bool | None = None  # hold (True) or resume asked for meanwhile: sent next
    sdp_id: int = field(default_factory=lambda: secrets.randbits(31))
    sdp_version: int = 1  # RFC 3264 8: same o= id, version up by one for each new SDP
    route: str | None = None  # the route target this outgoing call went to, "trunk:main"
    attempts: list[dict[str, Any]] = field(default_factory=list)  # targets tried, in order
    ended: tuple[CallEnd, float] | None = None  # first leg of a port-to-port call to end

    @property
    def line(self) -> Port:
        """The call's port (the name from when every port was an FXS line)."""
        return self.port

    def next_sdp_version(self) -> int:
        self.sdp_version += 1
        return self.sdp_version

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "line": self.port.name,
            "direction": self.direction,
            "remote": self.remote,
            "kind": self.kind,
            "state": self.state,
            "codec": self.params.codec if self.params else None,
            "duration": round(now - self.answered_at, 1) if self.answered_at else 0.0,
            "held": self.held,
            "route": self.route,
            "attempts": self.attempts,
            "stats": self.media.stats() if self.media else {},
            "rtcp": self.media.rtcp_stats() if self.media else {},
        }


@dataclass
class Registration:
    account_id: str
    trunk: str
    aor: str
    registered: bool = False
    reason: str = "starting"
    expires: int | None = None



def route_trunk(route: str | None) -> str | None:
    """The trunk of a route target ("trunk:main" -> "main"), for the journal's TRUNK field."""
    if route is not None and route.startswith("trunk:"):
        return route[len("trunk:"):]
    return None


class SipCalls:
    """The SIP side of calls; mixed into `Gateway`, which provides the state and `_pump`."""

    config: Config
    loop: asyncio.AbstractEventLoop
    ua: UserAgent | None
    calls: dict[str, Call]
    lines: dict[str, LinePort]
    trunks: dict[str, TrunkConfig]
    registrations: dict[str, Registration]
    clock: AudioClock
    edge: SipEdge | None
    route_guard: RouteGuard
    registrar_targets: dict[str, tuple[Target, ...]]
    registrar_dns: dict[str, str]
    proxy_targets: dict[str, tuple[Target, ...]]

    def _pump(self) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def _server_name(self, t: TrunkConfig) -> str | None:
        raise NotImplementedError

    def _end_call_locally(self, call: Call, now: float, cause: CallEnd | None = None) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # gateway.runtime.failover.FailoverCalls (no stubs at run time)
        def _attempt_live(self, lp: Port, attempt: Attempt | None) -> bool: ...

        def _sip_call_failed(self, call: Call, reason: str, status: int | None,
                             now: float) -> None: ...

    async def _place_sip_call(self, lp: Port, number: str, trunk_name: str,
                              attempt: Attempt | None = None) -> None:
        from gateway.runtime.forwarding import invite_identity

        cfg = self.config
        trunk = self.trunks[trunk_name]
        # Kept fresh from DNS by the trunk trust's lookups (and through a DNS outage). A
        # name with no address fails the call now: never send to the bare name (the
        # transport would resolve it on the event loop) nor wait here for DNS.
        targets: tuple[Target, ...] = self.proxy_targets.get(trunk_name, ())
        if not targets and not is_ip(trunk.proxy.host):
            self._fail_unaddressed(lp, number, trunk, attempt)
            return
        rtp = await RtpEndpoint.open(cfg.sip.listen.host, (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if not self._attempt_live(lp, attempt):
            rtp.close()  # the user hung up while the socket was being opened
            return
        assert self.ua is not None
        codecs = list(trunk.codecs or cfg.sip.codecs)
        sdp_id = secrets.randbits(31)
        offer, pending = secure_offer(trunk.srtp, build_offer(
            address=cfg.sip.public_host, port=rtp.port, codecs=codecs,
            session_id=sdp_id, session_version=1,
        ))
        owner = getattr(lp, "forwarded_from", None) or lp.name  # forwarded: the line's account
        account = owner if lp.config.trunk is not None and lp.config.trunk.name == trunk_name else None
        user = lp.config.trunk.username if account and lp.config.trunk else lp.number
        call_id = self.ua.invite(
            target_uri=f"sip:{number}@{trunk.domain}",
            dest=targets or (trunk.proxy.host, trunk.proxy.port),
            sdp=bytes(offer),
            account_id=account,
            now=now,
            extra=getattr(lp, "invite_headers", ()),  # a forwarded call's Diversion
            # From (and a forwarded call's P-Asserted-Identity): gateway.runtime.forwarding
            **invite_identity(lp, user, trunk.domain),
        )
        call = Call(call_id, lp, "out", f"sip:{number}@{trunk.domain}", "sip", now, rtp=rtp,
                    offer=offer, srtp_pending=pending, srtp_policy=trunk.srtp, sdp_id=sdp_id)
        self.calls[call_id] = call
        lp.call_id = call_id
        lp.machine.set_call_id(call_id)
        self._note_attempt(call, attempt)
        self._attach_rtp(call)
        log.info("line %s: calling %s via %s (%s)", lp.name, number, trunk_name, call_id)
        self._pump()

    def _fail_unaddressed(self, lp: Port, number: str, trunk: TrunkConfig,
                          attempt: Attempt | None = None) -> None:
        """The trunk's proxy name has no address: 503 here, the next route target or
        reorder on the line, one log line."""
        now = self.loop.time()
        if not self._attempt_live(lp, attempt):
            return  # the user hung up first
        call = Call(f"unsent-{secrets.token_hex(8)}", lp, "out", f"sip:{number}@{trunk.domain}",
                    "sip", now)
        self.calls[call.call_id] = call
        lp.call_id = call.call_id
        lp.machine.set_call_id(call.call_id)
        self._note_attempt(call, attempt)
        self.end_call(call, call_end.no_address(trunk.name, trunk.proxy.host), now)
        self._sip_call_failed(call, "no address", 503, now)
        self._pump()

    @staticmethod
    def _note_attempt(call: Call, attempt: Attempt | None) -> None:
        """The call is its route attempt's current target: record where it went."""
        if attempt is not None and attempt.target is not None:
            attempt.placed(call.call_id)
            call.route = str(attempt.target)
            call.attempts = attempt.history()

    def _attach_rtp(self, call: Call) -> None:
        if call.rtp is not None:
            call.rtp.on_event = lambda ev, c=call: self._on_media_event(c, ev)

    def _on_media_event(self, call: Call, ev: Any) -> None:
        log.debug("call %s: media event %s", call.call_id, ev)
        if isinstance(ev, DigitStarted) and call.audio and isinstance(call.port, LinePort):
            call.port.start_digit(ev.digit)  # the handset hears it while the key is down
        if isinstance(ev, DigitReceived) and call.audio:
            log.info("call %s: digit %s received (RFC 4733)", call.call_id, ev.digit)
            call.port.play_digit(ev.digit, ev.duration_ms)

    # ------------------------------------------------------------------ media

    def _start_media(self, call: Call, params: MediaParams, now: float) -> None:
        call.params = params
        if call.media is None:
            call.media = MediaStream(
                codec=params.codec,
                payload_type=params.payload_type,
                dtmf_pt=params.telephone_event_pt,
                remote_addr=params.remote_addr,
                ssrc=secrets.randbits(32),
                seq=secrets.randbits(16),
                timestamp=secrets.randbits(32),
                now=self.clock.stream_anchor(now),
                srtp=srtp_pair(call.srtp),
                wallclock_offset=time.time() - self.loop.time(),  # for RTCP's NTP times
                rtcp_addr=params.rtcp_addr,  # the peer's a=rtcp (RFC 3605)
                rtcp_mux=params.rtcp_mux,
            )
            if call.rtp is not None:
                call.rtp.attach(call.media)
        else:
            call.media.update_remote(params.remote_addr, params.codec, params.payload_type,
                                     params.telephone_event_pt, rtcp_addr=params.rtcp_addr,
                                     rtcp_mux=params.rtcp_mux)
            call.media.set_srtp(srtp_pair(call.srtp))
        call.media.set_direction(params.direction)
        host, port = call.media.rtcp_addr
        log.info("call %s: media %s/%s to %s:%s (%s), RTCP %s", call.call_id, params.codec,
                 params.payload_type, *params.remote_addr, params.direction,
                 "muxed on RTP" if params.rtcp_mux else f"to {host}:{port}")

    def _release_media(self, call: Call) -> None:
        if call.rtp is not None:
            call.rtp.send_bye(self.loop.time())
            call.rtp.close()
            call.rtp = None
        call.media = None

    def end_call(self, call: Call, cause: CallEnd, now: float) -> bool:
        """The one place a call leg ends: forget it, free its media, log one line with why.

        Every path (handset, far end, CANCEL, rejection, timeout, shutdown) comes here once
        the signalling is done, so call records hang here too. False when the leg had
        already ended (nothing is done twice).
        """
        if self.calls.get(call.call_id) is not call:
            return False
        del self.calls[call.call_id]
        if call.port.call_id == call.call_id:
            call.port.call_id = None
        # The call record (gateway.runtime.call_records), before the media figures go.
        record: Callable[[Call, CallEnd, float], None] | None = getattr(
            self, "_record_call", None)
        if record is not None:
            record(call, cause, now)
        self._release_media(call)
        transfers = getattr(self, "transfers", None)
        if transfers is not None:  # a transferee hanging up while its target rings
            transfers.local.leg_ended(call, now)
        talked = (f"{now - call.answered_at:.1f} s" if call.answered_at is not None
                  else "not answered")
        log.info("call %s (line %s) ended: %s, %s", call.call_id, call.port.name, cause, talked,
                 extra=fields(line=call.port.name, trunk=route_trunk(call.route),
                              call_id=call.call_id, event="call-ended", sip_code=cause.status))
        return True

    # ------------------------------------------------------------------ SIP events

    def _on_sip_event(self, ev: Any) -> None:
        phone_event: Callable[[Any], bool] | None = getattr(self, "_phone_sip_event", None)
        if phone_event is not None and phone_event(ev):
            return  # a dialog with a local phone (gateway.runtime.phones)
        now = self.loop.time()
        match ev:
            case sev.RegistrationStateChanged():
                reg = self.registrations.get(ev.account_id)
                reason = ev.reason
                if reg is not None and not ev.registered and not self.registrar_targets.get(
                        reg.trunk):
                    # "registrar unreachable" is true but sends admins to the firewall.
                    reason = self.registrar_dns.get(reg.trunk, reason)
                if reg is not None:
                    reg.registered, reg.reason, reg.expires = ev.registered, reason, ev.expires
                log.info("registration %s: %s (%s)", ev.account_id,
                         "registered" if ev.registered else "not registered", reason,
                         extra=fields(trunk=reg.trunk if reg is not None else None,
                                      event="registered" if ev.registered
                                      else "registration-lost"))
            case sev.IncomingCall():
                self._spawn(self._incoming_call(ev))
            case sev.CallProgress():
                call = self.calls.get(ev.call_id)
                if call is None:
                    return
                early = False
                if ev.sdp and call.offer is not None:
                    early = self._apply_answer(call, ev.sdp, now)
                call.state = "early" if early else "ringing"
                machine_for(call.port, call.call_id).call_progress(ev.status, now,
                                                                   early_media=early)
            case sev.CallAnswered():
                call = self.calls.get(ev.call_id)
                if call is None:
                    return
                if call.offer is not None and ev.sdp and not self._apply_answer(call, ev.sdp, now):
                    # Never play media the policy refuses (e.g. plain RTP when SRTP is required).
                    call.state = "connected"
                    self._end_call_locally(call, now, call_end.media_refused(488))
                    machine_for(call.port, call.call_id).call_ended("media refused", 488, now)
                    return
                call.state = "connected"
                call.answered_at = now
                machine_for(call.port, call.call_id).call_answered(now)
            case sev.CallUpdated():
                self._reinvite(ev, now)
            case sev.CallEnded():
                call = self.calls.get(ev.call_id)
                if call is None:
                    return  # already ended here: we hung up, cancelled or rejected it
                lp = call.port
                cause = call_end.from_ua(ev.reason, ev.status, call.direction)
                if call.direction == "in" and call.state != "connected":
                    machine_for(lp, call.call_id).incoming_cancelled(now)
                    self.end_call(call, cause, now)
                else:
                    self.end_call(call, cause, now)
                    # The port hears it, unless the route has a next target to try first.
                    self._sip_call_failed(call, ev.reason, ev.status, now)
            case sev.DtmfInfo():
                call = self.calls.get(ev.call_id)
                if call is not None and call.audio:
                    log.info("call %s: digit %s received (SIP INFO)", ev.call_id, ev.digit)
                    call.port.play_digit(ev.digit, ev.duration_ms or 100)
            case sev.ReinviteAnswered():
                call = self.calls.get(ev.call_id)
                if call is not None and call.offer is not None:
                    call.hold_pending = False
                    self._apply_answer(call, ev.sdp, now)
                    self._hold_next(call, now)
            case sev.ReinviteFailed():
                log.info("call %s: re-INVITE refused (%s); media unchanged", ev.call_id, ev.status)
                call = self.calls.get(ev.call_id)
                if call is not None and call.hold_pending:
                    call.held = not call.held  # the hold (or resume) did not happen
                    call.hold_pending = False
                    self._hold_next(call, now)
            case sev.MessageDropped():
                log.debug("dropped SIP message from %s: %s", ev.source, ev.reason)

    def _apply_answer(self, call: Call, sdp: bytes, now: float) -> bool:
        assert call.offer is not None
        try:
            answer = SessionDescription.parse(sdp)
            params = params_from_answer(call.offer, answer)
            selection = (secure_from_answer(call.srtp_pending, answer)
                         if call.srtp_pending is not None else None)
        except SdpError as exc:
            log.warning("call %s: unusable SDP answer: %s", call.call_id, exc)
            return False
        call.srtp = selection
        self._start_media(call, params, now)
        return True

    def _srtp_policy_for(self, source: tuple[str, int]) -> str:
        """The SRTP policy of the trunk a call came from; unknown sources get best effort."""
        for t in self.trunks.values():
            hosts = {t.registrar.host, t.proxy.host}
            hosts.update(tg.host for tg in self.registrar_targets.get(t.name, ()))
            hosts.update(tg.host for tg in self.proxy_targets.get(t.name, ()))
            if source[0] in hosts:
                return t.srtp
        return "offer"

    def _find_line_for(self, ev: sev.IncomingCall) -> Port | None:
        from gateway.sip.uri import SipUri

        users = set()
        for text in (ev.request_uri, ev.to_uri):
            try:
                users.add(SipUri.parse(text).user)
            except Exception:
                continue
        ports: list[Port] = [*self.lines.values(), *getattr(self, "phone_ports", {}).values()]
        for lp in ports:  # the FXS lines and the local phones, by number or trunk user
            names = {lp.number}
            if lp.config.trunk is not None:
                names.add(lp.config.trunk.username)
            if names & users:
                return lp
        return None

    async def _incoming_call(self, ev: sev.IncomingCall) -> None:
        assert self.ua is not None
        # PhoneCalls._incoming_from_phone: a local phone dialling (True).
        from_phone: Callable[[sev.IncomingCall], Awaitable[bool]] | None = getattr(
            self, "_incoming_from_phone", None)
        if from_phone is not None and await from_phone(ev):
            return
        cfg = self.config
        lp = self._find_line_for(ev)
        now = self.loop.time()
        # GsmCalls._incoming_to_gsm: an INVITE for no line, routed to gsm:<group>, is
        # dialled out or refused there (True); anything else is not a GSM call (False).
        to_gsm: Callable[[sev.IncomingCall], Awaitable[bool]] | None = getattr(
            self, "_incoming_to_gsm", None)
        if lp is None and to_gsm is not None and await to_gsm(ev):
            return
        # FxoCalls._incoming_to_fxo: likewise for a number routed to fxo:<line>.
        to_fxo: Callable[[sev.IncomingCall], Awaitable[bool]] | None = getattr(
            self, "_incoming_to_fxo", None)
        if lp is None and to_fxo is not None and await to_fxo(ev):
            return
        if lp is None:
            self.ua.reject(ev.call_id, 404, now)
            unplaced: Callable[..., None] | None = getattr(self, "_record_unplaced", None)
            if unplaced is not None:
                unplaced(None, ev.request_uri, call_end.rejected(404, "no such line"), now,
                         direction="in", remote=ev.from_uri)
            self._pump()
            return
        source = self.edge.call_source(ev.call_id, ev.source) if self.edge else None
        verdict = (
            self.route_guard.check(source, lp.number, LOCAL_TARGET, src_addr=ev.source,
                                   call_id=ev.call_id)
            if source is not None else None
        )
        if verdict is None or isinstance(verdict, Denied):
            self._refuse_incoming(ev, lp, verdict.status if verdict is not None else 403,
                                  "not permitted", now)
            return
        from gateway.runtime import forwarding

        if await forwarding.forward_incoming(self, ev, lp, now):  # type: ignore[arg-type]
            return  # DND (486) or call forward (gateway.runtime.forwarding)
        try:
            offer = SessionDescription.parse(ev.sdp)
        except SdpError:
            self._refuse_incoming(ev, lp, 488, "unreadable SDP", now)
            return
        rtp = await RtpEndpoint.open(cfg.sip.listen.host, (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        policy = self._srtp_policy_for(ev.source)
        sdp_id = secrets.randbits(31)
        try:
            answer, params, selection = secure_answer(
                policy, offer, address=cfg.sip.public_host, port=rtp.port,
                codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1,
            )
        except SdpError as exc:
            log.info("call %s: no usable media (%s): 488", ev.call_id, exc)
            rtp.close()
            self._refuse_incoming(ev, lp, 488, "no usable media", now)
            return
        call = Call(ev.call_id, lp, "in", ev.from_uri, "sip", now, rtp=rtp,
                    answer_sdp=bytes(answer), params=params, srtp=selection, srtp_policy=policy,
                    sdp_id=sdp_id)
        self.calls[ev.call_id] = call
        self._attach_rtp(call)
        result = lp.machine.incoming_call(ev.call_id, ev.from_uri, ev.from_display, now,
                                          **forwarding.ring_kwargs(lp, ev.alert_info))
        if result is lev.IncomingResult.ACCEPTED:
            forwarding.arm_no_answer(self, call, ev.from_display)  # type: ignore[arg-type]
            if lp.call_id is None or lp.machine.call_id == ev.call_id:
                lp.call_id = ev.call_id  # not a call waiting behind the one in progress
            call.state = "ringing"
            self.ua.ringing(ev.call_id, now)
        self._pump()

    def _refuse_incoming(self, ev: sev.IncomingCall, lp: Port, status: int, why: str,
                         now: float) -> None:
        """Answer `status` to a call for `lp` before it rings; it ends like any other call."""
        assert self.ua is not None
        self.ua.reject(ev.call_id, status, now)
        call = Call(ev.call_id, lp, "in", ev.from_uri, "sip", now)
        self.calls[ev.call_id] = call
        self.end_call(call, call_end.rejected(status, why), now)
        self._pump()

    def _reinvite(self, ev: sev.CallUpdated, now: float) -> None:
        assert self.ua is not None
        call = self.calls.get(ev.call_id)
        if call is None or call.rtp is None:
            return
        try:
            answer, params, selection = secure_answer(
                call.srtp_policy, SessionDescription.parse(ev.sdp),
                address=self.config.sip.public_host, port=call.rtp.port,
                codecs=list(self.config.sip.codecs), session_id=call.sdp_id,
                session_version=call.next_sdp_version(), current=call.srtp,
            )
        except SdpError as exc:
            log.info("call %s: re-INVITE refused: %s", call.call_id, exc)
            self.ua.reject_reinvite(ev.call_id, 488, now)
            return
        call.srtp = selection
        self.ua.answer_reinvite(ev.call_id, bytes(answer), now)
        self._start_media(call, params, now)

    def _toggle_hold(self, call_id: str, now: float) -> None:
        """Hook flash in a call: hold the far end (a=inactive), flash again to resume."""
        call = self.calls.get(call_id)
        if call is not None:
            self._set_hold(call, not call.held, now)

    def _hold_next(self, call: Call, now: float) -> None:
        """Our re-INVITE was answered or refused: send the hold or resume asked for since."""
        wanted, call.hold_next = call.hold_next, None
        if wanted is not None:
            self._set_hold(call, wanted, now)

    def _set_hold(self, call: Call, hold: bool, now: float) -> None:
        """Hold the far end of a SIP call (re-INVITE a=inactive) or resume it (sendrecv)."""
        call_id = call.call_id
        if (call.kind != "sip" or call.state != "connected" or call.rtp is None
                or call.params is None or self.ua is None):
            return
        if call.hold_pending:  # one re-INVITE at a time: this one goes once it is answered
            call.hold_next = None if hold == call.held else hold
            return
        if call.held == hold:
            return
        offer, pending = secure_offer(call.srtp_policy, build_offer(
            address=self.config.sip.public_host, port=call.rtp.port,
            codecs=[call.params.codec], dtmf_pt=call.params.telephone_event_pt or 101,
            direction="inactive" if hold else "sendrecv",
            session_id=call.sdp_id, session_version=call.next_sdp_version(),
        ))
        if call.params.rtcp_mux:  # RFC 5761 5.1.3: a re-offer keeps asking for the mux
            offer.media[0].attributes.append(("rtcp-mux", None))
        call.offer, call.srtp_pending, call.held, call.hold_pending = offer, pending, hold, True
        log.info("call %s: %s", call_id, "hold" if hold else "resume")
        self.ua.reinvite(call_id, bytes(offer), now)

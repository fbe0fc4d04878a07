"""Local SIP phones at run time: the box as their back-to-back user agent.

Mixed into `Gateway` like `SipCalls` and `GsmCalls`. Each `sip_phones[]` entry is a
`PhonePort` (kind "phone") in `self.ports`, so every call path that works for a port works
for a phone:

- **From a phone:** an INVITE from a source the edge authenticated as a local user is that
  user's phone dialling. The dialog is accepted as the phone's *leg* (100 now, 180 or 183
  as the far end alerts, 200 with our SDP when it answers) and the phone's machine asks
  for `PlaceCall(number)`: the same router, route guard (`CallSource.local_user`) and call
  paths as an FXS line's call.
- **To a phone:** a call routed to a phone's number (an FXS line dialling it, another
  phone, the trunk's INVITE for the phone's upstream user) rings every binding the phone
  registered (forked INVITEs from one RTP port); the first 200 wins and the other forks
  are CANCELled (one that answers anyway gets a BYE). No binding: 480.
- **Upstream relay:** a phone with `trunk:` gets a registration account on that trunk
  (id = the port's name, contact = the box) while it has a local binding and the trunk is
  not DOWN; the PBX's calls for that user then ring the phone.

The dialogs with the phones are not in the call table (`self.calls` holds the port-level
legs the bridge joins); their SIP events are taken here first (`_phone_sip_event`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from functools import partial
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, TrunkConfig
from gateway.lines import events as lev
from gateway.lines.sip_phone import (
    AlertPhone,
    AnswerPhone,
    ByePhone,
    CancelPhone,
    PhoneSignal,
    RefusePhone,
    RingPhone,
    SipPhoneLine,
)
from gateway.media.telephone_event import DigitReceived
from gateway.runtime.edge import SipEdge
from gateway.runtime.media_watch import MediaWatch
from gateway.runtime.phone_port import PhonePort
from gateway.runtime.ports import LinePort, Port
from gateway.runtime.rtp import RtpEndpoint
from gateway.runtime.sip_calls import Call
from gateway.sip import events as sev
from gateway.sip.errors import SdpError
from gateway.sip.sdp import MediaParams, SessionDescription, build_offer
from gateway.sip.sdp_secure import secure_answer
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent

log = logging.getLogger("branchline")

PHONE_SRTP = "off"
"""What the box offers its phones: plain RTP on the LAN (the trunk side keeps its own SRTP
policy), which every phone takes."""

PHONE_ANSWER_SRTP = "offer"
"""How the box answers a phone's offer: with SDES-SRTP when the phone offers keys (a phone
set to encrypt its media), plain RTP otherwise."""

_BINDINGS_CHANGED: Any = getattr(sev, "BindingsChanged", ())
"""The registrar's event (gateway.sip.registrar), when this build has one."""

_REFUSAL_RANK = (486, 600, 603)
"""Fork answers that speak for the phone's user (busy, declined) win over 480/408."""


def phone_port_name(user: str) -> str:
    return f"phone:{user}"


def _user_of(uri: str) -> str:
    """The user part of a SIP/tel URI, or a bare number as it is ('' for none)."""
    text = uri.strip().strip("<>")
    for scheme in ("sip:", "sips:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    return text.split("@", 1)[0].split(";", 1)[0]


class PhoneCalls:
    """The local phones' side of calls; mixed into `Gateway` (see the module docstring)."""

    config: Config
    loop: asyncio.AbstractEventLoop
    ua: UserAgent | None
    calls: dict[str, Call]
    lines: dict[str, LinePort]
    ports: dict[str, Port]
    trunks: dict[str, TrunkConfig]
    edge: SipEdge | None
    phone_ports: dict[str, PhonePort]
    phone_dialogs: dict[str, PhonePort]
    phone_stale: set[str]

    if TYPE_CHECKING:  # Gateway's and SipCalls' (no stubs at run time: MRO-proof)
        def _pump(self) -> None: ...

        def _spawn(self, coro: Any) -> None: ...

        def _start_media(self, call: Call, params: MediaParams, now: float) -> None: ...

        def _release_media(self, call: Call) -> None: ...

        def _apply_answer(self, call: Call, sdp: bytes, now: float) -> bool: ...

        def _account_settings(self, lc: Any) -> Any: ...

    # ------------------------------------------------------------------ ports

    def _add_phones(self) -> None:
        """One port per configured phone (`config.sip_phones`), added to `self.ports`."""
        self.phone_ports = {}
        self.phone_dialogs = {}
        self.phone_stale = set()
        for pc in getattr(self.config, "sip_phones", ()):
            name = phone_port_name(pc.user)
            port = PhonePort(name, pc.number or pc.user, pc.user, pc, SipPhoneLine(name),
                             self.loop.time)
            port.line.on_signal = lambda signal, port=port: self._phone_signal(port, signal)
            timeout = getattr(self.config.sip, "media_timeout", 0.0)
            if timeout > 0:
                port.watch = MediaWatch(timeout)
                port.on_media_timeout = partial(self.loop.call_soon,
                                                self._phone_media_timeout, port)
            self.phone_ports[pc.user] = port
            self.ports[name] = port

    def _phone_by_number(self, number: str) -> PhonePort | None:
        return next((p for p in getattr(self, "phone_ports", {}).values()
                     if p.number == number), None)

    def _local_port_for(self, number: str) -> Port | None:
        """The FXS line or local phone whose number is `number` (the "local" target)."""
        line = next((t for t in self.lines.values() if t.number == number), None)
        return line if line is not None else self._phone_by_number(number)

    def phones_status(self) -> list[dict[str, Any]]:
        """`branchline status` phones: the registrar's view of each phone (contacts), with
        where its call is and its upstream relay ("on", "parked", "stale" or None)."""
        local = getattr(self, "local_registrar", None)
        out: list[dict[str, Any]] = local.status() if local is not None else []
        registrations: dict[str, Any] = getattr(self, "registrations", {})
        for entry in out:
            port = getattr(self, "phone_ports", {}).get(entry.get("user"))
            if port is None:
                continue
            reg = registrations.get(port.name)
            leg = port.leg
            entry.update({
                "state": port.line.state.value,
                "call_id": port.call_id,
                # The dialog with the phone: its Call-ID, codec and RTP/RTCP figures.
                "leg": leg.describe(self.loop.time()) if leg is not None else None,
                "upstream": None if port.config.trunk is None else {
                    "trunk": port.config.trunk.name, "relay": port.relay,
                    "registered": bool(reg is not None and reg.registered),
                    "reason": reg.reason if reg is not None else "not relayed"},
            })
        return out

    # ------------------------------------------------------------------ from a phone

    async def _incoming_from_phone(self, ev: sev.IncomingCall) -> bool:
        """An INVITE from a phone that authenticated as a configured local user: the phone
        dials (True); anything else is not a phone's call (False)."""
        source = self.edge.call_source(ev.call_id, ev.source) if self.edge else None
        if source is None or source.kind != "local-user":
            return False
        port = getattr(self, "phone_ports", {}).get(source.name)
        if port is None:
            return False
        assert self.ua is not None
        now = self.loop.time()
        number = _user_of(ev.request_uri)
        if port.line.state is not lev.LineState.IDLE or port.leg is not None:
            log.info("phone %s: second call to %s refused: busy", port.user, number)
            self.ua.reject(ev.call_id, 486, now)
            self._pump()
            return True
        if not number:
            self.ua.reject(ev.call_id, 404, now)
            self._pump()
            return True
        try:
            offer = SessionDescription.parse(ev.sdp)
        except SdpError:
            self.ua.reject(ev.call_id, 488, now)
            self._pump()
            return True
        cfg = self.config
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if self.ua.call_state(ev.call_id) in (None, "ended") or port.leg is not None \
                or port.line.state is not lev.LineState.IDLE:
            rtp.close()  # CANCELled (or another call came) while the socket was opened
            if self.ua.call_state(ev.call_id) not in (None, "ended"):
                self.ua.reject(ev.call_id, 486, now)
            self._pump()
            return True
        sdp_id = secrets.randbits(31)
        try:
            answer, params, selection = secure_answer(
                PHONE_ANSWER_SRTP, offer, address=cfg.sip.public_host, port=rtp.port,
                codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1)
        except SdpError as exc:
            rtp.close()
            log.info("phone %s: no usable media (%s): 488", port.user, exc)
            self.ua.reject(ev.call_id, 488, now)
            self._pump()
            return True
        leg = Call(ev.call_id, port, "in", ev.from_uri, "sip", now, rtp=rtp,
                   answer_sdp=bytes(answer), params=params, srtp=selection,
                   srtp_policy=PHONE_ANSWER_SRTP, sdp_id=sdp_id)
        self._attach_phone_leg(port, leg)
        log.info("phone %s: dials %s (%s)", port.user, number, ev.call_id)
        port.line.phone_dialled(number, now)
        self._pump()
        return True

    def _attach_phone_leg(self, port: PhonePort, leg: Call) -> None:
        port.leg = leg
        self.phone_dialogs[leg.call_id] = port
        if leg.rtp is not None:
            leg.rtp.on_event = lambda ev, port=port: self._phone_media_event(port, ev)

    def _phone_media_timeout(self, port: PhonePort) -> None:
        """The phone's RTP stopped mid-call: BYE to it, and the other leg hears the end."""
        leg = port.leg
        if leg is None or self.ua is None:
            return
        now = self.loop.time()
        self.ua.bye(leg.call_id, now)
        self._drop_leg(port)
        port.line.phone_hung_up(now)
        self._pump()

    def _phone_media_event(self, port: PhonePort, ev: Any) -> None:
        if isinstance(ev, DigitReceived) and port.connected():
            log.info("phone %s: digit %s (RFC 4733)", port.user, ev.digit)
            port.heard.append(ev.digit)

    # ------------------------------------------------------------------ the machine's signals

    def _phone_signal(self, port: PhonePort, signal: PhoneSignal) -> None:
        assert self.ua is not None
        now = self.loop.time()
        leg = port.leg
        match signal:
            case RingPhone():
                self._spawn(self._ring_phone(port, signal))
            case CancelPhone():
                self._cancel_forks(port, now)
                self._drop_leg(port)
            case AlertPhone(early_media=early) if leg is not None and port.line.outgoing:
                if early and leg.answer_sdp is not None and leg.params is not None:
                    self.ua.ringing(leg.call_id, now, sdp=leg.answer_sdp)
                    self._start_media(leg, leg.params, now)
                else:
                    self.ua.ringing(leg.call_id, now)
            case AnswerPhone() if leg is not None and leg.answer_sdp is not None:
                self.ua.answer(leg.call_id, leg.answer_sdp, now)
                leg.state, leg.answered_at = "connected", now
                if leg.params is not None:
                    self._start_media(leg, leg.params, now)
            case RefusePhone(status=status) if leg is not None:
                self.ua.reject(leg.call_id, status, now)
                self._drop_leg(port)
            case ByePhone() if leg is not None:
                self.ua.bye(leg.call_id, now)
                self._drop_leg(port)
            case _:
                log.debug("phone %s: %s with no dialog", port.user, signal)

    def _stop_phones(self, now: float) -> None:
        """Shutdown: end every dialog with a phone (the calls were ended without telling
        the phones' machines): BYE a connected one, 503 an unanswered INVITE from a phone,
        CANCEL the forks still ringing."""
        if self.ua is None:
            return
        for port in getattr(self, "phone_ports", {}).values():
            leg = port.leg
            self._cancel_forks(port, now)
            if leg is not None and leg.call_id in self.phone_dialogs:
                if leg.state == "connected":
                    self.ua.bye(leg.call_id, now)
                elif port.line.outgoing:
                    self.ua.reject(leg.call_id, 503, now)
            self._drop_leg(port)

    def _drop_leg(self, port: PhonePort) -> None:
        """Our side is done with the phone's dialog: free its media, keep hearing its end."""
        leg, port.leg = port.leg, None
        if leg is None:
            return
        if self.phone_dialogs.get(leg.call_id) is port:
            del self.phone_dialogs[leg.call_id]
            self.phone_stale.add(leg.call_id)
        self._release_media(leg)

    def _cancel_forks(self, port: PhonePort, now: float, keep: str | None = None) -> None:
        """CANCEL every fork still ringing but `keep` (a 200 may still cross: then BYE)."""
        assert self.ua is not None
        for fork in list(port.forks):
            if fork == keep:
                continue
            del port.forks[fork]
            self.phone_dialogs.pop(fork, None)
            self.phone_stale.add(fork)
            self.ua.bye(fork, now)  # CANCEL while setting up (after a provisional)

    # ------------------------------------------------------------------ to a phone

    def _bindings_of(self, user: str, now: float) -> list[Any]:
        registrar = getattr(self.ua, "registrar", None)
        if registrar is None:
            return []
        return list(registrar.lookup(user, now))

    async def _ring_phone(self, port: PhonePort, ring: RingPhone) -> None:
        """INVITE every binding of the phone for the call `ring.call_id` (forked)."""
        assert self.ua is not None
        now = self.loop.time()
        bindings = self._bindings_of(port.user, now)
        if not bindings:
            log.info("phone %s: not registered; call %s refused (480)", port.user,
                     ring.call_id)
            port.line.phone_refused(480, now)
            self._pump()
            return
        cfg = self.config
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if port.line.state is not lev.LineState.RINGING or port.line.call_id != ring.call_id:
            rtp.close()  # the caller gave up while the socket was being opened
            return
        sdp_id = secrets.randbits(31)
        offer = build_offer(address=cfg.sip.public_host, port=rtp.port,
                            codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1)
        caller = _user_of(ring.caller) or "anonymous"
        from_uri = f"sip:{caller}@{cfg.sip.public_host}"
        leg: Call | None = None
        port.fork_statuses.clear()
        for binding in bindings:
            host, bport = binding.source
            fork = self.ua.invite(target_uri=binding.contact, from_uri=from_uri,
                                  dest=[Target(binding.transport, host, bport)],
                                  sdp=bytes(offer), display_name=ring.caller_name, now=now)
            port.forks[fork] = binding.contact
            self.phone_dialogs[fork] = port
            if leg is None:
                leg = Call(fork, port, "out", binding.contact, "sip", now, rtp=rtp,
                           offer=offer, srtp_policy=PHONE_SRTP, sdp_id=sdp_id)
        assert leg is not None
        port.leg = leg
        self.phone_dialogs.pop(leg.call_id, None)  # a fork until one answers
        self.phone_dialogs[leg.call_id] = port
        rtp.on_event = lambda ev, port=port: self._phone_media_event(port, ev)
        log.info("phone %s: ringing %d binding(s) for call %s from %s", port.user,
                 len(bindings), ring.call_id, caller)
        self._pump()

    def _fork_answered(self, port: PhonePort, ev: sev.CallAnswered, now: float) -> None:
        assert self.ua is not None
        leg = port.leg
        if leg is None or ev.call_id not in port.forks or \
                port.line.state is not lev.LineState.RINGING:
            self.ua.bye(ev.call_id, now)  # the call was off, or another fork won first
            self.phone_dialogs.pop(ev.call_id, None)
            self.phone_stale.add(ev.call_id)
            return
        del port.forks[ev.call_id]
        self._cancel_forks(port, now)
        leg.call_id = ev.call_id
        if not self._apply_answer(leg, ev.sdp, now):
            log.info("phone %s: unusable answer; call refused", port.user)
            self.ua.bye(ev.call_id, now)
            self._drop_leg(port)
            port.line.phone_refused(488, now)
            return
        leg.state, leg.answered_at = "connected", now
        log.info("phone %s: answered (%s)", port.user, ev.call_id)
        port.line.phone_answered(now)

    def _fork_ended(self, port: PhonePort, ev: sev.CallEnded, now: float) -> None:
        port.forks.pop(ev.call_id, None)
        self.phone_dialogs.pop(ev.call_id, None)
        if ev.status is not None:
            port.fork_statuses.append(ev.status)
        if port.forks or port.line.state is not lev.LineState.RINGING:
            return
        ranked = [s for s in port.fork_statuses if s in _REFUSAL_RANK]
        status = ranked[0] if ranked else 480
        log.info("phone %s: every binding refused (%s): %s", port.user,
                 port.fork_statuses or ev.reason, status)
        self._drop_leg(port)
        port.line.phone_refused(status, now)

    # ------------------------------------------------------------------ the phones' dialogs

    def _phone_sip_event(self, ev: Any) -> bool:
        """Take a SIP event of a dialog with a phone (True), else leave it (False)."""
        if isinstance(ev, _BINDINGS_CHANGED):
            self._phone_bindings_changed(ev)
            return False  # the registrar's store hears it too
        call_id = getattr(ev, "call_id", None)
        if not isinstance(call_id, str) or isinstance(ev, sev.IncomingCall):
            return False
        port = getattr(self, "phone_dialogs", {}).get(call_id)
        now = self.loop.time()
        if port is None:
            if call_id not in getattr(self, "phone_stale", ()):
                return False
            if isinstance(ev, sev.CallAnswered) and self.ua is not None:
                self.ua.bye(call_id, now)  # a 200 crossed our CANCEL
            elif isinstance(ev, sev.CallEnded):
                self.phone_stale.discard(call_id)
            return True
        match ev:
            case sev.CallAnswered():
                self._fork_answered(port, ev, now)
            case sev.CallEnded() if call_id in port.forks:
                self._fork_ended(port, ev, now)
            case sev.CallEnded():
                log.info("phone %s: dialog ended (%s)", port.user, ev.reason)
                self._drop_leg(port)
                self.phone_stale.discard(call_id)
                port.line.phone_hung_up(now)
            case sev.DtmfInfo():
                if port.connected():
                    log.info("phone %s: digit %s (SIP INFO)", port.user, ev.digit)
                    port.heard.append(ev.digit)
            case sev.CallUpdated():
                self._phone_reinvite(port, ev, now)
            case _:
                pass  # provisionals: the caller already hears ringback
        return True

    def _phone_reinvite(self, port: PhonePort, ev: sev.CallUpdated, now: float) -> None:
        """The phone re-offers (hold, resume, a new address): answer from the same port."""
        assert self.ua is not None
        leg = port.leg
        if leg is None or leg.rtp is None:
            self.ua.reject_reinvite(ev.call_id, 488, now)
            return
        try:
            answer, params, selection = secure_answer(
                leg.srtp_policy, SessionDescription.parse(ev.sdp),
                address=self.config.sip.public_host, port=leg.rtp.port,
                codecs=list(self.config.sip.codecs), session_id=leg.sdp_id,
                session_version=leg.next_sdp_version(), current=leg.srtp)
        except SdpError as exc:
            log.info("phone %s: re-INVITE refused: %s", port.user, exc)
            self.ua.reject_reinvite(ev.call_id, 488, now)
            return
        leg.srtp = selection
        self.ua.answer_reinvite(ev.call_id, bytes(answer), now)
        self._start_media(leg, params, now)

    # ------------------------------------------------------------------ upstream relay

    def _start_phone_relay(self) -> None:
        """Follow trunk health (when the monitor is there) and relay the phones that are
        registered already (bindings restored from the store)."""
        health = getattr(self, "trunk_health", None)
        if health is not None and any(p.config.trunk is not None
                                      for p in getattr(self, "phone_ports", {}).values()):
            health.subscribe(self._phone_trunk_health_changed)
        self._phone_relay_sync_all()

    def _phone_relay_sync_all(self) -> None:
        now = self.loop.time()
        for user in getattr(self, "phone_ports", {}):
            self._phone_relay_sync(user, now)

    def _phone_trunk_health_changed(self, change: Any) -> None:
        """UP or DOWN on a trunk: park or re-register the phones relayed on it, at once."""
        now = self.loop.time()
        for user, port in getattr(self, "phone_ports", {}).items():
            if port.config.trunk is not None and port.config.trunk.name == change.trunk:
                self._phone_relay_sync(user, now)
        self._pump()

    def _trunk_is_down(self, trunk: str) -> bool:
        health = getattr(self, "trunk_health", None)
        if health is None:
            return False
        state = health.state(trunk)
        return bool(getattr(state, "value", state) == "down")

    def _phone_relay_sync(self, user: str, now: float) -> None:
        """Make the phone's upstream account match its binding and its trunk's health.

        `PhonePort.relay` says where the account is: None (none), "on" (registering or
        registered), "parked" (trunk DOWN, phone still bound: nothing sent), "stale" (trunk
        DOWN and the phone left: un-registered upstream once the trunk is back). Accounts
        that are "on" or "parked" are in `self.registrations`, so the health monitor parks
        and re-registers them with the line accounts; this keeps the phone's own part.
        """
        port = self.phone_ports.get(user)
        ua = self.ua
        if port is None or ua is None or port.config.trunk is None:
            return
        trunk = port.config.trunk.name
        if trunk not in self.trunks:
            return
        registrations: dict[str, Any] = getattr(self, "registrations", {})
        account = port.name
        bound = bool(self._bindings_of(user, now))
        if self._trunk_is_down(trunk):
            if port.relay == "on":
                ua.trunk_down(account, now)  # nothing goes upstream until the trunk is back
                port.relay = "parked"
            if port.relay == "parked" and not bound:
                registrations.pop(account, None)  # the monitor must not re-register it
                port.relay = "stale"
            return
        if bound and port.relay in (None, "stale"):
            from gateway.runtime.sip_calls import Registration

            settings = self._phone_account_settings(port)
            registrations[account] = Registration(account, trunk, settings.aor)
            ua.add_account(account, settings, now)  # replaces a stale one
            port.relay = "on"
            log.info("phone %s: relayed upstream to trunk %s as %s", user, trunk, settings.aor)
        elif bound and port.relay == "parked":
            ua.register_now(account, now)  # the trunk is back: at once
            port.relay = "on"
        elif not bound and port.relay is not None:
            log.info("phone %s: no local binding; un-registering upstream", user)
            ua.remove_account(account, now)
            registrations.pop(account, None)
            port.relay = None

    def _phone_account_settings(self, port: PhonePort) -> Any:
        """The upstream account of a relayed phone: its trunk credentials, the box as
        contact (the line accounts' settings, from the phone's `trunk:`)."""
        return self._account_settings(port.config)

    def _phone_bindings_changed(self, ev: Any) -> None:
        if ev.user in getattr(self, "phone_ports", {}):
            self._phone_relay_sync(ev.user, self.loop.time())

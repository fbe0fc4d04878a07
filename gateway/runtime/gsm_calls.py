"""GSM calls at run time: `gsm:<group>` routes out through a modem, and calls coming in on a
modem ring an FXS line or go to a trunk as an INVITE, with the caller's number.

Mixed into `Gateway` like `SipCalls`. A call between a handset and a modem is a pair of
local call legs (as line to line); a modem call to or from a trunk is one SIP leg whose port
is the modem. Either way the call ends through `end_call`, and the minutes of every
answered GSM call are counted against its SIM's monthly cap (`GsmGroupRouter`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, TrunkConfig
from gateway.lines import events as lev
from gateway.routing.gsm_groups import GsmGroupRouter, MinuteLedger, ModemChosen, ModemState
from gateway.routing.router import Router
from gateway.routing.targets import GsmTarget, LineTarget, TrunkTarget, parse_target
from gateway.runtime import call_end
from gateway.runtime.edge import SipEdge
from gateway.runtime.gsm_port import GsmPort
from gateway.runtime.incoming_route import admit_incoming, route_incoming
from gateway.runtime.modem import ModemDriver
from gateway.runtime.ports import LinePort, Port
from gateway.runtime.rtp import RtpEndpoint
from gateway.runtime.sip_calls import Call
from gateway.security.permissions import LOCAL_USERS, CallSource, Denied, TargetPolicy
from gateway.security.routeguard import RouteGuard, trunk_gsm_guard
from gateway.sip import events as sev
from gateway.sip.dns import is_ip
from gateway.sip.errors import SdpError
from gateway.sip.sdp import SessionDescription, build_offer
from gateway.sip.sdp_secure import secure_answer, secure_offer
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent
from gateway.store.atomic import write_atomic

log = logging.getLogger("branchline")

MINUTES_FILE = "gsm_minutes.json"
"""In the state directory: minutes used per SIM per month, for the monthly caps."""


def gsm_policies(config: Config) -> list[TargetPolicy]:
    """Who may call out through the modems: this box's lines and its local SIP users, to
    any number but the default denied prefixes (international, premium rate); nothing that
    came in on a trunk (a GSM route must not turn the gateway into a free relay), except
    what a trunk's own `allow_gsm` opens (`_trunk_gsm_guard`)."""
    if not config.gsm_groups:
        return []
    return [TargetPolicy("gsm", sources=(*(ln.name for ln in config.lines), LOCAL_USERS))]


class GsmCalls:
    """The GSM side of calls; mixed into `Gateway`, which provides the state and `_pump`."""

    config: Config
    loop: asyncio.AbstractEventLoop
    ua: UserAgent | None
    calls: dict[str, Call]
    lines: dict[str, LinePort]
    ports: dict[str, Port]
    trunks: dict[str, TrunkConfig]
    proxy_targets: dict[str, tuple[Target, ...]]
    gsm_ports: dict[str, GsmPort]
    gsm_router: GsmGroupRouter
    route_guard: RouteGuard
    router: Router
    edge: SipEdge | None

    def _pump(self) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def end_call(self, call: Call, cause: call_end.CallEnd, now: float) -> bool:
        raise NotImplementedError

    def _attach_rtp(self, call: Call) -> None:
        raise NotImplementedError

    def _srtp_policy_for(self, source: tuple[str, int]) -> str:
        raise NotImplementedError

    if TYPE_CHECKING:  # gateway.runtime.failover.FailoverCalls (no stubs at run time)
        def _note_route(self, lp: Port) -> None: ...

        def _port_call_failed(self, lp: Port, reason: str, status: int | None,
                              now: float) -> None: ...

    def _add_gsm_port(self, driver: ModemDriver) -> GsmPort:
        """The port of kind "gsm" for a started modem driver; its calls flow from now on."""
        if not hasattr(self, "gsm_ports"):
            self.gsm_ports = {}
            self._gsm_router()
        port = GsmPort.create(driver, self.loop, self._gsm_wake)
        self.gsm_ports[port.name] = port
        self.ports[port.name] = port
        port.start()
        return port

    def _gsm_wake(self) -> None:
        """After any modem input: offer new incoming calls, count minutes, then pump."""
        for port in getattr(self, "gsm_ports", {}).values():
            port.gsm.drain()
            while port.gsm.offers:
                offer = port.gsm.offers.pop(0)
                self._gsm_incoming(port, offer.caller, offer.withheld)
            while port.gsm.ended:
                ended, answered = port.gsm.ended.pop(0)
                if answered is not None:
                    self.gsm_router.record_call(port.name, ended - answered, datetime.now())
                    self._save_minutes()
        self._pump()

    # ------------------------------------------------------------------ minutes per SIM

    def _minutes_file(self) -> Path:
        return Path(self.config.gateway.state_dir) / MINUTES_FILE

    def _gsm_router(self) -> GsmGroupRouter:
        """The group chooser, its minute ledger read back from the state directory (the
        monthly cap must survive a restart)."""
        router = getattr(self, "gsm_router", None)
        if router is None:
            ledger = MinuteLedger()
            try:
                ledger = MinuteLedger.from_dict(json.loads(self._minutes_file().read_text()))
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                log.error("GSM minutes: cannot read %s (%s); counting from 0",
                          self._minutes_file(), exc)
            router = self.gsm_router = GsmGroupRouter(self.config.gsm_groups,
                                                      self.config.modems, ledger)
        return router

    def _save_minutes(self) -> None:
        path = self._minutes_file()
        try:
            write_atomic(path, json.dumps(self.gsm_router.ledger.to_dict()).encode())
        except OSError as exc:
            log.error("GSM minutes: cannot write %s: %s", path, exc)

    def gsm_minutes(self, modem: str) -> dict[str, int | None]:
        """This month's minutes on `modem`'s SIM and what is left under its cap (status)."""
        router = self._gsm_router()
        now = datetime.now()
        return {"minutes_this_month": router.ledger.minutes(modem, now),
                "minutes_left": router.minutes_left(modem, now)}

    # ------------------------------------------------------------------ out: gsm:<group>

    def _gsm_states(self) -> dict[str, ModemState]:
        return {
            name: ModemState(name, port.driver.up,
                             0 if port.gsm.state is lev.LineState.IDLE else 1)
            for name, port in getattr(self, "gsm_ports", {}).items()
        }

    def _place_gsm_call(self, lp: Port, group: str, number: str, now: float, *,
                        emergency: bool = False) -> None:
        """A handset dialled a number routed to `gsm:<group>`: a modem of the group dials it.

        No usable modem passes the call to the route's next target (`_port_call_failed`);
        an emergency call is never refused by the route guard.
        """
        router = self._gsm_router()
        # A local SIP phone calls as its user (gateway.runtime.phones), a line by its name.
        source = (CallSource.local_user(lp.config.user) if lp.kind == "phone"
                  else CallSource.line(lp.name))
        verdict = None if emergency else self.route_guard.check(source, number, f"gsm:{group}")
        if isinstance(verdict, Denied):
            log.warning("line %s: call to %s refused: %s", lp.name, number, verdict.reason)
            lp.machine.call_ended("not permitted", verdict.status, now)
            return
        choice = router.choose(group, number, self._gsm_states(), datetime.now())
        if not isinstance(choice, ModemChosen):
            log.info("line %s: call to %s refused: %s (%s)", lp.name, number, choice.reason,
                     choice.sip_status)
            self._port_call_failed(lp, "no modem", choice.sip_status, now)
            return
        gp = self.gsm_ports[choice.modem]
        a = Call(f"local-{secrets.token_hex(8)}", lp, "out", number, "local", now)
        b = Call(f"gsm-{secrets.token_hex(8)}", gp, "in", lp.number, "local", now)
        a.peer, b.peer = b, a
        self.calls[a.call_id] = a
        self.calls[b.call_id] = b
        lp.call_id = a.call_id
        lp.machine.set_call_id(a.call_id)
        self._note_route(lp)
        if gp.gsm.place(b.call_id, number, now) is not lev.IncomingResult.ACCEPTED:
            self.end_call(b, call_end.rejected(503, f"modem {gp.name}"), now)
            self.end_call(a, call_end.rejected(503, f"modem {gp.name}"), now)
            self._port_call_failed(lp, "no modem", 503, now)
            return
        gp.call_id = b.call_id
        a.state = b.state = "ringing"
        log.info("line %s: calling %s via modem %s (group %s)", lp.name, number, gp.name, group)
        lp.machine.call_progress(180, now, early_media=False)

    # ------------------------------------------------------------------ in: RING/+CLIP

    def _gsm_incoming(self, gp: GsmPort, caller: str | None, withheld: bool) -> None:
        """A call rings on a modem: ring the configured line or INVITE the trunk."""
        now = self.loop.time()
        shown = caller or ""
        inbound = gp.config.inbound
        log.info("gsm %s: incoming call from %s", gp.name,
                 "withheld" if withheld or not caller else caller)
        target = parse_target(inbound) if inbound else None
        if isinstance(target, LineTarget) and target.name in self.lines:
            lp = self.lines[target.name]
            a = Call(f"gsm-{secrets.token_hex(8)}", gp, "out", lp.number, "local", now)
            b = Call(f"local-{secrets.token_hex(8)}", lp, "in", shown, "local", now)
            a.peer, b.peer = b, a
            self.calls[a.call_id] = a
            self.calls[b.call_id] = b
            gp.call_id = a.call_id
            gp.gsm.set_call_id(a.call_id)
            name = "Withheld" if withheld or not caller else None
            if lp.machine.incoming_call(b.call_id, shown, name, now) \
                    is lev.IncomingResult.ACCEPTED:
                lp.call_id = b.call_id
                a.state = b.state = "ringing"
            # a busy line already asked (RejectCall) to end both legs and hang up the modem
            return
        if isinstance(target, TrunkTarget) and target.name in self.trunks:
            gp.gsm.set_call_id(f"pending-{secrets.token_hex(4)}")  # not a stray ring
            self._spawn(self._gsm_to_trunk(gp, shown, target.name))
            return
        log.warning("gsm %s: incoming call refused: no inbound target (%s)", gp.name,
                    inbound or "modem has no inbound:")
        gp.gsm.call_ended("no inbound target", None, now)

    async def _gsm_to_trunk(self, gp: GsmPort, caller: str, trunk_name: str) -> None:
        """INVITE the trunk for a call ringing on `gp`; From carries the caller's number."""
        cfg = self.config
        trunk = self.trunks[trunk_name]
        number = gp.config.inbound_number or gp.config.number or gp.name
        targets: tuple[Target, ...] = self.proxy_targets.get(trunk_name, ())
        if not targets and not is_ip(trunk.proxy.host):
            log.warning("gsm %s: trunk %s has no address; call from %s refused", gp.name,
                        trunk_name, caller)
            gp.gsm.call_ended("no address", 503, self.loop.time())
            self._pump()
            return
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if gp.gsm.state is not lev.LineState.RINGING:
            rtp.close()  # the caller gave up while the socket was being opened
            return
        assert self.ua is not None
        sdp_id = secrets.randbits(31)
        offer, pending = secure_offer(trunk.srtp, build_offer(
            address=cfg.sip.public_host, port=rtp.port,
            codecs=list(trunk.codecs or cfg.sip.codecs), session_id=sdp_id,
            session_version=1,
        ))
        # The caller's number in From and P-Asserted-Identity (RFC 3325); a withheld one
        # is anonymous (RFC 3323) and asks the trunk for privacy. A trunk that challenges
        # INVITEs gets the credentials of this box's first account on it.
        account = next((lc.name for lc in cfg.lines
                        if lc.trunk is not None and lc.trunk.name == trunk_name), None)
        call_id = self.ua.invite(
            target_uri=f"sip:{number}@{trunk.domain}",
            from_uri=(f"sip:{caller}@{trunk.domain}" if caller
                      else "sip:anonymous@anonymous.invalid"),
            dest=targets or (trunk.proxy.host, trunk.proxy.port),
            sdp=bytes(offer),
            display_name=caller or "Anonymous",
            asserted_identity=f"sip:{caller}@{trunk.domain}" if caller else None,
            privacy=not caller,
            account_id=account,
            now=now,
        )
        call = Call(call_id, gp, "out", f"sip:{number}@{trunk.domain}", "sip", now, rtp=rtp,
                    offer=offer, srtp_pending=pending, srtp_policy=trunk.srtp, sdp_id=sdp_id)
        self.calls[call_id] = call
        gp.call_id = call_id
        gp.gsm.set_call_id(call_id)
        self._attach_rtp(call)
        log.info("gsm %s: call from %s to %s via %s (%s)", gp.name, caller or "withheld",
                 number, trunk_name, call_id)
        self._pump()

    # ------------------------------------------------------------------ in: SIP -> gsm:<group>

    def _trunk_gsm_guard(self) -> RouteGuard:
        """The narrow opt-in (trunks[].allow_gsm) for calls that came in on a trunk; its
        refusals are logged and counted with the main route guard's."""
        guard = getattr(self, "_gsm_trunk_guard", None)
        if guard is None:
            guard = self._gsm_trunk_guard = trunk_gsm_guard(
                {t.name: (t.allow_gsm.groups, t.allow_gsm.prefixes)
                 for t in self.config.trunks if t.allow_gsm is not None},
                like=self.route_guard)
        return guard

    async def _incoming_to_gsm(self, ev: sev.IncomingCall) -> bool:
        """An INVITE for no line of this box whose number the dial plan routes to
        `gsm:<group>`: a modem of the group dials it (False: not a GSM call, not handled).

        From a trunk only with that trunk's `allow_gsm` (groups and number prefixes);
        otherwise the route guard refuses it (403, logged and counted) and nothing is dialled.
        """
        decision = route_incoming(self.router, ev)
        if decision is None:
            return False
        dest = decision.target
        if not isinstance(dest, GsmTarget):
            return False
        assert self.ua is not None
        number, target = decision.number, f"gsm:{dest.group}"
        now = self.loop.time()
        source = admit_incoming(
            self.edge, ev, number, target,
            lambda kind: self._trunk_gsm_guard() if kind == "trunk" else self.route_guard,
            self._refuse_to_gsm, now)
        if source is None:
            return True  # refused and answered
        try:
            offer = SessionDescription.parse(ev.sdp)
        except SdpError:
            self._refuse_to_gsm(ev, 488, "unreadable SDP", now)
            return True
        cfg = self.config
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if self.ua.call_state(ev.call_id) in (None, "ended"):
            rtp.close()  # CANCELled while the socket was being opened: never dial
            return True
        policy = self._srtp_policy_for(ev.source)
        sdp_id = secrets.randbits(31)
        try:
            answer, params, selection = secure_answer(
                policy, offer, address=cfg.sip.public_host, port=rtp.port,
                codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1)
        except SdpError as exc:
            rtp.close()
            self._refuse_to_gsm(ev, 488, f"no usable media ({exc})", now)
            return True
        choice = self._gsm_router().choose(dest.group, number, self._gsm_states(),
                                           datetime.now())
        if not isinstance(choice, ModemChosen):
            rtp.close()
            log.info("call %s to %s refused: %s (%s)", ev.call_id, number, choice.reason,
                     choice.sip_status)
            self._refuse_to_gsm(ev, choice.sip_status, choice.reason, now)
            return True
        gp = self.gsm_ports[choice.modem]
        call = Call(ev.call_id, gp, "in", ev.from_uri, "sip", now, rtp=rtp,
                    answer_sdp=bytes(answer), params=params, srtp=selection,
                    srtp_policy=policy, sdp_id=sdp_id)
        self.calls[ev.call_id] = call
        self._attach_rtp(call)
        if gp.gsm.place(ev.call_id, number, now) is not lev.IncomingResult.ACCEPTED:
            self.ua.reject(ev.call_id, 503, now)
            self.end_call(call, call_end.rejected(503, f"modem {gp.name}"), now)
            self._pump()
            return True
        gp.call_id = ev.call_id
        call.state = "ringing"
        self.ua.ringing(ev.call_id, now)
        log.info("call %s from %s: calling %s via modem %s (group %s)", ev.call_id, source,
                 number, gp.name, dest.group)
        self._pump()
        return True

    def _refuse_to_gsm(self, ev: sev.IncomingCall, status: int, why: str, now: float) -> None:
        """Answer `status` to an INVITE routed to a GSM group; no modem was asked to dial."""
        assert self.ua is not None
        self.ua.reject(ev.call_id, status, now)
        log.info("call %s (%s) ended: rejected %s (%s)", ev.call_id, ev.request_uri, status, why)
        self._pump()

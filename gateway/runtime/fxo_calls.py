"""FXO calls at run time: `fxo:<name>` as a route target, and calls ringing on the exchange
line sent to an FXS line, a local SIP phone or a trunk, with the caller ID as the caller.

Mixed into `Gateway` like `GsmCalls`. A call between a handset (or a local phone) and the
exchange line is a pair of local call legs; an exchange call to a trunk is one SIP leg
whose port is the exchange line. Either way it ends through `end_call`.

Outgoing, the line is seized and dials; a line that is ringing, held or resting answers
"busy" (503) and a line that gives no dial tone or loop current fails (503): both pass the
call to the route's next target. Busy tone from the exchange is the callee's verdict (486)
and ends the call.

An INVITE for no line of the box whose number the dial plan routes to `fxo:<name>` (a DID
meant for the exchange line, a PBX using the box as its PSTN gateway) is one SIP leg whose
port is the exchange line: 180 while it dials and rings, 200 at the line's answer (its
`answer` mode), the line's failures as SIP statuses. Toll fraud: the box's own lines and
local phones may use FXO; a call from a trunk only with that trunk's `allow_fxo` (lines and
number prefixes), else 403, logged and counted as ``call-denied``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, LineConfig, TrunkConfig
from gateway.lines import events as lev
from gateway.lines.fxo import FxoLine, FxoState, IncomingOffer
from gateway.routing.router import Router
from gateway.routing.targets import FxoTarget, LineTarget, LocalTarget, TrunkTarget, parse_target
from gateway.runtime import call_end
from gateway.runtime.fxo_port import (
    FxoLinePort,
    FxoMachine,
    echo_canceller_for,
    settings_from,
)
from gateway.runtime.incoming_route import admit_incoming, route_incoming
from gateway.runtime.ports import LinePort, Port
from gateway.runtime.rtp import RtpEndpoint
from gateway.runtime.sip_calls import Call
from gateway.security.permissions import LOCAL_USERS, CallSource, Denied, TargetPolicy
from gateway.security.routeguard import RouteGuard, trunk_fxo_guard
from gateway.sip import events as sev
from gateway.sip.dns import is_ip
from gateway.sip.errors import SdpError
from gateway.sip.sdp import SessionDescription, build_offer
from gateway.sip.sdp_secure import secure_answer, secure_offer
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent
from hal.registry import create_fxo

log = logging.getLogger("branchline")


def fxo_policies(config: Config) -> list[TargetPolicy]:
    """Who may call out on the exchange lines: this box's FXS lines and its local SIP users
    (the default denied prefixes stay closed); nothing that came in on a trunk."""
    if not any(lc.type == "fxo" for lc in config.lines):
        return []
    return [TargetPolicy("fxo", sources=(*(lc.name for lc in config.lines
                                           if lc.type != "fxo"), LOCAL_USERS))]


class FxoCalls:
    """The FXO side of calls; mixed into `Gateway`."""

    config: Config
    loop: asyncio.AbstractEventLoop
    ua: UserAgent | None
    calls: dict[str, Call]
    lines: dict[str, LinePort]
    ports: dict[str, Port]
    trunks: dict[str, TrunkConfig]
    proxy_targets: dict[str, tuple[Target, ...]]

    if TYPE_CHECKING:  # provided by Gateway and the other mixins
        route_guard: Any
        router: Router
        edge: Any

        def _srtp_policy_for(self, source: tuple[str, int]) -> str: ...

        def _pump(self) -> None: ...

        def _spawn(self, coro: Any) -> None: ...

        def end_call(self, call: Call, cause: call_end.CallEnd, now: float) -> bool: ...

        def _attach_rtp(self, call: Call) -> None: ...

        def _local_port_for(self, number: str) -> Port | None: ...

        def _note_route(self, lp: Port) -> None: ...

        def _port_call_failed(self, lp: Port, reason: str, status: int | None,
                              now: float) -> None: ...

    @property
    def fxo_lines(self) -> dict[str, FxoLinePort]:
        lines: dict[str, FxoLinePort] | None = self.__dict__.get("_fxo_lines")
        if lines is None:
            lines = self.__dict__["_fxo_lines"] = {}
        return lines

    def _add_fxo_line(self, lc: LineConfig) -> FxoLinePort:
        """The port of kind "fxo" for a `type: fxo` line; rings and calls flow from now on."""
        options = dict(lc.options)
        options.setdefault("country", self.config.gateway.country)
        from gateway.dsp.tones import get_profile

        profile = get_profile(str(options["country"]))
        port = create_fxo(lc.backend, lc.name, options)
        line = FxoLine(lc.name, settings_from(options))
        fp = FxoLinePort(lc.name, lc.number, lc, port, FxoMachine(line, port), profile,
                         self.loop.time, echo=echo_canceller_for(lc.backend, options))
        def offer(o: IncomingOffer) -> None:
            self._fxo_offer(fp, o)

        def failed(call_id: str, status: int, why: str) -> None:
            self._fxo_failed(fp, call_id, status, why)

        fp.fxo.on_offer = offer
        fp.fxo.on_failed = failed
        def wake() -> None:
            self.loop.call_soon(self._pump)

        fp.wake = wake
        self.fxo_lines[lc.name] = fp
        self.ports[lc.name] = fp

        def event(kind: str) -> Any:
            def report(value: bool, t: float) -> None:
                self.loop.call_soon_threadsafe(self._fxo_input, fp, kind, value)
            return report

        port.start(event("ring"), event("polarity"),
                   event("loop") if port.senses_loop_current else None)
        return fp

    def _fxo_reload(self, name: str, lc: LineConfig | None) -> None:
        """A reload changed (or removed, `lc` None) an exchange line: reopen it with the
        new settings once it is idle (a call on it is never cut)."""
        fp = self.fxo_lines.get(name)
        if fp is None:
            return
        if fp.line.fxo_state is not FxoState.IDLE or fp.call_id is not None:
            self.loop.call_later(1.0, self._fxo_reload, name, lc)
            return
        del self.fxo_lines[name]
        self.ports.pop(name, None)
        fp.close()
        if lc is not None:
            self._add_fxo_line(lc)
        log.info("fxo %s: %s by reload", name, "reopened" if lc is not None else "removed")

    def _fxo_input(self, fp: FxoLinePort, kind: str, value: bool) -> None:
        if self.fxo_lines.get(fp.name) is not fp:
            return  # removed (reload) since the edge
        now = self.loop.time()
        log.debug("fxo %s: %s %s", fp.name, kind, value)
        if kind == "ring":
            fp.line.ring(value, now)
        elif kind == "polarity":
            fp.line.polarity(value, now)
        else:
            fp.line.loop_current(value, now)
        self._pump()

    # ------------------------------------------------------------------ out: fxo:<name>

    def _place_fxo_call(self, lp: Port, name: str, number: str, now: float, *,
                        emergency: bool = False) -> None:
        """A port dialled a number routed to `fxo:<name>`: the exchange line dials it."""
        fp = self.fxo_lines.get(name)
        if fp is None:
            self._port_call_failed(lp, "no such target", 404, now)
            return
        if not emergency:
            source = (CallSource.local_user(lp.config.user) if lp.kind == "phone"
                      else CallSource.line(lp.name))
            verdict = self.route_guard.check(source, number, f"fxo:{name}")
            if isinstance(verdict, Denied):
                log.warning("line %s: call to %s refused: %s", lp.name, number, verdict.reason)
                lp.machine.call_ended("not permitted", verdict.status, now)
                return
        a = Call(f"local-{secrets.token_hex(8)}", lp, "out", number, "local", now)
        b = Call(f"fxo-{secrets.token_hex(8)}", fp, "in", lp.number, "local", now)
        a.peer, b.peer = b, a
        self.calls[a.call_id] = a
        self.calls[b.call_id] = b
        lp.call_id = a.call_id
        lp.machine.set_call_id(a.call_id)
        self._note_route(lp)
        try:
            result = fp.fxo.place(b.call_id, number, now)
        except ValueError as exc:
            log.info("fxo %s: %s", name, exc)
            result = lev.IncomingResult.BUSY
        if result is not lev.IncomingResult.ACCEPTED:
            log.info("line %s: fxo %s is %s; not dialling %s", lp.name, name,
                     fp.line.fxo_state.value, number)
            self.end_call(b, call_end.rejected(503, f"fxo {name} busy"), now)
            self.end_call(a, call_end.rejected(503, f"fxo {name} busy"), now)
            self._port_call_failed(lp, "fxo busy", 503, now)
            return
        fp.call_id = b.call_id
        log.info("line %s: calling %s via fxo %s", lp.name, number, name)

    def _fxo_failed(self, fp: FxoLinePort, call_id: str, status: int, why: str) -> None:
        """The exchange line's outgoing call failed before the answer."""
        now = self.loop.time()
        b = self.calls.get(call_id)
        log.info("fxo %s: call %s failed: %s (%s)", fp.name, call_id, why, status)
        if b is None:
            return
        if b.kind == "sip" and b.direction == "in" and self.ua is not None:
            self.ua.reject(call_id, status, now)  # an INVITE routed to the line (from SIP)
        self.end_call(b, call_end.rejected(status, why), now)
        a = b.peer
        if a is None:
            self._pump()
            return
        if b.direction == "in" and a.direction == "out" and self.end_call(
                a, call_end.rejected(status, f"fxo {fp.name}: {why}"), now):
            # no dial tone / no loop current (503) passes to the route's next target
            reason = "fxo busy" if status == 503 else ("busy" if status == 486 else why)
            self._port_call_failed(a.port, reason, status, now)

    # ------------------------------------------------------------------ out: from SIP

    def _trunk_fxo_guard(self) -> RouteGuard:
        """The narrow opt-in (trunks[].allow_fxo) for calls that came in on a trunk; its
        refusals are logged and counted with the main route guard's."""
        return trunk_fxo_guard(
            {t.name: (t.allow_fxo.lines, t.allow_fxo.prefixes)
             for t in self.config.trunks if t.allow_fxo is not None}, like=self.route_guard)

    async def _incoming_to_fxo(self, ev: sev.IncomingCall) -> bool:
        """An INVITE for no line of this box whose number the dial plan routes to
        `fxo:<name>`: the exchange line dials it (False: not an FXO call, not handled)."""
        decision = route_incoming(self.router, ev)
        if decision is None:
            return False
        dest = decision.target
        if not isinstance(dest, FxoTarget):
            return False
        assert self.ua is not None
        number, target = decision.number, f"fxo:{dest.name}"
        now = self.loop.time()
        source = admit_incoming(
            self.edge, ev, number, target,
            lambda kind: self._trunk_fxo_guard() if kind == "trunk" else self.route_guard,
            self._refuse_to_fxo, now)
        if source is None:
            return True  # refused and answered
        fp = self.fxo_lines.get(dest.name)
        if fp is None:
            self._refuse_to_fxo(ev, 503, f"no exchange line {dest.name}", now)
            return True
        try:
            offer = SessionDescription.parse(ev.sdp)
        except SdpError:
            self._refuse_to_fxo(ev, 488, "unreadable SDP", now)
            return True
        cfg = self.config
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if self.ua.call_state(ev.call_id) in (None, "ended"):
            rtp.close()  # CANCELled while the socket was being opened: never seize
            return True
        policy = self._srtp_policy_for(ev.source)
        sdp_id = secrets.randbits(31)
        try:
            answer, params, selection = secure_answer(
                policy, offer, address=cfg.sip.public_host, port=rtp.port,
                codecs=list(cfg.sip.codecs), session_id=sdp_id, session_version=1)
        except SdpError as exc:
            rtp.close()
            self._refuse_to_fxo(ev, 488, f"no usable media ({exc})", now)
            return True
        call = Call(ev.call_id, fp, "in", ev.from_uri, "sip", now, rtp=rtp,
                    answer_sdp=bytes(answer), params=params, srtp=selection,
                    srtp_policy=policy, sdp_id=sdp_id)
        self.calls[ev.call_id] = call
        self._attach_rtp(call)
        try:
            result = fp.fxo.place(ev.call_id, number, now)
        except ValueError as exc:
            log.info("fxo %s: %s", fp.name, exc)
            result = lev.IncomingResult.BUSY
        if result is not lev.IncomingResult.ACCEPTED:
            log.info("call %s: fxo %s is %s; not dialling %s", ev.call_id, fp.name,
                     fp.line.fxo_state.value, number)
            self.ua.reject(ev.call_id, 503, now)
            self.end_call(call, call_end.rejected(503, f"fxo {fp.name} busy"), now)
            self._pump()
            return True
        fp.call_id = ev.call_id
        call.state = "ringing"
        self.ua.ringing(ev.call_id, now)
        log.info("call %s from %s: calling %s via fxo %s", ev.call_id, source, number, fp.name)
        self._pump()
        return True

    def _refuse_to_fxo(self, ev: sev.IncomingCall, status: int, why: str, now: float) -> None:
        """Answer `status` to an INVITE routed to an exchange line; the line was not seized."""
        assert self.ua is not None
        self.ua.reject(ev.call_id, status, now)
        log.info("call %s (%s) ended: rejected %s (%s)", ev.call_id, ev.request_uri, status, why)
        self._pump()

    # ------------------------------------------------------------------ in: the line rings

    def _fxo_offer(self, fp: FxoLinePort, offer: IncomingOffer) -> None:
        """A call rings on the exchange line: ring the configured port or INVITE the trunk."""
        now = self.loop.time()
        caller = offer.caller or ""
        options = fp.config.options
        inbound = options.get("inbound")
        log.info("fxo %s: incoming call from %s", fp.name,
                 caller or ("withheld" if offer.withheld else "unknown"))
        target = parse_target(inbound) if inbound else None
        port: Port | None = None
        if isinstance(target, LineTarget):
            port = self.lines.get(target.name)
        elif isinstance(target, LocalTarget):
            port = self._local_port_for(str(options.get("inbound_number", fp.number)))
        elif isinstance(target, TrunkTarget) and target.name in self.trunks:
            fp.fxo.set_call_id(f"pending-{secrets.token_hex(4)}")
            self._spawn(self._fxo_to_trunk(fp, caller, target.name))
            return
        if port is None:
            log.warning("fxo %s: incoming call not taken: no inbound target (%s)", fp.name,
                        inbound or "no options.inbound")
            return  # it rings out unanswered
        a = Call(f"fxo-{secrets.token_hex(8)}", fp, "out", port.number, "local", now)
        b = Call(f"local-{secrets.token_hex(8)}", port, "in", caller, "local", now)
        a.peer, b.peer = b, a
        self.calls[a.call_id] = a
        self.calls[b.call_id] = b
        fp.call_id = a.call_id
        fp.fxo.set_call_id(a.call_id)
        name = "Withheld" if offer.withheld else offer.name
        if port.machine.incoming_call(b.call_id, caller, name, now) \
                is lev.IncomingResult.ACCEPTED:
            port.call_id = b.call_id
            a.state = b.state = "ringing"
        # a busy port asks (RejectCall) to end both legs; the line then rings out

    async def _fxo_to_trunk(self, fp: FxoLinePort, caller: str, trunk_name: str) -> None:
        """INVITE the trunk for a call ringing on `fp`; From carries the caller ID."""
        cfg = self.config
        trunk = self.trunks[trunk_name]
        number = str(fp.config.options.get("inbound_number", fp.number))
        targets: tuple[Target, ...] = self.proxy_targets.get(trunk_name, ())
        if not targets and not is_ip(trunk.proxy.host):
            log.warning("fxo %s: trunk %s has no address; call from %s not taken", fp.name,
                        trunk_name, caller)
            return
        rtp = await RtpEndpoint.open(cfg.sip.listen.host,
                                     (cfg.sip.rtp_ports.first, cfg.sip.rtp_ports.last))
        now = self.loop.time()
        if fp.machine.state is not lev.LineState.RINGING:
            rtp.close()  # the caller gave up while the socket was being opened
            return
        assert self.ua is not None
        sdp_id = secrets.randbits(31)
        offer, pending = secure_offer(trunk.srtp, build_offer(
            address=cfg.sip.public_host, port=rtp.port,
            codecs=list(trunk.codecs or cfg.sip.codecs), session_id=sdp_id, session_version=1))
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
        call = Call(call_id, fp, "out", f"sip:{number}@{trunk.domain}", "sip", now, rtp=rtp,
                    offer=offer, srtp_pending=pending, srtp_policy=trunk.srtp, sdp_id=sdp_id)
        self.calls[call_id] = call
        fp.call_id = call_id
        fp.fxo.set_call_id(call_id)
        self._attach_rtp(call)
        log.info("fxo %s: call from %s to %s via %s (%s)", fp.name, caller or "withheld",
                 number, trunk_name, call_id)
        self._pump()

    # ------------------------------------------------------------------ status, control

    def fxo_status(self) -> list[dict[str, Any]]:
        out = []
        for fp in self.fxo_lines.values():
            entry = fp.describe()
            if fp.exchange is not None:
                entry["exchange"] = fp.exchange.describe()
            out.append(entry)
        return out

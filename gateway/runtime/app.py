"""The Branchline daemon: wires the pure cores to sockets, ports, clocks and the control socket.

Everything with protocol logic lives in the pure packages; this module only moves inputs
into them with `now = loop.time()` (the monotonic clock) and carries out what they return.
After every input `_pump()` drains the user agent and the lines until nothing is left to do,
sends what is queued and re-arms the single protocol timer.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, LineConfig, TrunkConfig
from gateway.dsp.tones import get_profile
from gateway.lines import events as lev
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.routing.router import Router, effective_digit_map
from gateway.runtime import call_end
from gateway.runtime.bridge import bridge, plan, send_first
from gateway.runtime.call_end import CallEnd
from gateway.runtime.call_records import CallRecords, open_recorder
from gateway.runtime.clock import AudioClock, scheduling_summary
from gateway.runtime.control import ControlServer
from gateway.runtime.dtmf_relay import DtmfRelay
from gateway.runtime.edge import SipEdge, build_edge, build_route_guard
from gateway.runtime.failover import FailoverCalls
from gateway.runtime.forwarding import (
    arm_local_no_answer,
    caller_of,
    feature_code,
    forward_local,
    forward_port_idle,
    line_setup,
)
from gateway.runtime.fxo_calls import FxoCalls, fxo_policies
from gateway.runtime.gsm_calls import GsmCalls, gsm_policies
from gateway.runtime.line_calls import carry_out as carry_out_line_call
from gateway.runtime.line_calls import line_features
from gateway.runtime.local_registrar import LocalRegistrar, start_local_registrar
from gateway.runtime.logs import setup_logging
from gateway.runtime.media_watch import MediaWatchCalls
from gateway.runtime.modem import ModemDriver
from gateway.runtime.modem_setup import StoredPinMemory
from gateway.runtime.mwi import MessageWaiting
from gateway.runtime.phones import PhoneCalls
from gateway.runtime.ports import LinePort, Port, PortTable, machine_for
from gateway.runtime.push import Pusher, start_push
from gateway.runtime.reload import Reloader, line_idle, reloader_of
from gateway.runtime.resolver import SipResolver
from gateway.runtime.selector import PreciseEpollSelector
from gateway.runtime.sip_calls import Call, Registration, SipCalls
from gateway.runtime.sms_service import SmsService
from gateway.runtime.systemd import Notifier, gateway_summary
from gateway.runtime.transfer import Transfers
from gateway.runtime.transports import (
    ListenSettings,
    TlsServerSettings,
    TransportManager,
)
from gateway.runtime.trunk_health import TrunkHealthMonitor
from gateway.runtime.trunk_trust import TrunkTrust, source_limiter, trunk_limits
from gateway.sip.target import Target
from gateway.sip.ua import UserAgent
from gateway.store.call_writer import CallRecorder
from gateway.store.instance import load_or_create_instance_id
from hal.base import HalError
from hal.registry import create_fxs

if TYPE_CHECKING:  # loaded only when metrics.listen is set (see run())
    from gateway.runtime.metrics import MetricsServer

log = logging.getLogger("branchline")

SHUTDOWN_GRACE = 3.0
MODEM_START_WAIT = 15.0


@dataclass
class Gateway(FailoverCalls, MediaWatchCalls, SipCalls, GsmCalls, FxoCalls, PhoneCalls,
              CallRecords):
    """The running gateway. Construct, `await start()`, and `await stop()`."""

    config: Config
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def __post_init__(self) -> None:
        self.lines: dict[str, LinePort] = {}  # the FXS lines, by name
        self.line_tests: dict[str, Any] = {}  # lines under `line-test` (runtime/line_test.py)
        # Every port of every kind, by name. A port whose machine signals its changes
        # (`on_change`: the local phones) is visited only when it has something to do:
        # `_dirty` (actions or a new deadline to look at), `_deadlines` (a heap of
        # (deadline, seq, port), checked against `_deadline_of` when popped) and `_active`
        # (the 20 ms tick). Any other port (FXS lines, modems) is polled as before.
        self.ports: dict[str, Port] = PortTable(self._port_added, self._port_removed)
        self._polled: dict[str, Port] = {}
        self._dirty: dict[str, Port] = {}
        self._active: dict[str, Port] = {}
        self._deadlines: list[tuple[float, int, Port]] = []
        self._deadline_of: dict[str, float] = {}
        self._deadline_seq = 0
        self.modems: dict[str, ModemDriver] = {}  # the GSM/LTE modules, by name
        self.calls: dict[str, Call] = {}
        self.dtmf_relay = DtmfRelay()  # a handset's held keys, sent on with their length
        self.sms: SmsService | None = None  # SMS/USSD, once modems are configured
        self.mwi: MessageWaiting | None = None  # message waiting per line (runtime/mwi.py)
        # REFER both ways and INVITE with Replaces (gateway/runtime/transfer.py); the line's
        # TransferCall reaches it through `_transfer_call` (gateway/runtime/line_calls.py).
        self.transfers = Transfers(self)
        self._transfer_call = self.transfers.transfer_call
        self.registrations: dict[str, Registration] = {}
        self.trunks: dict[str, TrunkConfig] = {t.name: t for t in self.config.trunks}
        self.router = Router.from_config(self.config)  # with the emergency numbers
        self.edge: SipEdge | None = None
        self.trunk_trust: TrunkTrust | None = None
        self.route_guard = build_route_guard(
            self.config, extra=gsm_policies(self.config) + fxo_policies(self.config))
        self.ua: UserAgent | None = None
        self.local_registrar: LocalRegistrar | None = None  # local SIP phones register
        self.sip: TransportManager | None = None
        self.resolver: SipResolver | None = None
        self.registrar_targets: dict[str, tuple[Target, ...]] = {}
        self.registrar_dns: dict[str, str] = {}  # trunk -> why its registrar did not resolve
        self.proxy_targets: dict[str, tuple[Target, ...]] = {}
        self.trunk_health: TrunkHealthMonitor | None = None  # per-trunk health (issue 8)
        self.clock = AudioClock(self.loop)
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None  # GET /metrics on metrics.listen
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopped = asyncio.Event()
        self.call_recorder: CallRecorder | None = None  # call records (gateway/store/calls.py)
        self.pusher: Pusher | None = None  # finished calls POSTed to push.url (runtime/push.py)
        # `branchline reload` / SIGHUP (gateway/runtime/reload.py): the file to read again,
        # the command line's overrides of it, and the reloader once used.
        self.config_path: str | None = None
        self.config_overrides: dict[str, Any] = {}
        self.reloader: Reloader | None = None
        self.notifier = Notifier()  # systemd READY/STATUS/WATCHDOG; no-op without NOTIFY_SOCKET

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        cfg = self.config
        state_dir = Path(cfg.gateway.state_dir)
        instance_id = self.instance_id = load_or_create_instance_id(state_dir)
        # Before any call: a crash's journal is replayed, retention runs (then hourly).
        self.call_recorder = await asyncio.to_thread(open_recorder, cfg)
        self.pusher = start_push(cfg, self.call_recorder, self.loop)  # drains the outbox
        listen = cfg.sip.listen
        self.resolver = SipResolver([(d.host, d.port) for d in cfg.sip.dns_servers])
        self.edge = build_edge(cfg, trunk_limits=trunk_limits(cfg.trunks),
                               limiter=source_limiter(cfg.security))
        # Trunk host names are trusted, and sent to, by what DNS says, re-asked as answers
        # expire: one lookup feeds the ACL and the registrar and proxy targets.
        self.trunk_trust = TrunkTrust(cfg.trunks, self.edge, self.resolver, self.loop,
                                      on_targets=self._trunk_dns_changed)
        await self.trunk_trust.start()
        self.ua = UserAgent(
            local_host=cfg.sip.public_host,
            local_port=listen.port,
            user_agent=cfg.sip.user_agent,
            instance_id=instance_id,
            request_filter=self.edge.filter,
            target_timeout=min((t.failover_timeout for t in cfg.trunks), default=1.5),
        )
        ua = self.ua
        s = cfg.sip
        self.sip = TransportManager(ua, self.loop, self._pump)
        self.sip.trace.log_enabled = s.trace
        await self.sip.start(ListenSettings(
            udp=(listen.host, listen.port),
            tcp=(s.tcp_listen.host, s.tcp_listen.port) if s.tcp_listen else None,
            tls=(s.tls_listen.host, s.tls_listen.port) if s.tls_listen else None,
            tls_server=TlsServerSettings(s.tls.cert_file, s.tls.key_file, s.tls.ca_file,
                                         s.tls.verify_clients) if s.tls else None,
            udp_receive_buffer=s.udp_receive_buffer,
        ))
        # Tests bind port 0: tell the agent which ports it actually got.
        ua.local_port = self.sip.ports["udp"]
        ua.ports = dict(self.sip.ports)
        # Local SIP phones' registrar, with the bindings saved before the last stop.
        self.local_registrar = start_local_registrar(cfg, self.loop, ua)
        for t in cfg.trunks:
            await self._resolve_trunk(t)
        # One OPTIONS stream and one health state per trunk; started before the accounts,
        # which then leave probing to it (gateway/runtime/trunk_health.py).
        self.trunk_health = TrunkHealthMonitor(
            cfg.trunks, ua, self.loop, self._pump, proxy_targets=self.proxy_targets,
            registrar_targets=self.registrar_targets, accounts=self.registrations,
            from_uri=f"sip:branchline@{cfg.sip.public_host}")
        self.trunk_health.start()
        if any(t.srtp != "off" for t in cfg.trunks):
            import gateway.media.srtp  # noqa: F401  now, rather than in the first call's setup
        profile = get_profile(cfg.gateway.country)
        digit_map = DigitMap(effective_digit_map(cfg))  # emergency numbers always dial
        for lc in cfg.lines:
            self._add_line(lc, profile, digit_map)
        self._add_phones()  # local SIP phones are ports too (gateway.runtime.phones)
        now = self.loop.time()
        for lc in cfg.lines:
            if lc.trunk is not None:
                self._add_account(lc, now)
        self.mwi = MessageWaiting(self)  # after the accounts: SUBSCRIBE authenticates
        self.mwi.start(now)
        self.clock.add(self._tick)
        self.clock.start()
        log.info("audio tick: %s", scheduling_summary())
        self.control = ControlServer(cfg.gateway.control_socket, self._control)
        await self.control.start()
        if getattr(self.config.metrics, "listen", None) is not None:
            # prometheus-client only when an admin asked for the endpoint (1.5 MB at idle)
            from gateway.runtime.metrics import start_metrics

            self.metrics = await start_metrics(self)
        log.info(
            "branchline started: SIP on %s:%s, %d line(s), %d trunk(s), control %s",
            cfg.sip.public_host, ua.local_port, len(self.lines), len(self.trunks),
            cfg.gateway.control_socket,
        )
        self._pump()
        self._start_phone_relay()  # phones with trunk: registered upstream
        await self._start_modems()
        await self._start_sms()
        # Lines are up and every trunk has been tried: tell systemd, then keep it told.
        self.notifier.ready(gateway_summary(self))
        self.notifier.start(self.loop, lambda: gateway_summary(self))

    async def _start_modems(self) -> None:
        """Open every configured modem, side by side; an absent one is reported and looked
        for again by its driver, so the daemon starts whatever the modems do."""
        # A refused PIN is remembered across restarts: never a second try on the same SIM.
        pins = StoredPinMemory(Path(self.config.gateway.state_dir) / "sim_pins.json")
        for mc in self.config.modems:
            self.modems[mc.name] = ModemDriver(mc, self.loop, pin_memory=pins)
            self._add_gsm_port(self.modems[mc.name])  # gsm:<group> calls, RING/+CLIP in
        if self.modems:
            starting = [self.loop.create_task(d.start()) for d in self.modems.values()]
            for task in starting:
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
            # Wait a while for them (a SIM check takes seconds), never for ever: a slow one
            # keeps starting in the background and status shows where it is.
            await asyncio.wait(starting, timeout=MODEM_START_WAIT)
            log.info("modems: %s", ", ".join(
                f"{d.name} {d.status()['state']}" for d in self.modems.values()))

    async def _start_sms(self) -> None:
        """SMS in (modems' SIM -> queue -> SIP MESSAGE / webhook), out and USSD."""
        if not self.modems:
            return
        self.sms = sms = SmsService(self.config, self.modems, loop=self.loop, ua=self.ua,
                                    pump=self._pump, in_call=self._modem_in_call,
                                    router=self._gsm_router())
        await sms.start()
        for name, port in getattr(self, "gsm_ports", {}).items():
            # The SMS gate follows the GSM port's state as it changes (same event-loop turn).
            port.gsm.on_state = lambda state, name=name: sms.call_state(
                name, state is not lev.LineState.IDLE)
            sms.call_state(name, port.gsm.state is not lev.LineState.IDLE)

    def _modem_in_call(self, name: str) -> bool:
        port = self.ports.get(name)
        return port is not None and port.kind == "gsm" and \
            port.machine.state is not lev.LineState.IDLE

    def _add_line(self, lc: LineConfig, profile: Any, digit_map: DigitMap) -> None:
        if lc.type == "fxo":
            self._add_fxo_line(lc)  # an exchange line (gateway.runtime.fxo_calls)
            return
        if lc.type != "fxs":
            raise HalError(f"line {lc.name}: ports of type {lc.type!r} are not supported yet")
        options = dict(lc.options)
        if lc.backend == "sim":
            options.setdefault("country", self.config.gateway.country)
        port = create_fxs(lc.backend, lc.name, options)
        line = FxsLine(lc.name, ring_cadence=tuple(profile.ring_cadence),
                       **line_setup(lc, digit_map),  # timers, flash window, star codes
                       **line_features(lc, profile))  # call waiting, three-way, transfer
        lp = LinePort(lc.name, lc.number, lc, port, line, profile)
        self.lines[lc.name] = lp
        self.ports[lc.name] = lp

        def on_hook(offhook: bool, t: float, lp: LinePort = lp) -> None:
            self.loop.call_soon_threadsafe(self._hook_edge, lp, offhook, t)

        port.start(on_hook)
        if self.mwi is not None:
            self.mwi.line_added(lp)  # made again by a reload: its lamp and stutter tone

    def _server_name(self, t: TrunkConfig) -> str | None:
        return (t.tls.server_name or t.domain) if t.transport == "tls" else None

    async def _resolve_trunk(self, t: TrunkConfig) -> None:
        """RFC 3263: turn the trunk's registrar and proxy into ordered transport targets."""
        assert self.sip is not None and self.resolver is not None
        name = t.tls.server_name
        if t.transport == "tls":
            self.sip.set_tls_client(
                {t.domain, t.registrar.host, t.proxy.host, *([name] if name else [])},
                t.tls,
            )
        sn = self._server_name(t)
        found: list[tuple[Target, ...]] = []
        for hp in (t.registrar, t.proxy):  # names come from the trust's lookups, kept fresh
            named = self.trunk_trust.targets_for(t, hp) if self.trunk_trust else None
            found.append(named if named is not None else tuple(
                await self.resolver.resolve_trunk(hp.host, hp.lookup_port, t.transport,
                                                  server_name=sn)))
        self._set_trunk_targets(t, found[0], found[1])

    def _set_trunk_targets(self, t: TrunkConfig, registrar: tuple[Target, ...],
                           proxy: tuple[Target, ...]) -> None:
        """Send to these targets from now on: REGISTERs, INVITEs and keep-alives."""
        assert self.sip is not None
        self.registrar_targets[t.name] = registrar
        self.proxy_targets[t.name] = proxy
        if registrar:
            self.registrar_dns.pop(t.name, None)
        else:
            failed = self.trunk_trust.lookup_failed(t, t.registrar) if self.trunk_trust \
                else False
            self.registrar_dns[t.name] = registrar_dns_problem(t.registrar.host, failed)
            log.warning("trunk %s: %s", t.name, self.registrar_dns[t.name])
        if t.keepalive == "crlf":
            self.sip.set_keepalive(t.name, proxy, t.keepalive, t.keepalive_interval)

    def _trunk_dns_changed(self, names: set[str]) -> None:
        """The trust's lookups moved these trunks' targets: registrations follow at once."""
        if self.ua is None or self.sip is None or self.trunk_trust is None:
            return  # still starting: start() reads the targets itself
        now = self.loop.time()
        for name in sorted(names):
            t = self.trunks[name]
            reg = self.trunk_trust.targets_for(t, t.registrar)
            proxy = self.trunk_trust.targets_for(t, t.proxy)
            # An empty answer keeps the last proxy targets (the best guess left), as the
            # registration clients keep theirs; the registrar's status says DNS failed.
            self._set_trunk_targets(t, self.registrar_targets.get(name, ()) if reg is None
                                    else reg, proxy or self.proxy_targets.get(name, ()))
            for account_id, r in self.registrations.items():
                if r.trunk != name:
                    continue
                client = self.ua.registration(account_id)
                if client is not None and reg:
                    client.set_targets(reg, now)
                if not r.registered and name in self.registrar_dns:
                    r.reason = self.registrar_dns[name]
        self._pump()

    def _account_settings(self, lc: LineConfig) -> Any:
        from gateway.sip.registration import AccountSettings

        assert lc.trunk is not None and self.ua is not None
        trunk = self.trunks[lc.trunk.name]
        port = self.ua.ports.get(trunk.transport, self.ua.local_port) if self.ua.ports else self.ua.local_port
        return AccountSettings(
            aor=f"sip:{lc.trunk.username}@{trunk.domain}",
            registrar_host=trunk.registrar.host,
            registrar_port=trunk.registrar.port,
            username=lc.trunk.username,
            password=lc.trunk.password,
            auth_username=lc.trunk.auth_username,
            expires=trunk.expires,
            contact=f"sip:{lc.trunk.username}@{self.config.sip.public_host}:{port}",
            instance_id=self.instance_id,
            # A monitored trunk is probed once for all its accounts (0: no OPTIONS of their
            # own). Else with keepalive "options" the registrar is probed every interval;
            # otherwise the transport keeps the flow alive and probing is rare.
            probe_interval=0.0 if self.trunk_health is not None and
            self.trunk_health.monitors(trunk.name) else
            trunk.keepalive_interval if trunk.keepalive == "options" else 300.0,
            transport=trunk.transport,
            targets=self.registrar_targets.get(trunk.name, ()),
            target_timeout=trunk.failover_timeout,
        )

    def _add_account(self, lc: LineConfig, now: float) -> None:
        assert lc.trunk is not None and self.ua is not None
        trunk = self.trunks[lc.trunk.name]
        settings = self._account_settings(lc)
        self.registrations[lc.name] = Registration(lc.name, trunk.name, settings.aor)
        self.ua.add_account(lc.name, settings, now)

    async def stop(self) -> None:
        """Hang up every call, un-register, then close everything."""
        if self.ua is None:
            return
        self.notifier.stopping()
        now = self.loop.time()
        for call in list(self.calls.values()):
            self._end_call_locally(call, now, call_end.shutdown())
        self._stop_phones(now)  # BYE/CANCEL/503 on the dialogs with local phones
        if self.mwi is not None:
            self.mwi.stop(now)
        for account_id in list(self.registrations):
            self.ua.remove_account(account_id, now)
        self._pump()
        deadline = self.loop.time() + SHUTDOWN_GRACE
        while self.loop.time() < deadline and any(
            r.registered for r in self.registrations.values()
        ):
            await asyncio.sleep(0.05)
        self.clock.stop()
        if self.trunk_trust is not None:
            self.trunk_trust.stop()
        if self.trunk_health is not None:
            self.trunk_health.stop()
        if self.sms is not None:
            await self.sms.close()  # before the modems: a read in progress stops cleanly
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        for call in list(self.calls.values()):
            self._release_media(call)
        for p in self.ports.values():
            p.close()
        for driver in self.modems.values():
            await driver.close()
        if self._timer is not None:
            self._timer.cancel()
        if self.local_registrar is not None:
            await self.local_registrar.close()  # bindings survive the restart
        if self.sip is not None:
            await self.sip.close()
        if self.pusher is not None:  # a POST in progress stays queued for the next start
            await self.pusher.stop()
        if self.call_recorder is not None:  # every call ended above: commit their records
            await asyncio.to_thread(self.call_recorder.close)
            self.call_recorder.store.close()
        self.notifier.stop()
        self.stopped.set()
        log.info("branchline stopped")

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ pump and timers

    def _port_added(self, port: Port) -> None:
        machine = port.machine
        if hasattr(machine, "on_change") and hasattr(port, "quiet"):
            machine.on_change = lambda port=port: self._port_changed(port)
            self._port_changed(port)  # anything it queued before it was added
        else:
            self._polled[port.name] = port

    def _port_removed(self, port: Port) -> None:
        if self._polled.get(port.name) is port:
            del self._polled[port.name]
        for index in (self._dirty, self._active):
            if index.get(port.name) is port:
                del index[port.name]
        if hasattr(port.machine, "on_change"):
            port.machine.on_change = None
            self._deadline_of.pop(port.name, None)

    def _port_changed(self, port: Port) -> None:
        """A signalling port's machine queued something or moved its deadline."""
        self._dirty[port.name] = port
        self._active[port.name] = port

    def _note_deadline(self, port: Port) -> None:
        when = port.machine.get_timer()
        if when is None:
            self._deadline_of.pop(port.name, None)
        elif self._deadline_of.get(port.name) != when:
            self._deadline_of[port.name] = when
            self._deadline_seq += 1
            heapq.heappush(self._deadlines, (when, self._deadline_seq, port))

    def _deadline_live(self, entry: tuple[float, int, Port]) -> bool:
        when, _, port = entry
        return self._deadline_of.get(port.name) == when and self.ports.get(port.name) is port

    def _next_port_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not self._deadline_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _pump(self) -> None:
        """Drain the user agent and the lines until quiet; send; re-arm the timer."""
        if self._pumping or self.ua is None:
            return
        self._pumping = True
        try:
            for _ in range(1000):
                busy = False
                while (ev := self.ua.next_event()) is not None:
                    busy = True
                    if self.sms is not None and self.sms.on_sip_event(ev):
                        continue
                    if self.mwi is not None and self.mwi.on_sip_event(ev):
                        continue  # message waiting (gateway/runtime/mwi.py)
                    if self.transfers.on_sip_event(ev):
                        continue  # REFER, Replaces, calls placed for a transfer
                    if self.trunk_health is not None and self.trunk_health.on_sip_event(ev):
                        continue  # its probes' answers (registration outcomes go on too)
                    self._on_sip_event(ev)
                for p in list(self._polled.values()):
                    for action in p.machine.actions():
                        busy = True
                        self._on_line_action(p, action)
                dirty = self._dirty
                while dirty:
                    p = dirty.pop(next(iter(dirty)))
                    self._note_deadline(p)
                    for action in p.machine.actions():
                        busy = True
                        self._on_line_action(p, action)
                if not busy:
                    break
            if self.sip is not None:
                self.sip.flush()
        finally:
            self._pumping = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        assert self.ua is not None
        deadlines = [d for d in (self.ua.get_timer(), self._next_port_deadline(),
                                 *(p.machine.get_timer() for p in self._polled.values()))
                     if d is not None]
        when = min(deadlines) if deadlines else None
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        assert self.ua is not None
        t = self.ua.get_timer()
        if t is not None and t <= now:
            self.ua.handle_timer(now)
        for p in list(self._polled.values()):
            t = p.machine.get_timer()
            if t is not None and t <= now:
                p.machine.handle_timer(now)
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._deadline_live(entry):
                continue
            p = entry[2]
            del self._deadline_of[p.name]
            t = p.machine.get_timer()
            if t is not None and t <= now:
                p.machine.handle_timer(now)
            self._dirty[p.name] = p  # its deadline is looked at again in the pump
        self._pump()

    # ------------------------------------------------------------------ hook and audio

    def _hook_edge(self, lp: LinePort, offhook: bool, t: float) -> None:
        log.debug("line %s: %s", lp.name, "off-hook" if offhook else "on-hook")
        test = self.line_tests.get(lp.name)
        if test is not None:  # the line is under test: its edges are the test's
            test.hook(offhook, t)
            return
        lp.line.hook(offhook, min(t, self.loop.time()))
        self._pump()

    def _tick(self, now: float) -> None:
        """Every 20 ms: capture every port, then let the bridge join each call's two legs."""
        digits_seen = False
        ports = [*self._polled.values(), *self._active.values()]
        pairs, idle = plan(ports, self.calls)
        send_first(pairs, now)  # each call's RTP leaves at the tick's start, before the DSP
        for p in ports:
            p.capture()
            for digit in p.digits_heard():  # only kinds that dial in band, while they can
                log.debug("line %s: DTMF %s", p.name, digit)
                p.machine.dtmf_digit(digit, now)
                digits_seen = True
            self.dtmf_relay.released(self.config.sip.dtmf, self.ua, self.calls, p, now)
        bridge(pairs, idle, now)
        self._watch_media(now)  # a connected call whose RTP stopped is ended
        for p in [p for p in self._active.values() if p.quiet()]:  # type: ignore[attr-defined]
            del self._active[p.name]  # back when its machine signals a change
        if digits_seen:
            self._pump()

    # ------------------------------------------------------------------ line actions

    def _on_line_action(self, lp: Port, action: lev.Action) -> None:
        if lp.carry_out(action):
            return  # the port's own business: tones, ringing
        action = self._current_call_action(lp, action)  # after a failover: the live call
        now = self.loop.time()
        if carry_out_line_call(self, lp, action, now):
            return  # hold, conference, transfer (gateway/runtime/line_calls.py)
        match action:
            case lev.PlaceCall(number=number):
                self._place_call(lp, number, now)
            case lev.CancelCall(call_id=call_id):
                call = self.calls.get(call_id or lp.call_id or "")
                if call is not None:
                    self._end_call_locally(call, now)
            case lev.HangUp(call_id=call_id):
                call = self.calls.get(call_id)
                if call is not None:
                    self._end_call_locally(call, now)
            case lev.AnswerCall(call_id=call_id):
                self._answer(call_id, now)
            case lev.RejectCall(call_id=call_id, status=status):
                self._reject(call_id, status, now)
            case lev.ConnectAudio(call_id=call_id):
                call = self.calls.get(call_id)
                if call is not None:
                    call.audio = True
            case lev.DisconnectAudio(call_id=call_id):
                call = self.calls.get(call_id)
                if call is not None:
                    call.audio = False
            case lev.SendDigit(call_id=call_id, digit=digit):
                call = self.calls.get(call_id)
                if call is not None and call.media is not None:
                    self.dtmf_relay.pressed(self.config.sip.dtmf, self.ua, call, lp, digit, now)
                elif call is not None and call.peer is not None and (
                        call.peer.port.kind != "fxs" or lp.kind != "fxs"):
                    call.peer.port.play_digit(digit, 100)  # a modem sends it (AT+VTS)
            case lev.FlashHook(call_id=call_id):
                self._toggle_hold(call_id, now)
            case lev.StateChanged(state=state):
                log.info("line %s: %s", lp.name, state.value)
                if state is lev.LineState.IDLE:
                    lp.call_id = None
                    self._record_port_idle(lp)
                    line_idle(self, lp)  # settings a reload left pending apply now
                    forward_port_idle(self, lp)  # a forwarded call's port goes
            case _:
                log.debug("line %s: %s not handled", lp.name, action)

    def _place_call(self, lp: Port, number: str, now: float) -> None:
        """Route what `lp` dialled over the route's ordered targets (gateway.runtime.failover)."""
        if feature_code(self, lp, number, now):
            return  # a star code (call forward, DND): gateway.runtime.forwarding
        self._route_call(lp, number, now)

    def _place_local_call(self, lp: Port, number: str, now: float,
                          target: Port | None = None) -> None:
        """A port-to-port call: `target`, or the FXS line whose number is `number`."""
        if target is None:
            target = self._local_port_for(number)  # an FXS line or a local phone
        if target is None:
            lp.machine.call_ended("not found", 404, now)
            return
        if forward_local(self, lp, target, now):
            return  # the line is forwarded or in DND (gateway.runtime.forwarding)
        caller, caller_name = caller_of(lp)  # a forwarded call: its original caller
        a = Call(f"local-{secrets.token_hex(8)}", lp, "out", target.number, "local", now)
        b = Call(f"local-{secrets.token_hex(8)}", target, "in", caller, "local", now)
        a.peer, b.peer = b, a
        self.calls[a.call_id] = a
        lp.call_id = a.call_id
        lp.machine.set_call_id(a.call_id)
        if target is lp:
            lp.machine.call_ended("busy", 486, now)
            self.end_call(a, call_end.rejected(486), now)
            return
        self.calls[b.call_id] = b
        result = target.machine.incoming_call(b.call_id, caller, caller_name, now)
        if result is lev.IncomingResult.ACCEPTED:
            if target.call_id is None or target.machine.call_id == b.call_id:
                target.call_id = b.call_id  # else it waits behind the target's call
            a.state = b.state = "ringing"
            lp.machine.call_progress(180, now, early_media=False)
            arm_local_no_answer(self, a, b)  # forward on no answer (forwarding.py)

    def _answer(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        call.state = "connected"
        call.answered_at = now
        if call.kind == "local":
            if self.transfers.local.answered(call, now):
                return  # a blind transfer's target answered (gateway/runtime/transfer_local.py)
            peer = call.peer
            if peer is not None:
                peer.state = "connected"
                peer.answered_at = now
                machine_for(peer.port, peer.call_id).call_answered(now)
            return
        assert self.ua is not None and call.answer_sdp is not None and call.params is not None
        self.ua.answer(call_id, call.answer_sdp, now)
        self._start_media(call, call.params, now)

    def _reject(self, call_id: str, status: int, now: float) -> None:
        """Our line refuses an incoming call (busy, or nobody answered)."""
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.kind == "local":
            if self.transfers.local.refused(call, status, now):
                return  # a blind transfer's target refused: recall (transfer_local.py)
            self.end_call(call, call_end.rejected(status), now)
            peer = call.peer
            if peer is not None and self.end_call(
                    peer, call_end.rejected(status, f"line {call.port.name}"), now):
                reason = "busy" if status == 486 else "no answer"
                machine_for(peer.port, peer.call_id).call_ended(reason, status, now)
            return
        assert self.ua is not None
        self.ua.reject(call_id, status, now)
        self.end_call(call, call_end.rejected(status), now)

    def _end_call_locally(self, call: Call, now: float, cause: CallEnd | None = None) -> None:
        """Our side hung up or gave up on `call` (the handset, a policy, or shutdown)."""
        if self.calls.get(call.call_id) is not call:
            return  # already ended (e.g. the other leg of a line-to-line call)
        if call.state == "connected":
            default = call_end.local_hangup()
        elif call.direction == "out":
            default = call_end.local_cancel()
        else:
            default = call_end.rejected(480)
        if call.kind == "local":
            self.end_call(call, cause or default, now)
            peer = call.peer
            if peer is not None and self.end_call(peer, call_end.peer_hangup(call.port.name),
                                                  now):
                if peer.state == "ringing" and peer.direction == "in":
                    machine_for(peer.port, peer.call_id).incoming_cancelled(now)
                else:
                    machine_for(peer.port, peer.call_id).call_ended("remote hangup", None, now)
            return
        assert self.ua is not None
        if call.state == "connected":
            self.ua.bye(call.call_id, now)
        elif call.direction == "out":
            self.ua.cancel(call.call_id, now)
        else:
            self.ua.reject(call.call_id, 480, now)
        self.end_call(call, cause or default, now)

    # ------------------------------------------------------------------ control socket

    async def _control(self, request: dict[str, Any]) -> Any:
        from gateway.runtime.control_handlers import handle

        return await handle(self, request)


def registrar_dns_problem(host: str, lookup_failed: bool) -> str:
    """Why a registrar has no address, for status and log: no such name, or no DNS answer."""
    if lookup_failed:
        return f"registrar {host}: DNS lookup failed (no answer from the name servers)"
    return f"registrar {host}: DNS found no such name (NXDOMAIN or no address records)"


def run(config: Config, *, config_path: str | None = None,
        overrides: dict[str, Any] | None = None) -> int:
    """Run the gateway in the foreground until SIGTERM or SIGINT; returns the exit code.

    `config_path` is the file `branchline reload` and SIGHUP read again (None: the embedded
    default, nothing to reload); `overrides` are `gateway` keys the command line set, kept
    across reloads.
    """
    # journald with structured fields under systemd, stderr otherwise (gateway.runtime.logs)
    setup_logging(config.gateway.log_level, getattr(config.gateway, "log", "auto"))

    async def main() -> int:
        gw = Gateway(config)
        gw.config_path = config_path
        gw.config_overrides = dict(overrides or {})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: reloader_of(gw).request())
        try:
            await gw.start()
        except (OSError, HalError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        await stop.wait()
        log.info("stopping")
        await gw.stop()
        return 0

    # epoll with waits that end on the millisecond asked for (gateway/runtime/selector.py)
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(
            PreciseEpollSelector())) as runner:
        return runner.run(main())

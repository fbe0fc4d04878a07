"""Live reload: `branchline reload` and SIGHUP read the config file again and apply it.

1. The file the daemon was started with is loaded and validated. Any error refuses the
   reload: every error is listed in the reply and the log, and the running config stays.
2. `reload_plan.plan_reload` compares it with the running config. Keys that cannot change
   while running (listen addresses, state_dir, control socket, ...) are reported as
   needing a restart and keep their running values; everything else is applied now:
   routing, the SIP edge's security settings, trunks (DNS trust, health, targets),
   accounts, lines, phones, push and metrics.
3. A line in a call keeps its old settings until it is idle (`line_idle`), so a call the
   change does not touch, or even one it does, stays up.
4. With `reload.confirm_within` > 0, a reload after which no trunk account registers within
   that many seconds is undone: the previous config is applied again (logged at WARNING).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, load_config
from gateway.config.schema import Config, LineConfig
from gateway.routing.dialplan import DigitMap
from gateway.routing.router import Router, effective_digit_map
from gateway.runtime.reload_plan import ReloadPlan, effective_config, plan_reload

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway
    from gateway.runtime.ports import LinePort

log = logging.getLogger("branchline.reload")

#: How often the confirm window looks for a registered trunk account.
CONFIRM_POLL = 0.25


class Reloader:
    """One per daemon: serialises reloads, holds pending line changes and the confirm timer."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.lock = asyncio.Lock()
        #: Line name -> the settings it takes when idle (None: removed when idle).
        self.pending: dict[str, LineConfig | None] = {}
        self.reloads = 0
        self.refused = 0
        self.rollbacks = 0
        self.last: dict[str, Any] | None = None
        self._confirm: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ entry points

    async def reload(self, *, path: str | None = None) -> dict[str, Any]:
        """Load the config file again and apply it; the reply for `branchline reload`."""
        async with self.lock:
            notifier = getattr(self.gw, "notifier", None)
            if notifier is not None:
                notifier.reloading()
            try:
                result = await self._reload(path)
            finally:
                if notifier is not None:
                    notifier.ready()
            self.last = result
            return result

    def request(self) -> None:
        """SIGHUP: reload in the background (the result goes to the log)."""
        task = self.gw.loop.create_task(self.reload())
        self.gw._tasks.add(task)
        task.add_done_callback(self.gw._task_done)

    async def _reload(self, path: str | None) -> dict[str, Any]:
        source = path or getattr(self.gw, "config_path", None)
        if not source:
            self.refused += 1
            message = ("the daemon was started with the embedded default config (no "
                       "--config): there is no file to reload")
            log.error("reload refused: %s", message)
            return {"reloaded": False, "errors": [message]}
        try:
            loaded = await asyncio.to_thread(load_config, source)
        except ConfigError as exc:
            self.refused += 1
            errors = [issue.format(exc.source) for issue in exc.errors]
            log.error("reload refused: %d error(s) in %s; the running config stays",
                      len(errors), source)
            for line in errors:
                log.error("reload: %s", line)
            return {"reloaded": False, "file": source, "errors": errors}
        overrides = getattr(self.gw, "config_overrides", None) or {}
        if overrides:
            loaded = dataclasses.replace(
                loaded, gateway=dataclasses.replace(loaded.gateway, **overrides))
        previous = self.gw.config
        plan = await self.apply(loaded)
        self.reloads += 1
        for line in plan.summary():
            log.info("reload: %s", line)
        if plan.restart:
            log.warning("reload: needs a restart to take effect: %s", ", ".join(plan.restart))
        pending = sorted(self.pending)
        if pending:
            log.info("reload: lines in a call take their new settings when idle: %s",
                     ", ".join(pending))
        log.info("reload: applied %s", source)
        self._arm_confirm(previous)
        return {"reloaded": True, "file": source, "changes": plan.summary(),
                "needs_restart": list(plan.restart), "pending_lines": pending,
                "unchanged": plan.empty}

    # ------------------------------------------------------------------ applying

    async def apply(self, new: Config) -> ReloadPlan:
        """Carry the running gateway over to `new`; returns the plan that was applied."""
        gw = self.gw
        old = gw.config
        plan = plan_reload(old, new)
        config = effective_config(old, new, plan)
        gw.trunks = {t.name: t for t in config.trunks}
        if plan.routing:
            from gateway.runtime.edge import build_route_guard
            from gateway.runtime.fxo_calls import fxo_policies
            from gateway.runtime.gsm_calls import gsm_policies

            gw.router = Router.from_config(config)
            gw.route_guard = build_route_guard(
                config, extra=gsm_policies(config) + fxo_policies(config))
            if hasattr(gw, "_gsm_trunk_guard"):
                del gw._gsm_trunk_guard  # rebuilt from the new trunks on first use
        if plan.security:
            self._apply_security(config)
        if plan.trunks_added or plan.trunks_removed or plan.trunks_changed:
            await self._apply_trunks(config, plan)
        gw.config = config  # lines, accounts and phones below read it
        now = gw.loop.time()
        self._apply_lines(config, plan)
        self._apply_accounts(config, plan, now)
        if gw.mwi is not None:
            gw.mwi.reconfigure(now)  # lines[].mwi, after the accounts it authenticates with
        self._apply_phones(config, plan)
        await self._apply_settings(old, config, plan)
        gw._pump()
        return plan

    def _apply_security(self, config: Config) -> None:
        from gateway.runtime.edge import trunk_sources_pinned, users_from_config
        from gateway.runtime.trunk_trust import source_limiter, trunk_limits

        edge = self.gw.edge
        if edge is None:
            return
        edge.users = users_from_config(config)
        edge.digest_algorithms = tuple(a.upper() for a in config.security.digest_algorithms)
        edge.limiter = source_limiter(config.security)
        edge.trunk_limits = dict(trunk_limits(config.trunks))
        edge._trunk_limiters.clear()
        trust = self.gw.trunk_trust
        resolved = trust.book.addresses() if trust is not None else None
        edge.with_trunk_sources(trunk_sources_pinned(config.trunks, resolved))

    async def _apply_trunks(self, config: Config, plan: ReloadPlan) -> None:
        """New DNS trust and health monitor over the new trunk list; targets resolved."""
        from gateway.runtime.edge import trunk_sources_pinned
        from gateway.runtime.trunk_health import TrunkHealthMonitor
        from gateway.runtime.trunk_trust import TrunkTrust

        gw = self.gw
        assert gw.edge is not None and gw.resolver is not None and gw.ua is not None
        if gw.trunk_trust is not None:
            gw.trunk_trust.stop()
        gw.trunk_trust = TrunkTrust(config.trunks, gw.edge, gw.resolver, gw.loop,
                                    on_targets=gw._trunk_dns_changed)
        await gw.trunk_trust.start()
        gw.edge.with_trunk_sources(trunk_sources_pinned(config.trunks,
                                                        gw.trunk_trust.book.addresses()))
        for name in plan.trunks_removed:
            gw.registrar_targets.pop(name, None)
            gw.proxy_targets.pop(name, None)
            gw.registrar_dns.pop(name, None)
        for t in config.trunks:
            if t.name in plan.trunks_added or t.name in plan.trunks_changed:
                await gw._resolve_trunk(t)
        if gw.trunk_health is not None:
            gw.trunk_health.stop()
        gw.trunk_health = TrunkHealthMonitor(
            config.trunks, gw.ua, gw.loop, gw._pump, proxy_targets=gw.proxy_targets,
            registrar_targets=gw.registrar_targets, accounts=gw.registrations,
            from_uri=f"sip:branchline@{config.sip.public_host}")
        gw.trunk_health.start()

    def _apply_lines(self, config: Config, plan: ReloadPlan) -> None:
        from gateway.dsp.tones import get_profile

        gw = self.gw
        new_lines = {lc.name: lc for lc in config.lines}
        digit_map = DigitMap(effective_digit_map(config))
        profile = get_profile(config.gateway.country)
        for name in plan.lines_added:
            gw._add_line(new_lines[name], profile, digit_map)
        for name in (*plan.lines_changed, *plan.lines_removed):
            self.pending[name] = new_lines.get(name)
        if plan.digit_map:
            from gateway.runtime.forwarding import line_digit_map

            for port in gw.lines.values():
                port.line.digit_map = line_digit_map(port.config, digit_map)  # + star codes
        for name in list(self.pending):
            found = gw.lines.get(name)
            if found is None and name in getattr(gw, "fxo_lines", {}):
                gw._fxo_reload(name, self.pending.pop(name))  # gateway.runtime.fxo_calls
            elif found is None:
                self.pending.pop(name)
            elif found.call_id is None and found.line.state.value == "idle":
                self._line_idle_now(found)

    def line_idle(self, lp: LinePort) -> None:
        """A line went idle: settings a reload left pending for it take effect, on the next
        turn of the loop (this is called from inside the pump, which walks the ports)."""
        if lp.name in self.pending:
            self.gw.loop.call_soon(self._line_idle_now, lp)

    def _line_idle_now(self, lp: LinePort) -> None:
        gw = self.gw
        if lp.name not in self.pending or gw.lines.get(lp.name) is not lp:
            return
        if lp.call_id is not None or lp.line.state.value != "idle":
            return  # a new call started in between: wait for the next idle
        lc = self.pending.pop(lp.name)
        if lc is None:
            lp.close()
            gw.lines.pop(lp.name, None)
            gw.ports.pop(lp.name, None)
            log.info("reload: line %s removed", lp.name)
            return
        if _port_differs(lp.config, lc):
            from gateway.dsp.tones import get_profile

            lp.close()
            gw.lines.pop(lp.name, None)
            gw.ports.pop(lp.name, None)
            gw._add_line(lc, get_profile(gw.config.gateway.country),
                         DigitMap(effective_digit_map(gw.config)))
        else:
            lp.config = lc
            lp.number = lc.number
        log.info("reload: line %s now uses its new settings", lp.name)
        gw._pump()

    def _apply_accounts(self, config: Config, plan: ReloadPlan, now: float) -> None:
        gw = self.gw
        ua = gw.ua
        if ua is None:
            return
        for name in plan.accounts_removed:
            if name in gw.registrations:
                ua.remove_account(name, now)
                gw.registrations.pop(name, None)
        new_lines = {lc.name: lc for lc in config.lines}
        for name in plan.accounts:
            gw._add_account(new_lines[name], now)

    def _apply_phones(self, config: Config, plan: ReloadPlan) -> None:
        gw = self.gw
        ports = getattr(gw, "phone_ports", {})
        local = getattr(gw, "local_registrar", None)
        if local is not None and "sip_phones" not in plan.restart:
            local.config = config
            local.phones = tuple(config.sip_phones)
        for pc in config.sip_phones:
            if pc.user in plan.phones_changed and pc.user in ports:
                port = ports[pc.user]
                port.config = pc
                port.number = pc.number or pc.user

    async def _apply_settings(self, old: Config, config: Config, plan: ReloadPlan) -> None:
        """Push, metrics, call-record retention, log level and SIP trace."""
        gw = self.gw
        if old.gateway.log_level != config.gateway.log_level:
            logging.getLogger().setLevel(config.gateway.log_level.upper())
        if gw.sip is not None:
            gw.sip.trace.log_enabled = config.sip.trace
        recorder = getattr(gw, "call_recorder", None)
        if recorder is not None:
            store = recorder.store
            store.max_age_days = config.call_records.max_age_days
            store.max_rows = config.call_records.max_rows
            store.push = config.push is not None
        if old.push != config.push and recorder is not None:
            from gateway.runtime.push import start_push

            pusher = getattr(gw, "pusher", None)
            if pusher is not None:
                await pusher.stop()
            setattr(gw, "pusher", start_push(config, recorder, gw.loop))  # noqa: B010
        if old.metrics != config.metrics:
            from gateway.runtime.metrics import start_metrics

            if gw.metrics is not None:
                await gw.metrics.close()
            gw.metrics = await start_metrics(gw)
        if old.sip.media_timeout != config.sip.media_timeout and \
                hasattr(gw, "media_watch"):
            del gw.media_watch  # rebuilt with the new timeout on next use

    # ------------------------------------------------------------------ confirm / rollback

    def _arm_confirm(self, previous: Config) -> None:
        if self._confirm is not None:
            self._confirm.cancel()
            self._confirm = None
        within = self.gw.config.reload.confirm_within
        if within <= 0 or previous is self.gw.config:
            return
        if not any(lc.trunk is not None for lc in self.gw.config.lines):
            log.info("reload: confirm_within is set, but no line has a trunk account to "
                     "register: nothing to wait for, the reload is kept")
            return
        self._confirm = task = self.gw.loop.create_task(
            self._confirm_or_roll_back(previous, within))
        self.gw._tasks.add(task)  # cancelled with the daemon's other tasks
        task.add_done_callback(self.gw._task_done)

    def _any_registered(self) -> bool:
        return any(r.registered for r in self.gw.registrations.values())

    async def _confirm_or_roll_back(self, previous: Config, within: float) -> None:
        deadline = self.gw.loop.time() + within
        while self.gw.loop.time() < deadline:
            if self._any_registered():
                log.info("reload confirmed: a trunk account is registered")
                return
            await asyncio.sleep(min(CONFIRM_POLL, max(0.0, deadline - self.gw.loop.time())))
        if self._any_registered():
            return
        async with self.lock:
            self._confirm = None
            log.warning("reload rolled back: no trunk registered within %g s", within)
            self.rollbacks += 1
            await self.apply(previous)
            self.last = {"reloaded": False, "rolled_back": True,
                         "errors": [f"no trunk registered within {within:g} s"]}

    def status(self) -> dict[str, Any]:
        """For `branchline status`: counts, pending lines and the last result."""
        return {"reloads": self.reloads, "refused": self.refused, "rollbacks": self.rollbacks,
                "pending_lines": sorted(self.pending), "last": self.last}


def _port_differs(old: Any, new: LineConfig) -> bool:
    """The line is made again: another port, or other timers or features for its machine."""
    return (old.backend, old.type, dict(old.options), getattr(old, "timers", None),
            getattr(old, "features", None)) != (new.backend, new.type, dict(new.options),
                                                new.timers, new.features)


def reloader_of(gw: Gateway) -> Reloader:
    """The gateway's reloader, made on first use."""
    reloader: Reloader | None = getattr(gw, "reloader", None)
    if reloader is None:
        reloader = Reloader(gw)
        gw.reloader = reloader
    return reloader


def line_idle(gw: Gateway, lp: Any) -> None:
    """Called when a line goes idle (app.py): pending reload settings apply now."""
    reloader = getattr(gw, "reloader", None)
    if reloader is not None:
        reloader.line_idle(lp)

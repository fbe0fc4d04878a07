"""Message waiting at run time: each line's message-summary subscription, and the NOTIFYs
(subscribed or unsolicited from a trunk) turned into stutter dial tone and the VMWI lamp.

The SIP side is pure (gateway/sip/subscribe.py); this adapter only decides, per line, where
to subscribe (`lines[].mwi`), feeds what the server says to the line's state machine
(`FxsLine.set_message_waiting`, which sends VMWI when the line is idle) and keeps what
`branchline status` shows.

What each line was last told is kept: a line made again by a reload gets its lamp and
stutter tone back at once (`line_added`), and the state is written to
``<state_dir>/mwi.json`` (an atomic write) so a restart keeps it too. That matters for a
line that only gets unsolicited NOTIFYs: the trunk sends the next one only when the
mailbox changes. A subscribed line's server NOTIFYs its state anew when subscribed.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.schema import LineConfig
from gateway.sip import events as sev
from gateway.sip.dns import is_ip
from gateway.sip.uri import SipUri
from gateway.store.atomic import write_atomic

log = logging.getLogger("branchline")

STATE_FILE = "mwi.json"


class TrunkHosts:
    """The trunks' addresses as they are now (configured hosts and what DNS gave them):
    only these may send NOTIFY without a subscription. Asked live by `in`."""

    def __init__(self, gw: Any) -> None:
        self._gw = gw

    def __contains__(self, host: object) -> bool:
        gw = self._gw
        for t in gw.trunks.values():
            if host in (t.registrar.host, t.proxy.host):
                return True
            for targets in (gw.registrar_targets.get(t.name, ()),
                            gw.proxy_targets.get(t.name, ())):
                if any(tg.host == host for tg in targets):
                    return True
        return False


@dataclass
class LineMwi:
    """What a line knows about its voicemail, for `branchline status`."""

    waiting: bool = False
    new: int | None = None
    old: int | None = None
    subscribed: bool = False
    reason: str = ""
    server: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "new": self.new, "old": self.old,
                "subscribed": self.subscribed, "reason": self.reason, "server": self.server}


class MessageWaiting:
    """Per-line MWI subscriptions and NOTIFY handling for a running gateway."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.lines: dict[str, LineMwi] = {}
        self._subscribed: dict[str, tuple[Any, Any]] = {}  # line -> (its mwi, its trunk)

    def start(self, now: float) -> None:
        """Accept unsolicited NOTIFY from the trunks; subscribe every line that asks to.
        The lamps stored by the last run are lit again first."""
        ua = self.gw.ua
        ua.notify_sources = TrunkHosts(self.gw)
        self._load()
        for lp in self.gw.lines.values():
            self.line_added(lp)
        for lc in self.gw.config.lines:
            if lc.mwi is not None and lc.mwi.subscribe and lc.name in self.gw.lines:
                self._subscribe(lc, now)

    def reconfigure(self, now: float) -> None:
        """After a reload: subscribe lines whose `mwi` (or account) is new or changed, and
        end the subscriptions of lines that no longer ask for one."""
        gw = self.gw
        wanted = {lc.name: lc for lc in gw.config.lines
                  if lc.mwi is not None and lc.mwi.subscribe and lc.name in gw.lines}
        for name in list(self._subscribed):
            lc = wanted.get(name)
            if lc is None or self._subscribed[name] != (lc.mwi, lc.trunk):
                del self._subscribed[name]
                gw.ua.unsubscribe_mwi(name, now)
                state = self.lines.get(name)
                if state is not None:
                    state.server, state.subscribed, state.reason = None, False, "reload"
        for name, lc in wanted.items():
            if name not in self._subscribed:
                self._subscribe(lc, now)

    def stop(self, now: float) -> None:
        """End the subscriptions (Expires: 0) before the accounts go."""
        for name in self._subscribed:
            self.gw.ua.unsubscribe_mwi(name, now)

    def line_added(self, lp: Any) -> None:
        """A line (made again by a reload, or at start) gets the message waiting state
        last known for it: stutter dial tone, and the lamp (VMWI) sent again."""
        state = self.lines.get(lp.name)
        if state is not None and state.waiting:
            lp.line.set_message_waiting(True)

    def _path(self) -> Path:
        return Path(self.gw.config.gateway.state_dir) / STATE_FILE

    def _load(self) -> None:
        path = self._path()
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("mwi: %s unreadable (%s); lamps start off", path, exc)
            return
        lines = data.get("lines") if isinstance(data, dict) else None
        for name, entry in (lines.items() if isinstance(lines, dict) else ()):
            if name not in self.gw.lines or not isinstance(entry, dict):
                continue
            new, old = entry.get("new"), entry.get("old")
            self.lines[name] = LineMwi(
                waiting=entry.get("waiting") is True,
                new=new if isinstance(new, int) else None,
                old=old if isinstance(old, int) else None, reason="stored")

    def _save(self) -> None:
        lines = {name: {"waiting": st.waiting, "new": st.new, "old": st.old}
                 for name, st in self.lines.items()}
        path = self._path()
        try:
            write_atomic(path, json.dumps({"lines": lines}, indent=1).encode())
        except OSError as exc:
            log.warning("mwi: cannot save %s (%s); kept until restart", path, exc)

    def status(self, line: str) -> dict[str, Any] | None:
        state = self.lines.get(line)
        return state.describe() if state is not None else None

    def _subscribe(self, lc: LineConfig, now: float) -> None:
        gw = self.gw
        assert lc.mwi is not None
        trunk = gw.trunks.get(lc.trunk.name) if lc.trunk is not None else None
        user = lc.trunk.username if lc.trunk is not None else lc.number
        domain = trunk.domain if trunk is not None else gw.config.sip.public_host
        from_uri = f"sip:{user}@{domain}"
        account = lc.name if lc.trunk is not None else None
        state = self.lines.setdefault(lc.name, LineMwi())
        self._subscribed[lc.name] = (lc.mwi, lc.trunk)
        if lc.mwi.server == "trunk":
            assert trunk is not None  # the config refuses 'trunk' without an account
            dest = gw.proxy_targets.get(trunk.name) or (trunk.proxy.host, trunk.proxy.port)
            state.server = from_uri
            gw.ua.subscribe_mwi(lc.name, target_uri=from_uri, from_uri=from_uri, dest=dest,
                                expires=lc.mwi.expires, now=now, account_id=account)
            return
        uri = SipUri.parse(lc.mwi.server)
        host, port = uri.host_port()
        state.server = lc.mwi.server
        if is_ip(host):
            gw.ua.subscribe_mwi(lc.name, target_uri=lc.mwi.server, from_uri=from_uri,
                                dest=(host, port), expires=lc.mwi.expires, now=now,
                                account_id=account)
            return
        gw._spawn(self._resolve_and_subscribe(lc, host, port, from_uri, account))

    async def _resolve_and_subscribe(self, lc: LineConfig, host: str, port: int,
                                     from_uri: str, account: str | None) -> None:
        gw = self.gw
        assert lc.mwi is not None
        try:
            infos = await gw.loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                              family=socket.AF_INET)
        except OSError as exc:
            self.lines[lc.name].reason = f"{host}: {exc}"
            log.warning("line %s: MWI server %s does not resolve: %s", lc.name, host, exc)
            return
        addr = infos[0][4]
        gw.ua.subscribe_mwi(lc.name, target_uri=lc.mwi.server, from_uri=from_uri,
                            dest=(addr[0], addr[1]), expires=lc.mwi.expires,
                            now=gw.loop.time(), account_id=account)
        gw._pump()

    # -- what the user agent says -----------------------------------------------------

    def on_sip_event(self, ev: Any) -> bool:
        """Take MessageSummary and SubscriptionChanged; False for anything else."""
        if isinstance(ev, sev.SubscriptionChanged):
            state = self.lines.setdefault(ev.sub_id, LineMwi())
            state.subscribed, state.reason = ev.active, ev.reason
            log.info("line %s: MWI subscription %s (%s)", ev.sub_id,
                     "active" if ev.active else "not active", ev.reason)
            return True
        if isinstance(ev, sev.MessageSummary):
            name = ev.sub_id if ev.sub_id is not None else self._line_for(ev.user)
            lp = self.gw.lines.get(name) if name is not None else None
            if lp is None:
                log.info("MWI NOTIFY from %s:%s for %r: no such line", *ev.source, ev.user)
                return True
            state = self.lines.setdefault(lp.name, LineMwi())
            changed = (state.waiting, state.new, state.old) != (ev.waiting, ev.new, ev.old)
            state.waiting, state.new, state.old = ev.waiting, ev.new, ev.old
            if changed:
                self._save()
            log.info("line %s: messages waiting: %s%s", lp.name, "yes" if ev.waiting else "no",
                     f" ({ev.new} new, {ev.old} old)" if ev.new is not None else "")
            lp.line.set_message_waiting(ev.waiting)
            return True
        return False

    def _line_for(self, user: str | None) -> str | None:
        if not user:
            return None
        for lp in self.gw.lines.values():
            names = {lp.number}
            if lp.config.trunk is not None:
                names.add(lp.config.trunk.username)
            if user in names:
                return str(lp.name)
        return None


__all__ = ["STATE_FILE", "LineMwi", "MessageWaiting", "TrunkHosts"]

"""What a reload changes: a pure function from (running config, new config) to a plan.

The plan says which trunks, lines, accounts and phones change, whether the routing and the
SIP edge's security settings must be rebuilt, and which keys cannot change while the daemon
runs (they need a restart). `effective_config` is the config the daemon runs after the
reload: the new file, except those restart-only keys, which keep their running values so
that status never shows an address the daemon is not listening on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gateway.config.schema import Config, LineConfig

#: (section, key) pairs that only take effect at the next start, with the reason shown.
RESTART_GATEWAY_KEYS: tuple[str, ...] = ("name", "country", "control_socket", "state_dir", "log")
RESTART_SIP_KEYS: tuple[str, ...] = (
    "listen", "public_host", "user_agent", "tcp_listen", "tls_listen", "tls", "dns_servers",
    "udp_receive_buffer",
)


@dataclass(frozen=True)
class ReloadPlan:
    """Names of what changes; empty tuples and False mean "nothing to do there"."""

    restart: tuple[str, ...] = ()  # dotted keys that changed but need a restart
    trunks_added: tuple[str, ...] = ()
    trunks_removed: tuple[str, ...] = ()
    trunks_changed: tuple[str, ...] = ()
    lines_added: tuple[str, ...] = ()
    lines_removed: tuple[str, ...] = ()
    lines_changed: tuple[str, ...] = ()
    #: Changed lines whose hal port must be opened again (backend or options differ).
    ports_rebuilt: tuple[str, ...] = ()
    #: Lines whose trunk account is registered anew (new or changed account, or its trunk
    #: changed); `accounts_removed` are un-registered.
    accounts: tuple[str, ...] = ()
    accounts_removed: tuple[str, ...] = ()
    phones_changed: tuple[str, ...] = ()
    routing: bool = False  # dial plan, emergency, or the names routes refer to
    security: bool = False  # edge users, digest algorithms, rate limits, trunk sources
    digit_map: bool = False
    #: Sections taken over by replacing `Gateway.config` (read where they are used).
    settings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the new file changes nothing that runs."""
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))

    def summary(self) -> list[str]:
        """One line per kind of change, for the reply and the log."""
        out: list[str] = []
        for label, names in (
            ("trunks added", self.trunks_added), ("trunks removed", self.trunks_removed),
            ("trunks changed", self.trunks_changed), ("lines added", self.lines_added),
            ("lines removed", self.lines_removed), ("lines changed", self.lines_changed),
            ("accounts re-registered", self.accounts),
            ("accounts removed", self.accounts_removed),
            ("phones changed", self.phones_changed), ("settings", self.settings),
        ):
            if names:
                out.append(f"{label}: {', '.join(names)}")
        if self.routing:
            out.append("dial plan and routing rebuilt")
        if self.security:
            out.append("security settings rebuilt")
        if self.digit_map:
            out.append("digit map changed")
        return out


def _by_name(items: Any, key: str = "name") -> dict[str, Any]:
    return {getattr(item, key): item for item in items}


def _changed(old: Any, new: Any) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, removed, changed) names between two name -> value maps."""
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed = tuple(n for n in new if n in old and old[n] != new[n])
    return added, removed, changed


def _port_differs(old: LineConfig, new: LineConfig) -> bool:
    return (old.backend, old.type, dict(old.options)) != (new.backend, new.type,
                                                          dict(new.options))


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What must change to go from `old` to `new` (both validated configs)."""
    restart: list[str] = []
    for key in RESTART_GATEWAY_KEYS:
        if getattr(old.gateway, key) != getattr(new.gateway, key):
            restart.append(f"gateway.{key}")
    for key in RESTART_SIP_KEYS:
        if getattr(old.sip, key) != getattr(new.sip, key):
            restart.append(f"sip.{key}")
    if old.modems != new.modems:
        restart.append("modems")
    if old.gsm_groups != new.gsm_groups:
        restart.append("gsm_groups")
    old_phones, new_phones = _by_name(old.sip_phones, "user"), _by_name(new.sip_phones, "user")
    phones_live = set(old_phones) == set(new_phones) and old.registrar == new.registrar
    if not phones_live:
        restart.append("sip_phones" if set(old_phones) != set(new_phones) else "registrar")
    phones_changed: tuple[str, ...] = ()
    if phones_live:
        phones_changed = tuple(u for u in new_phones if old_phones[u] != new_phones[u])
        relay = [u for u in phones_changed
                 if getattr(old_phones[u], "trunk", None) != getattr(new_phones[u], "trunk", None)]
        if relay:
            restart.append("sip_phones[].trunk (" + ", ".join(relay) + ")")

    old_trunks, new_trunks = _by_name(old.trunks), _by_name(new.trunks)
    t_added, t_removed, t_changed = _changed(old_trunks, new_trunks)
    old_lines, new_lines = _by_name(old.lines), _by_name(new.lines)
    l_added, l_removed, l_changed = _changed(old_lines, new_lines)
    rebuilt = tuple(n for n in l_changed if _port_differs(old_lines[n], new_lines[n]))
    touched_trunks = set(t_added) | set(t_changed)
    accounts = tuple(
        n for n, lc in new_lines.items() if lc.trunk is not None and (
            n not in old_lines or old_lines[n].trunk != lc.trunk
            or lc.trunk.name in touched_trunks))
    accounts_removed = tuple(
        n for n, lc in old_lines.items() if lc.trunk is not None and (
            n not in new_lines or new_lines[n].trunk is None))

    routing = (old.dialplan != new.dialplan or old.emergency != new.emergency
               or bool(t_added or t_removed or l_added or l_removed)
               or old.gsm_groups != new.gsm_groups
               or any(old_trunks[n].allow_gsm != new_trunks[n].allow_gsm for n in t_changed)
               or any(old_trunks[n].allow_fxo != new_trunks[n].allow_fxo for n in t_changed))
    security = (old.security != new.security or bool(t_added or t_removed or t_changed)
                or old.sip_phones != new.sip_phones)
    settings = tuple(name for name, a, b in (
        ("call_records", old.call_records, new.call_records),
        ("push", old.push, new.push),
        ("metrics", old.metrics, new.metrics),
        ("reload", old.reload, new.reload),
        ("gateway.log_level", old.gateway.log_level, new.gateway.log_level),
        ("sip.trace", old.sip.trace, new.sip.trace),
        ("sip.media_timeout", old.sip.media_timeout, new.sip.media_timeout),
        ("sip.rtp_ports", old.sip.rtp_ports, new.sip.rtp_ports),
        ("sip.codecs", old.sip.codecs, new.sip.codecs),
        ("sip.dtmf", old.sip.dtmf, new.sip.dtmf),
    ) if a != b)
    return ReloadPlan(
        restart=tuple(restart), trunks_added=t_added, trunks_removed=t_removed,
        trunks_changed=t_changed, lines_added=l_added, lines_removed=l_removed,
        lines_changed=l_changed, ports_rebuilt=rebuilt, accounts=accounts,
        accounts_removed=accounts_removed, phones_changed=phones_changed, routing=routing,
        security=security, digit_map=old.dialplan.digit_map != new.dialplan.digit_map,
        settings=settings)


def effective_config(old: Config, new: Config, plan: ReloadPlan) -> Config:
    """`new`, with the keys that need a restart kept as they run now."""
    gateway = dataclasses.replace(new.gateway, **{
        k: getattr(old.gateway, k) for k in RESTART_GATEWAY_KEYS})
    sip = dataclasses.replace(new.sip, **{k: getattr(old.sip, k) for k in RESTART_SIP_KEYS})
    keep: dict[str, Any] = {"gateway": gateway, "sip": sip, "modems": old.modems,
                            "gsm_groups": old.gsm_groups}
    if "sip_phones" in plan.restart or "registrar" in plan.restart:
        keep["sip_phones"] = old.sip_phones
        keep["registrar"] = old.registrar
    return dataclasses.replace(new, **keep)

"""The toll-fraud check the runtime makes before a call is routed to a target.

`Permissions` answers "may this source call this number through this target?"; this module
adds what the runtime needs around it: a default policy set built from what the config
already says (which lines and trunks exist), and one call that checks, logs a
``call-denied`` security event on refusal, and returns the SIP status to answer with.

Default policy, until the config grows a section for it:

- every line and every authenticated local user may use every trunk route, except the
  default denied prefixes (international and premium rate), which stay closed unless the
  caller passes `allow` prefixes that open them;
- calls that arrived on a trunk may not leave again on a trunk (no hairpin: one
  compromised PBX account must not buy free calls), unless `trunk_hairpin` is set;
- the ``local`` target (ringing a line of this box) is open to everyone the SIP edge let in;
- GSM and FXO have no policy, so they carry no calls until someone writes one (pass it in
  `extra`); calls from a trunk reach a modem only through `trunk_gsm_guard` (a trunk's
  `allow_gsm`: named groups, listed prefixes, everything else closed) and an exchange line
  only through `trunk_fxo_guard` (`allow_fxo`: named lines, listed prefixes).

Pure: no I/O, no clock; `log_event` is the only side effect.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

from gateway.security.events import CALL_DENIED, log_event
from gateway.security.permissions import (
    ANY,
    DEFAULT_DENIED_PREFIXES,
    LOCAL_USERS,
    Allowed,
    CallSource,
    Decision,
    Denied,
    Permissions,
    TargetPolicy,
)

#: The route target name for ringing one of this box's own lines.
LOCAL_TARGET: Final = "local"
#: Written as the source of ``call-denied`` events for calls that came from no network
#: address (an analog line); fail2ban never bans on ``call-denied``.
NO_NETWORK_SOURCE: Final = ("0.0.0.0", 0)


def trunk_target(trunk: str) -> str:
    """The route target name for a trunk (``trunk:<name>``), as policies and routes spell it."""
    return f"trunk:{trunk}"


def default_policies(
    *,
    trunks: Iterable[str],
    lines: Iterable[str],
    allow: Iterable[str] = (),
    deny: Iterable[str] = DEFAULT_DENIED_PREFIXES,
    trunk_hairpin: bool = False,
    extra: Iterable[TargetPolicy] = (),
) -> list[TargetPolicy]:
    """The policies described in the module docstring; `extra` replaces any of the same target.

    `allow` opens prefixes that `deny` would close (longest prefix wins, so ``0044`` opens
    one country while ``00`` keeps the rest closed).
    """
    trunk_names = tuple(trunks)
    sources: list[str] = [*lines, LOCAL_USERS]
    if trunk_hairpin:
        sources.extend(trunk_target(t) for t in trunk_names)
    allow_t, deny_t = tuple(allow), tuple(deny)
    overrides = {p.target: p for p in extra}
    policies: list[TargetPolicy] = []
    for name in trunk_names:
        target = trunk_target(name)
        if target not in overrides:
            policies.append(TargetPolicy(target, sources=tuple(sources), allow=allow_t,
                                         deny=deny_t))
    if LOCAL_TARGET not in overrides:
        policies.append(TargetPolicy(LOCAL_TARGET, sources=(ANY,), deny=()))
    policies.extend(overrides.values())
    return policies


def trunk_gsm_policies(
    allow: Mapping[str, tuple[Iterable[str], Iterable[str]]],
) -> list[TargetPolicy]:
    """Policies for calls that came in on a trunk and leave through a modem.

    `allow` maps a trunk name to (groups, prefixes) from its `allow_gsm`. A trunk's calls
    may use only those groups, and only numbers starting with a listed prefix: the default
    is deny, and the international and premium-rate prefixes stay denied unless a longer
    (or equal) allowed prefix opens part of them (``+447`` opens UK mobiles, not ``+``).
    The target of each policy is ``trunk:<name>>gsm:<group>``, see `trunk_gsm_target`.
    """
    return _trunk_scoped_policies(allow, "gsm")


def trunk_fxo_policies(
    allow: Mapping[str, tuple[Iterable[str], Iterable[str]]],
) -> list[TargetPolicy]:
    """Policies for calls that came in on a trunk and leave on an exchange line: `allow`
    maps a trunk name to (FXO line names, prefixes) from its `allow_fxo`; the same rules as
    `trunk_gsm_policies` (default deny, international and premium closed unless listed)."""
    return _trunk_scoped_policies(allow, "fxo")


def _trunk_scoped_policies(
    allow: Mapping[str, tuple[Iterable[str], Iterable[str]]], kind: str,
) -> list[TargetPolicy]:
    policies: list[TargetPolicy] = []
    for trunk in sorted(allow):
        names, prefixes = allow[trunk]
        for name in dict.fromkeys(names):
            policies.append(TargetPolicy(
                trunk_gsm_target(trunk, f"{kind}:{name}"), sources=(trunk_target(trunk),),
                allow=tuple(prefixes), deny=DEFAULT_DENIED_PREFIXES, default="deny"))
    return policies


def trunk_gsm_target(trunk: str, target: str) -> str:
    """The policy target for `target` (``gsm:<group>``) as used by calls from `trunk`."""
    return f"trunk:{trunk}>{target}"


class RouteGuard:
    """Permissions plus the logging the runtime wants on every refusal."""

    def __init__(self, permissions: Permissions, *, logger: logging.Logger | None = None,
                 denied: dict[str, int] | None = None) -> None:
        self.permissions = permissions
        self.logger = logger
        #: Refusals by `Denied.code`, for the status command and metrics (may be shared
        #: with another guard, so that all refusals count in one place).
        self.denied: dict[str, int] = denied if denied is not None else {}

    def check(
        self,
        source: CallSource,
        number: str,
        target: str,
        *,
        src_addr: tuple[str, int] | None = None,
        call_id: str | None = None,
    ) -> Decision:
        """May `source` call `number` through `target`? Logs ``call-denied`` when not.

        Counts nothing: use `admit`/`release` once targets carry call limits.
        """
        return self._logged(self.permissions.check(source, number, target), source, number,
                            src_addr, call_id)

    def admit(
        self,
        call_id: str,
        source: CallSource,
        number: str,
        target: str,
        *,
        src_addr: tuple[str, int] | None = None,
    ) -> Decision:
        """`check`, and count the call against the target's limit until `release(call_id)`."""
        return self._logged(self.permissions.admit(call_id, source, number, target), source,
                            number, src_addr, call_id)

    def release(self, call_id: str) -> bool:
        """The call ended: stop counting it (safe for calls never admitted)."""
        return self.permissions.release(call_id)

    def _logged(self, decision: Decision, source: CallSource, number: str,
                src_addr: tuple[str, int] | None, call_id: str | None) -> Decision:
        if isinstance(decision, Allowed):
            return decision
        assert isinstance(decision, Denied)
        self.denied[decision.code] = self.denied.get(decision.code, 0) + 1
        ip, port = src_addr if src_addr is not None else NO_NETWORK_SOURCE
        log_event(CALL_DENIED, ip, port, logger=self.logger, source=str(source),
                  target=decision.target, number=number, code=decision.code,
                  status=decision.status, call_id=call_id, reason=decision.reason)
        return decision


class TrunkGsmGuard(RouteGuard):
    """The route guard for calls from a trunk to ``gsm:<group>``: each trunk has its own
    groups and prefixes (`trunk_gsm_policies`); a trunk without `allow_gsm`, or a group it
    does not list, has no policy and is refused (``no-policy``, 403)."""

    def check(
        self,
        source: CallSource,
        number: str,
        target: str,
        *,
        src_addr: tuple[str, int] | None = None,
        call_id: str | None = None,
    ) -> Decision:
        scoped = trunk_gsm_target(source.name, target) if source.kind == "trunk" else target
        return self._logged(self.permissions.check(source, number, scoped), source, number,
                            src_addr, call_id)


def trunk_fxo_guard(allow: Mapping[str, tuple[Iterable[str], Iterable[str]]], *,
                    like: RouteGuard) -> RouteGuard:
    """The guard for calls from a trunk to ``fxo:<line>`` (a trunk's `allow_fxo`), logging
    like `like` and counting its refusals in the same `denied` table."""
    return TrunkGsmGuard(Permissions(trunk_fxo_policies(allow)), logger=like.logger,
                         denied=like.denied)


def trunk_gsm_guard(allow: Mapping[str, tuple[Iterable[str], Iterable[str]]], *,
                    like: RouteGuard) -> RouteGuard:
    """A `TrunkGsmGuard` over `trunk_gsm_policies(allow)` that logs like `like` and counts
    its refusals in the same `denied` table."""
    return TrunkGsmGuard(Permissions(trunk_gsm_policies(allow)), logger=like.logger,
                         denied=like.denied)

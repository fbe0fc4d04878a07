"""Which modem of a GSM route group carries an outgoing call, and the minutes each SIM used.

Pure: the caller passes each modem's state and `now` (a datetime in the box's local time:
the monthly cap rolls over at midnight on the 1st, local time). A group picks by
round-robin, least-used (minutes this month, then active calls) or the longest prefix of the
dialled number. Modems that are down, busy or over their monthly minute cap are skipped;
when none is left the answer says why, for the router's failover and the call-end cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.config.modems import GsmGroup, ModemConfig

#: Q.850 cause 34 "no circuit/channel available" (RFC 3398: 503) and 3 "no route to
#: destination" (RFC 3398: 404), used when no modem of a group can take the call.
CAUSE_NO_CHANNEL = 34
CAUSE_NO_ROUTE = 3


@dataclass(frozen=True)
class ModemState:
    """What the chooser needs to know of one modem now (from its supervisor and calls)."""

    name: str
    up: bool
    active_calls: int = 0
    max_calls: int = 1

    @property
    def busy(self) -> bool:
        """True when the modem carries as many calls as it can."""
        return self.active_calls >= self.max_calls


@dataclass(frozen=True)
class ModemChosen:
    """The modem that carries the call."""

    group: str
    modem: str


@dataclass(frozen=True)
class NoModem:
    """No modem of the group can take the call; `skipped` says why, per modem."""

    group: str
    reason: str
    q850_cause: int
    sip_status: int
    skipped: tuple[tuple[str, str], ...] = ()


Choice = ModemChosen | NoModem


def _month(when: datetime) -> tuple[int, int]:
    return (when.year, when.month)


def billed_minutes(seconds: float) -> int:
    """Whole minutes a call counts against the cap: every started minute (61 s -> 2)."""
    if seconds <= 0:
        return 0
    whole = int(seconds // 60)
    return whole + (1 if seconds > whole * 60 else 0)


class MinuteLedger:
    """Minutes used per SIM per calendar month; months before the current one are dropped."""

    def __init__(self) -> None:
        self._minutes: dict[tuple[str, tuple[int, int]], int] = {}

    def record_call(self, modem: str, seconds: float, when: datetime) -> None:
        """Count a call of `seconds` that ended at `when` (local time) for `modem`."""
        key = (modem, _month(when))
        self._minutes[key] = self._minutes.get(key, 0) + billed_minutes(seconds)
        current = _month(when)
        for old in [k for k in self._minutes if k[1] < current]:
            del self._minutes[old]

    def minutes(self, modem: str, now: datetime) -> int:
        """Minutes `modem` has used in the calendar month of `now`."""
        return self._minutes.get((modem, _month(now)), 0)

    def to_dict(self) -> dict[str, dict[str, int]]:
        """The ledger as plain data (``{"2026-12": {"ec25": 12}}``), to be kept on disk."""
        out: dict[str, dict[str, int]] = {}
        for (modem, (year, month)), minutes in sorted(self._minutes.items()):
            out.setdefault(f"{year:04d}-{month:02d}", {})[modem] = minutes
        return out

    @classmethod
    def from_dict(cls, data: object) -> MinuteLedger:
        """A ledger from `to_dict`'s shape; entries that do not fit it are left out."""
        ledger = cls()
        if not isinstance(data, dict):
            return ledger
        for month, modems in data.items():
            try:
                year, mon = (int(p) for p in str(month).split("-"))
            except ValueError:
                continue
            if not isinstance(modems, dict) or not 1 <= mon <= 12:
                continue
            for modem, minutes in modems.items():
                if isinstance(minutes, int) and not isinstance(minutes, bool) and minutes >= 0:
                    ledger._minutes[(str(modem), (year, mon))] = minutes
        return ledger


class GsmGroupRouter:
    """Chooses a modem per call for each configured group; keeps the round-robin cursors."""

    def __init__(
        self,
        groups: Sequence[GsmGroup],
        modems: Sequence[ModemConfig],
        ledger: MinuteLedger | None = None,
    ) -> None:
        self.groups = {g.name: g for g in groups}
        self.caps = {m.name: m.minute_cap for m in modems}
        self.members = {g.name: g.members(tuple(modems)) for g in groups}
        self.ledger = ledger if ledger is not None else MinuteLedger()
        self._last: dict[str, str] = {}

    def record_call(self, modem: str, seconds: float, when: datetime) -> None:
        """Count a finished call against `modem`'s monthly cap."""
        self.ledger.record_call(modem, seconds, when)

    def minutes_left(self, modem: str, now: datetime) -> int | None:
        """Minutes left this month under the cap, None when the modem has no cap."""
        cap = self.caps.get(modem)
        if cap is None:
            return None
        return max(0, cap - self.ledger.minutes(modem, now))

    def _why_not(self, name: str, states: Mapping[str, ModemState], now: datetime) -> str | None:
        state = states.get(name)
        if state is None or not state.up:
            return "down"
        if state.busy:
            return "busy"
        if self.minutes_left(name, now) == 0:
            return "over its monthly minute cap"
        return None

    def choose(
        self, group: str, dialled: str, states: Mapping[str, ModemState], now: datetime
    ) -> Choice:
        """The modem for a call to `dialled` through `group`, or why there is none.

        A modem missing from `states` counts as down. Round-robin moves on only when a
        modem was chosen, so a refused call does not skip anyone's turn.
        """
        config = self.groups.get(group)
        if config is None:
            return NoModem(group, f"no GSM group named {group!r}", CAUSE_NO_ROUTE, 404)
        members = self.members[group]
        if not members:
            return NoModem(group, f"GSM group {group!r} has no modems", CAUSE_NO_CHANNEL, 503)
        if config.strategy == "prefix":
            candidates = _by_prefix(config, members, dialled)
            if not candidates:
                return NoModem(group, f"no modem in {group!r} carries {dialled!r}",
                               CAUSE_NO_ROUTE, 404)
        elif config.strategy == "least-used":
            order = {name: i for i, name in enumerate(members)}
            candidates = sorted(members, key=lambda n: (
                self.ledger.minutes(n, now),
                states[n].active_calls if n in states else 0,
                order[n],
            ))
        else:
            last = self._last.get(group)
            start = members.index(last) + 1 if last in members else 0
            candidates = [*members[start:], *members[:start]]
        skipped: list[tuple[str, str]] = []
        for name in candidates:
            why = self._why_not(name, states, now)
            if why is None:
                self._last[group] = name
                return ModemChosen(group, name)
            skipped.append((name, why))
        return NoModem(group, _summary(group, skipped), CAUSE_NO_CHANNEL, 503, tuple(skipped))


def _by_prefix(config: GsmGroup, members: tuple[str, ...], dialled: str) -> list[str]:
    """Modems whose prefixes match `dialled`, longest match first (config order breaks ties)."""
    best: dict[str, int] = {}
    for name in members:
        for prefix in config.prefixes.get(name, ()):
            if dialled.startswith(prefix) and len(prefix) > best.get(name, -1):
                best[name] = len(prefix)
    return sorted(best, key=lambda n: (-best[n], members.index(n)))


def _summary(group: str, skipped: list[tuple[str, str]]) -> str:
    reasons = {why for _, why in skipped}
    if len(reasons) == 1:
        what = reasons.pop()
        every = "the only modem" if len(skipped) == 1 else "every modem"
        return f"{every} in {group!r} is {what}"
    detail = ", ".join(f"{name} {why}" for name, why in skipped)
    return f"no modem in {group!r} is free ({detail})"

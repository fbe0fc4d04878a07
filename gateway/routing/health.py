"""The health of one SIP trunk: UP, DEGRADED or DOWN, with hysteresis (pure, sans-IO).

One `TrunkHealth` per trunk (not per account) combines every sign the runtime sees: OPTIONS
probes, registration outcomes, INVITE timeouts, transport errors and the host's link/route
state. It never reads the clock or does I/O: every entry point takes `now`, the adapter sends a
probe whenever `probe_due(now)` is true, re-arms one timer from `get_timer()` and drains
`HealthChanged` events from `events()`. The router, `status`, the log and the metrics all
consume those same events, so they can never disagree about when or why a trunk changed.
Probe ids are the adapter's (e.g. the UA's OPTIONS handles); an answer to an id that already
timed out is ignored, so the adapter may report a probe's outcome twice without harm.

Why the rules are shaped as they are:
- DOWN needs `misses` probes missed *in a row* (in the order they were sent), so an outage is
  seen within `misses * probe_interval + probe_timeout` of its start, while random loss rarely
  strings that many misses together. A dead link or route is certain, so it is DOWN at once.
- DEGRADED marks a trunk that still answers but has shown trouble (loss over a full `window`,
  an INVITE timeout, a failed registration, a transport error). Each trouble sign also asks for
  a probe at once, once per episode, so a real outage is confirmed without waiting a period
  and a storm of errors cannot turn into a storm of probes.
- Leaving DOWN or DEGRADED needs `failback_after` seconds of answered probes; any miss or
  trouble sign restarts that clock. That hysteresis is what keeps a lossy trunk from flapping.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

__all__ = ["HealthChanged", "HealthSettings", "HealthState", "TrunkHealth"]

_EPS = 1e-9
"""Float slack for comparing durations: 8.12 - 3.12 must count as 5 s of clean probes."""


class HealthState(Enum):
    UP = "up"
    DEGRADED = "degraded"
    """Reachable, but it has shown trouble: routes still use it, emergency calls prefer others."""
    DOWN = "down"


def _check(name: str, value: object, low: float, high: float, *, integer: bool = False) -> None:
    """Refuse a bad field with its name, so a config error points at the right key."""
    kinds = (int,) if integer else (int, float)
    # bool is an int to Python, never to an admin; NaN fails the range test by itself.
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}: expected {kind} from {low:g} to {high:g}, got {value!r}")


@dataclass(frozen=True)
class HealthSettings:
    """How a trunk is probed and judged; validated here so every loader can rely on it."""

    probe_interval: float = 0.25
    probe_timeout: float = 0.5
    misses: int = 5
    failback_after: float = 5.0
    degraded_loss: float = 0.4
    window: float = 10.0

    def __post_init__(self) -> None:
        _check("probe_interval", self.probe_interval, 0.05, 3600)
        _check("probe_timeout", self.probe_timeout, 0.05, 60)
        _check("misses", self.misses, 1, 100, integer=True)
        _check("failback_after", self.failback_after, 0, 3600)
        _check("degraded_loss", self.degraded_loss, 0.01, 1)
        _check("window", self.window, 1, 600)
        if self.probe_timeout > self.window:
            # A probe still outstanding when its window has passed could never count as loss.
            raise ValueError(f"probe_timeout: expected at most window ({self.window:g} s), "
                             f"got {self.probe_timeout!r}")


@dataclass(frozen=True)
class HealthChanged:
    """One transition; `detection_time` is what the issue's figures are measured by."""

    trunk: str
    old: HealthState
    new: HealthState
    cause: str
    at: float
    detection_time: float | None
    """Seconds from the first sign of trouble (or, for fail-back, the first good answer)."""


@dataclass
class _Probe:
    sent_at: float


class TrunkHealth:
    """The health state machine of one trunk; starts UP (a trunk is innocent until it fails)."""

    def __init__(self, trunk: str, settings: HealthSettings, now: float) -> None:
        self.trunk = trunk
        self.settings = settings
        self._state = HealthState.UP
        self.since = now
        self._events: list[HealthChanged] = []
        self._last: HealthChanged | None = None
        self._transitions = 0
        self._outstanding: dict[str, _Probe] = {}
        self._next_probe_at = now
        self._urgent_spent = False
        self._link_up = True
        self._link_reason = ""
        self._consecutive = 0
        self._last_answered_sent = -math.inf
        self._trouble_since: float | None = None
        self._clean_since: float | None = None
        self._clean_first_sent = now
        self._loss_epoch = now
        # (resolved at, sent at, answered) for every probe resolved within the last window.
        self._outcomes: deque[tuple[float, float, bool]] = deque()
        self._sent = 0
        self._answered = 0
        self._missed = 0
        self._rtt: float | None = None

    @property
    def state(self) -> HealthState:
        return self._state

    # --- probes ---------------------------------------------------------------------------

    def probe_due(self, now: float) -> bool:
        """True when the adapter should send the next OPTIONS probe."""
        return now >= self._next_probe_at

    def probe_sent(self, probe_id: str, now: float) -> None:
        """Call whenever `probe_due` is true (and `probe_failed` at once if it could not go
        out): the next probe is scheduled from here, so a skipped one would stall probing."""
        self._outstanding[probe_id] = _Probe(now)
        self._sent += 1
        self._next_probe_at = now + self.settings.probe_interval

    def probe_answered(self, probe_id: str, status: int, now: float) -> None:
        """Any response counts: a 404 or 503 still proves the trunk is reachable."""
        probe = self._outstanding.pop(probe_id, None)
        if probe is None:
            return  # already counted as missed, or not ours: a late answer changes nothing
        self._answered += 1
        self._rtt = now - probe.sent_at
        self._record(now, probe.sent_at, answered=True)
        if probe.sent_at >= self._last_answered_sent:
            self._last_answered_sent = probe.sent_at
            self._consecutive = 0
            self._trouble_since = None
            self._urgent_spent = False
        if self._state is HealthState.UP or not self._link_up:
            return
        if self._clean_since is None:
            self._clean_since = now
            self._clean_first_sent = probe.sent_at
        clean = now - self._clean_since
        if clean >= self.settings.failback_after - _EPS:
            self._move(HealthState.UP, f"probes answered for {clean:.1f} s", clean, now)

    def probe_failed(self, probe_id: str, reason: str, now: float) -> None:
        """A probe the transport gave up on (timeout, ICMP, reset) is a miss at once."""
        probe = self._outstanding.pop(probe_id, None)
        if probe is not None:
            self._miss(probe, now, reason)

    # --- other signals --------------------------------------------------------------------

    def registration_result(self, ok: bool, reason: str, now: float) -> None:
        """A failed REGISTER is trouble; a good one proves no more than a probe answer does."""
        if not ok:
            self._trouble(f"registration failed: {reason}" if reason else "registration failed",
                          now)

    def invite_timed_out(self, now: float) -> None:
        """An INVITE got no response at all: the trunk may be gone, so look now."""
        self._trouble("INVITE timeout", now)

    def transport_error(self, reason: str, now: float) -> None:
        """ICMP unreachable, a TCP/TLS reset: often the first sign, seconds before a timeout."""
        self._trouble(reason or "transport error", now)

    def link_changed(self, up: bool, reason: str, now: float) -> None:
        """The host's link or route to the trunk: a dead one is certain, so DOWN at once."""
        if up == self._link_up:
            return
        self._link_up = up
        self._link_reason = reason
        self._clean_since = None
        if up:
            self._next_probe_at = now  # fail back as soon as the trunk proves itself
            return
        self._note_trouble(now)
        self._move(HealthState.DOWN, reason or "link down", self._detection(now), now)

    # --- timer and output -----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline: a probe to send or an outstanding probe to give up on."""
        deadlines = [p.sent_at + self.settings.probe_timeout for p in self._outstanding.values()]
        return min([self._next_probe_at, *deadlines])

    def handle_timer(self, now: float) -> None:
        """Count every probe unanswered `probe_timeout` after it was sent as missed."""
        timeout = self.settings.probe_timeout
        expired = [(pid, p) for pid, p in self._outstanding.items() if p.sent_at + timeout <= now]
        for pid, probe in sorted(expired, key=lambda item: item[1].sent_at):
            del self._outstanding[pid]
            self._miss(probe, now, "")

    def events(self) -> list[HealthChanged]:
        """Drain the transitions since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    def describe(self, now: float) -> dict[str, object]:
        """A JSON-ready snapshot for `branchline status` and the metrics."""
        last = self._last
        self._trim(now)
        resolved = len(self._outcomes)
        lost = sum(1 for _, _, answered in self._outcomes if not answered)
        return {
            "state": self._state.value,
            "since": self.since,
            "for": now - self.since,
            "last_transition": None if last is None else {
                "from": last.old.value,
                "to": last.new.value,
                "cause": last.cause,
                "at": last.at,
                "detection_time": last.detection_time,
            },
            "transitions": self._transitions,
            "probes_sent": self._sent,
            "probes_answered": self._answered,
            "probes_missed": self._missed,
            "probes_outstanding": len(self._outstanding),
            "loss": lost / resolved if resolved else None,
            "window": self.settings.window,
            "rtt_ms": None if self._rtt is None else round(self._rtt * 1000, 1),
            "link_up": self._link_up,
            "link": None if self._link_up else self._link_reason,
        }

    # --- internals ------------------------------------------------------------------------

    def _miss(self, probe: _Probe, now: float, reason: str) -> None:
        self._missed += 1
        self._record(now, probe.sent_at, answered=False)
        if self._clean_since is not None and probe.sent_at >= self._clean_first_sent:
            self._clean_since = None  # a hole in the clean run; probes sent before it don't count
        # "In a row" follows the order probes were sent: a miss older than the latest answer
        # says nothing about now (it still counts as loss).
        if probe.sent_at >= self._last_answered_sent:
            self._consecutive += 1
            if self._trouble_since is None or probe.sent_at < self._trouble_since:
                self._trouble_since = probe.sent_at
            n = self.settings.misses
            if self._consecutive >= n and self._state is not HealthState.DOWN:
                cause = f"{n} probe{'s' if n > 1 else ''} unanswered"
                if reason and reason != "timeout":
                    cause += f" ({reason})"
                self._move(HealthState.DOWN, cause, self._detection(now), now)
        if self._state is HealthState.UP:
            self._check_loss(now)

    def _trouble(self, cause: str, now: float) -> None:
        self._note_trouble(now)
        self._clean_since = None
        if not self._urgent_spent:
            self._urgent_spent = True
            self._next_probe_at = min(self._next_probe_at, now)
        if self._state is HealthState.UP:
            self._move(HealthState.DEGRADED, cause, self._detection(now), now)

    def _note_trouble(self, now: float) -> None:
        if self._trouble_since is None:
            self._trouble_since = now

    def _detection(self, now: float) -> float:
        start = self._trouble_since if self._trouble_since is not None else now
        return max(0.0, now - start)

    def _record(self, now: float, sent_at: float, *, answered: bool) -> None:
        self._outcomes.append((now, sent_at, answered))
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.settings.window
        while self._outcomes and self._outcomes[0][0] <= horizon:
            self._outcomes.popleft()

    def _check_loss(self, now: float) -> None:
        """DEGRADED on loss over a *full* window since the trunk last came UP, so a fresh
        start or a fail-back is not judged on two or three samples."""
        if now - self._loss_epoch < self.settings.window:
            return
        lost = [sent for _, sent, ok in self._outcomes if not ok]
        if not lost:
            return
        loss = len(lost) / len(self._outcomes)
        if loss >= self.settings.degraded_loss:
            self._move(HealthState.DEGRADED,
                       f"{loss:.0%} probe loss over {self.settings.window:g} s",
                       now - min(lost), now)

    def _move(self, new: HealthState, cause: str, detection: float | None, now: float) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        self.since = now
        self._clean_since = None
        if new is HealthState.UP:
            self._loss_epoch = now
            self._trouble_since = None
        event = HealthChanged(self.trunk, old, new, cause, now, detection)
        self._events.append(event)
        self._last = event
        self._transitions += 1

"""Contact debounce for a GPIO input, done by us rather than by the pin factory.

gpiozero's ``bounce_time`` is applied (or not) by each pin factory in its own way, and
its MockFactory stores it without applying it, so a test on mock pins said nothing about
bounce. This debouncer is pure: raw levels go in with their times, debounced edges come
out, and ``get_timer``/``handle_timer`` say when a pending level settles.

Rule: a new level counts only once the raw input has stayed at it for ``stable_s``
without a change. The edge is reported with the time the contact *first* left the old
level, so the bounce of a hook switch (a few excursions of 0.3-2 ms after each make and
break) neither adds edges nor shifts them: a 60 ms rotary break is still 60 ms. A
spike that returns to the old level and stays there for ``stable_s`` is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DebouncedEdge", "Debouncer"]


@dataclass(frozen=True, slots=True)
class DebouncedEdge:
    """The input settled at ``level``; the change began at ``t``."""

    level: bool
    t: float


class Debouncer:
    """Raw edges in, settled edges out; see the module docstring for the rule."""

    def __init__(self, stable_s: float, level: bool = False, now: float = 0.0) -> None:
        if not 0.0 <= stable_s < 0.1:
            raise ValueError(f"debounce: stable time {stable_s!r} s, expected 0 to 0.1 s")
        self.stable_s = stable_s
        self.level = level
        """The debounced level (what has been reported)."""
        self._raw = level
        self._raw_since = now
        self._pending_since: float | None = None
        self.raw_edges = 0
        """Raw level changes seen (bounces included), for diagnostics."""
        self.dropped = 0
        """Excursions that never settled (spikes, or bounce that returned to the old level)."""

    def reset(self, level: bool, now: float) -> None:
        """Take ``level`` as settled at ``now`` (e.g. read from the pin when starting)."""
        self.level = self._raw = level
        self._raw_since = now
        self._pending_since = None

    def raw(self, level: bool, t: float) -> list[DebouncedEdge]:
        """Feed the raw input level seen at ``t``; repeats of the current level are ignored.

        Returns edges that settled before ``t`` (a caller that only learns of time through
        edges still gets them in order).
        """
        out = self.handle_timer(t)
        if level == self._raw:
            return out
        self.raw_edges += 1
        self._raw = level
        self._raw_since = t
        if level != self.level and self._pending_since is None:
            self._pending_since = t
        out.extend(self.handle_timer(t))  # a zero stable time settles at once
        return out

    def get_timer(self) -> float | None:
        """When the pending level settles (or is dropped), or None if nothing is pending."""
        if self._pending_since is None:
            return None
        return self._raw_since + self.stable_s

    def handle_timer(self, now: float) -> list[DebouncedEdge]:
        """Settle the pending level if it has been stable for ``stable_s`` by ``now``."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        start = self._pending_since
        assert start is not None
        self._pending_since = None
        if self._raw == self.level:
            self.dropped += 1
            return []
        self.level = self._raw
        return [DebouncedEdge(self.level, start)]

"""Reassembly of concatenated SMS (TS 23.040 9.2.3.24.1), pure and clock-free.

Networks deliver the parts of a long message in any order, sometimes twice, sometimes not at
all. Parts are keyed by (originator, reference, total); a message is emitted once every part
is in, or when its deadline passes, with a placeholder where a part is missing, so no text that
did arrive is ever dropped. ``now`` comes from the caller, as with every pure object here.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.modem.sms import SmsDeliver

PLACEHOLDER = "[part {seq} of {total} missing]"


@dataclass(frozen=True)
class AssembledSms:
    """A whole message, or as much of it as arrived before its deadline (``complete`` False,
    ``missing`` lists the absent part numbers, each shown in ``text`` by a placeholder)."""

    originator: str
    text: str
    timestamp: dt.datetime | None
    complete: bool = True
    reference: int | None = None
    total: int = 1
    missing: tuple[int, ...] = ()


_Key = tuple[str, int, int]


@dataclass
class _Pending:
    deadline: float
    parts: dict[int, str] = field(default_factory=dict)
    stamps: dict[int, dt.datetime | None] = field(default_factory=dict)


class Reassembler:
    """Collects concatenated parts; see the module docstring.

    ``timeout`` runs from the latest new part of a message. At most ``max_pending`` messages
    wait at once; a new one beyond that flushes the oldest, incomplete. Parts of a message
    already emitted that repeat what was received are ignored as duplicates for ``timeout``
    after it was emitted.
    """

    def __init__(
        self, timeout: float = 60.0, max_pending: int = 32, placeholder: str = PLACEHOLDER
    ) -> None:
        if timeout <= 0 or max_pending < 1:
            raise ValueError("timeout must be > 0 and max_pending >= 1")
        self.timeout = timeout
        self.max_pending = max_pending
        self.placeholder = placeholder
        self._pending: OrderedDict[_Key, _Pending] = OrderedDict()
        self._done: OrderedDict[_Key, tuple[float, dict[int, str]]] = OrderedDict()

    @property
    def pending(self) -> int:
        """Messages waiting for parts."""
        return len(self._pending)

    def add(self, sms: SmsDeliver, now: float) -> list[AssembledSms]:
        """Feed one received SMS-DELIVER; a message without concatenation comes straight out."""
        c = sms.concat
        if c is None:
            return [AssembledSms(sms.originator, sms.text, sms.timestamp)]
        return self.add_part(
            sms.originator, c.reference, c.total, c.seq, sms.text, now, timestamp=sms.timestamp
        )

    def add_part(
        self,
        originator: str,
        reference: int,
        total: int,
        seq: int,
        text: str,
        now: float,
        *,
        timestamp: dt.datetime | None = None,
    ) -> list[AssembledSms]:
        """Feed part ``seq`` of ``total``; returns messages completed or flushed by it."""
        out: list[AssembledSms] = []
        self._forget_done(now)
        if total <= 1 or not 1 <= seq <= total:
            return [AssembledSms(originator, text, timestamp)]
        key = (originator, reference, total)
        done = self._done.get(key)
        if done is not None and done[1].get(seq) == text:
            return out  # a repeat of a part already emitted
        entry = self._pending.get(key)
        if entry is None:
            while len(self._pending) >= self.max_pending:
                old_key, old = self._pending.popitem(last=False)
                out.append(self._emit(old_key, old, now))
            entry = self._pending[key] = _Pending(now + self.timeout)
        if seq in entry.parts:
            return out  # duplicate while pending
        entry.parts[seq] = text
        entry.stamps[seq] = timestamp
        entry.deadline = now + self.timeout
        if len(entry.parts) == total:
            del self._pending[key]
            out.append(self._emit(key, entry, now))
        return out

    def waiting(self, originator: str, reference: int, total: int) -> bool:
        """True while the message with this key has parts in and others still to come."""
        return (originator, reference, total) in self._pending

    def get_timer(self) -> float | None:
        """The earliest deadline of a waiting message, or None."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def handle_timer(self, now: float) -> list[AssembledSms]:
        """Emit, marked incomplete, every message whose deadline has passed."""
        self._forget_done(now)
        due = [k for k, p in self._pending.items() if p.deadline <= now]
        return [self._emit(k, self._pending.pop(k), now) for k in due]

    expire = handle_timer

    def flush(self, now: float) -> list[AssembledSms]:
        """Emit everything still waiting (at shutdown: better incomplete than lost)."""
        keys = list(self._pending)
        return [self._emit(k, self._pending.pop(k), now) for k in keys]

    def _emit(self, key: _Key, entry: _Pending, now: float) -> AssembledSms:
        originator, reference, total = key
        pieces: list[str] = []
        missing: list[int] = []
        for seq in range(1, total + 1):
            if seq in entry.parts:
                pieces.append(entry.parts[seq])
            else:
                missing.append(seq)
                pieces.append(self.placeholder.format(seq=seq, total=total))
        first = min(entry.parts)
        self._done[key] = (now + self.timeout, dict(entry.parts))
        self._done.move_to_end(key)
        while len(self._done) > self.max_pending:
            self._done.popitem(last=False)
        return AssembledSms(
            originator=originator,
            text="".join(pieces),
            timestamp=entry.stamps[first],
            complete=not missing,
            reference=reference,
            total=total,
            missing=tuple(missing),
        )

    def _forget_done(self, now: float) -> None:
        for key in [k for k, (until, _) in self._done.items() if until <= now]:
            del self._done[key]

"""Per-port call state machines: one per kind of port (fxs.py today; fxo.py and gsm.py next).

Each machine is pure (inputs and `now` in, actions out) and meets `PortMachine`, the small
protocol the runtime drives every port through, whatever its kind. What a kind needs beyond
it (hook edges for a handset, AT results for a modem) is fed by that kind's own adapter.
"""

from __future__ import annotations

from typing import Protocol

from gateway.lines.events import Action, IncomingResult, LineState

__all__ = ["PortMachine"]


class PortMachine(Protocol):
    """What the runtime asks of every port's state machine.

    The runtime tells it how its call goes (`incoming_call`, `call_progress`,
    `call_answered`, `call_ended`, `incoming_cancelled`), drains `actions()` after every
    input and arms one timer from `get_timer()`. Actions it cannot carry out itself (tones,
    ringing) go to the port; call actions (`PlaceCall`, `AnswerCall`, `HangUp`,
    `ConnectAudio`...) go to the runtime's calls.
    """

    @property
    def state(self) -> LineState:
        """Where the port is in its call life cycle (for status and checks)."""
        ...

    @property
    def call_id(self) -> str | None:
        """The runtime call this port is in, None when idle."""
        ...

    def incoming_call(
        self, call_id: str, caller: str, caller_name: str | None, now: float
    ) -> IncomingResult:
        """A call for this port: alert (ring, or signal the network) or refuse."""
        ...

    def call_progress(self, status: int, now: float, early_media: bool = False) -> None:
        """The far end of our outgoing call is alerting (or sends early media)."""
        ...

    def call_answered(self, now: float) -> None:
        """The far end of our outgoing call answered."""
        ...

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        """The far end ended or refused the call."""
        ...

    def incoming_cancelled(self, now: float) -> None:
        """The caller gave up before this port answered."""
        ...

    def set_call_id(self, call_id: str) -> None:
        """The runtime's id for the outgoing call this port asked for."""
        ...

    def dtmf_digit(self, digit: str, now: float) -> None:
        """A digit heard on this port's audio (only kinds that listen for digits get these)."""
        ...

    def get_timer(self) -> float | None:
        """The next deadline, or None."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run what is due at `now`."""
        ...

    def actions(self) -> list[Action]:
        """Every action queued since the last call, oldest first."""
        ...

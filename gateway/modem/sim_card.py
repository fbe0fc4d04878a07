"""SIM PIN handling that cannot lock a SIM: the configured PIN is sent at most once.

Three wrong PINs turn a SIM into a PUK-locked brick that needs the operator's code, and
unattended gateways re-probe modems all the time (USB resets, re-plugs, restarts). So:

- the PIN comes from config and is sent only when the SIM asks for it (``+CPIN: SIM PIN``);
- if the SIM refuses it (``+CME ERROR: 16``, any other error, no answer, or still ``SIM PIN``
  afterwards) it is never sent again: `SimCard` stops and reports, and `PinMemory` remembers
  the refusal for that SIM (by ICCID, or IMEI when the ICCID is unknown) across re-probes
  until the configured PIN changes;
- a SIM asking for its PUK is reported and left alone.

Pure and sans-IO: the adapter sends each `SendCommand` through the AT engine and feeds the
result back with `command_done` / `command_failed` / `command_timed_out`.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from enum import Enum

from gateway.modem.at import AtEvent, CommandDone, CommandFailed, CommandTimedOut
from gateway.modem.responses import (
    PinRetries,
    ResponseError,
    SimState,
    parse_cpin,
    parse_pin_retries,
)

__all__ = [
    "PinMemory",
    "SendCommand",
    "SimCard",
    "SimStateChanged",
    "SimStatus",
]


class SimStatus(Enum):
    """Where the SIM check ended up (or `CHECKING` while it runs)."""

    CHECKING = "checking"
    READY = "ready"
    PIN_REQUIRED = "pin-required"
    """The SIM wants a PIN and none is configured."""
    PIN_REJECTED = "pin-rejected"
    PUK_REQUIRED = "puk-required"
    NOT_INSERTED = "not-inserted"
    LOCKED = "locked"
    """Another lock (PH-SIM PIN, PH-NET PIN, SIM PIN2 ...): reported, not handled."""
    ERROR = "error"


@dataclass(frozen=True)
class SendCommand:
    """An AT command to send. `sensitive` commands carry the PIN: log them masked."""

    command: str
    timeout: float = 5.0
    sensitive: bool = False

    def __repr__(self) -> str:
        shown = 'AT+CPIN="****"' if self.sensitive else self.command
        return f"SendCommand({shown!r}, timeout={self.timeout})"


@dataclass(frozen=True)
class SimStateChanged:
    """The SIM check reached `status`; `message` is for status output and the log."""

    status: SimStatus
    message: str
    tries: PinRetries | None = None


SimAction = SendCommand | SimStateChanged


class PinMemory:
    """PINs a SIM has refused, as salted digests, kept by whoever outlives one probe."""

    def __init__(self) -> None:
        self._rejected: dict[str, str] = {}

    @staticmethod
    def key(imei: str | None, iccid: str | None) -> str | None:
        if iccid:
            return "iccid:" + iccid
        if imei:
            return "imei:" + imei
        return None

    @staticmethod
    def _digest(key: str, pin: str) -> str:
        return hashlib.sha256(f"{key}\0{pin}".encode()).hexdigest()

    def was_rejected(self, key: str | None, pin: str) -> bool:
        return key is not None and self._rejected.get(key) == self._digest(key, pin)

    def record_rejection(self, key: str | None, pin: str) -> None:
        if key is not None:
            self._rejected[key] = self._digest(key, pin)

    def forget(self, key: str) -> None:
        self._rejected.pop(key, None)


class _Step(Enum):
    IDLE = "idle"
    QUERY = "query"
    RETRIES_BEFORE = "retries-before"
    ENTER_PIN = "enter-pin"
    VERIFY = "verify"
    RETRIES_AFTER = "retries-after"
    RETRIES_PUK = "retries-puk"
    DONE = "done"


_SIM_BUSY = ("+CME ERROR: 14", "SIM BUSY")
_NOT_INSERTED = ("+CME ERROR: 10", "SIM NOT INSERTED")
_WRONG_PIN = ("+CME ERROR: 16", "INCORRECT PASSWORD")
_PUK_NEEDED = ("+CME ERROR: 12", "SIM PUK REQUIRED")


_RETRY_STEPS = (_Step.RETRIES_BEFORE, _Step.RETRIES_AFTER, _Step.RETRIES_PUK)


def _is(final: str, codes: tuple[str, ...]) -> bool:
    upper = final.upper()
    return any(code in upper for code in codes)


class SimCard:
    """One SIM check on one modem: query, maybe enter the PIN once, verify, report."""

    def __init__(
        self,
        *,
        pin: str | None,
        memory: PinMemory,
        imei: str | None = None,
        iccid: str | None = None,
        pin_retries_command: str | None = None,
        busy_retry: float = 1.0,
        max_busy_polls: int = 10,
    ) -> None:
        if pin is not None and not (4 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
            raise ValueError("SIM PIN must be 4 to 8 digits")
        self._pin = pin
        self._memory = memory
        self._key = PinMemory.key(imei, iccid)
        self._retries_command = pin_retries_command
        self._busy_retry = busy_retry
        self._max_busy_polls = max_busy_polls
        self._busy_polls = 0
        self._step = _Step.IDLE
        self._pending: str | None = None
        self._timer: float | None = None
        self._actions: deque[SimAction] = deque()
        self._tries: PinRetries | None = None
        self.status = SimStatus.CHECKING
        self.message = "checking the SIM"

    # --- inputs ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin (or re-begin after a re-probe) with AT+CPIN?."""
        self._step = _Step.QUERY
        self._send("AT+CPIN?")

    def handle(self, event: AtEvent, now: float) -> None:
        """Feed one AT engine event; results of other commands and URCs are ignored."""
        if isinstance(event, CommandDone):
            self.command_done(event.command, event.lines, now)
        elif isinstance(event, CommandFailed):
            self.command_failed(event.command, event.final, event.lines, now)
        elif isinstance(event, CommandTimedOut):
            self.command_timed_out(event.command, now)

    def command_done(self, command: str, lines: tuple[str, ...], now: float) -> None:
        if command != self._pending:
            return
        self._pending = None
        if self._step in (_Step.QUERY, _Step.VERIFY):
            self._on_cpin(lines, now)
        elif self._step in _RETRY_STEPS:
            self._tries = self._read_retries(lines)
            self._after_retries()
        elif self._step is _Step.ENTER_PIN:
            # Accepted: confirm (still SIM PIN afterwards means it was not).
            self._step = _Step.VERIFY
            self._send("AT+CPIN?")

    def command_failed(self, command: str, final: str, lines: tuple[str, ...], now: float) -> None:
        if command != self._pending:
            return
        self._pending = None
        if self._step is _Step.ENTER_PIN:
            assert self._pin is not None
            self._memory.record_rejection(self._key, self._pin)
            if _is(final, _PUK_NEEDED):
                self._tries = None
                self._puk()
            else:
                self._rejected()
        elif self._step in _RETRY_STEPS:
            self._after_retries()
        elif _is(final, _SIM_BUSY):
            self._busy(now)
        elif _is(final, _NOT_INSERTED):
            self._finish(SimStatus.NOT_INSERTED, "no SIM inserted")
        elif _is(final, _PUK_NEEDED):
            self._puk()
        else:
            self._finish(SimStatus.ERROR, f"SIM check failed: AT+CPIN? answered {final!r}")

    def command_timed_out(self, command: str, now: float) -> None:
        if command != self._pending:
            return
        self._pending = None
        if self._step is _Step.ENTER_PIN:
            self._rejected()
        elif self._step in _RETRY_STEPS:
            self._after_retries()
        else:
            self._finish(SimStatus.ERROR, "SIM check failed: no answer to AT+CPIN?")

    def get_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        self._timer = None
        if self._step in (_Step.QUERY, _Step.VERIFY):
            self._send("AT+CPIN?")

    def next_action(self) -> SimAction | None:
        return self._actions.popleft() if self._actions else None

    # --- steps -------------------------------------------------------------------------

    def _on_cpin(self, lines: tuple[str, ...], now: float) -> None:
        state = self._read_cpin(lines)
        if state is None:
            return
        if state is SimState.READY:
            self._finish(SimStatus.READY, "SIM ready")
        elif state is SimState.NOT_READY:
            self._busy(now)
        elif state is SimState.SIM_PIN:
            if self._step is _Step.VERIFY:
                self._rejected()
            elif self._pin is None:
                self._finish(SimStatus.PIN_REQUIRED, "SIM PIN required but no PIN is configured")
            elif self._memory.was_rejected(self._key, self._pin):
                self._step = _Step.RETRIES_AFTER
                self._query_retries()
            else:
                self._step = _Step.RETRIES_BEFORE
                self._query_retries()
        elif state is SimState.SIM_PUK:
            self._puk()
        elif state is SimState.NOT_INSERTED:
            self._finish(SimStatus.NOT_INSERTED, "no SIM inserted")
        else:
            self._finish(SimStatus.LOCKED, f"SIM asks for {state.value}; not handled automatically")

    def _after_retries(self) -> None:
        if self._step is _Step.RETRIES_BEFORE:
            assert self._pin is not None
            if self._tries is not None and self._tries.pin == 0:
                self._puk()
                return
            self._step = _Step.ENTER_PIN
            self._send(f'AT+CPIN="{self._pin}"', sensitive=True)
        elif self._step is _Step.RETRIES_AFTER:
            self._finish(
                SimStatus.PIN_REJECTED,
                "SIM PIN rejected; not retried to protect the SIM "
                f"({self._tries_text('pin')}); set the right PIN in the config to try again",
            )
        elif self._step is _Step.RETRIES_PUK:
            self._report_puk()

    def _rejected(self) -> None:
        """The PIN was refused (or its fate is unknown): remember it, never send it again."""
        assert self._pin is not None
        self._memory.record_rejection(self._key, self._pin)
        self._step = _Step.RETRIES_AFTER
        self._tries = None
        self._query_retries()

    def _puk(self) -> None:
        self._step = _Step.RETRIES_PUK
        if self._tries is None:
            self._query_retries()
        else:
            self._report_puk()

    def _report_puk(self) -> None:
        self._finish(
            SimStatus.PUK_REQUIRED,
            f"SIM PUK required ({self._tries_text('puk')}); enter it by hand, "
            "it is never tried automatically",
        )

    def _busy(self, now: float) -> None:
        self._busy_polls += 1
        if self._busy_polls > self._max_busy_polls:
            self._finish(SimStatus.ERROR, "SIM stayed busy; giving up the SIM check")
            return
        self._timer = now + self._busy_retry

    def _query_retries(self) -> None:
        if self._retries_command is not None:
            self._send(self._retries_command)
        else:
            self._after_retries()

    def _finish(self, status: SimStatus, message: str) -> None:
        self._step = _Step.DONE
        self._timer = None
        self.status = status
        self.message = message
        self._actions.append(SimStateChanged(status, message, self._tries))

    def _send(self, command: str, *, sensitive: bool = False) -> None:
        self._pending = command
        self._actions.append(SendCommand(command, sensitive=sensitive))

    def _tries_text(self, which: str) -> str:
        if self._tries is None:
            return "tries left unknown"
        n = self._tries.pin if which == "pin" else self._tries.puk
        return f"{n} {'try' if n == 1 else 'tries'} left"

    def _read_cpin(self, lines: tuple[str, ...]) -> SimState | None:
        for line in lines:
            if line.strip().upper().startswith("+CPIN:"):
                try:
                    return parse_cpin(line)
                except ResponseError as exc:
                    self._finish(SimStatus.ERROR, f"SIM check failed: {exc}")
                    return None
        self._finish(SimStatus.ERROR, "SIM check failed: AT+CPIN? gave no +CPIN line")
        return None

    @staticmethod
    def _read_retries(lines: tuple[str, ...]) -> PinRetries | None:
        for line in lines:
            try:
                return parse_pin_retries(line)
            except ResponseError:
                continue
        return None

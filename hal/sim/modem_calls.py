"""Voice calls on the emulated module: ATD/ATA/ATH, +CLCC, RING/+CLIP, DTMF, USSD,
+CEER, the vendor PCM switch, and the network side of a call (answer, reject, hang-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hal.sim.modem_syntax import CommandError, split_args

if TYPE_CHECKING:
    from hal.sim.modem_at import Settings
    from hal.sim.modem_dialects import Dialect

RING_PERIOD_S = 3.0
CALL_STATES = {"active": 0, "held": 1, "dialing": 2, "alerting": 3, "incoming": 4}


@dataclass
class Call:
    """One voice call as +CLCC lists it."""

    idx: int
    direction: int  # 0 mobile-originated, 1 mobile-terminated
    number: str
    state: str
    started: float = 0.0


def number_type(number: str) -> int:
    """TS 24.008 type of address: 145 international, 129 national/unknown, 128 none."""
    if not number:
        return 128
    return 145 if number.startswith("+") else 129


class CallSide:
    """Mixin for :class:`hal.sim.modem_at.ModemCore`: calls and their commands."""

    settings: Settings
    dialect: Dialect
    calls: list[Call]
    call_listeners: list[Callable[[str, Call], None]]
    dtmf_sent: list[str]
    ussd_replies: dict[str, str]
    last_end_cause: str
    cscs: str
    _now: float
    _current: str
    _ring_at: float | None
    _pending_urcs: list[tuple[float, str]]
    emit: Callable[..., None]
    need_sim: Callable[[], None]
    registered: Callable[[], bool]


    def _call_event(self, what: str, call: Call) -> None:
        for listener in list(self.call_listeners):
            listener(what, call)
        if self.settings.clcc_urc:
            self.emit(self._clcc_line(call))

    def _clcc_line(self, call: Call) -> str:
        stat = 6 if call.state == "released" else CALL_STATES[call.state]
        kind = number_type(call.number)
        return f'+CLCC: {call.idx},{call.direction},{stat},0,0,"{call.number}",{kind}'

    def _new_idx(self) -> int:
        used = {c.idx for c in self.calls}
        return next(i for i in range(1, 8) if i not in used)

    def _dial(self, arg: str) -> str | None:
        number = arg.strip()
        if not number.endswith(";"):
            return "NO CARRIER"  # data calls are not emulated
        # V.250 dial modifiers (T tone, P pulse, W wait, comma pause, ! flash, @ quiet)
        # and 27.007's I/i (CLIR) and G/g (CUG) are not part of the number.
        number = "".join(ch for ch in number[:-1] if ch in "+0123456789*#ABCDabcd") + ";"
        self.need_sim()
        if not self.registered():
            return "NO CARRIER"
        if any(c.state in ("active", "dialing", "alerting") for c in self.calls):
            raise CommandError(3)
        call = Call(self._new_idx(), 0, number[:-1].strip('"'), "dialing", self._now)
        self.calls.append(call)
        self._call_event("dialing", call)
        return None

    def _answer(self) -> str | None:
        call = next((c for c in self.calls if c.state == "incoming"), None)
        if call is None:
            return "NO CARRIER"
        call.state = "active"
        call.started = self._now
        self._ring_at = None
        self._call_event("answered", call)
        self._voice_begin()
        return None

    def _voice_begin(self) -> None:
        if self.dialect.name == "sim7600":
            self._pending_urcs.append((self._now, "VOICE CALL: BEGIN"))

    def _end(self, call: Call, result: str | None, cause: str) -> None:
        self.calls.remove(call)
        self.last_end_cause = cause
        if not any(c.state == "incoming" for c in self.calls):
            self._ring_at = None
        call.state = "released"
        self._call_event("ended", call)
        if self.dialect.name == "sim7600" and result is not None:
            secs = int(self._now - call.started) if call.started else 0
            self.emit(f"VOICE CALL: END: {secs:06d}")
        if result is not None:
            self.emit(result)

    def _hang_up_all(self) -> None:
        for call in list(self.calls):
            self._end(call, None, "Normal call clearing")

    def _c_chup(self, op: str, arg: str) -> str | None:
        if op == "":
            self._hang_up_all()
        return None

    def _c_clcc(self, op: str, arg: str) -> str | None:
        if op == "=":
            self.settings.clcc_urc = 1 if arg == "1" else 0
        elif op == "?":
            self.emit(f"+CLCC: {self.settings.clcc_urc}")
        elif op == "":
            for call in self.calls:
                self.emit(self._clcc_line(call))
        return None

    def _c_clip(self, op: str, arg: str) -> str | None:
        if op == "=":
            self.settings.clip = 1 if arg == "1" else 0
        elif op == "?":
            self.emit(f"+CLIP: {self.settings.clip},1")
        elif op == "=?":
            self.emit("+CLIP: (0,1)")
        return None

    def _c_dtmf_det(self, op: str, arg: str) -> str | None:
        """EC25 AT+QTONEDET=1 / SIM800 AT+DDET=1: report the far end's key presses."""
        if op == "?":
            self.emit(f"{self._current}: {self.settings.dtmf_urc}")
        elif op == "=":
            first = split_args(arg)[0] if arg else ""
            if first not in ("0", "1"):
                raise CommandError(50)
            self.settings.dtmf_urc = int(first)
        return None

    def far_end_dtmf(self, digit: str) -> None:
        """The far end presses a key during the call (the in-band tone is the emulator's
        job); reported as +QTONEDET (ASCII code) or +DTMF when enabled."""
        if not any(c.state == "active" for c in self.calls):
            raise RuntimeError("far_end_dtmf: no active call")
        if self.settings.dtmf_urc:
            if self.dialect.name == "ec25":
                self.emit(f"+QTONEDET: {ord(digit)}")
            elif self.dialect.name == "sim800":
                self.emit(f"+DTMF: {digit}")

    def _c_vts(self, op: str, arg: str) -> str | None:
        digits = split_args(arg)[0] if arg else ""
        if not any(c.state == "active" for c in self.calls):
            raise CommandError(3)
        if not digits or any(d not in "0123456789*#ABCD" for d in digits.upper()):
            raise CommandError(50)
        self.dtmf_sent.extend(digits.upper())
        return None

    def _c_cusd(self, op: str, arg: str) -> str | None:
        if op != "=":
            self.emit("+CUSD: 0" if op == "?" else "+CUSD: (0-2)")
            return None
        args = split_args(arg)
        if len(args) >= 2:
            self.need_sim()
            ucs2 = self.cscs == "UCS2"  # the string is in the TE character set (+CSCS)
            try:
                code = bytes.fromhex(args[1]).decode("utf-16-be") if ucs2 else args[1]
            except ValueError:
                raise CommandError(50) from None
            reply = self.ussd_replies.get(code, "Unknown application")
            shown = reply.encode("utf-16-be").hex().upper() if ucs2 else reply
            self._pending_urcs.append((self._now + 0.2, f'+CUSD: 0,"{shown}",15'))
        return None

    def _c_ceer(self, op: str, arg: str) -> str | None:
        if self.dialect.name == "ec25":
            self.emit(f'+CEER: "CC INFO","{self.last_end_cause}"')
        else:
            self.emit(f"+CEER: {self.last_end_cause}")
        return None

    def _c_pcm(self, op: str, arg: str) -> str | None:
        if self._current != self.dialect.pcm:
            raise CommandError(4)
        if op == "?":
            if self.dialect.name == "ec25":
                self.emit(f"+QPCMV: {self.settings.pcm[0]},{self.settings.pcm[1]}")
            else:
                self.emit(f"+CPCMREG: {self.settings.pcm[0]}")
        elif op == "=":
            args = split_args(arg)
            if not args or args[0] not in ("0", "1"):
                raise CommandError(50)
            port = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
            self.settings.pcm = (int(args[0]), port)
        return None

    def serial_pcm_on(self) -> bool:
        """Voice flows on the PCM port: enabled to the serial port, and a call is up."""
        on, port = self.settings.pcm
        return bool(on) and port == 0 and any(c.state == "active" for c in self.calls)

    # ---------------------------------------------------- network-side events
    def incoming_call(self, number: str) -> Call:
        call = Call(self._new_idx(), 1, number, "incoming")
        self.calls.append(call)
        self._call_event("incoming", call)
        self._ring()
        return call

    def _ring(self) -> None:
        call = next((c for c in self.calls if c.state == "incoming"), None)
        if call is None:
            self._ring_at = None
            return
        self.emit("RING")
        if self.settings.clip:
            withheld = 1 if not call.number else 0  # CLI validity: 1 withheld by the caller
            self.emit(f'+CLIP: "{call.number}",{number_type(call.number)},,,,{withheld}')
        self._ring_at = self._now + RING_PERIOD_S

    def caller_gave_up(self) -> None:
        for call in [c for c in self.calls if c.state == "incoming"]:
            self._end(call, "NO CARRIER", "Normal call clearing")

    def remote_answer(self) -> None:
        for call in self.calls:
            if call.direction == 0 and call.state in ("dialing", "alerting"):
                call.state = "active"
                call.started = self._now
                self._call_event("answered", call)
                self._voice_begin()
                return
        raise RuntimeError("no outgoing call to answer")

    def remote_alerting(self) -> None:
        for call in self.calls:
            if call.direction == 0 and call.state == "dialing":
                call.state = "alerting"
                self._call_event("alerting", call)

    def remote_reject(self, result: str = "BUSY") -> None:
        causes = {"BUSY": "User busy", "NO ANSWER": "No answer",
                  "NO CARRIER": "Call rejected"}
        if result not in causes:
            raise ValueError(f"remote_reject: result {result!r} not one of {sorted(causes)}")
        for call in list(self.calls):
            if call.direction == 0 and call.state in ("dialing", "alerting"):
                self._end(call, result, causes[result])
                return
        raise RuntimeError("no outgoing call to reject")

    def remote_hangup(self) -> None:
        active = [c for c in self.calls if c.state == "active"]
        if not active:
            raise RuntimeError("no active call to hang up")
        for call in active:
            self._end(call, "NO CARRIER", "Normal call clearing")

"""A GSM/LTE modem as a port of kind "gsm": its `GsmLine`, its driver's AT port and its audio.

The runtime drives every port through `PortMachine`; `GsmMachine` is that protocol over the
pure `gateway.lines.gsm.GsmLine`. It turns the runtime's verbs into the line's intents (a
call *for* this port is dialled out with ATD; an answer from the other leg answers the
modem's ringing call with ATA) and the line's events back into the runtime's actions
(`AnswerCall` when the far end picks up, `RejectCall` with 486/480/503 when it never does,
`HangUp` when it hangs up). The AT commands the line asks for go to the shared modem port
(`ModemDriver.command`) one at a time, in order, from one task per port; their results and
every unsolicited result code are fed back into the line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.dsp import SILENCE_FRAME
from gateway.lines import events as lev
from gateway.lines.gsm import (
    CallAnswered,
    CallEnded,
    CallProgress,
    DtmfReceived,
    GsmAction,
    GsmLine,
    GsmState,
    GsmStateChanged,
    GsmUsageError,
    IncomingCall,
    SendAt,
)
from gateway.modem.at import Unsolicited
from gateway.modem.profiles import ModemProfile, profile, profile_for
from gateway.runtime.modem import ModemDriver
from hal.base import AudioPort, CommandError, HalError, ModemLost

log = logging.getLogger("branchline.gsm")

_LINE_STATE = {
    GsmState.IDLE: lev.LineState.IDLE,
    GsmState.DIALING: lev.LineState.CALLING,
    GsmState.ALERTING: lev.LineState.RINGBACK,
    GsmState.ACTIVE: lev.LineState.CONNECTED,
    GsmState.RINGING: lev.LineState.RINGING,
    GsmState.RELEASING: lev.LineState.WAIT_ONHOOK,
}


@dataclass(frozen=True)
class GsmOffer:
    """A call came in on the modem: `caller` is its +CLIP number, None when withheld."""

    caller: str | None
    withheld: bool


class GsmMachine:
    """`PortMachine` over a `GsmLine`: see the module docstring for who does what."""

    def __init__(self, line: GsmLine, send: Callable[[SendAt], None]) -> None:
        self.line = line
        self.line_poll = 0.5
        self._send = send
        self._call_id: str | None = None
        self._actions: list[lev.Action] = []
        self.offers: list[GsmOffer] = []
        """Incoming calls offered since the runtime last looked (it takes them)."""
        self.answered_at: float | None = None
        self._dialled = False  # this call was dialled out (True) or came in on the modem
        self.on_news: Callable[[], None] = lambda: None
        """Called when `offers` or `ended` grew (the runtime looks at them soon after)."""
        self.ended: list[tuple[float, float | None]] = []
        """(end time, answer time) of each call that ended, for minute accounting."""
        self.on_state: Callable[[lev.LineState], None] = lambda state: None
        """Called as the line's state changes (the SMS gate follows it in the same turn)."""

    # --- PortMachine --------------------------------------------------------------------

    @property
    def state(self) -> lev.LineState:
        return _LINE_STATE[self.line.state]

    @property
    def call_id(self) -> str | None:
        return self._call_id

    def place(self, call_id: str, number: str, now: float) -> lev.IncomingResult:
        """Dial `number` for the runtime call `call_id` (the other leg is its caller)."""
        try:
            self.line.dial(number, now)
        except (GsmUsageError, ValueError) as exc:
            log.info("gsm %s: cannot dial %s: %s", self.line.name, number, exc)
            return lev.IncomingResult.BUSY
        self._call_id = call_id
        self._dialled = True
        self.answered_at = None
        self.drain()  # DIALING is news now (on_state), not at the runtime's next look
        return lev.IncomingResult.ACCEPTED

    def incoming_call(
        self, call_id: str, caller: str, caller_name: str | None, now: float
    ) -> lev.IncomingResult:
        """A call for this port with no number to dial cannot be placed."""
        return lev.IncomingResult.BUSY

    def call_progress(self, status: int, now: float, early_media: bool = False) -> None:
        """The other leg is alerting: the GSM caller already hears the network's ringback."""

    def call_answered(self, now: float) -> None:
        """The other leg answered the GSM caller: pick up (voice setup, then ATA)."""
        if self.line.state is GsmState.RINGING:
            self.line.answer(now)

    def call_ended(self, reason: str, status: int | None, now: float) -> None:
        """The other leg ended or refused the call: hang up (ATH)."""
        self._call_id = None
        self.line.hang_up(now)

    def incoming_cancelled(self, now: float) -> None:
        self._call_id = None
        self.line.hang_up(now)

    def set_call_id(self, call_id: str) -> None:
        self._call_id = call_id

    def dtmf_digit(self, digit: str, now: float) -> None:
        """A digit for the GSM far end (from the other leg): AT+VTS."""
        if self.line.state is GsmState.ACTIVE:
            self.line.send_dtmf(digit, now)

    def get_timer(self) -> float | None:
        return self.line.get_timer()

    def handle_timer(self, now: float) -> None:
        self._now_hint = now
        self.line.handle_timer(now)

    def drain(self) -> None:
        """Translate what the line has said so far (offers and ends show up at once)."""
        while (action := self.line.next_action()) is not None:
            self._translate(action)

    def actions(self) -> list[lev.Action]:
        self.drain()
        out, self._actions = self._actions, []
        return out

    # --- the line's events -> the runtime's actions --------------------------------------

    def _translate(self, action: GsmAction) -> None:
        call_id = self._call_id
        match action:
            case SendAt():
                self._send(action)
            case GsmStateChanged(state=state):
                self._actions.append(lev.StateChanged(_LINE_STATE[state]))
                self.on_state(_LINE_STATE[state])
            case IncomingCall(caller_id=caller, withheld=withheld):
                self.offers.append(GsmOffer(caller, withheld))
                self.on_news()
            case CallProgress():
                pass  # the runtime said 180 when the call was placed
            case CallAnswered():
                self.answered_at = self._now_hint
                if call_id is not None:
                    # Dialled out: the far end answered the runtime's call for this port.
                    # Came in: the other leg answered first, and the modem has now too.
                    if self._dialled:
                        self._actions.append(lev.AnswerCall(call_id))
                    self._actions.append(lev.ConnectAudio(call_id))
            case CallEnded(cause=cause, sip_status=status):
                log.info("gsm %s: call ended: %s%s", self.line.name, cause,
                         f" ({status})" if status else "")
                self.ended.append((self._now_hint, self.answered_at))
                self.on_news()
                answered = self.answered_at is not None
                self.answered_at = None
                self._call_id = None
                self._dialled = False
                if call_id is None:
                    return  # the runtime ended it first (it asked for the hang-up)
                if answered:
                    self._actions.append(lev.HangUp(call_id))
                elif status is not None:
                    self._actions.append(lev.RejectCall(call_id, status))
                else:
                    self._actions.append(lev.CancelCall(call_id))
            case DtmfReceived(digit=digit):
                if call_id is not None:
                    self._actions.append(lev.SendDigit(call_id, digit))

    _now_hint: float = 0.0
    """The time of the latest input, for answer/end times (actions carry no time)."""


class _NoAudio(AudioPort):
    """The audio of a modem with none attached (yet): silence in, nothing out."""

    def read_frame(self) -> bytes | None:
        return None

    def write_frame(self, frame: bytes) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class GsmPort:
    """One modem's voice channel as a runtime port (kind "gsm")."""

    name: str
    number: str
    config: Any
    driver: ModemDriver
    gsm: GsmMachine
    loop: asyncio.AbstractEventLoop
    wake: Callable[[], None]
    call_id: str | None = None
    mic: bytes = SILENCE_FRAME
    kind: str = "gsm"
    _queue: asyncio.Queue[SendAt] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _unsubscribe: Callable[[], None] | None = None
    _silent: AudioPort = field(default_factory=_NoAudio)
    _profile: ModemProfile | None = None

    @classmethod
    def create(cls, driver: ModemDriver, loop: asyncio.AbstractEventLoop,
               wake: Callable[[], None], *, poll_interval: float = 0.5) -> GsmPort:
        """The port for `driver`'s modem; `wake` runs the runtime's pump after an input."""
        config = driver.config
        port = cls(config.name, config.number or "", config, driver,
                   GsmMachine(_line_for(driver, poll_interval), lambda c: None), loop, wake)
        port.gsm._send = port._queue.put_nowait

        def news() -> None:
            loop.call_soon(wake)

        port.gsm.on_news = news
        port._profile = driver.profile
        return port

    def _sync_profile(self) -> None:
        """Once the driver has probed the module, run the line with the profile it found
        (the emulator's "sim" names no dialect until then); only between calls."""
        found = self.driver.profile
        if found is not None and found is not self._profile \
                and self.gsm.line.state is GsmState.IDLE:
            self._profile = found
            self.gsm.line = _line_for(self.driver, self.gsm.line_poll)

    def start(self) -> None:
        self._unsubscribe = self.driver.subscribe(self._urc)
        self._task = self.loop.create_task(self._run_commands())

    # --- Port ---------------------------------------------------------------------------

    @property
    def machine(self) -> GsmMachine:
        return self.gsm

    @property
    def audio(self) -> AudioPort:
        return self.driver.audio or self._silent

    def capture(self) -> bytes:
        self._sync_profile()
        if self.gsm.line.state is not GsmState.IDLE and not self.driver.up:
            self.gsm._now_hint = now = self.loop.time()
            self.gsm.line.modem_lost(now)
            self.loop.call_soon(self.wake)
        try:
            self.mic = self.audio.read_frame() or SILENCE_FRAME
        except (OSError, HalError):
            self.mic = SILENCE_FRAME
        return self.mic

    def digits_heard(self) -> list[str]:
        return []  # the modem reports the far end's digits itself (+QTONEDET, +DTMF)

    def accepts_audio(self) -> bool:
        return self.gsm.line.state is GsmState.ACTIVE

    def play(self, frame: bytes | None) -> None:
        if frame is None or self.gsm.line.state is not GsmState.ACTIVE:
            return  # no voice flows outside a call: nothing is queued for the modem
        try:
            self.audio.write_frame(frame)
        except (OSError, HalError) as exc:
            log.debug("gsm %s: audio write failed: %s", self.name, exc)

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """A digit from the other leg (RFC 4733, SIP INFO, a handset): AT+VTS."""
        try:
            self.gsm.dtmf_digit(digit, self.loop.time())
        except (GsmUsageError, ValueError) as exc:
            log.debug("gsm %s: digit %s not sent: %s", self.name, digit, exc)
            return
        self.loop.call_soon(self.wake)

    def carry_out(self, action: lev.Action) -> bool:
        return False

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # --- the modem's side ---------------------------------------------------------------

    def _urc(self, event: Unsolicited) -> None:
        self.gsm._now_hint = now = self.loop.time()
        self.gsm.line.handle(event, now)
        self.wake()

    async def _run_commands(self) -> None:
        """Send the line's commands one at a time, in order, and feed back each result."""
        while True:
            send = await self._queue.get()
            try:
                result: Any = await self.driver.command(send.command, timeout=send.timeout)
            except CommandError as exc:
                result = exc.result
            except ModemLost as exc:
                log.info("gsm %s: %s: %s", self.name, send.command, exc)
                self.gsm._now_hint = now = self.loop.time()
                self.gsm.line.modem_lost(now)
                self.wake()
                continue
            except Exception:  # noqa: BLE001  one bad command must not stop the channel
                log.exception("gsm %s: %s failed", self.name, send.command)
                continue
            self.gsm._now_hint = now = self.loop.time()
            self.gsm.line.handle(result, now)
            self.wake()


def _line_for(driver: ModemDriver, poll_interval: float) -> GsmLine:
    """A GsmLine for the driver's probed profile (or the configured one until probed)."""
    config = driver.config
    found = driver.profile
    if found is None:
        try:
            found = profile_for(config.profile, ())
        except ValueError:
            found = profile("quectel-ec25")  # the emulator's default dialect, until probed
    audio = config.audio.type
    if audio == "sim":
        audio = "serial-pcm"  # the emulator carries voice as raw PCM on its second pty
    return GsmLine(config.name, profile=found, audio=audio if audio in found.audio else None,
                   poll_interval=poll_interval)

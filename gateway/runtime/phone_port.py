"""A local SIP phone as a port of kind "phone": its `SipPhoneLine` and its anchored media.

The box is a back-to-back user agent for its phones and anchors their media: the audio of
a phone port is the RTP of its current dialog with the phone (the *leg*, a `Call` record
that is not in the runtime's call table), so the bridge joins it to an FXS line, a modem,
a trunk's RTP or another phone like any other port. Which dialog that is, and the forks
still ringing, are kept here; gateway.runtime.phones drives them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.dsp import SILENCE_FRAME
from gateway.lines import events as lev
from gateway.lines.sip_phone import SipPhoneLine
from gateway.runtime.media_watch import MediaWatch
from gateway.runtime.sip_calls import Call
from hal.base import AudioPort

log = logging.getLogger("branchline.phone")


class _LegAudio(AudioPort):
    """The hal view of a phone port's audio (for code that asks a port for `audio`)."""

    def __init__(self, port: PhonePort) -> None:
        self._port = port

    def read_frame(self) -> bytes | None:
        return self._port.capture()

    def write_frame(self, frame: bytes) -> None:
        self._port.play(frame)

    def close(self) -> None:
        pass


@dataclass
class PhonePort:
    """One configured local phone (`sip_phones[]`) as a runtime port."""

    name: str
    number: str
    user: str
    config: Any
    line: SipPhoneLine
    clock: Callable[[], float]
    call_id: str | None = None
    mic: bytes = SILENCE_FRAME
    kind: str = "phone"
    leg: Call | None = None
    """The dialog with the phone that carries the call's media (None between calls)."""
    forks: dict[str, str] = field(default_factory=dict)
    """Dialogs of a call for the phone still ringing: Call-ID -> the binding's contact."""
    fork_statuses: list[int] = field(default_factory=list)
    """Final statuses of forks that refused, for the answer once all of them have."""
    heard: list[str] = field(default_factory=list)
    """Digits the phone sent (RFC 4733, SIP INFO) since the last `digits_heard`."""
    watch: MediaWatch | None = None
    """Times the leg's RTP while it is expected (`sip.media_timeout`); None: not timed."""
    on_media_timeout: Callable[[], object] | None = None
    """Called (once) when the phone's RTP stopped for the media timeout."""
    _watched: str | None = None
    relay: str | None = None
    """The phone's upstream account: None, "on", "parked" or "stale" (see
    `PhoneCalls._phone_relay_sync`)."""

    @property
    def machine(self) -> SipPhoneLine:
        return self.line

    @property
    def audio(self) -> AudioPort:
        return _LegAudio(self)

    def connected(self) -> bool:
        """Media flows on the leg: the call is answered, or the phone hears early media."""
        return (self.leg is not None and self.leg.media is not None and self.line.state in (
            lev.LineState.CONNECTED, lev.LineState.EARLY_MEDIA))

    def quiet(self) -> bool:
        """Nothing for the 20 ms tick to do: no call, no dialog, no digits waiting. The
        runtime leaves a quiet phone alone until its machine signals a change."""
        return (self.leg is None and self.call_id is None and not self.heard
                and self.line.state is lev.LineState.IDLE)

    # --- Port ---------------------------------------------------------------------------

    def capture(self) -> bytes:
        leg = self.leg
        if leg is None:
            self.mic = SILENCE_FRAME
            return SILENCE_FRAME
        if leg.media is not None and self.connected():
            now = self.clock()
            self.mic = leg.media.pull_frame(now)
            self._watch_media(leg, now)
        else:
            self.mic = SILENCE_FRAME
        return self.mic

    def _watch_media(self, leg: Call, now: float) -> None:
        """A phone that vanished mid-call (crashed, unplugged: no BYE) sends no more RTP."""
        if self.watch is None or leg.media is None:
            return
        if leg.call_id != self._watched:  # a new call: forget the last one's figures
            self.watch.retain(())
            self._watched = leg.call_id
        expecting = self.line.state is lev.LineState.CONNECTED and \
            leg.media.direction == "sendrecv"
        if self.watch.observe(leg.call_id, expecting, leg.media.packets_received, now):
            self.watch.retain(())
            log.warning("phone %s: no RTP for %.1f s; ending the call", self.user,
                        self.watch.timeout)
            if self.on_media_timeout is not None:
                self.on_media_timeout()

    def digits_heard(self) -> list[str]:
        if not self.heard:
            return []
        out, self.heard = self.heard, []
        return out

    def accepts_audio(self) -> bool:
        return self.connected()

    def play(self, frame: bytes | None) -> None:
        leg = self.leg
        if leg is None or leg.rtp is None:
            return
        if frame is not None and leg.media is not None and self.connected():
            leg.media.push_frame(frame)
        leg.rtp.tick(self.clock())  # the RTP and RTCP that are due, digit timeouts

    def play_digit(self, digit: str, duration_ms: int) -> None:
        """A digit from the other leg: to the phone as RFC 4733 (its own keypad tone)."""
        leg = self.leg
        if leg is not None and leg.media is not None and self.connected():
            leg.media.send_dtmf(digit, self.clock(), max(40, min(duration_ms, 8000)))
        else:
            log.debug("phone %s: digit %s not sent (no media)", self.name, digit)

    def carry_out(self, action: lev.Action) -> bool:
        return False  # the phone plays its own ringback and tones

    def close(self) -> None:
        leg, self.leg = self.leg, None
        if leg is not None and leg.rtp is not None:
            leg.rtp.close()
            leg.rtp = None
        if leg is not None:
            leg.media = None

"""Call waiting with off-hook (type 2) caller ID, through the runtime's own path: an FxsLine
in a call is offered a second one, its actions carried out by the daemon's LinePort onto a
simulated port whose handset is a CIDCW set (it answers the CAS with DTMF D and decodes
the FSK that follows), frame by frame with the far end's audio a 1000 Hz tone."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from gateway.dsp import SILENCE_FRAME
from gateway.dsp.analysis import frequencies_present
from gateway.dsp.tones import ToneGenerator, ToneSpec, get_profile
from gateway.lines import events as lev
from gateway.lines.fxs import FxsLine
from gateway.routing.dialplan import DigitMap
from gateway.runtime.ports import LinePort
from hal.sim.fxs import SimFxs

FRAME_S = 0.02


@dataclass
class Talk:
    ear: list[bytes] = field(default_factory=list)  # what the earpiece got, per frame
    sent: list[bytes] = field(default_factory=list)  # what went to the far end, per frame
    actions: list[lev.Action] = field(default_factory=list)
    cidcw: list[dict[str, object]] = field(default_factory=list)

    def ear_between(self, start: float, end: float) -> bytes:
        return b"".join(self.ear[round(start / FRAME_S):round(end / FRAME_S)])


def talk_and_wait(country: str, *, ack: str | None = "D", name: str | None = "BOB",
                  seconds: float = 4.0, waiting_at: float = 1.0,
                  hangup_at: float | None = None) -> Talk:
    profile = get_profile(country)
    port = SimFxs("1", {"country": country, "clock": "frames"})
    line = FxsLine("1", digit_map=DigitMap("x"), ring_cadence=profile.ring_cadence)
    lp = LinePort("1", "201", SimpleNamespace(options={}), port, line, profile)
    port.start(lambda off, t: line.hook(off, t))
    phone = port.phone
    phone.cidcw_ack = ack
    far = ToneGenerator(ToneSpec((1000.0,), level_dbfs=-20.0))
    out = Talk()
    line.incoming_call("in-1", "sip:300@192.0.2.1", None, 0.0)
    phone.off_hook()
    for k in range(round(seconds / FRAME_S)):
        now = k * FRAME_S
        if hangup_at is not None and k == round(hangup_at / FRAME_S):
            phone.on_hook()
        if k == round(waiting_at / FRAME_S):
            assert line.state is lev.LineState.CONNECTED
            assert line.incoming_call("in-2", "sip:5551234@192.0.2.1", name, now) \
                is lev.IncomingResult.ACCEPTED
        timer = line.get_timer()
        if timer is not None and timer <= now:
            line.handle_timer(now)
        out.sent.append(lp.capture())
        for digit in lp.digits_heard():
            line.dtmf_digit(digit, now)
        for action in line.actions():
            out.actions.append(action)
            lp.carry_out(action)
        lp.play(far.next_frame() if line.state is lev.LineState.CONNECTED else None)
    out.ear = [phone.heard(seconds)[i:i + 320] for i in range(0, 320 * round(seconds / FRAME_S),
                                                              320)]
    out.cidcw = phone.cidcw_received
    return out


def test_bellcore_cidcw_tone_cas_ack_and_mdmf_reach_the_handset() -> None:
    t = talk_and_wait("US")
    assert t.cidcw == [{"number": "5551234", "name": "BOB", "modem": "bell202"}]
    # The call-waiting tone (440 Hz, 300 ms) replaced the far end's audio at the start.
    assert frequencies_present(t.ear_between(1.06, 1.26), (440.0, 1000.0)) == (440.0,)
    # Before and well after the alert the handset hears the call.
    assert frequencies_present(t.ear_between(0.5, 0.9), (440.0, 1000.0)) == (1000.0,)
    assert frequencies_present(t.ear_between(3.2, 3.8), (440.0, 1000.0)) == (1000.0,)
    # The phone's D (941 + 1633 Hz) went to the line, not to the far end, and was no digit.
    assert not any(frequencies_present(f, (941.0, 1633.0)) for f in t.sent)
    assert not any(isinstance(a, lev.SendDigit) for a in t.actions)


def test_etsi_line_sends_v23() -> None:
    t = talk_and_wait("DE")
    assert t.cidcw == [{"number": "5551234", "name": "BOB", "modem": "v23"}]


def test_phone_without_cidcw_gets_the_tone_and_no_data() -> None:
    t = talk_and_wait("US", ack=None)
    assert t.cidcw == []
    # No acknowledgement: no FSK (1200/2200 Hz) after the CAS, the call comes back.
    assert not frequencies_present(t.ear_between(1.5, 2.5), (1200.0, 2200.0))
    assert frequencies_present(t.ear_between(1.8, 2.5), (440.0, 1000.0)) == (1000.0,)


def test_dtmf_caller_id_country_gets_the_tone_only() -> None:
    t = talk_and_wait("NL")
    assert t.cidcw == []
    assert frequencies_present(t.ear_between(1.06, 1.4), (425.0, 1000.0)) == (425.0,)


def test_silence_is_sent_to_the_far_end_during_the_alert_only() -> None:
    t = talk_and_wait("US")
    quiet = [i for i, f in enumerate(t.sent) if f == SILENCE_FRAME]
    assert quiet, "nothing was muted"


def test_every_country_has_a_call_waiting_alert() -> None:
    from gateway.dsp.cidcw import cw_burst
    from gateway.dsp.tones import load_profiles

    for country, profile in load_profiles().items():
        burst = cw_burst(profile)
        assert frequencies_present(burst, profile.call_waiting.frequencies), country
        port = SimFxs("1", {"country": country, "clock": "frames"})
        lp = LinePort("1", "201", SimpleNamespace(options={}), port,
                      FxsLine("1", digit_map=DigitMap("x")), profile)
        lp.play_tone("call-waiting")  # the line's ToneName, the profile's call_waiting
        assert lp.tone is not None and lp.tone.spec == profile.call_waiting, country


def test_hanging_up_during_the_alert_stops_it() -> None:
    t = talk_and_wait("US", hangup_at=1.16, seconds=2.0)
    assert frequencies_present(t.ear_between(1.06, 1.14), (440.0,)) == (440.0,)
    # no more tone, no CAS, no data (the call's own audio goes on until the line decides
    # the on-hook is no flash)
    assert not frequencies_present(t.ear_between(1.2, 1.9), (440.0, 2130.0, 2750.0, 1200.0,
                                                              2200.0))

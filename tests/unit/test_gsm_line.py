"""GSM channel call state machine: dialling with per-call voice setup, progress from +CLCC,
the failure -> SIP status table, incoming calls with caller ID, DTMF and hang-ups."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.lines.gsm import (
    SIP_STATUS_BY_CAUSE,
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
    failure_status,
)
from gateway.modem.at import AtEngine, CommandDone, CommandFailed, CommandTimedOut, Unsolicited
from gateway.modem.profiles import profile


def state(line: GsmLine) -> GsmState:
    """Read through a call so mypy does not narrow the state between steps."""
    return line.state


def drain(line: GsmLine) -> list[GsmAction]:
    out: list[GsmAction] = []
    while (a := line.next_action()) is not None:
        out.append(a)
    return out


def cmds(actions: list[GsmAction]) -> list[str]:
    return [a.command for a in actions if isinstance(a, SendAt)]


def events(actions: list[GsmAction]) -> list[GsmAction]:
    return [a for a in actions if not isinstance(a, SendAt | GsmStateChanged)]


def ok(line: GsmLine, command: str, now: float, *lines: str) -> list[GsmAction]:
    line.handle(CommandDone(0, command, "OK", tuple(lines)), now)
    return drain(line)


def fail(line: GsmLine, command: str, final: str, now: float) -> list[GsmAction]:
    line.handle(CommandFailed(0, command, final, ()), now)
    return drain(line)


def urc(line: GsmLine, name: str, value: str, now: float) -> list[GsmAction]:
    line.handle(Unsolicited(name, value), now)
    return drain(line)


def ec25(**kw: float) -> GsmLine:
    return GsmLine("gsm1", profile=profile("quectel-ec25"), **kw)  # type: ignore[arg-type]


def dialled(line: GsmLine, number: str = "07700900123") -> None:
    """Dial and get ATD accepted (OK), the state the modem is in while the callee's phone is found."""
    line.dial(number, 0.0)
    assert cmds(drain(line)) == ["AT+QPCMV=1,2"]
    assert cmds(ok(line, "AT+QPCMV=1,2", 0.05)) == [f"ATD{number};"]
    assert ok(line, f"ATD{number};", 0.1) == []


def test_voice_setup_resent_before_every_call() -> None:
    line = ec25()
    for call in range(3):
        t = call * 100.0
        line.dial("123", t)
        first = drain(line)
        assert cmds(first) == ["AT+QPCMV=1,2"], f"call {call}"
        assert cmds(ok(line, "AT+QPCMV=1,2", t + 0.1)) == ["ATD123;"]
        ok(line, "ATD123;", t + 0.2)
        line.hang_up(t + 1)
        assert cmds(drain(line)) == ["ATH"]
        assert events(ok(line, "ATH", t + 1.1)) == [CallEnded("local hang-up", None)]
        assert state(line) is GsmState.IDLE
    serial = GsmLine("g", profile=profile("quectel-ec25"), audio="serial-pcm")
    serial.dial("123", 0.0)
    assert cmds(drain(serial)) == ["AT+QPCMV=1,0"]


def test_voice_setup_failure_refuses_the_call_with_503() -> None:
    line = ec25()
    line.dial("123", 0.0)
    drain(line)
    actions = fail(line, "AT+QPCMV=1,2", "+CME ERROR: 3", 0.1)
    assert "ATD123;" not in cmds(actions)
    (ended,) = events(actions)
    assert isinstance(ended, CallEnded) and ended.sip_status == 503
    assert "AT+QPCMV=1,2" in ended.cause and state(line) is GsmState.IDLE


def test_outgoing_progress_from_clcc_polling() -> None:
    line = ec25(poll_interval=0.5)
    dialled(line)
    assert line.get_timer() == pytest.approx(0.5)
    line.handle_timer(0.5)
    assert cmds(drain(line)) == ["AT+CLCC"]
    assert line.get_timer() == pytest.approx(1.0)
    assert events(ok(line, "AT+CLCC", 0.6, '+CLCC: 1,0,2,0,0,"07700900123",129')) == []
    assert state(line) is GsmState.DIALING
    line.handle_timer(1.0)
    drain(line)
    alerting = ok(line, "AT+CLCC", 1.1, '+CLCC: 1,0,3,0,0,"07700900123",129')
    assert events(alerting) == [CallProgress("alerting")]
    assert state(line) is GsmState.ALERTING
    line.handle_timer(1.5)
    drain(line)
    answered = ok(line, "AT+CLCC", 1.6, '+CLCC: 1,0,0,0,0,"07700900123",129')
    assert events(answered) == [CallAnswered()]
    assert state(line) is GsmState.ACTIVE and line.get_timer() is None  # polling stops
    assert events(urc(line, "NO CARRIER", "", 30.0)) == [CallEnded("remote hang-up", None)]
    assert state(line) is GsmState.IDLE


def test_clcc_urc_and_a_call_vanishing_from_the_list() -> None:
    line = ec25()
    dialled(line)
    assert events(urc(line, "+CLCC", '1,0,3,0,0,"07700900123",129', 0.5)) == [CallProgress()]
    line.handle_timer(0.5)
    drain(line)
    actions = ok(line, "AT+CLCC", 0.6)  # empty list: the call is gone
    assert cmds(actions) == ["AT+CEER"]
    (ended,) = events(ok(line, "AT+CEER", 0.7, "+CEER: User busy"))
    assert ended == CallEnded("NO CARRIER (User busy, cause 17)", 486)


def test_sim7600_pcm_registered_after_connect_and_released_after() -> None:
    line = GsmLine("g", profile=profile("simcom-sim7600"))
    line.dial("123", 0.0)
    assert cmds(drain(line)) == ["ATD123;"]  # no per-call setup before dialling
    ok(line, "ATD123;", 0.1)
    answered = urc(line, "+CLCC", '1,0,0,0,0,"123",129', 2.0)
    assert cmds(answered) == ["AT+CPCMREG=1"] and CallAnswered() in answered
    ok(line, "AT+CPCMREG=1", 2.1)
    ended = urc(line, "NO CARRIER", "", 9.0)
    assert cmds(ended) == ["AT+CPCMREG=0"]


@pytest.mark.parametrize(
    ("final", "status"),
    [
        ("BUSY", 486),
        ("NO ANSWER", 480),
        ("NO DIALTONE", 503),
        ("+CME ERROR: 30", 503),
        ("+CME ERROR: no network service", 503),
        ("ERROR", 503),
    ],
)
def test_dial_result_mapping(final: str, status: int) -> None:
    line = ec25()
    line.dial("123", 0.0)
    drain(line)
    ok(line, "AT+QPCMV=1,2", 0.1)
    (ended,) = events(fail(line, "ATD123;", final, 0.2))
    assert isinstance(ended, CallEnded) and ended.sip_status == status
    assert state(line) is GsmState.IDLE


@pytest.mark.parametrize(("result", "status"), [("BUSY", 486), ("NO ANSWER", 480)])
def test_dial_results_as_unsolicited_after_atd_ok(result: str, status: int) -> None:
    line = ec25()
    dialled(line)
    (ended,) = events(urc(line, result, "", 5.0))
    assert isinstance(ended, CallEnded) and ended.sip_status == status


@pytest.mark.parametrize(
    ("ceer", "status"),
    [
        ("+CEER: User busy", 486),
        ("+CEER: No answer from user (user alerted)", 480),
        ('+CEER: "CC INFO","Call rejected"', 480),
        ("+CEER: Normal call clearing", 480),
        ("+CEER: 34,No circuit/channel available", 503),
        ("+CEER: Switching equipment congestion", 503),
        ("+CEER: No cause information available", 480),
    ],
)
def test_no_carrier_before_answer_mapped_by_ceer(ceer: str, status: int) -> None:
    line = ec25()
    dialled(line)
    actions = urc(line, "NO CARRIER", "", 3.0)
    assert cmds(actions) == ["AT+CEER"] and state(line) is GsmState.RELEASING
    (ended,) = events(ok(line, "AT+CEER", 3.1, ceer))
    assert isinstance(ended, CallEnded) and ended.sip_status == status


def test_no_carrier_with_ceer_failing_is_480() -> None:
    line = ec25()
    dialled(line)
    urc(line, "NO CARRIER", "", 3.0)
    line.handle(CommandTimedOut(0, "AT+CEER"), 8.0)
    assert events(drain(line)) == [CallEnded("NO CARRIER (no cause given)", 480)]


def test_mapping_table_exact() -> None:
    assert SIP_STATUS_BY_CAUSE == {16: 480, 17: 486, 18: 480, 19: 480, 21: 480, 31: 480}
    assert failure_status("BUSY") == 486
    assert failure_status("NO ANSWER") == 480
    assert failure_status("NO DIALTONE") == 503
    assert failure_status("+CME ERROR: 30") == 503
    assert failure_status("NO CARRIER") == 480
    assert failure_status("NO CARRIER", 17) == 486
    assert failure_status("NO CARRIER", 41) == 503
    assert failure_status("NO CARRIER", 1) == 503


def test_atd_timeout_hangs_up_and_fails_503() -> None:
    line = ec25()
    line.dial("123", 0.0)
    drain(line)
    ok(line, "AT+QPCMV=1,2", 0.1)
    line.handle(CommandTimedOut(0, "ATD123;"), 30.1)
    assert cmds(drain(line)) == ["ATH"]
    (ended,) = events(ok(line, "ATH", 30.2))
    assert ended == CallEnded("modem did not answer ATD123;", 503)


def test_hang_up_before_atd_cancels_without_dialling() -> None:
    line = ec25()
    line.dial("123", 0.0)
    drain(line)
    line.hang_up(0.01)
    assert events(drain(line)) == [CallEnded("cancelled before dialling", None)]
    assert ok(line, "AT+QPCMV=1,2", 0.1) == []  # the late OK sends no ATD


def test_incoming_with_clip_answer_and_remote_hangup() -> None:
    line = ec25()
    assert urc(line, "RING", "", 0.0) == [GsmStateChanged(GsmState.RINGING)]
    offered = urc(line, "+CLIP", '"07700900123",129,"",0,"",0', 0.1)
    assert offered == [IncomingCall("07700900123", False, 129)]
    assert urc(line, "RING", "", 5.0) == []  # a repeated RING is the same call
    urc(line, "+CLIP", '"07700900123",129', 5.1)
    line.answer(6.0)
    assert cmds(drain(line)) == ["AT+QPCMV=1,2"]
    assert cmds(ok(line, "AT+QPCMV=1,2", 6.1)) == ["ATA"]
    assert events(ok(line, "ATA", 6.5)) == [CallAnswered()]
    line.send_dtmf("5", 7.0)
    assert cmds(drain(line)) == ["AT+VTS=5"]
    assert urc(line, "+QTONEDET", "35", 7.5) == [DtmfReceived("#")]
    assert urc(line, "+DTMF", "7", 7.6) == [DtmfReceived("7")]
    assert events(urc(line, "NO CARRIER", "", 20.0)) == [CallEnded("remote hang-up", None)]


def test_incoming_withheld_and_missing_clip() -> None:
    line = ec25(clip_wait=1.0)
    urc(line, "RING", "", 0.0)
    assert urc(line, "+CLIP", '"",128,"",0,"",1', 0.1) == [IncomingCall(None, True, 128)]
    quiet = ec25(clip_wait=1.0)
    urc(quiet, "RING", "", 0.0)
    quiet.handle_timer(0.9)
    assert drain(quiet) == []
    quiet.handle_timer(1.0)
    assert drain(quiet) == [IncomingCall(None, False, None)]


def test_incoming_caller_gives_up() -> None:
    line = ec25(ring_gap=7.0)
    urc(line, "RING", "", 0.0)
    urc(line, "+CLIP", '"123",129', 0.1)
    assert events(urc(line, "NO CARRIER", "", 3.0)) == [
        CallEnded("caller hung up before answer", None)
    ]
    silent = ec25(ring_gap=7.0)
    urc(silent, "RING", "", 0.0)
    urc(silent, "+CLIP", '"123",129', 0.1)
    silent.handle_timer(7.0)
    assert cmds(drain(silent)) == ["AT+CLCC"]
    assert events(ok(silent, "AT+CLCC", 7.1, '+CLCC: 1,1,4,0,0,"123",129')) == []
    silent.handle_timer(14.1)
    drain(silent)
    assert events(ok(silent, "AT+CLCC", 14.2)) == [CallEnded("caller hung up before answer", None)]


def test_reject_incoming_with_chup() -> None:
    line = GsmLine("g", profile=profile("simcom-sim800"), hangup_command="AT+CHUP")
    urc(line, "RING", "", 0.0)
    line.hang_up(1.0)
    assert cmds(drain(line)) == ["AT+CHUP"]
    assert events(ok(line, "AT+CHUP", 1.1)) == [CallEnded("local hang-up", None)]


def test_usage_errors_and_foreign_results() -> None:
    line = ec25()
    with pytest.raises(GsmUsageError):
        line.answer(0.0)
    with pytest.raises(GsmUsageError):
        line.send_dtmf("1", 0.0)
    with pytest.raises(ValueError, match="digits"):
        line.dial("12;ATH", 0.0)
    with pytest.raises(ValueError):
        line.dial("", 0.0)
    dialled(line)
    with pytest.raises(GsmUsageError):
        line.dial("456", 1.0)
    with pytest.raises(ValueError):
        line.send_dtmf("X", 1.0)
    assert ok(line, "AT+CSQ", 1.0, "+CSQ: 20,99") == []  # not ours: ignored
    with pytest.raises(ValueError):
        GsmLine("g", profile=profile("quectel-ec25"), hangup_command="ATZ")


def test_through_the_real_engine() -> None:
    """The dial failure arrives as the engine reports it from the modem's bytes."""
    engine = AtEngine()
    line = GsmLine("g", profile=profile("simcom-sim800"))
    line.dial("123", 0.0)
    for a in drain(line):
        if isinstance(a, SendAt):
            engine.send(a.command, 0.0, timeout=a.timeout)
    assert b"ATD123;" in engine.bytes_to_send()
    engine.receive(b"\r\nBUSY\r\n", 0.5)
    while (ev := engine.next_event()) is not None:
        line.handle(ev, 0.5)
    assert events(drain(line)) == [CallEnded("busy", 486)]


def test_modem_lost_ends_the_call_and_forgets_what_was_sent() -> None:
    line = ec25()
    dialled(line)
    line.handle_timer(0.5)
    assert cmds(drain(line)) == ["AT+CLCC"]
    line.modem_lost(0.7)
    assert events(drain(line)) == [CallEnded("modem lost", 503)]
    assert state(line) is GsmState.IDLE
    line.dial("123", 10.0)  # the re-attached modem: a fresh call works
    assert cmds(drain(line)) == ["AT+QPCMV=1,2"]
    assert cmds(ok(line, "AT+QPCMV=1,2", 10.1)) == ["ATD123;"]


def test_a_result_past_a_lost_command_is_still_read() -> None:
    line = ec25()
    dialled(line)
    line.handle_timer(0.5)
    drain(line)  # AT+CLCC sent but its result is lost
    line.hang_up(0.6)
    assert cmds(drain(line)) == ["ATH"]
    assert events(ok(line, "ATH", 0.7)) == [CallEnded("local hang-up", None)]


def test_clcc_disconnected_urc_ends_only_our_call() -> None:
    line = GsmLine("g", profile=profile("simcom-sim7600"))
    line.dial("123", 0.0)
    drain(line)
    ok(line, "ATD123;", 0.1)
    urc(line, "+CLCC", '2,0,0,0,0,"123",129', 1.0)  # answered: our call is index 2
    assert state(line) is GsmState.ACTIVE
    assert events(urc(line, "+CLCC", '1,1,6,0,0,"555",129', 2.0)) == []  # another call
    ended = urc(line, "+CLCC", '2,0,6,0,0,"123",129', 3.0)
    assert events(ended) == [CallEnded("remote hang-up", None)]
    assert cmds(ended) == ["AT+CPCMREG=0"]


_FUZZ_URCS = [
    ("RING", ""),
    ("+CLIP", '"123",129'),
    ("+CLIP", '"",128,,,,1'),
    ("+CLIP", 'bad"'),
    ("NO CARRIER", ""),
    ("BUSY", ""),
    ("NO ANSWER", ""),
    ("+CLCC", '1,0,3,0,0,"1",129'),
    ("+CLCC", '1,0,0,0,0,"1",129'),
    ("+CLCC", '1,1,4,0,0,"1",129'),
    ("+CLCC", '1,0,6,0,0,"1",129'),
    ("+QTONEDET", "49"),
]
_FUZZ_FINALS = ["ERROR", "+CME ERROR: 30", "BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE"]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["quectel-ec25", "simcom-sim7600", "simcom-sim800"]),
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 11), st.floats(0, 2)), max_size=60),
)
def test_fuzz_every_call_ends_exactly_once(name: str, steps: list[tuple[int, int, float]]) -> None:
    """Random intents, URCs and results in any order: no exception but the documented
    usage errors, and every departure from idle ends with exactly one CallEnded."""
    line = GsmLine("g", profile=profile(name))
    now = 0.0
    outstanding: list[str] = []
    in_call = ended = False
    for kind, pick, dt in steps:
        now += dt
        try:
            if kind == 0:
                line.dial("123", now)
            elif kind == 1:
                line.answer(now)
            elif kind == 2:
                line.hang_up(now)
            elif kind == 3:
                line.send_dtmf("5", now)
            elif kind in (4, 5):
                line.handle(Unsolicited(*_FUZZ_URCS[pick]), now)
            elif kind in (6, 7) and outstanding:
                command = outstanding.pop(0)
                lines = ("+CEER: User busy",) if command == "AT+CEER" else ()
                if pick < 7:
                    line.handle(CommandDone(0, command, "OK", lines), now)
                elif pick < 10:
                    line.handle(CommandFailed(0, command, _FUZZ_FINALS[pick % 6], ()), now)
                else:
                    line.handle(CommandTimedOut(0, command), now)
            elif kind == 8 and pick == 0:
                line.modem_lost(now)
                outstanding.clear()
            else:
                due = line.get_timer()
                if due is not None:
                    now = max(now, due)
                    line.handle_timer(now)
        except (GsmUsageError, ValueError):
            pass
        for a in drain(line):
            if isinstance(a, SendAt):
                outstanding.append(a.command)
            elif isinstance(a, CallEnded):
                assert in_call and not ended, a
                ended = True
            elif isinstance(a, GsmStateChanged):
                if a.state is GsmState.IDLE:
                    assert ended
                    in_call = False
                elif not in_call:
                    in_call, ended = True, False

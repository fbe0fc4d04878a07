"""The pure AT engine: replies vs unsolicited codes, prompts, timeouts, split bytes, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.modem.at import (
    CTRL_Z,
    ESC,
    MAX_EVENTS,
    MAX_LINE,
    MAX_REPLY_LINES,
    PDU_LINE_WAIT,
    QUIET_AFTER_TIMEOUT,
    AtEngine,
    AtEvent,
    CommandDone,
    CommandFailed,
    CommandTimedOut,
    Unsolicited,
)


def drain(engine: AtEngine) -> list[AtEvent]:
    events: list[AtEvent] = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    return events


def run(command: str, reply: bytes, **kw: object) -> tuple[list[AtEvent], AtEngine]:
    engine = AtEngine()
    engine.send(command, 0.0, **kw)  # type: ignore[arg-type]
    assert engine.bytes_to_send() == command.encode() + b"\r"
    engine.receive(reply, 0.1)
    return drain(engine), engine


def test_reply_lines_and_ok_with_echo_ignored() -> None:
    events, _ = run("ATI", b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n")
    assert events == [
        CommandDone(1, "ATI", "OK", ("Quectel", "EC25", "Revision: EC25EFAR06A06M4G"))
    ]


def test_urcs_in_the_middle_of_a_reply_are_kept_apart() -> None:
    events, _ = run(
        "AT+CSQ",
        b'\r\n+CSQ: 21,99\r\n\r\nRING\r\n\r\n+CMTI: "SM",3\r\n\r\n+CLIP: "+4915112345",145,,,,0'
        b"\r\n^RSSI:12\r\n\r\nOK\r\n",
    )
    assert events == [
        Unsolicited("RING", ""),
        Unsolicited("+CMTI", '"SM",3'),
        Unsolicited("+CLIP", '"+4915112345",145,,,,0'),
        Unsolicited("^RSSI", "12"),
        CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 21,99",)),
    ]


def test_creg_query_reply_vs_unsolicited_creg() -> None:
    # The query's answer has n,stat; the network's URC (n=1) is stat alone, (n=2) quoted lac.
    events, _ = run(
        "AT+CREG?",
        b'\r\n+CREG: 1\r\n+CREG: 2,1,"1A2B","01C3D4E5",7\r\n+CREG: 5,"1A2B","0101",7\r\n'
        b"\r\nOK\r\n",
    )
    assert events == [
        Unsolicited("+CREG", "1"),
        Unsolicited("+CREG", '5,"1A2B","0101",7'),
        CommandDone(1, "AT+CREG?", "OK", ('+CREG: 2,1,"1A2B","01C3D4E5",7',)),
    ]


def test_a_set_command_does_not_claim_its_urc() -> None:
    events, _ = run("AT+CREG=2", b'\r\n+CREG: 1,"1A2B","01C3D4E5"\r\n\r\nOK\r\n')
    assert events == [
        Unsolicited("+CREG", '1,"1A2B","01C3D4E5"'),
        CommandDone(1, "AT+CREG=2", "OK", ()),
    ]


def test_a_query_gets_one_line_of_a_name_the_modem_also_sends_alone() -> None:
    events, _ = run("AT+CPIN?", b"\r\n+CPIN: SIM PIN\r\n+CPIN: READY\r\n\r\nOK\r\n")
    assert events == [
        Unsolicited("+CPIN", "READY"),
        CommandDone(1, "AT+CPIN?", "OK", ("+CPIN: SIM PIN",)),
    ]


def test_compound_command_queries_each_name() -> None:
    events, _ = run(
        "AT+CEREG?;+CGREG?", b"\r\n+CEREG: 0,1\r\n+CGREG: 0,5\r\n+CREG: 1\r\n\r\nOK\r\n"
    )
    assert events == [
        Unsolicited("+CREG", "1"),
        CommandDone(1, "AT+CEREG?;+CGREG?", "OK", ("+CEREG: 0,1", "+CGREG: 0,5")),
    ]


def test_clip_query_vs_clip_urc() -> None:
    events, _ = run("AT+CLIP?", b'\r\n+CLIP: "+4930123",145,,,,0\r\n+CLIP: 1,1\r\n\r\nOK\r\n')
    assert events == [
        Unsolicited("+CLIP", '"+4930123",145,,,,0'),
        CommandDone(1, "AT+CLIP?", "OK", ("+CLIP: 1,1",)),
    ]


def test_clcc_lines_answer_at_clcc_and_are_urcs_otherwise() -> None:
    events, _ = run(
        "AT+CLCC",
        b'\r\n+CLCC: 1,0,0,0,0,"123",129\r\n+CLCC: 2,1,5,0,0,"456",129\r\n\r\nOK\r\n',
    )
    assert events == [
        CommandDone(
            1, "AT+CLCC", "OK", ('+CLCC: 1,0,0,0,0,"123",129', '+CLCC: 2,1,5,0,0,"456",129')
        )
    ]
    events, _ = run("AT+CSQ", b'\r\n+CLCC: 1,0,3,0,0,"123",129\r\n+CSQ: 9,99\r\n\r\nOK\r\n')
    assert events == [
        Unsolicited("+CLCC", '1,0,3,0,0,"123",129'),
        CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 9,99",)),
    ]


@pytest.mark.parametrize(
    "final", ["ERROR", "+CME ERROR: 10", "+CMS ERROR: 500", "+CME ERROR: SIM PIN required"]
)
def test_error_finals(final: str) -> None:
    events, _ = run("AT+CMGR=1", b"\r\n" + final.encode() + b"\r\n")
    assert events == [CommandFailed(1, "AT+CMGR=1", final, ())]


@pytest.mark.parametrize("final", ["NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"])
def test_dial_failures_end_atd(final: str) -> None:
    events, _ = run("ATD+4915112345;", b"\r\n" + final.encode() + b"\r\n")
    assert events == [CommandFailed(1, "ATD+4915112345;", final, ())]


def test_connect_ends_a_command() -> None:
    events, _ = run("ATA", b"\r\nCONNECT 9600\r\n")
    assert events == [CommandDone(1, "ATA", "CONNECT 9600", ())]


@pytest.mark.parametrize("code", ["NO CARRIER", "BUSY", "NO ANSWER"])
def test_call_results_outside_a_dial_are_unsolicited(code: str) -> None:
    events, _ = run("AT+CSQ", b"\r\n" + code.encode() + b"\r\n+CSQ: 9,99\r\n\r\nOK\r\n")
    assert events == [Unsolicited(code, ""), CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 9,99",))]
    engine = AtEngine()
    engine.receive(b"\r\n" + code.encode() + b"\r\n", 0.0)
    assert drain(engine) == [Unsolicited(code, "")]


def test_commands_go_out_one_at_a_time() -> None:
    engine = AtEngine()
    a = engine.send("AT", 0.0)
    b = engine.send("AT+CSQ", 0.0)
    assert engine.bytes_to_send() == b"AT\r"
    engine.receive(b"\r\nO", 0.1)
    assert engine.bytes_to_send() == b""
    engine.receive(b"K\r\n", 0.2)
    assert engine.bytes_to_send() == b"AT+CSQ\r"
    engine.receive(b"\r\n+CSQ: 1,2\r\n\r\nOK\r\n", 0.3)
    assert drain(engine) == [
        CommandDone(a, "AT", "OK", ()),
        CommandDone(b, "AT+CSQ", "OK", ("+CSQ: 1,2",)),
    ]
    assert not engine.busy


def test_lines_after_a_final_in_the_same_read_are_not_the_next_commands_reply() -> None:
    # The modem sent them before it could have seen the next command.
    engine = AtEngine()
    engine.send("AT", 0.0)
    engine.send("AT+CPIN?", 0.0)
    engine.bytes_to_send()
    engine.receive(b"\r\nOK\r\n\r\n+CPIN: READY\r\n", 0.1)
    assert engine.bytes_to_send() == b"AT+CPIN?\r"
    engine.receive(b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n", 0.2)
    assert drain(engine) == [
        CommandDone(1, "AT", "OK", ()),
        Unsolicited("+CPIN", "READY"),
        CommandDone(2, "AT+CPIN?", "OK", ("+CPIN: SIM PIN",)),
    ]


def test_timeout_then_quiet_period_swallows_the_late_final() -> None:
    engine = AtEngine()
    engine.send("AT+COPS=?", 10.0, timeout=2.0)
    engine.send("AT+CSQ", 10.0)
    assert engine.bytes_to_send() == b"AT+COPS=?\r"
    assert engine.get_timer() == 12.0
    engine.handle_timer(11.9)
    assert drain(engine) == []
    engine.handle_timer(12.0)
    assert drain(engine) == [CommandTimedOut(1, "AT+COPS=?")]
    assert engine.bytes_to_send() == b""  # held for the quiet period
    assert engine.get_timer() == 12.0 + QUIET_AFTER_TIMEOUT
    engine.receive(b"\r\nOK\r\n", 12.1)  # the late final of the command that timed out
    assert drain(engine) == []
    assert engine.counters["stray_finals"] == 1
    engine.handle_timer(12.0 + QUIET_AFTER_TIMEOUT)
    assert engine.bytes_to_send() == b"AT+CSQ\r"
    assert engine.get_timer() == 12.0 + QUIET_AFTER_TIMEOUT + 5.0
    engine.receive(b"\r\n+CSQ: 5,99\r\n\r\nOK\r\n", 13.0)
    assert drain(engine) == [CommandDone(2, "AT+CSQ", "OK", ("+CSQ: 5,99",))]
    assert engine.get_timer() is None
    assert engine.counters["timeouts"] == 1


def test_cmgs_body_waits_for_the_prompt_then_ctrl_z() -> None:
    engine = AtEngine()
    pdu = b"0011000B919461281403F10000AA05E8329BFD06"
    tag = engine.send("AT+CMGS=19", 0.0, timeout=60.0, body=pdu)
    assert engine.bytes_to_send() == b"AT+CMGS=19\r"
    engine.receive(b"AT+CMGS=19\r\r\n>", 0.1)  # prompt split: '>' now, ' ' later
    assert engine.bytes_to_send() == pdu + CTRL_Z
    engine.receive(b" " + pdu + CTRL_Z + b"\r\n", 0.2)  # the modem echoes what we typed
    engine.receive(b"\r\n+CMGS: 42\r\n\r\nOK\r\n", 3.0)
    assert drain(engine) == [CommandDone(tag, "AT+CMGS=19", "OK", ("+CMGS: 42",))]
    assert engine.counters["control_bytes"] == 0


def test_cmgs_error_before_prompt_sends_no_body() -> None:
    events, engine = run("AT+CMGS=19", b"\r\n+CMS ERROR: 304\r\n", body=b"00AA")
    assert events == [CommandFailed(1, "AT+CMGS=19", "+CMS ERROR: 304", ())]
    assert engine.bytes_to_send() == b""


def test_prompt_without_body_is_cancelled_with_esc() -> None:
    events, engine = run("AT+CMGW=19", b"\r\n> ")
    assert engine.bytes_to_send() == ESC
    engine.receive(b"\r\nOK\r\n", 0.2)
    assert drain(engine) == [CommandDone(1, "AT+CMGW=19", "OK", ())]


def test_timeout_waiting_for_prompt_sends_esc() -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=19", 0.0, timeout=1.0, body=b"00AA")
    engine.bytes_to_send()
    engine.handle_timer(1.0)
    assert drain(engine) == [CommandTimedOut(1, "AT+CMGS=19")]
    assert engine.bytes_to_send() == ESC


def test_cmt_carries_its_pdu_line_even_mid_reply() -> None:
    pdu = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
    events, _ = run(
        "AT+CSQ",
        b"\r\n+CSQ: 9,99\r\n\r\n+CMT: ,24\r\n" + pdu.encode() + b"\r\n\r\nOK\r\n",
    )
    assert events == [
        Unsolicited("+CMT", ",24", (pdu,)),
        CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 9,99",)),
    ]


def test_cds_pdu_and_missing_pdu_line_reported_at_its_deadline() -> None:
    engine = AtEngine()
    engine.receive(b"\r\n+CDS: 25\r\n0791", 5.0)
    engine.receive(b"4411\r\n", 5.1)
    assert drain(engine) == [Unsolicited("+CDS", "25", ("07914411",))]
    engine.receive(b"\r\n+CMT: ,24\r\n", 6.0)
    assert drain(engine) == []
    assert engine.get_timer() == 6.0 + PDU_LINE_WAIT
    engine.handle_timer(6.0 + PDU_LINE_WAIT)
    assert drain(engine) == [Unsolicited("+CMT", ",24")]


def test_a_ussd_menu_broken_over_lines_is_one_urc() -> None:
    engine = AtEngine()
    engine.send('AT+CUSD=1,"*100#",15', 0.0)
    engine.bytes_to_send()
    engine.receive(
        b'\r\nOK\r\n\r\n+CUSD: 1,"Balance 5.00 EUR\r\n1 Top up\r\n2 Exit",15\r\n', 0.5
    )
    assert drain(engine) == [
        CommandDone(1, 'AT+CUSD=1,"*100#",15', "OK", ()),
        Unsolicited("+CUSD", '1,"Balance 5.00 EUR\n1 Top up\n2 Exit",15'),
    ]
    assert engine.get_timer() is None


def test_a_ussd_text_that_never_closes_does_not_swallow_a_final() -> None:
    engine = AtEngine()
    engine.send("AT+CSQ", 0.0)
    engine.receive(b'\r\n+CUSD: 0,"cut off\r\nOK\r\n', 0.1)
    assert drain(engine) == [
        Unsolicited("+CUSD", '0,"cut off'),
        CommandDone(1, "AT+CSQ", "OK", ()),
    ]
    engine.receive(b'\r\n+CUSD: 0,"never closed\r\n', 1.0)
    engine.handle_timer(1.0 + PDU_LINE_WAIT)
    assert drain(engine) == [Unsolicited("+CUSD", '0,"never closed')]


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"])
def test_line_ending_variants(eol: bytes) -> None:
    reply = eol.join([b"", b"+CSQ: 3,99", b"RING", b"OK", b""])
    events, _ = run("AT+CSQ", reply)
    assert events == [Unsolicited("RING", ""), CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 3,99",))]


# A conversation with everything in it: echo, intermediate lines, URCs in the middle of a
# reply, a PDU URC, a prompt and body, mixed line endings. Each reply is what the modem
# sends after it has read our command, so a step's bytes are fed only after the engine wrote
# that step's command.
BODY = b"0011000B919461281403F10000AA05E8329BFD06"
COMMANDS: list[tuple[str, bytes | None]] = [
    ("AT+CMGL=4", None),
    ("AT+CREG?", None),
    ("AT+CMGS=19", BODY),
]
# (what the engine must have written before the modem sends this, what the modem sends)
STEPS: list[tuple[bytes, bytes]] = [
    (
        b"AT+CMGL=4\r",
        b"AT+CMGL=4\r\r\n+CMGL: 1,1,,24\r\n07911326040000F0\r\n"
        b'\r\nRING\r\n\r\n+CLIP: "+4930123",145,,,,0\r\n'
        b"+CMGL: 2,1,,24\r\n07911326040000F1\r\n\r\nOK\r\n",
    ),
    (
        b"AT+CREG?\r",
        b"AT+CREG?\r\n+CREG: 2\n+CREG: 0,1\r\n+CMT: ,24\r\n0791AABB\r\n\r\nOK\r\n",
    ),
    (b"AT+CMGS=19\r", b"AT+CMGS=19\r\r\n> "),
    (
        BODY + CTRL_Z,
        b" " + BODY + b"\x1a\r\n\r\n+CMGS: 7\r\n\r\nOK\r\n\r\nNO CARRIER\r\n",
    ),
]
EXPECTED: list[AtEvent] = [
    Unsolicited("RING", ""),
    Unsolicited("+CLIP", '"+4930123",145,,,,0'),
    CommandDone(
        1,
        "AT+CMGL=4",
        "OK",
        ("+CMGL: 1,1,,24", "07911326040000F0", "+CMGL: 2,1,,24", "07911326040000F1"),
    ),
    Unsolicited("+CREG", "2"),
    Unsolicited("+CMT", ",24", ("0791AABB",)),
    CommandDone(2, "AT+CREG?", "OK", ("+CREG: 0,1",)),
    CommandDone(3, "AT+CMGS=19", "OK", ("+CMGS: 7",)),
    Unsolicited("NO CARRIER", ""),
]
WRITTEN = b"AT+CMGL=4\rAT+CREG?\rAT+CMGS=19\r" + BODY + CTRL_Z


def play(cuts: list[list[int]]) -> tuple[list[AtEvent], bytes]:
    """Run STEPS, splitting step i's bytes at the offsets cuts[i]."""
    engine = AtEngine()
    for command, body in COMMANDS:
        engine.send(command, 0.0, body=body)
    written = bytearray(engine.bytes_to_send())
    for (before, reply), points in zip(STEPS, cuts, strict=True):
        assert written.endswith(before)
        edges = sorted({p for p in points if 0 < p < len(reply)})
        for a, b in zip([0, *edges], [*edges, len(reply)], strict=True):
            engine.receive(reply[a:b], 0.0)
            written += engine.bytes_to_send()
    return drain(engine), bytes(written)


def test_split_at_every_offset_gives_the_same_events() -> None:
    assert play([[]] * len(STEPS)) == (EXPECTED, WRITTEN)
    for step, (_, reply) in enumerate(STEPS):
        for cut in range(1, len(reply)):
            cuts: list[list[int]] = [[] for _ in STEPS]
            cuts[step] = [cut]
            assert play(cuts) == (EXPECTED, WRITTEN), (step, cut)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=len(STEPS[0][1])), max_size=40),
        min_size=len(STEPS),
        max_size=len(STEPS),
    )
)
def test_split_anywhere_many_times_gives_the_same_events(cuts: list[list[int]]) -> None:
    assert play(cuts) == (EXPECTED, WRITTEN)


def test_an_overlong_line_is_dropped_and_counted_without_growing() -> None:
    engine = AtEngine()
    engine.send("AT+CSQ", 0.0)
    for _ in range(300):  # 300 KiB of garbage without a line end
        engine.receive(b"x" * 1024, 0.0)
        assert len(engine._partial) <= MAX_LINE + 1024
    engine.receive(b"tail of the garbage\r\n+CSQ: 1,2\r\n\r\nOK\r\n", 0.0)
    assert drain(engine) == [CommandDone(1, "AT+CSQ", "OK", ("+CSQ: 1,2",))]
    assert engine.counters["lines_too_long"] >= 1
    # A whole over-long line inside one read is dropped too, not taken as a reply line.
    engine.send("AT+CSQ", 0.0)
    engine.receive(b"\r\n" + b"y" * (MAX_LINE + 1) + b"\r\n+CSQ: 3,4\r\nOK\r\n", 0.0)
    assert drain(engine) == [CommandDone(2, "AT+CSQ", "OK", ("+CSQ: 3,4",))]


def test_reply_lines_and_events_are_bounded() -> None:
    engine = AtEngine()
    engine.send("AT+CMGL=4", 0.0)
    engine.receive(b"x\r\n" * (MAX_REPLY_LINES + 10) + b"OK\r\n", 0.0)
    (done,) = drain(engine)
    assert isinstance(done, CommandDone) and len(done.lines) == MAX_REPLY_LINES
    assert engine.counters["reply_lines_dropped"] == 10
    engine.receive(b"RING\r\n" * (MAX_EVENTS + 5), 0.0)
    assert len(drain(engine)) == MAX_EVENTS
    assert engine.counters["events_dropped"] == 5


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_any_bytes_are_survived_and_kept_bounded(chunks: list[bytes]) -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=5", 0.0, body=b"00")
    engine.send("ATD123;", 0.0)
    now = 0.0
    for chunk in chunks:
        now += 0.5
        engine.receive(chunk, now)
        engine.handle_timer(now)
        assert len(engine._partial) <= MAX_LINE
        for event in drain(engine):
            assert isinstance(event, CommandDone | CommandFailed | CommandTimedOut | Unsolicited)
        engine.bytes_to_send()
    for _ in range(6):  # every timer runs out: both commands end, one way or another
        deadline = engine.get_timer()
        if deadline is None:
            break
        engine.handle_timer(deadline)
    assert not engine.busy
    assert engine.get_timer() is None


def test_control_bytes_are_stripped_and_counted() -> None:
    events, engine = run("AT", b"\x00\r\n\x07O\x00K\r\n")
    assert events == [CommandDone(1, "AT", "OK", ())]
    assert engine.counters["control_bytes"] == 3


@pytest.mark.parametrize("bad", ["", "AT\rAT", "AT\nAT", "AT\x1a"])
def test_bad_commands_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="AT command"):
        AtEngine().send(bad, 0.0)
    with pytest.raises(ValueError, match="timeout"):
        AtEngine().send("AT", 0.0, timeout=0)
    with pytest.raises(ValueError, match="body"):
        AtEngine().send("AT+CMGS=3", 0.0, body=b"00\x1a")

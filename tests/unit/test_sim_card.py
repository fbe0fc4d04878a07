"""SIM PIN logic: the configured PIN is sent at most once per SIM and PIN, PUK is only reported."""

from __future__ import annotations

import pytest

from gateway.modem.at import AtEngine
from gateway.modem.responses import PinRetries
from gateway.modem.sim_card import PinMemory, SendCommand, SimCard, SimStateChanged, SimStatus

QPINC = 'AT+QPINC="SC"'


def drain(sim: SimCard) -> list[SendCommand | SimStateChanged]:
    out = []
    while (a := sim.next_action()) is not None:
        out.append(a)
    return out


def sent(actions: list[SendCommand | SimStateChanged]) -> list[str]:
    return [a.command for a in actions if isinstance(a, SendCommand)]


def final(actions: list[SendCommand | SimStateChanged]) -> SimStateChanged:
    reports = [a for a in actions if isinstance(a, SimStateChanged)]
    assert len(reports) == 1, actions
    return reports[0]


def make(pin: str | None, memory: PinMemory | None = None, **kw: object) -> SimCard:
    return SimCard(
        pin=pin,
        memory=memory if memory is not None else PinMemory(),
        imei="867962041234567",
        iccid="89441000301234567890",
        pin_retries_command=QPINC,
        **kw,  # type: ignore[arg-type]
    )


def test_ready_sim_needs_nothing() -> None:
    sim = make("1234")
    sim.start(0.0)
    assert sent(drain(sim)) == ["AT+CPIN?"]
    sim.command_done("AT+CPIN?", ("+CPIN: READY",), 0.1)
    report = final(drain(sim))
    assert report.status is SimStatus.READY and sim.status is SimStatus.READY


def test_pin_sent_once_and_accepted() -> None:
    sim = make("1234")
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    assert sent(drain(sim)) == [QPINC]
    sim.command_done(QPINC, ('+QPINC: "SC",3,10',), 0.2)
    actions = drain(sim)
    assert sent(actions) == ['AT+CPIN="1234"']
    assert isinstance(actions[0], SendCommand) and actions[0].sensitive
    assert "1234" not in repr(actions[0])
    sim.command_done('AT+CPIN="1234"', (), 0.3)
    assert sent(drain(sim)) == ["AT+CPIN?"]
    sim.command_done("AT+CPIN?", ("+CPIN: READY",), 0.4)
    assert final(drain(sim)).status is SimStatus.READY


def _wrong_pin_once(sim: SimCard) -> SimStateChanged:
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    drain(sim)
    sim.command_done(QPINC, ('+QPINC: "SC",3,10',), 0.2)
    assert sent(drain(sim)) == ['AT+CPIN="1111"']
    sim.command_failed('AT+CPIN="1111"', "+CME ERROR: incorrect password", (), 0.3)
    assert sent(drain(sim)) == [QPINC]
    sim.command_done(QPINC, ('+QPINC: "SC",2,10',), 0.4)
    return final(drain(sim))


def test_wrong_pin_never_retried_across_reprobe() -> None:
    memory = PinMemory()
    report = _wrong_pin_once(make("1111", memory))
    assert report.status is SimStatus.PIN_REJECTED
    assert report.message.startswith(
        "SIM PIN rejected; not retried to protect the SIM (2 tries left)"
    )
    assert report.tries == PinRetries(2, 10)
    # The modem is re-plugged and re-probed: same SIM, same configured PIN.
    again = make("1111", memory)
    again.start(10.0)
    drain(again)
    again.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 10.1)
    assert sent(drain(again)) == [QPINC]
    again.command_done(QPINC, ('+QPINC: "SC",2,10',), 10.2)
    actions = drain(again)
    assert sent(actions) == []  # no AT+CPIN="1111" a second time
    assert final(actions).status is SimStatus.PIN_REJECTED


def test_changed_pin_in_config_is_tried() -> None:
    memory = PinMemory()
    _wrong_pin_once(make("1111", memory))
    fixed = make("2222", memory)
    fixed.start(0.0)
    drain(fixed)
    fixed.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    drain(fixed)
    fixed.command_done(QPINC, ('+QPINC: "SC",2,10',), 0.2)
    assert sent(drain(fixed)) == ['AT+CPIN="2222"']


def test_still_sim_pin_after_ok_counts_as_rejected() -> None:
    memory = PinMemory()
    sim = SimCard(pin="1234", memory=memory, imei="867962041234567")  # no retries command
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    assert sent(drain(sim)) == ['AT+CPIN="1234"']
    sim.command_done('AT+CPIN="1234"', (), 0.2)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.3)
    report = final(drain(sim))
    assert report.status is SimStatus.PIN_REJECTED and "tries left unknown" in report.message
    assert memory.was_rejected(PinMemory.key("867962041234567", None), "1234")


def test_no_answer_to_pin_entry_is_not_retried() -> None:
    memory = PinMemory()
    sim = SimCard(pin="1234", memory=memory, iccid="8944100030123456789")
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    drain(sim)
    sim.command_timed_out('AT+CPIN="1234"', 5.2)
    assert final(drain(sim)).status is SimStatus.PIN_REJECTED


def test_puk_reported_never_tried() -> None:
    sim = make("1234")
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PUK",), 0.1)
    assert sent(drain(sim)) == [QPINC]
    sim.command_done(QPINC, ('+QPINC: "SC",0,9',), 0.2)
    actions = drain(sim)
    assert sent(actions) == []
    report = final(actions)
    assert report.status is SimStatus.PUK_REQUIRED
    assert report.message.startswith("SIM PUK required (9 tries left)")


def test_zero_pin_tries_left_is_puk_without_sending() -> None:
    sim = make("1234")
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    drain(sim)
    sim.command_done(QPINC, ('+QPINC: "SC",0,10',), 0.2)
    actions = drain(sim)
    assert sent(actions) == [] and final(actions).status is SimStatus.PUK_REQUIRED


def test_no_pin_configured() -> None:
    sim = make(None)
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", ("+CPIN: SIM PIN",), 0.1)
    actions = drain(sim)
    assert sent(actions) == []
    assert final(actions).message == "SIM PIN required but no PIN is configured"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (("+CPIN: NOT INSERTED",), SimStatus.NOT_INSERTED),
        (("+CPIN: PH-SIM PIN",), SimStatus.LOCKED),
        (("+CPIN: WHATEVER",), SimStatus.ERROR),
        ((), SimStatus.ERROR),
    ],
)
def test_other_states(answer: tuple[str, ...], status: SimStatus) -> None:
    sim = make("1234")
    sim.start(0.0)
    drain(sim)
    sim.command_done("AT+CPIN?", answer, 0.1)
    assert final(drain(sim)).status is status


def test_cpin_errors_and_busy_sim() -> None:
    sim = make("1234")
    sim.start(0.0)
    drain(sim)
    sim.command_failed("AT+CPIN?", "+CME ERROR: SIM not inserted", (), 0.1)
    assert final(drain(sim)).status is SimStatus.NOT_INSERTED
    busy = make("1234", busy_retry=1.0, max_busy_polls=1)
    busy.start(0.0)
    drain(busy)
    busy.command_failed("AT+CPIN?", "+CME ERROR: 14", (), 0.1)
    assert drain(busy) == [] and busy.get_timer() == pytest.approx(1.1)
    busy.handle_timer(1.0)
    assert drain(busy) == []
    busy.handle_timer(1.1)
    assert sent(drain(busy)) == ["AT+CPIN?"]
    busy.command_failed("AT+CPIN?", "+CME ERROR: SIM busy", (), 1.2)
    assert final(drain(busy)).status is SimStatus.ERROR
    late = make("1234")
    late.start(0.0)
    drain(late)
    late.command_done("AT+CGSN", ("+CPIN: READY",), 0.1)  # not ours: ignored
    assert drain(late) == []
    late.command_timed_out("AT+CPIN?", 5.0)
    assert final(drain(late)).status is SimStatus.ERROR


def test_bad_pin_in_config_refused() -> None:
    with pytest.raises(ValueError, match="4 to 8 digits"):
        make("12")


def test_wrong_pin_through_the_real_engine() -> None:
    """The refusal arrives as the AT engine reports it from the modem's bytes."""
    engine = AtEngine()
    memory = PinMemory()
    sim = SimCard(pin="1111", memory=memory, iccid="89441000301234567890")

    def pump(reply: bytes, now: float) -> list[SendCommand | SimStateChanged]:
        engine.receive(reply, now)
        while (ev := engine.next_event()) is not None:
            sim.handle(ev, now)
        out = drain(sim)
        for a in out:
            if isinstance(a, SendCommand):
                engine.send(a.command, now, timeout=a.timeout)
        engine.bytes_to_send()
        return out

    sim.start(0.0)
    for a in drain(sim):
        assert isinstance(a, SendCommand)
        engine.send(a.command, 0.0)
    assert engine.bytes_to_send() == b"AT+CPIN?\r"
    assert sent(pump(b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n", 0.1)) == ['AT+CPIN="1111"']
    report = final(pump(b"\r\n+CME ERROR: incorrect password\r\n", 0.2))
    assert report.status is SimStatus.PIN_REJECTED
    assert memory.was_rejected(PinMemory.key(None, "89441000301234567890"), "1111")

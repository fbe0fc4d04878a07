"""The GSM line and SIM check driven through the real AT engine against the hal/sim modem's
AT interpreter, in process (bytes both ways, a fake clock): the pure machines meet real
framing, echo, URC ordering and the emulated modules' own wording."""

from __future__ import annotations

from gateway.lines.gsm import (
    CallAnswered,
    CallEnded,
    CallProgress,
    GsmLine,
    GsmState,
    IncomingCall,
    SendAt,
)
from gateway.modem.at import AtEngine
from gateway.modem.profiles import profile
from gateway.modem.sim_card import PinMemory, SendCommand, SimCard, SimStateChanged, SimStatus
from hal.sim.modem_at import ModemCore
from hal.sim.modem_dialects import DIALECTS


class Wire:
    """An AtEngine joined to a ModemCore; `pump` moves bytes until both are quiet."""

    def __init__(self, dialect: str, **kw: object) -> None:
        self.core = ModemCore(DIALECTS[dialect], **kw)  # type: ignore[arg-type]
        self.engine = AtEngine()
        self.now = 0.0
        self.line: GsmLine | None = None
        self.sim: SimCard | None = None
        self.seen: list[object] = []
        self.engine_events: list[object] = []

    def send(self, command: str) -> None:
        self.engine.send(command, self.now)

    def pump(self, seconds: float = 0.0) -> None:
        end = self.now + seconds
        while True:
            moved = False
            out = self.engine.bytes_to_send()
            if out:
                self.core.receive(out, self.now)
                moved = True
            if self.core.out:
                data = bytes(self.core.out)
                self.core.out.clear()
                self.engine.receive(data, self.now)
                moved = True
            while (ev := self.engine.next_event()) is not None:
                moved = True
                self.engine_events.append(ev)
                if self.line is not None:
                    self.line.handle(ev, self.now)
                if self.sim is not None:
                    self.sim.handle(ev, self.now)
            for machine in (self.line, self.sim):
                if machine is None:
                    continue
                while (a := machine.next_action()) is not None:
                    moved = True
                    self.seen.append(a)
                    if isinstance(a, SendAt | SendCommand):
                        self.engine.send(a.command, self.now, timeout=a.timeout)
            if moved:
                continue
            timers = [
                t
                for t in (
                    self.engine.get_timer(),
                    self.core.get_timer(),
                    self.line.get_timer() if self.line else None,
                    self.sim.get_timer() if self.sim else None,
                )
                if t is not None and t <= end
            ]
            if not timers:
                self.now = end
                return
            self.now = max(self.now, min(timers))
            self.engine.handle_timer(self.now)
            self.core.handle_timer(self.now)
            if self.line:
                self.line.handle_timer(self.now)
            if self.sim:
                self.sim.handle_timer(self.now)

    def events(self) -> list[object]:
        out = [a for a in self.seen if not isinstance(a, SendAt | SendCommand)]
        self.seen.clear()
        return [a for a in out if type(a).__name__ != "GsmStateChanged"]


def ec25_line() -> Wire:
    w = Wire("ec25")
    for command in profile("quectel-ec25").init_commands:
        w.send(command)
    w.pump(1.0)
    w.line = GsmLine("gsm1", profile=profile("quectel-ec25"), audio="serial-pcm")
    return w


def test_outgoing_call_alerting_answered_remote_hangup() -> None:
    w = ec25_line()
    assert w.line is not None
    w.line.dial("+4930123456", w.now)
    w.pump(1.0)
    assert w.core.settings.pcm == (1, 0)  # the voice setup reached the module
    assert [c.state for c in w.core.calls] == ["dialing"]
    w.core.remote_alerting()
    w.pump(1.0)
    assert w.events() == [CallProgress("alerting")]
    w.core.remote_answer()
    w.pump(1.0)
    assert w.events() == [CallAnswered()]
    assert w.line.state is GsmState.ACTIVE and w.core.serial_pcm_on()
    w.line.send_dtmf("7", w.now)
    w.pump(0.5)
    assert w.core.dtmf_sent == ["7"]
    w.core.remote_hangup()
    w.pump(0.5)
    assert w.events() == [CallEnded("remote hang-up", None)]
    # The module forgets its PCM routing (as real firmware can): the next call re-sends it.
    w.core.settings.pcm = (0, 0)
    w.line.dial("+4930123456", w.now)
    w.pump(1.0)
    assert w.core.settings.pcm == (1, 0)


def test_busy_and_rejected_map_to_sip_statuses() -> None:
    w = ec25_line()
    assert w.line is not None
    w.line.dial("0301234", w.now)
    w.pump(1.0)
    w.core.remote_reject("BUSY")
    w.pump(1.0)
    assert [e for e in w.events() if isinstance(e, CallEnded)][0].sip_status == 486
    w.line.dial("0301234", w.now)
    w.pump(1.0)
    w.core.remote_reject("NO CARRIER")  # the emulator's +CEER then says "Call rejected"
    w.pump(1.0)
    (ended,) = [e for e in w.events() if isinstance(e, CallEnded)]
    assert ended.sip_status == 480 and "Call rejected" in ended.cause


def test_incoming_call_with_caller_id_answered() -> None:
    w = ec25_line()
    assert w.line is not None
    w.core.incoming_call("+4915112345678")
    w.pump(0.5)
    assert w.events() == [IncomingCall("+4915112345678", False, 145)]
    w.pump(5.0)  # more RINGs: still one call
    assert w.events() == []
    w.line.answer(w.now)
    w.pump(1.0)
    assert w.events() == [CallAnswered()]
    assert [c.state for c in w.core.calls] == ["active"]
    w.line.hang_up(w.now)
    w.pump(1.0)
    assert w.events() == [CallEnded("local hang-up", None)] and w.core.calls == []


def test_caller_gives_up_before_answer() -> None:
    w = ec25_line()
    assert w.line is not None
    w.core.incoming_call("+4915112345678")
    w.pump(0.5)
    w.events()
    w.core.caller_gave_up()
    w.pump(0.5)
    assert w.events() == [CallEnded("caller hung up before answer", None)]


def test_wrong_pin_tried_once_even_across_a_reprobe() -> None:
    w = Wire("ec25", pin="1234")
    w.send("AT+CMEE=2")
    w.pump(0.5)
    memory = PinMemory()
    for _probe in range(2):
        w.sim = SimCard(
            pin="9999", memory=memory, iccid=w.core.iccid, pin_retries_command='AT+QPINC="SC"'
        )
        w.sim.start(w.now)
        w.pump(3.0)
        (report,) = [e for e in w.events() if isinstance(e, SimStateChanged)]
        assert report.status is SimStatus.PIN_REJECTED
        assert w.core.pin_attempts == 2  # one try used, and only one
    assert "not retried to protect the SIM (2 tries left)" in report.message
    w.sim = SimCard(pin="1234", memory=memory, iccid=w.core.iccid)  # the config is fixed
    w.sim.start(w.now)
    w.pump(3.0)
    (report,) = [e for e in w.events() if isinstance(e, SimStateChanged)]
    assert report.status is SimStatus.READY


def test_puk_reported_from_the_module() -> None:
    w = Wire("sim7600", pin="1234")
    w.core.pin_attempts = 0
    w.core.sim_state = "SIM PUK"
    w.sim = SimCard(pin="1234", memory=PinMemory(), pin_retries_command="AT+SPIC")
    w.sim.start(w.now)
    w.pump(3.0)
    (report,) = [e for e in w.events() if isinstance(e, SimStateChanged)]
    assert report.status is SimStatus.PUK_REQUIRED and "10 tries left" in report.message
    assert w.core.puk_attempts == 10 and w.core.sim_state == "SIM PUK"


def _ask(dialect: str, commands: list[str]) -> dict[str, tuple[str, ...]]:
    """Each command's information lines, as the engine hands them over."""
    from gateway.modem.at import CommandDone

    w = Wire(dialect)
    for command in ["ATE0", *commands]:
        w.send(command)
    w.pump(5.0)
    replies: dict[str, tuple[str, ...]] = {}
    for ev in w.engine_events:
        assert isinstance(ev, CommandDone), ev
        replies[ev.command] = ev.lines
    return replies


def test_status_answers_of_every_dialect_parse() -> None:
    from gateway.modem import responses as r

    ec25 = profile("quectel-ec25")
    got = _ask(
        "ec25",
        ["AT+CREG=2", "AT+CREG?", "AT+CEREG=2", "AT+CEREG?", ec25.signal_command, "AT+COPS?",
         "AT+CGSN", ec25.iccid_command, "ATI", 'AT+QPINC="SC"', "AT+CPIN?"],
    )  # fmt: skip
    reg = r.parse_registration(got["AT+CEREG?"][0])
    assert reg.stat.registered and reg.technology == "LTE" and reg.n == 2
    signal = r.parse_qcsq(got["AT+QCSQ"][0])
    assert signal.technology == "LTE" and signal.rsrp_dbm is not None
    assert r.parse_cops(got["AT+COPS?"][0]).name
    assert len(r.parse_imei(got["AT+CGSN"][0])) == 15
    assert r.parse_iccid(got["AT+QCCID"][0])
    assert r.parse_ati(got["ATI"]).model == "EC25"
    assert r.parse_pin_retries(got['AT+QPINC="SC"'][0]).pin == 3
    assert r.parse_cpin(got["AT+CPIN?"][0]) is r.SimState.READY

    got = _ask("sim7600", ["AT+CPSI?", "AT+SPIC", "AT+CICCID", "AT+CGMR"])
    assert r.parse_cpsi(got["AT+CPSI?"][0]).technology == "LTE"
    assert r.parse_pin_retries(got["AT+SPIC"][0]).puk == 10
    assert r.parse_iccid(got["AT+CICCID"][0])
    assert r.parse_info(got["AT+CGMR"], "+CGMR")

    got = _ask("sim800", ["AT+CSQ", "AT+CCID", "ATI", "AT+CGMR", "AT+COPS?"])
    assert r.parse_csq(got["AT+CSQ"][0]).rssi_dbm is not None
    assert r.parse_iccid(got["AT+CCID"][0])
    assert r.parse_ati(got["ATI"]).manufacturer is None
    assert r.parse_info(got["AT+CGMR"], "+CGMR")
    assert r.parse_cops(got["AT+COPS?"][0]).act is None

"""GsmMachine: the runtime's PortMachine over a GsmLine (gateway/runtime/gsm_port.py), and
the modem keys that say where incoming GSM calls go (`inbound`, `inbound_number`).

The machine is fed the AT engine's own event types, as the port's command task and URC
subscription feed it in the daemon; the runtime actions it returns are what app.py acts on.
"""

from __future__ import annotations

import textwrap

import jsonschema
import pytest
import yaml

from gateway.config import ConfigError, load_config_text
from gateway.config.jsonschema import export_json_schema
from gateway.lines import events as lev
from gateway.lines.gsm import GsmLine, SendAt
from gateway.modem.at import CommandDone, CommandFailed, Unsolicited
from gateway.modem.profiles import profile
from gateway.runtime.gsm_port import GsmMachine, GsmOffer
from gateway.sip.message import Request, parse_message


class Rig:
    """A GsmMachine whose commands are answered OK unless a test says otherwise."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        line = GsmLine("gsm1", profile=profile("quectel-ec25"), audio="serial-pcm")
        self.machine = GsmMachine(line, lambda s: self.sent.append(s.command))
        self.now = 100.0

    def actions(self) -> list[lev.Action]:
        return self.machine.actions()

    def ok(self, command: str, *lines: str) -> list[lev.Action]:
        self.machine._now_hint = self.now
        self.machine.line.handle(CommandDone(0, command, "OK", tuple(lines)), self.now)
        return self.actions()

    def fail(self, command: str, final: str) -> list[lev.Action]:
        self.machine._now_hint = self.now
        self.machine.line.handle(CommandFailed(0, command, final, ()), self.now)
        return self.actions()

    def urc(self, name: str, value: str = "") -> list[lev.Action]:
        self.machine._now_hint = self.now
        self.machine.line.handle(Unsolicited(name, value), self.now)
        return self.actions()

    def answer_pending(self) -> list[lev.Action]:
        """OK every command sent so far that has no result yet, in order."""
        out: list[lev.Action] = []
        while self.sent:
            out += self.ok(self.sent.pop(0))
        return out


def dial(rig: Rig) -> None:
    result = rig.machine.place("gsm-call", "0123456789", rig.now)
    assert result is lev.IncomingResult.ACCEPTED
    rig.actions()
    assert rig.sent[:1] == ["AT+QPCMV=1,0"]  # the voice setup goes before every ATD
    rig.answer_pending()


def test_dialled_call_answered_by_far_end_asks_runtime_to_answer_and_connect() -> None:
    rig = Rig()
    dial(rig)
    rig.now += 10.0
    actions = rig.urc("+CLCC", '1,0,0,0,0,"0123456789",129')
    assert lev.AnswerCall("gsm-call") in actions
    assert lev.ConnectAudio("gsm-call") in actions
    rig.now += 61.0
    actions = rig.urc("NO CARRIER")
    assert lev.HangUp("gsm-call") in actions  # after answer: a remote hang-up
    assert rig.machine.ended == [(171.0, 110.0)]  # 61 s talked: counted as 2 minutes
    assert rig.machine.call_id is None


@pytest.mark.parametrize(("final", "status"), [("BUSY", 486), ("NO ANSWER", 480),
                                               ("+CME ERROR: 30", 503)])
def test_dialled_call_refused_maps_to_sip_status(final: str, status: int) -> None:
    rig = Rig()
    assert rig.machine.place("gsm-call", "0123456789", rig.now) is lev.IncomingResult.ACCEPTED
    rig.actions()
    rig.ok(rig.sent.pop(0))  # AT+QPCMV
    atd = rig.sent.pop(0)
    assert atd == "ATD0123456789;"
    actions = rig.fail(atd, final)
    assert lev.RejectCall("gsm-call", status) in actions
    assert not any(isinstance(a, (lev.AnswerCall, lev.HangUp)) for a in actions)
    assert rig.machine.ended == [(rig.now, None)]  # never answered: no minutes


def test_incoming_call_is_offered_with_caller_and_answered_only_when_other_leg_answers() -> None:
    rig = Rig()
    rig.urc("RING")
    rig.urc("+CLIP", '"+447700900123",145,,,,0')
    assert rig.machine.offers == [GsmOffer("+447700900123", False)]
    rig.machine.set_call_id("sip-call")
    assert rig.sent == []  # nothing answered while the other leg rings
    rig.machine.call_answered(rig.now)
    rig.actions()
    assert rig.sent == ["AT+QPCMV=1,0", "ATA"][: len(rig.sent)]
    actions = rig.answer_pending()
    assert lev.ConnectAudio("sip-call") in actions
    # The other leg answered first: the runtime is not asked to answer again.
    assert not any(isinstance(a, lev.AnswerCall) for a in actions)


def test_caller_giving_up_cancels_the_other_leg() -> None:
    rig = Rig()
    rig.urc("RING")
    rig.urc("+CLIP", '"",128,,,,1')
    assert rig.machine.offers == [GsmOffer(None, True)]
    rig.machine.set_call_id("local-leg")
    actions = rig.urc("NO CARRIER")
    assert lev.CancelCall("local-leg") in actions


def test_other_leg_ending_hangs_up_the_modem_without_echoing_back() -> None:
    rig = Rig()
    dial(rig)
    rig.urc("+CLCC", '1,0,0,0,0,"0123456789",129')
    rig.machine.call_ended("remote hangup", None, rig.now)
    rig.actions()
    assert rig.sent == ["ATH"]
    actions = rig.answer_pending()
    # The runtime already ended the call: no HangUp/RejectCall back for it.
    assert not any(isinstance(a, (lev.HangUp, lev.RejectCall, lev.CancelCall)) for a in actions)
    assert rig.machine.state is lev.LineState.IDLE


def test_digit_from_other_leg_goes_out_as_vts_and_far_end_digit_comes_back() -> None:
    rig = Rig()
    dial(rig)
    rig.urc("+CLCC", '1,0,0,0,0,"0123456789",129')
    rig.machine.dtmf_digit("5", rig.now)
    rig.actions()
    assert "AT+VTS=5" in rig.sent
    rig.answer_pending()
    assert lev.SendDigit("gsm-call", "7") in rig.urc("+QTONEDET", "55")


def test_send_at_actions_do_not_reach_the_runtime() -> None:
    rig = Rig()
    rig.machine.place("c", "123", rig.now)
    assert not any(isinstance(a, SendAt) for a in rig.actions())  # type: ignore[comparison-overlap]


# ---------------------------------------------------------------- config: inbound

MODEM = """\
modems:
  - name: gsm1
    profile: sim
    port: /dev/ttyUSB2
    audio: {{type: serial-pcm, pcm_port: /dev/ttyUSB4}}
    inbound: {inbound}
    inbound_number: "{number}"
"""


def test_inbound_keys_load() -> None:
    config = load_config_text(MODEM.format(inbound="trunk:main", number="300"), "o.yaml",
                              route_probe=lambda t: None)
    assert config.modems[0].inbound == "trunk:main"
    assert config.modems[0].inbound_number == "300"


@pytest.mark.parametrize(("inbound", "number", "key"), [
    ("gsm:mobile", "300", "inbound"),  # a modem cannot send its callers to another modem
    ("line:1", "3x0", "inbound_number"),
])
def test_bad_inbound_refused_with_line_and_column_and_by_schema(
    inbound: str, number: str, key: str,
) -> None:
    text = MODEM.format(inbound=inbound, number=number)
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "o.yaml", route_probe=lambda t: None)
    found = [i for i in err.value.errors if key in i.path]
    assert found, err.value.errors
    assert found[0].line == (6 if key == "inbound" else 7)
    validator = jsonschema.Draft202012Validator(export_json_schema())
    assert list(validator.iter_errors(yaml.safe_load(textwrap.dedent(text))))


# ---------------------------------------------------------------- caller ID to a trunk


def _invite(**kwargs: object) -> Request:
    from gateway.sip.ua import UserAgent

    ua = UserAgent(local_host="127.0.0.1", local_port=5070,
                   instance_id="urn:uuid:00000000-0000-4000-8000-000000000001")
    ua.invite(target_uri="sip:300@trunk.example", from_uri=str(kwargs.pop("from_uri")),
              dest=("127.0.0.1", 5090), sdp=b"", now=0.0, **kwargs)  # type: ignore[arg-type]
    (data, _), = ua.datagrams_to_send()
    req = parse_message(data)
    assert isinstance(req, Request)
    return req


def test_invite_asserts_the_gsm_callers_identity() -> None:
    req = _invite(from_uri="sip:+447700900123@trunk.example", display_name="+447700900123",
                  asserted_identity="sip:+447700900123@trunk.example")
    assert req.headers.get("P-Asserted-Identity") == "<sip:+447700900123@trunk.example>"
    assert req.headers.get("Privacy") is None
    assert "sip:+447700900123@trunk.example" in (req.headers.get("From") or "")


def test_withheld_caller_is_anonymous_and_asks_for_privacy() -> None:
    req = _invite(from_uri="sip:anonymous@anonymous.invalid", privacy=True)
    assert req.headers.get("P-Asserted-Identity") is None
    assert req.headers.get("Privacy") == "id"


def test_minute_ledger_survives_a_round_trip_through_plain_data() -> None:
    from datetime import datetime

    from gateway.routing.gsm_groups import MinuteLedger

    ledger = MinuteLedger()
    ledger.record_call("ec25", 61.0, datetime(2026, 12, 6, 20, 0))
    data = ledger.to_dict()
    assert data == {"2026-12": {"ec25": 2}}
    again = MinuteLedger.from_dict(data)
    assert again.minutes("ec25", datetime(2026, 12, 31)) == 2
    assert MinuteLedger.from_dict({"bad": {"x": 1}, "2026-13": {"y": 1},
                                   "2026-12": {"z": -1, "w": True}}).to_dict() == {}

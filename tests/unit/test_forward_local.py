"""Call forward between ports of the box (gateway/runtime/forward_local.py) and the caller
a forwarded call shows (gateway/runtime/forwarding.py), through the production `Gateway`
with simulated FXS lines and a user agent that records what it would send.

- forward on no answer for a line-to-line call: the first line stops ringing, the target
  rings with the original caller's number, the caller hears ringback throughout and talks
  to the target once it answers (a busy forward set too does not hide it);
- a forward loop (A -> B -> A, forward always) ends after MAX_FORWARD_HOPS with one
  warning and a ringing line;
- a caller hanging up while the forward target rings stops that ringing;
- a forwarded call to a trunk: From is the original caller, P-Asserted-Identity the
  forwarding line's account, Diversion names the line; a withheld caller stays withheld.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config_text
from gateway.dsp.tones import get_profile
from gateway.lines import events as lev
from gateway.routing.dialplan import DigitMap
from gateway.routing.router import effective_digit_map
from gateway.runtime.app import Gateway
from gateway.runtime.forwarding import MAX_FORWARD_HOPS, ForwardPort, forward_port


class RecordingUa:
    """Quiet, and keeps every INVITE's keywords."""

    def __init__(self) -> None:
        self.invites: list[dict[str, Any]] = []
        self.events: list[Any] = []  # what the test has the far end say

    def next_event(self) -> Any:
        return self.events.pop(0) if self.events else None

    def get_timer(self) -> None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def invite(self, **kw: Any) -> str:
        self.invites.append(kw)
        return f"sip-{len(self.invites)}"

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: None


def make_box(tmp: Path, line1: str = "", line2: str = "", *,
             trunk: bool = False) -> tuple[Gateway, asyncio.AbstractEventLoop]:
    trunks = textwrap.dedent("""\
        trunks:
          - name: main
            registrar: 127.0.0.1:5999
        """) if trunk else ""
    account = '\n    trunk: {name: main, username: "office1", password: "pw"}' if trunk else ""
    text = textwrap.dedent(f"""\
        gateway: {{name: office, state_dir: {tmp}}}
        sip: {{listen: 127.0.0.1:5998, rtp_ports: 33000-33099}}
        """) + trunks + f"""\
lines:
  - name: "1"
    backend: sim
    number: "101"{account}
{line1}
  - name: "2"
    backend: sim
    number: "102"
{line2}
  - name: "3"
    backend: sim
    number: "103"
    display_name: "Front desk"
dialplan:
  digit_map: "(1xx|[2-9]xx.T)"
  routes:
    - {{pattern: "1\\\\d\\\\d", to: local}}
    - {{pattern: "\\\\d+", to: {'trunk:main' if trunk else 'local'}}}
"""
    config = load_config_text(text, "office.yaml", route_probe=lambda toward: None)
    loop = asyncio.new_event_loop()
    gw = Gateway(config, loop=loop)
    gw.ua = RecordingUa()  # type: ignore[assignment]
    profile = get_profile("US")
    digit_map = DigitMap(effective_digit_map(config))
    for lc in config.lines:
        gw._add_line(lc, profile, digit_map)
    gw._add_phones()  # none configured: the tables a forwarded SIP caller's leg goes in
    return gw, loop


@pytest.fixture
def boxes() -> Iterator[list[tuple[Gateway, asyncio.AbstractEventLoop]]]:
    made: list[tuple[Gateway, asyncio.AbstractEventLoop]] = []
    yield made
    for gw, loop in made:
        for lp in gw.lines.values():
            lp.close()
        if gw._timer is not None:
            gw._timer.cancel()
        loop.close()


def box(boxes: list[Any], tmp: Path, line1: str = "", line2: str = "", **kw: Any) -> Gateway:
    gw, loop = make_box(tmp, line1, line2, **kw)
    boxes.append((gw, loop))
    return gw


def run(gw: Gateway, seconds: float) -> None:
    gw.loop.run_until_complete(asyncio.sleep(seconds))  # type: ignore[attr-defined]
    gw._pump()


def dial(gw: Gateway, line: str, number: str) -> None:
    lift(gw, line)
    assert state(gw, line) is lev.LineState.DIAL_TONE
    machine = gw.lines[line].line
    for digit in number:
        machine.dtmf_digit(digit, gw.loop.time())
    gw._pump()


def lift(gw: Gateway, line: str, offhook: bool = True) -> None:
    """The handset goes off (or on) hook: the hook decoder reports it once settled."""
    gw.lines[line].line.hook(offhook, gw.loop.time())
    gw._pump()
    run(gw, 0.3 if offhook else 1.2)


def state(gw: Gateway, line: str) -> lev.LineState:
    return gw.lines[line].line.state


def remote_of(gw: Gateway, line: str) -> str:
    call = gw.calls[gw.lines[line].call_id or ""]
    return call.remote


def forward_ports(gw: Gateway) -> list[ForwardPort]:
    return [p for p in gw.ports.values() if isinstance(p, ForwardPort)]


def test_line_to_line_forward_on_no_answer(tmp_path: Path, boxes: list[Any]) -> None:
    gw = box(boxes, tmp_path, '    features: {forward_no_answer: "102", '
                              'forward_no_answer_after: 1, forward_busy: "199"}')
    dial(gw, "3", "101")
    assert state(gw, "1") is lev.LineState.RINGING
    assert state(gw, "3") is lev.LineState.RINGBACK
    run(gw, 1.2)
    assert state(gw, "1") is lev.LineState.IDLE  # the first line stopped ringing
    assert state(gw, "2") is lev.LineState.RINGING  # the forward target rings
    assert remote_of(gw, "2") == "103"  # showing who called, not line 1
    assert gw.lines["2"].line._caller == ("103", "Front desk")
    assert state(gw, "3") is lev.LineState.RINGBACK  # the caller still hears ringback
    lift(gw, "2")
    assert state(gw, "3") is lev.LineState.CONNECTED
    call3 = gw.calls[gw.lines["3"].call_id or ""]
    assert call3.peer is not None and call3.peer.port is gw.lines["2"]  # they talk
    assert call3.audio and call3.peer.audio
    run(gw, 0.05)
    assert not forward_ports(gw)  # the transient port went, with its route attempt
    assert not [name for name in getattr(gw, "attempts", {}) if name.startswith("fwd:")]


def test_caller_hanging_up_stops_the_forward_target_ringing(tmp_path: Path,
                                                            boxes: list[Any]) -> None:
    gw = box(boxes, tmp_path, '    features: {forward_no_answer: "102", '
                              'forward_no_answer_after: 1}')
    dial(gw, "3", "101")
    run(gw, 1.2)
    assert state(gw, "2") is lev.LineState.RINGING
    lift(gw, "3", False)
    assert state(gw, "2") is lev.LineState.IDLE
    run(gw, 0.05)
    assert not forward_ports(gw) and not gw.calls


def test_a_forward_loop_stops_after_the_hop_limit(tmp_path: Path, boxes: list[Any],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    gw = box(boxes, tmp_path, '    features: {forward_always: "102"}',
             '    features: {forward_always: "101"}')
    with caplog.at_level(logging.INFO, "branchline"):
        dial(gw, "3", "101")
    loops = [r for r in caplog.records if "forward loop" in r.getMessage()]
    assert len(loops) == 1, [r.getMessage() for r in caplog.records]
    assert f"forwarded {MAX_FORWARD_HOPS} times already" in loops[0].getMessage()
    assert len(forward_ports(gw)) == MAX_FORWARD_HOPS
    ringing = [n for n in ("1", "2") if state(gw, n) is lev.LineState.RINGING]
    assert len(ringing) == 1
    assert remote_of(gw, ringing[0]) == "103"
    lift(gw, ringing[0])  # answered at the end of the chain: the caller talks to it
    assert state(gw, "3") is lev.LineState.CONNECTED
    call3 = gw.calls[gw.lines["3"].call_id or ""]
    assert call3.peer is not None and call3.peer.port is gw.lines[ringing[0]]


def test_forward_always_between_lines_rings_with_the_original_caller(
        tmp_path: Path, boxes: list[Any]) -> None:
    gw = box(boxes, tmp_path, '    features: {forward_always: "102"}')
    dial(gw, "3", "101")
    assert state(gw, "1") is lev.LineState.IDLE
    assert state(gw, "2") is lev.LineState.RINGING
    assert state(gw, "3") is lev.LineState.RINGBACK
    assert gw.lines["2"].line._caller == ("103", "Front desk")
    lift(gw, "2")
    assert state(gw, "3") is lev.LineState.CONNECTED


def _sip_forward(gw: Gateway, caller: str, name: str | None) -> dict[str, Any]:
    port = forward_port(gw, gw.lines["1"], "no-answer", caller=caller, caller_name=name)
    gw.ports[port.name] = port
    port.line.phone_dialled("5551234", gw.loop.time())
    gw._pump()
    run(gw, 0.05)  # the RTP socket opens, the INVITE goes
    ua: RecordingUa = gw.ua  # type: ignore[assignment]
    assert ua.invites, "no INVITE placed"
    return ua.invites[-1]


def test_forwarded_call_to_a_trunk_shows_the_original_caller(tmp_path: Path,
                                                             boxes: list[Any]) -> None:
    gw = box(boxes, tmp_path, trunk=True)
    sent = _sip_forward(gw, "sip:300@192.0.2.7", "Bob")
    assert sent["from_uri"] == "sip:300@127.0.0.1"
    assert sent["display_name"] == "Bob"
    assert sent["asserted_identity"] == "sip:office1@127.0.0.1"  # the line's account
    assert sent["account_id"] == "1"
    assert sent["extra"][0][0] == "Diversion" and "office1" in sent["extra"][0][1]


def test_forwarded_withheld_caller_stays_withheld(tmp_path: Path, boxes: list[Any]) -> None:
    gw = box(boxes, tmp_path, trunk=True)
    sent = _sip_forward(gw, "sip:anonymous@anonymous.invalid", "Anonymous")
    assert sent["from_uri"] == "sip:anonymous@anonymous.invalid"
    assert sent["privacy"] is True
    assert sent["asserted_identity"] == "sip:office1@127.0.0.1"


def test_a_trunk_challenge_on_the_forward_leg_is_not_passed_to_the_caller() -> None:
    from types import SimpleNamespace

    from gateway.lines.sip_phone import RefusePhone
    from gateway.runtime import forwarding

    told: list[Any] = []
    gw = SimpleNamespace(_phone_signal=lambda port, signal: told.append(signal))
    port = SimpleNamespace(leg=object(), line=SimpleNamespace(state=lev.LineState.CALLING))
    forwarding._signal(gw, port, RefusePhone(407))  # type: ignore[arg-type]
    forwarding._signal(gw, port, RefusePhone(486))  # type: ignore[arg-type]
    # the caller's phone would answer a 407 with its own credentials and call again
    assert told == [RefusePhone(480), RefusePhone(486)]


def test_a_line_set_to_show_itself_forwards_with_its_own_identity(tmp_path: Path,
                                                                  boxes: list[Any]) -> None:
    gw = box(boxes, tmp_path, "    features: {forwarded_caller_id: line}", trunk=True)
    sent = _sip_forward(gw, "sip:300@192.0.2.7", "Bob")
    assert sent["from_uri"] == "sip:office1@127.0.0.1"  # for a trunk that screens From
    assert "asserted_identity" not in sent
    assert sent["extra"][0][0] == "Diversion"  # still says it was forwarded


def test_sip_call_forwarded_on_no_answer_keeps_the_callers_name(tmp_path: Path,
                                                                boxes: list[Any]) -> None:
    from types import SimpleNamespace

    from gateway.runtime import forwarding
    from gateway.runtime.sip_calls import Call

    gw = box(boxes, tmp_path, '    features: {forward_no_answer: "102", '
                              'forward_no_answer_after: 1}')
    line1 = gw.lines["1"]
    rtp = SimpleNamespace(on_event=None, close=lambda: None, send_bye=lambda now: None)
    call = Call("trunk-call-1", line1, "in", "sip:300@192.0.2.7", "sip", gw.loop.time(),
                rtp=rtp)  # type: ignore[arg-type]
    gw.calls[call.call_id] = call
    line1.machine.incoming_call(call.call_id, call.remote, "Bob", gw.loop.time())
    call.state = "ringing"
    forwarding.arm_no_answer(gw, call, "Bob")
    gw._pump()
    run(gw, 1.2)
    assert state(gw, "1") is lev.LineState.IDLE
    assert state(gw, "2") is lev.LineState.RINGING
    assert gw.lines["2"].line._caller == ("sip:300@192.0.2.7", "Bob")  # number and name


def test_early_media_of_a_forward_to_the_trunk_reaches_the_caller(tmp_path: Path,
                                                                   boxes: list[Any]) -> None:
    from gateway.sip import events as sev
    from gateway.sip.sdp import build_offer

    answer = bytes(build_offer(address="127.0.0.1", port=41000, codecs=["PCMU"],
                               session_id=7, session_version=1))
    gw = box(boxes, tmp_path, '    features: {forward_always: "5551234"}', trunk=True)
    ua: RecordingUa = gw.ua  # type: ignore[assignment]
    dial(gw, "3", "101")
    run(gw, 0.05)  # the forward port's INVITE goes
    assert ua.invites and ua.invites[-1]["from_uri"] == "sip:103@127.0.0.1"
    ua.events.append(sev.CallProgress("sip-1", 183, answer))  # an announcement, say
    gw._pump()
    assert state(gw, "3") is lev.LineState.EARLY_MEDIA  # the handset hears it
    assert gw.lines["3"].call_id == "sip-1" and gw.calls["sip-1"].port is gw.lines["3"]
    ua.events.append(sev.CallAnswered("sip-1", answer))
    gw._pump()
    assert state(gw, "3") is lev.LineState.CONNECTED
    run(gw, 0.05)
    assert not forward_ports(gw)

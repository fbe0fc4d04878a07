"""Hold and resume re-INVITEs one at a time (gateway/runtime/sip_calls.py `_set_hold`): a
swap asked for while our re-INVITE is pending is sent once it is answered or refused,
instead of being lost (a quick double flash left the far end held while the handset
talked to it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.runtime.sip_calls import Call, SipCalls
from gateway.sip import events as sev
from gateway.sip.sdp import MediaParams, SessionDescription


class _Ua:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        self.sent.append(SessionDescription.parse(sdp).media[0].direction)


def _calls() -> tuple[Any, Call, _Ua]:
    calls: Any = object.__new__(SipCalls)
    ua = _Ua()
    calls.ua = ua
    calls.config = SimpleNamespace(sip=SimpleNamespace(public_host="127.0.0.1"))
    call = Call("c1", SimpleNamespace(name="1"), "out", "sip:300@x", "sip", 0.0,  # type: ignore[arg-type]
                state="connected", rtp=SimpleNamespace(port=4000),  # type: ignore[arg-type]
                params=MediaParams(("127.0.0.1", 5000), "PCMU", 0, 101, 20, "sendrecv", False))
    calls.calls = {"c1": call}
    calls._apply_answer = lambda call, sdp, now: True
    calls.loop = SimpleNamespace(time=lambda: 2.0)
    return calls, call, ua


def test_resume_asked_while_the_hold_is_pending_goes_after_the_answer() -> None:
    calls, call, ua = _calls()
    calls._set_hold(call, True, 1.0)
    calls._set_hold(call, False, 1.1)  # a second flash before the 200 OK
    assert ua.sent == ["inactive"] and call.held
    calls._on_sip_event(sev.ReinviteAnswered("c1", b"v=0"))
    assert ua.sent == ["inactive", "sendrecv"] and not call.held


def test_asking_for_the_pending_state_again_sends_nothing_more() -> None:
    calls, call, ua = _calls()
    calls._set_hold(call, True, 1.0)
    calls._set_hold(call, False, 1.1)
    calls._set_hold(call, True, 1.2)  # and back: what is pending already
    calls._on_sip_event(sev.ReinviteAnswered("c1", b"v=0"))
    assert ua.sent == ["inactive"] and call.held


def test_after_a_refused_hold_the_queued_state_is_still_sent_if_it_differs() -> None:
    calls, call, ua = _calls()
    calls._set_hold(call, True, 1.0)
    calls._set_hold(call, False, 1.1)
    calls._on_sip_event(sev.ReinviteFailed("c1", 491))
    assert not call.held and ua.sent == ["inactive"]  # refused: never held, resume moot

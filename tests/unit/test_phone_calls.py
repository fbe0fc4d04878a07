"""PhoneCalls (gateway/runtime/phones.py): the box's side of its local phones' dialogs.

A stand-in user agent records what the box would send; the phone ports, their machines,
the call records and the media set-up are the production ones (RTP sockets on loopback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config.schema import LineTrunk
from gateway.config.survivable import PhoneConfig
from gateway.lines import events as lev
from gateway.routing.health import HealthState
from gateway.runtime.phone_port import PhonePort
from gateway.runtime.phones import PhoneCalls
from gateway.runtime.sip_calls import Call, Registration, SipCalls
from gateway.security.permissions import CallSource
from gateway.sip import events as sev
from gateway.sip.registrar import Binding
from gateway.sip.sdp import build_offer
from gateway.sip.target import Target

PHONE_SDP = bytes(build_offer(address="127.0.0.1", port=41000, codecs=["PCMU"],
                              session_id=1, session_version=1))


def invite(call_id: str, number: str, caller: str = "201") -> sev.IncomingCall:
    """An INVITE for `number` from `caller` with the phone's offer."""
    return sev.IncomingCall(call_id, f"sip:{caller}@127.0.0.1", None,
                            f"sip:{number}@127.0.0.1", f"sip:{number}@127.0.0.1", PHONE_SDP,
                            ("127.0.0.1", 5070))


def binding(port: int, transport: str = "udp") -> Binding:
    return Binding("201", f"sip:201@10.0.0.{port % 250}:{port}", ("127.0.0.1", port),
                   transport, 1e9, f"reg{port}", 1)


class FakeRegistrar:
    def __init__(self) -> None:
        self.bindings: dict[str, list[Binding]] = {}

    def lookup(self, user: str, now: float) -> list[Binding]:
        return list(self.bindings.get(user, []))


class FakeUa:
    """Records the box's SIP intents; each INVITE gets the next fork id."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.registrar = FakeRegistrar()
        self.accounts: dict[str, Any] = {}
        self.states: dict[str, str] = {}
        self._n = 0

    def invite(self, **kw: Any) -> str:
        self._n += 1
        call_id = f"fork{self._n}"
        self.sent.append(("invite", call_id, kw["target_uri"], tuple(kw["dest"])))
        return call_id

    def __getattr__(self, name: str) -> Any:
        if name in ("cancel", "bye", "ringing", "answer", "reject", "reject_reinvite",
                    "answer_reinvite"):
            return lambda call_id, *args, **kw: self.sent.append(
                (name, call_id, *(a for a in args if not isinstance(a, float))))
        raise AttributeError(name)

    def call_state(self, call_id: str) -> str | None:
        return self.states.get(call_id, "incoming")

    def add_account(self, account_id: str, settings: Any, now: float) -> None:
        self.accounts[account_id] = settings
        self.sent.append(("add_account", account_id))

    def remove_account(self, account_id: str, now: float) -> None:
        self.accounts.pop(account_id, None)
        self.sent.append(("remove_account", account_id))

    def registration(self, account_id: str) -> Any:
        return self.accounts.get(account_id)

    def trunk_down(self, account_id: str, now: float) -> None:
        self.sent.append(("trunk_down", account_id))

    def register_now(self, account_id: str, now: float) -> None:
        self.sent.append(("register_now", account_id))


class FakeEdge:
    def __init__(self) -> None:
        self.sources: dict[str, CallSource] = {}

    def call_source(self, call_id: str, source: Any) -> CallSource | None:
        return self.sources.get(call_id)


class FakeHealth:
    def __init__(self) -> None:
        self.now = HealthState.UP
        self.subscribers: list[Any] = []

    def state(self, trunk: str) -> HealthState:
        return self.now

    def subscribe(self, callback: Any) -> None:
        self.subscribers.append(callback)

    def go(self, state: HealthState) -> None:
        self.now = state
        for callback in self.subscribers:
            callback(SimpleNamespace(trunk="main", new=state))


class Box(PhoneCalls, SipCalls):
    """Just enough of `Gateway` for the phones' code."""

    def __init__(self, loop: asyncio.AbstractEventLoop, phones: tuple[PhoneConfig, ...]) -> None:
        self.loop = loop
        self.config: Any = SimpleNamespace(
            sip=SimpleNamespace(listen=SimpleNamespace(host="127.0.0.1"),
                                rtp_ports=SimpleNamespace(first=42000, last=42999),
                                public_host="127.0.0.1", codecs=("PCMU", "PCMA")),
            sip_phones=phones)
        self.ua: Any = FakeUa()
        self.edge: Any = FakeEdge()
        self.trunk_health = FakeHealth()
        self.calls: dict[str, Call] = {}
        self.lines = {}
        self.ports = {}
        self.trunks: Any = {"main": SimpleNamespace(name="main")}
        self.registrations: dict[str, Registration] = {}
        self.clock: Any = SimpleNamespace(stream_anchor=lambda now: now)
        self.actions: list[tuple[str, lev.Action]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self._add_phones()

    def _pump(self) -> None:
        for port in self.ports.values():
            for action in port.machine.actions():
                self.actions.append((port.name, action))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(self.loop.create_task(coro))

    async def settle(self) -> None:
        while self.tasks:
            await self.tasks.pop(0)

    def _account_settings(self, lc: Any) -> Any:
        return SimpleNamespace(aor=f"sip:{lc.trunk.username}@pbx")

    def phone(self, user: str = "201") -> PhonePort:
        return self.phone_ports[user]

    def close(self) -> None:
        for port in self.phone_ports.values():
            port.close()


def phones(relay: bool = False) -> tuple[PhoneConfig, ...]:
    trunk = LineTrunk("main", "alice", "alice-secret") if relay else None
    return (PhoneConfig("201", "secret-201x", display_name="Alice", trunk=trunk),
            PhoneConfig("202", "secret-202x", number="2020"))


@pytest.fixture
def box() -> Any:
    loop = asyncio.new_event_loop()
    b = Box(loop, phones())
    yield b
    b.close()
    loop.close()


def run(box: Box, coro: Coroutine[Any, Any, Any]) -> Any:
    return box.loop.run_until_complete(coro)


def ring(box: Box, call_id: str = "in1") -> None:
    assert box.phone().machine.incoming_call(call_id, "sip:300@pbx", "Carol", 0.0) \
        is lev.IncomingResult.ACCEPTED
    box._pump()
    run(box, box.settle())


def test_a_port_per_phone_found_by_number_and_named_as_a_local_user(box: Box) -> None:
    assert set(box.ports) == {"phone:201", "phone:202"}
    assert box._local_port_for("2020") is box.phone("202")
    assert box._local_port_for("201") is box.phone("201")
    assert box._local_port_for("999") is None
    assert box.phone().kind == "phone"


def test_call_for_a_phone_forks_to_every_binding_first_answer_wins(box: Box) -> None:
    box.ua.registrar.bindings["201"] = [binding(5070), binding(5072, "tcp")]
    ring(box)
    invites = [s for s in box.ua.sent if s[0] == "invite"]
    assert invites == [
        ("invite", "fork1", "sip:201@10.0.0.70:5070", (Target("udp", "127.0.0.1", 5070),)),
        ("invite", "fork2", "sip:201@10.0.0.72:5072", (Target("tcp", "127.0.0.1", 5072),)),
    ]
    box.ua.sent.clear()
    box._phone_sip_event(sev.CallProgress("fork1", 180, None))
    box._phone_sip_event(sev.CallAnswered("fork2", PHONE_SDP))
    assert box.ua.sent == [("bye", "fork1")]  # the other fork is CANCELled
    port = box.phone()
    assert port.machine.state is lev.LineState.CONNECTED and port.connected()
    assert port.leg is not None and port.leg.call_id == "fork2"
    assert port.leg.media is not None and port.leg.media.remote_addr == ("127.0.0.1", 41000)
    box._pump()
    assert ("phone:201", lev.AnswerCall("in1")) in box.actions
    # The cancelled fork's 200 crossed the CANCEL: it is hung up, and nothing else changes.
    box.ua.sent.clear()
    box._phone_sip_event(sev.CallAnswered("fork1", PHONE_SDP))
    assert box.ua.sent == [("bye", "fork1")]
    assert port.leg.call_id == "fork2"
    # The phone hangs up: the runtime's call gets HangUp, the leg's media is freed.
    box._phone_sip_event(sev.CallEnded("fork2", "remote BYE", None))
    box._pump()
    assert box.actions[-2:] == [("phone:201", lev.HangUp("in1")),
                                ("phone:201", lev.StateChanged(lev.LineState.IDLE))]
    assert port.leg is None and not box.phone_dialogs


def test_every_fork_refusing_refuses_the_call_busy_first(box: Box) -> None:
    box.ua.registrar.bindings["201"] = [binding(5070), binding(5072)]
    ring(box)
    box._phone_sip_event(sev.CallEnded("fork1", "rejected", 480))
    assert box.phone().machine.state is lev.LineState.RINGING
    box._phone_sip_event(sev.CallEnded("fork2", "rejected", 486))
    box._pump()
    assert ("phone:201", lev.RejectCall("in1", 486)) in box.actions
    assert box.phone().leg is None


def test_a_phone_with_no_binding_is_refused_480(box: Box) -> None:
    ring(box)
    box._pump()
    assert ("phone:201", lev.RejectCall("in1", 480)) in box.actions
    assert not [s for s in box.ua.sent if s[0] == "invite"]


def test_caller_giving_up_cancels_every_fork(box: Box) -> None:
    box.ua.registrar.bindings["201"] = [binding(5070), binding(5072)]
    ring(box)
    box.ua.sent.clear()
    box.phone().machine.incoming_cancelled(1.0)
    box._pump()
    assert sorted(box.ua.sent) == [("bye", "fork1"), ("bye", "fork2")]
    assert box.phone().leg is None
    box._phone_sip_event(sev.CallEnded("fork1", "cancelled", 487))
    assert "fork1" not in box.phone_stale


def test_phone_dialling_places_the_call_and_hears_the_far_end(box: Box) -> None:
    box.edge.sources["p1"] = CallSource.local_user("201")
    assert run(box, box._incoming_from_phone(invite("p1", "101"))) is True
    port = box.phone()
    assert box.actions[-1] == ("phone:201", lev.PlaceCall("101"))
    port.machine.set_call_id("local-1")
    port.machine.call_progress(180, 1.0)
    port.machine.call_answered(2.0)
    box._pump()
    leg = port.leg
    assert leg is not None and leg.answer_sdp is not None
    assert box.ua.sent[:2] == [("ringing", "p1"), ("answer", "p1", leg.answer_sdp)]
    assert b"m=audio" in leg.answer_sdp and port.connected()
    port.machine.call_ended("remote hangup", None, 3.0)
    box._pump()
    assert box.ua.sent[-1] == ("bye", "p1") and port.leg is None
    # a trunk's INVITE is not a phone's
    box.edge.sources["t1"] = CallSource.trunk("main")
    assert run(box, box._incoming_from_phone(invite("t1", "201", "carol"))) is False


def test_busy_phone_dialling_again_gets_486(box: Box) -> None:
    box.edge.sources["p1"] = box.edge.sources["p2"] = CallSource.local_user("201")
    run(box, box._incoming_from_phone(invite("p1", "101")))
    run(box, box._incoming_from_phone(invite("p2", "102")))
    assert ("reject", "p2", 486) in box.ua.sent


def test_relay_follows_the_binding_and_the_trunk_health() -> None:
    loop = asyncio.new_event_loop()
    box = Box(loop, phones(relay=True))
    try:
        box._start_phone_relay()
        assert box.ua.sent == []  # not registered locally: nothing upstream
        box.ua.registrar.bindings["201"] = [binding(5070)]
        box._phone_sip_event(sev.BindingsChanged("201", ()))
        assert box.ua.sent == [("add_account", "phone:201")]
        assert "phone:201" in box.registrations
        box.trunk_health.go(HealthState.DOWN)
        assert box.ua.sent[-1] == ("trunk_down", "phone:201")
        box.ua.registrar.bindings["201"] = []  # the phone leaves during the outage
        box._phone_sip_event(sev.BindingsChanged("201", ()))
        assert box.ua.sent[-1] == ("trunk_down", "phone:201")  # nothing sent upstream
        assert "phone:201" not in box.registrations  # the monitor will not re-register it
        box.trunk_health.go(HealthState.UP)
        assert box.ua.sent[-1] == ("remove_account", "phone:201")  # upstream cleaned up
        box.ua.registrar.bindings["201"] = [binding(5070)]
        box.trunk_health.go(HealthState.DOWN)
        box._phone_sip_event(sev.BindingsChanged("201", ()))
        assert box.ua.sent[-1] == ("remove_account", "phone:201")  # down: not added
        box.trunk_health.go(HealthState.UP)
        assert box.ua.sent[-1] == ("add_account", "phone:201")  # back: at once
        box.trunk_health.go(HealthState.DEGRADED)
        assert box.ua.sent[-1] == ("add_account", "phone:201")  # degraded still relays
    finally:
        box.close()
        loop.close()


def test_status_text_shows_each_phones_call_and_upstream_relay() -> None:
    from gateway import cli

    text = "\n".join(cli.format_phones({"phones": [
        {"user": "201", "number": "201", "state": "connected",
         "contacts": [{"contact": "sip:201@10.0.0.5:5070", "source": "10.0.0.5:5070",
                       "transport": "udp", "expires_in": 30}],
         "upstream": {"trunk": "main", "relay": "parked", "registered": False}},
        {"user": "202", "number": "202", "state": "idle", "contacts": [], "upstream": None},
    ]}))
    lines = text.splitlines()
    assert "CALL" in lines[2] and "UPSTREAM" in lines[2]
    assert lines[3].split()[-3:] == ["connected", "main:", "parked"]
    assert lines[4].split()[-2:] == ["idle", "-"]


def test_media_watch_keeps_only_the_current_calls_figures(box: Box) -> None:
    """The phone's RTP timer forgets each call as the next one starts (no growth per call)."""
    from gateway.runtime.media_watch import MediaWatch

    port = box.phone()
    port.watch = MediaWatch(5.0)
    box.ua.registrar.bindings["201"] = [binding(5070)]
    for n in range(3):
        ring(box, f"in{n}")
        box._phone_sip_event(sev.CallAnswered(f"fork{n + 1}", PHONE_SDP))
        port.capture()
        assert list(port.watch._seen) == [f"fork{n + 1}"]
        box._phone_sip_event(sev.CallEnded(f"fork{n + 1}", "remote BYE", None))
        box._pump()
    assert port.leg is None and port.machine.state is lev.LineState.IDLE

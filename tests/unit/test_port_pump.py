"""The runtime's pump, timer and 20 ms tick visit only the ports that have work.

A box with 1,000 configured local phones, nearly all idle: an input or a timer must not
walk every phone's machine, and the tick must not capture every phone. These count what the
production `Gateway` does with its ports (no sockets: a stand-in user agent that is quiet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config.loader import load_default
from gateway.lines import events as lev
from gateway.lines.sip_phone import SipPhoneLine
from gateway.runtime.app import Gateway
from gateway.runtime.phone_port import PhonePort

PHONES = 1000


class QuietUa:
    """A user agent with nothing to say and no timer."""

    def next_event(self) -> None:
        return None

    def get_timer(self) -> None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


class CountingLine(SipPhoneLine):
    visits = 0

    def actions(self) -> list[lev.Action]:
        CountingLine.visits += 1
        return super().actions()

    def get_timer(self) -> float | None:
        CountingLine.visits += 1
        return super().get_timer()


class CountingPort(PhonePort):
    captures = 0

    def capture(self) -> bytes:
        CountingPort.captures += 1
        return super().capture()


@pytest.fixture
def box() -> Iterator[tuple[Gateway, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    gw = Gateway(load_default(), loop=loop)
    gw.ua = QuietUa()  # type: ignore[assignment]
    for i in range(PHONES):
        name = f"phone:{1000 + i}"
        cfg = SimpleNamespace(user=str(1000 + i), number=str(1000 + i), display_name=None)
        gw.ports[name] = CountingPort(name, str(1000 + i), str(1000 + i), cfg,
                                      CountingLine(name, no_answer_timeout=30.0), loop.time)
    gw._pump()  # what the ports queued before they were added
    gw._tick(loop.time())
    CountingLine.visits = 0
    CountingPort.captures = 0
    yield gw, loop
    if gw._timer is not None:
        gw._timer.cancel()
    loop.close()


def phone(gw: Gateway, i: int) -> Any:
    return gw.ports[f"phone:{1000 + i}"]


def test_a_pump_with_idle_phones_visits_no_machine(box: Any) -> None:
    gw, _ = box
    for _ in range(10):
        gw._pump()
    assert CountingLine.visits == 0  # was 2 x 1,000 per pump (actions, get_timer)


def test_the_tick_leaves_idle_phones_alone(box: Any) -> None:
    gw, loop = box
    for _ in range(5):
        gw._tick(loop.time())
    assert CountingPort.captures == 0  # was 1,000 per tick


def test_a_ringing_phone_is_visited_and_its_no_answer_deadline_fires(box: Any) -> None:
    gw, loop = box
    ringing = phone(gw, 7)
    now = loop.time()
    assert ringing.line.incoming_call("call-7", "sip:100@box", None, now) is \
        lev.IncomingResult.ACCEPTED
    gw._pump()
    assert CountingLine.visits <= 4  # that phone only
    assert gw._timer_at == pytest.approx(now + 30.0)  # its deadline armed the timer
    gw._tick(loop.time())
    assert CountingPort.captures == 1  # ringing: the tick visits it
    # Nobody answers: the deadline passes, the phone gives up and is idle again.
    real_time = loop.time
    loop.time = lambda: real_time() + 31.0
    try:
        gw._on_timer()
    finally:
        loop.time = real_time
    assert ringing.line.state is lev.LineState.IDLE
    assert [type(s).__name__ for s in ringing.line.signals()] == ["RingPhone", "CancelPhone"]
    assert gw._timer_at is None  # no deadline left
    gw._tick(loop.time())
    CountingPort.captures = 0
    gw._tick(loop.time())
    assert CountingPort.captures == 0  # quiet again: left alone


def test_a_phone_removed_from_the_ports_is_forgotten(box: Any) -> None:
    gw, loop = box
    gone = phone(gw, 3)
    gone.line.incoming_call("call-3", "sip:100@box", None, loop.time())
    gw.ports.pop(gone.name)
    gw._pump()
    gw._tick(loop.time())
    assert CountingLine.visits == 0 and CountingPort.captures == 0
    assert gw._timer_at is None  # its deadline went with it

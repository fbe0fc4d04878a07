"""The `security` control command on a gateway stand-in: the real edge's rate limiter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.runtime.control_handlers import ControlCommandError, handle
from gateway.security.ratelimit import RateLimiter


class Loop:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def gateway() -> Any:
    limiter = RateLimiter()
    return SimpleNamespace(loop=Loop(), edge=SimpleNamespace(limiter=limiter))


def ask(gw: Any, **request: Any) -> Any:
    return asyncio.run(handle(gw, request))


def test_list_unblock_and_errors() -> None:
    gw = gateway()
    for _ in range(5):
        gw.edge.limiter.record_auth_failure("198.51.100.4", 100.0)
    gw.loop.now = 110.0
    [entry] = ask(gw, cmd="security")["blocked"]
    assert entry["source"] == "198.51.100.4" and entry["failures"] == 5
    assert entry["reason"] == "too many failed authentications"
    assert entry["seconds_left"] == pytest.approx(50.0)
    assert entry["last_seen_ago"] == pytest.approx(10.0)
    assert ask(gw, cmd="security", action="unblock", address="198.51.100.4") == {
        "unblocked": "198.51.100.4", "was_blocked": True}
    assert ask(gw, cmd="security", action="list") == {"blocked": []}
    with pytest.raises(ControlCommandError, match="198.51.100.4 is not blocked"):
        ask(gw, cmd="security", action="unblock", address="198.51.100.4")
    with pytest.raises(ControlCommandError, match="not an IP address"):
        ask(gw, cmd="security", action="unblock", address="example.org")
    with pytest.raises(ControlCommandError, match="unknown security action"):
        ask(gw, cmd="security", action="ban")


def test_unknown_command_is_refused() -> None:
    with pytest.raises(ControlCommandError, match="security"):
        ask(gateway(), cmd="secruity")

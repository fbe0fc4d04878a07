"""The words a call end is logged with: never "None", a status with its reason phrase."""

from __future__ import annotations

import pytest

from gateway.runtime import call_end


@pytest.mark.parametrize(("reason", "status", "direction", "text"), [
    ("remote hangup", None, "out", "remote BYE"),
    ("remote hangup", None, "in", "remote BYE"),
    ("cancelled", None, "in", "CANCEL 487"),
    ("cancelled", 487, "in", "CANCEL 487"),
    ("busy", 486, "out", "rejected 486 Busy Here"),
    ("declined", 603, "out", "rejected 603 Decline"),
    ("rejected", 404, "out", "rejected 404 Not Found"),
    ("timeout", 408, "out", "timeout 408"),
    ("transport error", 503, "out", "transport error 503"),
    ("no ACK", None, "in", "no ACK"),
    ("session expired", None, "out", "session expired"),
])
def test_user_agent_reasons_in_log_words(reason: str, status: int | None, direction: str,
                                         text: str) -> None:
    cause = call_end.from_ua(reason, status, direction)
    assert str(cause) == text
    assert "None" not in str(cause)


def test_local_causes() -> None:
    assert str(call_end.local_hangup()) == "local hangup"
    assert str(call_end.local_cancel()) == "local cancel"
    assert str(call_end.peer_hangup("1")) == "remote hangup (line 1)"
    assert str(call_end.rejected(486, "line 2")) == "rejected 486 Busy Here (line 2)"
    assert call_end.rejected(480).status == 480
    assert str(call_end.media_refused()) == "media refused 488"

"""`branchline security`: the request it sends and how it prints the answer."""

from __future__ import annotations

import io
import json
from typing import Any

from gateway.cli import main
from gateway.cli_security import format_blocked


class FakeClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def request(self, cmd: str, **args: Any) -> Any:
        self.sent.append((cmd, args))
        return self.answer


LOCKED = {"blocked": [{"source": "203.0.113.7", "bucket": "auth-failure",
                       "reason": "too many failed authentications", "seconds_left": 83.4,
                       "failures": 5, "last_seen_ago": 2.0}]}


def run(argv: list[str], answer: Any) -> tuple[int, str, FakeClient]:
    client = FakeClient(answer)
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--control", "/tmp/x.sock"], client_factory=lambda p, t: client,
                stdout=out, stderr=err)
    return code, out.getvalue(), client


def test_security_lists_by_default() -> None:
    code, out, client = run(["security"], LOCKED)
    assert code == 0 and client.sent == [("security", {"action": "list"})]
    assert out.splitlines()[0].split() == ["SOURCE", "REASON", "FAILURES", "TIME", "LEFT"]
    assert "203.0.113.7" in out and "1m23s" in out and " 5 " in out


def test_security_unblock_sends_the_address() -> None:
    code, out, client = run(["security", "unblock", "203.0.113.7"],
                            {"unblocked": "203.0.113.7", "was_blocked": True})
    assert code == 0
    assert client.sent == [("security", {"action": "unblock", "address": "203.0.113.7"})]
    assert out.strip() == "203.0.113.7: unblocked"


def test_security_json() -> None:
    code, out, _ = run(["security", "--json"], LOCKED)
    assert code == 0 and json.loads(out) == LOCKED


def test_nothing_blocked() -> None:
    assert format_blocked({"blocked": []}) == "No source is blocked."

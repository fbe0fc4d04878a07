"""`branchline sms send|status` and `branchline ussd`: what the CLI asks the daemon and prints."""

from __future__ import annotations

import io
import json
from typing import Any

from gateway.cli import main
from gateway.runtime.control import ControlError


class FakeClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def request(self, cmd: str, **args: Any) -> Any:
        self.requests.append((cmd, args))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _run(argv: list[str], client: FakeClient) -> tuple[int, str, str, list[float]]:
    out, err = io.StringIO(), io.StringIO()
    timeouts: list[float] = []

    def factory(path: str, timeout: float) -> FakeClient:
        timeouts.append(timeout)
        return client

    code = main([*argv, "--control", "/tmp/x.sock"], client_factory=factory,
                stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue(), timeouts


def test_sms_send_asks_the_daemon_and_waits_longer_than_it() -> None:
    client = FakeClient({"id": 7, "delivered": True, "attempts": 1, "last_error": ""})
    code, out, _, timeouts = _run(["sms", "send", "lte1", "+41791234567", "Hallo Welt",
                                   "--wait", "12"], client)
    assert code == 0 and out.strip() == "sms 7: sent"
    assert client.requests == [("sms", {"action": "send", "modem": "lte1",
                                        "number": "+41791234567", "text": "Hallo Welt",
                                        "wait": 12.0})]
    assert timeouts == [17.0]


def test_sms_send_not_sent_yet_says_it_stays_queued() -> None:
    client = FakeClient({"id": 8, "delivered": False, "attempts": 2,
                         "last_error": "no modem up for gsm:lte1"})
    code, out, _, _ = _run(["sms", "send", "lte1", "+41791234567", "x"], client)
    assert code == 0
    assert out.strip() == "sms 8: queued, no modem up for gsm:lte1; the daemon keeps trying"


def test_ussd_prints_the_answer_and_json_gives_all() -> None:
    answer = {"modem": "lte1", "code": "*100#", "status": 0, "text": "Guthaben 5", "dcs": 15}
    code, out, _, _ = _run(["ussd", "lte1", "*100#"], FakeClient(answer))
    assert code == 0 and out.strip() == "Guthaben 5"
    code, out, _, _ = _run(["ussd", "lte1", "*100#", "--json"], FakeClient(answer))
    assert json.loads(out) == answer


def test_daemon_errors_exit_1() -> None:
    code, _, err, _ = _run(["ussd", "nosuch", "*100#"],
                           FakeClient(ControlError("no modem named 'nosuch'")))
    assert code == 1 and "nosuch" in err

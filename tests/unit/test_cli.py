"""The `branchline` CLI: argument handling, requests sent, exit codes and human formatting."""

from __future__ import annotations

import io
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from gateway.config import Config
from gateway.config.schema import DEFAULT_CONTROL_SOCKET
from gateway.runtime.control import ControlError


class FakeClient:
    """Records requests and answers with a canned result (or a daemon error)."""

    def __init__(self, result: Any = None, error: str | None = None) -> None:
        self.result = result
        self.error = error
        self.calls: list[tuple[str, float, str, dict[str, Any]]] = []

    def factory(self, path: str, timeout: float) -> FakeClient:
        self._path, self._timeout = path, timeout
        return self

    def request(self, cmd: str, **args: Any) -> Any:
        self.calls.append((self._path, self._timeout, cmd, args))
        if self.error is not None:
            raise ControlError(self.error)
        return self.result


def run(argv: list[str], client: FakeClient | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, client_factory=(client or FakeClient()).factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_control_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.ENV_CONTROL, raising=False)


# --- requests sent -----------------------------------------------------------------------


def test_dial_sends_digits_and_mode() -> None:
    client = FakeClient({"hook": "off", "state": "calling"})
    code, out, _ = run(["phone", "1", "dial", "102"], client)
    assert code == 0
    path, _, cmd, args = client.calls[0]
    assert (path, cmd) == (DEFAULT_CONTROL_SOCKET, "phone")
    assert args == {"line": "1", "action": "dial", "digits": "102", "mode": "dtmf"}
    assert out.strip() == "line 1: dialled 102 (dtmf)"
    run(["phone", "1", "dial", "0471", "--pulse"], client)
    assert client.calls[1][3]["mode"] == "pulse"


@pytest.mark.parametrize("argv", [["phone", "1", "dial", "12x"], ["phone", "1", "dial", "1*",
                                                                     "--pulse"]])
def test_bad_digits_are_a_usage_error_and_nothing_is_sent(argv: list[str]) -> None:
    client = FakeClient()
    code, out, err = run(argv, client)
    assert code == 2 and client.calls == [] and out == ""
    assert err.startswith("branchline: cannot dial") and err.count("\n") == 1


@pytest.mark.parametrize("action", ["offhook", "onhook", "flash", "hears", "stop", "state"])
def test_simple_actions(action: str) -> None:
    client = FakeClient({})
    assert run(["phone", "kitchen", action], client)[0] == 0
    assert client.calls[0][2:] == ("phone", {"line": "kitchen", "action": action})


def test_play_makes_the_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tone.wav").write_bytes(b"RIFF")
    client = FakeClient({})
    assert run(["phone", "1", "play", "tone.wav", "--once"], client)[0] == 0
    args = client.calls[0][3]
    assert args["path"] == str(tmp_path / "tone.wav") and os.path.isabs(args["path"])
    assert args["mode"] == "once" and args["once"] is True
    run(["phone", "1", "play", "tone.wav"], client)
    assert client.calls[1][3]["mode"] == "loop"


def test_play_of_a_missing_file_is_refused_locally(tmp_path: Path) -> None:
    client = FakeClient({})
    code, _, err = run(["phone", "1", "play", str(tmp_path / "nope.wav")], client)
    assert code == 2 and client.calls == [] and "no such file" in err


def test_record_sends_seconds_and_waits_long_enough(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    client = FakeClient({"path": "x", "seconds": 30})
    code, out, _ = run(["phone", "2", "record", "out.wav", "30"], client)
    assert code == 0
    _, timeout, _, args = client.calls[0]
    assert args == {"line": "2", "action": "record", "path": str(tmp_path / "out.wav"),
                    "seconds": 30.0}
    assert timeout >= 30 + cli.DEFAULT_TIMEOUT
    assert out.strip() == f"line 2: recorded 30 s to {tmp_path / 'out.wav'}"
    assert run(["phone", "2", "record", "out.wav", "0"], client)[0] == 2


def test_control_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = FakeClient({})
    run(["status"], client)
    monkeypatch.setenv(cli.ENV_CONTROL, "/tmp/env.sock")
    run(["status"], client)
    run(["--control", "/tmp/opt.sock", "status"], client)
    run(["phone", "1", "state", "--control", "/tmp/late.sock"], client)
    monkeypatch.chdir(tmp_path)
    run(["status", "--control", "rel.sock"], client)
    assert [c[0] for c in client.calls] == [
        DEFAULT_CONTROL_SOCKET,
        "/tmp/env.sock",
        "/tmp/opt.sock",
        "/tmp/late.sock",
        str(tmp_path / "rel.sock"),
    ]


def test_json_flag_prints_the_raw_result_anywhere_on_the_line() -> None:
    result = {"line": "1", "what": "dial", "level_dbfs": -16.2}
    for argv in (["--json", "phone", "1", "hears"], ["phone", "1", "hears", "--json"]):
        code, out, _ = run(argv, FakeClient(result))
        assert code == 0 and json.loads(out) == result


# --- errors and exit codes ----------------------------------------------------------------


def test_daemon_error_is_one_line_on_stderr_with_exit_1() -> None:
    code, out, err = run(["phone", "9", "offhook"], FakeClient(error="no line '9' (lines: 1, 2)"))
    assert (code, out, err) == (1, "", "branchline: no line '9' (lines: 1, 2)\n")


def test_unreachable_daemon(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = str(tmp_path / "gone.sock")
    code = cli.main(["--control", path, "status"], stdout=out, stderr=err)
    assert code == 1
    assert err.getvalue() == f"branchline: cannot reach branchline daemon at {path}: is it running?\n"


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["phone", "1"], ["phone", "1", "jump"],
                                  ["phone", "1", "record", "x.wav", "soon"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    client = FakeClient({})
    assert run(argv, client)[0] == 2 and client.calls == []


# --- check-config, schema, run ---------------------------------------------------------------


BAD = "gateway:\n  log_level: loud\nsip:\n  listen: nowhere\n"


def test_check_config_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("lines:\n  - {name: a, backend: sim, number: '201'}\n")
    assert run(["check-config", str(good)]) == (0, f"{good}: OK (1 lines, 0 trunks)\n", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, out, err = run(["check-config", str(bad)])
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}:2:14: gateway.log_level: unknown value 'loud' (expected: ")
    assert lines[1].startswith(f"{bad}:4:11: sip.listen: ")


def test_check_config_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, out, _ = run(["check-config", str(bad), "--json"])
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [(e["line"], e["column"], e["path"]) for e in report["errors"]] == [
        (2, 14, "gateway.log_level"),
        (4, 11, "sip.listen"),
    ]
    good = tmp_path / "good.yaml"
    good.write_text("")
    code, out, _ = run(["--json", "check-config", str(good)])
    assert code == 0 and json.loads(out) == {"file": str(good), "ok": True, "lines": 0,
                                             "trunks": 0}


def test_schema_command_prints_json_schema() -> None:
    code, out, _ = run(["schema"])
    schema = json.loads(out)
    assert code == 0 and schema["$schema"].endswith("2020-12/schema")
    assert "trunks" in schema["properties"]


def test_run_passes_the_config_with_overrides(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    received: list[Config] = []
    options: list[dict[str, object]] = []
    fake_app = types.ModuleType("gateway.runtime.app")

    def fake_run(config: Config, **kwargs: object) -> int:
        received.append(config)
        options.append(kwargs)
        return 0

    fake_app.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.runtime.app", fake_app)
    code, _, _ = run(["run", "--control", str(tmp_path / "c.sock"), "--log-level", "debug"])
    assert code == 0
    config = received[0]
    assert config.gateway.control_socket == str(tmp_path / "c.sock")
    assert config.gateway.log_level == "debug"
    assert [line.number for line in config.lines] == ["101", "102"]  # embedded default
    # nothing to reload (the embedded default); the overrides outlive a reload
    assert options[0] == {"config_path": None, "overrides": {
        "control_socket": str(tmp_path / "c.sock"), "log_level": "debug"}}


def test_run_refuses_a_bad_config_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    fake_app = types.ModuleType("gateway.runtime.app")
    fake_app.run = lambda config: pytest.fail("must not start")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.runtime.app", fake_app)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, _, err = run(["run", "--config", str(bad)])
    assert code == 2 and f"{bad}:2:14: gateway.log_level" in err


# --- human formatting ------------------------------------------------------------------------


def test_hears_formatting() -> None:
    assert cli.format_hears("1", {"tone": "dial tone", "frequencies": [350, 440.2],
                                  "level_dbfs": -16.23}) == (
        "line 1 hears: dial tone (350 Hz + 440 Hz), -16.2 dBFS"
    )
    assert cli.format_hears("2", {"what": "busy", "dominant_hz": 480.0, "level_dbfs": -20.0,
                                  "digits": ""}) == "line 2 hears: busy tone (480 Hz), -20.0 dBFS"
    assert cli.format_hears("1", {"what": "dtmf", "level_dbfs": -10, "digits": "102"}) == (
        "line 1 hears: DTMF, -10.0 dBFS, digits 102"
    )
    assert cli.format_hears("1", {"what": "silence", "level_dbfs": -90.0}) == (
        "line 1 hears: silence"
    )


def test_state_formatting() -> None:
    fmt = cli.format_line_state
    assert fmt("1", {"hook": "off", "state": "connected",
                     "call": {"remote": "sip:102@127.0.0.1"}}) == (
        "line 1: off-hook, in call with sip:102@127.0.0.1"
    )
    assert fmt("2", {"hook": "on", "state": "ringing", "ringing": True,
                     "remote": "sip:101@127.0.0.1"}) == (
        "line 2: on-hook, ringing from sip:101@127.0.0.1"
    )
    assert fmt("1", {"hook": "off", "state": "collecting", "digits": "10"}) == (
        "line 1: off-hook, collecting digits (10)"
    )
    assert fmt("1", {"hook": "on", "state": "idle"}) == "line 1: on-hook, idle"


def test_offhook_reply_uses_the_returned_state() -> None:
    code, out, _ = run(["phone", "1", "offhook"],
                       FakeClient({"hook": "off", "state": "dial-tone", "ringing": False}))
    assert code == 0 and out == "line 1: off-hook, dial tone\n"


STATUS = {
    "registrations": [
        {"account": "1", "trunk": "main", "aor": "sip:alice@pbx", "registered": True,
         "reason": None, "expires": 587},
        {"account": "2", "trunk": "main", "aor": "sip:bob@pbx", "registered": False,
         "reason": "403 Forbidden", "expires": None},
    ],
    "lines": [
        {"name": "1", "number": "101", "hook": "off", "state": "connected", "ringing": False},
        {"name": "2", "number": "102", "hook": "on", "state": "ringing", "ringing": True,
         "forwarding": {"always": None, "busy": "2001", "no_answer": None, "dnd": True}},
    ],
    "calls": [],
}


def test_status_tables_are_aligned() -> None:
    text = cli.format_status(STATUS)
    lines = text.splitlines()
    assert lines[0] == "Registrations"
    header, first, second = lines[1:4]
    # Every column starts at the same offset in the header and in each row.
    for column, value_1, value_2 in (("AOR", "sip:alice@pbx", "sip:bob@pbx"),
                                     ("STATE", "registered", "not registered"),
                                     ("REASON", "-", "403 Forbidden")):
        assert header.index(column) == first.index(value_1) == second.index(value_2)
    assert "587s" in first
    lines_header = lines.index("Lines") + 1
    assert lines[lines_header].split() == ["NAME", "NUMBER", "HOOK", "STATE", "RINGING", "MWI",
                                           "FORWARD"]
    assert lines[lines_header + 1].split() == ["1", "101", "off-hook", "connected", "-", "-",
                                               "-"]
    assert lines[lines_header + 2].split() == ["2", "102", "on-hook", "ringing", "ringing", "-",
                                               "dnd", "busy>2001"]
    assert lines[lines.index("Calls") + 1] == "  (none)"


def test_status_call_row() -> None:
    result = {"calls": [{"call_id": "abc", "line": "1", "direction": "out",
                         "remote": "sip:200@pbx", "state": "connected", "codec": "PCMU",
                         "duration": 125.4, "stats": {"loss_pct": 0.5, "mos": 4.38},
                         "rtcp": {"sent": 3, "rtt_ms": 41.5}}]}
    row = cli.format_status(result).splitlines()[-1].split()
    assert row == ["abc", "1", "out", "sip:200@pbx", "connected", "PCMU", "2:05",
                   "loss_pct=0.5", "mos=4.38", "sent=3", "rtt_ms=41.5"]
    assert cli.format_duration(3725) == "1:02:05"


def test_status_command_human_output() -> None:
    code, out, _ = run(["status"], FakeClient(STATUS))
    assert code == 0 and out == cli.format_status(STATUS) + "\n"

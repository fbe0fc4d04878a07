"""Control socket: real Unix sockets in tmp_path, a fake handler, the blocking client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.control import MAX_LINE, ControlClient, ControlError, ControlServer


async def echo_handler(request: dict[str, Any]) -> Any:
    cmd = request["cmd"]
    if cmd == "refuse":
        raise ControlError("line 9 does not exist")
    if cmd == "crash":
        raise RuntimeError("boom")
    if cmd == "unserialisable":
        return {"when": object()}
    return {"got": request}


async def raw_exchange(path: str, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send raw lines on one connection and read one answer per line."""
    reader, writer = await asyncio.open_unix_connection(path)
    answers = []
    for line in lines:
        writer.write(line)
        await writer.drain()
        answers.append(json.loads(await reader.readline()))
    writer.close()
    await writer.wait_closed()
    return answers


def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "control.sock")


def test_round_trip_with_args(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def main() -> Any:
        async with ControlServer(path, echo_handler):
            client = ControlClient(path, timeout=5)
            return await asyncio.to_thread(client.request, "phone", line="1", action="offhook")

    assert asyncio.run(main()) == {"got": {"cmd": "phone", "line": "1", "action": "offhook"}}


def test_handler_error_reaches_client_as_control_error(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def main() -> tuple[str, str, Any]:
        async with ControlServer(path, echo_handler):
            client = ControlClient(path, timeout=5)
            with pytest.raises(ControlError) as refused:
                await asyncio.to_thread(client.request, "refuse")
            with pytest.raises(ControlError) as crashed:
                await asyncio.to_thread(client.request, "crash")
            after = await asyncio.to_thread(client.request, "status")
            return str(refused.value), str(crashed.value), after

    refused, crashed, after = asyncio.run(main())
    assert refused == "line 9 does not exist"
    assert "internal error" in crashed and "boom" in crashed
    assert after == {"got": {"cmd": "status"}}


def test_malformed_requests_get_error_replies_and_connection_survives(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def main() -> list[dict[str, Any]]:
        async with ControlServer(path, echo_handler):
            return await raw_exchange(
                path,
                [
                    b"{not json\n",
                    b"[1, 2]\n",
                    b'{"args": 1}\n',
                    b"\xff\xfe\n",
                    b'{"cmd": "unserialisable"}\n',
                    b'{"cmd": "status"}\n',
                ],
            )

    answers = asyncio.run(main())
    assert [a["ok"] for a in answers] == [False, False, False, False, False, True]
    assert "malformed JSON" in answers[0]["error"]
    assert "JSON object" in answers[1]["error"]
    assert '"cmd"' in answers[2]["error"]
    assert "not JSON" in answers[4]["error"]
    assert answers[5]["result"] == {"got": {"cmd": "status"}}


def test_overlong_line_is_refused_then_next_request_works(tmp_path: Path) -> None:
    path = sock_path(tmp_path)
    huge = b'{"cmd": "status", "pad": "' + b"x" * (MAX_LINE * 3) + b'"}\n'

    async def main() -> list[dict[str, Any]]:
        async with ControlServer(path, echo_handler):
            return await raw_exchange(path, [huge, b'{"cmd": "ping"}\n'])

    too_long, ping = asyncio.run(main())
    assert too_long["ok"] is False and "too long" in too_long["error"]
    assert ping == {"ok": True, "result": {"got": {"cmd": "ping"}}}


def test_last_request_without_newline_is_answered(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def main() -> bytes:
        async with ControlServer(path, echo_handler):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b'{"cmd": "status"}')
            writer.write_eof()
            answer = await reader.readline()
            writer.close()
            return answer

    assert json.loads(asyncio.run(main())) == {"ok": True, "result": {"got": {"cmd": "status"}}}


def test_socket_mode_parent_directory_and_cleanup(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def main() -> int:
        server = ControlServer(path, echo_handler)
        await server.start()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        await server.close()
        return mode

    assert asyncio.run(main()) == 0o660
    assert not os.path.exists(path)
    assert os.path.isdir(tmp_path / "run")


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = sock_path(tmp_path)
    os.makedirs(os.path.dirname(path))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # a socket file nobody listens on, as after a crash
    dead.close()

    async def main() -> Any:
        async with ControlServer(path, echo_handler):
            return await asyncio.to_thread(ControlClient(path, 5).request, "status")

    assert asyncio.run(main()) == {"got": {"cmd": "status"}}


def test_refuses_to_start_when_a_live_daemon_answers(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def main() -> tuple[str, Any]:
        async with ControlServer(path, echo_handler):
            with pytest.raises(ControlError) as second:
                await ControlServer(path, echo_handler).start()
            still = await asyncio.to_thread(ControlClient(path, 5).request, "status")
            return str(second.value), still

    message, still = asyncio.run(main())
    assert "already answering" in message and path in message
    assert still == {"got": {"cmd": "status"}}


def test_refuses_to_remove_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("not a socket")

    async def main() -> None:
        await ControlServer(str(path), echo_handler).start()

    with pytest.raises(ControlError, match="not a socket"):
        asyncio.run(main())
    assert path.read_text() == "not a socket"


def test_client_reports_missing_daemon_clearly(tmp_path: Path) -> None:
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(ControlError) as err:
        ControlClient(path, timeout=1).request("status")
    assert str(err.value) == f"cannot reach branchline daemon at {path}: is it running?"


def test_client_reports_error_reply_and_garbage() -> None:
    from gateway.runtime.control import _unwrap

    with pytest.raises(ControlError, match="^no such line$"):
        _unwrap(b'{"ok": false, "error": "no such line"}')
    with pytest.raises(ControlError, match="malformed answer"):
        _unwrap(b"<html>")
    assert _unwrap(b'{"ok": true, "result": [1, 2]}') == [1, 2]


def test_client_times_out_on_silent_daemon_and_close_ends_stuck_requests(tmp_path: Path) -> None:
    path = sock_path(tmp_path)

    async def never_answers(request: dict[str, Any]) -> Any:
        await asyncio.Event().wait()

    async def main() -> str:
        server = ControlServer(path, never_answers)
        await server.start()
        with pytest.raises(ControlError) as err:
            await asyncio.to_thread(ControlClient(path, timeout=0.2).request, "status")
        await server.close()  # must not hang on the handler that never returns
        return str(err.value)

    message = asyncio.run(main())
    assert message.startswith(f"no answer from branchline daemon at {path}")
    assert not os.path.exists(path)

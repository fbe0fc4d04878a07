"""The daemon's control socket: newline-delimited JSON over a Unix stream socket.

Request:  {"cmd": "status", ...args}\\n
Response: {"ok": true, "result": ...}\\n  or  {"ok": false, "error": "message"}\\n

A streaming command (`trace`) answers with one response line and then keeps writing one
JSON line per item until the client closes the connection (`ControlClient.stream`).

The socket is the only way the `branchline` admin commands reach the daemon, so access is
governed by its file mode (0660): root and the socket's group. A connection may carry many
requests; each gets exactly one response line, in order. A bad request gets an error reply
and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any

log = logging.getLogger("branchline.control")

#: Longest request line accepted, newline included; longer lines get an error reply.
MAX_LINE = 64 * 1024
#: Longest response the client reads (a status listing many calls can be long).
MAX_RESPONSE = 16 * 1024 * 1024
SOCKET_MODE = 0o660

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """A control request failed: the daemon refused it, or the daemon could not be reached."""


class Stream:
    """A handler result that keeps the connection open after the response line.

    `next_batch` waits for the next items (None ends the stream); `close` runs once when the
    stream ends for any reason, the client going away included.
    """

    def __init__(self, head: Any, next_batch: Callable[[], Awaitable[list[Any] | None]],
                 close: Callable[[], None]) -> None:
        self.head = head
        self.next_batch = next_batch
        self.close = close


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _encode(response: dict[str, Any]) -> bytes:
    return json.dumps(response, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


class ControlServer:
    """Serves control requests to `handler`, which returns the result or raises ControlError.

    The handler receives the whole request object (including "cmd"). Whatever it returns
    becomes "result"; a ControlError becomes {"ok": false, "error": str(exc)}; any other
    exception is logged with its traceback and reported as an internal error.
    """

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Bind the socket; refuses when a live daemon already answers on the path."""
        parent = os.path.dirname(self.path) or "."
        os.makedirs(parent, mode=0o755, exist_ok=True)
        await self._clear_stale_socket()
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        os.chmod(self.path, SOCKET_MODE)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        log.info("control socket listening on %s", self.path)

    async def close(self) -> None:
        """Stop accepting, end open connections and remove the socket file we created."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        await server.wait_closed()
        self._remove_own_socket()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals

    async def _clear_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; not removing it")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 2.0)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing stale control socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except (TimeoutError, OSError) as exc:
            raise ControlError(f"cannot check existing control socket {self.path}: {exc}") from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        raise ControlError(f"another branchline daemon is already answering on {self.path}")

    def _remove_own_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:  # never remove a successor's socket
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():  # last request without a newline
                        answer = await self._answer(exc.partial)
                        if isinstance(answer, Stream):
                            answer.close()  # nobody is left to stream to
                        else:
                            writer.write(answer)
                            await writer.drain()
                    break
                except asyncio.LimitOverrunError:
                    more = await _discard_line(reader)
                    writer.write(_encode(_error(f"request too long (limit {MAX_LINE} bytes)")))
                    await writer.drain()
                    if not more:
                        break
                    continue
                if line.strip():
                    answer = await self._answer(line)
                    if isinstance(answer, Stream):
                        await self._stream(answer, reader, writer)
                        break
                    writer.write(answer)
                    await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._clients.discard(task)

    async def _stream(self, stream: Stream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Write the head, then each batch, until the client closes (any byte or EOF)."""
        hangup: asyncio.Future[bytes] = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(_encode({"ok": True, "result": stream.head}))
            await writer.drain()
            while True:
                batch: asyncio.Future[list[Any] | None] = asyncio.ensure_future(
                    stream.next_batch())
                pending: set[asyncio.Future[Any]] = {hangup, batch}
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if hangup.done():
                    batch.cancel()
                    return
                items = batch.result()
                if items is None:
                    return
                for item in items:
                    writer.write(_encode(item))
                await writer.drain()
        finally:
            hangup.cancel()
            stream.close()

    async def _answer(self, line: bytes) -> bytes | Stream:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return _encode(_error(f"malformed JSON: {exc}"))
        if not isinstance(request, dict):
            return _encode(_error("request must be a JSON object"))
        cmd = request.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            return _encode(_error('request has no "cmd" string'))
        try:
            result = await self.handler(request)
        except ControlError as exc:
            return _encode(_error(str(exc)))
        except Exception as exc:
            log.exception("control command %r failed", cmd)
            return _encode(_error(f"internal error in {cmd!r}: {type(exc).__name__}: {exc}"))
        if isinstance(result, Stream):
            return result
        try:
            return _encode({"ok": True, "result": result})
        except (TypeError, ValueError) as exc:
            log.error("control command %r returned data that is not JSON: %s", cmd, exc)
            return _encode(_error(f"internal error in {cmd!r}: result is not JSON"))


async def _discard_line(reader: asyncio.StreamReader) -> bool:
    """Drop the rest of an over-long line; False when the peer closed before its end."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return True
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed
        except asyncio.IncompleteReadError:
            return False
        try:
            await reader.readexactly(consumed)
        except asyncio.IncompleteReadError:
            return False


class ControlClient:
    """Blocking client for the admin commands: one request, one answer, clear errors."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one command and return its result; raises ControlError on any failure."""
        payload = _encode({"cmd": cmd, **args})
        if len(payload) > MAX_LINE:
            raise ControlError(f"request too long ({len(payload)} bytes, limit {MAX_LINE})")
        deadline = time.monotonic() + self.timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
                raise ControlError(
                    f"cannot reach branchline daemon at {self.path}: is it running?"
                ) from exc
            except PermissionError as exc:
                raise ControlError(
                    f"permission denied on {self.path}: run as root or as a member of the "
                    "socket's group"
                ) from exc
            except OSError as exc:
                raise ControlError(f"cannot reach branchline daemon at {self.path}: {exc}") from exc
            try:
                sock.sendall(payload)
                line = self._read_line(sock, deadline)
            except TimeoutError as exc:
                raise ControlError(
                    f"no answer from branchline daemon at {self.path} within {self.timeout:g} s"
                ) from exc
            except OSError as exc:
                raise ControlError(f"connection to branchline daemon failed: {exc}") from exc
        return _unwrap(line)

    def stream(self, cmd: str, **args: Any) -> Generator[Any, None, None]:
        """Send a streaming command: yields its result, then every item the daemon sends,
        until the daemon closes. Leaving the loop (or Ctrl-C) closes the connection."""
        payload = _encode({"cmd": cmd, **args})
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                sock.sendall(payload)
            except PermissionError as exc:
                raise ControlError(
                    f"permission denied on {self.path}: run as root or as a member of the "
                    "socket's group"
                ) from exc
            except OSError as exc:
                raise ControlError(
                    f"cannot reach branchline daemon at {self.path}: is it running? ({exc})"
                ) from exc
            buffer = bytearray()
            first = True
            while True:
                while b"\n" not in buffer:
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError as exc:
                        raise ControlError(
                            f"no answer from branchline daemon at {self.path} within "
                            f"{self.timeout:g} s") from exc
                    if not chunk:
                        if first:
                            raise ControlError("branchline daemon closed the connection "
                                               "without answering")
                        return
                    buffer += chunk
                    if len(buffer) > MAX_RESPONSE:
                        raise ControlError("answer from branchline daemon is too long")
                end = buffer.index(b"\n")
                line, buffer = bytes(buffer[:end]), buffer[end + 1:]
                if first:
                    first = False
                    yield _unwrap(line)
                    sock.settimeout(None)  # items come when the daemon has them
                    continue
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ControlError(f"malformed item from branchline daemon: {exc}") from exc

    def _read_line(self, sock: socket.socket, deadline: float) -> bytes:
        buffer = bytearray()
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                raise ControlError("branchline daemon closed the connection without answering")
            buffer += chunk
            if len(buffer) > MAX_RESPONSE:
                raise ControlError("answer from branchline daemon is too long")
        return bytes(buffer[: buffer.index(b"\n")])


def _unwrap(line: bytes) -> Any:
    try:
        response = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"malformed answer from branchline daemon: {exc}") from exc
    if not isinstance(response, dict) or "ok" not in response:
        raise ControlError('malformed answer from branchline daemon: no "ok" field')
    if response["ok"] is True:
        return response.get("result")
    raise ControlError(str(response.get("error") or "the daemon reported an unspecified error"))

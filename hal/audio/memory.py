"""An AudioPort whose far end is Python code, for the simulated phone and for tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gateway.dsp import FRAME_BYTES
from hal.base import AudioPort, HalError


class MemoryAudio(AudioPort):
    """In-memory audio: the far side pushes (or supplies on demand) mouthpiece frames and
    receives earpiece frames through a sink callback.

    ``source`` is asked for a frame whenever the queue is empty, which lets a simulated
    phone produce audio at exactly the pace the driver reads it.
    """

    def __init__(
        self,
        sink: Callable[[bytes], None] | None = None,
        source: Callable[[], bytes | None] | None = None,
        max_queue: int = 500,
    ) -> None:
        self.sink = sink
        self.source = source
        self._queue: deque[bytes] = deque(maxlen=max_queue)
        self._closed = False
        self.written: deque[bytes] = deque(maxlen=max_queue)
        """The last earpiece frames written, for tests that have no sink."""

    def push(self, frame: bytes) -> None:
        """Queue one mouthpiece frame (the oldest is dropped when the queue is full)."""
        _check(frame)
        self._queue.append(frame)

    def read_frame(self) -> bytes | None:
        """Queued frame first, then whatever the source supplies, else None."""
        if self._closed:
            return None
        if self._queue:
            return self._queue.popleft()
        if self.source is not None:
            return self.source()
        return None

    def write_frame(self, frame: bytes) -> None:
        """Deliver an earpiece frame to the sink."""
        if self._closed:
            return
        _check(frame)
        self.written.append(frame)
        if self.sink is not None:
            self.sink(frame)

    def close(self) -> None:
        """Stop passing audio; idempotent."""
        self._closed = True
        self._queue.clear()


def _check(frame: bytes) -> None:
    if len(frame) != FRAME_BYTES:
        raise HalError(f"audio frame: {len(frame)} bytes, expected {FRAME_BYTES} (20 ms S16LE)")

"""write_atomic: a crash at any step leaves the old file whole; the stores use it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.store import atomic
from gateway.store.atomic import temp_path, write_atomic


def test_writes_creates_the_directory_and_sets_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    write_atomic(path, b"one")
    assert path.read_bytes() == b"one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(path, b"two", mode=0o640)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not temp_path(path).exists()


def test_every_step_is_done_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        steps.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        steps.append("replace")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_atomic(tmp_path / "f", b"data")
    assert steps == ["fsync file", "replace", "fsync dir"]


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_failing_step_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old contents")

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, step, boom)
    with pytest.raises(OSError):
        write_atomic(path, b"new contents that never land")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert not temp_path(path).exists()


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_process_killed_between_steps_leaves_the_old_file(tmp_path: Path, step: str) -> None:
    """A real process dies (os._exit, no cleanup) at `step`: the old file is intact, and the
    next write succeeds over the stray temporary file."""
    path = tmp_path / "state.json"
    write_atomic(path, b"old contents")
    script = textwrap.dedent(f"""
        import os, sys
        from gateway.store import atomic
        real = getattr(os, {step!r})
        def die(*args):
            if {step!r} == "write":
                real(args[0], bytes(args[1])[:3])  # a torn write, then power off
            os._exit(9)
        setattr(atomic.os, {step!r}, die)
        atomic.write_atomic(sys.argv[1], b"new contents")
    """)
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=Path(__file__).parents[2],
                          check=False)
    assert done.returncode == 9
    assert path.read_bytes() == b"old contents"
    write_atomic(path, b"after restart")
    assert path.read_bytes() == b"after restart"
    assert not temp_path(path).exists()


def test_the_stores_write_through_write_atomic(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Instance id and SIM PIN memory go through write_atomic (a failure there shows)."""
    from gateway.runtime import modem_setup
    from gateway.store import instance

    written: list[str] = []
    real = atomic.write_atomic

    def spy(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
        written.append(Path(path).name)
        real(path, data, mode)

    monkeypatch.setattr(instance, "write_atomic", spy)
    monkeypatch.setattr(modem_setup, "write_atomic", spy)
    instance.load_or_create_instance_id(tmp_path)
    pins = modem_setup.StoredPinMemory(tmp_path / "sim_pins.json")
    pins.record_rejection("iccid-1", "1234")
    assert written == ["instance-id", "sim_pins.json"]
    assert stat.S_IMODE((tmp_path / "sim_pins.json").stat().st_mode) == 0o600

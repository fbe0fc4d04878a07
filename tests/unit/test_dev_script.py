"""tools/dev: `run` after `test` does not reinstall, and an install stays quiet (issue 6, 8).

The script runs in a copy of the tree whose .venv holds stand-in `python`, `pip` and
`branchline` programs that only write down how they were called, so nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def fake(path: Path, log: Path, name: str) -> None:
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to run tools/dev")
    (tmp_path / "tools").mkdir()
    shutil.copy(REPO / "tools" / "dev", tmp_path / "tools" / "dev")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    for name in ("python", "pip", "branchline"):
        fake(bin_dir / name, log, name)
    return tmp_path


def run(tree: Path) -> list[str]:
    log = tree / "calls.log"
    log.unlink(missing_ok=True)
    proc = subprocess.run(["bash", str(tree / "tools" / "dev"), "run", "--log-level", "info"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""  # nothing before the gateway's own output
    return log.read_text().splitlines()


def stamp(tree: Path, extras: str, *, age: float = 0.0) -> None:
    path = tree / ".venv" / f".installed-{extras}"
    path.touch()
    later = time.time() + 5 - age
    os.utime(path, (later, later))


def test_run_after_test_uses_the_test_install(tree: Path) -> None:
    stamp(tree, "test,hw")  # what `tools/dev test` leaves
    assert run(tree) == ["branchline run --log-level info"]


def test_run_installs_quietly_when_nothing_covers_it(tree: Path) -> None:
    stamp(tree, "hw")  # hw alone lacks the test extra
    calls = run(tree)
    assert calls[-1] == "branchline run --log-level info"
    installs = [c for c in calls if c.startswith("pip install") and "-e" in c.split()]
    assert installs == ["pip install -qq -e .[test]"]
    assert (tree / ".venv" / ".installed-test").exists()


def test_a_changed_pyproject_makes_the_stamp_stale(tree: Path) -> None:
    stamp(tree, "test,hw", age=3600)  # older than pyproject.toml
    later = time.time()
    os.utime(tree / "pyproject.toml", (later, later))
    assert any(c.startswith("pip install -qq -e") for c in run(tree))

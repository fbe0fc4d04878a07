"""Hardware tests run only on a wired board: set BRANCHLINE_BOARD (see README.md).

The contract suites live in tests/contract; this directory subclasses them for real
hardware, so tests/ is put on the import path here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def env_pin(name: str) -> int | None:
    """A BCM pin number from the environment, or None if unset."""
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"{name}={value!r}: expected a BCM GPIO number") from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("BRANCHLINE_BOARD"):
        return
    skip = pytest.mark.skip(reason="set BRANCHLINE_BOARD (and the wiring variables) to run")
    for item in items:
        # The modem suites need a module, not a board: they skip on BRANCHLINE_MODEM_PORT.
        if not item.path.name.startswith("test_modem_"):
            item.add_marker(skip)

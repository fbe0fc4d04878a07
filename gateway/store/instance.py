"""The gateway's stable SIP instance identity (RFC 5626 +sip.instance).

Kept on disk so that a restart re-uses the same identity and the registrar replaces the
old binding instead of piling up stale ones.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` so that a power cut leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_or_create_instance_id(state_dir: Path) -> str:
    """Return "urn:uuid:…", creating and persisting it on first use."""
    path = state_dir / "instance-id"
    try:
        text = path.read_text().strip()
        return f"urn:uuid:{uuid.UUID(text.removeprefix('urn:uuid:'))}"
    except (FileNotFoundError, ValueError):
        pass
    value = f"urn:uuid:{uuid.uuid4()}"
    atomic_write(path, (value + "\n").encode())
    return value

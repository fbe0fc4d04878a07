"""The gateway's stable SIP instance identity (RFC 5626 +sip.instance).

Kept on disk so that a restart re-uses the same identity and the registrar replaces the
old binding instead of piling up stale ones.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from gateway.store.atomic import write_atomic

#: The old name of `write_atomic`, kept for callers written before it moved.
atomic_write = write_atomic


def load_or_create_instance_id(state_dir: Path) -> str:
    """Return "urn:uuid:…", creating and persisting it on first use."""
    path = state_dir / "instance-id"
    try:
        text = path.read_text().strip()
        return f"urn:uuid:{uuid.UUID(text.removeprefix('urn:uuid:'))}"
    except (FileNotFoundError, ValueError):
        pass
    value = f"urn:uuid:{uuid.uuid4()}"
    write_atomic(path, (value + "\n").encode())
    return value

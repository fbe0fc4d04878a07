"""What the daemon process itself holds: memory, threads and the optional libraries loaded.

`branchline status` reports it under "process", so an admin (and the footprint tests and
bench) can see that only what the config needs was loaded: numpy once a line has had
audio to process, the SRTP crypto once a trunk wants SRTP, dnspython once a trunk name
needs looking up. Linux /proc only; fields that cannot be read are None.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

OPTIONAL_LIBRARIES = ("numpy", "cryptography", "pylibsrtp", "dns", "_cffi_backend")
"""Top-level modules that are heavy (a few MB each) and loaded only on demand."""


def _status_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def process_info() -> dict[str, Any]:
    """RSS, thread counts and which optional libraries are loaded, for the status reply.

    `native_threads` counts threads Python did not start (a BLAS pool, for one): it
    should be 0.
    """
    try:
        fields = _status_fields(Path("/proc/self/status").read_text())
        rss_kib: int | None = int(fields["VmRSS"].split()[0])
        threads: int | None = int(fields["Threads"])
    except (OSError, KeyError, ValueError, IndexError):
        rss_kib = threads = None
    python_threads = threading.active_count()
    return {
        "rss_kib": rss_kib,
        "threads": threads,
        "python_threads": python_threads,
        "native_threads": None if threads is None else threads - python_threads,
        "loaded": [name for name in OPTIONAL_LIBRARIES if name in sys.modules],
    }

"""What durability costs: SmsQueue.store and mark_delivered with synchronous=FULL vs NORMAL.

The queue runs SQLite in WAL mode with synchronous=FULL so that a power cut cannot lose an
SMS that `store()` acknowledged (the modem then deletes it from the SIM). This prints the
median and 95th percentile time of one store and one mark_delivered on the given
directory's file system, for FULL (what the queue uses) and NORMAL (the reference: crash
safe, not power-cut safe). Run it on the SD card of the target to see the real figure:

    .venv/bin/python -m bench.sms_queue --dir /var/lib/branchline --count 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gateway.store.sms_queue import Sms, SmsQueue


def measure(directory: Path, mode: str, count: int) -> tuple[list[float], list[float]]:
    """Per-operation seconds for `count` stores and as many mark_delivered calls."""
    path = directory / f"bench-{mode.lower()}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    stores: list[float] = []
    marks: list[float] = []
    with SmsQueue(path, cap=count * 2) as queue:
        queue._conn().execute(f"PRAGMA synchronous={mode}")
        sms = Sms(originator="+41791234567", text="x" * 160, received_at=0.0, imei="1")
        for i in range(count):
            start = time.perf_counter()
            message_id = queue.store(sms, ["http://127.0.0.1/hook"], float(i))
            stores.append(time.perf_counter() - start)
            queue.due(float(i))
            start = time.perf_counter()
            queue.mark_delivered(message_id, "http://127.0.0.1/hook", float(i))
            marks.append(time.perf_counter() - start)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return stores, marks


def p95(values: list[float]) -> float:
    """95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory on the file system to measure (default: a temp dir)")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = {mode: measure(Path(tmp), mode, args.count) for mode in ("FULL", "NORMAL")}
    print(f"{args.count} SMS, file system of {args.dir or tempfile.gettempdir()}")
    print(f"{'mode':8} {'store median':>13} {'store p95':>10} {'mark median':>12} {'mark p95':>9}")
    for mode, (stores, marks) in results.items():
        print(f"{mode:8} {statistics.median(stores) * 1e3:10.2f} ms {p95(stores) * 1e3:7.2f} ms"
              f" {statistics.median(marks) * 1e3:9.2f} ms {p95(marks) * 1e3:6.2f} ms")
    full = statistics.median(results["FULL"][0])
    normal = statistics.median(results["NORMAL"][0])
    print(f"store FULL/NORMAL median ratio: {full / normal:.1f}")


if __name__ == "__main__":
    main()

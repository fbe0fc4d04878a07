"""What call records cost the event loop: a 20 ms tick while 50 records/s are written.

The daemon's audio runs on a 20 ms tick in the event loop; an fsync there (SQLite with
synchronous=FULL commits one per transaction, milliseconds to tens of milliseconds on an SD
card) would delay frames. `CallRecorder` keeps the fsync in a writer thread and only
appends each record to a journal (one write(), no fsync) on the loop. This runs a 20 ms
ticker on an asyncio loop and, for `--seconds` each, measures the tick lateness (how long
after its due time each tick ran):

- idle: no records (the baseline);
- recorder: `--rate` records/s through CallRecorder.submit (what the daemon does);
- inline: the same records committed with CallStore.record on the loop (the reference:
  what writing in end_call itself would cost).

It prints the median, 99th percentile and maximum lateness of each phase, the time one
submit() and one CallRecord build take on the loop, and the writer thread's commit time.
Run it on the target's SD card to see the real figures:

    .venv/bin/python -m bench.call_records --dir /var/lib/branchline --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from gateway.store.call_writer import CallRecorder
from gateway.store.calls import CallRecord, CallStore

TICK = 0.020


def make_record(n: int) -> CallRecord:
    now = time.time()
    return CallRecord(
        uuid=str(uuid.uuid4()), call_id=f"bench-{n}@127.0.0.1", direction="out",
        port_a="1", port_a_kind="fxs", port_b="main", port_b_kind="trunk", start=now - 60,
        answer=now - 55, end=now, outcome="answered", cause="remote-bye",
        reason="remote BYE", remote="sip:300@pbx.example.net", route="trunk:main",
        target="sip:300@pbx.example.net",
        attempts=({"target": "trunk:main", "result": "placed", "status": None},),
        codec="PCMA", rtp_loss_pct=0.3, jitter_ms=2.1, mos=4.35, r_factor=91.2,
        packets_received=2750, packets_sent=2750)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def phase(seconds: float, rate: float, write: object) -> list[float]:
    """Tick lateness (s) over `seconds`, calling `write(n)` `rate` times a second."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    start = loop.time()
    due = start + TICK
    every = max(1, round(1 / (rate * TICK))) if rate else 0
    n = 0
    tick = 0
    done = asyncio.Event()

    def on_tick() -> None:
        nonlocal due, n, tick
        now = loop.time()
        late.append(now - due)
        tick += 1
        if every and tick % every == 0 and callable(write):
            write(n)
            n += 1
        due += TICK
        if due - start > seconds:
            done.set()
            return
        loop.call_at(due, on_tick)

    loop.call_at(due, on_tick)
    await done.wait()
    return late


def show(name: str, late: list[float]) -> None:
    print(f"{name:9s} ticks {len(late):5d}  lateness median {1000 * statistics.median(late):6.3f} ms"
          f"  p99 {1000 * pct(late, 0.99):6.3f} ms  max {1000 * max(late):6.3f} ms")


async def main_async(directory: Path, seconds: float, rate: float) -> None:
    for name in ("calls.db", "calls.db-wal", "calls.db-shm", "calls.journal"):
        (directory / name).unlink(missing_ok=True)
    store = CallStore(directory / "calls.db", push=True)
    commits: list[float] = []
    original = store.record_many

    def timed(recs, bodies=None):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return original(recs, bodies)
        finally:
            commits.append(time.perf_counter() - t)

    store.record_many = timed  # type: ignore[method-assign]
    recorder = CallRecorder(store, directory / "calls.journal")
    recorder.start()
    builds: list[float] = []
    submits: list[float] = []

    def via_recorder(n: int) -> None:
        t = time.perf_counter()
        rec = make_record(n)
        t1 = time.perf_counter()
        recorder.submit(rec)
        submits.append(time.perf_counter() - t1)
        builds.append(t1 - t)

    inline: list[float] = []

    def on_loop(n: int) -> None:
        rec = make_record(100_000 + n)
        t = time.perf_counter()
        store.record(rec)
        inline.append(time.perf_counter() - t)

    show("idle", await phase(seconds, 0, None))
    show("recorder", await phase(seconds, rate, via_recorder))
    recorder.flush(10)
    thread_commits = list(commits)
    show("inline", await phase(seconds, rate, on_loop))
    recorder.close()
    print(f"records/s {rate:g}: {len(submits)} through the recorder, {len(inline)} inline")
    print(f"on the loop per record: build median {1e6 * statistics.median(builds):.1f} us, "
          f"submit (journal write) median {1e6 * statistics.median(submits):.1f} us, "
          f"p99 {1e6 * pct(submits, 0.99):.1f} us")
    print(f"writer thread: {len(thread_commits)} commits, median "
          f"{1000 * statistics.median(thread_commits):.2f} ms, p99 "
          f"{1000 * pct(thread_commits, 0.99):.2f} ms per commit (synchronous=FULL)")
    print(f"inline commit on the loop: median {1000 * statistics.median(inline):.2f} ms, "
          f"p99 {1000 * pct(inline, 0.99):.2f} ms, max {1000 * max(inline):.2f} ms")
    print(f"stored: {store.count()} records, outbox {store.outbox_depth()}")
    store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None,
                   help="where the database goes (default: a temporary directory)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--rate", type=float, default=50.0, help="records per second")
    args = p.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main_async(args.dir, args.seconds, args.rate))
        return
    with tempfile.TemporaryDirectory(dir=str(Path.home())) as tmp:
        asyncio.run(main_async(Path(tmp), args.seconds, args.rate))


if __name__ == "__main__":
    main()

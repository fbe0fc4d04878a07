"""Registrar bindings on disk (gateway/store/bindings.py): atomic, coalesced, restart-proof."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from gateway.sip.message import Request, build_request
from gateway.sip.registrar import Limits, Registrar
from gateway.store import bindings as store_mod
from gateway.store.bindings import BindingsStore, decode, encode

SRC = ("198.51.100.4", 5062)


def register(user: str, contact: str, expires: int, cseq: int = 1) -> Request:
    return build_request("REGISTER", "sip:gw", from_addr=f"<sip:{user}@gw>;tag=1",
                         to_addr=f"<sip:{user}@gw>", call_id=f"{user}-call", cseq=cseq,
                         via=f"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{user}{cseq}",
                         contact=f"<{contact}>", extra=[("Expires", str(expires))])


def registrar() -> Registrar:
    return Registrar(Limits(), "gw", users=["201", "202"])


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_encode_decode_takes_off_the_time_on_disk() -> None:
    r = registrar()
    r.handle(register("201", "sip:201@10.0.0.1", 600), SRC, "udp", "201", 0.0)
    data = encode(r.snapshot(100.0), 1_000_000.0)
    snap = decode(data, 1_000_000.0 + 50.0)
    assert snap["bindings"][0]["expires_in"] == pytest.approx(450.0)
    # a wall clock set back never lengthens a binding
    assert decode(data, 999_000.0)["bindings"][0]["expires_in"] == pytest.approx(500.0)


def test_saved_on_change_coalesced_atomic_and_restored_after_a_restart(tmp_path: Path) -> None:
    wall = Wall(1_000_000.0)

    async def first_daemon() -> BindingsStore:
        loop = asyncio.get_running_loop()
        r = registrar()
        store = BindingsStore(tmp_path, r, loop, delay=0.05, wall_clock=wall)
        assert store.load() == 0  # first start: no file
        now = loop.time()
        for cseq in range(1, 21):  # a burst of refreshes: one write, not twenty
            r.handle(register("201", "sip:201@10.0.0.1:5060", 600, cseq), SRC, "udp", "201", now)
            store.changed()
        r.handle(register("202", "sip:202@10.0.0.2", 60), SRC, "tcp", "202", now)
        store.changed()
        assert not store.path.exists()
        await asyncio.sleep(0.3)
        assert store.writes == 1 and store.describe()["unsaved"] is False
        assert [p.name for p in tmp_path.iterdir()] == ["bindings.json"]  # no temp left
        r.handle(register("202", "sip:202@10.0.0.2", 0, 2), SRC, "udp", "202", loop.time())
        store.changed()
        await store.close()  # saves what is pending at once
        assert store.writes == 2
        return store

    asyncio.run(first_daemon())
    doc = json.loads((tmp_path / "bindings.json").read_text())
    assert [row["user"] for row in doc["bindings"]] == ["201"]
    assert (tmp_path / "bindings.json").stat().st_mode & 0o777 == 0o600
    wall.t += 100.0  # the daemon was down for 100 s

    async def second_daemon() -> None:
        loop = asyncio.get_running_loop()
        r = registrar()
        store = BindingsStore(tmp_path, r, loop, wall_clock=wall)
        assert store.load() == 1
        [b] = r.lookup("201", loop.time())
        assert (b.contact, b.source, b.transport, b.cseq) == (
            "sip:201@10.0.0.1:5060", SRC, "udp", 20)
        assert b.expires_at - loop.time() == pytest.approx(500.0, abs=1.0)
        store.changed()  # nothing changed since the load: no write
        await asyncio.sleep(0.2)
        assert store.writes == 0
        await store.close()

    asyncio.run(second_daemon())


def test_expired_bindings_are_dropped_at_load(tmp_path: Path) -> None:
    r = registrar()
    r.handle(register("201", "sip:201@10.0.0.1", 60), SRC, "udp", "201", 0.0)
    r.handle(register("202", "sip:202@10.0.0.2", 600), SRC, "udp", "202", 0.0)
    (tmp_path / "bindings.json").write_bytes(encode(r.snapshot(0.0), 5000.0))

    async def load() -> Registrar:
        fresh = registrar()
        store = BindingsStore(tmp_path, fresh, asyncio.get_running_loop(),
                              wall_clock=Wall(5000.0 + 61.0))
        assert store.load() == 1
        return fresh

    fresh = asyncio.run(load())
    assert fresh.all_bindings(0.0).keys() == {"202"}


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"saved_at": 1}', b"\xff\xfe",
                                     b'{"saved_at": 1, "version": 7, "bindings": []}'])
def test_a_corrupt_file_is_set_aside_and_reported_not_fatal(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bindings.json").write_bytes(content)

    async def load() -> int:
        store = BindingsStore(tmp_path, registrar(), asyncio.get_running_loop(),
                              wall_clock=Wall(1234.0))
        return store.load()

    assert asyncio.run(load()) == 0
    assert not (tmp_path / "bindings.json").exists()
    assert (tmp_path / "bindings.json.corrupt-1234").read_bytes() == content
    assert "set aside" in caplog.text


def test_a_failed_write_is_counted_and_retried_later_not_in_a_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def failing(path: Path, data: bytes, mode: int = 0o600) -> None:
        calls.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod, "atomic_write", failing)

    async def run() -> BindingsStore:
        loop = asyncio.get_running_loop()
        r = registrar()
        store = BindingsStore(tmp_path, r, loop, delay=0.01, retry_after=0.2)
        r.handle(register("201", "sip:201@10.0.0.1", 600), SRC, "udp", "201", loop.time())
        store.changed()
        await asyncio.sleep(0.1)
        assert store.errors == 1 and store.describe()["unsaved"] is True
        await asyncio.sleep(0.2)
        return store

    store = asyncio.run(run())
    assert store.errors == 2 and store.writes == 0 and len(calls) == 2
    assert not os.path.exists(tmp_path / "bindings.json")

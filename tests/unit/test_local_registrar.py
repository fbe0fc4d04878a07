"""The daemon's registrar wiring (gateway/runtime/local_registrar.py) and its status rows."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from gateway import cli
from gateway.runtime.local_registrar import start_local_registrar
from gateway.sip.events import Accept, BindingsChanged
from gateway.sip.message import build_request
from gateway.sip.registrar import Limits
from gateway.sip.ua import UserAgent


@dataclass(frozen=True)
class Phone:
    user: str
    password: str
    number: str
    display_name: str | None = None


@dataclass(frozen=True)
class Gw:
    name: str
    state_dir: str


@dataclass(frozen=True)
class Cfg:
    gateway: Gw
    sip_phones: tuple[Phone, ...]
    registrar: Limits = Limits(min_expires=30, default_expires=300)


def register_bytes(user: str, port: int) -> bytes:
    return bytes(build_request(
        "REGISTER", "sip:box", from_addr=f"<sip:{user}@box>;tag=1", to_addr=f"<sip:{user}@box>",
        call_id=f"{user}-1", cseq=1, via=f"SIP/2.0/UDP 10.0.0.5:{port};branch=z9hG4bK{user};rport",
        contact=f"<sip:{user}@10.0.0.5:{port}>", extra=[("Expires", "40")]))


def test_no_phones_no_registrar(tmp_path: Path) -> None:
    async def run() -> None:
        ua = UserAgent(local_host="127.0.0.1", local_port=5060, instance_id="urn:uuid:1")
        assert start_local_registrar(Cfg(Gw("box", str(tmp_path)), ()), asyncio.get_running_loop(),
                                     ua) is None
        assert ua.registrar is None

    asyncio.run(run())


def test_phones_register_are_saved_shown_and_restored_as_events(tmp_path: Path) -> None:
    cfg = Cfg(Gw("box", str(tmp_path)), (Phone("201", "pw-201-long", "201", "Alice"),
                                         Phone("202", "pw-202-long", "22")))

    async def first() -> list[dict[str, object]]:
        loop = asyncio.get_running_loop()
        ua = UserAgent(local_host="127.0.0.1", local_port=5060, instance_id="urn:uuid:1",
                       request_filter=lambda req, *a: Accept(user=req.to_addr.uri.user))
        local = start_local_registrar(cfg, loop, ua)
        assert local is not None and ua.registrar is local.registrar
        assert local.registrar.settings.min_expires == 30  # the config's limits
        ua.receive_datagram(register_bytes("201", 5070), ("192.0.2.9", 61000), loop.time())
        assert b"SIP/2.0 200 OK" in ua.messages_out()[0].data
        await asyncio.sleep(0.3)  # the coalesced save
        assert local.store.writes == 1
        await local.close()
        return local.status()

    status = asyncio.run(first())
    assert status[0]["user"] == "201" and status[0]["registered"] is True
    [contact] = status[0]["contacts"]  # type: ignore[misc]
    assert contact["source"] == "192.0.2.9:61000" and contact["transport"] == "udp"
    assert 39 <= contact["expires_in"] <= 40
    assert status[1] == {"user": "202", "number": "22", "display_name": None,
                         "registered": False, "contacts": []}
    text = "\n".join(cli.format_phones({"phones": status}))
    assert "sip:201@10.0.0.5:5070" in text and "192.0.2.9:61000" in text
    assert "not registered" in text.splitlines()[-1]

    async def second() -> None:
        loop = asyncio.get_running_loop()
        ua = UserAgent(local_host="127.0.0.1", local_port=5060, instance_id="urn:uuid:1")
        local = start_local_registrar(cfg, loop, ua)
        assert local is not None
        event = ua.next_event()  # lane P learns the restored binding like a new one
        assert isinstance(event, BindingsChanged) and event.user == "201"
        assert event.bindings[0].source == ("192.0.2.9", 61000)

    asyncio.run(second())

"""Control-socket commands ``sms`` and ``ussd`` (see gateway.cli_sms)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.runtime.control_handlers import ControlCommandError
from gateway.runtime.sms_service import SmsService, UssdError
from hal.base import HalError

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

MAX_WAIT = 120.0


def _service(gw: Gateway) -> SmsService:
    service: SmsService | None = getattr(gw, "sms", None)
    if service is None or service.queue is None:
        raise ControlCommandError("no SMS service: no modem is configured")
    return service


def _number(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ControlCommandError(f"{name}: expected seconds >= 0, got {value!r}")
    return min(float(value), MAX_WAIT)


async def sms(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    service = _service(gw)
    action = request.get("action")
    if action == "status":
        return service.status()
    if action != "send":
        raise ControlCommandError(f"unknown sms action {action!r}: send, status")
    modem, number, text = request.get("modem"), request.get("number"), request.get("text")
    if not all(isinstance(v, str) and v for v in (modem, number, text)):
        raise ControlCommandError("sms send needs modem, number and text")
    assert isinstance(modem, str) and isinstance(number, str) and isinstance(text, str)
    wait = _number(request.get("wait"), "wait", 30.0)
    try:
        message_id = await service.send(modem, number, text)
    except KeyError as exc:
        raise ControlCommandError(str(exc.args[0])) from None
    queue = service.queue
    assert queue is not None
    deadline = gw.loop.time() + wait
    while True:
        stored = await asyncio.to_thread(queue.get, message_id)
        if stored is None:
            raise ControlCommandError(f"sms {message_id} vanished from the queue")
        state = stored.deliveries[0] if stored.deliveries else None
        if stored.delivered or gw.loop.time() >= deadline:
            return {"id": message_id, "delivered": stored.delivered,
                    "attempts": state.attempts if state else 0,
                    "last_error": state.last_error if state else ""}
        await asyncio.sleep(0.1)


async def ussd(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    service = _service(gw)
    modem, code = request.get("modem"), request.get("code")
    if not isinstance(modem, str) or not isinstance(code, str):
        raise ControlCommandError("ussd needs modem and code")
    try:
        return await service.ussd(modem, code, _number(request.get("timeout"), "timeout", 20.0))
    except KeyError as exc:
        raise ControlCommandError(str(exc.args[0])) from None
    except (UssdError, HalError) as exc:
        raise ControlCommandError(str(exc)) from None

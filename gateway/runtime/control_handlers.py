"""Control-socket commands: what `branchline status` and `branchline phone …` ask the daemon.

Each handler returns a JSON-able dict; a ControlCommandError becomes {"ok": false, "error": …}
with a message an admin can act on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.runtime.control import ControlError, Stream
from gateway.runtime.forwarding import forwarding_status
from gateway.runtime.process import process_info

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway
    from gateway.runtime.ports import LinePort


class ControlCommandError(ControlError):
    """A control request that cannot be carried out; the message goes back to the CLI."""


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 2)
    return value


def status(gw: Gateway) -> dict[str, Any]:
    now = gw.loop.time()
    pusher = getattr(gw, "pusher", None)
    return {
        "registrations": [
            {
                "account": r.account_id,
                "trunk": r.trunk,
                "aor": r.aor,
                "registered": r.registered,
                "reason": r.reason,
                "expires": r.expires,
            }
            for r in gw.registrations.values()
        ],
        # Each trunk's health: state, last transition with its cause and detection time.
        "trunks": [
            {"name": name, "health": health}
            for name, health in (gw.trunk_health.describe(now)
                                 if gw.trunk_health is not None else {}).items()
        ],
        "lines": [
            {
                "name": lp.name,
                "number": lp.number,
                "backend": lp.config.backend,
                "hook": "off" if lp.port.is_off_hook() else "on",
                "state": lp.line.state.value,
                "ringing": lp.ringing,
                "tone": lp.tone_name,
                "call_id": lp.call_id,
                "forwarding": forwarding_status(gw, lp.name),  # call forward and DND
                # message waiting (gateway/runtime/mwi.py): waiting, counts, subscription
                "mwi": gw.mwi.status(lp.name) if gw.mwi is not None else None,
            }
            for lp in gw.lines.values()
        ],
        "calls": [c.describe(now) for c in gw.calls.values()],
        "modems": [{**d.status(), **gw.gsm_minutes(d.name)} for d in gw.modems.values()],
        "fxo": gw.fxo_status(),  # exchange lines: state, polarity, loop, last caller ID
        "phones": gw.phones_status(),  # registrations, plus each phone's call and relay
        "sip": dict(gw.ua.stats) if gw.ua is not None else {},
        "sip_tables": gw.ua.table_sizes() if gw.ua is not None else {},
        "transport": {**gw.sip.stats, **gw.sip.kernel_stats()} if gw.sip is not None else {},
        "sip_trace": gw.sip.trace.describe() if gw.sip is not None else {},
        "process": process_info(),
        # The call push: queue depth, last error and success (never the token).
        "push": pusher.status() if pusher is not None else None,
        "call_records": gw.records_status(),  # committed/pending, last store error
        # Reloads: counts, lines waiting to take new settings, the last result.
        "reload": gw.reloader.status() if gw.reloader is not None else None,
    }


def _line(gw: Gateway, name: Any) -> LinePort:
    lp = gw.lines.get(str(name))
    if lp is None:
        lp = next((x for x in gw.lines.values() if x.number == str(name)), None)
    if lp is None:
        known = ", ".join(gw.lines) or "none"
        raise ControlCommandError(f"no line {name!r} (lines: {known})")
    return lp


def _phone(lp: LinePort) -> Any:
    phone = lp.simulated_phone
    if phone is None:
        raise ControlCommandError(
            f"line {lp.name} uses backend {lp.config.backend!r}: only simulated lines have a "
            "virtual handset to drive"
        )
    return phone


def _tone_frequencies(lp: LinePort, phone: Any) -> list[float]:
    """Which of the country's call-progress frequencies the handset hears (e.g. 350 + 440)."""
    from gateway.dsp.analysis import dominant_frequency, frequencies_present

    pcm = phone.heard(0.2)
    if not pcm:
        return []
    candidates = sorted({f for spec in lp.profile.tones().values() for f in spec.frequencies})
    found = list(frequencies_present(pcm, candidates))
    if not found:
        dominant = dominant_frequency(pcm)
        return [round(dominant, 1)] if dominant else []
    return [round(f, 1) for f in found]


def line_state(gw: Gateway, lp: LinePort) -> dict[str, Any]:
    call = gw.calls.get(lp.call_id) if lp.call_id else None
    return {
        "line": lp.name,
        "number": lp.number,
        "hook": "off" if lp.port.is_off_hook() else "on",
        "ringing": lp.ringing,
        "state": lp.line.state.value,
        "tone": lp.tone_name,
        "digits": lp.line.digits,
        "call": call.describe(gw.loop.time()) if call is not None else None,
        "calls": list(lp.line.call_ids()),  # current first, then a waiting or held one
        "conference": lp.line.conference,
        "forwarding": forwarding_status(gw, lp.name),  # call forward and DND
        # the simulated handset's last ring bursts, (start, end) in phone seconds
        "rings": [list(r) for r in getattr(lp.simulated_phone, "rings", [])[-12:]],
        # its loop polarity changes outside ringing, (t, "normal" | "reversed")
        "polarity": [list(p) for p in getattr(lp.simulated_phone, "polarity_log", [])[-12:]],
    }


async def phone(gw: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    lp = _line(gw, request.get("line"))
    action = request.get("action")
    if action == "state":
        return line_state(gw, lp)
    ph = _phone(lp)
    if action == "offhook":
        ph.off_hook()
        await asyncio.sleep(0.05)  # let the hook debounce settle so the reply shows dial tone
    elif action == "onhook":
        ph.on_hook()
    elif action == "flash":
        duration = float(request.get("duration_ms", 300))
        if not 10 <= duration <= 3000:
            raise ControlCommandError("flash duration_ms: 10 to 3000")
        ph.flash(duration)
    elif action == "dial":
        digits = str(request.get("digits", ""))
        bad = [c for c in digits if c not in "0123456789*#ABCD"]
        if not digits or bad:
            raise ControlCommandError(f"cannot dial {digits!r}: digits are 0-9, *, #, A-D")
        mode = "pulse" if request.get("mode") == "pulse" else "dtmf"
        if mode == "pulse" and any(c not in "0123456789" for c in digits):
            raise ControlCommandError("pulse dialling sends digits 0-9 only")
        ph.dial(digits, mode=mode)
    elif action == "hears":
        report = _jsonable(ph.hears())
        report["frequencies"] = _tone_frequencies(lp, ph)
        report["cidcw"] = list(getattr(ph, "cidcw_received", []))  # type-2 caller ID shown
        return {"line": lp.name, **report}
    elif action == "play":
        path = Path(str(request.get("path", "")))
        if not path.is_file():
            raise ControlCommandError(f"no such WAV file: {path}")
        try:
            ph.play(str(path), loop=not request.get("once", False))
        except (ValueError, OSError) as exc:
            raise ControlCommandError(f"cannot play {path}: {exc}") from exc
    elif action == "stop":
        ph.stop_play()
    elif action == "record":
        path = Path(str(request.get("path", "")))
        seconds = float(request.get("seconds", 0))
        if not 0 < seconds <= 600:
            raise ControlCommandError("record needs 0 < SECONDS <= 600")
        if not path.parent.is_dir():
            raise ControlCommandError(f"directory {path.parent} does not exist")
        ph.record(str(path), seconds)
        # The recording is made of the next SECONDS of earpiece frames; wait for it.
        deadline = gw.loop.time() + seconds + 5.0
        await asyncio.sleep(seconds)
        while not path.exists() and gw.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not path.exists():
            raise ControlCommandError(f"recording {path} did not complete")
        return {"line": lp.name, "path": str(path), "seconds": seconds}
    else:
        raise ControlCommandError(
            f"unknown phone action {action!r}: offhook, onhook, flash, dial, hears, play, "
            "stop, record, state"
        )
    gw._pump()
    return line_state(gw, lp)


def trace(gw: Gateway, request: dict[str, Any]) -> dict[str, Any] | Stream:
    """`trace on|off|status` switch the SIP trace in the debug log; `watch` streams it."""
    from gateway.runtime.trace import trace_command

    if gw.sip is None:
        raise ControlCommandError("SIP is not running yet")
    try:
        return trace_command(gw.sip.trace, request)
    except ValueError as exc:
        raise ControlCommandError(str(exc)) from exc


async def handle(gw: Gateway, request: dict[str, Any]) -> Any:
    """Dispatch one control request."""
    cmd = request.get("cmd")
    try:
        if cmd == "status":
            return status(gw)
        if cmd == "phone":
            return await phone(gw, request)
        if cmd == "security":
            from gateway.runtime.control_security import handle as security

            return security(gw, request)
        if cmd == "trace":
            return trace(gw, request)
        if cmd == "reload":  # the config file again, applied live (gateway/runtime/reload.py)
            from gateway.runtime.reload import reloader_of

            return await reloader_of(gw).reload()
        if cmd == "fxo":  # an exchange line; on sim, its simulated exchange
            from gateway.runtime.control_fxo import fxo

            return await fxo(gw, request)
        if cmd == "line-test":  # an installer's check of one idle FXS line
            from gateway.runtime.line_test import line_test

            return await line_test(gw, request)
        if cmd == "calls":
            from gateway.runtime.control_calls import calls

            return await calls(gw, request)
        if cmd in ("sms", "ussd"):
            from gateway.runtime import control_sms

            return await (control_sms.sms if cmd == "sms" else control_sms.ussd)(gw, request)
        raise ControlCommandError(
            f"unknown command {cmd!r}: status, phone, security, trace, sms, ussd, calls, "
            "line-test")
    except ControlCommandError:
        raise
    except Exception as exc:  # report, don't kill the daemon
        raise ControlCommandError(f"{cmd}: {exc}") from exc

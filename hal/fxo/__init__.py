"""FXO (exchange line) backends by name, imported only when used, and the options each reads.

``sim`` is the real `DaaFxo` driver on mock pins with a simulated exchange on the far side
(:mod:`hal.sim.fxo_line`); ``daa`` is the same driver on a board's pins with ALSA audio.
`FXO_OPTIONS` is the one list of what an FXO line's ``options`` may hold: the keys every
backend shares are read by the runtime (`gateway.runtime.fxo_port`), the rest by the driver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from hal.base import FxoPort, HalError
from hal.registry import OptionProblem, OptionSpec, check_options, did_you_mean

FXO_BACKENDS: dict[str, tuple[str, str, str]] = {
    "sim": ("hal.sim.fxo_line", "SimFxo", "branchline (the simulated backend ships with it)"),
    "daa": ("hal.fxo.daa", "DaaFxo", "gpiozero and pyalsaaudio (branchline[hw])"),
}

_PIN = OptionSpec(("int", "str"), "a GPIO pin: a BCM number or a name such as 'GPIO17'")
_REQUIRED_PIN = OptionSpec(_PIN.kinds, _PIN.expected, required=True)
_BOOL = OptionSpec(("bool",), "true or false")
_MS = OptionSpec(("number",), "milliseconds >= 0", minimum=0)

#: Read by the runtime for every backend: where calls go, how to dial, how to supervise.
FXO_LINE_OPTIONS: dict[str, OptionSpec] = {
    "inbound": OptionSpec(("str",), "where a call ringing on the line goes: 'line:<fxs line>', "
                          "'trunk:<name>' or 'local' (the port whose number is "
                          "inbound_number: an FXS line or a local SIP phone)"),
    "inbound_number": OptionSpec(("str",), "the number an incoming call is for (digits)"),
    "dial_mode": OptionSpec(("str",), "'tone' (dial after dial tone) or 'delay'",
                            choices=("tone", "delay")),
    "dial_delay_ms": _MS,
    "dial_tone_timeout_ms": _MS,
    "answer": OptionSpec(("str",), "'dialled' (or 'immediate': answered once dialled, the "
                         "default), 'polarity' (at the exchange's answer reversal) or 'voice' "
                         "(sound after the ringback)",
                         choices=("dialled", "immediate", "polarity", "voice")),
    "answer_timeout_ms": _MS,
    "reversal_disconnect": _BOOL,
    "loop_drop_ms": _MS,
    "ring_timeout_ms": _MS,
    "release_guard_ms": _MS,
    "wait_callerid": _BOOL,
    "country": OptionSpec(("str",), "a country code for the tones heard on the line "
                          "(default gateway.country)"),
    "echo_canceller": OptionSpec(("bool",), "true or false: cancel the DAA hybrid's echo "
                                 "(default true on hardware)"),
    "echo_tail_ms": OptionSpec(("int",), "the echo canceller's tail in ms, 8 to 256 "
                               "(default 64)", minimum=8),
}

FXO_OPTIONS: dict[str, dict[str, OptionSpec]] = {
    "sim": {
        **FXO_LINE_OPTIONS,
        "ring_pin": _PIN,
        "hook_pin": _PIN,
        "loop_pin": _PIN,
        "polarity_pin": _PIN,
        "clock": OptionSpec(("str",), "'monotonic' or 'frames'", choices=("monotonic", "frames")),
        "callerid": OptionSpec(("str",), "the caller ID method the simulated exchange sends "
                               "(default the country's)"),
        "reverse_on_answer": _BOOL,
        "answer_after_ms": _MS,
        "far_tone_hz": OptionSpec(("number",), "the tone the far party says, in Hz", minimum=1),
        "dial_tone": OptionSpec(("bool",), "false: the simulated exchange gives no dial tone"),
        "echo_delay_ms": OptionSpec(("number", "null"), "simulated hybrid echo delay in ms "
                                    "(0 to 200), or null for none", minimum=0),
        "echo_erl_db": OptionSpec(("number",), "simulated echo return loss in dB (default 6)"),
    },
    "daa": {
        **FXO_LINE_OPTIONS,
        "ring_pin": _REQUIRED_PIN,
        "hook_pin": _REQUIRED_PIN,
        "loop_pin": _PIN,
        "polarity_pin": _PIN,
        "ring_active_high": _BOOL,
        "loop_active_high": _BOOL,
        "polarity_active_high": _BOOL,
        "ring_hold_ms": OptionSpec(("number",), "ms, 20 to 1000 (default 120)", minimum=20),
        "audio_device": OptionSpec(("str",), "an ALSA device name such as 'default' or 'hw:1'"),
        "pin_factory": OptionSpec(
            ("str", "null"), "one of 'mock', 'lgpio', 'rpigpio', 'native', or null",
            choices=("mock", "lgpio", "rpigpio", "native"),
        ),
    },
}


def known_fxo_backends() -> tuple[str, ...]:
    return tuple(sorted(FXO_BACKENDS))


def check_fxo_options(backend: str, options: Mapping[str, Any]) -> list[OptionProblem]:
    """Every problem with `options` for a known FXO backend (unknown keys, types, missing)."""

    def extra(key: str, value: Any) -> str | None:
        if key == "inbound":
            return _inbound_problem(str(value))
        if key == "inbound_number" and not str(value).isdigit():
            return f"got {value!r}"
        return None

    return check_options(FXO_OPTIONS.get(backend, {}), backend, options,
                         what="FXO backend", extra=extra)


def _inbound_problem(text: str) -> str | None:
    from gateway.routing.targets import (
        LineTarget,
        LocalTarget,
        TargetError,
        TrunkTarget,
        parse_target,
    )

    try:
        target = parse_target(text)
    except TargetError:
        return f"got {text!r}"
    if not isinstance(target, LineTarget | TrunkTarget | LocalTarget):
        return f"got {text!r} (an incoming call cannot go out on {text.split(':')[0]})"
    return None


def create_fxo(backend: str, name: str, options: Mapping[str, Any] | None = None) -> FxoPort:
    """Create the FXO port ``name`` with the named backend and its config options."""
    opts = dict(options or {})
    try:
        module_name, attr, package = FXO_BACKENDS[backend]
    except KeyError:
        raise HalError(
            f"unknown FXO backend {backend!r}{did_you_mean(backend, FXO_BACKENDS)}; "
            f"known: {', '.join(known_fxo_backends())}") from None
    problems = check_fxo_options(backend, opts)
    if problems:
        raise HalError(f"{backend} FXO port {name}: " + "; ".join(
            p.message + (f" (expected: {p.expected})" if p.expected else "") for p in problems))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HalError(f"FXO backend {backend!r} cannot load: module "
                       f"{exc.name or module_name!r} is missing; install {package}") from exc
    factory: Callable[..., Any] = getattr(module, attr)
    driver = {k: v for k, v in opts.items() if k not in FXO_LINE_OPTIONS or k == "country"}
    if backend == "daa":
        return _create_daa(factory, name, driver)
    port = factory(name, driver)
    assert isinstance(port, FxoPort)
    return port


def _create_daa(factory: Callable[..., Any], name: str, opts: dict[str, Any]) -> FxoPort:
    from hal.audio.alsa import AlsaAudio
    from hal.gpio import pin_factory

    audio = AlsaAudio(str(opts.get("audio_device", "default")))
    try:
        port = factory(
            name,
            ring_pin=opts["ring_pin"],
            hook_pin=opts["hook_pin"],
            loop_pin=opts.get("loop_pin"),
            polarity_pin=opts.get("polarity_pin"),
            audio=audio,
            pin_factory=pin_factory(opts.get("pin_factory")),
            ring_active_high=bool(opts.get("ring_active_high", False)),
            loop_active_high=bool(opts.get("loop_active_high", True)),
            polarity_active_high=bool(opts.get("polarity_active_high", True)),
            ring_hold_ms=float(opts.get("ring_hold_ms", 120.0)),
        )
    except Exception:
        audio.close()
        raise
    assert isinstance(port, FxoPort)
    return port

"""Backend name -> driver, imported only when used.

A board without ALSA or lgpio can still import the hal and run the simulated backends;
asking for a backend whose module is missing says which package to install.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.dsp.callerid import METHODS as CALLERID_METHODS
from hal.base import FxoPort, FxsPort, HalError

# name -> (module, factory function in that module, what to install if it is missing)
FXS_BACKENDS: dict[str, tuple[str, str, str]] = {
    "sim": ("hal.sim.fxs", "SimFxs", "branchline (the simulated backend ships with it)"),
    "ag1171": ("hal.slic.ag1171", "Ag1171Fxs", "gpiozero and pyalsaaudio (branchline[hw])"),
    "null": ("hal.null", "NullFxs", "branchline (the null backend ships with it)"),
}


@dataclass(frozen=True)
class OptionSpec:
    """One backend option: what a good value looks like, so the config check can say so.

    `kinds` names the accepted value kinds: "int", "number" (int or float), "str", "null".
    `choices`, when given, are the only strings accepted. `minimum` bounds numbers.
    """

    kinds: tuple[str, ...]
    expected: str
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None when it is."""
        if value is None:
            return None if "null" in self.kinds else "must not be null"
        if isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int):
            kind = "int"
        elif isinstance(value, float):
            kind = "float"
        elif isinstance(value, str):
            kind = "str"
        else:
            kind = type(value).__name__
        number = kind in ("int", "float")
        ok = kind in self.kinds or (number and "number" in self.kinds)
        if not ok:
            return f"got {_describe(value)}"
        if kind == "str" and self.choices and value not in self.choices:
            return f"got {value!r}{did_you_mean(value, self.choices)}"
        if number and self.minimum is not None and value < self.minimum:
            return f"got {value!r}"
        return None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_PIN = OptionSpec(("int", "str"), "a GPIO pin: a BCM number or a name such as 'GPIO17'")
_REQUIRED_PIN = OptionSpec(_PIN.kinds, _PIN.expected, required=True)
_RING_HZ = OptionSpec(("number",), "the ring frequency in Hz, a number above 0", minimum=1)
_DEBOUNCE = OptionSpec(("number",), "SHK debounce in ms, 0 to 30 (default 10)", minimum=0)
_MS = OptionSpec(("number", "null"), "milliseconds >= 0, or null", minimum=0)
_ECHO = OptionSpec(("bool",), "true or false: cancel the hybrid's echo on this line "
                   "(default true on hardware)")
_ECHO_TAIL = OptionSpec(("int",), "the echo canceller's tail in ms, 8 to 256 (default 64)",
                        minimum=8)
_CALLERID = OptionSpec(
    ("str",), "a caller ID method (docs/voice.md); default: gateway.country's",
    choices=tuple(CALLERID_METHODS),
)

#: Backend name -> option name -> spec: the one list of what each FXS backend accepts. The
#: config check reads it without importing any driver; `create_fxs` enforces it too.
FXS_OPTIONS: dict[str, dict[str, OptionSpec]] = {
    "sim": {
        "country": OptionSpec(("str",), "a country code such as 'US' or 'DE'"),
        "ring_hz": _RING_HZ,
        "clock": OptionSpec(("str",), "'monotonic' or 'frames'", choices=("monotonic", "frames")),
        "time_origin": OptionSpec(("number",), "seconds, a number"),
        "shk_pin": _PIN,
        "rm_pin": _PIN,
        "fr_pin": _PIN,
        "auto_answer_ms": _MS,
        "auto_hangup_ms": _MS,
        "echo_delay_ms": OptionSpec(("number", "null"), "simulated hybrid echo delay in ms "
                                    "(0 to 200), or null for none", minimum=0),
        "echo_erl_db": OptionSpec(("number",), "simulated echo return loss in dB (default 6)"),
        "echo_canceller": _ECHO,
        "echo_tail_ms": _ECHO_TAIL,
        "callerid": _CALLERID,
        "debounce_ms": _DEBOUNCE,
        "bounce_count": OptionSpec(("int",), "contact bounces the simulated hook switch "
                                   "makes after each make and break (default 0)", minimum=0),
        "bounce_ms": OptionSpec(("number",), "longest bounce stay or jump in ms (default 2)",
                                minimum=0.3),
        "fault": OptionSpec(("str",), "a simulated wiring fault: 'shk-open' or 'ear-mute'",
                            choices=("shk-open", "ear-mute")),
    },
    "ag1171": {
        "shk_pin": _REQUIRED_PIN,
        "rm_pin": _REQUIRED_PIN,
        "fr_pin": _REQUIRED_PIN,
        "audio_device": OptionSpec(("str",), "an ALSA device name such as 'default' or 'hw:1'"),
        "ring_hz": _RING_HZ,
        "debounce_ms": _DEBOUNCE,
        "pin_factory": OptionSpec(
            ("str", "null"), "one of 'mock', 'lgpio', 'rpigpio', 'native', or null",
            choices=("mock", "lgpio", "rpigpio", "native"),
        ),
        "echo_canceller": _ECHO,
        "echo_tail_ms": _ECHO_TAIL,
        "callerid": _CALLERID,
    },
    "null": {
        "tone_hz": OptionSpec(("number",), "the tone the null handset says, in Hz (1000)",
                              minimum=1),
        "level_dbm0": OptionSpec(("number",), "its level in dBm0 (default -20)"),
        "auto_answer_ms": _MS,
        "auto_hangup_ms": _MS,
        "echo_canceller": _ECHO,
        "echo_tail_ms": _ECHO_TAIL,
    },
}


@dataclass(frozen=True)
class OptionProblem:
    """One bad backend option: `key` is None when the problem is the options as a whole.

    `unknown` is True when the key itself is the problem (point at the key, not its value).
    """

    key: str | None
    message: str
    expected: str = ""
    unknown: bool = False


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'sim'?)" for a near miss among `choices`, else ""."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_options(
    specs: Mapping[str, Any], backend: str, options: Mapping[str, Any], *, what: str = "backend",
    extra: Callable[[str, Any], str | None] | None = None,
) -> list[OptionProblem]:
    """Every problem with a backend's `options` against its `specs` (unknown keys, types,
    missing); `extra(key, value)` adds checks a kind needs beyond the spec's type."""
    problems: list[OptionProblem] = []
    for key, value in options.items():
        spec = specs.get(key)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            problems.append(OptionProblem(
                key, f"unknown option {key!r} for {what} {backend!r}{did_you_mean(key, specs)}",
                f"one of {known}", unknown=True))
            continue
        why = spec.problem(value)
        if why is None and extra is not None:
            why = extra(key, value)
        if why is not None:
            problems.append(OptionProblem(key, f"option {key!r}: {why}", spec.expected))
    missing = [k for k, spec in specs.items() if spec.required and k not in options]
    if missing:
        problems.append(OptionProblem(
            None, f"backend {backend!r} needs option(s) {', '.join(missing)}",
            ", ".join(f"{k}: {specs[k].expected}" for k in missing)))
    return problems


def check_fxs_options(backend: str, options: Mapping[str, Any]) -> list[OptionProblem]:
    """Every problem with `options` for a known FXS backend (unknown keys, types, missing)."""
    return check_options(FXS_OPTIONS.get(backend, {}), backend, options)


_PACKAGES = {
    "alsaaudio": "pyalsaaudio (apt install python3-alsaaudio)",
    "gpiozero": "gpiozero (apt install python3-gpiozero)",
    "lgpio": "lgpio (apt install python3-lgpio)",
    "numpy": "numpy",
}


def known_fxs_backends() -> tuple[str, ...]:
    """Names accepted by :func:`create_fxs`."""
    return tuple(sorted(FXS_BACKENDS))


def _load(backend: str) -> Callable[..., Any]:
    try:
        module_name, attr, package = FXS_BACKENDS[backend]
    except KeyError:
        raise HalError(
            f"unknown FXS backend {backend!r}{did_you_mean(backend, FXS_BACKENDS)}; "
            f"known: {', '.join(known_fxs_backends())}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        hint = _PACKAGES.get(missing.split(".")[0], package)
        raise HalError(
            f"FXS backend {backend!r} cannot load: module {missing!r} is missing; install {hint}"
        ) from exc
    factory: Callable[..., Any] = getattr(module, attr)
    return factory


def create_fxs(backend: str, name: str, options: Mapping[str, Any] | None = None) -> FxsPort:
    """Create the FXS port ``name`` with the named backend and its config options."""
    opts = dict(options or {})
    factory = _load(backend)
    problems = check_fxs_options(backend, opts)
    if problems:
        details = "; ".join(
            p.message + (f" (expected: {p.expected})" if p.expected else "") for p in problems
        )
        raise HalError(f"{backend} port {name}: {details}")
    if backend == "ag1171":
        return _create_ag1171(factory, name, opts)
    port = factory(name, opts)
    assert isinstance(port, FxsPort)
    return port


def _create_ag1171(factory: Callable[..., Any], name: str, opts: dict[str, Any]) -> FxsPort:
    """Options: shk_pin, rm_pin, fr_pin (required), audio_device, ring_hz, pin_factory."""
    missing = [k for k in ("shk_pin", "rm_pin", "fr_pin") if k not in opts]
    if missing:
        raise HalError(f"ag1171 port {name}: missing option(s) {', '.join(missing)}")
    from hal.audio.alsa import AlsaAudio
    from hal.gpio import pin_factory

    audio = AlsaAudio(str(opts.get("audio_device", "default")))
    try:
        port = factory(
            name,
            shk_pin=opts["shk_pin"],
            rm_pin=opts["rm_pin"],
            fr_pin=opts["fr_pin"],
            audio=audio,
            pin_factory=pin_factory(opts.get("pin_factory")),
            ring_hz=float(opts.get("ring_hz", 20)),
            debounce_ms=float(opts.get("debounce_ms", 10.0)),
        )
    except Exception:
        audio.close()
        raise
    assert isinstance(port, FxsPort)
    return port


def create_fxo(backend: str, name: str, options: Mapping[str, Any] | None = None) -> FxoPort:
    """Create the FXO (exchange line) port ``name``: the FXO table and its options live in
    :mod:`hal.fxo` ("sim": the DAA driver on mock pins with a simulated exchange; "daa")."""
    from hal.fxo import create_fxo as create

    return create(backend, name, options)

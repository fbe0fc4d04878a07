"""Call-progress tones and ring cadences per country, and a frame-by-frame tone generator.

Profiles are plain data (``tone_profiles.toml`` beside this module) so that adding a
country is a table edit, not code; the config's list of countries is this table's. Each
profile names its source (the national specification, ITU-T E.180 Supplement 2).

Levels are in dBFS as defined in :mod:`gateway.dsp.analysis` (RMS relative to a
full-scale square wave, so a full-scale sine is -3.01 dBFS). G.711 puts a full-scale
sine at +3.14 dBm0, hence dBm0 = dBFS + 6.15; the usual -13 dBm0 per component is
about -19 dBFS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

DBM0_TO_DBFS = -6.15
"""Add to a dBm0 level to get dBFS (full-scale square = 0 dBFS)."""

DEFAULT_LEVEL_DBFS = -13.0 + DBM0_TO_DBFS
"""Per-component level of call-progress tones: -13 dBm0, the usual network value."""


def dbm0_to_dbfs(dbm0: float) -> float:
    """Convert a network level (dBm0) to this code base's dBFS, since specs quote dBm0."""
    return dbm0 + DBM0_TO_DBFS


@dataclass(frozen=True)
class ToneSpec:
    """One call-progress tone: which frequencies, and when they sound.

    ``cadence`` is a flat sequence of on/off durations in seconds, starting with "on";
    empty means continuous. It repeats forever unless ``cycles`` > 0, after which the
    tone stays ``after_cycles`` ("on" = steady, "off" = silent). That covers stutter
    dial tone (ten 0.1/0.1 s flicks, then steady) and a one-shot call-waiting beep.
    """

    frequencies: tuple[float, ...]
    cadence: tuple[float, ...] = ()
    level_dbfs: float = DEFAULT_LEVEL_DBFS
    cycles: int = 0
    after_cycles: Literal["on", "off"] = "off"

    def __post_init__(self) -> None:
        if not self.frequencies:
            raise ValueError("ToneSpec.frequencies: expected at least one frequency")
        for f in self.frequencies:
            if not 0.0 < f < SAMPLE_RATE / 2:
                raise ValueError(
                    f"ToneSpec.frequencies: {f} Hz is outside 0..{SAMPLE_RATE // 2} Hz"
                )
        if len(self.cadence) % 2:
            raise ValueError(
                f"ToneSpec.cadence: expected on/off pairs, got {len(self.cadence)} values"
            )
        if any(d < 0 for d in self.cadence):
            raise ValueError("ToneSpec.cadence: durations must be >= 0")
        if self.cadence and sum(self.cadence) <= 0:
            raise ValueError("ToneSpec.cadence: total period must be > 0")
        if self.cycles < 0:
            raise ValueError("ToneSpec.cycles: expected >= 0")

    @property
    def continuous(self) -> bool:
        """True for a steady tone (no cadence), e.g. dial tone."""
        return not self.cadence


@dataclass(frozen=True)
class ToneProfile:
    """The tones and ringing one country's subscribers expect to hear and see."""

    country: str
    dial: ToneSpec
    ringback: ToneSpec
    busy: ToneSpec
    reorder: ToneSpec
    stutter: ToneSpec
    call_waiting: ToneSpec
    ring_cadence: tuple[float, ...]
    ring_hz: float = 20.0
    callerid: str = "bellcore"
    """Default on-hook caller ID method (a name in :data:`gateway.dsp.callerid.METHODS`)."""
    source: str = ""
    """Where the values come from (national specification, ITU-T E.180 Suppl. 2)."""
    extra: dict[str, ToneSpec] = field(default_factory=dict)
    distinctive: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Ring cadences by Alert-Info name (dr1..dr5, internal, external, priority)."""

    def ring_for(self, name: str | None) -> tuple[float, ...] | None:
        """The bell cadence for a distinctive-ring name; None for an unknown name or None."""
        return self.distinctive.get(name) if name else None

    @property
    def congestion(self) -> ToneSpec:
        """European name for reorder."""
        return self.reorder

    def tones(self) -> dict[str, ToneSpec]:
        """All tones by name, so that classifiers and UIs can iterate them."""
        out = {
            "dial": self.dial,
            "ringback": self.ringback,
            "busy": self.busy,
            "reorder": self.reorder,
            "stutter": self.stutter,
            "call_waiting": self.call_waiting,
        }
        out.update(self.extra)
        return out

    def tone(self, name: str) -> ToneSpec:
        """Look a tone up by name ("congestion" is accepted for reorder)."""
        if name == "congestion":
            name = "reorder"
        tones = self.tones()
        try:
            return tones[name]
        except KeyError:
            raise KeyError(
                f"tone {name!r} not in profile {self.country}; known: {', '.join(sorted(tones))}"
            ) from None


_DATA_FILE = "tone_profiles.toml"
_TONE_NAMES = ("dial", "ringback", "busy", "reorder", "call_waiting", "stutter")
_EXTRA_TONES = ("confirm", "howler")
"""Tones a profile may carry beyond the six every country has (see the data file)."""


def _spec(country: str, name: str, raw: Any) -> ToneSpec:
    where = f"{_DATA_FILE} [{country}].{name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table with 'hz'")
    unknown = set(raw) - {"hz", "cadence", "cycles", "after", "level"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if "hz" not in raw:
        raise ValueError(f"{where}: expected a table with 'hz'")
    after = raw.get("after", "off")
    if after not in ("on", "off"):
        raise ValueError(f"{where}.after: expected 'on' or 'off', got {after!r}")
    level = raw.get("level")
    return ToneSpec(
        tuple(float(f) for f in raw["hz"]),
        tuple(float(d) for d in raw.get("cadence", ())),
        DEFAULT_LEVEL_DBFS if level is None else dbm0_to_dbfs(float(level)),
        int(raw.get("cycles", 0)),
        "on" if after == "on" else "off",
    )


def _profile(country: str, raw: dict[str, Any]) -> ToneProfile:
    missing = [k for k in (*_TONE_NAMES, "ring", "ring_hz", "source", "callerid") if k not in raw]
    if missing:
        raise ValueError(f"{_DATA_FILE} [{country}]: missing {', '.join(missing)}")
    tones = {name: _spec(country, name, raw[name]) for name in _TONE_NAMES}
    extra = {name: _spec(country, name, raw[name]) for name in _EXTRA_TONES if name in raw}
    distinctive: dict[str, tuple[float, ...]] = {}
    for name, cadence in dict(raw.get("distinctive", {})).items():
        values = tuple(float(d) for d in cadence)
        if not values or len(values) % 2 or not all(d > 0 for d in values):
            raise ValueError(f"{_DATA_FILE} [{country}].distinctive.{name}: expected on/off "
                             f"pairs of positive seconds, got {cadence!r}")
        distinctive[str(name)] = values
    return ToneProfile(
        country=country,
        dial=tones["dial"],
        ringback=tones["ringback"],
        busy=tones["busy"],
        reorder=tones["reorder"],
        stutter=tones["stutter"],
        call_waiting=tones["call_waiting"],
        ring_cadence=tuple(float(d) for d in raw["ring"]),
        ring_hz=float(raw["ring_hz"]),
        callerid=str(raw["callerid"]),
        source=str(raw["source"]),
        extra=extra,
        distinctive=distinctive,
    )


def load_profiles(text: str | None = None) -> dict[str, ToneProfile]:
    """Parse the profile table (the packaged data file unless ``text`` is given)."""
    import tomllib

    if text is None:
        text = resources.files("gateway.dsp").joinpath(_DATA_FILE).read_text("utf-8")
    profiles = {c.upper(): _profile(c.upper(), raw) for c, raw in tomllib.loads(text).items()}
    # Countries without a distinctive-ring plan take [US]'s (Telcordia), their own bell
    # cadence standing for the standard ring.
    base = profiles["US"].distinctive if "US" in profiles else {}
    for profile in profiles.values():
        if not profile.distinctive and base:
            own = dict(base)
            own["dr1"] = own["external"] = profile.ring_cadence
            profile.distinctive.update(own)
    return profiles


_PROFILES: dict[str, ToneProfile] = load_profiles()

_ALIASES = {"GB": "UK", "USA": "US", "CA": "US", "DEU": "DE", "FRA": "FR"}


def countries() -> tuple[str, ...]:
    """Country codes that have a profile, for config validation messages."""
    return tuple(sorted(_PROFILES))


def get_profile(country: str) -> ToneProfile:
    """Return the tone profile for a country code (case-insensitive; "GB" = "UK")."""
    key = country.strip().upper()
    key = _ALIASES.get(key, key)
    try:
        return _PROFILES[key]
    except KeyError:
        raise ValueError(
            f"unknown tone country {country!r}; expected one of {', '.join(countries())}"
        ) from None


def _amplitude(level_dbfs: float) -> float:
    # RMS of a sine with peak A is A/sqrt(2); 0 dBFS RMS is 32768 (full-scale square).
    return float(32768.0 * math.sqrt(2.0) * 10.0 ** (level_dbfs / 20.0))


class ToneGenerator:
    """Produces a tone as consecutive 20 ms frames, phase-continuous across frames.

    The cadence is kept by counting samples, so it does not drift however frames are
    paced; the caller's clock never enters. numpy is loaded by the first generator made,
    i.e. when a line first needs a tone, not when profiles are read.
    """

    def __init__(self, spec: ToneSpec, sample_rate: int = SAMPLE_RATE) -> None:
        import numpy as np

        self.spec = spec
        self._rate = sample_rate
        self._amp = _amplitude(spec.level_dbfs)
        self._step = np.array([2.0 * math.pi * f / sample_rate for f in spec.frequencies])
        self._phase = np.zeros(len(spec.frequencies))
        self._n = 0
        # Cadence boundaries in whole samples, so the period is exact.
        bounds = np.cumsum([round(d * sample_rate) for d in spec.cadence], dtype=np.int64)
        self._bounds: npt.NDArray[np.int64] = bounds
        self._period = int(bounds[-1]) if len(bounds) else 0

    @property
    def samples_generated(self) -> int:
        """Samples produced so far (the generator's own notion of time)."""
        return self._n

    def reset(self) -> None:
        """Start the cadence again from the beginning of its first "on"."""
        self._phase[:] = 0.0
        self._n = 0

    def _gate(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        import numpy as np

        if self._period == 0:
            return np.ones(idx.shape, dtype=np.bool_)
        pos = idx % self._period
        seg = np.searchsorted(self._bounds, pos, side="right")
        gate: npt.NDArray[np.bool_] = (seg % 2) == 0
        if self.spec.cycles:
            done = (idx // self._period) >= self.spec.cycles
            gate = np.where(done, self.spec.after_cycles == "on", gate)
        return gate

    def next_samples(self, count: int) -> npt.NDArray[np.int16]:
        """Next ``count`` samples as int16, for callers that need other block sizes."""
        import numpy as np

        k = np.arange(count, dtype=np.float64)
        phases = self._phase[:, None] + self._step[:, None] * k[None, :]
        wave = self._amp * np.sin(phases).sum(axis=0)
        self._phase = np.mod(self._phase + self._step * count, 2.0 * math.pi)
        idx = np.arange(self._n, self._n + count, dtype=np.int64)
        self._n += count
        wave = np.where(self._gate(idx), wave, 0.0)
        return np.clip(np.rint(wave), -32768, 32767).astype(np.int16)

    def next_frame(self) -> bytes:
        """Next 20 ms frame (320 bytes of S16LE)."""
        return self.next_samples(FRAME_SAMPLES).astype("<i2").tobytes()

    def generate(self, seconds: float) -> bytes:
        """The next ``seconds`` of the tone as PCM, rounded to whole samples."""
        return self.next_samples(round(seconds * self._rate)).astype("<i2").tobytes()

"""Call-progress tones and ring cadences per country, and a frame-by-frame tone generator.

Profiles are plain data so that adding a country is a table edit, not code. Values are
the commonly published ones (ITU-T E.180 Supplement 2 is the reference).

Levels are in dBFS as defined in :mod:`gateway.dsp.analysis` (RMS relative to a
full-scale square wave, so a full-scale sine is -3.01 dBFS). G.711 puts a full-scale
sine at +3.14 dBm0, hence dBm0 = dBFS + 6.15; the usual -13 dBm0 per component is
about -19 dBFS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

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
    extra: dict[str, ToneSpec] = field(default_factory=dict)

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


def _stutter(freqs: tuple[float, ...]) -> ToneSpec:
    # Telcordia practice: ten 0.1 s on / 0.1 s off flicks, then steady dial tone.
    return ToneSpec(freqs, (0.1, 0.1), cycles=10, after_cycles="on")


_PROFILES: dict[str, ToneProfile] = {
    "US": ToneProfile(
        country="US",
        dial=ToneSpec((350.0, 440.0)),
        ringback=ToneSpec((440.0, 480.0), (2.0, 4.0)),
        busy=ToneSpec((480.0, 620.0), (0.5, 0.5)),
        reorder=ToneSpec((480.0, 620.0), (0.25, 0.25)),
        stutter=_stutter((350.0, 440.0)),
        call_waiting=ToneSpec((440.0,), (0.3, 9.7)),
        ring_cadence=(2.0, 4.0),
        ring_hz=20.0,
    ),
    "UK": ToneProfile(
        country="UK",
        dial=ToneSpec((350.0, 440.0)),
        ringback=ToneSpec((400.0, 450.0), (0.4, 0.2, 0.4, 2.0)),
        busy=ToneSpec((400.0,), (0.375, 0.375)),
        reorder=ToneSpec((400.0,), (0.4, 0.35, 0.225, 0.525)),
        # BT's message-waiting dial tone alternates 350+440 with 440 alone every 0.75 s;
        # a single ToneSpec cannot change frequencies, so the 440-alone half is silent.
        stutter=ToneSpec((350.0, 440.0), (0.75, 0.75)),
        call_waiting=ToneSpec((400.0,), (0.1, 4.0)),
        ring_cadence=(0.4, 0.2, 0.4, 2.0),
        ring_hz=25.0,
    ),
    "DE": ToneProfile(
        country="DE",
        dial=ToneSpec((425.0,)),
        ringback=ToneSpec((425.0,), (1.0, 4.0)),
        busy=ToneSpec((425.0,), (0.48, 0.48)),
        reorder=ToneSpec((425.0,), (0.24, 0.24)),
        stutter=_stutter((425.0,)),
        call_waiting=ToneSpec((425.0,), (0.2, 0.2, 0.2, 5.0)),
        ring_cadence=(1.0, 4.0),
        ring_hz=25.0,
    ),
    "FR": ToneProfile(
        country="FR",
        dial=ToneSpec((440.0,)),
        ringback=ToneSpec((440.0,), (1.5, 3.5)),
        busy=ToneSpec((440.0,), (0.5, 0.5)),
        reorder=ToneSpec((440.0,), (0.25, 0.25)),
        stutter=_stutter((440.0,)),
        call_waiting=ToneSpec((440.0,), (0.3, 10.0)),
        ring_cadence=(1.5, 3.5),
        ring_hz=50.0,
    ),
}

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

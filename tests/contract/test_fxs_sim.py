"""The FXS contract on the "sim" backend: the AG1171 driver on mock pins with a virtual phone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.dsp.analysis import component_levels, level_dbfs
from gateway.dsp.tones import ToneGenerator, get_profile
from hal.base import FxsPort
from hal.sim.fxs import SimFxs
from hal.sim.phone import PhoneError, VirtualPhone

from .fxs_contract import FxsContract, PhoneSide, Rig


class SimPhoneSide(PhoneSide):
    """Adapts the VirtualPhone to the contract's phone side."""

    timing_tolerance_s = 1e-6  # frame clock: exact
    level_tolerance_db = 0.2

    def __init__(self, phone: VirtualPhone) -> None:
        self.phone = phone

    def off_hook(self) -> None:
        self.phone.off_hook()

    def on_hook(self) -> None:
        self.phone.on_hook()

    def dial_pulse(self, digits: str) -> None:
        self.phone.dial(digits, mode="pulse")

    def flash(self, duration_ms: float) -> None:
        self.phone.flash(duration_ms)

    def dial_dtmf(self, digits: str) -> None:
        self.phone.dial(digits, mode="dtmf")

    def is_ringing(self) -> bool:
        return self.phone.is_ringing()

    def ring_hz(self) -> float | None:
        hz = self.phone.state()["ring_hz"]
        return float(hz) if hz is not None else None

    def polarity_reversed(self) -> bool:
        return self.phone.polarity == "reversed"

    def speak_tone(self, freq_hz: float, level_dbfs: float) -> None:
        self.phone.play_tone(freq_hz, level_dbfs)

    def stop_speaking(self) -> None:
        self.phone.stop_play()

    def heard(self, seconds: float) -> bytes:
        return self.phone.heard(seconds)


class TestSimFxs(FxsContract):
    """Contract run on SimFxs with the deterministic frame clock."""

    options: dict[str, object] = {"clock": "frames"}

    def make_port(self) -> FxsPort:
        return SimFxs("sim1", self.options)

    def make_phone(self, port: FxsPort) -> PhoneSide:
        assert isinstance(port, SimFxs)
        return SimPhoneSide(port.phone)


class TestSimFxsBouncing(TestSimFxs):
    """The same contract with a hook switch that bounces 5 times (0.3-2 ms each stay and
    jump) after every make and break: the driver's own debounce must hide all of it."""

    options = {"clock": "frames", "bounce_count": 5, "bounce_ms": 2.0}

    def test_the_switch_really_bounces(self, rig: Rig) -> None:
        port = rig.port
        assert isinstance(port, SimFxs)
        rig.phone.off_hook()
        self.pump(port, 0.2)
        rig.phone.on_hook()
        self.pump(port, 0.2)
        assert port.bounce_stats["raw_edges"] == 2 * (1 + 2 * 5)
        assert [off for off, _ in rig.edges] == [True, False]

    def test_a_spike_is_no_edge(self, rig: Rig) -> None:
        port = rig.port
        assert isinstance(port, SimFxs)
        shk = port.pin_factory.pin(17)
        phone = port.phone
        # 2 ms of line noise on SHK, no handset, at exact phone times
        phone._schedule(phone._t + 0.010, shk.drive_high)
        phone._schedule(phone._t + 0.012, shk.drive_low)
        self.pump(port, 0.2)
        assert rig.edges == []
        assert port.is_off_hook() is False
        assert port.bounce_stats["dropped"] == 1


# -- the virtual phone beyond the contract ----------------------------------------------


def _phone(rig: Rig) -> VirtualPhone:
    side = rig.phone
    assert isinstance(side, SimPhoneSide)
    return side.phone


class TestVirtualPhone:
    """Sim-only behaviour: what the phone hears, ring counting, flash, recording."""

    _sim = TestSimFxs()
    pump = _sim.pump

    @pytest.fixture
    def rig(self) -> Iterator[Rig]:
        with self._sim.open_rig() as rig:
            yield rig

    def test_phone_hears_dial_then_busy(self, rig: Rig) -> None:
        phone = _phone(rig)
        phone.off_hook()
        profile = get_profile("US")
        self.pump(rig.port, 1.0, ear=ToneGenerator(profile.dial).next_frame)
        assert phone.hears().what == "dial"
        self.pump(rig.port, 3.0, ear=ToneGenerator(profile.busy).next_frame)
        report = phone.hears()
        assert report.what == "busy"
        assert report.dominant_hz in (
            pytest.approx(480.0, rel=0.01),
            pytest.approx(620.0, rel=0.01),
        )
        assert level_dbfs(phone.heard(1.0)) > -25.0

    def test_phone_counts_rings_with_their_times(self, rig: Rig) -> None:
        phone = _phone(rig)
        for _ in range(3):
            rig.port.set_ringing(True)
            self.pump(rig.port, 2.0)
            rig.port.set_ringing(False)
            self.pump(rig.port, 4.0)
        assert phone.ring_count == 3
        starts = [s for s, _ in phone.rings]
        ends = [e for _, e in phone.rings]
        assert starts == pytest.approx([0.0, 6.0, 12.0])
        assert ends == pytest.approx([2.0, 8.0, 14.0])
        phone.off_hook()
        phone.on_hook()
        assert phone.ring_count == 0

    def test_flash_is_one_break_of_the_asked_length(self, rig: Rig) -> None:
        phone = _phone(rig)
        phone.off_hook()
        self.pump(rig.port, 0.2)
        rig.edges.clear()
        phone.flash(300)
        self.pump(rig.port, 0.6)
        assert [off for off, _ in rig.edges] == [False, True]
        assert rig.edges[1][1] - rig.edges[0][1] == pytest.approx(0.3)

    def test_dialling_on_hook_is_refused(self, rig: Rig) -> None:
        with pytest.raises(PhoneError, match="on-hook"):
            _phone(rig).dial("1")
        with pytest.raises(ValueError, match="0-9"):
            _phone(rig).off_hook() or _phone(rig).dial("*", mode="pulse")

    def test_record_writes_what_the_earpiece_heard(self, rig: Rig, tmp_path: object) -> None:
        from pathlib import Path

        from hal.audio.wav import read_wav_8k

        phone = _phone(rig)
        phone.off_hook()
        path = Path(str(tmp_path)) / "ear.wav"
        phone.record(path, 0.5)
        self.pump(rig.port, 1.0, ear=ToneGenerator(get_profile("DE").dial).next_frame)
        pcm = read_wav_8k(path)
        assert len(pcm) == 2 * 4000
        assert component_levels(pcm, [425.0])[425.0] > -22.0

    def test_play_loops_pcm_into_the_mouthpiece(self, rig: Rig) -> None:
        phone = _phone(rig)
        phone.off_hook()
        burst = ToneGenerator(get_profile("US").dial).generate(0.1)
        phone.play(burst, loop=True)
        frames = self.pump(rig.port, 1.0)
        assert all(f != bytes(320) for f in frames)
        phone.play(burst, loop=False)
        frames = self.pump(rig.port, 0.5)
        assert frames[-1] == bytes(320)

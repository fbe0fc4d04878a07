"""Packet-loss concealment and the adaptive jitter buffer through MediaStream (the daemon's path).

A voiced, speech-like signal (a 125 Hz pulse train through formant-ish resonators) is sent
as G.711 RTP with 30 ms of jitter, reordering and loss; what MediaStream plays out must have
no silent hole where packets were lost, must fade to comfort silence on a long loss, and the
stream must report the delay its buffer added and the frames it concealed.
"""

from __future__ import annotations

import random

import numpy as np

from gateway.dsp import FRAME_SAMPLES, SAMPLE_RATE, g711
from gateway.dsp.plc import Concealer
from gateway.media.jitterbuffer import JitterBuffer
from gateway.media.rtp import RtpPacket
from gateway.media.stream import MediaStream

FRAME = 0.020
REMOTE = ("192.0.2.9", 4000)


def voiced(seconds: float, pitch_hz: float = 125.0, seed: int = 3) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    excitation = np.zeros(n)
    period = SAMPLE_RATE / pitch_hz
    excitation[(np.arange(0, n, period)).astype(int)] = 1.0
    excitation += 0.02 * rng.standard_normal(n)
    out = np.zeros(n)
    for f, bw in ((500, 80), (1500, 120), (2500, 200)):
        r = np.exp(-np.pi * bw / SAMPLE_RATE)
        a1, a2 = 2 * r * np.cos(2 * np.pi * f / SAMPLE_RATE), -r * r
        y = np.zeros(n)
        for i in range(n):
            y[i] = excitation[i] + a1 * (y[i - 1] if i else 0) + a2 * (y[i - 2] if i > 1 else 0)
        out += y
    return out / np.max(np.abs(out)) * 8000


def frames_of(x: np.ndarray) -> list[bytes]:
    pcm = x.astype("<i2").tobytes()
    return [pcm[i:i + FRAME_SAMPLES * 2] for i in range(0, len(pcm), FRAME_SAMPLES * 2)]


def rms(frame: bytes) -> float:
    x = np.frombuffer(frame, dtype="<i2").astype(float)
    return float(np.sqrt(np.mean(x * x)))


def stream() -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None, remote_addr=REMOTE,
                       ssrc=1, seq=0, timestamp=0, now=0.0)


def play_through(lost: set[int], jitter_s: float, reorder: bool, n: int,
                 seed: int = 7) -> tuple[MediaStream, list[bytes], list[bytes]]:
    """Send n frames at 20 ms with jitter/loss/reordering; pull one frame per 20 ms slot."""
    rng = random.Random(seed)
    src = frames_of(voiced(n * FRAME))
    arrivals: list[tuple[float, bytes]] = []
    for k in range(n):
        if k in lost:
            continue
        delay = 0.010 + rng.uniform(0, jitter_s)
        if reorder and k % 9 == 4:
            delay += 0.030  # overtaken by the next packet
        payload = g711.encode(src[k], "PCMU")
        packet = bytes(RtpPacket(0, k, k * FRAME_SAMPLES, 0x5555, payload=payload))
        arrivals.append((k * FRAME + delay, packet))
    arrivals.sort()
    s = stream()
    out: list[bytes] = []
    i = 0
    for slot in range(n + 20):
        now = slot * FRAME + 0.001
        while i < len(arrivals) and arrivals[i][0] <= now:
            s.receive(arrivals[i][1], REMOTE, arrivals[i][0])
            i += 1
        out.append(s.pull_frame(now))
    return s, src, out


def test_lost_frames_are_filled_with_the_recent_voice_not_silence() -> None:
    n = 150
    lost = {40, 41, 80, 110}
    s, src, out = play_through(lost, jitter_s=0.0, reorder=False, n=n)
    played = [f for f in out if rms(f) > 0]
    start = next(i for i, f in enumerate(out) if rms(f) > 0)
    speech = out[start:start + n]
    # every slot of the talk spurt has sound: the losses were concealed, not left silent
    assert min(rms(f) for f in speech[:n - 2]) > 0.25 * np.median([rms(f) for f in src])
    assert len(played) >= n
    st = s.stats()
    assert st["concealed_frames"] >= len(lost)
    assert 0 < st["concealed_pct"] < 10


def test_concealed_frame_resembles_the_voice_it_replaces() -> None:
    src = frames_of(voiced(1.0))
    plc = Concealer()
    for f in src[:20]:
        plc.good(f)
    guess = np.frombuffer(plc.conceal(), dtype="<i2").astype(float)
    truth = np.frombuffer(src[20], dtype="<i2").astype(float)
    # a periodic voice continues: the repeated period beats silence by a wide margin
    err = truth - guess
    snr = 10 * np.log10(np.sum(truth ** 2) / np.sum(err ** 2))
    assert snr > 3


def test_long_loss_fades_to_comfort_silence_and_recovers_without_a_click() -> None:
    src = frames_of(voiced(2.0))
    plc = Concealer()
    for f in src[:20]:
        plc.good(f)
    concealed = [plc.conceal() for _ in range(6)]
    levels = [rms(f) for f in concealed]
    assert levels[0] > 1000  # the first 20 ms at nearly full level
    assert levels == sorted(levels, reverse=True)  # then fading
    assert levels[3] < 10 and levels[5] < 10  # after 60 ms: comfort silence (a faint floor)
    assert levels[5] > 0  # not digital zero
    back = np.frombuffer(plc.good(src[26]), dtype="<i2").astype(float)
    truth = np.frombuffer(src[26], dtype="<i2").astype(float)
    assert np.allclose(back[40:], truth[40:])  # after the cross-fade, the real audio
    assert plc.frames_concealed == 6


def test_jitter_30ms_with_reordering_plays_everything_in_order_and_reports_its_delay() -> None:
    s, src, out = play_through(set(), jitter_s=0.030, reorder=True, n=250)
    st = s.stats()
    assert st["late"] <= 2  # the buffer grew to cover 30 ms of jitter plus the reordering
    assert 20 <= st["jb_delay_mean_ms"] <= 120
    assert st["jb_delay_current_ms"] <= 200
    assert st["concealed_pct"] < 2
    assert 4.0 < st["mos"] < 4.42


def drive(jb: JitterBuffer, jitter_s: float, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    arrivals = sorted((k * FRAME + rng.uniform(0, jitter_s), k) for k in range(n))
    i = 0
    for slot in range(n):
        now = slot * FRAME
        while i < len(arrivals) and arrivals[i][0] <= now:
            k = arrivals[i][1]
            jb.put(RtpPacket(0, k, k * 160, 9, payload=b"x"), arrivals[i][0])
            i += 1
        jb.get(now)


def test_target_delay_adapts_to_jitter_within_bounds() -> None:
    wild = JitterBuffer(target_delay=0.040, min_delay=0.020, max_delay=0.120)
    drive(wild, 0.300, 500)  # far more jitter than the bound allows
    assert wild.target_delay == 0.120
    mild = JitterBuffer(target_delay=0.040, min_delay=0.020, max_delay=0.120)
    drive(mild, 0.050, 500)
    calm = JitterBuffer(target_delay=0.040, min_delay=0.020, max_delay=0.120)
    drive(calm, 0.0, 500)
    assert calm.target_delay <= 0.040 + 1e-9
    assert wild.delay_mean <= 0.120 + FRAME  # bounded: late packets are dropped instead
    assert wild.late > 0 and wild.stretched > 0
    assert mild.late == 0 and mild.concealed == 0


def test_quality_uses_measured_loss_and_buffer_delay() -> None:
    lossy, _, _ = play_through(set(range(5, 250, 33)), jitter_s=0.0, reorder=False, n=250)
    clean, _, _ = play_through(set(), jitter_s=0.0, reorder=False, n=250)
    ql, qc = lossy.quality(), clean.quality()
    assert ql["effective_loss_pct"] > 2.5 and qc["effective_loss_pct"] == 0
    assert qc["mos"] - ql["mos"] > 0.2
    assert qc["one_way_delay_ms"] >= 20 + 1000 * 0.0

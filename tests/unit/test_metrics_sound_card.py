"""The sound-card metrics: a hardware line's ALSA counters reach the Prometheus scrape, a
simulated line (no card) adds none."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from tests.unit.test_metrics import scrape, stand_in, value


def test_sound_card_counters_are_scraped() -> None:
    loop = asyncio.new_event_loop()
    try:
        gw = stand_in(loop)
        card = SimpleNamespace(stats=lambda: {
            "underruns": 2, "overruns": 1, "playback_latency_ms": 40.0,
            "capture_latency_ms": 50.0, "card_ppm": -37.5, "samples_added": 0,
            "samples_dropped": 18})
        gw.lines = {"1": SimpleNamespace(port=SimpleNamespace(codec=card)),
                    "2": SimpleNamespace(port=SimpleNamespace(codec=object()))}  # sim
        text, s = scrape(gw)
        gw.trunk_health.stop()
    finally:
        loop.close()
    assert value(s, "branchline_sound_card_underruns_total", line="1") == 2
    assert value(s, "branchline_sound_card_overruns_total", line="1") == 1
    assert value(s, "branchline_sound_card_latency_seconds", line="1", direction="out") == 0.04
    assert value(s, "branchline_sound_card_latency_seconds", line="1", direction="in") == 0.05
    assert value(s, "branchline_sound_card_clock_ppm", line="1") == -37.5
    assert value(s, "branchline_sound_card_drift_samples_total", line="1", kind="dropped") == 18
    assert 'line="2"' not in text

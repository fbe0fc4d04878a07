"""gateway.dsp loads numpy only when audio needs it, and its quiet paths agree with numpy's.

The import checks run in a fresh interpreter: this one has numpy loaded already.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gateway.dsp import SILENCE_FRAME, dtmf
from gateway.dsp.dtmf import DtmfDetector, peak


def run_fresh(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_idle_lines_and_simulated_phones_never_import_numpy() -> None:
    out = run_fresh("""
        import sys
        from array import array
        from gateway.dsp import SILENCE_FRAME, g711, dtmf, tones
        from gateway.dsp.analysis import ToneClassifier, level_dbfs
        from gateway.runtime.ports import LinePort
        import gateway.cli, gateway.runtime.app, gateway.runtime.bridge  # the whole daemon
        from hal.sim.fxs import SimFxs

        port = SimFxs("1")
        classifier = ToneClassifier(tones.get_profile("US"))
        detector = dtmf.DtmfDetector()
        quiet = array("h", [(-1) ** i * (i % 200) for i in range(160)])  # peak 199: -44 dBFS
        if sys.byteorder == "big":
            quiet.byteswap()
        quiet = quiet.tobytes()
        for _ in range(100):  # two seconds of an idle line, as the daemon and phone see it
            port.write_frame(SILENCE_FRAME)  # the phone's classifier hears it
            port.read_frame()
            classifier.feed(SILENCE_FRAME)
            assert detector.feed(quiet) == []  # line noise: quiet, not silent
        assert classifier.report().what == "silence"
        assert level_dbfs(SILENCE_FRAME) == -100.0
        print("numpy" in sys.modules)
    """)
    assert out == "False"


def test_tone_generator_loads_numpy_with_one_blas_thread() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = run_fresh("""
        import os, sys
        from gateway.dsp import tones
        assert "numpy" not in sys.modules
        tones.ToneGenerator(tones.get_profile("US").dial).next_frame()
        print("numpy" in sys.modules, os.environ["OPENBLAS_NUM_THREADS"])
    """, env)
    assert out == "True 1"


def test_an_admin_setting_for_blas_threads_is_kept() -> None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    out = run_fresh("""
        import os
        import gateway.dsp
        print(os.environ["OPENBLAS_NUM_THREADS"])
    """, env)
    assert out == "2"


@pytest.mark.parametrize("numpy_loaded", [False, True])
def test_peak_is_the_largest_magnitude(numpy_loaded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not numpy_loaded:
        monkeypatch.delitem(sys.modules, "numpy")  # the pure-Python scan
    rng = random.Random(7)
    for n in (0, 1, 40, 160, 280):
        samples = [rng.randint(-32768, 32767) for _ in range(n)]
        pcm = np.array(samples, dtype="<i2").tobytes()
        assert peak(pcm) == max((abs(s) for s in samples), default=0)
    assert peak(np.array([-32768, 5], dtype="<i2").tobytes()) == 32768
    assert peak(SILENCE_FRAME) == 0


def test_quiet_path_gives_the_same_digits_as_the_numpy_path() -> None:
    """A digit between quiet stretches, fed in odd-sized pieces, is found exactly once."""
    rng = random.Random(3)
    quiet = np.array([rng.randint(-300, 300) for _ in range(1600)], dtype="<i2").tobytes()
    pcm = quiet + dtmf.generate("7", 80) + quiet + dtmf.generate("#", 80) + quiet
    det = DtmfDetector()
    found: list[str] = []
    pos = 0
    while pos < len(pcm):
        size = 2 * rng.randint(1, 200)
        found += det.feed(pcm[pos : pos + size])
        pos += size
    assert found == ["7", "#"]


def test_the_daemon_loads_the_metrics_exporter_only_for_metrics_listen() -> None:
    out = run_fresh("""
        import sys
        import gateway.cli, gateway.runtime.app  # the whole daemon, as `branchline run` loads it
        print("prometheus_client" in sys.modules, "gateway.runtime.metrics" in sys.modules)
    """)
    assert out == "False False"  # app.run() imports it when the config sets metrics.listen

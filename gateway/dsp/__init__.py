"""Signal processing on 8 kHz narrowband audio.

Every audio frame that crosses a module boundary in Branchline is 20 ms of 8 kHz
signed 16-bit little-endian mono PCM: 160 samples, 320 bytes.

numpy is imported by the functions that need it, not by these modules: a gateway whose
lines are on hook and whose calls carry no audio never loads it (about 15 MB resident).
Silence and quiet audio take pure-Python paths for the same reason. Importing this
package pins numpy's BLAS to one thread (:func:`pin_blas_threads`): the products here are
a few hundred samples wide, and a second BLAS thread only spins.
"""

import os

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE_FRAME = bytes(FRAME_BYTES)

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables the BLAS libraries numpy may be built on read at load time."""


def pin_blas_threads() -> None:
    """Ask numpy's BLAS for one thread; only works before numpy is first imported.

    OpenBLAS starts one worker per core when it loads; with 20 lines in 10 calls the
    second worker cost a third of the daemon's CPU while speeding up nothing. A value the
    admin set in the environment is kept.
    """
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


pin_blas_threads()

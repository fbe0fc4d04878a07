"""Signal processing on 8 kHz narrowband audio.

Every audio frame that crosses a module boundary in Branchline is 20 ms of 8 kHz
signed 16-bit little-endian mono PCM: 160 samples, 320 bytes.
"""

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE_FRAME = bytes(FRAME_BYTES)

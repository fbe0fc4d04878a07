"""ITU-T G.711 mu-law (PCMU) and A-law (PCMA) companding, table-driven with numpy.

Every call's audio is companded 50 times a second each way, so both directions are a single
table lookup over the whole frame. The tables, and numpy itself, are loaded on the first
call that companding serves, not when the module is imported: an idle gateway never needs
them (see :mod:`gateway.dsp`). The standard library's `audioop` is gone in Python 3.13,
so Branchline carries its own tables; they follow the G.711 segment layout with the same
16-bit scaling that `audioop` used (mu-law on the top 14 bits, A-law on the top 13 bits), so
bytes are identical to what other implementations produce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["CODECS", "decode", "encode", "silence_byte"]

CODECS: Final = ("PCMU", "PCMA")

_ULAW_BIAS: Final = 0x84  # 132, added to the 16-bit magnitude before finding the segment
_ULAW_CLIP_14: Final = 8159  # largest 14-bit magnitude the mu-law segments cover


def _segment(magnitude: npt.NDArray[np.int32], first_top: int) -> npt.NDArray[np.int32]:
    """Index of the G.711 segment: 0 for magnitude <= first_top, +1 per doubling, 8 = overflow."""
    import numpy as np

    seg = np.zeros(magnitude.shape, dtype=np.int32)
    top = first_top
    for _ in range(8):
        seg += (magnitude > top).astype(np.int32)
        top = (top << 1) | 1
    return seg


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    import numpy as np

    sample = np.arange(-32768, 32768, dtype=np.int32)
    v14 = sample >> 2  # arithmetic shift: floor, as the 14-bit reference input does
    negative = v14 < 0
    magnitude = np.where(negative, -v14, v14)
    magnitude = np.minimum(magnitude, _ULAW_CLIP_14) + (_ULAW_BIAS >> 2)
    seg = _segment(magnitude, 0x3F)
    code = (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)  # the clip point itself lands past the last segment
    code ^= np.where(negative, 0x7F, 0xFF)
    # index the table by the sample's uint16 bit pattern: 0..32767 then -32768..-1
    return np.roll(code.astype(np.uint8), -32768)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    import numpy as np

    sample = np.arange(-32768, 32768, dtype=np.int32)
    v13 = sample >> 3
    negative = v13 < 0
    magnitude = np.where(negative, -v13 - 1, v13)
    seg = _segment(magnitude, 0x1F)
    shift = np.maximum(seg, 1)
    code = (seg << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    code ^= np.where(negative, 0x55, 0xD5)
    return np.roll(code.astype(np.uint8), -32768)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    import numpy as np

    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << exponent
    value = np.where(code & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS)
    return value.astype("<i2")


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    import numpy as np

    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code >> 4) & 0x07
    mantissa = (code & 0x0F) << 4
    magnitude = np.where(seg == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(seg - 1, 0))
    value = np.where(code & 0x80, magnitude, -magnitude)
    return value.astype("<i2")


_ENCODE: Final[dict[str, npt.NDArray[np.uint8]]] = {}
_DECODE: Final[dict[str, npt.NDArray[np.int16]]] = {}


def _codec(codec: str) -> str:
    name = codec.upper()
    if name not in CODECS:
        raise ValueError(f"G.711 codec {codec!r} is not supported; expected one of {CODECS}")
    if not _ENCODE:
        _ENCODE.update(PCMU=_build_ulaw_encode(), PCMA=_build_alaw_encode())
        _DECODE.update(PCMU=_build_ulaw_decode(), PCMA=_build_alaw_decode())
    return name


def encode(pcm: bytes, codec: str) -> bytes:
    """Compand 16-bit little-endian PCM to one G.711 byte per sample for an RTP payload."""
    import numpy as np

    table = _ENCODE[_codec(codec)]
    if len(pcm) % 2:
        raise ValueError(f"PCM must be whole 16-bit samples, got {len(pcm)} bytes")
    index = np.frombuffer(pcm, dtype="<u2")
    out: bytes = table[index].tobytes()
    return out


def decode(payload: bytes, codec: str) -> bytes:
    """Expand a G.711 payload back to 16-bit little-endian PCM for the earpiece."""
    import numpy as np

    table = _DECODE[_codec(codec)]
    index = np.frombuffer(payload, dtype=np.uint8)
    out: bytes = table[index].tobytes()
    return out


def silence_byte(codec: str) -> int:
    """The code for digital zero, used to build silent payloads without encoding a frame."""
    return int(_ENCODE[_codec(codec)][0])

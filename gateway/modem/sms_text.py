"""SMS text coding: the GSM-7 default alphabet (3GPP TS 23.038 6.2.1) with its extension
table, septet packing, UCS-2, and splitting long text into concatenated parts.

Pure functions; no I/O. Errors are :class:`SmsError`, which names the field and offset.
"""

from __future__ import annotations

import enum


class SmsError(ValueError):
    """A PDU or text that cannot be coded; ``field`` and ``offset`` say where."""

    def __init__(self, field: str, offset: int | None, message: str) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{field}{where}: {message}")
        self.field = field
        self.offset = offset


class Encoding(enum.Enum):
    """The alphabet a message's user data is coded in (TS 23.038 section 4)."""

    GSM7 = "gsm7"
    EIGHT_BIT = "8bit"
    UCS2 = "ucs2"


ESCAPE = 0x1B

# The default alphabet, one character per septet value 0x00..0x7F. 0x1B is the escape to the
# extension table and never stands for itself; "\x1b" keeps the indexes right.
_DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_DEFAULT) == 128

# The extension table: escape + code -> character.
_EXTENSION: dict[int, str] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_TO_SEPTETS: dict[str, tuple[int, ...]] = {
    ch: (code,) for code, ch in enumerate(_DEFAULT) if code != ESCAPE
}
_TO_SEPTETS.update({ch: (ESCAPE, code) for code, ch in _EXTENSION.items()})

# Septets per single message / per part carrying a concatenation header (6 octets of UDH,
# 8-bit reference; 7 octets with a 16-bit reference).
GSM7_SINGLE = 160
UCS2_SINGLE = 70  # UTF-16 code units
OCTETS_SINGLE = 140


def gsm7_fits(text: str) -> bool:
    """True when every character of ``text`` has a GSM-7 code (default or extension)."""
    return all(ch in _TO_SEPTETS for ch in text)


def choose_encoding(text: str) -> Encoding:
    """GSM-7 when the whole text fits the default alphabet and extension, else UCS-2."""
    return Encoding.GSM7 if gsm7_fits(text) else Encoding.UCS2


def gsm7_encode(text: str) -> list[int]:
    """Text -> septet values; extension characters take two (escape, code)."""
    out: list[int] = []
    for i, ch in enumerate(text):
        codes = _TO_SEPTETS.get(ch)
        if codes is None:
            raise SmsError("text", i, f"character {ch!r} (U+{ord(ch):04X}) has no GSM-7 code")
        out.extend(codes)
    return out


def gsm7_decode(septets: list[int] | bytes) -> str:
    """Septet values -> text.

    An escape before a code the extension table lacks shows the default character (as TS
    23.038 asks); a doubled or trailing escape shows a space, so no septet is dropped.
    """
    out: list[str] = []
    escaped = False
    for s in septets:
        s &= 0x7F
        if escaped:
            escaped = False
            if s == ESCAPE:
                out.append(" ")
            else:
                out.append(_EXTENSION.get(s, _DEFAULT[s]))
        elif s == ESCAPE:
            escaped = True
        else:
            out.append(_DEFAULT[s])
    if escaped:
        out.append(" ")
    return "".join(out)


def gsm7_length(text: str) -> int:
    """Septets ``text`` takes in GSM-7 (extension characters count two)."""
    return len(gsm7_encode(text))


def pack_septets(septets: list[int], start_bit: int = 0) -> bytes:
    """Pack septets LSB-first into octets, starting ``start_bit`` bits into the output.

    With a UDH, ``start_bit`` is its length in bits plus the fill bits; the leading octets are
    left zero for the caller to overwrite with the header.
    """
    total_bits = start_bit + 7 * len(septets)
    out = bytearray((total_bits + 7) // 8)
    bit = start_bit
    for s in septets:
        value = (s & 0x7F) << (bit % 8)
        idx = bit // 8
        out[idx] |= value & 0xFF
        if value > 0xFF:
            out[idx + 1] |= value >> 8
        bit += 7
    return bytes(out)


def unpack_septets(data: bytes, count: int, start_bit: int = 0) -> list[int]:
    """Read ``count`` septets from ``data`` starting ``start_bit`` bits in (LSB-first)."""
    out: list[int] = []
    bit = start_bit
    for _ in range(count):
        idx = bit // 8
        value = data[idx]
        if idx + 1 < len(data):
            value |= data[idx + 1] << 8
        out.append((value >> (bit % 8)) & 0x7F)
        bit += 7
    return out


def fill_bits(udh_octets: int) -> int:
    """Fill bits after a UDH of ``udh_octets`` octets so the text starts on a septet boundary."""
    return (7 - (udh_octets * 8) % 7) % 7


def udh_septets(udh_octets: int) -> int:
    """Septets a UDH of ``udh_octets`` octets (plus fill) takes out of the UDL."""
    return (udh_octets * 8 + 6) // 7


def ucs2_encode(text: str) -> bytes:
    """Text -> UTF-16BE; characters outside the BMP (emoji) become surrogate pairs."""
    return text.encode("utf-16-be", errors="surrogatepass")


def ucs2_decode(data: bytes) -> str:
    """UTF-16BE -> text; a lone surrogate shows U+FFFD rather than failing."""
    return data.decode("utf-16-be", errors="replace")


def split_text(text: str, encoding: Encoding | None = None, *, ref16: bool = False) -> list[str]:
    """Split ``text`` into the pieces a concatenated message carries, one per part.

    One piece when it fits a single SMS (160 septets / 70 UCS-2 units / 140 octets). Otherwise
    153 septets (152 with a 16-bit reference) per part, an escape pair never split; 67 UCS-2
    code units (66), a surrogate pair never split; for 8-bit, 134 (133) characters as octets.
    """
    enc = encoding or choose_encoding(text)
    udh = 7 if ref16 else 6
    if enc is Encoding.GSM7:
        cost = [len(_TO_SEPTETS[ch]) if ch in _TO_SEPTETS else 1 for ch in text]
        single, per_part = GSM7_SINGLE, (OCTETS_SINGLE - udh) * 8 // 7
    elif enc is Encoding.UCS2:
        cost = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
        single, per_part = UCS2_SINGLE, (OCTETS_SINGLE - udh) // 2
    else:
        cost = [1] * len(text)
        single, per_part = OCTETS_SINGLE, OCTETS_SINGLE - udh
    if sum(cost) <= single:
        return [text]
    parts: list[str] = []
    start = 0
    used = 0
    for i, c in enumerate(cost):
        if used + c > per_part:
            parts.append(text[start:i])
            start, used = i, 0
        used += c
    parts.append(text[start:])
    return parts

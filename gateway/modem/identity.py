"""Who a modem is: ATI, AT+CGMI/+CGMM/+CGMR, IMEI (AT+CGSN), IMSI (AT+CIMI) and ICCID.

The supervisor finds a re-plugged modem by its IMEI and the SIM check keys its memory on the
ICCID, so these parsers are strict about digits. Errors are `ResponseError`, as for every
other modem line (`gateway.modem.responses` re-exports these functions).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.modem.fields import ResponseError
from gateway.modem.fields import body as _body

__all__ = ["ModemIdentity", "parse_ati", "parse_iccid", "parse_imei", "parse_imsi", "parse_info"]


@dataclass(frozen=True)
class ModemIdentity:
    """What ATI says: maker, model and firmware revision. SIM800-class firmware answers ATI
    with one line ("SIM800 R14.18"): that is the model, and the maker is unknown (None)."""

    manufacturer: str | None
    model: str
    revision: str | None = None


def parse_ati(lines: tuple[str, ...] | list[str]) -> ModemIdentity:
    """ATI's information lines, e.g. ("Quectel", "EC25", "Revision: EC25EFAR06A06M4G") or
    SIMCom's ("Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600E-H", ...)."""
    fields: dict[str, str] = {}
    plain: list[str] = []
    for raw in lines:
        text = raw.strip()
        if not text or text == "ATI":
            continue
        key, sep, value = text.partition(":")
        if sep and key.strip().lower() in ("manufacturer", "model", "revision"):
            fields[key.strip().lower()] = value.strip()
        elif not sep:
            plain.append(text)
    if len(plain) == 1 and not fields:
        return ModemIdentity(None, plain[0])
    manufacturer = fields.get("manufacturer") or (plain[0] if plain else "")
    model = fields.get("model") or (plain[1] if len(plain) > 1 else "")
    revision = fields.get("revision") or (plain[2] if len(plain) > 2 else None)
    if not manufacturer or not model:
        shown = "; ".join(lines)
        raise ResponseError(shown, "ATI lines naming a manufacturer and a model")
    return ModemIdentity(manufacturer, model, revision)


def parse_info(lines: tuple[str, ...] | list[str], name: str) -> str:
    """The one information line of AT+CGMI/+CGMM/+CGMR (with or without ``+CGMI:``)."""
    texts = [t.strip() for t in lines if t.strip() and t.strip().upper() != "AT" + name[1:].upper()]
    if len(texts) != 1:
        raise ResponseError("; ".join(lines), f"one {name} line")
    text = texts[0]
    if text.upper().startswith(name.upper() + ":"):
        text = text[len(name) + 1 :].strip()
    elif text.upper().startswith("REVISION:"):
        text = text[len("revision:") :].strip()
    if not text:
        raise ResponseError(texts[0], f"a value after {name}")
    return text.strip('"')


def parse_imei(line: str) -> str:
    """AT+CGSN: ``867962041234567`` or ``+CGSN: "8679..."``; 15 digits (14-17 accepted)."""
    text = _body(line, "+CGSN").strip('"')
    if not (14 <= len(text) <= 17 and text.isascii() and text.isdigit()):
        raise ResponseError(line, "an IMEI of 15 digits")
    return text


def parse_imsi(line: str) -> str:
    """AT+CIMI: 6 to 15 digits."""
    text = _body(line, "+CIMI").strip('"')
    if not (6 <= len(text) <= 15 and text.isascii() and text.isdigit()):
        raise ResponseError(line, "an IMSI of 6 to 15 digits")
    return text


def parse_iccid(line: str) -> str:
    """``+QCCID: 8944...``, ``+ICCID: ...``, ``+CCID: ...`` or the bare ICCID (18-22 digits,
    a trailing F padding removed)."""
    text = line.strip()
    for name in ("+QCCID", "+ICCID", "+CCID"):
        if text.upper().startswith(name + ":"):
            text = text[len(name) + 1 :]
            break
    iccid = text.strip().strip('"').upper().rstrip("F")
    if not (18 <= len(iccid) <= 22 and iccid.isascii() and iccid.isdigit()):
        raise ResponseError(line, "an ICCID of 18 to 22 digits")
    return iccid

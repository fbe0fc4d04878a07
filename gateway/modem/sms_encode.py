"""Writing SMS-SUBMIT and SMS-DELIVER PDUs (3GPP TS 23.040 9.2.2), single or concatenated."""

from __future__ import annotations

import datetime as dt

from gateway.modem.sms_text import (
    OCTETS_SINGLE,
    Encoding,
    SmsError,
    choose_encoding,
    fill_bits,
    gsm7_encode,
    pack_septets,
    split_text,
    ucs2_encode,
    udh_septets,
)
from gateway.modem.sms_types import (
    DIGITS,
    IEI_CONCAT_8,
    IEI_CONCAT_16,
    NPI_ISDN,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    TON_UNKNOWN,
    Concat,
    EncodedPdu,
    Validity,
)

# ---------------------------------------------------------------------------------------------
# Writing


def _encode_digits(digits: str, field: str) -> bytes:
    nibbles: list[int] = []
    for i, ch in enumerate(digits):
        idx = DIGITS.find(ch)
        if idx < 0:
            raise SmsError(field, i, f"{ch!r} is not a digit, '*', '#', 'a', 'b' or 'c'")
        nibbles.append(idx)
    if len(nibbles) % 2:
        nibbles.append(0x0F)
    return bytes(nibbles[i] | (nibbles[i + 1] << 4) for i in range(0, len(nibbles), 2))


def _split_address(address: str, ton: int | None, field: str) -> tuple[str, int]:
    if ton is None:
        if address.startswith("+"):
            ton = TON_INTERNATIONAL
        elif address and all(ch in "0123456789*#" for ch in address):
            ton = TON_UNKNOWN
        else:
            ton = TON_ALPHANUMERIC
    if ton == TON_INTERNATIONAL:
        address = address.removeprefix("+")
    if not address:
        raise SmsError(field, None, "empty address")
    return address, ton


def _encode_address(address: str, ton: int | None, field: str) -> bytes:
    value, ton = _split_address(address, ton, field)
    if ton == TON_ALPHANUMERIC:
        septets = gsm7_encode(value)
        if len(septets) > 11:
            raise SmsError(field, None, f"alphanumeric address {value!r} exceeds 11 septets")
        packed = pack_septets(septets)
        return bytes([(len(septets) * 7 + 3) // 4, 0x80 | (ton << 4)]) + packed
    if len(value) > 20:
        raise SmsError(field, None, f"{len(value)} digits, at most 20")
    return bytes([len(value), 0x80 | (ton << 4) | NPI_ISDN]) + _encode_digits(value, field)


def _encode_smsc(smsc: str | None) -> bytes:
    if not smsc:
        return b"\x00"
    value, ton = _split_address(smsc, None, "SMSC")
    if ton == TON_ALPHANUMERIC or len(value) > 20:
        raise SmsError("SMSC", None, f"{smsc!r} is not a phone number")
    digits = _encode_digits(value, "SMSC")
    return bytes([len(digits) + 1, 0x80 | (ton << 4) | NPI_ISDN]) + digits


def _bcd(value: int) -> int:
    return (value % 10) << 4 | (value // 10)


def _encode_timestamp(stamp: dt.datetime, field: str) -> bytes:
    if not 2000 <= stamp.year <= 2099:
        raise SmsError(field, None, f"year {stamp.year} outside 2000-2099")
    off = stamp.utcoffset() or dt.timedelta(0)
    quarters, rest = divmod(abs(int(off.total_seconds())), 900)
    if rest or quarters > 79:
        raise SmsError(field, None, f"UTC offset {off} is not whole quarter hours within 19:45")
    tz = _bcd(quarters) | (0x08 if off < dt.timedelta(0) else 0)
    fields = (stamp.year % 100, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    return bytes(_bcd(v) for v in fields) + bytes([tz])


def _dcs(encoding: Encoding, message_class: int | None) -> int:
    alpha = {Encoding.GSM7: 0, Encoding.EIGHT_BIT: 1, Encoding.UCS2: 2}[encoding]
    if message_class is None:
        return alpha << 2
    if not 0 <= message_class <= 3:
        raise SmsError("TP-DCS", None, f"message class {message_class}, expected 0-3")
    return 0x10 | (alpha << 2) | message_class


def _concat_ie(concat: Concat) -> bytes:
    if not 1 <= concat.seq <= concat.total <= 255:
        raise SmsError("TP-UDH", None, f"part {concat.seq} of {concat.total} is not valid")
    if concat.ref16:
        if not 0 <= concat.reference <= 0xFFFF:
            raise SmsError("TP-UDH", None, f"reference {concat.reference} exceeds 16 bits")
        ref = concat.reference.to_bytes(2, "big")
        return bytes([IEI_CONCAT_16, 4]) + ref + bytes([concat.total, concat.seq])
    if not 0 <= concat.reference <= 0xFF:
        raise SmsError("TP-UDH", None, f"reference {concat.reference} exceeds 8 bits")
    return bytes([IEI_CONCAT_8, 3, concat.reference, concat.total, concat.seq])


def _encode_user_data(
    text: str, data: bytes | None, encoding: Encoding, concat: Concat | None
) -> bytes:
    """UDL + UD octets."""
    udh = b""
    if concat is not None:
        ies = _concat_ie(concat)
        udh = bytes([len(ies)]) + ies
    if encoding is Encoding.GSM7:
        septets = gsm7_encode(text)
        skip = udh_septets(len(udh))
        udl = skip + len(septets)
        if udl > 160:
            raise SmsError("TP-UD", None, f"{udl} septets, at most 160; split the text")
        start = len(udh) * 8 + fill_bits(len(udh)) if udh else 0
        ud = bytearray(pack_septets(septets, start))
        ud[: len(udh)] = udh
        return bytes([udl]) + bytes(ud)
    if data is not None:
        body = data
    elif encoding is Encoding.UCS2:
        body = ucs2_encode(text)
    else:
        try:
            body = text.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise SmsError("text", exc.start, "8-bit data must be octets (pass data=)") from None
    octets = udh + body
    if len(octets) > OCTETS_SINGLE:
        raise SmsError("TP-UD", None, f"{len(octets)} octets, at most {OCTETS_SINGLE}; split it")
    return bytes([len(octets)]) + octets


def _relative_vp(period: dt.timedelta) -> int:
    minutes = -(-int(period.total_seconds()) // 60)
    if minutes <= 720:
        return max(0, -(-minutes // 5) - 1)
    if minutes <= 1440:
        return 143 + -(-(minutes - 720) // 30)
    if minutes <= 30 * 1440:
        return 166 + -(-minutes // 1440)
    return min(255, 192 + -(-minutes // 10080))


def _pick_encoding(text: str, data: bytes | None, encoding: Encoding | None) -> Encoding:
    if data is not None:
        return Encoding.EIGHT_BIT
    return encoding or choose_encoding(text)


def encode_submit(
    destination: str,
    text: str = "",
    *,
    reference: int = 0,
    smsc: str | None = None,
    validity: Validity | None = None,
    encoding: Encoding | None = None,
    data: bytes | None = None,
    concat: Concat | None = None,
    message_class: int | None = None,
    pid: int = 0,
    status_report_request: bool = False,
    reject_duplicates: bool = False,
    destination_ton: int | None = None,
) -> EncodedPdu:
    """One SMS-SUBMIT for AT+CMGS; ``hex`` leads with the SMSC (``00``: the SIM's own).

    ``validity`` is relative (timedelta, rounded up to the next step TS 23.040 offers) or
    absolute (datetime). ``data`` sends 8-bit octets instead of ``text``.
    """
    enc = _pick_encoding(text, data, encoding)
    vpf, vp = 0, b""
    if isinstance(validity, dt.datetime):
        vpf, vp = 3, _encode_timestamp(validity, "TP-VP")
    elif isinstance(validity, dt.timedelta):
        vpf, vp = 2, bytes([_relative_vp(validity)])
    if not 0 <= reference <= 255:
        raise SmsError("TP-MR", None, f"{reference} is not 0-255")
    first = 0x01 | (vpf << 3)
    first |= 0x04 if reject_duplicates else 0
    first |= 0x20 if status_report_request else 0
    first |= 0x40 if concat is not None else 0
    tpdu = (
        bytes([first, reference])
        + _encode_address(destination, destination_ton, "TP-DA")
        + bytes([pid & 0xFF, _dcs(enc, message_class)])
        + vp
        + _encode_user_data(text, data, enc, concat)
    )
    return EncodedPdu((_encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu))


def encode_deliver(
    originator: str,
    text: str = "",
    timestamp: dt.datetime | None = None,
    *,
    smsc: str | None = None,
    encoding: Encoding | None = None,
    data: bytes | None = None,
    concat: Concat | None = None,
    message_class: int | None = None,
    pid: int = 0,
    status_report: bool = False,
    more_messages: bool = False,
    originator_ton: int | None = None,
) -> EncodedPdu:
    """One SMS-DELIVER as a modem shows it in +CMT/+CMGR (led by the SMSC address).

    ``originator`` starting with ``+`` is international, digits alone are of unknown type,
    anything else is alphanumeric; ``originator_ton`` overrides. A naive or missing
    ``timestamp`` is taken as UTC (2000-01-01 when missing; this module never reads the clock).
    """
    enc = _pick_encoding(text, data, encoding)
    stamp = timestamp or dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    first = 0x00 if more_messages else 0x04
    first |= 0x20 if status_report else 0
    first |= 0x40 if concat is not None else 0
    tpdu = (
        bytes([first])
        + _encode_address(originator, originator_ton, "TP-OA")
        + bytes([pid & 0xFF, _dcs(enc, message_class)])
        + _encode_timestamp(stamp, "TP-SCTS")
        + _encode_user_data(text, data, enc, concat)
    )
    return EncodedPdu((_encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu))


def _parts(
    text: str, encoding: Encoding | None, reference: int, ref16: bool
) -> tuple[Encoding, list[tuple[str, Concat | None]]]:
    enc = encoding or choose_encoding(text)
    pieces = split_text(text, enc, ref16=ref16)
    if len(pieces) == 1:
        return enc, [(text, None)]
    if len(pieces) > 255:
        raise SmsError("text", None, f"needs {len(pieces)} parts, at most 255")
    total = len(pieces)
    return enc, [(piece, Concat(reference, total, i + 1, ref16)) for i, piece in enumerate(pieces)]


def encode_submit_parts(
    destination: str,
    text: str,
    *,
    reference: int = 0,
    ref16: bool = False,
    encoding: Encoding | None = None,
    smsc: str | None = None,
    validity: Validity | None = None,
    status_report_request: bool = False,
    message_class: int | None = None,
) -> list[EncodedPdu]:
    """``text`` as one SMS-SUBMIT, or as concatenated parts sharing ``reference`` (the
    concatenation reference; TP-MR stays 0 for the modem to fill in)."""
    enc, parts = _parts(text, encoding, reference, ref16)
    return [
        encode_submit(
            destination,
            piece,
            smsc=smsc,
            validity=validity,
            encoding=enc,
            concat=concat,
            status_report_request=status_report_request,
            message_class=message_class,
        )
        for piece, concat in parts
    ]


def encode_deliver_parts(
    originator: str,
    text: str,
    timestamp: dt.datetime | None = None,
    *,
    reference: int = 0,
    ref16: bool = False,
    encoding: Encoding | None = None,
    smsc: str | None = None,
    message_class: int | None = None,
) -> list[EncodedPdu]:
    """``text`` as one SMS-DELIVER or as concatenated parts, in order (the emulator can
    shuffle them to play a network delivering out of order)."""
    enc, parts = _parts(text, encoding, reference, ref16)
    return [
        encode_deliver(
            originator,
            piece,
            timestamp,
            smsc=smsc,
            encoding=enc,
            concat=concat,
            message_class=message_class,
        )
        for piece, concat in parts
    ]


def encode_status_report(
    reference: int,
    recipient: str,
    status: int,
    timestamp: dt.datetime,
    discharge_time: dt.datetime,
    *,
    smsc: str | None = None,
    recipient_ton: int | None = None,
) -> EncodedPdu:
    """An SMS-STATUS-REPORT (+CDS) for message ``reference`` (what the modem emulator sends
    after an AT+CMGS that asked for one). Naive datetimes are taken as UTC."""
    if not 0 <= reference <= 255 or not 0 <= status <= 255:
        raise SmsError("TP-MR", None, f"reference {reference} / status {status} not 0-255")
    stamps = [
        t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC) for t in (timestamp, discharge_time)
    ]
    tpdu = (
        bytes([0x06, reference])  # SMS-STATUS-REPORT, no more messages waiting
        + _encode_address(recipient, recipient_ton, "TP-RA")
        + _encode_timestamp(stamps[0], "TP-SCTS")
        + _encode_timestamp(stamps[1], "TP-DT")
        + bytes([status])
    )
    return EncodedPdu((_encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu))

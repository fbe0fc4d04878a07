"""Reading SMS-DELIVER and SMS-SUBMIT PDUs (3GPP TS 23.040 9.2.2).

Every read goes through one cursor so a malformed PDU raises :class:`SmsError` naming the
field and the octet offset where it went wrong, never another exception.
"""

from __future__ import annotations

import datetime as dt

from gateway.modem.sms_text import (
    OCTETS_SINGLE,
    Encoding,
    SmsError,
    gsm7_decode,
    ucs2_decode,
    udh_septets,
    unpack_septets,
)
from gateway.modem.sms_types import (
    DIGITS,
    IEI_CONCAT_8,
    IEI_CONCAT_16,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    Concat,
    InformationElement,
    SmsDeliver,
    SmsStatusReport,
    SmsSubmit,
    Validity,
)

# ---------------------------------------------------------------------------------------------
# Reading


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self, field: str) -> int:
        if self.pos >= len(self.data):
            raise SmsError(field, self.pos, f"PDU ends early ({len(self.data)} octets)")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise SmsError(
                field, self.pos, f"needs {n} octets, only {len(self.data) - self.pos} remain"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _octets(pdu: str | bytes) -> bytes:
    if isinstance(pdu, bytes | bytearray):
        return bytes(pdu)
    try:
        return bytes.fromhex("".join(pdu.split()))
    except ValueError:
        raise SmsError("PDU", None, "not a hex string") from None


def _bcd_digits(raw: bytes, count: int) -> str:
    out: list[str] = []
    for b in raw:
        for nib in (b & 0x0F, b >> 4):
            if len(out) < count and nib != 0x0F:
                out.append(DIGITS[nib])
    return "".join(out)


def _read_smsc(r: _Reader) -> str | None:
    start = r.pos
    n = r.byte("SMSC length")
    if n == 0:
        return None
    if n > 11:
        raise SmsError("SMSC length", start, f"{n} octets, at most 11")
    toa = r.byte("SMSC type")
    digits = _bcd_digits(r.take(n - 1, "SMSC address"), 2 * (n - 1))
    return "+" + digits if (toa >> 4) & 0x07 == TON_INTERNATIONAL and digits else digits


def _read_address(r: _Reader, field: str) -> tuple[str, int]:
    start = r.pos
    n = r.byte(f"{field} length")
    if n > 20:
        raise SmsError(f"{field} length", start, f"{n} semi-octets, at most 20")
    toa = r.byte(f"{field} type")
    ton = (toa >> 4) & 0x07
    raw = r.take((n + 1) // 2, f"{field} digits")
    if ton == TON_ALPHANUMERIC:
        return gsm7_decode(unpack_septets(raw, n * 4 // 7)), ton
    digits = _bcd_digits(raw, n)
    return ("+" + digits if ton == TON_INTERNATIONAL and digits else digits), ton


def _swapped(b: int, field: str, offset: int) -> int:
    lo, hi = b & 0x0F, b >> 4
    if lo > 9 or hi > 9:
        raise SmsError(field, offset, f"octet {b:02X} is not BCD")
    return lo * 10 + hi


def _read_timestamp(r: _Reader, field: str) -> dt.datetime:
    start = r.pos
    raw = r.take(7, field)
    y, mo, d, h, mi, s = (_swapped(raw[i], field, start + i) for i in range(6))
    tz = raw[6]
    quarters = _swapped(tz & 0xF7, field, start + 6)
    if quarters > 79:
        raise SmsError(field, start + 6, f"time zone {quarters} quarter hours out of range")
    offset = dt.timedelta(minutes=15 * quarters) * (-1 if tz & 0x08 else 1)
    try:
        return dt.datetime(2000 + y, mo, d, h, mi, s, tzinfo=dt.timezone(offset))
    except ValueError as exc:
        raise SmsError(field, start, f"not a date: {exc}") from None


def _read_dcs(dcs: int) -> tuple[Encoding, int | None]:
    group = dcs >> 4
    if group <= 0x7:  # general data coding (0x) and automatic deletion (01xx)
        if dcs & 0x20:
            return Encoding.EIGHT_BIT, None  # compressed: carried as octets
        alpha = (dcs >> 2) & 0x03
        enc = {1: Encoding.EIGHT_BIT, 2: Encoding.UCS2}.get(alpha, Encoding.GSM7)
        return enc, (dcs & 0x03) if dcs & 0x10 else None
    if group == 0xE:
        return Encoding.UCS2, None
    if group == 0xF:
        return (Encoding.EIGHT_BIT if dcs & 0x04 else Encoding.GSM7), dcs & 0x03
    return Encoding.GSM7, None  # message waiting (C, D) and reserved groups


def _read_udh(ud: bytes, base: int) -> tuple[tuple[InformationElement, ...], Concat | None]:
    ies: list[InformationElement] = []
    concat: Concat | None = None
    end = 1 + ud[0]
    i = 1
    while i < end:
        if i + 2 > end:
            raise SmsError("TP-UDH", base + i, "information element header runs past the UDH")
        iei, iedl = ud[i], ud[i + 1]
        if i + 2 + iedl > end:
            raise SmsError("TP-UDH", base + i, f"IE {iei:02X} length {iedl} runs past the UDH")
        data = ud[i + 2 : i + 2 + iedl]
        ies.append(InformationElement(iei, data))
        if concat is None and iei == IEI_CONCAT_8 and iedl == 3:
            concat = Concat(data[0], data[1], data[2])
        elif concat is None and iei == IEI_CONCAT_16 and iedl == 4:
            concat = Concat((data[0] << 8) | data[1], data[2], data[3], ref16=True)
        i += 2 + iedl
    if concat is not None and not 1 <= concat.seq <= concat.total:
        concat = None  # TS 23.040 9.2.3.24.1: such an IE is ignored
    return tuple(ies), concat


def _read_user_data(
    r: _Reader, encoding: Encoding, udhi: bool
) -> tuple[str, bytes, tuple[InformationElement, ...], Concat | None]:
    udl_at = r.pos
    udl = r.byte("TP-UDL")
    if encoding is Encoding.GSM7:
        if udl > 160:
            raise SmsError("TP-UDL", udl_at, f"{udl} septets, at most 160")
        n_octets = (udl * 7 + 7) // 8
    else:
        if udl > OCTETS_SINGLE:
            raise SmsError("TP-UDL", udl_at, f"{udl} octets, at most {OCTETS_SINGLE}")
        n_octets = udl
    base = r.pos
    ud = r.take(n_octets, "TP-UD")
    ies: tuple[InformationElement, ...] = ()
    concat = None
    hdr = 0
    if udhi:
        if not ud:
            raise SmsError("TP-UDHL", base, "header indicated but user data is empty")
        hdr = 1 + ud[0]
        if hdr > n_octets:
            raise SmsError("TP-UDHL", base, f"header of {hdr} octets exceeds {n_octets}")
        ies, concat = _read_udh(ud, base)
    if encoding is Encoding.GSM7:
        skip = udh_septets(hdr)
        if skip > udl:
            raise SmsError("TP-UDHL", base, f"header takes {skip} septets of {udl}")
        return gsm7_decode(unpack_septets(ud, udl - skip, skip * 7)), b"", ies, concat
    body = ud[hdr:]
    if encoding is Encoding.UCS2:
        if len(body) % 2:
            raise SmsError("TP-UD", base + hdr, f"UCS-2 text of odd length {len(body)}")
        return ucs2_decode(body), b"", ies, concat
    return body.decode("latin-1"), body, ies, concat


def _relative_validity(vp: int) -> dt.timedelta:
    if vp <= 143:
        return dt.timedelta(minutes=5 * (vp + 1))
    if vp <= 167:
        return dt.timedelta(hours=12, minutes=30 * (vp - 143))
    if vp <= 196:
        return dt.timedelta(days=vp - 166)
    return dt.timedelta(weeks=vp - 192)


def _read_validity(r: _Reader, vpf: int) -> Validity | None:
    if vpf == 0:
        return None
    if vpf == 2:
        return _relative_validity(r.byte("TP-VP"))
    if vpf == 3:
        return _read_timestamp(r, "TP-VP")
    start = r.pos
    raw = r.take(7, "TP-VP")  # enhanced format (TS 23.040 9.2.3.12.3)
    kind = raw[0] & 0x07
    if kind == 1:
        return _relative_validity(raw[1])
    if kind == 2:
        return dt.timedelta(seconds=raw[1])
    if kind == 3:
        h, m, s = (_swapped(raw[i], "TP-VP", start + i) for i in (1, 2, 3))
        return dt.timedelta(hours=h, minutes=m, seconds=s)
    return None


def _check_length(tpdu_length: int, expected: int | None) -> None:
    if expected is not None and expected != tpdu_length:
        raise SmsError("length", None, f"TPDU is {tpdu_length} octets, modem said {expected}")


def decode_deliver(pdu: str | bytes, *, smsc: bool = True, length: int | None = None) -> SmsDeliver:
    """Read an SMS-DELIVER PDU (hex or bytes); ``smsc`` says it is led by the SMSC address
    (as in +CMT/+CMGR/+CMGL); ``length`` is the modem's TPDU length, checked when given."""
    r = _Reader(_octets(pdu))
    centre = _read_smsc(r) if smsc else None
    tpdu_start = r.pos
    first = r.byte("first octet")
    if first & 0x03 != 0:
        raise SmsError("TP-MTI", tpdu_start, f"{first & 0x03} is not SMS-DELIVER (0)")
    originator, ton = _read_address(r, "TP-OA")
    pid = r.byte("TP-PID")
    dcs = r.byte("TP-DCS")
    encoding, klass = _read_dcs(dcs)
    stamp = _read_timestamp(r, "TP-SCTS")
    text, data, ies, concat = _read_user_data(r, encoding, bool(first & 0x40))
    tpdu_length = r.pos - tpdu_start
    _check_length(tpdu_length, length)
    return SmsDeliver(
        originator=originator,
        text=text,
        timestamp=stamp,
        originator_ton=ton,
        smsc=centre,
        pid=pid,
        dcs=dcs,
        encoding=encoding,
        message_class=klass,
        udh=ies,
        concat=concat,
        data=data,
        more_messages=not first & 0x04,
        status_report=bool(first & 0x20),
        reply_path=bool(first & 0x80),
        tpdu_length=tpdu_length,
    )


def decode_submit(pdu: str | bytes, *, smsc: bool = True, length: int | None = None) -> SmsSubmit:
    """Read an SMS-SUBMIT PDU, as a client hands it to AT+CMGS (see :func:`decode_deliver`)."""
    r = _Reader(_octets(pdu))
    centre = _read_smsc(r) if smsc else None
    tpdu_start = r.pos
    first = r.byte("first octet")
    if first & 0x03 != 1:
        raise SmsError("TP-MTI", tpdu_start, f"{first & 0x03} is not SMS-SUBMIT (1)")
    mr = r.byte("TP-MR")
    destination, ton = _read_address(r, "TP-DA")
    pid = r.byte("TP-PID")
    dcs = r.byte("TP-DCS")
    encoding, klass = _read_dcs(dcs)
    validity = _read_validity(r, (first >> 3) & 0x03)
    text, data, ies, concat = _read_user_data(r, encoding, bool(first & 0x40))
    tpdu_length = r.pos - tpdu_start
    _check_length(tpdu_length, length)
    return SmsSubmit(
        destination=destination,
        text=text,
        destination_ton=ton,
        reference=mr,
        smsc=centre,
        pid=pid,
        dcs=dcs,
        encoding=encoding,
        message_class=klass,
        validity=validity,
        udh=ies,
        concat=concat,
        data=data,
        status_report_request=bool(first & 0x20),
        reject_duplicates=bool(first & 0x04),
        reply_path=bool(first & 0x80),
        tpdu_length=tpdu_length,
    )


def decode_status_report(
    pdu: str | bytes, *, smsc: bool = True, length: int | None = None
) -> SmsStatusReport:
    """Read an SMS-STATUS-REPORT, as +CDS or +CMGR of a stored report carries it."""
    r = _Reader(_octets(pdu))
    centre = _read_smsc(r) if smsc else None
    tpdu_start = r.pos
    first = r.byte("first octet")
    if first & 0x03 != 2:
        raise SmsError("TP-MTI", tpdu_start, f"{first & 0x03} is not SMS-STATUS-REPORT (2)")
    mr = r.byte("TP-MR")
    recipient, ton = _read_address(r, "TP-RA")
    stamp = _read_timestamp(r, "TP-SCTS")
    discharged = _read_timestamp(r, "TP-DT")
    status = r.byte("TP-ST")
    text = ""
    if r.pos < len(r.data):  # optional TP-PI and what it announces (TS 23.040 9.2.3.27)
        pi = r.byte("TP-PI")
        if pi & 0x01:
            r.byte("TP-PID")
        encoding = Encoding.GSM7
        if pi & 0x02:
            encoding, _ = _read_dcs(r.byte("TP-DCS"))
        if pi & 0x04:
            text, _, _, _ = _read_user_data(r, encoding, bool(first & 0x40))
    tpdu_length = r.pos - tpdu_start
    _check_length(tpdu_length, length)
    return SmsStatusReport(
        reference=mr,
        recipient=recipient,
        status=status,
        timestamp=stamp,
        discharge_time=discharged,
        recipient_ton=ton,
        smsc=centre,
        text=text,
        tpdu_length=tpdu_length,
    )


def decode_pdu(
    pdu: str | bytes, *, smsc: bool = True, length: int | None = None
) -> SmsDeliver | SmsSubmit:
    """Read either kind, by its TP-MTI (a +CMGL listing mixes received and stored-to-send).

    A status report (TP-MTI 2) is refused here; :func:`decode_status_report` reads it.
    """
    octets = _octets(pdu)
    at = (octets[0] + 1 if octets else 0) if smsc else 0
    if at >= len(octets):
        raise SmsError("first octet", at, f"PDU ends early ({len(octets)} octets)")
    if octets[at] & 0x03 == 1:
        return decode_submit(octets, smsc=smsc, length=length)
    return decode_deliver(octets, smsc=smsc, length=length)

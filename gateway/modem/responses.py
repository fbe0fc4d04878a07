"""Parsers for the information lines modems send (+CLCC, +CLIP, +CREG, +CSQ, +CPIN, ...).

Pure functions: one line (or a command's lines) in, a frozen dataclass out. Each accepts the
line with or without its ``+NAME:`` prefix, so the same parser reads a command reply line
(``+CLCC: 1,0,2,0,0,"123",129``) and an unsolicited event's value (``1,0,2,0,0,"123",129``).

Modems differ and firmware is sloppy, so anything a parser cannot read raises
`ResponseError` (a `ValueError`) naming the line and what was expected, never another
exception: the caller logs it and carries on rather than losing the modem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from gateway.modem.fields import Field, ResponseError, split_fields
from gateway.modem.fields import body as _body
from gateway.modem.fields import fields as _fields
from gateway.modem.fields import opt_int as _opt_int
from gateway.modem.fields import opt_str as _opt_str
from gateway.modem.fields import to_int as _int
from gateway.modem.identity import (
    ModemIdentity,
    parse_ati,
    parse_iccid,
    parse_imei,
    parse_imsi,
    parse_info,
)

__all__ = [
    "CallDirection",
    "CallEndReport",
    "CallStatus",
    "ClccEntry",
    "ClipInfo",
    "ModemIdentity",
    "NewMessage",
    "Operator",
    "PinRetries",
    "RegStatus",
    "Registration",
    "ResponseError",
    "Signal",
    "SimState",
    "UssdResponse",
    "act_technology",
    "csq_dbm",
    "parse_ceer",
    "parse_clcc",
    "parse_clip",
    "parse_cmti",
    "parse_cops",
    "parse_cpin",
    "parse_cpsi",
    "parse_csq",
    "parse_cusd",
    "parse_iccid",
    "parse_imei",
    "parse_imsi",
    "parse_ati",
    "parse_info",
    "parse_pin_retries",
    "parse_qcsq",
    "parse_registration",
    "split_fields",
]


# --- calls -------------------------------------------------------------------------------


class CallDirection(Enum):
    """Who placed the call (27.007 +CLCC <dir>)."""

    OUTGOING = 0
    INCOMING = 1


class CallStatus(Enum):
    """27.007 +CLCC <stat>."""

    ACTIVE = 0
    HELD = 1
    DIALING = 2
    ALERTING = 3
    INCOMING = 4
    WAITING = 5
    DISCONNECTED = 6
    """Not in 27.007: SIMCom (and the emulator) report a call's end this way with AT+CLCC=1."""


@dataclass(frozen=True)
class ClccEntry:
    """One call in the modem's current call list."""

    index: int
    direction: CallDirection
    status: CallStatus
    mode: int
    """27.007 <mode>: 0 voice, 1 data, 2 fax, 3-8 mixed, 9 unknown."""
    multiparty: bool
    number: str | None = None
    number_type: int | None = None
    alpha: str | None = None

    @property
    def voice(self) -> bool:
        return self.mode == 0


def parse_clcc(line: str) -> ClccEntry:
    """``+CLCC: <idx>,<dir>,<stat>,<mode>,<mpty>[,<number>,<type>[,<alpha>...]]``."""
    f = _fields(line, "+CLCC", 5, 10)
    return ClccEntry(
        index=_int(line, f[0], "call index", 1, 99),
        direction=CallDirection(_int(line, f[1], "direction", 0, 1)),
        status=CallStatus(_int(line, f[2], "call state", 0, 6)),
        mode=_int(line, f[3], "mode", 0, 9),
        multiparty=bool(_int(line, f[4], "multiparty", 0, 1)),
        number=_opt_str(f, 5),
        number_type=_opt_int(line, f, 6, "number type", 0, 255),
        alpha=_opt_str(f, 7),
    )


@dataclass(frozen=True)
class ClipInfo:
    """Calling line identity of an incoming call."""

    number: str | None
    number_type: int | None
    validity: int | None
    """27.007 <CLI validity>: 0 valid, 1 withheld by the caller, 2 not available."""

    @property
    def withheld(self) -> bool:
        """The caller chose to hide the number (or the network sent none with no reason)."""
        return self.validity == 1 or (self.validity is None and self.number is None)

    @property
    def caller_id(self) -> str | None:
        return self.number if self.validity in (None, 0) else None


def parse_clip(line: str) -> ClipInfo:
    """``+CLIP: <number>,<type>[,<subaddr>,<satype>[,<alpha>[,<CLI validity>]]]``."""
    f = _fields(line, "+CLIP", 1, 6)
    return ClipInfo(
        number=_opt_str(f, 0),
        number_type=_opt_int(line, f, 1, "number type", 0, 255),
        validity=_opt_int(line, f, 5, "CLI validity", 0, 2),
    )


@dataclass(frozen=True)
class CallEndReport:
    """Why the last call ended (+CEER); `cause` is a 24.008 cause value when one is known."""

    cause: int | None
    text: str


# 3GPP TS 24.008 table 10.5.123 texts modems print instead of (or beside) the number.
_CAUSE_TEXTS = {
    "unassigned (unallocated) number": 1,
    "unassigned number": 1,
    "no route to destination": 3,
    "normal call clearing": 16,
    "user busy": 17,
    "no user responding": 18,
    "no answer from user": 19,
    "user alerting, no answer": 19,
    "call rejected": 21,
    "number changed": 22,
    "destination out of order": 27,
    "invalid number format": 28,
    "normal, unspecified": 31,
    "normal unspecified": 31,
    "no circuit/channel available": 34,
    "network out of order": 38,
    "temporary failure": 41,
    "switching equipment congestion": 42,
    "requested circuit/channel not available": 44,
    "resources unavailable, unspecified": 47,
}


def parse_ceer(line: str) -> CallEndReport:
    """``+CEER: <text>``, ``+CEER: <cause>[,<text>]`` or ``+CEER: "CC INFO",<text or cause>``."""
    body = _body(line, "+CEER")
    if not body:
        raise ResponseError(line, "a cause after +CEER")
    f = split_fields(line, body)
    cause: int | None = None
    texts: list[str] = []
    for field in f:
        t = field.text.strip()
        if t.isascii() and t.isdigit() and cause is None and len(t) <= 3:
            cause = int(t)
        elif t:
            texts.append(t)
    text = ", ".join(texts)
    if cause is None:
        number = _CAUSE_NUMBER.search(text)
        if number is not None:
            cause = int(number.group(1) or number.group(2))
    if cause is None:
        for part in reversed(texts):
            cause = _cause_from_text(part)
            if cause is not None:
                break
    return CallEndReport(cause, text)


_CAUSE_NUMBER = re.compile(r"(?i)\bcause\D{0,3}(\d{1,3})\b|\((\d{1,3})\)")
_CAUSE_KEYS = tuple((re.sub("[^a-z]", "", k), v) for k, v in _CAUSE_TEXTS.items())


def _cause_from_text(text: str) -> int | None:
    """Match a cause text however the firmware spaced it ("User busy", "userbusy",
    "No answer from user (user alerted)")."""
    squeezed = re.sub("[^a-z]", "", text.lower())
    for key, value in _CAUSE_KEYS:
        if squeezed.startswith(key):
            return value
    return None


# --- network -----------------------------------------------------------------------------


class RegStatus(Enum):
    """27.007 <stat> of +CREG/+CGREG/+CEREG."""

    NOT_SEARCHING = 0
    HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4
    ROAMING = 5
    SMS_ONLY_HOME = 6
    SMS_ONLY_ROAMING = 7
    EMERGENCY_ONLY = 8
    CSFB_NOT_PREFERRED_HOME = 9
    CSFB_NOT_PREFERRED_ROAMING = 10

    @property
    def registered(self) -> bool:
        return self in _REGISTERED


_REGISTERED = frozenset(
    {
        RegStatus.HOME,
        RegStatus.ROAMING,
        RegStatus.SMS_ONLY_HOME,
        RegStatus.SMS_ONLY_ROAMING,
        RegStatus.CSFB_NOT_PREFERRED_HOME,
        RegStatus.CSFB_NOT_PREFERRED_ROAMING,
    }
)


@dataclass(frozen=True)
class Registration:
    """Registration state; `n` is set only for the solicited (AT+CREG?) form."""

    stat: RegStatus
    n: int | None = None
    lac: str | None = None
    """Location (or tracking) area code, hex as the modem printed it."""
    ci: str | None = None
    """Cell id, hex."""
    act: int | None = None

    @property
    def technology(self) -> str | None:
        return None if self.act is None else act_technology(self.act)


def act_technology(act: int) -> str:
    """27.007 <AcT> to the radio family shown in status: GSM, UMTS or LTE."""
    if act in (0, 1, 3, 8):
        return "GSM"
    if act in (2, 4, 5, 6):
        return "UMTS"
    if act in (7, 9, 10, 11, 12, 13):
        return "LTE"
    return "unknown"


def parse_registration(line: str, *, solicited: bool | None = None) -> Registration:
    """+CREG/+CGREG/+CEREG in the solicited ``n,stat[,lac,ci[,act]]`` or the unsolicited
    ``stat[,lac,ci[,act]]`` form; `solicited=None` tells them apart by where the quoted
    area code sits (or by the count when nothing is quoted)."""
    text = line.strip()
    name = text.split(":", 1)[0].upper() if text.startswith("+") else ""
    if name and name not in ("+CREG", "+CGREG", "+CEREG", "+C5GREG"):
        raise ResponseError(line, "a +CREG, +CGREG or +CEREG line")
    f = split_fields(line, _body(line, name) if name else text)
    if solicited is None:
        quoted = [i for i, field in enumerate(f) if field.quoted]
        if quoted:
            if quoted[0] not in (1, 2):
                raise ResponseError(line, "the area code as the 2nd or 3rd field")
            solicited = quoted[0] == 2
        elif len(f) in (1, 2):
            solicited = len(f) == 2
        else:
            raise ResponseError(line, "a quoted area code to tell solicited from unsolicited")
    n: int | None = None
    if solicited:
        if len(f) < 2:
            raise ResponseError(line, "n,stat")
        n = _int(line, f[0], "n", 0, 5)
        f = f[1:]
    if len(f) == 2 or len(f) > 8:
        raise ResponseError(line, "stat[,lac,ci[,act]]")
    return Registration(
        stat=RegStatus(_int(line, f[0], "registration state", 0, 10)),
        n=n,
        lac=_hex(line, f, 1, "area code"),
        ci=_hex(line, f, 2, "cell id"),
        act=_opt_int(line, f, 3, "access technology", 0, 13),
    )


def _hex(line: str, f: list[Field], i: int, what: str) -> str | None:
    value = _opt_str(f, i)
    if value is None:
        return None
    digits = value[2:] if value.lower().startswith("0x") else value
    if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ResponseError(line, f"hex digits for {what}, got {value!r}")
    return digits.upper()


@dataclass(frozen=True)
class Signal:
    """Signal as shown in status; every figure None when the modem does not know it."""

    technology: str | None
    rssi_dbm: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    ber: int | None = None


def csq_dbm(code: int) -> int | None:
    """27.007 <rssi> code to dBm: 0 is -113 or less, 31 is -51 or more, 99 unknown;
    100-191 are the TD-SCDMA scale (-116 .. -25)."""
    if 0 <= code <= 31:
        return -113 + 2 * code
    if 100 <= code <= 191:
        return code - 216
    return None


def parse_csq(line: str) -> Signal:
    """``+CSQ: <rssi>,<ber>`` (99 = not known)."""
    f = _fields(line, "+CSQ", 2, 2)
    code = _int(line, f[0], "rssi", 0, 199)
    if 32 <= code <= 98 or code > 191:
        raise ResponseError(line, f"rssi 0..31, 99 or 100..191, got {code}")
    ber = _int(line, f[1], "ber", 0, 99)
    return Signal(None, rssi_dbm=csq_dbm(code), ber=None if ber == 99 else ber)


def parse_qcsq(line: str) -> Signal:
    """Quectel ``+QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>`` (also GSM/WCDMA/NOSERVICE).
    The LTE <sinr> is reported as 1/5 dB above -20 dB."""
    f = _fields(line, "+QCSQ", 1, 6)
    system = f[0].text.upper()
    if system in ("NOSERVICE", "NO SERVICE"):
        return Signal(None)
    if system == "GSM":
        return Signal("GSM", rssi_dbm=_opt_int(line, f, 1, "rssi", -200, 0))
    if system == "WCDMA":
        return Signal("UMTS", rssi_dbm=_opt_int(line, f, 1, "rssi", -200, 0))
    if system in ("LTE", "CAT-M", "CAT-NB", "TDD LTE", "FDD LTE"):
        if len(f) < 5:
            raise ResponseError(line, '"LTE",rssi,rsrp,sinr,rsrq')
        sinr = _int(line, f[3], "sinr", 0, 250)
        return Signal(
            "LTE",
            rssi_dbm=_int(line, f[1], "rssi", -200, 0),
            rsrp_dbm=float(_int(line, f[2], "rsrp", -200, 0)),
            sinr_db=sinr / 5 - 20,
            rsrq_db=float(_int(line, f[4], "rsrq", -50, 0)),
        )
    raise ResponseError(line, "a system of LTE, WCDMA, GSM or NOSERVICE")


def parse_cpsi(line: str) -> Signal:
    """SIMCom ``+CPSI: LTE,Online,<mcc-mnc>,<tac>,<sci>,<pci>,<band>,<earfcn>,<dlbw>,<ulbw>,
    <rsrq>,<rsrp>,<rssi>,<rssnr>`` (LTE figures in tenths); GSM and WCDMA give the
    technology, and GSM its received level in dBm."""
    f = _fields(line, "+CPSI", 2, 20)
    system = f[0].text.upper()
    if system == "NO SERVICE":
        return Signal(None)
    if system == "GSM":
        rx = _opt_int(line, f, 6, "rx level", -200, 0) if len(f) > 6 else None
        return Signal("GSM", rssi_dbm=rx)
    if system == "WCDMA":
        return Signal("UMTS")
    if system == "LTE":
        if len(f) < 14:
            raise ResponseError(line, "14 LTE fields")
        rsrq = _int(line, f[10], "rsrq", -500, 0)
        rsrp = _int(line, f[11], "rsrp", -2000, 0)
        rssi = _int(line, f[12], "rssi", -2000, 0)
        snr = _int(line, f[13], "rssnr", -500, 500)
        return Signal(
            "LTE",
            rssi_dbm=round(rssi / 10),
            rsrp_dbm=rsrp / 10,
            rsrq_db=rsrq / 10,
            sinr_db=float(snr),
        )
    raise ResponseError(line, "a system of LTE, WCDMA, GSM or NO SERVICE")


@dataclass(frozen=True)
class Operator:
    """+COPS? answer: `name` in whatever format the modem used (long, short or numeric)."""

    mode: int
    name: str | None = None
    format: int | None = None
    act: int | None = None

    @property
    def technology(self) -> str | None:
        return None if self.act is None else act_technology(self.act)


def parse_cops(line: str) -> Operator:
    """``+COPS: <mode>[,<format>,<oper>[,<act>]]``."""
    if _body(line, "+COPS").startswith("("):
        raise ResponseError(line, "the +COPS? answer, not the operator list")
    f = _fields(line, "+COPS", 1, 4)
    if len(f) == 2:
        raise ResponseError(line, "mode[,format,oper[,act]]")
    return Operator(
        mode=_int(line, f[0], "mode", 0, 4),
        format=_opt_int(line, f, 1, "format", 0, 2),
        name=_opt_str(f, 2),
        act=_opt_int(line, f, 3, "access technology", 0, 13),
    )


# --- SIM ---------------------------------------------------------------------------------


class SimState(Enum):
    """+CPIN answers: what the SIM is waiting for."""

    READY = "READY"
    SIM_PIN = "SIM PIN"
    SIM_PUK = "SIM PUK"
    SIM_PIN2 = "SIM PIN2"
    SIM_PUK2 = "SIM PUK2"
    PH_SIM_PIN = "PH-SIM PIN"
    PH_NET_PIN = "PH-NET PIN"
    NOT_INSERTED = "NOT INSERTED"
    NOT_READY = "NOT READY"


def parse_cpin(line: str) -> SimState:
    """``+CPIN: READY`` / ``SIM PIN`` / ``SIM PUK`` / ``PH-SIM PIN`` / ``NOT INSERTED``."""
    code = " ".join(_body(line, "+CPIN").strip('"').split()).upper()
    try:
        return SimState(code)
    except ValueError:
        raise ResponseError(line, "a SIM state such as READY, SIM PIN or SIM PUK") from None


@dataclass(frozen=True)
class PinRetries:
    """Tries left before the SIM locks (PIN) or is dead (PUK)."""

    pin: int
    puk: int


def parse_pin_retries(line: str) -> PinRetries:
    """Quectel ``+QPINC: "SC",<pin>,<puk>`` or SIMCom ``+SPIC: <pin1>,<puk1>,<pin2>,<puk2>``."""
    text = line.strip()
    if text.upper().startswith("+QPINC"):
        f = _fields(line, "+QPINC", 3, 3)
        if f[0].text.upper() != "SC":
            raise ResponseError(line, 'the "SC" (SIM PIN) facility')
        return PinRetries(
            _int(line, f[1], "PIN tries", 0, 10), _int(line, f[2], "PUK tries", 0, 10)
        )
    if text.upper().startswith("+SPIC"):
        f = _fields(line, "+SPIC", 2, 4)
        return PinRetries(
            _int(line, f[0], "PIN tries", 0, 10), _int(line, f[1], "PUK tries", 0, 10)
        )
    raise ResponseError(line, "a +QPINC or +SPIC line")


# --- messages and USSD -------------------------------------------------------------------


@dataclass(frozen=True)
class NewMessage:
    """+CMTI: an SMS was stored at `index` in `storage` ("SM", "ME", "MT")."""

    storage: str
    index: int


def parse_cmti(line: str) -> NewMessage:
    """``+CMTI: "SM",3``."""
    f = _fields(line, "+CMTI", 2, 2)
    if not f[0].text:
        raise ResponseError(line, "a storage name")
    return NewMessage(f[0].text, _int(line, f[1], "index", 0, 65535))


@dataclass(frozen=True)
class UssdResponse:
    """+CUSD: `status` 0 done, 1 more input expected, 2 ended by network, 3 answered by
    another client, 4 not supported, 5 timed out. `text` is as sent (its coding follows `dcs`
    and the modem's character set)."""

    status: int
    text: str | None = None
    dcs: int | None = None


def parse_cusd(line: str) -> UssdResponse:
    """``+CUSD: <m>[,<str>[,<dcs>]]``."""
    f = _fields(line, "+CUSD", 1, 3)
    return UssdResponse(
        status=_int(line, f[0], "USSD status", 0, 5),
        text=f[1].text if len(f) > 1 else None,
        dcs=_opt_int(line, f, 2, "dcs", 0, 255),
    )

"""SMS PDU data types (3GPP TS 23.040): what the decoder returns and the encoder takes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.modem.sms_text import Encoding

TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_ALPHANUMERIC = 5
NPI_ISDN = 1

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

DIGITS = "0123456789*#abc"

Validity = dt.timedelta | dt.datetime


@dataclass(frozen=True)
class InformationElement:
    """One UDH information element; unknown ones are kept as they came."""

    iei: int
    data: bytes


@dataclass(frozen=True)
class Concat:
    """Concatenation: part ``seq`` (1-based) of ``total``, sharing ``reference``."""

    reference: int
    total: int
    seq: int
    ref16: bool = False


@dataclass(frozen=True)
class EncodedPdu:
    """A PDU as the modem wants it: hex text and the TPDU length for AT+CMGS=/+CMGR:."""

    hex: str
    length: int


@dataclass(frozen=True)
class SmsDeliver:
    """A received message (SC -> MS).

    For 8-bit data ``data`` holds the octets and ``text`` shows them as Latin-1, one character
    per octet, so nothing is lost on the way to a SIP MESSAGE or webhook.
    """

    originator: str
    text: str
    timestamp: dt.datetime
    originator_ton: int = TON_INTERNATIONAL
    smsc: str | None = None
    pid: int = 0
    dcs: int = 0
    encoding: Encoding = Encoding.GSM7
    message_class: int | None = None
    udh: tuple[InformationElement, ...] = ()
    concat: Concat | None = None
    data: bytes = b""
    more_messages: bool = False
    status_report: bool = False
    reply_path: bool = False
    tpdu_length: int = 0


@dataclass(frozen=True)
class SmsSubmit:
    """A message to send (MS -> SC)."""

    destination: str
    text: str
    destination_ton: int = TON_INTERNATIONAL
    reference: int = 0
    smsc: str | None = None
    pid: int = 0
    dcs: int = 0
    encoding: Encoding = Encoding.GSM7
    message_class: int | None = None
    validity: Validity | None = None
    udh: tuple[InformationElement, ...] = ()
    concat: Concat | None = None
    data: bytes = b""
    status_report_request: bool = False
    reject_duplicates: bool = False
    reply_path: bool = False
    tpdu_length: int = 0


@dataclass(frozen=True)
class SmsStatusReport:
    """An SMS-STATUS-REPORT (+CDS): the fate of a message we sent with a report requested.

    ``reference`` is the TP-MR that AT+CMGS answered with; ``status`` is TP-ST (TS 23.040
    9.2.3.15): below 0x20 delivered, 0x20-0x3F still trying, 0x40 and up given up.
    """

    reference: int
    recipient: str
    status: int
    timestamp: dt.datetime
    discharge_time: dt.datetime
    recipient_ton: int = TON_INTERNATIONAL
    smsc: str | None = None
    text: str = ""
    tpdu_length: int = 0

    @property
    def delivered(self) -> bool:
        """The recipient has the message (TP-ST 0x00-0x1F)."""
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """No further report will follow: delivered, or the centre gave up."""
        return self.status < 0x20 or self.status >= 0x40

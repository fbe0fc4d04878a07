"""SMS in PDU mode (3GPP TS 23.040 / 23.038): the public face of the codec.

A modem in PDU mode (AT+CMGF=0) hands us SMS-DELIVER PDUs in +CMT, +CMGR and +CMGL, each
led by the SMSC address; AT+CMGS takes an SMS-SUBMIT PDU plus the TPDU length (octets after
the SMSC address). Both directions of both kinds live here, so the modem emulator and the
driver share one codec. Pure: bytes/text in, dataclasses and hex out. A malformed PDU raises
:class:`SmsError` naming the field and the octet offset, never anything else.

The work is split by concern: sms_text (alphabets, septets, splitting), sms_types,
sms_decode, sms_encode, sms_reassembly.
"""

from __future__ import annotations

from gateway.modem.sms_decode import (
    decode_deliver,
    decode_pdu,
    decode_status_report,
    decode_submit,
)
from gateway.modem.sms_encode import (
    encode_deliver,
    encode_deliver_parts,
    encode_status_report,
    encode_submit,
    encode_submit_parts,
)
from gateway.modem.sms_reassembly import AssembledSms, Reassembler
from gateway.modem.sms_text import Encoding, SmsError, choose_encoding, split_text
from gateway.modem.sms_types import (
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    TON_NATIONAL,
    TON_UNKNOWN,
    Concat,
    EncodedPdu,
    InformationElement,
    SmsDeliver,
    SmsStatusReport,
    SmsSubmit,
    Validity,
)

__all__ = [
    "AssembledSms",
    "Concat",
    "EncodedPdu",
    "Encoding",
    "InformationElement",
    "Reassembler",
    "SmsDeliver",
    "SmsError",
    "SmsStatusReport",
    "SmsSubmit",
    "TON_ALPHANUMERIC",
    "TON_INTERNATIONAL",
    "TON_NATIONAL",
    "TON_UNKNOWN",
    "Validity",
    "choose_encoding",
    "decode_deliver",
    "decode_pdu",
    "decode_status_report",
    "decode_submit",
    "encode_deliver",
    "encode_deliver_parts",
    "encode_status_report",
    "encode_submit",
    "encode_submit_parts",
    "split_text",
]

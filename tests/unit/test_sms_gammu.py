"""The SMS codec against a real peer: Debian's gammu (libGammu through python3-gammu).

libGammu reads the PDUs we build (DecodePDU) and builds PDUs we read (EncodeSMS + EncodePDU),
both SMS-SUBMIT and SMS-DELIVER, single and concatenated, GSM-7 with the extension table and
UCS-2 with emoji. python3-gammu is installed for Debian's own Python, so it runs there in a
subprocess, JSON in and out. Skipped without it, failed under BRANCHLINE_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from typing import Any

import pytest

from gateway.modem.sms import (
    Reassembler,
    decode_deliver,
    decode_submit,
    encode_deliver,
    encode_deliver_parts,
    encode_status_report,
    encode_submit_parts,
)

SYSTEM_PYTHON = "/usr/bin/python3"

# Runs under Debian's Python with python3-gammu. python-gammu 3.2 copies Length characters of
# a GSM-7 text, but Length counts septets, so a text with escape pairs comes back followed by
# a NUL and stray characters; libGammu's own buffer ends at the NUL, so we cut there.
_PEER = r"""
import datetime, json, sys
import gammu

req = json.load(sys.stdin)
out = []
if req["op"] == "decode":
    for h in req["pdus"]:
        m = gammu.DecodePDU(bytes.fromhex(h), True)
        out.append({
            "type": m["Type"], "number": m["Number"], "text": m["Text"].split("\x00")[0],
            "udh": m["UDH"]["Type"], "id8": m["UDH"]["ID8bit"], "id16": m["UDH"]["ID16bit"],
            "part": m["UDH"]["PartNumber"], "all": m["UDH"]["AllParts"],
            "coding": m["Coding"], "smsc": m["SMSC"]["Number"],
            "validity": m["SMSC"]["Validity"],
            "when": m["DateTime"].isoformat() if m.get("DateTime") else None,
            "mr": m["MessageReference"], "status": m["DeliveryStatus"],
        })
else:
    parts = gammu.EncodeSMS({
        "Class": -1, "Unicode": req["unicode"],
        "Entries": [{"ID": req["kind"], "Buffer": req["text"]}],
    })
    for m in parts:
        m["SMSC"] = {"Location": 0, "Number": "+4917200000", "Validity": "Max"}
        m["Number"] = req["number"]
        m["DateTime"] = datetime.datetime(2026, 12, 6, 10, 30, 15)
        m["Type"] = req["layout"]  # EncodeSMS makes Submits; the TP-MTI follows Type
        out.append(gammu.EncodePDU(m, req["layout"]).hex())
print(json.dumps(out))
"""


def _gammu(request: dict[str, Any]) -> list[Any]:
    probe = (
        subprocess.run([SYSTEM_PYTHON, "-c", "import gammu"], capture_output=True, check=False)
        if os.path.exists(SYSTEM_PYTHON)
        else None
    )
    if probe is None or probe.returncode != 0:
        message = "python3-gammu is not installed (apt-get install gammu python3-gammu)"
        if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
            pytest.fail(f"BRANCHLINE_REQUIRE_PEERS=1 but {message}", pytrace=False)
        pytest.skip(message)
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", _PEER],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: list[Any] = json.loads(done.stdout)
    return result


STAMP = dt.datetime(2026, 12, 6, 10, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=1)))
EXT = "Price: 5€ [ok] {x} ~^|\\ @£¥"
EMOJI = "Hi😀 ünïcødé ж"


def test_gammu_reads_our_deliver_pdus() -> None:
    ours = [
        encode_deliver("+4915112345678", EXT, STAMP, smsc="+4917200000"),
        encode_deliver("Vodafone", EMOJI, STAMP, smsc="+4917200000"),
        encode_deliver("0171234", "national", STAMP),
    ]
    got = _gammu({"op": "decode", "pdus": [p.hex for p in ours]})
    assert [(g["type"], g["number"], g["text"]) for g in got] == [
        ("Deliver", "+4915112345678", EXT),
        ("Deliver", "Vodafone", EMOJI),
        ("Deliver", "0171234", "national"),
    ]
    assert [g["coding"] for g in got] == [
        "Default_No_Compression",
        "Unicode_No_Compression",
        "Default_No_Compression",
    ]
    assert got[0]["smsc"] == "+4917200000"
    assert got[0]["when"] == "2026-12-06T10:30:15"  # gammu drops the zone (ours: +01:00)


def test_gammu_reads_our_concatenated_parts() -> None:
    text7 = EXT * 12  # 324 septets: three GSM-7 parts
    text16 = EMOJI * 12  # UCS-2, 16-bit reference
    pdus = encode_submit_parts(
        "+4915112345678", text7, reference=201, validity=dt.timedelta(days=2)
    )
    pdus += encode_deliver_parts("+4915112345678", text16, STAMP, reference=4242, ref16=True)
    got = _gammu({"op": "decode", "pdus": [p.hex for p in pdus]})
    submit = [g for g in got if g["type"] == "Submit"]
    deliver = [g for g in got if g["type"] == "Deliver"]
    assert len(submit) == 3 and len(deliver) == len(pdus) - 3
    assert [(g["udh"], g["id8"], g["part"], g["all"]) for g in submit] == [
        ("ConcatenatedMessages", 201, i, 3) for i in (1, 2, 3)
    ]
    assert {g["validity"] for g in submit} == {"2D"}
    assert "".join(g["text"] for g in submit) == text7
    assert {(g["udh"], g["id16"]) for g in deliver} == {("ConcatenatedMessages16bit", 4242)}
    assert "".join(g["text"] for g in deliver) == text16


@pytest.mark.parametrize("layout", ["Submit", "Deliver"])
@pytest.mark.parametrize(("text", "unicode"), [(EXT * 8, False), (EMOJI * 15, True)])
def test_we_read_gammus_concatenated_pdus(layout: str, text: str, unicode: bool) -> None:
    pdus = _gammu(
        {
            "op": "encode",
            "kind": "ConcatenatedTextLong",
            "text": text,
            "unicode": unicode,
            "layout": layout,
            "number": "+4915112345678",
        }
    )
    assert len(pdus) > 1
    if layout == "Submit":
        subs = [decode_submit(h) for h in pdus]
        assert all(s.destination == "+4915112345678" and s.smsc == "+4917200000" for s in subs)
        assert "".join(s.text for s in subs) == text
        return
    r = Reassembler()
    delivered = [decode_deliver(h) for h in pdus]
    assert all(d.timestamp.replace(tzinfo=None) == STAMP.replace(tzinfo=None) for d in delivered)
    out = []
    for part in reversed(delivered):  # out of order
        out += r.add(part, 0.0)
    assert [(m.text, m.complete, m.originator) for m in out] == [(text, True, "+4915112345678")]


def test_gammu_reads_our_status_report() -> None:
    sent = dt.datetime(2026, 12, 6, 10, 30, 15)
    pdu = encode_status_report(42, "+4915112345678", 0, sent, sent + dt.timedelta(seconds=5))
    (got,) = _gammu({"op": "decode", "pdus": [pdu.hex]})
    assert (got["type"], got["number"], got["mr"], got["status"], got["text"]) == (
        "Status_Report",
        "+4915112345678",
        42,
        0,
        "Delivered",
    )

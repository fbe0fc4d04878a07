"""Modem information-line parsers: every field, both registration forms, and errors that name the line."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.modem import responses as r
from gateway.modem.responses import (
    CallDirection,
    CallStatus,
    RegStatus,
    ResponseError,
    SimState,
)


def test_clcc_all_fields_outgoing_dialing() -> None:
    e = r.parse_clcc('+CLCC: 1,0,2,0,0,"+441234567890",145')
    assert e.index == 1
    assert e.direction is CallDirection.OUTGOING
    assert e.status is CallStatus.DIALING
    assert e.voice and e.mode == 0
    assert e.multiparty is False
    assert e.number == "+441234567890" and e.number_type == 145
    assert e.alpha is None


@pytest.mark.parametrize("stat", range(6))
def test_clcc_every_state(stat: int) -> None:
    e = r.parse_clcc(f'2,1,{stat},1,1,"0123",129,"Bob"')
    assert e.status is CallStatus(stat)
    assert e.direction is CallDirection.INCOMING
    assert e.multiparty is True and not e.voice and e.alpha == "Bob"


def test_clcc_without_number_and_bad_state() -> None:
    assert r.parse_clcc("+CLCC: 1,1,4,0,0").number is None
    with pytest.raises(ResponseError, match="call state"):
        r.parse_clcc("+CLCC: 1,1,7,0,0")
    assert r.parse_clcc('+CLCC: 1,0,6,0,0,"1",129').status is CallStatus.DISCONNECTED
    with pytest.raises(ResponseError, match=r"\+CLCC: 1,x"):
        r.parse_clcc("+CLCC: 1,x,0,0,0")


def test_clip_number_type_and_validity() -> None:
    c = r.parse_clip('+CLIP: "07700900123",129,"",0,"",0')
    assert c.number == "07700900123" and c.number_type == 129 and c.caller_id == "07700900123"
    assert not c.withheld
    short = r.parse_clip('+CLIP: "+4930123",145')
    assert short.caller_id == "+4930123" and short.validity is None
    withheld = r.parse_clip('+CLIP: "",128,"",0,"",1')
    assert withheld.withheld and withheld.caller_id is None
    unavailable = r.parse_clip('+CLIP: "",128,,,,2')
    assert not unavailable.withheld and unavailable.caller_id is None
    assert r.parse_clip('+CLIP: "",128').withheld


def test_registration_solicited_and_unsolicited() -> None:
    sol = r.parse_registration('+CREG: 2,1,"1A2B","01C3D4E5",7')
    assert sol.n == 2 and sol.stat is RegStatus.HOME and sol.lac == "1A2B"
    assert sol.ci == "01C3D4E5" and sol.act == 7 and sol.technology == "LTE"
    unsol = r.parse_registration('+CEREG: 5,"1A2B","01C3D4E5",7')
    assert unsol.n is None and unsol.stat is RegStatus.ROAMING and unsol.stat.registered
    assert unsol.act == 7
    assert r.parse_registration("+CGREG: 0,1") == r.Registration(RegStatus.HOME, n=0)
    assert r.parse_registration("+CREG: 3") == r.Registration(RegStatus.DENIED)
    four = r.parse_registration('+CREG: 2,1,"00A1","0B2C"')
    assert four.n == 2 and four.act is None and four.technology is None
    three = r.parse_registration('+CREG: 1,"00A1","0B2C"')
    assert three.n is None and three.lac == "00A1"
    assert r.parse_registration("2,0", solicited=True).stat is RegStatus.NOT_SEARCHING
    assert not RegStatus.SEARCHING.registered


def test_registration_errors() -> None:
    with pytest.raises(ResponseError, match="CREG"):
        r.parse_registration("+CREG: 1,2,3,4")
    with pytest.raises(ResponseError, match="hex"):
        r.parse_registration('+CREG: 1,"XYZ","1"')
    with pytest.raises(ResponseError):
        r.parse_registration("+CREG: 11")
    with pytest.raises(ResponseError):
        r.parse_registration("+COPS: 0")


def test_act_technology() -> None:
    assert [r.act_technology(a) for a in (0, 2, 3, 6, 7, 42)] == [
        "GSM",
        "UMTS",
        "GSM",
        "UMTS",
        "LTE",
        "unknown",
    ]


def test_csq_to_dbm() -> None:
    assert r.parse_csq("+CSQ: 0,0").rssi_dbm == -113
    assert r.parse_csq("+CSQ: 31,99") == r.Signal(None, rssi_dbm=-51, ber=None)
    assert r.parse_csq("+CSQ: 15,3").rssi_dbm == -83
    assert r.parse_csq("+CSQ: 99,99").rssi_dbm is None
    assert r.parse_csq("+CSQ: 100,99").rssi_dbm == -116
    assert r.parse_csq("+CSQ: 191,99").rssi_dbm == -25
    with pytest.raises(ResponseError, match="rssi"):
        r.parse_csq("+CSQ: 50,99")
    with pytest.raises(ResponseError):
        r.parse_csq("+CSQ: 12")


def test_qcsq_lte_and_others() -> None:
    s = r.parse_qcsq('+QCSQ: "LTE",-52,-81,195,-10')
    assert s == r.Signal("LTE", rssi_dbm=-52, rsrp_dbm=-81.0, sinr_db=19.0, rsrq_db=-10.0)
    assert r.parse_qcsq('+QCSQ: "GSM",-71').rssi_dbm == -71
    assert r.parse_qcsq('+QCSQ: "WCDMA",-70,-80,-5').technology == "UMTS"
    assert r.parse_qcsq('+QCSQ: "NOSERVICE"') == r.Signal(None)
    with pytest.raises(ResponseError):
        r.parse_qcsq('+QCSQ: "LTE",-52')
    with pytest.raises(ResponseError, match="system"):
        r.parse_qcsq('+QCSQ: "5G",-52')


def test_cpsi() -> None:
    s = r.parse_cpsi(
        "+CPSI: LTE,Online,460-00,0x1816,17040770,312,EUTRAN-BAND3,1300,5,5,-94,-907,-639,17"
    )
    assert s.technology == "LTE" and s.rsrp_dbm == -90.7 and s.rsrq_db == -9.4
    assert s.rssi_dbm == -64 and s.sinr_db == 17.0
    g = r.parse_cpsi("+CPSI: GSM,Online,460-00,0x182d,12401,27 EGSM900,-64,2110,42-42")
    assert g == r.Signal("GSM", rssi_dbm=-64)
    assert r.parse_cpsi("+CPSI: NO SERVICE,Online") == r.Signal(None)
    with pytest.raises(ResponseError):
        r.parse_cpsi("+CPSI: LTE,Online,460-00")


def test_cops() -> None:
    op = r.parse_cops('+COPS: 0,0,"Vodafone UK",7')
    assert op == r.Operator(0, "Vodafone UK", 0, 7) and op.technology == "LTE"
    assert r.parse_cops('+COPS: 0,2,"23415",2').technology == "UMTS"
    assert r.parse_cops('+COPS: 0,0,"O2",0').technology == "GSM"
    assert r.parse_cops("+COPS: 2") == r.Operator(2)
    with pytest.raises(ResponseError, match="operator list"):
        r.parse_cops('+COPS: (2,"A","A","1",7),,(0-4),(0-2)')
    with pytest.raises(ResponseError):
        r.parse_cops("+COPS: 0,0")


def test_cpin_states() -> None:
    assert r.parse_cpin("+CPIN: READY") is SimState.READY
    assert r.parse_cpin("+CPIN: SIM PIN") is SimState.SIM_PIN
    assert r.parse_cpin("+CPIN: SIM PUK") is SimState.SIM_PUK
    assert r.parse_cpin("+CPIN: PH-SIM PIN") is SimState.PH_SIM_PIN
    assert r.parse_cpin("+CPIN: NOT INSERTED") is SimState.NOT_INSERTED
    with pytest.raises(ResponseError, match="SIM state"):
        r.parse_cpin("+CPIN: MAYBE")


def test_pin_retries() -> None:
    assert r.parse_pin_retries('+QPINC: "SC",3,10') == r.PinRetries(3, 10)
    assert r.parse_pin_retries("+SPIC: 2,10,3,10") == r.PinRetries(2, 10)
    with pytest.raises(ResponseError):
        r.parse_pin_retries('+QPINC: "P2",3,10')
    with pytest.raises(ResponseError):
        r.parse_pin_retries("+CPIN: READY")


def test_cmti_cusd_ceer() -> None:
    assert r.parse_cmti('+CMTI: "SM",3') == r.NewMessage("SM", 3)
    assert r.parse_cmti('"ME",0') == r.NewMessage("ME", 0)
    with pytest.raises(ResponseError):
        r.parse_cmti('+CMTI: "SM"')
    assert r.parse_cusd('+CUSD: 0,"Balance 5.00",15') == r.UssdResponse(0, "Balance 5.00", 15)
    assert r.parse_cusd("+CUSD: 4") == r.UssdResponse(4)
    assert r.parse_ceer("+CEER: User busy") == r.CallEndReport(17, "User busy")
    assert r.parse_ceer('+CEER: "CC INFO","Normal call clearing"').cause == 16
    assert r.parse_ceer("+CEER: 34,No circuit/channel available").cause == 34
    assert r.parse_ceer("+CEER: No cause information available").cause is None
    assert r.parse_ceer("+CEER:userbusy").cause == 17
    assert r.parse_ceer("+CEER: No answer from user (user alerted)").cause == 19
    assert r.parse_ceer("+CEER: CC CAUSE: 34").cause == 34
    assert r.parse_ceer("+CEER: Lower layer failure (27)").cause == 27
    with pytest.raises(ResponseError):
        r.parse_ceer("+CEER:")


def test_identification() -> None:
    ec25 = r.parse_ati(("Quectel", "EC25", "Revision: EC25EFAR06A06M4G"))
    assert ec25 == r.ModemIdentity("Quectel", "EC25", "EC25EFAR06A06M4G")
    sim = r.parse_ati(
        (
            "Manufacturer: SIMCOM INCORPORATED",
            "Model: SIMCOM_SIM7600E-H",
            "Revision: SIM7600M22_V1.1",
            "IMEI: 861234567890123",
            "+GCAP: +CGSM",
        )
    )
    assert sim.manufacturer == "SIMCOM INCORPORATED" and sim.model == "SIMCOM_SIM7600E-H"
    assert r.parse_ati(("SIM800 R14.18",)) == r.ModemIdentity(None, "SIM800 R14.18")
    with pytest.raises(ResponseError):
        r.parse_ati(())
    with pytest.raises(ResponseError):
        r.parse_ati(("Revision: X",))
    assert r.parse_info(("Quectel",), "+CGMI") == "Quectel"
    assert r.parse_info(("+CGMM: SIMCOM_SIM7600E",), "+CGMM") == "SIMCOM_SIM7600E"
    assert r.parse_info(("Revision: EC25EFAR06A06M4G",), "+CGMR") == "EC25EFAR06A06M4G"
    with pytest.raises(ResponseError):
        r.parse_info((), "+CGMI")
    assert r.parse_imei("867962041234567") == "867962041234567"
    assert r.parse_imei('+CGSN: "867962041234567"') == "867962041234567"
    with pytest.raises(ResponseError, match="IMEI"):
        r.parse_imei("ERROR")
    assert r.parse_imsi("234150123456789") == "234150123456789"
    with pytest.raises(ResponseError):
        r.parse_imsi("12ab")
    assert r.parse_iccid("+QCCID: 89441000301234567890F") == "89441000301234567890"
    assert r.parse_iccid("+ICCID: 8944100030123456789") == "8944100030123456789"
    with pytest.raises(ResponseError, match="ICCID"):
        r.parse_iccid("+QCCID: 1234")


def test_error_is_value_error_naming_line() -> None:
    with pytest.raises(ValueError) as info:
        r.parse_clcc('+CLCC: 1,0,2,0,0,"123')
    assert '+CLCC: 1,0,2,0,0,"123' in str(info.value)
    assert info.value.line == '+CLCC: 1,0,2,0,0,"123'  # type: ignore[attr-defined]


_PARSERS = [
    r.parse_clcc,
    r.parse_clip,
    r.parse_registration,
    r.parse_csq,
    r.parse_qcsq,
    r.parse_cpsi,
    r.parse_cops,
    r.parse_cpin,
    r.parse_pin_retries,
    r.parse_cmti,
    r.parse_cusd,
    r.parse_ceer,
    r.parse_imei,
    r.parse_imsi,
    r.parse_iccid,
]
_ALPHABET = st.sampled_from(list('0123456789,"+: -xABCFLTESIMPNREG\x00é²'))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_ALPHABET, max_size=40).map("".join),
    st.sampled_from(
        [
            "",
            "+CLCC: ",
            "+CLIP: ",
            "+CREG: ",
            "+CSQ: ",
            "+QCSQ: ",
            "+CPSI: ",
            "+COPS: ",
            "+CPIN: ",
            "+QPINC: ",
            "+SPIC: ",
            "+CMTI: ",
            "+CUSD: ",
            "+CEER: ",
            "+CGSN: ",
            "+QCCID: ",
        ]
    ),
)
def test_fuzz_only_response_errors(body: str, prefix: str) -> None:
    line = prefix + body
    for parse in _PARSERS:
        try:
            parse(line)
        except ResponseError as exc:
            assert exc.line == line
    for lines in ((line,), (line, body), ()):
        try:
            r.parse_ati(lines)
        except ResponseError:
            pass
        try:
            r.parse_info(lines, "+CGMI")
        except ResponseError:
            pass


_SEEDS = [
    '+CLCC: 1,0,2,0,0,"+441234567890",145',
    '+CLIP: "07700900123",129,"",0,"",0',
    '+CREG: 2,1,"1A2B","01C3D4E5",7',
    '+CEREG: 5,"1A2B","01C3D4E5",7',
    "+CSQ: 15,3",
    '+QCSQ: "LTE",-52,-81,195,-10',
    "+CPSI: LTE,Online,460-00,0x1816,17040770,312,EUTRAN-BAND3,1300,5,5,-94,-907,-639,17",
    '+COPS: 0,0,"Vodafone UK",7',
    "+CPIN: SIM PIN",
    '+QPINC: "SC",3,10',
    '+CMTI: "SM",3',
    '+CUSD: 0,"Balance 5.00",15',
    '+CEER: "CC INFO","User busy"',
    "+QCCID: 89441000301234567890F",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_SEEDS),
    st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 3), st.sampled_from(list(',"0-9A:\x00 é'))),
        max_size=4,
    ),
)
def test_fuzz_edited_valid_lines(seed: str, edits: list[tuple[int, int, str]]) -> None:
    """Small edits of real lines reach deep into each parser; still only ResponseError."""
    line = seed
    for pos, op, ch in edits:
        i = pos % (len(line) + 1)
        if op == 0:
            line = line[:i] + ch + line[i:]
        elif op == 1:
            line = line[:i] + line[i + 1 :]
        elif op == 2:
            line = line[:i] + ch + line[i + 1 :]
        else:
            line = line[:i]
    for parse in _PARSERS:
        try:
            parse(line)
        except ResponseError as exc:
            assert exc.line == line

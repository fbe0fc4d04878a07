"""ModemState (what status shows of a modem) and the `branchline status` Modems table."""

from __future__ import annotations

from gateway.cli import format_modems, format_status
from gateway.runtime.modem_state import ModemState


def lte_state() -> ModemState:
    st = ModemState("lte1", "quectel-ec25", state="up", imei="867698041234567")
    st.sim_state = "ready"
    assert st.registration_line('+CREG: 2,1,"1A2B","01A2B3C4",7', solicited=True)
    assert st.registration_line("+CEREG: 2,1,\"1A2B\",\"01A2B3C4\",7", solicited=True)
    assert st.operator_line('+COPS: 0,0,"Telekom.de",7')
    assert st.signal_line('+QCSQ: "LTE",-65,-85,200,-9')
    return st


def test_status_dict_has_signal_operator_technology_sim_and_imei() -> None:
    d = lte_state().as_dict()
    assert d["imei"] == "867698041234567"
    assert d["sim"]["state"] == "ready"
    assert d["network"] == {"registration": "home", "registered": True,
                            "operator": "Telekom.de", "technology": "LTE",
                            "lac": "1A2B", "cell": "01A2B3C4"}
    assert d["signal"]["rssi_dbm"] == -65 and d["signal"]["rsrp_dbm"] == -85.0


def test_unsolicited_loss_of_registration_hides_the_operator() -> None:
    st = lte_state()
    assert st.registration_line("+CEREG: 2", solicited=False)
    assert st.registration_line("+CREG: 2", solicited=False)
    d = st.as_dict()
    assert d["network"]["registration"] == "searching"
    assert d["network"]["operator"] is None and d["network"]["technology"] is None


def test_a_2g_module_without_access_technology_shows_gsm() -> None:
    st = ModemState("gsm", "simcom-sim800", fallback_technology="GSM")
    assert st.registration_line("+CREG: 0,5", solicited=True)
    assert st.operator_line('+COPS: 0,0,"Vodafone.de"')
    assert st.signal_line("+CSQ: 20,0")
    d = st.as_dict()
    assert d["network"]["registration"] == "roaming"
    assert d["network"]["technology"] == "GSM"
    assert d["signal"]["rssi_dbm"] == -73


def test_garbage_lines_are_refused_and_change_nothing() -> None:
    st = lte_state()
    assert not st.registration_line("+CREG: x,y", solicited=True)
    assert not st.signal_line("+CSQ: 50,0")
    assert not st.operator_line("+COPS: (1,\"a\")")
    assert st.as_dict()["network"]["operator"] == "Telekom.de"


def test_status_table_has_a_row_per_modem() -> None:
    absent = ModemState("gone", "sim", state="absent", last_error="cannot open it")
    result = {"modems": [lte_state().as_dict(), absent.as_dict()]}
    text = "\n".join(format_modems(result))
    rows = text.splitlines()
    assert rows[1] == "Modems"
    assert "867698041234567" in rows[3] and "Telekom.de" in rows[3] and "LTE" in rows[3]
    assert "-65" in rows[3] and "-85" in rows[3]
    assert rows[4].split()[:2] == ["gone", "absent"]
    assert "Modems" in format_status(result)
    assert format_modems({}) == [] and "Modems" not in format_status({})

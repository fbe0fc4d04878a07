"""`branchline status` shows a line's message waiting (the MWI column)."""

from __future__ import annotations

from gateway import cli


def _row(mwi: object) -> list[str]:
    text = cli.format_status({"lines": [{"name": "1", "number": "101", "hook": "on",
                                         "state": "idle", "ringing": False, "mwi": mwi}]})
    lines = text.splitlines()
    header = lines.index("Lines") + 1
    columns = lines[header].split()
    assert "MWI" in columns
    # the MWI cell and what follows it (other columns may come after: FORWARD, ...)
    row = lines[header + 1]
    return row[lines[header].index("MWI"):].split()


def test_mwi_column() -> None:
    assert _row(None)[0] == "-"
    assert _row({"waiting": True, "new": 2, "old": 5, "subscribed": True,
                 "server": "sip:100@pbx"})[:2] == ["yes", "2/5"]
    assert _row({"waiting": False, "new": None, "old": None, "subscribed": True,
                 "server": None})[0] == "no"
    assert _row({"waiting": False, "new": None, "old": None, "subscribed": False,
                 "server": "sip:*97@vm"})[:2] == ["no", "(unsubscribed)"]

"""Every call ends through one function that logs one line with the cause (issue 6, item 8).

Before, a hang-up from the handset was not logged at all, a far-end BYE read
``remote hangup (None)``, and line-to-line calls logged nothing. Here each way a call can
end is driven against the real daemon, with sipp as the trunk, and the daemon's log must
hold exactly one ``call <id> (line <n>) ended: <cause>, ...`` line per call leg, with the
right cause and never "None":

| how it ends | peer | cause logged |
|---|---|---|
| the handset hangs up a trunk call | sipp `uas` | local hangup |
| the far end hangs up (BYE) | sipp `uac` | remote BYE |
| the caller gives up (CANCEL) | sipp `uac_cancel.xml` | CANCEL 487 |
| the far end is busy | sipp `uas_busy.xml` | rejected 486 Busy Here |
| line 1 hangs up on line 2 | - | local hangup / remote hangup (line 1) |
| line 2 is off-hook when line 1 calls | - | rejected 486 Busy Here, twice |
| the far end offers only G.729 | sipp `uac_no_codec.xml` | rejected 488 ... (no usable media) |
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import require_binary
from .peers.sipp import sipp_binary
from .test_interop_matrix import LINE, wait_call_state, wait_line_ringing, wait_no_calls
from .test_interop_sipp import SIPP_USER, SippRig, assert_sipp_passed

pytestmark = [pytest.mark.peers, pytest.mark.slow]

ENDED = re.compile(r"call (\S+) \(line (\S+)\) ended: ([^,\n]+), ([^\n]+)")


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SippRig]:
    require_binary("sipp", sipp_binary())
    rig = SippRig(tmp_path, account=False)
    try:
        yield rig
    finally:
        failed = any(getattr(request.node, f"_peers_rep_{p}", None) is not None
                     and getattr(request.node, f"_peers_rep_{p}").failed
                     for p in ("setup", "call"))
        rig.close(failed)


def ended(rig: SippRig) -> list[tuple[str, str, str, str]]:
    """(call id, line, cause, duration) for every 'ended' line in the daemon's log."""
    return ENDED.findall(rig.gw.log_text())


def new_ends(rig: SippRig, seen: int, count: int) -> list[tuple[str, str, str, str]]:
    rig.gw.wait_until(f"{count} more 'ended' line(s) in the log",
                      lambda: len(ended(rig)) >= seen + count, timeout=10)
    return ended(rig)[seen:]


def hang_up(rig: SippRig, line: str = LINE) -> None:
    rig.gw.phone(line, "onhook")
    rig.gw.wait_until(f"line {line} idle", lambda: rig.gw.line(line)["state"] == "idle")


def test_each_way_a_call_ends_is_logged_once_with_its_cause(rig: SippRig) -> None:
    gw = rig.gw
    gw.start()

    # 1. The handset hangs up a trunk call it placed.
    peer = rig.sipp("uas", service=SIPP_USER).start()
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=SIPP_USER)
    wait_call_state(gw, "connected", timeout=10)
    gw.phone(LINE, "onhook")
    assert_sipp_passed(peer, peer.wait(15))
    [(_, line, cause, talked)] = new_ends(rig, 0, 1)
    assert (line, cause) == (LINE, "local hangup")
    assert re.fullmatch(r"\d+\.\d s", talked), talked
    wait_no_calls(gw)

    # 2. The far end calls, the handset answers, the far end hangs up (BYE).
    peer = rig.uac("uac", pause_ms=1500)
    wait_line_ringing(gw)
    gw.phone(LINE, "offhook")
    wait_call_state(gw, "connected", timeout=10)
    assert_sipp_passed(peer, peer.wait(15))
    [(_, line, cause, _)] = new_ends(rig, 1, 1)
    assert (line, cause) == (LINE, "remote BYE")
    wait_no_calls(gw)
    hang_up(rig)

    # 3. The far end calls and gives up while the line rings (CANCEL).
    peer = rig.uac("uac_cancel.xml")
    wait_line_ringing(gw)
    assert_sipp_passed(peer, peer.wait(15))
    [(_, line, cause, talked)] = new_ends(rig, 2, 1)
    assert (line, cause, talked) == (LINE, "CANCEL 487", "not answered")
    wait_no_calls(gw)

    # 4. The far end is busy.
    peer = rig.sipp("uas_busy.xml", service=SIPP_USER).start()
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=SIPP_USER)
    assert_sipp_passed(peer, peer.wait(15))
    [(_, line, cause, _)] = new_ends(rig, 3, 1)
    assert (line, cause) == (LINE, "rejected 486 Busy Here")
    gw.wait_hears(LINE, "busy")
    hang_up(rig)

    # 5. Line to line: line 1 calls 102, line 2 answers, line 1 hangs up.
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits="102")
    gw.wait_until("line 2 ringing", lambda: gw.line("2")["ringing"])
    gw.phone("2", "offhook")
    wait_call_state(gw, "connected", timeout=10)
    hang_up(rig)
    ends = new_ends(rig, 4, 2)
    assert sorted((line, cause) for _, line, cause, _ in ends) == [
        (LINE, "local hangup"), ("2", f"remote hangup (line {LINE})")]
    hang_up(rig, "2")

    # 6. Line to line, busy: line 2 is off-hook when line 1 calls it.
    gw.phone("2", "offhook")
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits="102")
    ends = new_ends(rig, 6, 2)
    assert sorted((line, cause) for _, line, cause, _ in ends) == [
        (LINE, "rejected 486 Busy Here (line 2)"), ("2", "rejected 486 Busy Here")]
    hang_up(rig)
    hang_up(rig, "2")

    # 7. The far end offers no codec we speak: refused with 488 before the line rings.
    peer = rig.uac("uac_no_codec.xml")
    assert_sipp_passed(peer, peer.wait(15))
    [(_, line, cause, talked)] = new_ends(rig, 8, 1)
    assert (line, cause, talked) == (
        LINE, "rejected 488 Not Acceptable Here (no usable media)", "not answered")
    assert gw.line(LINE)["state"] == "idle"

    # Exactly one line per call leg, and no cause is "None" anywhere in the log.
    all_ends = ended(rig)
    assert len(all_ends) == 9
    ids = [call_id for call_id, *_ in all_ends]
    assert len(set(ids)) == len(ids), all_ends
    log = gw.log_text()
    assert "(None)" not in log and "ended: None" not in log

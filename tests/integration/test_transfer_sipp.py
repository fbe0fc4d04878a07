"""Transfer through the running daemon with sipp as the trunk (RFC 3515 REFER, RFC 5589):

- blind: the handset calls sipp (300), flashes (hold, consultation dial tone), dials line 2
  (102) and hangs up while it rings: the gateway sends REFER with Refer-To
  <sip:102@trunk:port>, no Replaces; sipp answers 202 and NOTIFYs sipfrag 100 then 200; the
  gateway answers each NOTIFY 200, BYEs the transferred call, and line 2 stops ringing;
- attended: the consultation call goes to sipp too (301) and is answered; hanging up sends
  REFER on the held call with Refer-To <sip:301@trunk?Replaces=...> naming the consultation
  dialog as sipp sees it (Call-ID, to-tag = sipp's tag, from-tag = ours), and both legs are
  ended after the 200 sipfrag;
- a failed blind transfer (sipfrag 486): the phone rings with the held call, picking up
  resumes it;
- attended with the consultation on line 2 of this box: no REFER, the sipp call moves to
  line 2 (resumed) and line 2's handset talks to sipp;
- a REFER to an international or premium-rate number or a foreign host gets 403;
- INVITE with Replaces (RFC 3891) from a second trunk naming the answered call: answered at
  once on the same line, the replaced call gets BYE, the handset talks to the new party;
- we are transferred: sipp calls the line, the handset answers, sipp REFERs it to 300; the
  gateway answers 202, calls 300 at the trunk's proxy (a second sipp), NOTIFYs 100 and 200,
  BYEs the old call, and the handset talks to the new party (RTP echoed back to it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from .conftest import require_binary
from .peers.ports import free_port, free_sip_port, release
from .peers.sipp import Sipp, sipp_binary
from .test_interop_matrix import LINE, LINE_NUMBER, wait_call_state, wait_no_calls
from .test_interop_sipp import (
    SIPP_USER,
    SippRig,
    assert_sipp_passed,
    handset_calls_sipp,
    handset_talks,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SippRig]:
    require_binary("sipp", sipp_binary())
    rig = SippRig(tmp_path, account=False)
    try:
        yield rig
    finally:
        failed = any(getattr(request.node, f"_peers_rep_{p}", None) is not None
                     and getattr(request.node, f"_peers_rep_{p}").failed
                     for p in ("setup", "call"))
        rig.close(failed)


def _header(msg: str, name: str) -> str:
    found = re.search(rf"(?im)^{name}:\s*(.+?)\s*$", msg)
    assert found, f"no {name} in:\n{msg}"
    return found.group(1)


def _tag(value: str) -> str:
    found = re.search(r";\s*tag=([^;>\s]+)", value)
    assert found, value
    return found.group(1)


def _flash(rig: SippRig) -> None:
    """Flash: the call is held and the line gives consultation dial tone."""
    rig.gw.phone(LINE, "flash")
    rig.gw.wait_until("consultation dial tone",
                      lambda: rig.gw.line(LINE)["state"] == "dial-tone", timeout=5)


def _ended_with_transfer(rig: SippRig, peer: Sipp) -> None:
    assert_sipp_passed(peer, peer.wait(15))
    wait_no_calls(rig.gw, timeout=5)
    assert rig.gw.line(LINE)["state"] == "idle"
    notify_answers = [m for m in peer.received("SIP/2.0 200") if "NOTIFY" in
                      _header(m, "CSeq")]
    assert len(notify_answers) >= 2, peer.report()


def test_blind_transfer_sends_refer_and_ends_the_call_on_sipfrag_200(rig: SippRig) -> None:
    peer = rig.sipp("uas_refer.xml", service=SIPP_USER).start()
    rig.gw.start()
    handset_calls_sipp(rig)
    _flash(rig)
    rig.gw.phone(LINE, "dial", digits="102")
    rig.gw.wait_until("line 2 rings", lambda: rig.gw.line("2")["state"] == "ringing")
    rig.gw.phone(LINE, "onhook")
    _ended_with_transfer(rig, peer)
    (refer,) = peer.received("REFER ")
    assert _header(refer, "Refer-To") == f"<sip:102@127.0.0.1:{rig.sipp_port}>"
    assert "Referred-By" in refer
    assert rig.gw.line("2")["state"] == "idle", "the consultation call was dropped"


def test_attended_transfer_refers_with_replaces_of_the_consultation(rig: SippRig) -> None:
    peer = rig.sipp("uas_refer.xml", service=SIPP_USER, calls=2).start()
    rig.gw.start()
    handset_calls_sipp(rig)
    _flash(rig)
    rig.gw.phone(LINE, "dial", digits="301")
    rig.gw.wait_until("consultation connected",
                      lambda: len([c for c in rig.gw.status()["calls"]
                                   if c["state"] == "connected"]) == 2, timeout=10)
    rig.gw.phone(LINE, "onhook")
    _ended_with_transfer(rig, peer)
    invites = [m for m in peer.received("INVITE ") if "CSeq: 1 INVITE" in m]
    held, consult = invites[0], invites[1]
    (refer,) = peer.received("REFER ")
    assert _header(refer, "Call-ID") == _header(held, "Call-ID")
    target = _header(refer, "Refer-To")
    found = re.fullmatch(rf"<sip:301@127\.0\.0\.1:{rig.sipp_port}\?Replaces=([^>]+)>", target)
    assert found, target
    replaces = unquote(found.group(1))
    answer = next(m for m in peer._trace("sent")
                  if m.startswith("SIP/2.0 200") and _header(m, "Call-ID")
                  == _header(consult, "Call-ID") and "INVITE" in _header(m, "CSeq"))
    want = (f"{_header(consult, 'Call-ID')};to-tag={_tag(_header(answer, 'To'))}"
            f";from-tag={_tag(_header(consult, 'From'))}")
    assert replaces == want


def test_peer_transfers_us_new_call_from_the_same_line(rig: SippRig, tmp_path: Path) -> None:
    """sipp (at the trunk's registrar address) calls the line and REFERs it to 300; the new
    call goes to the trunk's proxy, a second sipp that answers and echoes RTP."""
    proxy_port, proxy_media = free_port(), free_sip_port()
    try:
        text = rig.gw.config_path.read_text()
        registrar = f"    registrar: 127.0.0.1:{rig.sipp_port}\n"
        assert registrar in text
        rig.gw.config_path.write_text(text.replace(
            registrar, registrar + f"    proxy: 127.0.0.1:{proxy_port}\n", 1))
        target = Sipp("uas", sip_port=proxy_port, media_port=proxy_media, tmpdir=tmp_path,
                      service=SIPP_USER)
        rig.sipps.append(target)
        target.start()
        rig.gw.start()
        transferor = rig.uac("uac_refer.xml", rtp_echo=False,
                             extra_args=["-key", "refer_to", f"sip:{SIPP_USER}@127.0.0.1"])
        rig.gw.wait_until("line rings", lambda: rig.gw.line(LINE)["state"] == "ringing")
        rig.gw.phone(LINE, "offhook")
        wait_call_state(rig.gw, "connected", timeout=10)
        assert_sipp_passed(transferor, transferor.wait(15))
        frags = [m.split("\n\n", 1)[-1] for m in transferor.received("NOTIFY ")]
        assert any("SIP/2.0 100" in f for f in frags), frags
        assert any("SIP/2.0 200" in f for f in frags), frags
        assert transferor.received("SIP/2.0 202"), transferor.report()
        calls = rig.gw.status()["calls"]
        assert len(calls) == 1 and calls[0]["remote"] == f"sip:{SIPP_USER}@127.0.0.1", calls
        assert calls[0]["state"] == "connected" and calls[0]["line"] == LINE
        handset_talks(rig)  # the new party (sipp -rtp_echo) sends the handset's tone back
        rig.gw.phone(LINE, "onhook")
        assert_sipp_passed(target, target.wait(10))
    finally:
        release(proxy_port, proxy_media)


def test_invite_with_replaces_takes_over_the_call(rig: SippRig, tmp_path: Path) -> None:
    """sipp A (trunk sipp) calls the line and the handset answers; sipp B (a second trunk)
    sends INVITE with Replaces naming that dialog as the gateway sees it: B is answered at
    once on the same line, A gets BYE, and the handset talks to B (RTP echoed)."""
    b_port, b_media = free_port(), free_sip_port()
    try:
        text = rig.gw.config_path.read_text()
        anchor = "lines:\n"
        assert anchor in text
        rig.gw.config_path.write_text(text.replace(
            anchor, f"  - name: sipp2\n    registrar: 127.0.0.1:{b_port}\n"
                    "    keepalive: none\n" + anchor, 1))
        rig.gw.start()
        a = rig.uac("uac_replaced.xml", rtp_echo=False)
        rig.gw.wait_until("line rings", lambda: rig.gw.line(LINE)["state"] == "ringing")
        rig.gw.phone(LINE, "offhook")
        wait_call_state(rig.gw, "connected", timeout=10)
        invite = a._trace("sent")[0]
        answer = next(m for m in a.received("SIP/2.0 200") if "INVITE" in _header(m, "CSeq"))
        replaces = (f"{_header(invite, 'Call-ID')};to-tag={_tag(_header(answer, 'To'))}"
                    f";from-tag={_tag(_header(invite, 'From'))}")
        b = Sipp("uac_replaces.xml", sip_port=b_port, media_port=b_media, tmpdir=tmp_path,
                 remote=f"127.0.0.1:{rig.sip_port}", service=LINE_NUMBER,
                 extra_args=["-key", "replaces", replaces])
        rig.sipps.append(b)
        b.start()
        assert_sipp_passed(a, a.wait(10))  # A was sent BYE
        rig.gw.wait_until("one call, with B", lambda: [
            c["call_id"] for c in rig.gw.status()["calls"]] == [_header(
                b._trace("sent")[0], "Call-ID")], timeout=5)
        assert not b.received("SIP/2.0 180"), "a replacing INVITE must not ring"
        handset_talks(rig)
        rig.gw.phone(LINE, "onhook")
        assert_sipp_passed(b, b.wait(10))
    finally:
        release(b_port, b_media)


@pytest.mark.parametrize("refer_to", ["sip:011442079460000@127.0.0.1",
                                      "sip:900555@127.0.0.1",
                                      f"sip:{SIPP_USER}@192.0.2.1"],
                         ids=["international", "premium", "foreign-host"])
def test_refer_to_a_denied_target_gets_403_and_the_call_goes_on(
        rig: SippRig, refer_to: str) -> None:
    """Toll fraud through transfer: a REFER may not make the line call what the line itself
    may not (international, premium rate) nor any host but the trunk's."""
    rig.gw.start()
    peer = rig.uac("uac_refer_refused.xml", rtp_echo=False,
                   extra_args=["-key", "refer_to", refer_to])
    rig.gw.wait_until("line rings", lambda: rig.gw.line(LINE)["state"] == "ringing")
    rig.gw.phone(LINE, "offhook")
    wait_call_state(rig.gw, "connected", timeout=10)
    assert_sipp_passed(peer, peer.wait(10))  # 403 to the REFER, then sipp's own BYE
    assert not peer.received("NOTIFY "), "nothing was called, nothing to report"
    refusals = [line for line in rig.gw.log_text().splitlines()
                if f"REFER to {refer_to}" in line and "refused" in line]
    assert refusals, rig.gw.log_text()[-3000:]
    rig.gw.phone(LINE, "onhook")


def test_attended_transfer_of_a_sip_call_to_a_local_line_is_joined_here(
        rig: SippRig) -> None:
    """No REFER when the consultation party is a line of this box: line 1 holds its sipp
    call, calls line 2, and hangs up once line 2 answered; the sipp call moves to line 2
    (resumed with a=sendrecv), whose handset hears its own tone echoed by sipp."""
    from .audio import write_tone_wav

    gw = rig.gw
    peer = rig.sipp("uas_hold_resume.xml", service=SIPP_USER).start()
    gw.start()
    handset_calls_sipp(rig)
    _flash(rig)
    gw.phone(LINE, "dial", digits="102")
    gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing")
    gw.phone("2", "offhook")
    gw.wait_until("line 2 connected", lambda: gw.line("2")["state"] == "connected")
    gw.phone(LINE, "onhook")
    gw.wait_until("the sipp call is line 2's", lambda: [
        (c["line"], c["kind"], c["held"]) for c in gw.status()["calls"]]
        == [("2", "sip", False)], timeout=10)
    assert gw.line(LINE)["state"] == "idle"
    assert not peer.received("REFER "), "nothing to REFER: joined on the box"
    gw.phone("2", "play", path=str(write_tone_wav(rig.tmp / "line2.wav", 660.0)))

    def hears_660() -> bool:
        report = gw.phone("2", "hears")
        return abs((report.get("dominant_hz") or 0.0) - 660.0) <= 13.2 \
            and (report.get("level_dbfs") or -99.0) > -40.0

    gw.wait_until("line 2 hears its tone echoed by sipp", hears_660, timeout=10)
    gw.phone("2", "onhook")
    assert_sipp_passed(peer, peer.wait(10))


def test_failed_transfer_gives_the_call_back(rig: SippRig) -> None:
    gw = rig.gw
    peer = rig.sipp("uas_refer_fail.xml", service=SIPP_USER).start()
    gw.start()
    handset_calls_sipp(rig)
    _flash(rig)
    gw.phone(LINE, "dial", digits="102")
    gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing")
    gw.phone(LINE, "onhook")  # blind transfer to 102; sipp reports 486
    gw.wait_until("the phone rings with the held call",
                  lambda: gw.line(LINE)["state"] == "ringing", timeout=10)
    assert [c["state"] for c in gw.status()["calls"]] == ["connected"]
    gw.phone(LINE, "offhook")
    gw.wait_until("resumed", lambda: [(c["held"], gw.line(LINE)["state"]) for c in
                                      gw.status()["calls"]] == [(False, "connected")],
                  timeout=10)
    handset_talks(rig)
    gw.phone(LINE, "onhook")
    assert_sipp_passed(peer, peer.wait(10))

"""Interop matrix, sipp column: the standard `-sn uac`/`-sn uas` scenarios and our own.

sipp is the trunk here: the gateway's trunk `sipp` has sipp's address as its registrar,
so requests from sipp come from a configured trunk address (the only unauthenticated
source the gateway accepts). RTP is echoed by sipp (`-rtp_echo`): the handset plays a
440 Hz tone and hears it come back, which proves audio both ways through the peer.

| test | direction | hold | hangs up | auth |
|---|---|---|---|---|
| standard uas | gateway -> sipp | - | handset | - |
| standard uac | sipp -> gateway | - | sipp | - |
| uas_hold.xml | gateway -> sipp | sipp holds/resumes | sipp | - |
| uac_hold.xml | sipp -> gateway | sipp holds/resumes | handset | - |
| uas_auth_40x.xml | gateway -> sipp | - | handset | sipp sends 407 or 401, gateway retries |
| uac_auth.xml | sipp -> gateway | - | sipp | answers a challenge if one comes |

DTMF dialled on the handset is only checked for not breaking the call (sipp does not
report RFC 4733 events).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, free_sip_port, release
from .peers.sipp import Sipp, sipp_binary
from .test_interop_matrix import (
    HANDSET_TONE_HZ,
    LINE,
    LINE_NUMBER,
    LineAccount,
    TrunkSpec,
    gateway_yaml,
    handset_hangs_up_after_far_end,
    wait_call_state,
    wait_hears_hz,
    wait_hears_silence,
    wait_line_ringing,
    wait_no_calls,
    write_tone_wav,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SIPP_USER = "300"
AUTH_USER = "gwline"
AUTH_PASS = "Sipp-Auth-7731"


class SippRig:
    """A gateway whose only trunk is one sipp process (started by the test)."""

    def __init__(self, tmp: Path, *, account: bool) -> None:
        self.tmp = tmp
        self.sip_port = free_port()
        self.sipp_port = free_port()
        self.media_port = free_sip_port()
        # keepalive: none: no trunk-health OPTIONS stream either (sipp would take each
        # probe's new Call-ID for a call of its scenario and stop answering).
        trunk = TrunkSpec("sipp", self.sipp_port, extra="    keepalive: none\n")
        acct = LineAccount("sipp", AUTH_USER, AUTH_PASS) if account else None
        config = gateway_yaml(tmp, self.sip_port, [trunk], acct, "sipp")
        if account:
            # Few keep-alive probes: each would be a "call" of its own for a sipp UAS.
            config = config.replace("keepalive_interval: 1", "keepalive_interval: 300")
        self.gw = GatewayProcess(tmp, config)
        self.sipps: list[Sipp] = []

    def sipp(self, scenario: str, **kwargs: object) -> Sipp:
        peer = Sipp(scenario, sip_port=self.sipp_port, media_port=self.media_port,
                    tmpdir=self.tmp, **kwargs)  # type: ignore[arg-type]
        self.sipps.append(peer)
        return peer

    def uac(self, scenario: str, **kwargs: object) -> Sipp:
        kwargs.setdefault("service", LINE_NUMBER)
        return self.sipp(scenario, remote=f"127.0.0.1:{self.sip_port}", **kwargs).start()

    def close(self, failed: bool) -> None:
        for peer in self.sipps:
            peer.stop()
            if failed:
                print(f"\n===== sipp {peer.scenario} =====\n{peer.report()}")
        code = self.gw.stop()
        if failed or code not in (0, None):
            print(f"\n===== gateway log =====\n{self.gw.log_text()[-6000:]}")
        release(self.sip_port, self.sipp_port, self.media_port, self.media_port + 1)


@pytest.fixture
def sipp_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SippRig]:
    require_binary("sipp", sipp_binary())
    account = bool(getattr(request, "param", False))
    rig = SippRig(tmp_path, account=account)
    try:
        yield rig
    finally:
        failed = any(getattr(request.node, f"_peers_rep_{p}", None) is not None
                     and getattr(request.node, f"_peers_rep_{p}").failed
                     for p in ("setup", "call"))
        rig.close(failed)


def handset_talks(rig: SippRig) -> None:
    """The handset plays 440 Hz and hears it echoed by sipp."""
    rig.gw.phone(LINE, "play", path=str(write_tone_wav(rig.tmp / "handset.wav", HANDSET_TONE_HZ)))
    wait_hears_hz(rig.gw, HANDSET_TONE_HZ)


def handset_calls_sipp(rig: SippRig) -> None:
    gw = rig.gw
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=SIPP_USER)
    wait_call_state(gw, "connected", timeout=10)


def handset_answers(rig: SippRig) -> None:
    wait_line_ringing(rig.gw)
    rig.gw.phone(LINE, "offhook")
    wait_call_state(rig.gw, "connected", timeout=10)


def assert_sipp_passed(peer: Sipp, code: int, ok: tuple[int, ...] = (0,)) -> None:
    assert code in ok, f"sipp exited {code}:\n{peer.report()}"
    assert "Aborting call" not in peer.errors(), peer.report()


def test_sipp_standard_uas_gateway_calls_and_hangs_up(sipp_rig: SippRig) -> None:
    rig = sipp_rig
    peer = rig.sipp("uas", service=SIPP_USER).start()
    rig.gw.start()
    handset_calls_sipp(rig)
    handset_talks(rig)
    rig.gw.phone(LINE, "dial", digits="42#")
    rig.gw.phone(LINE, "onhook")
    assert_sipp_passed(peer, peer.wait(15))
    assert len(peer.received("BYE ")) == 1
    wait_no_calls(rig.gw)


def test_sipp_standard_uac_calls_gateway_and_hangs_up(sipp_rig: SippRig) -> None:
    rig = sipp_rig
    rig.gw.start()
    peer = rig.uac("uac", pause_ms=5000)
    handset_answers(rig)
    handset_talks(rig)
    rig.gw.phone(LINE, "dial", digits="42#")
    assert_sipp_passed(peer, peer.wait(20))
    wait_no_calls(rig.gw)
    handset_hangs_up_after_far_end(rig.gw)


def test_sipp_uas_holds_resumes_and_hangs_up(sipp_rig: SippRig) -> None:
    rig = sipp_rig
    peer = rig.sipp("uas_hold.xml", service=SIPP_USER).start()
    rig.gw.start()
    handset_calls_sipp(rig)
    handset_talks(rig)                                   # within 3 s of the answer
    wait_hears_silence(rig.gw, timeout=6)                # re-INVITE a=sendonly
    wait_hears_hz(rig.gw, HANDSET_TONE_HZ, timeout=8)    # re-INVITE a=sendrecv
    assert rig.gw.line(LINE)["state"] == "connected"
    rig.gw.phone(LINE, "dial", digits="5")
    assert_sipp_passed(peer, peer.wait(15))
    answers = [m for m in peer.received("SIP/2.0 200") if "INVITE" in m and "m=audio" in m]
    assert len(answers) == 2, f"expected two re-INVITE answers, got {len(answers)}"
    assert "a=recvonly" in answers[0], f"hold answered without recvonly:\n{answers[0]}"
    assert "a=sendrecv" in answers[1] or "a=" not in answers[1].split("m=audio")[1]
    wait_no_calls(rig.gw)
    handset_hangs_up_after_far_end(rig.gw)


def test_sipp_uac_holds_resumes_handset_hangs_up(sipp_rig: SippRig) -> None:
    rig = sipp_rig
    rig.gw.start()
    peer = rig.uac("uac_hold.xml")
    handset_answers(rig)
    handset_talks(rig)
    wait_hears_silence(rig.gw, timeout=6)
    wait_hears_hz(rig.gw, HANDSET_TONE_HZ, timeout=8)
    rig.gw.phone(LINE, "dial", digits="5")
    rig.gw.phone(LINE, "onhook")
    assert_sipp_passed(peer, peer.wait(15))
    wait_no_calls(rig.gw)


#: challenge status -> (header sipp challenges with, header the retry must carry)
CHALLENGES = {
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
    401: ("WWW-Authenticate", "Authorization"),
}


def digest_params(header_value: str) -> dict[str, str]:
    """key=value pairs of a Digest credentials header (quotes removed)."""
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', header_value)}


def expected_digest(p: dict[str, str], method: str, password: str) -> str:
    """RFC 2617 MD5 response (with qop=auth when the client used it)."""
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = h(f"{p['username']}:{p['realm']}:{password}")
    ha2 = h(f"{method}:{p['uri']}")
    if p.get("qop"):
        return h(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
    return h(f"{ha1}:{p['nonce']}:{ha2}")


@pytest.mark.parametrize("challenge", sorted(CHALLENGES))
@pytest.mark.parametrize("sipp_rig", [True], indirect=True, ids=["line-account-on-sipp"])
def test_sipp_uas_challenges_gateway_invite(sipp_rig: SippRig, challenge: int) -> None:
    rig = sipp_rig
    credentials_header = CHALLENGES[challenge][1]
    peer = rig.sipp(f"uas_auth_{challenge}.xml", service=SIPP_USER, calls=None).start()
    rig.gw.start()
    rig.gw.wait_until("line registered on sipp", lambda: rig.gw.registered(LINE), timeout=10)
    handset_calls_sipp(rig)
    handset_talks(rig)
    rig.gw.phone(LINE, "onhook")
    code = peer.wait(15)
    invites = peer.received("INVITE ")
    assert len(invites) == 2, f"expected one challenged INVITE and one retry:\n{peer.report()}"
    lines = [ln for ln in invites[1].splitlines()
             if ln.lower().startswith(credentials_header.lower() + ":")]
    assert lines, f"retried INVITE has no {credentials_header}:\n{invites[1]}"
    params = digest_params(lines[0].split(":", 1)[1])
    assert params.get("username") == AUTH_USER and params.get("realm") == "sipp.test", params
    assert params.get("response") == expected_digest(params, "INVITE", AUTH_PASS), params
    assert "CSeq: 2 INVITE" in invites[1], "retry must use a new CSeq"
    assert len(peer.received("BYE ")) == 1, peer.report()
    assert_sipp_passed(peer, code, ok=(0, 97))
    wait_no_calls(rig.gw)


@pytest.mark.parametrize("sipp_rig", [True], indirect=True, ids=["line-account-on-sipp"])
def test_sipp_uas_several_challenges_gateway_skips_an_unknown_algorithm(
        sipp_rig: SippRig) -> None:
    """The 401 lists an algorithm nobody knows before MD5: the gateway answers the MD5 one."""
    rig = sipp_rig
    peer = rig.sipp("uas_auth_multi.xml", service=SIPP_USER, calls=None).start()
    rig.gw.start()
    rig.gw.wait_until("line registered on sipp", lambda: rig.gw.registered(LINE), timeout=10)
    handset_calls_sipp(rig)
    handset_talks(rig)
    rig.gw.phone(LINE, "onhook")
    code = peer.wait(15)
    invites = peer.received("INVITE ")
    assert len(invites) == 2, f"expected one challenged INVITE and one retry:\n{peer.report()}"
    lines = [ln for ln in invites[1].splitlines() if ln.lower().startswith("authorization:")]
    assert lines, f"retried INVITE has no Authorization:\n{invites[1]}"
    params = digest_params(lines[0].split(":", 1)[1])
    assert params.get("algorithm") == "MD5" and params["nonce"].endswith("x47a1"), params
    assert params.get("response") == expected_digest(params, "INVITE", AUTH_PASS), params
    assert_sipp_passed(peer, code, ok=(0, 97))
    wait_no_calls(rig.gw)


def test_sipp_uac_with_authentication_calls_gateway(sipp_rig: SippRig) -> None:
    rig = sipp_rig
    rig.gw.start()
    peer = rig.uac("uac_auth.xml", pause_ms=4000, auth=(SIPP_USER, "sipp-Secret-42"))
    handset_answers(rig)
    handset_talks(rig)
    assert_sipp_passed(peer, peer.wait(20))
    wait_no_calls(rig.gw)
    handset_hangs_up_after_far_end(rig.gw)



def test_sipp_uas_early_media_reaches_the_handset_before_answer(sipp_rig: SippRig) -> None:
    """183 with SDP: the handset hears the far end (its own tone, echoed) before the 200."""
    rig = sipp_rig
    peer = rig.sipp("uas_early.xml", service=SIPP_USER).start()
    rig.gw.start()
    gw = rig.gw
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=SIPP_USER)
    wait_call_state(gw, "early-media", timeout=10)
    gw.phone(LINE, "play", path=str(write_tone_wav(rig.tmp / "handset.wav", HANDSET_TONE_HZ)))
    wait_hears_hz(gw, HANDSET_TONE_HZ, timeout=3)
    assert gw.line(LINE)["state"] == "early-media", "answered before the early audio was heard"
    wait_call_state(gw, "connected", timeout=6)
    assert_sipp_passed(peer, peer.wait(15))
    wait_no_calls(gw)
    handset_hangs_up_after_far_end(gw)

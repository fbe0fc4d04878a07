"""RTCP from the daemon, checked against baresip, which sends and reads RTCP itself.

The real `branchline run` daemon calls a baresip phone through Kamailio (the set-up of
test_first_call.py). During the call:

- the gateway's `status` shows baresip's reports received: the round-trip time computed
  from the LSR/DLSR baresip echoed (a sane positive number), and baresip's jitter figure;
- baresip got ours: it raises a CALL_RTCP event for each RTCP report it receives on the
  call (without rtcp-mux it drops RTCP that arrives on its RTP port, so this also shows
  ours went to its RTP port + 1), with the statistics libre computed from them: `rx.sent`
  is the packet count of our SR, `tx.lost` / `tx.jit` the loss and jitter (in us) of our
  report block about its stream, and `rtt` (us) is non-zero only once it has read the
  LSR/DLSR of a block of ours that echoed one of its SRs.

It runs twice: plain RTP/RTCP, and SRTP with SDES (baresip `mediaenc=srtp`, the trunk's
`srtp: offer`; `require` needs TLS signalling), where every report either way is SRTCP:
the gateway counts one only once it authenticated, and plain RTCP would be dropped.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.dsp import SILENCE_FRAME
from gateway.media.secure import srtp_pair
from gateway.media.stream import MediaStream
from gateway.runtime.rtp import RtpEndpoint
from gateway.sip.sdp import SessionDescription, build_offer, params_from_answer
from gateway.sip.sdp_secure import secure_from_answer, secure_offer

from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import LINE_PASS, LINE_USER, gateway_config
from .test_tls_srtp import RTP_RANGE, MiniUa, new_stream

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _rtcp_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "CALL_RTCP"]


@pytest.mark.parametrize("secure", [False, True], ids=["rtcp", "srtcp"])
def test_daemon_and_baresip_exchange_rtcp_reports(
    secure: bool, tmp_path: Path, kamailio_factory: KamailioFactory,
    baresip_factory: BaresipFactory,
) -> None:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    config = gateway_config(trunk, free_port(), tmp_path)
    if secure:
        config = config.replace("    keepalive_interval: 1\n",
                                "    keepalive_interval: 1\n    srtp: offer\n")
        assert "srtp: offer" in config
    gw = GatewayProcess(tmp_path, config)
    gw.start()
    try:
        bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000,
                              answer_mode="auto", mediaenc="srtp" if secure else None)
        bob.wait_registered()
        gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
        gw.phone("1", "offhook")
        gw.phone("1", "dial", digits="300")
        bob.wait_for_event("CALL_ESTABLISHED", timeout=15)
        gw.wait_until("call connected", lambda: gw.line("1")["state"] == "connected",
                      timeout=10)
        since = time.monotonic()

        def rtcp() -> dict[str, Any]:
            calls = gw.status()["calls"]
            return dict(calls[0].get("rtcp") or {}) if calls else {}

        # Reports go every 2.5-7.5 s each way; RTT needs ours, then theirs echoing it.
        gw.wait_until(
            "baresip's reports with an RTT in the gateway's status",
            lambda: (rtcp().get("received", 0) >= 2 and rtcp().get("rtt_ms") is not None
                     and rtcp().get("remote_reports", 0) >= 1),
            timeout=30, interval=0.5,
        )
        # One status snapshot for both: the stream's jitter moves between two reads.
        call = gw.status()["calls"][0]
        ours, stats = dict(call["rtcp"]), call["stats"]
        # ... and ours in baresip: wait for a report of ours that echoed its SR (rtt > 0)
        deadline = time.monotonic() + 30
        while (not any(e["rtcp_stats"]["rtt"] > 0 for e in _rtcp_events(bob.events))
               and time.monotonic() < deadline):
            time.sleep(0.5)
        theirs = _rtcp_events(bob.events)
        sent_by_gateway = gw.status()["calls"][0]["stats"]["packets_sent"]
        print(f"gateway status rtcp after {time.monotonic() - since:.1f} s: {ours}")
        print("baresip CALL_RTCP rtcp_stats:", [e["rtcp_stats"] for e in theirs])
        bob.hangup()
        bob.wait_for_event("CALL_CLOSED", timeout=10)
        gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])

    assert stats["srtp"] == int(secure), stats
    assert stats["srtcp_dropped_auth"] == 0 and stats["srtcp_dropped_replay"] == 0, stats
    # Baresip's reports, as the gateway read them.
    assert ours["sent"] >= 1 and ours["malformed"] == 0, ours
    rtt = ours["rtt_ms"]
    # loopback: well under 100 ms; RTCP carries LSR and DLSR in 1/65536 s, so a loopback RTT
    # (tens of microseconds) can come out as 0 after the peer's rounding of its delay
    assert isinstance(rtt, float) and 0.0 <= rtt < 100.0, ours
    assert isinstance(ours["remote_jitter_ms"], float) and 0.0 <= ours["remote_jitter_ms"] < 20
    assert ours["remote_lost"] == 0 and ours["remote_fraction_lost"] == 0.0, ours
    assert ours["remote_reports"] >= 1 and ours["received"] >= 2, ours
    assert stats["rtcp_dropped_foreign"] == 0 and stats["srtcp_dropped_tag32"] == 0, stats
    # Our own figures are what the stream measured on baresip's RTP.
    assert ours["local_lost"] == stats["lost"] == 0
    assert ours["local_jitter_ms"] == pytest.approx(stats["jitter_ms"], abs=0.01)

    # Ours, as baresip read them: one CALL_RTCP event per report it got on this call.
    assert theirs, f"baresip saw no RTCP from the gateway; events: {bob.event_types()}"
    last = theirs[-1]["rtcp_stats"]
    assert 0 < last["rx"]["sent"] <= sent_by_gateway  # our SR's packet count
    assert last["tx"]["lost"] == 0 and last["tx"]["jit"] >= 0  # our block about its RTP
    rtts = [e["rtcp_stats"]["rtt"] for e in theirs if e["rtcp_stats"]["rtt"] > 0]
    assert rtts and all(r < 100_000 for r in rtts), [e["rtcp_stats"] for e in theirs]


def test_baresip_srtcp_on_the_32_bit_suite_is_dropped_and_named(
    baresip_factory: BaresipFactory,
) -> None:
    """baresip 1.0 (libre) puts a 32-bit tag on SRTCP for AES_CM_128_HMAC_SHA1_32, where
    RFC 3711/4568 keep 80 bits. We keep the RFC: its reports are dropped, never read, and
    counted as ``srtcp_dropped_tag32`` (not as forgeries) so `status` says why.

    The call is set up by hand offering only the _32 suite (the daemon offers _80 first,
    which baresip takes), and runs on RtpEndpoint/MediaStream, the daemon's media path.
    """
    bob = baresip_factory("bob", tone=1000, answer_mode="auto", mediaenc="srtp-mand")
    suite = "AES_CM_128_HMAC_SHA1_32"

    async def scenario() -> MediaStream:
        loop = asyncio.get_running_loop()
        ua = MiniUa()
        await ua.open()
        endpoint = await RtpEndpoint.open("127.0.0.1", RTP_RANGE)
        try:
            plain = build_offer(address="127.0.0.1", port=endpoint.port, codecs=["PCMU"],
                                session_id=secrets.randbits(31), session_version=1)
            offer, pending = secure_offer("require", plain, suites=(suite,))
            dest = ("127.0.0.1", bob.sip_port)
            call_id = secrets.token_hex(8)
            ua.request("INVITE", bob.direct_uri, f"<{bob.direct_uri}>", call_id, 1, dest,
                       bytes(offer))
            ok = await ua.expect("INVITE", timeout=15)
            assert ok.status == 200, ok.start
            answer = SessionDescription.parse(ok.body)
            params = params_from_answer(offer, answer)
            selection = secure_from_answer(pending, answer)
            assert selection is not None and selection.suite == suite
            ua.request("ACK", bob.direct_uri, ok.h("to"), call_id, 1, dest)
            stream = new_stream(params.remote_addr, params.codec, params.payload_type,
                                params.telephone_event_pt, srtp_pair(selection), loop.time())
            endpoint.attach(stream)
            start = loop.time()
            slot = 0
            # baresip reports every ~5 s: wait for two of them (at most 25 s)
            while loop.time() - start < 25.0 and stream.stats()["srtcp_dropped_tag32"] < 2:
                slot += 1
                await asyncio.sleep(max(0.0, start + slot * 0.02 - loop.time()))
                stream.push_frame(SILENCE_FRAME)
                endpoint.tick(loop.time())
                stream.pull_frame(loop.time())
            ua.request("BYE", bob.direct_uri, ok.h("to"), call_id, 2, dest)
            await ua.expect("BYE")
            return stream
        finally:
            endpoint.close()
            ua.close()

    stream = asyncio.run(scenario())
    st, rtcp = stream.stats(), stream.rtcp_stats()
    print("gateway stats:", {k: v for k, v in st.items() if "rtcp" in k}, rtcp)
    print("baresip:", [ln for ln in bob.log_text().splitlines() if "RTCP" in ln][-3:])
    assert st["packets_received"] > 100 and st["srtp_dropped_auth"] == 0, st  # SRTP is fine
    assert st["srtcp_dropped_tag32"] >= 2, st
    assert st["srtcp_dropped_auth"] == 0 and st["srtcp_dropped_unencrypted"] == 0, st
    assert st["rtcp_received"] == 0 and rtcp["received"] == 0, rtcp  # none was read


def test_rtcp_mux_offered_by_baresip_is_accepted_by_the_daemon(
    tmp_path: Path, kamailio_factory: KamailioFactory, baresip_factory: BaresipFactory,
) -> None:
    """baresip with `rtcp_mux yes` calls a line and offers a=rtcp-mux (RFC 5761); the daemon
    accepts, so both sides' reports travel between the two RTP ports. baresip then starts
    RTCP towards our (even) RTP port, not the odd one above it, and reads our reports."""
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    gw = GatewayProcess(tmp_path, gateway_config(trunk, free_port(), tmp_path))
    gw.start()
    try:
        bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000,
                              rtcp_mux=True)
        bob.wait_registered()
        gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
        bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
        gw.wait_until("line 1 ringing", lambda: gw.line("1")["ringing"]
                      or gw.line("1")["state"] == "ringing", timeout=15)
        gw.phone("1", "offhook")
        bob.wait_for_event("CALL_ESTABLISHED", timeout=10)

        def rtcp() -> dict[str, Any]:
            calls = gw.status()["calls"]
            return dict(calls[0].get("rtcp") or {}) if calls else {}

        gw.wait_until("baresip's muxed reports with an RTT in the gateway's status",
                      lambda: rtcp().get("rtt_ms") is not None and rtcp().get("received", 0) >= 2,
                      timeout=30, interval=0.5)
        ours = rtcp()
        stats = gw.status()["calls"][0]["stats"]
        deadline = time.monotonic() + 30
        while (not any(e["rtcp_stats"]["rtt"] > 0 for e in _rtcp_events(bob.events))
               and time.monotonic() < deadline):
            time.sleep(0.5)
        theirs = _rtcp_events(bob.events)

        def held() -> bool:
            calls = gw.status()["calls"]
            return bool(calls and calls[0]["held"])

        # hold and resume: our re-offers must keep the mux, or our reports go astray
        gw.phone("1", "flash")
        gw.wait_until("call held", held, timeout=5)
        gw.phone("1", "flash")
        gw.wait_until("call resumed", lambda: not held(), timeout=5)
        resumed = len(_rtcp_events(bob.events))
        deadline = time.monotonic() + 25
        while len(_rtcp_events(bob.events)) < resumed + 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        after_resume = len(_rtcp_events(bob.events)) - resumed
        print(f"gateway status rtcp (mux): {ours}")
        print("baresip CALL_RTCP rtcp_stats:", [e["rtcp_stats"] for e in theirs])
        bob.hangup()
        bob.wait_for_event("CALL_CLOSED", timeout=10)
        gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)
        gw.phone("1", "onhook")
    finally:
        gw.stop()

    starts = [ln for ln in bob.log_text().splitlines() if "starting RTCP with remote" in ln]
    assert starts and all(int(ln.rsplit(":", 1)[1]) % 2 == 0 for ln in starts), starts
    assert isinstance(ours["rtt_ms"], float) and 0.0 < ours["rtt_ms"] < 100.0, ours
    assert ours["remote_lost"] == 0 and ours["malformed"] == 0, ours
    assert stats["lost"] == 0 and stats["rtcp_dropped_foreign"] == 0, stats
    assert any(e["rtcp_stats"]["rtt"] > 0 for e in theirs), [e["rtcp_stats"] for e in theirs]
    assert after_resume >= 2, f"baresip read {after_resume} reports of ours after resume"
    media_lines = [ln for ln in gw.log_text().splitlines() if ": media PCM" in ln]
    assert len(media_lines) >= 3 and all("RTCP muxed on RTP" in ln for ln in media_lines), \
        media_lines  # the answer, and both re-INVITE answers (hold, resume) kept the mux

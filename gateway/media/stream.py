"""One call's audio as a pure object: PCM frames and datagrams in, datagrams and PCM out.

The runtime feeds it mouthpiece frames and received datagrams, asks it every 20 ms which
packets are due, and pulls earpiece frames; it never touches a socket or a clock. This is
what makes a whole call's media path testable with a list of `now` values.

With an :class:`~gateway.media.secure.SrtpPair` the stream speaks SRTP: every packet out
is protected (RTCP with SRTCP), every packet in is authenticated and replay-checked before
anything else looks at it, so a forged or replayed packet can neither play nor move the
latched remote address. Dropped packets are counted per reason in :meth:`stats`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal, get_args

from gateway.dsp import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME, g711
from gateway.dsp.plc import Concealer
from gateway.media import secure
from gateway.media.jitterbuffer import JitterBuffer
from gateway.media.quality import ReceiveStats, mos, r_factor
from gateway.media.rtcp import (
    RtcpError,
    RtcpPacket,
    RtcpSession,
    SenderInfo,
    compound,
    parse_compound,
)
from gateway.media.rtp import RtpError, RtpPacket, is_rtcp
from gateway.media.secure import DROP_REASONS, SrtpPair
from gateway.media.session import PacingSchedule, RtpSender
from gateway.media.telephone_event import DigitReceived, DigitStarted, DtmfReceiver, DtmfSender

__all__ = ["DIRECTIONS", "Direction", "MediaEvent", "MediaStream", "RemoteLatched"]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: Final[tuple[str, ...]] = get_args(Direction)
FRAME_INTERVAL: Final = FRAME_SAMPLES / SAMPLE_RATE
MAX_QUEUED_FRAMES: Final = 5  # 100 ms of mouthpiece audio waiting for send slots
LATCH_PROBATION: Final = 3  # packets in sequence a new source must send to take over


@dataclass(frozen=True)
class RemoteLatched:
    """Media now goes to where the peer's RTP really comes from (NAT), not where SDP said."""

    old: tuple[str, int]
    new: tuple[str, int]


MediaEvent = DigitReceived | DigitStarted | RemoteLatched


def _check_codec(codec: str) -> str:
    name = codec.upper()
    if name not in g711.CODECS:
        raise ValueError(f"codec {codec!r} is not supported; expected one of {g711.CODECS}")
    return name


def _check_direction(direction: str) -> Direction:
    if direction not in DIRECTIONS:
        raise ValueError(f"media direction must be one of {DIRECTIONS}, got {direction!r}")
    return direction  # type: ignore[return-value]


class MediaStream:
    """The audio of one call: G.711 over RTP, RFC 4733 DTMF, jitter buffer and statistics."""

    def __init__(
        self,
        *,
        codec: str,
        payload_type: int,
        dtmf_pt: int | None,
        remote_addr: tuple[str, int],
        ssrc: int,
        seq: int,
        timestamp: int,
        now: float,
        latch: bool = True,
        srtp: SrtpPair | None = None,
        cname: str | None = None,
        wallclock_offset: float = 0.0,
        rtcp_mux: bool = False,
        rtcp_addr: tuple[str, int] | None = None,
    ) -> None:
        self._codec = _check_codec(codec)
        self._sender = RtpSender(ssrc, payload_type, seq=seq, timestamp=timestamp)
        self._schedule = PacingSchedule(now, FRAME_INTERVAL)
        self._dtmf_pt = dtmf_pt
        self._dtmf_tx = self._make_dtmf_sender(dtmf_pt)
        self._dtmf_rx = DtmfReceiver(clock_rate=SAMPLE_RATE)
        self._jitter = JitterBuffer(frame_interval=FRAME_INTERVAL, clock_rate=SAMPLE_RATE)
        self._rx_stats = ReceiveStats(SAMPLE_RATE)
        self._plc = Concealer()
        self._remote = remote_addr
        self._latch = latch
        self._latched = False  # a first packet has fixed (or confirmed) the peer's address
        self._candidate: tuple[tuple[str, int], int, int] | None = None  # addr, seq, count
        self._direction: Direction = "sendrecv"
        self._frames: deque[tuple[bytes, str, bytes]] = deque()  # (pcm, codec, payload)
        self._marker_next = True
        self._silence_payload = g711.encode(SILENCE_FRAME, self._codec)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.dropped_malformed = 0
        self.wrong_payload_type = 0
        self.dropped_direction = 0
        self.dropped_foreign = 0
        self.rtcp_received = 0
        self.frames_dropped = 0
        self.frames_missing = 0
        self.frames_resized = 0
        self.remote_changes = 0
        self.dtmf_received = 0
        self.dtmf_inband = 0
        self.mute_audio = False
        """Send silence in place of the audio (a key's tones that went out as SIP INFO)."""
        self._dtmf_sent_before = 0
        self._srtp = srtp
        self.srtp_dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.srtcp_dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.srtp_protect_failed = 0
        self.srtp_rekeys = 0
        self.rtcp_mux = rtcp_mux
        self._rtcp_sdp = rtcp_addr  # the peer's a=rtcp (RFC 3605), if it gave one
        self._rtcp_latched: tuple[str, int] | None = None  # where its RTCP really comes from
        self._rtcp_candidate: tuple[tuple[str, int], int] | None = None  # addr, count
        self.rtcp_dropped_foreign = 0
        self.rtcp_remote_changes = 0
        self.srtcp_dropped_tag32 = 0
        self._rtcp = RtcpSession(ssrc, cname or f"{ssrc:08x}@branchline", now,
                                 wallclock_offset=wallclock_offset, clock_rate=SAMPLE_RATE)

    # ----------------------------------------------------------------- state

    @property
    def remote_addr(self) -> tuple[str, int]:
        """Where packets go: the SDP address until the peer's real source is latched."""
        return self._remote

    @property
    def rtcp_addr(self) -> tuple[str, int]:
        """Where RTCP goes: with rtcp-mux the RTP address itself; else where the peer's
        RTCP was latched from, else its SDP a=rtcp address, else the RTP port + 1 (§11)."""
        if self.rtcp_mux:
            return self._remote
        if self._rtcp_latched is not None:
            return self._rtcp_latched
        if self._rtcp_sdp is not None:
            return self._rtcp_sdp
        host, port = self._remote
        return (host, port + 1)

    @property
    def direction(self) -> Direction:
        """The negotiated direction from our side (sendonly = we send, they do not)."""
        return self._direction

    @property
    def codec(self) -> str:
        """The negotiated G.711 flavour, "PCMU" or "PCMA"."""
        return self._codec

    @property
    def ssrc(self) -> int:
        """Our SSRC, for RTCP and the call record."""
        return self._sender.ssrc

    @property
    def srtp(self) -> SrtpPair | None:
        """The SRTP contexts in use, or None for plain RTP."""
        return self._srtp

    @property
    def can_send_dtmf(self) -> bool:
        """False when the peer took no telephone-event; digits then travel in-band only."""
        return self._dtmf_tx is not None

    def _sending(self) -> bool:
        return self._direction in ("sendrecv", "sendonly")

    def _receiving(self) -> bool:
        return self._direction in ("sendrecv", "recvonly")

    def _make_dtmf_sender(self, dtmf_pt: int | None) -> DtmfSender | None:
        if dtmf_pt is None:
            return None
        return DtmfSender(
            self._sender, dtmf_pt, slot_samples=FRAME_SAMPLES, clock_rate=SAMPLE_RATE
        )

    def set_direction(self, direction: str) -> None:
        """Apply an SDP direction (hold and resume); a stream that may not send stays quiet."""
        self._direction = _check_direction(direction)
        if not self._sending():
            self._frames.clear()
            if self._dtmf_tx is not None:
                self._dtmf_tx.cancel()

    def update_remote(
        self, remote_addr: tuple[str, int], codec: str, payload_type: int, dtmf_pt: int | None,
        *, rtcp_addr: tuple[str, int] | None = None, rtcp_mux: bool = False,
    ) -> None:
        """Apply a re-INVITE's answer; SSRC and numbering carry on, latching starts afresh."""
        new_codec = _check_codec(codec)
        if new_codec != self._codec or payload_type != self._sender.payload_type:
            self._jitter.reset()  # buffered audio belongs to the old codec
        self._codec = new_codec
        self._silence_payload = g711.encode(SILENCE_FRAME, self._codec)
        self._sender.payload_type = payload_type
        if dtmf_pt != self._dtmf_pt:
            if self._dtmf_tx is not None:
                self._dtmf_sent_before += self._dtmf_tx.events_sent
            self._dtmf_pt = dtmf_pt
            self._dtmf_tx = self._make_dtmf_sender(dtmf_pt)
        self._remote = remote_addr
        self._latched = False
        self._candidate = None
        self.rtcp_mux = rtcp_mux
        self._rtcp_sdp = rtcp_addr
        self._rtcp_latched = None
        self._rtcp_candidate = None

    def set_srtp(self, srtp: SrtpPair | None) -> None:
        """Apply a re-INVITE's SDES outcome: same keys keep the running contexts.

        Replacing a context on the same keys would restart its packet index and reuse
        keystream, so only a real key change (or a switch to/from plain RTP) swaps them.
        """
        if srtp is not None and srtp.same_keys(self._srtp):
            return
        if srtp is not self._srtp:
            self.srtp_rekeys += 1
        self._srtp = srtp

    # ----------------------------------------------------------------- sending

    def push_frame(self, pcm: bytes) -> None:
        """Queue a 20 ms mouthpiece frame for the next free send slot.

        The frame is encoded here, when the bridge hands it over, so the send at the
        slot only numbers and sends it: the send pass at the start of each tick then
        costs the same few microseconds per call whatever the audio (issue 11, pacing).
        """
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"audio frame must be {FRAME_BYTES} bytes, got {len(pcm)}")
        if not self._sending():
            return
        self._frames.append((pcm, self._codec, g711.encode(pcm, self._codec)))
        while len(self._frames) > MAX_QUEUED_FRAMES:
            self._frames.popleft()  # the producer runs ahead of the clock: keep the newest
            self.frames_dropped += 1

    def send_dtmf(self, digit: str, now: float, duration_ms: int | None = 100) -> None:
        """Send a digit as RFC 4733 events; the audio for those slots is left out.

        ``duration_ms=None``: a key still held; `end_dtmf` gives the event its length.
        Without a negotiated telephone-event the digit is only counted: the caller's tones
        are then already in the audio, which is how such a peer expects them.
        """
        if self._dtmf_tx is None:
            self.dtmf_inband += 1
            return
        if self._sending():
            self._dtmf_tx.start(digit, now, duration_ms)

    def end_dtmf(self, duration_ms: int) -> bool:
        """The held key of `send_dtmf(..., None)` was released after `duration_ms`."""
        return self._dtmf_tx is not None and self._dtmf_tx.finish(duration_ms)

    def send_due(self, now: float) -> list[bytes]:
        """Datagrams for every send slot that has come due (none while we may not send)."""
        slots = self._schedule.due(now)
        skipped = self._schedule.last_skipped
        if skipped:
            # the caller stalled: let media time pass rather than send stale audio in a burst
            self._sender.skip(skipped * FRAME_SAMPLES)
            for _ in range(min(skipped, len(self._frames))):
                self._frames.popleft()
            self._marker_next = True
        out: list[bytes] = []
        for _ in range(slots):
            frame = self._frames.popleft() if self._frames else None
            if not self._sending():
                self._sender.skip(FRAME_SAMPLES)
                self._marker_next = True
                continue
            audio = True
            if self._dtmf_tx is not None:
                events, audio = self._dtmf_tx.on_slot(now)
                out.extend(events)
            if not audio:
                self._sender.skip(FRAME_SAMPLES)
                continue
            if frame is None:
                self.frames_missing += 1
                payload = self._silence_payload
            elif self.mute_audio:
                payload = self._silence_payload
            else:
                pcm, codec, payload = frame
                if codec != self._codec:  # queued before a re-INVITE changed the codec
                    payload = g711.encode(pcm, self._codec)
            out.append(self._sender.packetize(payload, FRAME_SAMPLES, marker=self._marker_next))
            self._marker_next = False
        if self._srtp is not None:
            out = self._protect_all(out)
        self.packets_sent += len(out)
        self.bytes_sent += sum(len(p) for p in out)
        return out

    def _protect_all(self, packets: list[bytes]) -> list[bytes]:
        assert self._srtp is not None
        protected: list[bytes] = []
        for packet in packets:
            try:
                protected.append(self._srtp.send.protect(packet))
            except secure.SrtpError:
                self.srtp_protect_failed += 1  # never send what we could not protect
        return protected

    def protect_rtcp(self, rtcp: bytes) -> bytes | None:
        """An RTCP packet ready for the wire: SRTCP when the call is secure.

        None when it cannot be protected (SRTCP index used up): plain RTCP must then not go
        out either.
        """
        if self._srtp is None:
            return rtcp
        try:
            return self._srtp.send.protect_rtcp(rtcp)
        except secure.SrtpError:
            self.srtp_protect_failed += 1
            return None

    def _sender_info(self, now: float) -> SenderInfo:
        # the next packet's timestamp belongs to the next slot; step back to `now`
        ahead = round((self._schedule.next_deadline() - now) * SAMPLE_RATE)
        sender = self._sender
        return SenderInfo((sender.timestamp - ahead) % (1 << 32), sender.packets_sent,
                          sender.octets_sent)

    def _rtcp_out(self, packets: list[RtcpPacket]) -> bytes | None:
        return self.protect_rtcp(compound(packets))

    def rtcp_due(self, now: float) -> bytes | None:
        """Our next compound RTCP report (SRTCP on a secure call) once it is due, else None."""
        if not self._rtcp.due(now):
            return None
        rx = self._rx_stats if self._rx_stats.ssrc is not None else None
        return self._rtcp_out(self._rtcp.report(now, self._sender_info(now), rx))

    def rtcp_bye(self, now: float, reason: str = "") -> bytes | None:
        """A final report ending in BYE, for when the call's media stops."""
        rx = self._rx_stats if self._rx_stats.ssrc is not None else None
        return self._rtcp_out(self._rtcp.goodbye(now, self._sender_info(now), rx, reason))

    def next_deadline(self) -> float:
        """When send_due() (or poll()) next has work: the next 20 ms slot at the latest."""
        deadline = self._schedule.next_deadline()
        dtmf = self._dtmf_rx.next_deadline()
        return deadline if dtmf is None else min(deadline, dtmf)

    # ----------------------------------------------------------------- receiving

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> list[MediaEvent]:
        """Take one datagram from the RTP port; returns digits and address changes."""
        events: list[MediaEvent] = list(self.poll(now))
        if is_rtcp(data):
            self._receive_rtcp(data, addr, now)
            return events
        plain = data
        if self._srtp is not None:
            try:
                plain = self._srtp.receive.unprotect(data)
            except secure.SrtpError as exc:
                self.srtp_dropped[exc.reason] += 1
                return events
        try:
            packet = RtpPacket.parse(plain)
        except RtpError:
            self.dropped_malformed += 1
            return events
        is_audio = packet.payload_type == self._sender.payload_type
        is_event = self._dtmf_pt is not None and packet.payload_type == self._dtmf_pt
        if not (is_audio or is_event):
            self.wrong_payload_type += 1
            return events
        if not self._accept_source(packet, addr, events):
            self.dropped_foreign += 1
            return events
        if not self._receiving():
            self.dropped_direction += 1
            return events
        self.packets_received += 1
        self.bytes_received += len(data)
        self._rx_stats.update(packet, now, timing=is_audio)
        if is_audio:
            self._jitter.put(packet, now)
        else:
            digits = self._dtmf_rx.feed(packet, now)
            self.dtmf_received += len(digits)
            events.extend(self._dtmf_rx.started())  # the key is down: before its end
            events.extend(digits)
        return events

    def _accept_source(
        self, packet: RtpPacket, addr: tuple[str, int], events: list[MediaEvent]
    ) -> bool:
        """Symmetric RTP: follow the peer's real source, but make a newcomer prove itself."""
        if not self._latch or addr == self._remote:
            if addr == self._remote:
                self._latched = True
                self._candidate = None
            return True
        if not self._latched:
            self._switch_remote(addr, events)
            return True
        cand = self._candidate
        if cand is not None and cand[0] == addr and packet.sequence == (cand[1] + 1) & 0xFFFF:
            count = cand[2] + 1
        else:
            count = 1
        self._candidate = (addr, packet.sequence, count)
        if count >= LATCH_PROBATION:
            self._switch_remote(addr, events)
            return True
        return False

    def _switch_remote(self, addr: tuple[str, int], events: list[MediaEvent]) -> None:
        events.append(RemoteLatched(self._remote, addr))
        self._remote = addr
        self._latched = True
        self._candidate = None
        self.remote_changes += 1
        # the peer moved (NAT): its RTCP must now come from the new address to be latched
        self._rtcp_latched = None
        self._rtcp_candidate = None

    def _receive_rtcp(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """Read the peer's (S)RTCP and latch where it comes from, as RTP latches.

        Only the peer's IP may send it: the RTP source (latched or from SDP), or its a=rtcp
        address. Latching needs a packet that authenticated (SRTCP) and parsed; once
        latched, another port must send LATCH_PROBATION such packets in a row to take over.
        """
        if self._latch and not self._rtcp_from_peer_ip(addr):
            self.rtcp_dropped_foreign += 1  # before SRTCP: a stranger moves no replay window
            return
        plain = data
        if self._srtp is not None:
            try:
                plain = self._srtp.receive.unprotect_rtcp(data)
            except secure.SrtpError as exc:
                self._count_srtcp_drop(exc.reason, data)
                return
        latched = self._rtcp_latched
        if self._latch and not self.rtcp_mux and latched is not None and addr != latched:
            cand = self._rtcp_candidate
            count = cand[1] + 1 if cand is not None and cand[0] == addr else 1
            try:
                parse_compound(plain)
            except RtcpError:
                self._rtcp.malformed += 1
                return
            if count < LATCH_PROBATION:
                self._rtcp_candidate = (addr, count)
                self.rtcp_dropped_foreign += 1
                return
        self.rtcp_received += 1
        try:
            self._rtcp.receive(plain, now)
        except RtcpError:
            return  # counted by the session as malformed; latches nothing
        if self._latch and not self.rtcp_mux and addr != latched:
            if latched is not None:
                self.rtcp_remote_changes += 1
            self._rtcp_latched = addr
        self._rtcp_candidate = None

    def _rtcp_from_peer_ip(self, addr: tuple[str, int]) -> bool:
        if addr[0] == self._remote[0]:
            return True
        return self._rtcp_sdp is not None and addr[0] == self._rtcp_sdp[0]

    def _count_srtcp_drop(self, reason: str, data: bytes) -> None:
        """Count a refused SRTCP packet; name libre's short SRTCP tag when that is why.

        On AES_CM_128_HMAC_SHA1_32 RFC 3711/4568 keep SRTCP's 80-bit tag, but baresip's
        libre sends a 32-bit one. Such a packet is still dropped: it is only counted as
        ``tag32`` when it authenticates with the peer's key under that framing.
        """
        srtp = self._srtp
        if (srtp is not None and reason in ("auth", "unencrypted", "short", "malformed")
                and srtp.suite == "AES_CM_128_HMAC_SHA1_32"):
            from gateway.media.srtcp_tag32 import authenticates_with_short_tag

            if authenticates_with_short_tag(srtp.remote_key, data):
                self.srtcp_dropped_tag32 += 1
                return
        self.srtcp_dropped[reason] += 1

    def poll(self, now: float) -> list[MediaEvent]:
        """Digits whose end packets never came; call it from the 20 ms tick."""
        digits = self._dtmf_rx.poll(now)
        self.dtmf_received += len(digits)
        return list(digits)

    def pull_frame(self, now: float) -> bytes:
        """The 20 ms earpiece frame for this slot; silence when nothing arrived in time."""
        packet = self._jitter.get_packet(now)
        if not self._receiving():
            return SILENCE_FRAME
        if packet is None:
            # a slot with no packet while playing is a loss: conceal it (fade, then comfort
            # silence); before playout starts or after the sender went quiet it is silence
            return self._plc.conceal() if self._jitter.missing else SILENCE_FRAME
        pcm = g711.decode(packet.payload, self._codec)
        if len(pcm) != FRAME_BYTES:
            # the peer packetises at another ptime; keep the frame size the rest of us expect
            self.frames_resized += 1
            pcm = pcm[:FRAME_BYTES].ljust(FRAME_BYTES, b"\x00")
        return self._plc.good(pcm)

    # ----------------------------------------------------------------- figures

    def rtcp_stats(self) -> dict[str, float | int | None]:
        """RTCP sent and received, our loss and jitter, the peer's view of ours, and RTT."""
        rx = self._rx_stats if self._rx_stats.ssrc is not None else None
        return self._rtcp.stats(rx)

    def quality(self) -> dict[str, float]:
        """E-model R and MOS (G.107, G.711 with concealment) from what this call measured.

        One-way delay: half the RTCP round trip (when the peer's reports gave one), plus
        packetisation (one frame) and the mean wait in our jitter buffer. Loss: packets
        RTCP counts as lost plus those that came too late to play.
        """
        rx = self._rx_stats
        jb = self._jitter
        rtt = self._rtcp.remote.rtt_ms
        delay_ms = (rtt / 2 if rtt is not None else 0.0) + 1000 * (
            FRAME_INTERVAL + jb.delay_mean)
        expected = rx.expected
        loss_pct = 100 * min(1.0, (rx.lost + jb.late) / expected) if expected else 0.0
        r = r_factor(delay_ms, loss_pct, plc=True)
        return {"r_factor": r, "mos": mos(r), "one_way_delay_ms": delay_ms,
                "effective_loss_pct": loss_pct}

    def stats(self) -> dict[str, float | int]:
        """Counters and quality figures for the call record, `branchline status` and metrics."""
        rx = self._rx_stats
        jb = self._jitter
        q = self.quality()
        return {
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "expected": rx.expected,
            "lost": rx.lost,
            "loss_fraction": rx.loss_fraction,
            "duplicates": rx.duplicates,
            "late": jb.late,
            "jitter_ms": rx.jitter_ms,
            "r_factor": q["r_factor"],
            "mos": q["mos"],
            "one_way_delay_ms": q["one_way_delay_ms"],
            "effective_loss_pct": q["effective_loss_pct"],
            "playout_delay_ms": 1000 * jb.target_delay,
            "jb_delay_mean_ms": 1000 * jb.delay_mean,
            "jb_delay_current_ms": 1000 * jb.delay_current,
            "concealed_frames": jb.concealed,
            "concealed_pct": 100 * jb.concealed_fraction,
            "dropped_malformed": self.dropped_malformed,
            "wrong_payload_type": self.wrong_payload_type,
            "dropped_direction": self.dropped_direction,
            "dropped_foreign": self.dropped_foreign,
            "rtcp_received": self.rtcp_received,
            "rtcp_dropped_foreign": self.rtcp_dropped_foreign,
            "rtcp_remote_changes": self.rtcp_remote_changes,
            "rtcp_sent": self._rtcp.sent,
            "frames_missing": self.frames_missing,
            "frames_dropped": self.frames_dropped,
            "skipped_slots": self._schedule.skipped,
            "dtmf_sent": self._dtmf_sent_before
            + (0 if self._dtmf_tx is None else self._dtmf_tx.events_sent),
            "dtmf_received": self.dtmf_received,
            "dtmf_inband": self.dtmf_inband,
            "remote_changes": self.remote_changes,
            "srtp": int(self._srtp is not None),
            "srtp_protect_failed": self.srtp_protect_failed,
            "srtp_rekeys": self.srtp_rekeys,
            **{f"srtp_dropped_{k}": v for k, v in self.srtp_dropped.items()},
            **{f"srtcp_dropped_{k}": v for k, v in self.srtcp_dropped.items()},
            "srtcp_dropped_tag32": self.srtcp_dropped_tag32,
        }

"""Loopback UDP capture with kernel timestamps, RTP stream grouping and pacing statistics.

The capture is pure Python on an AF_PACKET socket bound to "lo" (needs root or
CAP_NET_RAW). Timestamps come from the kernel (SO_TIMESTAMPNS, CLOCK_REALTIME) so the
figures describe when packets left the sender, not when this process got round to reading
them.

Every datagram crosses "lo" twice as far as a packet socket is concerned: once leaving
(sll_pkttype PACKET_OUTGOING, stamped in dev_queue_xmit) and once arriving (PACKET_HOST,
stamped a few microseconds later in netif_rx). Both copies were seen on this machine for
every UDP datagram. We keep only PACKET_OUTGOING: it is the moment closest to the sender's
own pacing decision, and it makes every datagram count once.

The statistics (`pacing_stats`) are a pure function of (arrival time, sequence number,
RTP timestamp) triples, so they are unit-tested without sockets.
"""

from __future__ import annotations

import collections
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from gateway.media.rtp import RtpError, RtpPacket, is_rtcp, seq_distance, ts_distance

__all__ = [
    "Arrival",
    "LoopbackCapture",
    "PacingStats",
    "PortSpan",
    "RtpStream",
    "StreamKey",
    "UdpDatagram",
    "group_rtp_streams",
    "pacing_stats",
    "parse_udp_frame",
    "sdp_audio_ports",
]

ETH_P_ALL: Final = 0x0003
ETH_P_IP: Final = 0x0800
ETH_HEADER: Final = 14
SO_TIMESTAMPNS: Final = 35  # <asm-generic/socket.h>; the socket module does not export it
SOL_PACKET: Final = 263
PACKET_STATISTICS: Final = 6
PACKET_HOST: Final = 0
PACKET_OUTGOING: Final = 4
DEFAULT_MAX_PACKETS: Final = 200_000

PortSpan = tuple[int, int]
"""An inclusive UDP port range (first, last)."""

Arrival = tuple[float, int, int]
"""(arrival time in seconds, RTP sequence number, RTP timestamp) of one packet."""

StreamKey = tuple[str, int, int]
"""(source address, source port, SSRC): what identifies one RTP stream on the wire."""

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TIMESPEC = struct.Struct("@qq")
_TPACKET_STATS = struct.Struct("@II")
_M_AUDIO = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


@dataclass(frozen=True)
class UdpDatagram:
    """One captured UDP datagram with the kernel's timestamp, for offline analysis."""

    time: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def parse_udp_frame(frame: bytes, at: float) -> UdpDatagram | None:
    """Decode Ethernet+IPv4+UDP as "lo" delivers it; None for anything else.

    Fragments and truncated frames are ignored rather than guessed at: RTP on loopback is
    never fragmented, and a half datagram would only add noise to the figures.
    """
    if len(frame) < ETH_HEADER + _IPV4.size + _UDP.size:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_IP:
        return None
    ver_ihl, _tos, total_len, _ident, frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(
        frame, ETH_HEADER
    )
    if ver_ihl >> 4 != 4 or proto != socket.IPPROTO_UDP:
        return None
    if frag & 0x3FFF:  # more-fragments flag or a non-zero offset
        return None
    ihl = (ver_ihl & 0x0F) * 4
    udp_at = ETH_HEADER + ihl
    if ihl < 20 or len(frame) < udp_at + _UDP.size or total_len < ihl + _UDP.size:
        return None
    sport, dport, udp_len, _ucsum = _UDP.unpack_from(frame, udp_at)
    end = udp_at + udp_len
    if udp_len < _UDP.size or end > len(frame):
        return None
    return UdpDatagram(
        time=at,
        src=socket.inet_ntoa(src),
        sport=sport,
        dst=socket.inet_ntoa(dst),
        dport=dport,
        payload=bytes(frame[udp_at + _UDP.size : end]),
    )


def _in_spans(port: int, spans: Sequence[PortSpan]) -> bool:
    return any(first <= port <= last for first, last in spans)


class LoopbackCapture:
    """Capture UDP on "lo" in a background thread, keeping datagrams to or from `ports`.

    Datagram times are kernel timestamps in seconds since `start()` (`epoch_ns`): relative
    times keep nanosecond resolution, which epoch seconds in a float (0.24 us steps) do not.

    Memory is bounded: after `max_packets` datagrams further ones are counted in
    `overflow` and discarded. `kernel_drops` tells whether the socket buffer ever
    overflowed, which would make the figures incomplete.
    """

    def __init__(
        self,
        ports: Sequence[PortSpan],
        *,
        interface: str = "lo",
        max_packets: int = DEFAULT_MAX_PACKETS,
        rcvbuf: int = 8 << 20,
    ) -> None:
        for first, last in ports:
            if not 0 <= first <= last <= 65535:
                raise ValueError(f"port span {first}-{last}: expected 0 <= first <= last <= 65535")
        if max_packets < 1:
            raise ValueError(f"max_packets must be positive, got {max_packets}")
        self.ports = list(ports)
        self.interface = interface
        self.max_packets = max_packets
        self.overflow = 0
        self.kernel_drops = 0
        self.seen_pkttypes: collections.Counter[int] = collections.Counter()
        self.epoch_ns = 0
        """CLOCK_REALTIME at start(); datagram times are seconds since then."""
        self._rcvbuf = rcvbuf
        self._datagrams: list[UdpDatagram] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Open the packet socket now (so permission errors surface here) and start reading."""
        if self._thread is not None:
            raise RuntimeError("capture already started")
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise PermissionError(
                "packet capture needs root or CAP_NET_RAW (AF_PACKET socket refused)"
            ) from exc
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((self.interface, 0))
        sock.settimeout(0.1)  # how often the reader checks the stop event
        self._sock = sock
        self.epoch_ns = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="loopback-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader, read the kernel's drop counter and close the socket; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
                _received, dropped = _TPACKET_STATS.unpack(raw)
                self.kernel_drops += dropped
            except OSError:
                pass
            sock.close()
        if self._error is not None:
            raise RuntimeError(f"capture on {self.interface} failed: {self._error}")

    def __enter__(self) -> LoopbackCapture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def datagrams(self) -> list[UdpDatagram]:
        """A snapshot of the datagrams kept so far, in capture order."""
        with self._lock:
            return list(self._datagrams)

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        anc_size = socket.CMSG_SPACE(_TIMESPEC.size)
        try:
            while True:
                if self._stop.is_set():
                    # Drain what is already queued, then end: on "lo" a datagram is queued
                    # here before the sender's sendto() returns, so stop() misses nothing.
                    sock.setblocking(False)
                try:
                    frame, ancdata, _flags, addr = sock.recvmsg(65535, anc_size)
                except TimeoutError:
                    continue
                except BlockingIOError:
                    break
                pkttype = addr[2]
                self.seen_pkttypes[pkttype] += 1
                if pkttype != PACKET_OUTGOING:
                    continue
                stamp = _kernel_time_ns(ancdata)
                if stamp is None:
                    continue
                dgram = parse_udp_frame(frame, (stamp - self.epoch_ns) * 1e-9)
                if dgram is None:
                    continue
                if not (_in_spans(dgram.sport, self.ports) or _in_spans(dgram.dport, self.ports)):
                    continue
                with self._lock:
                    if len(self._datagrams) >= self.max_packets:
                        self.overflow += 1
                    else:
                        self._datagrams.append(dgram)
        except OSError as exc:  # reported by stop()
            self._error = exc


def _kernel_time_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


# --------------------------------------------------------------------------- RTP streams


@dataclass
class RtpStream:
    """All RTP packets of one (source, SSRC), in capture order, with where they went."""

    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    packets: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(time, seq, timestamp, payload type) per packet."""

    @property
    def key(self) -> StreamKey:
        """The grouping key, also handy as a label."""
        return (self.src, self.sport, self.ssrc)

    @property
    def main_payload_type(self) -> int:
        """The most frequent payload type: the audio codec rather than telephone-events."""
        counts = collections.Counter(p[3] for p in self.packets)
        return counts.most_common(1)[0][0]

    def arrivals(self, payload_type: int | None = None) -> list[Arrival]:
        """(time, seq, ts) of the packets of one payload type (default: the audio codec).

        Telephone-event packets repeat one timestamp for a whole digit, so mixing them in
        would show up as pacing errors that are not there.
        """
        if not self.packets:
            return []
        pt = self.main_payload_type if payload_type is None else payload_type
        return [(t, s, ts) for t, s, ts, p in self.packets if p == pt]


def group_rtp_streams(datagrams: Iterable[UdpDatagram]) -> dict[StreamKey, RtpStream]:
    """Split captured datagrams into RTP streams by (source, source port, SSRC).

    RTCP, SIP and anything else that does not parse as RTP is skipped.
    """
    streams: dict[StreamKey, RtpStream] = {}
    for d in datagrams:
        if is_rtcp(d.payload):
            continue
        try:
            pkt = RtpPacket.parse(d.payload)
        except RtpError:
            continue
        key = (d.src, d.sport, pkt.ssrc)
        stream = streams.get(key)
        if stream is None:
            stream = streams[key] = RtpStream(d.src, d.sport, d.dst, d.dport, pkt.ssrc)
        stream.packets.append((d.time, pkt.sequence, pkt.timestamp, pkt.payload_type))
    return streams


def sdp_audio_ports(datagrams: Iterable[UdpDatagram], sip_port: int) -> set[int]:
    """Audio ports a SIP agent advertised in SDP it sent from `sip_port`.

    Tells two peers apart when both take RTP ports from the same range.
    """
    ports: set[int] = set()
    for d in datagrams:
        if d.sport == sip_port:
            ports.update(int(m) for m in _M_AUDIO.findall(d.payload))
    return ports


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class PacingStats:
    """How evenly one RTP stream was sent, and how fast its clock ran against ours.

    `back_to_back` counts consecutive packets sent less than a quarter of their media
    interval apart: the signature of a sender that skips a slot and then sends two.
    `p50_ms`/`p99_ms`/`max_ms` are percentiles of the interval deviation
    |(t_i - t_{i-1}) - (ts_i - ts_{i-1}) / rate| over consecutive packets. `drift_ppm` is
    the least-squares slope of arrival time against RTP time, minus one, in parts per
    million: positive means packets arrive later and later than their timestamps promise,
    i.e. the sender's media clock runs slow against the capturing host's clock (or the
    host's clock runs fast against the sender's); negative is the reverse.
    """

    packets: int
    duration_s: float
    intervals: int
    gaps: int
    back_to_back: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    drift_ppm: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for the JSON line."""
        return {
            "packets": self.packets,
            "duration_s": round(self.duration_s, 3),
            "intervals": self.intervals,
            "gaps": self.gaps,
            "back_to_back": self.back_to_back,
            "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "drift_ppm": round(self.drift_ppm, 2),
        }


def _extend(values: Sequence[int], seq: bool) -> list[int]:
    """Extend 16-bit sequence numbers or 32-bit timestamps across their wraps."""
    out: list[int] = []
    for v in values:
        if not out:
            out.append(v)
            continue
        prev = out[-1]
        step = seq_distance(v, prev) if seq else ts_distance(v, prev)
        out.append(prev + step)
    return out


def pacing_stats(arrivals: Sequence[Arrival], clock_rate: int = 8000) -> PacingStats:
    """Interval deviation percentiles and clock drift of one stream, from its packets.

    Only pairs of packets whose sequence numbers are consecutive count as intervals;
    losses and reordering are counted in `gaps` and skipped. The drift fit uses every
    packet, on timestamps extended across the 32-bit wrap.
    """
    if clock_rate <= 0:
        raise ValueError(f"clock_rate must be positive, got {clock_rate}")
    if len(arrivals) < 2:
        raise ValueError(f"need at least 2 packets to measure pacing, got {len(arrivals)}")
    times = np.array([a[0] for a in arrivals], dtype=np.float64)
    seqs = _extend([a[1] for a in arrivals], seq=True)
    tss = _extend([a[2] for a in arrivals], seq=False)
    t0 = times[0]
    rel_t = times - t0  # fit and differences on small numbers keep float64 precision
    rtp_t = (np.array(tss, dtype=np.int64) - tss[0]).astype(np.float64) / clock_rate

    consecutive = np.diff(np.array(seqs, dtype=np.int64)) == 1
    send_gap = np.diff(rel_t)[consecutive]
    media_gap = np.diff(rtp_t)[consecutive]
    deviation = np.abs(send_gap - media_gap)
    back_to_back = int(np.count_nonzero(send_gap < 0.25 * media_gap))
    gaps = int(len(consecutive) - int(consecutive.sum()))
    if len(deviation):
        p50, p99 = np.percentile(deviation, [50, 99])
        peak = float(deviation.max())
    else:
        p50 = p99 = peak = float("nan")

    x = rtp_t - rtp_t.mean()
    denom = float(np.dot(x, x))
    if denom > 0:
        slope = float(np.dot(x, rel_t - rel_t.mean()) / denom)
        drift = (slope - 1.0) * 1e6
    else:
        drift = float("nan")
    return PacingStats(
        packets=len(arrivals),
        duration_s=float(rel_t[-1]),
        intervals=int(len(deviation)),
        gaps=gaps,
        back_to_back=back_to_back,
        p50_ms=float(p50) * 1e3,
        p99_ms=float(p99) * 1e3,
        max_ms=peak * 1e3,
        drift_ppm=drift,
    )

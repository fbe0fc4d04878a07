"""SDP (RFC 4566) and the offer/answer model (RFC 3264), as far as an audio gateway needs.

Pure code: parse bytes into a :class:`SessionDescription`, print it back, and negotiate one
audio stream into :class:`MediaParams` for the RTP layer. Lines we do not interpret are kept
in order so that, for example, ``a=crypto`` survives a parse/print cycle.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gateway.sip.errors import SdpError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

STATIC_PAYLOADS: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
}
"""RFC 3551 static payload types we can use without an rtpmap line."""

_CODEC_PT = {name: pt for pt, (name, _, _) in STATIC_PAYLOADS.items()}
_SUPPORTED_CODECS = ("PCMU", "PCMA")


@dataclass
class Origin:
    """The o= line; session id and version let a peer spot a changed re-offer."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class MediaDescription:
    """One m= section; ``direction`` is effective (session-level default already applied)."""

    media: str
    port: int
    proto: str
    formats: list[int] = field(default_factory=list)
    rtpmap: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    ptime: int | None = None
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    other_formats: list[str] = field(default_factory=list)
    port_count: int | None = None

    def codec(self, pt: int) -> tuple[str, int, int] | None:
        """(name, rate, channels) for a payload type, using the static table without rtpmap."""
        if pt in self.rtpmap:
            return self.rtpmap[pt]
        return STATIC_PAYLOADS.get(pt)

    def find_codec(self, name: str, rate: int = 8000) -> int | None:
        """First payload type in format order carrying codec ``name`` at ``rate``."""
        for pt in self.formats:
            codec = self.codec(pt)
            if codec is not None and codec[0].upper() == name.upper() and codec[1] == rate:
                return pt
        return None


@dataclass
class SessionDescription:
    """A whole SDP body; ``connection`` is the session-level c= address, if any."""

    origin: Origin
    session_name: str = "-"
    connection: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    direction: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        """Parse an SDP body, raising :class:`SdpError` (-> 488/400) if it is malformed."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
        lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
        if not lines or lines[0].strip() != "v=0":
            raise SdpError("SDP must start with v=0")
        origin: Origin | None = None
        sdp = cls(Origin("-", 0, 0, "IN", "IP4", "0.0.0.0"), timing=[])
        current: MediaDescription | None = None
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise SdpError(f"bad SDP line {line[:40]!r}")
            kind, value = line[0], line[2:].strip()
            if kind == "m":
                current = _parse_m(value)
                sdp.media.append(current)
            elif kind == "c":
                address = _parse_c(value)
                if current is None:
                    sdp.connection = address
                else:
                    current.connection = address
            elif kind == "a":
                name, sep, attr_value = value.partition(":")
                _apply_attribute(sdp, current, name, attr_value if sep else None)
            elif current is not None:
                current.other_lines.append((kind, value))
            elif kind == "o":
                origin = _parse_o(value)
            elif kind == "s":
                sdp.session_name = value
            elif kind == "t":
                sdp.timing.append(value)
            else:
                sdp.other_lines.append((kind, value))
        if origin is None:
            raise SdpError("SDP has no o= line")
        sdp.origin = origin
        if not sdp.timing:
            sdp.timing = ["0 0"]  # t= is mandatory; a missing one means an unbounded session
        for media in sdp.media:
            if media.direction == "":
                media.direction = sdp.direction or "sendrecv"
            if media.connection is None and sdp.connection is None and media.port != 0:
                raise SdpError(f"no c= line for m={media.media}")
        return sdp

    def media_address(self, media: MediaDescription) -> str | None:
        """Where to send a stream: the media-level c= address, else the session-level one."""
        return media.connection if media.connection is not None else self.connection

    def __bytes__(self) -> bytes:
        out = ["v=0", f"o={self.origin}", f"s={self.session_name or '-'}"]
        out += [f"{k}={v}" for k, v in self.other_lines if k in "iuep"]
        if self.connection is not None:
            out.append(f"c={_format_c(self.connection)}")
        out += [f"{k}={v}" for k, v in self.other_lines if k == "b"]
        out += [f"t={t}" for t in self.timing or ["0 0"]]
        out += [f"{k}={v}" for k, v in self.other_lines if k not in "iuepb"]
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out += [_format_a(n, v) for n, v in self.attributes]
        for m in self.media:
            port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
            fmts = [str(pt) for pt in m.formats] + m.other_formats
            out.append(f"m={m.media} {port} {m.proto} {' '.join(fmts)}".rstrip())
            out += [f"{k}={v}" for k, v in m.other_lines if k == "i"]
            if m.connection is not None:
                out.append(f"c={_format_c(m.connection)}")
            out += [f"{k}={v}" for k, v in m.other_lines if k != "i"]
            extra = [pt for pt in (*m.rtpmap, *m.fmtp) if pt not in m.formats]
            for pt in dict.fromkeys([*m.formats, *extra]):
                if pt in m.rtpmap:
                    name, rate, channels = m.rtpmap[pt]
                    suffix = f"/{channels}" if channels != 1 else ""
                    out.append(f"a=rtpmap:{pt} {name}/{rate}{suffix}")
                if pt in m.fmtp:
                    out.append(f"a=fmtp:{pt} {m.fmtp[pt]}")
            if m.ptime is not None:
                out.append(f"a=ptime:{m.ptime}")
            out.append(f"a={m.direction}")
            out += [_format_a(n, v) for n, v in m.attributes]
        return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _format_a(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _format_c(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"


def _int(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise SdpError(f"bad {what} {text[:20]!r}")
    return int(text)


def _parse_o(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"bad o= line {value[:60]!r}")
    return Origin(
        parts[0],
        _int(parts[1], "session id"),
        _int(parts[2], "session version"),
        parts[3],
        parts[4],
        parts[5],
    )


def _parse_c(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value[:60]!r}")
    # Multicast addresses may carry /ttl/count; only the address matters for us.
    return parts[2].split("/")[0]


def _parse_m(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line {value[:60]!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _int(port_text, "media port")
    if port > 65535:
        raise SdpError(f"media port {port} out of range")
    media = MediaDescription(parts[0], port, parts[2], direction="")
    if count_text:
        media.port_count = _int(count_text, "port count")
    for fmt in parts[3:]:
        if "RTP" in parts[2].upper():
            pt = _int(fmt, "payload type")
            if pt > 127:
                raise SdpError(f"payload type {pt} out of range")
            media.formats.append(pt)
        else:
            media.other_formats.append(fmt)
    return media


def _apply_attribute(
    sdp: SessionDescription, media: MediaDescription | None, name: str, value: str | None
) -> None:
    if name in DIRECTIONS and value is None:
        if media is None:
            sdp.direction = name
        else:
            media.direction = name
        return
    if media is None:
        sdp.attributes.append((name, value))
        return
    if name == "rtpmap" and value is not None:
        pt_text, _, encoding = value.partition(" ")
        pieces = encoding.strip().split("/")
        if len(pieces) < 2 or not pieces[0]:
            raise SdpError(f"bad rtpmap {value[:60]!r}")
        channels = _int(pieces[2], "channel count") if len(pieces) > 2 else 1
        media.rtpmap[_int(pt_text, "payload type")] = (
            pieces[0],
            _int(pieces[1], "clock rate"),
            channels,
        )
    elif name == "fmtp" and value is not None:
        pt_text, _, params = value.partition(" ")
        media.fmtp[_int(pt_text, "payload type")] = params.strip()
    elif name == "ptime" and value is not None:
        try:
            media.ptime = max(1, round(float(value)))
        except ValueError:
            raise SdpError(f"bad ptime {value[:20]!r}") from None
    else:
        media.attributes.append((name, value))


@dataclass(frozen=True)
class MediaParams:
    """What the RTP layer needs after negotiation; ``direction`` is what WE may do."""

    remote_addr: tuple[str, int]
    codec: str
    payload_type: int
    telephone_event_pt: int | None
    ptime: int
    direction: str
    on_hold: bool
    rtcp_addr: tuple[str, int] | None = None
    """Where the peer wants RTCP (RFC 3605 a=rtcp); None: the RTP port + 1 (RFC 3550 §11)."""
    rtcp_mux: bool = False
    """RTCP shares the RTP port (RFC 5761): both sides agreed to a=rtcp-mux."""


def rtcp_address(sdp: SessionDescription, media: MediaDescription) -> tuple[str, int] | None:
    """The peer's RTCP address from an RFC 3605 ``a=rtcp:port [IN IP4|IP6 address]`` line.

    Without an address the stream's own c= address applies. None when there is no such
    line: RTCP then goes to the RTP port + 1. A malformed line raises :class:`SdpError`.
    """
    value = next((v for n, v in media.attributes if n == "rtcp"), None)
    if value is None:
        return None
    parts = value.split()
    port = _int(parts[0], "a=rtcp port") if parts else 0
    if not 1 <= port <= 65535:
        raise SdpError(f"bad a=rtcp port in {value[:60]!r}: expected 1..65535")
    if len(parts) == 1:
        address = sdp.media_address(media)
        return None if address is None else (address, port)
    if len(parts) != 4 or parts[1] != "IN" or parts[2] not in ("IP4", "IP6"):
        raise SdpError(f"bad a=rtcp {value[:60]!r}: expected 'port [IN IP4|IP6 address]'")
    return (parts[3], port)


def has_rtcp_mux(media: MediaDescription) -> bool:
    """True when the stream carries ``a=rtcp-mux`` (RFC 5761 section 5.1.1)."""
    return any(name == "rtcp-mux" for name, _ in media.attributes)


def _is_null_address(address: str | None) -> bool:
    if address is None:
        return True
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False  # a hostname: not the RFC 2543 hold marker


def _direction(send: bool, recv: bool) -> str:
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    return "recvonly" if recv else "inactive"


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise SdpError(f"unknown direction {direction!r}")


def _check_codecs(codecs: list[str]) -> list[str]:
    names = [c.upper() for c in codecs]
    for name in names:
        if name not in _SUPPORTED_CODECS:
            raise SdpError(f"codec {name} not supported (have {', '.join(_SUPPORTED_CODECS)})")
    if not names:
        raise SdpError("no codecs configured")
    return names


def _origin(address: str, session_id: int, session_version: int) -> Origin:
    return Origin("-", session_id, session_version, "IN", "IP6" if ":" in address else "IP4", address)


def build_offer(
    *,
    address: str,
    port: int,
    codecs: list[str],
    dtmf_pt: int | None = 101,
    ptime: int = 20,
    direction: str = "sendrecv",
    session_id: int,
    session_version: int,
) -> SessionDescription:
    """An audio offer in our codec preference order, with RFC 4733 events when ``dtmf_pt``."""
    _check_direction(direction)
    names = _check_codecs(codecs)
    media = MediaDescription("audio", port, "RTP/AVP", direction=direction, ptime=ptime)
    for name in names:
        pt = _CODEC_PT[name]
        media.formats.append(pt)
        media.rtpmap[pt] = STATIC_PAYLOADS[pt]
    if dtmf_pt is not None:
        media.formats.append(dtmf_pt)
        media.rtpmap[dtmf_pt] = ("telephone-event", 8000, 1)
        media.fmtp[dtmf_pt] = "0-16"
    return SessionDescription(
        _origin(address, session_id, session_version), "-", address, [media]
    )


def _pick_audio(sdp: SessionDescription) -> int:
    for index, media in enumerate(sdp.media):
        if media.media == "audio" and media.port != 0 and "RTP" in media.proto.upper():
            return index
    raise SdpError("no active audio stream")


def answer_offer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    codecs: list[str],
    ptime: int = 20,
    session_id: int,
    session_version: int,
    direction: str = "sendrecv",
) -> tuple[SessionDescription, MediaParams]:
    """Answer the first usable audio stream; raise :class:`SdpError` (send 488) if none.

    The codec is the first in the offer's order that we support. Every other m= line is
    refused with port 0, as RFC 3264 section 6 requires the same number of streams.
    """
    _check_direction(direction)
    ours = _check_codecs(codecs)
    index = _pick_audio(offer)
    offered = offer.media[index]
    chosen: tuple[int, str] | None = None
    for pt in offered.formats:
        codec = offered.codec(pt)
        if codec is not None and codec[0].upper() in ours and codec[1] == 8000 and codec[2] == 1:
            chosen = (pt, codec[0].upper())
            break
    if chosen is None:
        raise SdpError("no common audio codec")
    pt, codec_name = chosen
    te_pt = offered.find_codec("telephone-event", 8000)

    remote_address = offer.media_address(offered)
    null_addr = _is_null_address(remote_address)
    they_send = offered.direction in ("sendrecv", "sendonly")
    they_recv = offered.direction in ("sendrecv", "recvonly") and not null_addr
    we_send = direction in ("sendrecv", "sendonly") and they_recv
    we_recv = direction in ("sendrecv", "recvonly") and they_send
    our_direction = _direction(we_send, we_recv)
    # RFC 5761: we take RTCP on the RTP port whenever the offerer asks (our RTCP port stays
    # bound, so either way works); a=rtcp then names no other port.
    mux = has_rtcp_mux(offered)
    rtcp_addr = None if mux else rtcp_address(offer, offered)

    answer_media: list[MediaDescription] = []
    for i, m in enumerate(offer.media):
        if i != index:
            rejected = MediaDescription(m.media, 0, m.proto, direction="inactive")
            rejected.formats = m.formats[:1]
            rejected.other_formats = m.other_formats[:1] if not m.formats else []
            answer_media.append(rejected)
            continue
        am = MediaDescription("audio", port, offered.proto, direction=our_direction, ptime=ptime)
        am.formats.append(pt)
        am.rtpmap[pt] = (codec_name, 8000, 1)
        if te_pt is not None:
            am.formats.append(te_pt)
            am.rtpmap[te_pt] = ("telephone-event", 8000, 1)
            am.fmtp[te_pt] = offered.fmtp.get(te_pt, "0-15")
        if mux:
            am.attributes.append(("rtcp-mux", None))
        answer_media.append(am)
    answer = SessionDescription(
        _origin(address, session_id, session_version), "-", address, answer_media
    )
    params = MediaParams(
        remote_addr=(remote_address or "0.0.0.0", offered.port),
        codec=codec_name,
        payload_type=pt,
        telephone_event_pt=te_pt,
        ptime=offered.ptime or ptime,
        direction=our_direction,
        on_hold=null_addr or offered.direction in ("sendonly", "inactive"),
        rtcp_addr=rtcp_addr,
        rtcp_mux=mux,
    )
    return answer, params


def params_from_answer(offer: SessionDescription, answer: SessionDescription) -> MediaParams:
    """Media settings from the far end's answer to our offer (RFC 3264 section 7).

    Raises :class:`SdpError` if the answer refuses audio or picks a codec we did not offer.
    """
    index = _pick_audio(offer)
    if len(answer.media) != len(offer.media):
        raise SdpError("answer has a different number of m= lines than the offer")
    ours = offer.media[index]
    theirs = answer.media[index]
    if theirs.media != "audio" or theirs.port == 0:
        raise SdpError("audio stream rejected in answer")
    offered_names = {c[0].upper() for pt in ours.formats if (c := ours.codec(pt)) is not None}
    chosen: tuple[int, str] | None = None
    for pt in theirs.formats:
        codec = theirs.codec(pt)
        if codec is None or codec[0].lower() == "telephone-event":
            continue
        name = codec[0].upper()
        if name not in offered_names or name not in _SUPPORTED_CODECS or codec[1] != 8000:
            raise SdpError(f"answer chose codec {codec[0]}/{codec[1]} that was not offered")
        chosen = (pt, name)
        break
    if chosen is None:
        raise SdpError("answer has no audio codec")
    te_pt = theirs.find_codec("telephone-event", 8000)
    if te_pt is not None and ours.find_codec("telephone-event", 8000) is None:
        te_pt = None
    remote_address = answer.media_address(theirs)
    null_addr = _is_null_address(remote_address)
    # an answer may take rtcp-mux only if we offered it (RFC 5761 section 5.1.1)
    mux = has_rtcp_mux(ours) and has_rtcp_mux(theirs)
    rtcp_addr = None if mux else rtcp_address(answer, theirs)
    we_send = ours.direction in ("sendrecv", "sendonly") and (
        theirs.direction in ("sendrecv", "recvonly") and not null_addr
    )
    we_recv = ours.direction in ("sendrecv", "recvonly") and theirs.direction in (
        "sendrecv",
        "sendonly",
    )
    return MediaParams(
        remote_addr=(remote_address or "0.0.0.0", theirs.port),
        codec=chosen[1],
        payload_type=chosen[0],
        telephone_event_pt=te_pt,
        ptime=theirs.ptime or ours.ptime or 20,
        direction=_direction(we_send, we_recv),
        on_hold=null_addr or theirs.direction in ("sendonly", "inactive"),
        rtcp_addr=rtcp_addr,
        rtcp_mux=mux,
    )

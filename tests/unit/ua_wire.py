"""Shared helpers for the user-agent unit tests: a fake network over `messages_out()`."""

from __future__ import annotations

from gateway.sip.events import UaEvent
from gateway.sip.headers import generate_branch
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.target import Outgoing
from gateway.sip.ua import UserAgent

INSTANCE = "urn:uuid:00000000-0000-4000-8000-000000000001"
OFFER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\n")
ANSWER = OFFER.replace(b"4000", b"4002")
HOLD = OFFER.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0\r\na=sendonly\r\n")


def make_ua(addr: tuple[str, int], **kw: object) -> UserAgent:
    return UserAgent(local_host=addr[0], local_port=addr[1], instance_id=INSTANCE,
                     **kw)  # type: ignore[arg-type]


def drain(ua: UserAgent) -> list[tuple[Outgoing, Request | Response]]:
    return [(o, parse_message(o.data)) for o in ua.messages_out()]


def events(ua: UserAgent) -> list[UaEvent]:
    out: list[UaEvent] = []
    while (ev := ua.next_event()) is not None:
        out.append(ev)
    return out


def requests(out: list[tuple[Outgoing, Request | Response]], method: str
             ) -> list[tuple[Outgoing, Request]]:
    return [(o, m) for o, m in out if isinstance(m, Request) and m.method == method]


def responses(out: list[tuple[Outgoing, Request | Response]]) -> list[Response]:
    return [m for _, m in out if isinstance(m, Response)]


def reply(req: Request, status: int, *, to_tag: str | None = "peer1",
          extra: str = "", body: bytes = b"") -> bytes:
    """Raw response to `req` as a simple peer would send it."""
    to = req.headers.get("To") or ""
    if to_tag and status > 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    head = [f"SIP/2.0 {status} X"]
    head += [f"Via: {v}" for v in req.headers.get_all("Via")]
    head += [f"From: {req.headers.get('From')}", f"To: {to}", f"Call-ID: {req.call_id}",
             f"CSeq: {req.cseq.number} {req.cseq.method}"]
    if extra:
        head += extra.strip().split("\n")
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def raw_request(method: str, *, call_id: str = "c1@peer", cseq: int = 1,
                from_tag: str = "ft1", to_tag: str | None = None, branch: str | None = None,
                uri: str = "sip:100@127.0.0.1:5060", src: tuple[str, int] = ("127.0.0.1", 5070),
                extra: str = "", body: bytes = b"", content_type: str | None = None,
                transport: str = "UDP") -> bytes:
    """A request from a raw peer at `src`."""
    to = "<sip:100@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    head = [f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{transport} {src[0]}:{src[1]};branch={branch or generate_branch()}",
            "Max-Forwards: 70", f"From: <sip:200@127.0.0.1>;tag={from_tag}", f"To: {to}",
            f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
            f"Contact: <sip:200@{src[0]}:{src[1]}>"]
    if extra:
        head += extra.strip().split("\n")
    if body:
        head.append(f"Content-Type: {content_type or 'application/sdp'}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body

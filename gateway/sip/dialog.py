"""SIP dialog state (RFC 3261 section 12), sans-IO.

A dialog is what lets a BYE or re-INVITE reach the right peer, through the right proxies,
with a CSeq the peer accepts. It is created from a UAC's 1xx-with-tag or 2xx, or from a
UAS's INVITE, and it builds the in-dialog requests (BYE, re-INVITE, INFO, the ACK for a
2xx). Routing is loose (`;lr`) when the first route says so and strict otherwise (12.2.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError
from gateway.sip.headers import NameAddr
from gateway.sip.message import Headers, Request, Response
from gateway.sip.uri import SipUri

DialogId = tuple[str, str, str]


def _without_tag(value: str) -> str:
    addr = NameAddr.parse(value)
    addr.params.pop("tag", None)
    return str(addr)


def _contact_uri(msg: Request | Response) -> str | None:
    value = msg.headers.get("Contact")
    if value is None or value == "*":
        return None
    try:
        return str(NameAddr.parse(value).uri)
    except SipParseError:
        return None


def incoming_request_dialog_id(request: Request) -> DialogId:
    """(Call-ID, local tag, remote tag) of a request we received: local is the To tag."""
    return (request.call_id, request.to_tag or "", request.from_tag or "")


def response_dialog_id(response: Response) -> DialogId:
    """(Call-ID, local tag, remote tag) of a response to our request: local is the From tag."""
    return (response.call_id, response.from_tag or "", response.to_tag or "")


@dataclass
class Dialog:
    """The state RFC 3261 12.1 keeps per dialog; mutate only through the methods."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    secure: bool = False
    early: bool = False

    @property
    def id(self) -> DialogId:
        """(Call-ID, local tag, remote tag): the dialog identifier of 12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac_response(cls, request: Request, response: Response) -> Dialog:
        """Dialog seen by the caller, from a 2xx (confirmed) or a 1xx with To tag (early)."""
        route_set = list(reversed(response.headers.get_all("Record-Route")))
        target = _contact_uri(response) or request.uri
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=response.to_tag or "",
            local_uri=_without_tag(request.headers.get("From") or ""),
            remote_uri=_without_tag(request.headers.get("To") or ""),
            local_seq=request.cseq.number,
            remote_seq=None,
            remote_target=target,
            route_set=route_set,
            secure=request.uri.lower().startswith("sips:"),
            early=response.status < 200,
        )

    @classmethod
    def from_uas_request(cls, request: Request, local_tag: str, *, early: bool = True) -> Dialog:
        """Dialog seen by the callee, created when it sends its first 1xx-with-tag or 2xx."""
        route_set = list(request.headers.get_all("Record-Route"))
        source = _contact_uri(request)
        if source is None:
            source = str(request.from_addr.uri)
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_uri=_without_tag(request.headers.get("To") or ""),
            remote_uri=_without_tag(request.headers.get("From") or ""),
            local_seq=0,
            remote_seq=request.cseq.number,
            remote_target=source,
            route_set=route_set,
            secure=request.uri.lower().startswith("sips:"),
            early=early,
        )

    def confirm(self, response: Response | None = None) -> None:
        """Early -> confirmed; a UAC's 2xx recomputes route set and target (13.2.2.4)."""
        self.early = False
        if response is not None:
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target

    def refresh_target(self, msg: Request | Response) -> None:
        """A target refresh (re-INVITE or its 2xx) may move the peer's Contact."""
        target = _contact_uri(msg)
        if target is not None:
            self.remote_target = target

    def check_remote_cseq(self, request: Request) -> bool:
        """Accept an in-dialog request's CSeq (and remember it); False means answer 500."""
        if request.method.upper() in ("ACK", "CANCEL"):
            return True
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def next_hop(self) -> SipUri:
        """Where the request goes first: the first route if any, else the remote target."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return SipUri.parse(self.remote_target)

    def _uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0]).uri
        if "lr" in first.params:
            return self.remote_target, list(self.route_set)
        # strict router (12.2.1.1): it takes the Request-URI, our target rides last
        first.headers = {}
        return str(first), [*self.route_set[1:], f"<{self.remote_target}>"]

    def create_request(self, method: str, *, via: str, contact: str | None = None,
                       body: bytes = b"", content_type: str | None = None,
                       extra: list[tuple[str, str]] | None = None,
                       cseq: int | None = None) -> Request:
        """Build an in-dialog request; bumps the local CSeq unless ACK/CANCEL or `cseq` given."""
        method = method.upper()
        if cseq is None:
            if method in ("ACK", "CANCEL"):
                cseq = self.local_seq
            else:
                self.local_seq += 1
                cseq = self.local_seq
        uri, routes = self._uri_and_routes()
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.add("Route", route)
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        remote = self.remote_uri if not self.remote_tag else f"{self.remote_uri};tag={self.remote_tag}"
        headers.add("To", remote)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra or []:
            headers.add(name, value)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, uri, headers, body)

    def create_ack(self, invite_cseq: int, *, via: str, body: bytes = b"",
                   content_type: str | None = None) -> Request:
        """The end-to-end ACK for a 2xx: its own branch, the INVITE's CSeq number (13.2.2.4)."""
        return self.create_request("ACK", via=via, body=body, content_type=content_type,
                                   cseq=invite_cseq)

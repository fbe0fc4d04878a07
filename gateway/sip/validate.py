"""UAS checks on a new incoming request (RFC 3261 section 8.2), before any method logic.

The parser (:mod:`gateway.sip.message`) decides whether bytes are SIP at all; this module
decides whether a well-formed request is one this user agent can process, in the order the
RFC gives, and builds the refusal when it is not. Method inspection (405) stays with the UA,
which alone knows what it implements.

Order and choices, each a policy field so a deployment can change it:

1. 400 for what the parser lets through but cannot be processed: a ``sip``/``sips``
   Request-URI whose host, port or parameters are malformed.
2. 416 (8.2.2.1) for a Request-URI scheme other than ``sip``/``sips``. ``tel:`` is refused
   too by default: the gateway is addressed by SIP URIs, and a trunk that means a number
   puts it in the user part with ``user=phone``. Set ``accept_tel`` to take it.
3. 482 (8.2.2.2 / 16.3) when the same Via (sent-by and branch) appears twice: the request
   has been round a loop. Merged requests (same From tag, Call-ID and CSeq on a different
   branch) need the transaction table and are the UA's to detect.
4. 483 for ``Max-Forwards: 0`` on an out-of-dialog request other than OPTIONS. RFC 4475
   3.3.11 lets an endpoint ignore a zero, but this gateway bridges calls onward to trunks
   and GSM with a fresh Max-Forwards, so it must not launder an exhausted one (RFC 3261
   16.3 step 3; OPTIONS is answered as the final recipient, as section 11 allows).
   In-dialog requests end at us and are never refused for it.
5. 420 (8.2.2.3) with ``Unsupported`` listing each ``Require`` option-tag not in
   ``supported`` (default: ``timer``). Not for ACK or CANCEL, which cannot carry Require.
6. 415 (8.2.3) for a body whose Content-Type the method does not take (INVITE, UPDATE,
   PRACK: ``application/sdp``; INFO: DTMF relay types) with ``Accept``, and for any
   Content-Encoding other than ``identity``, with ``Accept-Encoding: identity``.
7. 406 (RFC 4475 3.3.15, sdp01) for an INVITE whose Accept header rules out
   ``application/sdp``: we could never send the answer it asks for.

ACK is never answered (RFC 3261 17.1.1.3 / 13.3.1.4); :func:`validate_request` returns None
for it whatever it carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.errors import SipError, SipParseError
from gateway.sip.headers import Via, generate_tag
from gateway.sip.message import Request, Response, make_response

SDP = "application/sdp"

_DEFAULT_BODY_TYPES: dict[str, frozenset[str]] = {
    "INVITE": frozenset({SDP}),
    "UPDATE": frozenset({SDP}),
    "PRACK": frozenset({SDP}),
    "INFO": frozenset({"application/dtmf-relay", "application/dtmf"}),
}


@dataclass(frozen=True)
class UasPolicy:
    """What this UAS understands; the defaults are the gateway's, tests may narrow them."""

    supported: frozenset[str] = frozenset({"timer", "replaces"})
    accept_tel: bool = False
    refuse_zero_max_forwards: bool = True
    body_types: dict[str, frozenset[str]] = field(
        default_factory=lambda: dict(_DEFAULT_BODY_TYPES)
    )


DEFAULT_POLICY = UasPolicy()
"""The gateway's policy: ``timer`` supported, tel: refused, 483 on exhausted hops."""


def _refuse(
    req: Request, status: int, reason: str | None = None, extra: list[tuple[str, str]] | None = None
) -> Response:
    to_tag = None
    try:
        if req.to_tag is None:
            to_tag = generate_tag()
    except SipError:
        to_tag = None
    resp = make_response(req, status, reason, to_tag=to_tag)
    for name, value in extra or []:
        resp.headers.add(name, value)
    return resp


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _check_uri(req: Request, policy: UasPolicy) -> Response | None:
    scheme = req.uri.partition(":")[0].strip().lower()
    if scheme == "tel" and not policy.accept_tel:
        return _refuse(req, 416)
    try:
        _ = req.request_uri
    except SipParseError as exc:
        if exc.status == 416:
            return _refuse(req, 416)
        return _refuse(req, 400, "Bad Request-URI")
    return None


def _check_loop(req: Request) -> Response | None:
    seen: set[tuple[str, int | None, str]] = set()
    for value in req.headers.get_all("Via"):
        try:
            via = Via.parse(value)
        except SipParseError:
            return _refuse(req, 400, "Bad Via")
        branch = via.branch
        if not branch:
            continue
        key = (via.host.lower(), via.port, branch)
        if key in seen:
            return _refuse(req, 482)
        seen.add(key)
    return None


def _check_hops(req: Request, policy: UasPolicy) -> Response | None:
    if not policy.refuse_zero_max_forwards or req.method.upper() == "OPTIONS":
        return None
    values = req.headers.get_lines("Max-Forwards")
    if not values or not values[0].strip().isdigit() or int(values[0]) != 0:
        return None
    if req.to_tag is not None:
        return None  # in-dialog: the request ends here
    return _refuse(req, 483)


def _check_require(req: Request, policy: UasPolicy) -> Response | None:
    if req.method.upper() == "CANCEL":
        return None
    supported = {tag.lower() for tag in policy.supported}
    unknown: list[str] = []
    for tag in req.headers.get_all("Require"):
        tag = tag.strip()
        if tag and tag.lower() not in supported and tag not in unknown:
            unknown.append(tag)
    if unknown:
        return _refuse(req, 420, None, [("Unsupported", ", ".join(unknown))])
    return None


def _check_content(req: Request, policy: UasPolicy) -> Response | None:
    method = req.method.upper()
    if method == "CANCEL":
        return None
    accepted = policy.body_types.get(method, frozenset())
    accept_value = ", ".join(sorted(accepted)) if accepted else SDP
    for coding in req.headers.get_all("Content-Encoding"):
        if coding.strip().lower() not in ("identity", ""):
            return _refuse(req, 415, None, [("Accept", accept_value),
                                            ("Accept-Encoding", "identity")])
    if not req.body or method not in policy.body_types:
        return None
    content_type = _media_type(req.headers.get("Content-Type") or "")
    if content_type not in accepted:
        return _refuse(req, 415, None, [("Accept", accept_value),
                                        ("Accept-Encoding", "identity")])
    return None


def _accepts(values: list[str], media: str) -> bool:
    main = media.split("/", 1)[0]
    for value in values:
        kind = _media_type(value)
        if kind in (media, "*/*", f"{main}/*"):
            return True
    return False


def _check_accept(req: Request) -> Response | None:
    if req.method.upper() != "INVITE":
        return None
    values = [v for v in req.headers.get_all("Accept") if v.strip()]
    if not values:  # absent (or empty, read leniently): application/sdp is implied
        return None
    if not _accepts(values, SDP):
        return _refuse(req, 406, None, [("Accept", SDP)])
    return None


def validate_request(req: Request, policy: UasPolicy = DEFAULT_POLICY) -> Response | None:
    """The RFC 3261 8.2 refusal for a new incoming request, or None to go on processing.

    Never raises: a request too broken to check gets a 400, and ACK always gets None
    because nothing may answer it. The returned response already carries the To tag and
    the extra headers the RFC asks for (Unsupported, Accept, Accept-Encoding).
    """
    if req.method.upper() == "ACK":
        return None
    try:
        refusal = (
            _check_uri(req, policy)
            or _check_loop(req)
            or _check_hops(req, policy)
            or _check_require(req, policy)
            or _check_content(req, policy)
            or _check_accept(req)
        )
        if refusal is not None:
            return refusal
    except (SipError, ValueError, UnicodeError):
        try:
            return _refuse(req, 400)
        except (SipError, ValueError, UnicodeError):
            return None
    return None

"""RFC 4475 against the running daemon: each torture message as one UDP datagram.

Each message is sent unmodified from a socket that the daemon's config names as a trunk
(so the security filter treats it as trusted), and the answer is checked against what the
message's RFC section asks for (table EXPECT below). Responses go where RFC 3261 18.2.2 and
RFC 3581 say: the source address when the top Via has ``rport``, else the source IP and the
Via port (5060 when absent). The test therefore binds its own loopback address 127.0.0.x and
listens on 5060 and 5050 (quotbal's Via port) there: nothing has to be rewritten, and an
answer sent anywhere else (e.g. to an example.com host) would simply never arrive.

After all 49, phone 1 calls phone 2 on the same daemon and the audio is checked.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.message import Request, Response, parse_message

from .flood import connect_local_call, gateway_yaml, hang_up, pick_loopback, torture_messages
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import wav_tone

pytestmark = pytest.mark.slow

MESSAGES = torture_messages()

VIA_PORTS = (5060, 5050)  # default Via port, and quotbal's explicit one


@dataclass(frozen=True)
class Expect:
    """What the daemon must do with one message.

    ``statuses`` is the set of acceptable final statuses; None means "any final response
    that is not 400" (a valid request the gateway processes its own way: 404 for a user
    it does not have, 405 for a method it does not implement, 200 for OPTIONS...). An
    empty set means no response at all (responses are discarded; some requests cannot be
    answered). ``or_drop`` accepts silence as well as the statuses.
    """

    section: str
    statuses: frozenset[int] | None
    or_drop: bool = False
    why: str = ""
    xfail: str | None = None


def ok(section: str, why: str = "") -> Expect:
    return Expect(section, None, why=why)


def status(section: str, *codes: int, why: str = "", xfail: str | None = None,
           or_drop: bool = False) -> Expect:
    return Expect(section, frozenset(codes), or_drop=or_drop, why=why, xfail=xfail)


def drop(section: str, why: str = "") -> Expect:
    return Expect(section, frozenset(), why=why)


EXPECT: dict[str, Expect] = {
    # 3.1.1 valid messages: processed like any other request, never 400.
    "wsinv": ok("3.1.1.1", "odd but legal whitespace; tagged To -> 481 is fine"),
    "intmeth": ok("3.1.1.2", "unknown method: 405/501 (or 481 with a To tag), not 400"),
    "esc01": ok("3.1.1.3", "escaped user part; no such line -> 404"),
    "escnull": ok("3.1.1.4", "%00 in user parts; REGISTER refused its own way"),
    "esc02": ok("3.1.1.5", "escaped method name is just an unknown token -> 405/501"),
    "lwsdisp": ok("3.1.1.6", "OPTIONS -> 200"),
    "longreq": ok("3.1.1.7", "long values, 30 Via values; processed"),
    "dblreq": ok("3.1.1.8", "second REGISTER in the datagram ignored; one answer"),
    "semiuri": ok("3.1.1.9", "';' in user part; OPTIONS -> 200"),
    "transports": ok("3.1.1.10", "unknown transports in lower Vias; OPTIONS -> 200"),
    "mpart01": ok("3.1.1.11", "multipart MESSAGE; method not implemented -> 405"),
    "unreason": drop("3.1.1.12", "a response: stray, discarded"),
    "noreason": drop("3.1.1.13", "a response: stray, discarded"),
    # 3.1.2 invalid messages: 400 for requests that can be answered, responses discarded.
    "badinv01": status("3.1.2.1", 400, or_drop=True, why="Via unusable: answer or drop"),
    "clerr": status("3.1.2.2", 400, why="Content-Length beyond the datagram"),
    "ncl": status("3.1.2.3", 400, why="negative Content-Length"),
    "scalar02": status("3.1.2.4", 400, why="CSeq and Max-Forwards overflow"),
    "scalarlg": drop("3.1.2.5", "response with overlarge scalars: discarded"),
    "quotbal": status("3.1.2.6", 400, why="unbalanced quotes; answer to Via port 5050"),
    "ltgtruri": status("3.1.2.7", 400, why="Request-URI in <>"),
    "lwsruri": status("3.1.2.8", 400, why="whitespace in Request-URI"),
    "lwsstart": status("3.1.2.9", 400, why="multiple SP in the request line"),
    "trws": status("3.1.2.10", 400, why="SP after SIP-Version"),
    "escruri": status("3.1.2.11", 400, why="headers in Request-URI"),
    "baddate": ok("3.1.2.12", "bad Date may be ignored; INVITE to no line -> 404"),
    "regbadct": status("3.1.2.13", 400, why="Contact with ? but no <>"),
    "badaspec": status("3.1.2.14", 400, why="spaces inside <addr-spec>"),
    "baddn": status("3.1.2.15", 400, why="unquoted display name with ','"),
    "badvers": status("3.1.2.16", 505, why="SIP/7.0"),
    "mismatch01": status("3.1.2.17", 400, why="CSeq method differs from the request's"),
    "mismatch02": status("3.1.2.18", 400, 501, why="unknown method, CSeq mismatch"),
    "bigcode": drop("3.1.2.19", "status code out of range: discarded"),
    # 3.2 transaction layer
    "badbranch": ok("3.2.1", "branch without a cookie tail; OPTIONS -> 200"),
    # 3.3 application layer
    "insuf": status("3.3.1", 400, or_drop=True,
                    why="no Call-ID/From/To...: 400 if a response can be built, else drop"),
    "unkscm": status("3.3.2", 416, why="unknown Request-URI scheme"),
    "novelsc": status("3.3.3", 416, why="novel Request-URI scheme"),
    "unksm2": status("3.3.4", 400, why="REGISTER with non-SIP To: 400"),
    "bext01": status("3.3.5", 420, why="unknown Require -> 420 with Unsupported"),
    "invut": status("3.3.6", 415, why="unknown Content-Type -> 415 with Accept"),
    "regaut01": ok("3.3.7", "REGISTER with credentials for a realm we do not serve; "
                   "must not be 200"),
    "multi01": status("3.3.8", 400, why="several From/To/Call-ID/CSeq"),
    "mcl01": status("3.3.9", 400, why="several Content-Length values"),
    "bcast": drop("3.3.10", "a response; nothing goes to 255.255.255.255"),
    "zeromf": status("3.3.11", 200, why="OPTIONS with Max-Forwards 0: an endpoint answers"),
    "cparam01": ok("3.3.12", "Contact parameters; REGISTER processed its own way"),
    "cparam02": ok("3.3.13", "Contact URI parameters; REGISTER processed its own way"),
    "regescrt": ok("3.3.14", "escaped headers in Contact; REGISTER processed its own way"),
    "sdp01": status("3.3.15", 406, 400, why="Accept rules out application/sdp"),
    # 3.4 backward compatibility
    "inv2543": ok("3.4.1", "RFC 2543 INVITE (no branch, no Max-Forwards): processed -> 404"),
}

NEVER_OK = {"regaut01", "escnull", "cparam01", "cparam02", "regescrt", "dblreq"}  # no 2xx REGISTER


class Listener:
    """The test's sockets on its own loopback address: one sends, all listen."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.socks: list[socket.socket] = []
        for port in VIA_PORTS:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, port))
            self.socks.append(s)
        self.sender = self.socks[0]

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def collect(self, seconds: float) -> list[tuple[bytes, int]]:
        """Every datagram arriving within ``seconds``, with the local port it came to."""
        out: list[tuple[bytes, int]] = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            ready, _, _ = select.select(self.socks, [], [], left)
            for s in ready:
                data = s.recv(65535)
                out.append((data, s.getsockname()[1]))


def call_id_of(raw: bytes) -> str | None:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode("utf-8", "replace")
    return None


def ack_for(req_raw: bytes, resp: Response) -> bytes | None:
    """Hop-by-hop ACK for a non-2xx final answer to an INVITE (RFC 3261 17.1.1.3)."""
    try:
        req = parse_message(req_raw)
    except SipParseError:
        return None
    if not isinstance(req, Request) or req.method != "INVITE" or resp.status < 300:
        return None
    vias = req.headers.get_lines("Via")
    lines = [f"ACK {req.uri} SIP/2.0", f"Via: {vias[0].split(',')[0]}", "Max-Forwards: 70",
             f"From: {resp.headers.get('From')}", f"To: {resp.headers.get('To')}",
             f"Call-ID: {resp.call_id}", f"CSeq: {resp.cseq.number} ACK", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Outcome:
    finals: list[Response]
    provisionals: list[Response]
    ports: set[int]
    foreign: list[str]  # Call-IDs of responses that belong to other messages


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Listener]]:
    tmp = tmp_path_factory.mktemp("torture")
    host = pick_loopback(VIA_PORTS)
    listener = Listener(host)
    sip_port = free_port()
    gw = GatewayProcess(tmp, gateway_yaml(tmp, sip_port, host, VIA_PORTS[0]))
    gw.start()
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    try:
        yield gw, listener
    finally:
        listener.close()
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


@pytest.fixture(scope="module")
def outcomes(daemon: tuple[GatewayProcess, Listener]) -> dict[str, Outcome]:
    """Send all 49 in turn; give each up to 2 s for a final answer (0.6 s for silence)."""
    gw, listener = daemon
    dest = ("127.0.0.1", gw.sip_port)  # type: ignore[attr-defined]
    ids = {name: call_id_of(data) for name, data in MESSAGES.items()}
    results: dict[str, Outcome] = {}
    for name, data in MESSAGES.items():
        expect = EXPECT[name]
        listener.sender.sendto(data, dest)
        outcome = Outcome([], [], set(), [])
        waiting_for_final = expect.statuses is None or bool(expect.statuses)
        deadline = time.monotonic() + (2.0 if waiting_for_final else 0.6)
        while time.monotonic() < deadline:
            for raw, port in listener.collect(0.1):
                if not raw.startswith(b"SIP/2.0 "):
                    continue  # the daemon's own keep-alives towards its "trunk"
                cid = call_id_of(raw)
                if ids[name] is not None and cid != ids[name]:
                    outcome.foreign.append(cid or "")
                    continue
                resp = _read_response(raw, name)
                outcome.ports.add(port)
                if resp.status >= 200:
                    outcome.finals.append(resp)
                    ack = ack_for(data, resp)
                    if ack is not None:
                        listener.sender.sendto(ack, dest)
                else:
                    outcome.provisionals.append(resp)
            if waiting_for_final and outcome.finals:
                break
        results[name] = outcome
    return results


def _read_response(raw: bytes, name: str) -> Response:
    """Parse a daemon response; a 400 may echo the request's broken To/From (8.2.6.2),
    so a header-level parse error still yields the response as far as it was read."""
    try:
        msg = parse_message(raw)
    except SipParseError as exc:
        msg = exc.message
        if not isinstance(msg, Response) or msg.status < 400:
            raise AssertionError(f"{name}: daemon sent unparseable {raw[:300]!r}") from exc
    assert isinstance(msg, Response), f"{name}: expected a response, got {raw[:100]!r}"
    return msg


def test_table_covers_all_49() -> None:
    assert set(MESSAGES) == set(EXPECT) and len(EXPECT) == 49


def _params() -> list[object]:
    out: list[object] = []
    for name in sorted(EXPECT):
        reason = EXPECT[name].xfail
        marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_torture_message(name: str, outcomes: dict[str, Outcome]) -> None:
    expect = EXPECT[name]
    got = outcomes[name]
    codes = sorted({r.status for r in got.finals})
    what = f"{name} (RFC 4475 {expect.section}: {expect.why}) got finals {codes}"
    assert len(codes) <= 1, f"{what}: more than one distinct final status"
    if expect.statuses is not None and not expect.statuses:
        assert not got.finals and not got.provisionals, what
        return
    if not got.finals:
        earlier = same_transaction_as(name)
        if earlier is not None:
            # RFC 3261 17.2.3: same top-Via branch, sent-by and method as an earlier torture
            # message, so the daemon rightly takes it for a retransmission of that one and
            # re-sends that transaction's answer.
            assert call_id_of(MESSAGES[earlier]) in got.foreign, (
                f"{what}: neither answered nor treated as a retransmission of {earlier}")
            return
        assert expect.or_drop, f"{what}: no final response"
        return
    final = got.finals[0]
    if expect.statuses is None:
        assert final.status != 400, what
        if name in NEVER_OK:
            assert final.status >= 300, f"{what}: REGISTER accepted without a registrar"
    else:
        assert final.status in expect.statuses, what
    if final.status == 400:
        assert final.reason.strip(), f"{what}: 400 without a reason phrase"
    # The answer is to this request: its Call-ID, CSeq and top Via branch.
    req = _partial(MESSAGES[name])
    if req is not None:
        assert final.call_id == req.call_id
        try:
            assert final.cseq.number == req.cseq.number
            assert final.top_via.branch == req.top_via.branch
        except SipParseError:
            pass
        if final.status == 420:
            assert final.headers.get_all("Unsupported"), what
        if final.status == 415:
            assert "application/sdp" in (final.headers.get("Accept") or ""), what


def _tx_key(data: bytes) -> tuple[str, str, str] | None:
    req = _partial(data)
    if req is None:
        return None
    try:
        via = req.top_via
    except SipParseError:
        return None
    if not via.branch or not via.branch.startswith("z9hG4bK"):
        return None
    sent_by = f"{via.host.lower()}:{via.port or 5060}"
    return (via.branch, sent_by, req.method)


def same_transaction_as(name: str) -> str | None:
    """The earlier-sent torture message that RFC 3261 17.2.3 matches to the same server
    transaction as ``name`` (cparam02 after cparam01, regescrt after escnull), if any."""
    key = _tx_key(MESSAGES[name])
    if key is None:
        return None
    for other in MESSAGES:  # send order
        if other == name:
            return None
        if _tx_key(MESSAGES[other]) == key:
            return other
    return None


def _partial(data: bytes) -> Request | None:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        msg = exc.message
    return msg if isinstance(msg, Request) else None


def test_daemon_survives_and_still_completes_a_call(
    daemon: tuple[GatewayProcess, Listener], outcomes: dict[str, Outcome], tmp_path: Path
) -> None:
    gw, _ = daemon
    assert gw.running, gw.log_text()[-3000:]
    status = gw.status()
    assert all(line["state"] == "idle" for line in status["lines"]), status["lines"]
    assert not status["calls"], "a torture message set up a call"
    sip = status.get("sip", {})
    print(f"daemon SIP stats after the 49: {sip}")
    if sip:
        assert sip.get("malformed", 0) >= 15
        assert sip.get("internal_errors", 0) == 0, sip

    connect_local_call(gw, tmp_path, 440.0, -12.0)
    time.sleep(0.5)
    rec = tmp_path / "after-torture.wav"
    gw.phone("2", "record", path=str(rec), seconds=1.0)
    hz, db = wav_tone(rec)
    assert abs(hz - 440.0) <= 0.02 * 440.0 and abs(db + 12.0) <= 3.0, (hz, db)
    hang_up(gw)

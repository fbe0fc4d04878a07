"""bench.registrar's calling phones: a small asyncio SIP UAC that places calls through a
registrar at a fixed rate, answering the digest challenge the way a phone does.

Why not sipp: sipp 3.6 (and its current source) always computes the digest `uri` as
sip:<remote host>:<remote port>, whatever the Request-URI, unless one global -auth_uri is
given. For a REGISTER to sip:<host>:<port> that is right; for an INVITE to
sip:<callee>@<host>:<port> it is not, and the Branchline edge refuses such credentials
(the digest uri must be the Request-URI, RFC 2617 3.2.2.5; it stops replays onto other
requests), while Kamailio, which does not compare them by default, accepts them. So both
registrars get their calls from this caller, and sipp still registers the phones and
answers as the called phones.

    python -m bench.registrar_caller --target 127.0.0.1:5060 --csv calls.csv --rate 50 \
        --count 500 --call-ms 1000 --port 40000 --media-port 40002 --out result.json

Per call: INVITE, 401 or 407, ACK, INVITE with credentials (MD5, qop=auth, nc 1, the
Request-URI as digest uri), 1xx, 200, ACK (with the Record-Route set as Route), `call-ms`
of call, BYE, 200. A request unanswered is resent after 0.5, 1, 2, 4 s (RFC 3261 timer
doubling, on loopback it rarely happens) and the call fails 8 s after its last send.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.registrar_sipp import ROOT, SippCounts, pin

RETRANS = (0.5, 1.0, 2.0, 4.0)
GIVE_UP = 8.0
_COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "m": "contact",
            "l": "content-length", "c": "content-type"}
_REQUEST = re.compile(r"[A-Z]+ sips?:\S+ SIP/2\.0\r\n")
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


@dataclass
class Reply:
    """Just what the caller needs of a response."""

    status: int
    headers: dict[str, list[str]]

    def first(self, name: str) -> str:
        values = self.headers.get(name, [])
        return values[0] if values else ""


def parse_reply(data: bytes) -> Reply | None:
    """A SIP response's status and headers (names lower-cased, compact forms expanded);
    None for requests and garbage."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return Reply(int(parts[1]), headers)


def challenge_params(header: str) -> dict[str, str]:
    """`Digest realm="r", nonce="n", qop="auth"` -> {realm: r, nonce: n, qop: auth}."""
    _, _, rest = header.partition(" ")
    return {k.lower(): q if q else t for k, q, t in _PARAM.findall(rest)}


def digest_authorization(params: dict[str, str], *, method: str, uri: str, user: str,
                         password: str, cnonce: str, nc: int = 1) -> str:
    """The credentials (RFC 2617/3261, MD5, qop=auth when offered) as a header value."""
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 (the protocol's hash)

    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    out = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in [q.strip() for q in params.get("qop", "").split(",")]:
        ncv = f"{nc:08x}"
        out += (f', response="{md5(f"{ha1}:{nonce}:{ncv}:{cnonce}:auth:{ha2}")}", '
                f'algorithm=MD5, qop=auth, nc={ncv}, cnonce="{cnonce}"')
    else:
        out += f', response="{md5(f"{ha1}:{nonce}:{ha2}")}", algorithm=MD5'
    if "opaque" in params:
        out += f', opaque="{params["opaque"]}"'
    return out


def _tag(header: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", header)
    return m.group(1) if m else ""


def _uri_of(header: str) -> str:
    m = re.search(r"<([^>]+)>", header)
    return m.group(1) if m else header.split(";", 1)[0].strip()


@dataclass
class Results:
    """What the run did: calls created, completed, failed (with why), set-up times."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    setup_ms: list[float] = field(default_factory=list)


class Caller(asyncio.DatagramProtocol):
    """One UDP socket; transactions matched by (Call-ID, CSeq)."""

    def __init__(self, target: tuple[str, int], local: tuple[str, int], call_ms: int,
                 media_port: int) -> None:
        self.target = target
        self.local = local
        self.call_ms = call_ms
        self.media_port = media_port
        self.results = Results()
        self.transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[tuple[str, str], asyncio.Queue[Reply]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = parse_reply(data)
        if reply is None:
            self._answer_request(data, addr)
            return
        queue = self._waiting.get((reply.first("call-id"), reply.first("cseq")))
        if queue is not None:
            queue.put_nowait(reply)

    def _answer_request(self, data: bytes, addr: tuple[str, int]) -> None:
        """A request from the registrar (an in-dialog BYE or OPTIONS): 200, never an ACK."""
        text = data.decode("utf-8", "replace")
        if not _REQUEST.match(text) or text.startswith("ACK ") or self.transport is None:
            return
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in
                ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]
        self.transport.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) +
                               "\r\nContent-Length: 0\r\n\r\n").encode(), addr)

    async def _transact(self, msg: str, call_id: str, cseq: str, *,
                        final: bool = True) -> Reply | None:
        """Send, resend until a final answer (or any answer when not `final`); None on
        timeout."""
        assert self.transport is not None
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        key = (call_id, cseq)
        self._waiting[key] = queue
        data = msg.encode()
        try:
            self.transport.sendto(data, self.target)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + GIVE_UP
            waits = list(RETRANS)
            next_send = loop.time() + waits.pop(0)
            resend = True
            while True:
                now = loop.time()
                if now >= deadline:
                    return None
                wait = (min(next_send, deadline) if resend else deadline) - now
                try:
                    reply = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if resend and loop.time() >= next_send:
                        self.transport.sendto(data, self.target)
                        self.results.retransmissions += 1
                        deadline = loop.time() + GIVE_UP
                        next_send = loop.time() + (waits.pop(0) if waits else RETRANS[-1])
                    continue
                if reply.status >= 200 or not final:
                    return reply
                resend = False  # a provisional answer stops the resending (17.1.1.2)
        finally:
            self._waiting.pop(key, None)

    def _request(self, method: str, ruri: str, *, call_id: str, cseq: int, from_uri: str,
                 from_tag: str, to_uri: str, to_tag: str = "", extra: Sequence[str] = (),
                 sdp: str = "", branch: str | None = None) -> str:
        host, port = self.local
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + secrets.token_hex(8)}",
                 "Max-Forwards: 70", f"From: <{from_uri}>;tag={from_tag}",
                 f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <{from_uri.split('@')[0]}@{host}:{port}>", *extra]
        if sdp:
            lines += ["Content-Type: application/sdp", f"Content-Length: {len(sdp)}"]
        else:
            lines.append("Content-Length: 0")
        return "\r\n".join(lines) + "\r\n\r\n" + sdp

    async def call(self, n: int, caller: tuple[str, str], callee: str) -> None:
        """One whole call; counts it as successful or failed (with a reason)."""
        self.results.created += 1
        reason = await self._call(n, caller, callee)
        if reason is None:
            self.results.successful += 1
        else:
            self.results.failed += 1
            self.results.reasons[reason] += 1

    async def _call(self, n: int, caller: tuple[str, str], callee: str) -> str | None:
        user, password = caller
        thost, tport = self.target
        ruri = f"sip:{callee}@{thost}:{tport}"
        call_id = f"{n}-{secrets.token_hex(4)}@bench"
        ids = dict(call_id=call_id, from_uri=f"sip:{user}@{thost}", from_tag=f"c{n}",
                   to_uri=f"sip:{callee}@{thost}")
        lhost = self.local[0]
        sdp = (f"v=0\r\no=caller {n} 1 IN IP4 {lhost}\r\ns=-\r\nc=IN IP4 {lhost}\r\nt=0 0\r\n"
               f"m=audio {self.media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        branch = "z9hG4bK" + secrets.token_hex(8)
        first = await self._transact(self._request("INVITE", ruri, cseq=1, sdp=sdp,
                                                   branch=branch, **ids), call_id, "1 INVITE")
        if first is None:
            return "timeout: no answer to the INVITE"
        if first.status not in (401, 407):
            return f"INVITE answered {first.status} instead of a challenge"
        self._send(self._request("ACK", ruri, cseq=1, branch=branch,
                                 to_tag=_tag(first.first("to")), **ids))
        header = "www-authenticate" if first.status == 401 else "proxy-authenticate"
        challenges = [challenge_params(v) for v in first.headers.get(header, [])]
        md5 = [c for c in challenges if c.get("algorithm", "MD5").upper() == "MD5"]
        if not md5:
            return "no MD5 challenge"
        creds = digest_authorization(md5[0], method="INVITE", uri=ruri, user=user,
                                     password=password, cnonce=secrets.token_hex(4))
        auth = "Authorization" if first.status == 401 else "Proxy-Authorization"
        started = time.monotonic()
        answer = await self._transact(
            self._request("INVITE", ruri, cseq=2, sdp=sdp, extra=[f"{auth}: {creds}"],
                          branch=(branch2 := "z9hG4bK" + secrets.token_hex(8)), **ids),
            call_id, "2 INVITE")
        if answer is None:
            return "timeout: no final answer to the authenticated INVITE"
        to_tag = _tag(answer.first("to"))
        if answer.status >= 300:
            self._send(self._request("ACK", ruri, cseq=2, branch=branch2, to_tag=to_tag, **ids))
            return f"INVITE answered {answer.status}"
        self.results.setup_ms.append((time.monotonic() - started) * 1000.0)
        remote = _uri_of(answer.first("contact")) or ruri
        routes = [f"Route: {r}" for rr in reversed(answer.headers.get("record-route", []))
                  for r in [x.strip() for x in rr.split(",")]]
        self._send(self._request("ACK", remote, cseq=2, to_tag=to_tag, extra=routes, **ids))
        await asyncio.sleep(self.call_ms / 1000.0)
        bye = await self._transact(self._request("BYE", remote, cseq=3, to_tag=to_tag,
                                                 extra=routes, **ids), call_id, "3 BYE")
        if bye is None:
            return "timeout: no answer to the BYE"
        if bye.status != 200:
            return f"BYE answered {bye.status}"
        return None

    def _send(self, msg: str) -> None:
        assert self.transport is not None
        self.transport.sendto(msg.encode(), self.target)


def read_calls_csv(path: Path) -> list[tuple[tuple[str, str], str]]:
    """((caller, password), callee) per line of calls.csv (bench.registrar_sipp.calls_csv;
    the password is read back out of the [authentication] keyword in field 2)."""
    out = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split(";")
        if len(fields) < 3:
            continue
        pw = re.search(r"password=(\S+?)\]", fields[2])
        out.append(((fields[0], pw.group(1) if pw else ""), fields[1]))
    return out


async def run(target: tuple[str, int], pairs: Sequence[tuple[tuple[str, str], str]],
              rate: float, count: int, call_ms: int, port: int, media_port: int) -> Results:
    """`count` calls started at `rate`/s over the pairs in turn; returns when all ended.
    Every call's SDP names `media_port`, where one socket takes whatever RTP comes and
    drops it (so the registrar's media gets no ICMP port-unreachable back)."""
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", media_port))
    _, proto = await loop.create_datagram_endpoint(
        lambda: Caller(target, ("127.0.0.1", port), call_ms, media_port),
        local_addr=("127.0.0.1", port))
    tasks = []
    start = loop.time()
    for n in range(count):
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        caller, callee = pairs[n % len(pairs)]
        tasks.append(asyncio.create_task(proto.call(n + 1, caller, callee)))
    await asyncio.gather(*tasks)
    assert proto.transport is not None
    proto.transport.close()
    sink.close()
    return proto.results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.registrar_caller")
    ap.add_argument("--target", required=True, help="host:port of the registrar")
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--call-ms", type=int, default=1000)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--media-port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    res = asyncio.run(run((host, int(port)), read_calls_csv(args.csv), args.rate, args.count,
                          args.call_ms, args.port, args.media_port))
    args.out.write_text(json.dumps({
        "created": res.created, "successful": res.successful, "failed": res.failed,
        "retransmissions": res.retransmissions, "reasons": dict(res.reasons),
        "setup_ms": [round(v, 3) for v in res.setup_ms]}))
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())


def run_process(target: tuple[str, int], csv_path: Path, rundir: Path, *, rate: float,
                count: int, call_ms: int, port: int, media_port: int, cpu: int | None,
                timeout: float) -> tuple[SippCounts, float, list[float], str]:
    """This module as a child process (pinned like sipp): counts, wall time, set-up times
    (authenticated INVITE to 200, ms) and an error tail."""
    rundir.mkdir(parents=True, exist_ok=True)
    out = rundir / "callers.json"
    cmd = [sys.executable, "-m", "bench.registrar_caller", "--target", f"{target[0]}:{target[1]}",
           "--csv", str(csv_path), "--rate", f"{rate:g}", "--count", str(count),
           "--call-ms", str(call_ms), "--port", str(port), "--media-port", str(media_port),
           "--out", str(out)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout, check=False, preexec_fn=pin(cpu))
    wall = time.monotonic() - start
    counts = SippCounts(exit_code=proc.returncode)
    setup: list[float] = []
    if out.exists():
        data = json.loads(out.read_text())
        counts = SippCounts(created=data["created"], successful=data["successful"],
                            failed=data["failed"], retransmissions=data["retransmissions"],
                            unexpected=dict(data["reasons"]), exit_code=proc.returncode,
                            stats_found=True)
        setup = list(data["setup_ms"])
    return counts, wall, setup, proc.stderr.decode(errors="replace")[-600:]

"""A SIP-aware UDP relay that puts known jitter, loss and reordering into a call's media.

It runs as its own process (``python impair_relay.py ...``, stdlib only) so its timing is
its own: the pytest process that starts it can be descheduled without the relay's packets
going out late. Two parts:

- **SIP**: a stateless proxy (RFC 3261 §16.11) on one UDP port, configured as the
  gateway's outbound proxy (``trunks[].proxy``). A request is sent on to its first Route
  (after removing the relay's own) or to its Request-URI, with the relay's Via on top
  (``rport`` filled in on the one below) and, on a dialog-forming INVITE, a Record-Route,
  so ACK, BYE and re-INVITEs of both peers pass through it too. A response loses the
  relay's Via and goes to the next one. Every SDP body is rewritten: ``c=`` and the audio
  ``m=`` port (and ``a=rtcp``) name the relay's socket pair that faces the receiver, so
  both peers send their RTP and RTCP to the relay and neither is modified.
- **Media**: per call (Call-ID) two RTP/RTCP socket pairs, one facing the gateway and one
  facing the far end. Each RTP packet, in each direction, is dropped with probability
  ``loss``; the rest are held ``base + U(0, jitter)`` seconds (a seeded RNG per
  direction) after the kernel received them (SO_TIMESTAMPNS), so packets 20 ms apart
  overtake each other whenever their delays differ by more than 20 ms: that is the
  reordering. RTCP gets the same delay distribution and no loss (``--rtcp-undelayed``
  sends it at once). ``--burst-ms`` additionally drops everything towards the gateway for
  that long every ``--burst-every`` seconds (used to show the test can fail).

Nothing is summarised here: on ``stats`` (a line on stdin) it prints one JSON line with
every RTP packet it saw, per direction (``down``: far end -> gateway, ``up``: gateway ->
far end): sequence, timestamp, kernel arrival, when it was due, when it was sent (null if
dropped) and how long it waited in the socket before the relay read it. The test derives
loss, delay, reordering and host stalls from those. The first stdout line is
``{"sip_port": N}``; ``quit`` ends the process.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import os
import random
import re
import select
import selectors
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
# Linux's SO_TIMESTAMPNS (the "old" 64-bit timespec form); Python does not name it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_AVOID = range(30000, 36000)  # the gateway's RTP ranges in the integration tests
_COMPACT = {"v": "via", "m": "contact", "l": "content-length", "c": "content-type",
            "i": "call-id", "t": "to", "f": "from"}
_URI_HOSTPORT = re.compile(r"sips?:(?:[^@;>]*@)?([^;>:?]+)(?::(\d+))?", re.I)


# ------------------------------------------------------------------------------ SIP text

@dataclass
class SipText:
    """A SIP message as a start line, ordered (name, value) headers and a body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipText | None:
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep or not head.strip():
            return None
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # folded continuation
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return cls(lines[0], headers, body)

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0]

    @staticmethod
    def _key(name: str) -> str:
        low = name.lower()
        return _COMPACT.get(low, low)

    def get(self, name: str) -> str | None:
        key = self._key(name)
        return next((v for n, v in self.headers if self._key(n) == key), None)

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of a header (Via, Route, Record-Route), in order."""
        key = self._key(name)
        out: list[str] = []
        for n, v in self.headers:
            if self._key(n) == key:
                out += [p.strip() for p in _split_commas(v) if p.strip()]
        return out

    def set_values(self, name: str, values: list[str]) -> None:
        """Replace a header by one line per value, where its first occurrence was."""
        key = self._key(name)
        at = next((i for i, (n, _) in enumerate(self.headers) if self._key(n) == key), None)
        self.headers = [(n, v) for n, v in self.headers if self._key(n) != key]
        at = len(self.headers) if at is None else at
        self.headers[at:at] = [(name, v) for v in values]

    def __bytes__(self) -> bytes:
        headers = [(n, v) for n, v in self.headers if self._key(n) != "content-length"]
        headers.append(("Content-Length", str(len(self.body))))
        head = "\r\n".join([self.start, *(f"{n}: {v}" for n, v in headers)])
        return head.encode() + b"\r\n\r\n" + self.body


def _split_commas(value: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def uri_hostport(text: str) -> tuple[str, int]:
    """Host and port (default 5060) of the first SIP URI in ``text``."""
    m = _URI_HOSTPORT.search(text)
    if m is None:
        raise ValueError(f"no SIP URI in {text!r}")
    return m.group(1), int(m.group(2) or 5060)


def via_params(via: str) -> tuple[str, int, dict[str, str]]:
    """sent-by host, port and parameters of one Via value."""
    proto_sentby, _, params = via.partition(";")
    sent_by = proto_sentby.split()[-1]
    host, _, port = sent_by.partition(":")
    out: dict[str, str] = {}
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k:
            out[k.lower()] = v
    return host, int(port or 5060), out


# ------------------------------------------------------------------------------ media

@dataclass
class Leg:
    """The relay's RTP/RTCP sockets facing one peer, and where that peer receives."""

    rtp: socket.socket
    rtcp: socket.socket
    peer_rtp: tuple[str, int] | None = None
    peer_rtcp: tuple[str, int] | None = None

    @property
    def port(self) -> int:
        return int(self.rtp.getsockname()[1])


@dataclass
class Direction:
    """The impairment of one direction, and the record of every RTP packet in it."""

    rng: random.Random
    packets: list[dict[str, Any]] = field(default_factory=list)
    rtcp: int = 0


@dataclass
class Session:
    """One call's media: ``gw`` faces the gateway, ``far`` the far end; ``down`` is far end
    to gateway, ``up`` the other way, each with its own seeded RNG."""

    call_id: str
    gw: Leg
    far: Leg
    dirs: dict[str, Direction]


def _open_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(200):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((HOST, 0))
        port = rtp.getsockname()[1]
        if port % 2 or port in _AVOID or port + 1 in _AVOID:
            rtp.close()
            continue
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        for s in (rtp, rtcp):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return rtp, rtcp
    raise RuntimeError("no even/odd UDP port pair free for the relay")


def _recv(sock: socket.socket) -> tuple[bytes, tuple[str, int], float] | None:
    """One datagram, its source and the kernel's arrival time (wall clock)."""
    try:
        data, anc, _, addr = sock.recvmsg(4096, socket.CMSG_SPACE(16))
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:  # a pending ICMP error, consumed by this call: read on
        return b"", ("", 0), 0.0
    stamp = time.time()
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack("qq", payload[:16])
            stamp = sec + nsec * 1e-9
    return data, (str(addr[0]), int(addr[1])), stamp


class Relay:
    """The whole relay: one SIP socket, media sessions, and a heap of delayed sends."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.gateway = (HOST, args.gateway_port)
        self.upstream = (HOST, args.upstream_port)
        self.sel = selectors.DefaultSelector()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, args.sip_port))
        self.sip.setblocking(False)
        self.sip_port = int(self.sip.getsockname()[1])
        self.sel.register(self.sip, selectors.EVENT_READ, ("sip", None))
        self.sel.register(sys.stdin, selectors.EVENT_READ, ("stdin", None))
        self.sessions: dict[str, Session] = {}
        self.heap: list[tuple[float, int, socket.socket, bytes, tuple[str, int], Any]] = []
        self.order = itertools.count()
        self.sip_log: list[str] = []
        self.running = True

    # -------------------------------------------------------------------- SIP

    def _log(self, text: str) -> None:
        self.sip_log.append(text)
        print(f"{time.time():.3f} {text}", file=sys.stderr, flush=True)

    def on_sip(self, data: bytes, src: tuple[str, int]) -> None:
        msg = SipText.parse(data)
        if msg is None:
            return  # keep-alive CRLFs and junk
        try:
            out = self._response(msg) if msg.is_response else self._request(msg, src)
        except (ValueError, IndexError) as exc:
            self._log(f"dropped {msg.start[:60]!r} from {src}: {exc}")
            return
        if out is None:
            self._log(f"dropped {msg.start[:60]!r} from {src}: not via the relay")
            return
        dest, msg = out
        if msg.body and "sdp" in (msg.get("content-type") or "").lower():
            msg.body = self._rewrite_sdp(msg, from_gateway=src == self.gateway)
        self._log(f"{src[1]} -> {dest[1]}: {msg.start[:70]}")
        self.sip.sendto(bytes(msg), dest)

    def _ours(self, hostport: tuple[str, int]) -> bool:
        return hostport == (HOST, self.sip_port)

    def _request(self, msg: SipText, src: tuple[str, int]) -> tuple[tuple[str, int], SipText]:
        routes = msg.values("Route")
        routed = bool(routes) and self._ours(uri_hostport(routes[0]))
        if routed:
            routes = routes[1:]
            msg.set_values("Route", routes)
        if routes:
            dest = uri_hostport(routes[0])
        elif routed or src != self.gateway:
            dest = uri_hostport(msg.start.split(" ")[1])
        else:  # the gateway's own request, sent to us as its outbound proxy
            dest = self.upstream
        vias = msg.values("Via")
        top_host, top_port, params = via_params(vias[0])
        if "rport" in params and not params["rport"]:
            vias[0] = vias[0].replace(";rport", f";received={src[0]};rport={src[1]}", 1)
        branch = "z9hG4bK" + hashlib.sha1(
            (params.get("branch", "") + vias[0].split(";")[0]).encode()).hexdigest()[:20]
        msg.set_values("Via", [f"SIP/2.0/UDP {HOST}:{self.sip_port};branch={branch}", *vias])
        to = msg.get("to") or ""
        if msg.method == "INVITE" and ";tag=" not in to.replace(" ", ""):
            rr = msg.values("Record-Route")
            msg.set_values("Record-Route", [f"<sip:{HOST}:{self.sip_port};lr>", *rr])
        return dest, msg

    def _response(self, msg: SipText) -> tuple[tuple[str, int], SipText] | None:
        vias = msg.values("Via")
        host, port, _ = via_params(vias[0])
        if not self._ours((host, port)) or len(vias) < 2:
            return None
        msg.set_values("Via", vias[1:])
        host, port, params = via_params(vias[1])
        if params.get("rport"):
            return (params.get("received") or host, int(params["rport"])), msg
        return (params.get("received") or host, port), msg

    def _rewrite_sdp(self, msg: SipText, *, from_gateway: bool) -> bytes:
        call_id = msg.get("call-id") or ""
        session = self.sessions.get(call_id)
        if session is None:
            seed = self.args.seed + 2 * len(self.sessions)
            session = Session(call_id, Leg(*_open_pair()), Leg(*_open_pair()),
                              {"down": Direction(random.Random(seed)),
                               "up": Direction(random.Random(seed + 1))})
            for leg, name in ((session.gw, "gw"), (session.far, "far")):
                for s in (leg.rtp, leg.rtcp):
                    self.sel.register(s, selectors.EVENT_READ, (name, session))
            self.sessions[call_id] = session
        sender = session.gw if from_gateway else session.far
        facing_receiver = session.far if from_gateway else session.gw
        lines = msg.body.decode().split("\r\n")
        addr: str | None = None
        rtcp_port: int | None = None
        port: int | None = None
        for i, line in enumerate(lines):
            if line.startswith("c=IN IP4 "):
                addr = addr or line.split()[-1]
                lines[i] = f"c=IN IP4 {HOST}"
            elif line.startswith("m=audio ") and port is None:
                parts = line.split(" ")
                port = int(parts[1])
                if port:
                    parts[1] = str(facing_receiver.port)
                lines[i] = " ".join(parts)
            elif line.startswith("a=rtcp:"):
                rtcp_port = int(line[7:].split()[0])
                lines[i] = f"a=rtcp:{facing_receiver.port + 1}" + (
                    f" IN IP4 {HOST}" if len(line.split()) > 1 else "")
        if addr is not None and port:
            sender.peer_rtp = (addr, port)
            sender.peer_rtcp = (addr, rtcp_port or port + 1)
        return "\r\n".join(lines).encode()

    # -------------------------------------------------------------------- media

    def on_media(self, which: str, session: Session, sock: socket.socket,
                 data: bytes, stamp: float, read_at: float) -> None:
        src_leg, dst_leg = (session.gw, session.far) if which == "gw" else (session.far,
                                                                            session.gw)
        name = "up" if which == "gw" else "down"
        d = session.dirs[name]
        is_rtcp = len(data) >= 2 and 200 <= data[1] <= 204
        on_rtcp_socket = sock is src_leg.rtcp
        out_sock = dst_leg.rtcp if on_rtcp_socket else dst_leg.rtp
        dest = dst_leg.peer_rtcp if on_rtcp_socket else dst_leg.peer_rtp
        if dest is None:
            return
        a = self.args
        if is_rtcp:
            d.rtcp += 1
            delay = 0.0 if a.rtcp_undelayed else a.base + d.rng.uniform(0.0, a.jitter)
            self._schedule(stamp + delay, out_sock, data, dest, None)
            return
        if len(data) < 12:
            return
        seq, ts = struct.unpack_from("!HI", data, 2)
        lost = d.rng.random() < a.loss
        delay = a.base + d.rng.uniform(0.0, a.jitter)
        if name == "down" and a.burst_ms > 0 and d.packets:
            t = stamp - d.packets[0]["arrival"]
            if t % a.burst_every < a.burst_ms / 1000.0 and t > a.burst_every / 2:
                lost = True
        record: dict[str, Any] = {"seq": seq, "ts": ts, "arrival": stamp,
                                  "read_lag": read_at - stamp, "due": None, "sent": None}
        d.packets.append(record)
        if lost:
            return
        record["due"] = stamp + delay
        self._schedule(stamp + delay, out_sock, data, dest, record)

    def _schedule(self, due: float, sock: socket.socket, data: bytes,
                  dest: tuple[str, int], record: dict[str, Any] | None) -> None:
        heapq.heappush(self.heap, (due, next(self.order), sock, data, dest, record))

    def _send_due(self) -> None:
        while self.heap and self.heap[0][0] <= time.time() + 0.0002:
            _, _, sock, data, dest, record = heapq.heappop(self.heap)
            try:
                sock.sendto(data, dest)
            except OSError:  # e.g. the receiver closed its port (ICMP unreachable)
                if record is not None:
                    record["send_error"] = True
                continue
            if record is not None:
                record["sent"] = time.time()

    # -------------------------------------------------------------------- loop

    def on_stdin(self) -> None:
        line = sys.stdin.readline()
        cmd = line.strip()
        if cmd == "stats":
            self._print({"sessions": [
                {"call_id": s.call_id, **{k: {"packets": v.packets, "rtcp": v.rtcp}
                                          for k, v in s.dirs.items()}}
                for s in self.sessions.values()], "sip_log": self.sip_log[-60:]})
        elif cmd in ("quit", ""):
            self.running = False

    @staticmethod
    def _print(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def run(self) -> None:
        self._print({"sip_port": self.sip_port, "priority": _raise_priority()})
        while self.running:
            timeout = max(0.0, self.heap[0][0] - time.time()) if self.heap else 0.5
            for key, _ in self.sel.select(timeout):
                kind, session = key.data
                if kind == "stdin":
                    self.on_stdin()
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                while (got := _recv(sock)) is not None:
                    data, src, stamp = got
                    if not data:
                        continue
                    if kind == "sip":
                        self.on_sip(data, src)
                    else:
                        self.on_media(kind, session, sock, data, stamp, time.time())
                self._send_due()
            self._send_due()


def _raise_priority() -> str:
    """Real-time scheduling when allowed (it needs about 1 ms of CPU a second), so a loaded
    host delays the relay's sends as little as possible; else a better nice; else none."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "SCHED_FIFO"
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except OSError:
        return "normal"


# ------------------------------------------------------------------------------ test side

class RelayProcess:
    """The relay as a child process of the test: start(), stats(), stop()."""

    def __init__(self, gateway_port: int, upstream_port: int, log_path: str,
                 **options: float | bool) -> None:
        self.argv = [sys.executable, __file__, "--gateway-port", str(gateway_port),
                     "--upstream-port", str(upstream_port)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                self.argv.append(flag)
            elif value is not False:
                self.argv += [flag, str(value)]
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.sip_port = 0
        self.priority = ""

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the relay did not answer in {timeout} s "
                               f"(exit {self.proc.poll()}); see {self.log_path}")
        result: dict[str, Any] = json.loads(line)
        return result

    def start(self) -> int:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True)
        hello = self._line(10.0)
        self.sip_port, self.priority = int(hello["sip_port"]), str(hello["priority"])
        return self.sip_port

    def stats(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._line(10.0)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateway-port", type=int, required=True,
                   help="the gateway's SIP port on 127.0.0.1 (tells its SDP from the far end's)")
    p.add_argument("--upstream-port", type=int, required=True,
                   help="the trunk's SIP port on 127.0.0.1: the gateway's requests go there")
    p.add_argument("--sip-port", type=int, default=0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--loss", type=float, default=0.03)
    p.add_argument("--base", type=float, default=0.020, help="fixed delay, s")
    p.add_argument("--jitter", type=float, default=0.030, help="uniform extra delay 0..J, s")
    p.add_argument("--rtcp-undelayed", action="store_true")
    p.add_argument("--burst-ms", type=float, default=0.0)
    p.add_argument("--burst-every", type=float, default=3.0)
    Relay(p.parse_args(argv)).run()


if __name__ == "__main__":
    main()

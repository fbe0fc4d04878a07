"""Hostile-input helpers for daemon tests: torture messages, mutations, a bounded flood.

Everything here sends to loopback only. Test sockets bind a loopback address of their own
(127.0.0.x, x >= 2) so a test can listen on fixed SIP ports such as 5060 without colliding
with a daemon or peer of a parallel test on 127.0.0.1.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .audio import write_tone_wav
from .gateway_proc import GatewayProcess

TORTURE_DIR = Path(__file__).resolve().parents[1] / "data" / "rfc4475"


def torture_messages() -> dict[str, bytes]:
    """The RFC 4475 messages by name, from tests/data/rfc4475 (all 49 must be there)."""
    return {p.stem: p.read_bytes() for p in sorted(TORTURE_DIR.glob("*.dat"))}


def pick_loopback(ports: Sequence[int], rng: random.Random | None = None) -> str:
    """A 127.0.0.x address on which every UDP port in ``ports`` can be bound right now."""
    rng = rng or random.Random()
    candidates = list(range(2, 255))
    rng.shuffle(candidates)
    for x in candidates:
        host = f"127.0.0.{x}"
        ok = True
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return host
    raise RuntimeError(f"no loopback address with UDP ports {list(ports)} free")


def gateway_yaml(tmp: Path, sip_port: int, trunk_host: str, trunk_port: int) -> str:
    """Two simulated phones dialling each other, and one trunk at the test's own socket.

    The trunk makes the test socket a trusted source (the security filter challenges
    unknown ones); no line registers on it, so it only ever sees keep-alives.
    """
    return f"""
gateway:
  name: hostile-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  codecs: [PCMU, PCMA]
trunks:
  - name: tester
    registrar: {trunk_host}:{trunk_port}
    expires: 3600
lines:
  - name: "1"
    backend: sim
    number: "101"
  - name: "2"
    backend: sim
    number: "102"
dialplan:
  digit_map: "(1xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
"""


def connect_local_call(gw: GatewayProcess, tmp: Path, tone_hz: float = 440.0,
                       tone_dbfs: float = -12.0) -> None:
    """Line 1 dials 102, line 2 answers, line 1 plays a tone into the call."""
    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits="102")
    gw.wait_until("phone 2 rings",
                  lambda: bool(gw.line("2")["ringing"]) or gw.line("2")["state"] == "ringing")
    gw.phone("2", "offhook")
    gw.wait_until("both connected",
                  lambda: gw.line("1")["state"] == gw.line("2")["state"] == "connected")
    wav = write_tone_wav(tmp / f"tone-{int(tone_hz)}.wav", tone_hz, tone_dbfs, seconds=600.0)
    gw.phone("1", "play", path=str(wav))


def hang_up(gw: GatewayProcess) -> None:
    """Both phones back on hook; waits for idle."""
    gw.phone("1", "onhook")
    gw.phone("2", "onhook")
    gw.wait_until("both idle", lambda: gw.line("1")["state"] == gw.line("2")["state"] == "idle")


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- mutation ---------------------------------------------------------------------------

_TEMPLATES = [
    b"INVITE sip:199@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK{n};rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:flood@{src}>;tag=f{n}\r\nTo: <sip:199@{host}>\r\n"
    b"Call-ID: flood-{n}@{src}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{src}>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: {cl}\r\n\r\n{sdp}",
    b"REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK{n};rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:101@{host}>;tag=r{n}\r\nTo: <sip:101@{host}>\r\n"
    b"Call-ID: reg-{n}@{src}\r\nCSeq: {n} REGISTER\r\nContact: <sip:101@{src}>\r\n"
    b"Expires: 3600\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK{n};rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:probe@{src}>;tag=o{n}\r\nTo: <sip:{host}>\r\n"
    b"Call-ID: opt-{n}@{src}\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bK{n}\r\n"
    b"From: <sip:101@{host}>;tag=a{n}\r\nTo: <sip:x@{src}>;tag=b{n}\r\n"
    b"Call-ID: resp-{n}@{src}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:101@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK{n};rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:x@{src}>;tag=a{n}\r\nTo: <sip:101@{host}>;tag=b{n}\r\n"
    b"Call-ID: bye-{n}@{src}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
]
_SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n"
        b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
_TOKENS = [b"\r\n", b"\r\n\r\n", b";", b",", b":", b"<", b">", b'"', b"\\", b"%00", b" ",
           b"\t", b"SIP/2.0", b"Via: ", b"Content-Length: 99999", b"Content-Length: -1",
           b"CSeq: 4294967296 INVITE", b"Max-Forwards: 0", b"Require: 100rel", b"\x00",
           b"\xff\xfe", b"sip:", b"tag=", b"branch=z9hG4bK", b"rport", b"[::1]", b"=" * 50]


def valid_seed(n: int, host: str, src: str, rng: random.Random) -> bytes:
    """A well-formed request or response from the templates, numbered ``n``."""
    template = rng.choice(_TEMPLATES)
    return (template.replace(b"{host}", host.encode()).replace(b"{src}", src.encode())
            .replace(b"{n}", str(n).encode()).replace(b"{cl}", str(len(_SDP)).encode())
            .replace(b"{sdp}", _SDP))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to eight random edits: flips, deletions, duplications, inserted SIP tokens."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            del buf[pos:pos + rng.randint(1, 40)]
        elif op == 2:
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start:start + rng.randint(1, 200)]
        elif op == 4:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            lines = bytes(buf).split(b"\r\n")
            rng.shuffle(lines)
            buf = bytearray(b"\r\n".join(lines))
    return bytes(buf[:65000])


def flood_datagrams(count: int, seeds: Iterable[bytes], host: str, src: str,
                    rng: random.Random) -> list[bytes]:
    """``count`` datagrams: a mix of mutated seeds, valid templates and random bytes."""
    pool = list(seeds)
    out: list[bytes] = []
    for n in range(count):
        kind = rng.random()
        if kind < 0.45 and pool:
            out.append(mutate(rng.choice(pool), rng))
        elif kind < 0.75:
            out.append(mutate(valid_seed(n, host, src, rng), rng))
        elif kind < 0.9:
            out.append(valid_seed(n, host, src, rng))
        else:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 1400))))
    return out


@dataclass
class FloodReport:
    """What the flood did, for the test to print and assert on."""

    sent: int = 0
    seconds: float = 0.0
    responses: int = 0
    send_errors: int = 0
    max_backlog: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Datagrams per second actually sent."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def run_flood(datagrams: Sequence[bytes], dest: tuple[str, int], sockets: Sequence[socket.socket],
              max_seconds: float = 60.0, pace_every: int = 50, pace_sleep: float = 0.002,
              processed: Callable[[], int] | None = None, max_backlog: int = 60
              ) -> FloodReport:
    """Send ``datagrams`` round-robin from ``sockets`` to ``dest``; count what comes back.

    A flood the kernel drops before any SIP code sees it tests nothing, so sending is
    closed-loop when ``processed`` is given (how many datagrams the daemon has taken in so
    far): after each burst of ``pace_every`` the sender waits while more than
    ``max_backlog`` are still queued. Stops after ``max_seconds`` whatever remains.
    """
    report = FloodReport()
    for s in sockets:
        s.setblocking(False)
    start = time.monotonic()
    for i, data in enumerate(datagrams):
        if time.monotonic() - start > max_seconds:
            break
        try:
            sockets[i % len(sockets)].sendto(data, dest)
            report.sent += 1
        except OSError:
            report.send_errors += 1
        if i % pace_every == pace_every - 1:
            _drain(sockets, report)
            time.sleep(pace_sleep)
            while processed is not None and time.monotonic() - start < max_seconds:
                backlog = report.sent - processed()
                report.max_backlog = max(report.max_backlog, backlog)
                if backlog <= max_backlog:
                    break
                _drain(sockets, report)
                time.sleep(0.005)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        _drain(sockets, report)
        time.sleep(0.05)
    report.seconds = time.monotonic() - start
    return report


def _drain(sockets: Sequence[socket.socket], report: FloodReport) -> None:
    for s in sockets:
        while True:
            try:
                data = s.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if data.startswith(b"SIP/2.0 "):
                report.responses += 1
                code = data[8:11]
                if code.isdigit():
                    report.statuses[int(code)] = report.statuses.get(int(code), 0) + 1

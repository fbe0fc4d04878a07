"""baresip 1.0 as a scriptable far-end phone for integration tests.

One `Baresip` object is one baresip process with one SIP account, its own config dir
(`-f`, so ~/.baresip is never touched) and a ctrl_tcp connection on 127.0.0.1.

What was found to work headless with Debian 12's baresip 1.0.0:

- `net_interface 127.0.0.1` keeps SIP and the SDP/RTP address on loopback (without it
  baresip advertises the first non-loopback address in its SDP).
- Audio source: `ausine,<Hz>` (the device string is the frequency, 10..20000 Hz; the
  module only runs with `ausrc_srate 48000` and `ausrc_channels 2`). A WAV file source
  uses `aufile,<path>`; the file is converted with sox to 48 kHz stereo S16 because
  aufile insists on the ausrc format.
- Audio player: `aubridge,<unused name>` works without a sound card; it simply discards.
- Recording: the `sndfile` filter writes `dump-YYYY-MM-DD-HH-MM-SS-enc.wav` (what we
  sent) and `...-dec.wav` (what we received, decoded; 8 kHz mono for G.711) into
  `snd_path` for every call. The header is finalised when the call's audio stops, so
  read recordings after CALL_CLOSED. Two calls starting in the same second overwrite
  each other's files.
- ctrl_tcp speaks JSON in netstrings. Commands (menu module): `dial <uri>`, `accept`,
  `hangup`, `listcalls`, `reginfo`, `sndcode <digit>` (RFC 4733 telephone-event when the
  peer offers it). Events arrive unsolicited on the same connection: REGISTER_OK,
  REGISTER_FAIL, CALL_INCOMING, CALL_RINGING, CALL_PROGRESS, CALL_ESTABLISHED,
  CALL_CLOSED, CALL_DTMF_START (param = digit), CALL_DTMF_END, CALL_RTPESTAB, ...
- The TLS listener sits on SIP port + 1 (see ports.free_sip_port()). It needs
  `sip_certificate` (one PEM file: certificate chain then private key); `sip_cafile`
  is the CA it trusts for the TLS connections it opens. Pass `tls_certificate` and
  `tls_cafile`; `tls_uri` is then how the gateway reaches this phone over TLS, and
  `transport="tls"` makes the account (registration, outgoing calls) use TLS.
- SRTP with SDES: `mediaenc="srtp-mand"` (RTP/SAVP, keys required), `"srtp"`
  (best effort: RTP/AVP with a=crypto) or `"srtp-mandf"` (RTP/SAVPF) loads srtp.so and
  sets the account's `mediaenc`. baresip 1.0 does SDES over plain UDP signalling too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from ..netns import Namespace

__all__ = ["Baresip", "BaresipError", "baresip_binary"]

AnswerMode = Literal["manual", "auto", "early"]
_MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules")
_SOURCE_RATE = 48000
_SOURCE_CHANNELS = 2
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BaresipError(RuntimeError):
    """baresip failed to start, refused a command or did not produce an event in time."""


def baresip_binary() -> str | None:
    """Path of the baresip executable, or None when it is not installed."""
    return shutil.which("baresip")


def _module_dir() -> str:
    for candidate in _MODULE_DIRS:
        if os.path.isfile(os.path.join(candidate, "ctrl_tcp.so")):
            return candidate
    raise BaresipError(f"baresip modules (ctrl_tcp.so) not found in {_MODULE_DIRS}")


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def _write_silence_wav(path: Path, seconds: float) -> None:
    """A silent 48 kHz stereo WAV for aufile when the test wants no tone at all."""
    frames = int(_SOURCE_RATE * seconds)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(_SOURCE_CHANNELS)
        w.setsampwidth(2)
        w.setframerate(_SOURCE_RATE)
        w.writeframes(bytes(frames * _SOURCE_CHANNELS * 2))


class Baresip:
    """A baresip phone on 127.0.0.1 driven over ctrl_tcp; one SIP account per process.

    With `registrar` set, the account registers as `sip:<user>@<registrar>` with digest
    credentials (`user`, `password`, defaulting to `name`). Without it, nothing is
    registered and the phone is called directly at `sip:<name>@127.0.0.1:<sip_port>`.

    Sound sent: `tone` Hz from ausine (default 1000), or `source_wav` (any format sox
    reads), or silence with `tone=None`. aufile ends the call (AUDIO_ERROR, then
    CALL_CLOSED) when its file runs out, so WAV sources are padded with silence, or
    repeated with `loop_source=True`, to `source_seconds`.
    """

    def __init__(
        self,
        name: str,
        *,
        sip_port: int,
        ctrl_port: int,
        tmpdir: Path | str | None = None,
        user: str | None = None,
        password: str | None = None,
        registrar: str | None = None,
        regint: int = 600,
        codecs: Sequence[str] = ("PCMU",),
        tone: int | None = 1000,
        source_wav: Path | str | None = None,
        loop_source: bool = False,
        source_seconds: float = 60.0,
        answer_mode: AnswerMode = "manual",
        record: bool = True,
        ptime: int = 20,
        start_timeout: float = 10.0,
        mediaenc: str | None = None,
        tls_certificate: Path | str | None = None,
        tls_cafile: Path | str | None = None,
        transport: Literal["udp", "tcp", "tls"] | None = None,
        rtcp_mux: bool = False,
        netns: Namespace | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        if ctrl_port in (sip_port, sip_port + 1):
            raise ValueError(
                f"ctrl_port {ctrl_port} collides with SIP {sip_port} or its TLS port "
                f"{sip_port + 1}"
            )
        if tone is not None and not 10 <= tone <= 20000:
            raise ValueError(f"tone {tone} Hz: ausine accepts 10..20000 Hz")
        if tone is not None and source_wav is not None:
            raise ValueError("give either tone or source_wav, not both")
        if not codecs:
            raise ValueError("codecs: expected at least one, e.g. ['PCMU']")
        if mediaenc not in (None, "srtp", "srtp-mand", "srtp-mandf"):
            raise ValueError(f"mediaenc {mediaenc!r}: expected srtp, srtp-mand or srtp-mandf")
        if transport == "tls" and tls_certificate is None and registrar is None:
            raise ValueError("transport='tls' without a registrar needs tls_certificate")
        if registrar is not None and registrar.startswith("sip:"):
            registrar = registrar[4:]
        self.name = name
        self.sip_port = sip_port
        self.ctrl_port = ctrl_port
        self.user = user or name
        self.password = password
        self.registrar = registrar
        self.regint = regint
        self.codecs = list(codecs)
        self.tone = tone
        self.source_wav = Path(source_wav) if source_wav is not None else None
        self.loop_source = loop_source
        self.source_seconds = source_seconds
        self.answer_mode = answer_mode
        self.record = record
        self.ptime = ptime
        self.start_timeout = start_timeout
        self.mediaenc = mediaenc
        self.tls_certificate = Path(tls_certificate) if tls_certificate is not None else None
        self.tls_cafile = Path(tls_cafile) if tls_cafile is not None else None
        self.transport = transport
        self.rtcp_mux = rtcp_mux  # offer and accept a=rtcp-mux (RFC 5761)
        # In a network namespace (tests/integration/netns.py): 127.0.0.1 is that
        # namespace's loopback, and ctrl_tcp is reached from a socket made inside it.
        self.netns = netns
        # SIP and RTP address (net_interface, sip_listen): 127.0.0.1 unless the phone sits
        # in a namespace and must be reached over its veth (ctrl_tcp stays on 127.0.0.1).
        self.address = address
        self._own_tmpdir = tmpdir is None
        base = Path(tmpdir) if tmpdir is not None else Path(tempfile.mkdtemp(prefix="bs-"))
        self.confdir = base / f"baresip-{name}-{sip_port}"
        self.recdir = self.confdir / "recordings"
        self.log_path = self.confdir / "baresip.log"

        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._responses: dict[str, dict[str, Any]] = {}
        self._send_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ config

    @property
    def aor(self) -> str:
        """The account's address of record (what others dial to reach it via a registrar)."""
        host = self.registrar if self.registrar is not None else f"{self.address}:{self.sip_port}"
        return f"sip:{self.user}@{host}"

    @property
    def direct_uri(self) -> str:
        """URI that reaches this phone without any registrar."""
        return f"sip:{self.user}@{self.address}:{self.sip_port}"

    @property
    def tls_port(self) -> int:
        """baresip's SIP/TLS listening port: always the SIP port + 1."""
        return self.sip_port + 1

    @property
    def tls_uri(self) -> str:
        """URI that reaches this phone directly over TLS (needs `tls_certificate`)."""
        return f"sip:{self.user}@127.0.0.1:{self.tls_port};transport=tls"

    def _source_setting(self) -> str:
        if self.tone is not None:
            return f"ausine,{int(self.tone)}"
        target = self.confdir / "source.wav"
        if self.source_wav is None:
            _write_silence_wav(target, self.source_seconds)
            return f"aufile,{target}"
        sox = shutil.which("sox")
        if sox is None:
            raise BaresipError("source_wav needs sox to convert to 48 kHz stereo")
        converted = self.confdir / "source-converted.wav"
        subprocess.run(
            [sox, str(self.source_wav), "-r", str(_SOURCE_RATE), "-c", str(_SOURCE_CHANNELS),
             "-b", "16", "-e", "signed-integer", str(converted)],
            check=True,
            capture_output=True,
        )
        with wave.open(str(converted), "rb") as r:
            pcm = np.frombuffer(r.readframes(r.getnframes()), "<i2")
        need = int(self.source_seconds * _SOURCE_RATE) * _SOURCE_CHANNELS
        if len(pcm) < need and len(pcm) > 0:
            if self.loop_source:
                pcm = np.tile(pcm, -(-need // len(pcm)))[:need]
            else:
                pcm = np.concatenate([pcm, np.zeros(need - len(pcm), "<i2")])
        with wave.open(str(target), "wb") as w:
            w.setnchannels(_SOURCE_CHANNELS)
            w.setsampwidth(2)
            w.setframerate(_SOURCE_RATE)
            w.writeframes(pcm.astype("<i2").tobytes())
        return f"aufile,{target}"

    def config_text(self) -> str:
        """The baresip `config` file contents for this phone."""
        modules = ["g711.so", "ausine.so", "aufile.so", "aubridge.so"]
        if self.record:
            modules.append("sndfile.so")
        if self.mediaenc is not None:
            modules.append("srtp.so")
        tls_lines = ""
        if self.tls_certificate is not None:
            tls_lines += f"sip_certificate\t\t{self.tls_certificate}\n"
        if self.tls_cafile is not None:
            tls_lines += f"sip_cafile\t\t{self.tls_cafile}\n"
        module_lines = "\n".join(f"module\t\t\t{m}" for m in modules)
        player = f"aubridge,bl-discard-{secrets.token_hex(3)}"
        return f"""# Generated by tests/integration/peers/baresip.py for one test run.
poll_method\t\tepoll
net_interface\t\t{self.address}
sip_listen\t\t{self.address}:{self.sip_port}
call_local_timeout\t120
call_max_calls\t\t4
audio_player\t\t{player}
audio_alert\t\t{player}
audio_source\t\t{self._source_setting()}
ausrc_srate\t\t{_SOURCE_RATE}
ausrc_channels\t\t{_SOURCE_CHANNELS}
audio_level\t\tno
rtp_ports\t\t20000-29999
rtp_timeout\t\t0
rtcp_mux\t\t{"yes" if self.rtcp_mux else "no"}
statmode_default\toff
ringback_disabled\tyes
module_path\t\t{_module_dir()}
{module_lines}
module_app\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}
snd_path\t\t{self.recdir}
{tls_lines}"""

    def account_line(self) -> str:
        """The `accounts` file line: AOR plus answer mode, codecs and registration."""
        params = [
            f"answermode={self.answer_mode}",
            "audio_codecs=" + ",".join(c.lower() for c in self.codecs),
            f"ptime={self.ptime}",
        ]
        if self.mediaenc is not None:
            params.append(f"mediaenc={self.mediaenc}")
        if self.registrar is None:
            params.append("regint=0")
        else:
            params.append(f"regint={self.regint}")
            params.append(f"auth_user={self.user}")
            if self.password is not None:
                params.append(f"auth_pass={self.password}")
        uri = self.aor if self.transport is None else f"{self.aor};transport={self.transport}"
        return f"<{uri}>;" + ";".join(params)

    def write_config(self) -> None:
        """Write config, accounts and an empty contacts file into the config dir."""
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.recdir.mkdir(exist_ok=True)
        (self.confdir / "config").write_text(self.config_text())
        (self.confdir / "accounts").write_text(self.account_line() + "\n")
        (self.confdir / "contacts").write_text("")

    # --------------------------------------------------------------- lifecycle

    @property
    def is_running(self) -> bool:
        """True while the baresip process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start baresip and return once its ctrl_tcp socket accepts a connection."""
        if self.is_running:
            raise BaresipError(f"baresip {self.name} is already running")
        binary = baresip_binary()
        if binary is None:
            raise BaresipError("baresip is not installed (apt-get install baresip-core)")
        self.write_config()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._closed = False
        prefix = self.netns.prefix if self.netns is not None else []
        self._proc = subprocess.Popen(
            [*prefix, binary, "-v", "-f", str(self.confdir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(self.confdir),
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup_handles()
                raise BaresipError(
                    f"baresip {self.name} exited with {code} during start-up; log:\n"
                    f"{self.log_text()}"
                )
            try:
                if self.netns is None:
                    sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.2)
                else:
                    sock = self.netns.connect_tcp(("127.0.0.1", self.ctrl_port), timeout=0.2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(
                        f"baresip {self.name}: ctrl_tcp 127.0.0.1:{self.ctrl_port} did not "
                        f"open within {self.start_timeout} s; log:\n{self.log_text()}"
                    ) from None
                time.sleep(0.05)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(
            target=self._read_loop, name=f"baresip-{self.name}-events", daemon=True
        )
        self._reader.start()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM baresip (it unregisters), SIGKILL after `timeout`; idempotent."""
        self._closed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._cleanup_handles()

    def _cleanup_handles(self) -> None:
        self._closed = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
            self._reader = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        """Stop and remove a config dir this object created itself."""
        self.stop()
        if self._own_tmpdir:
            shutil.rmtree(self.confdir.parent, ignore_errors=True)

    def __enter__(self) -> Baresip:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- ctrl_tcp I/O

    def _read_loop(self) -> None:
        """Split the ctrl_tcp byte stream into netstrings; file events and responses."""
        sock = self._sock
        if sock is None:
            return
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0 or not buf[:colon].isdigit():
                    if colon >= 0:
                        buf = b""  # resynchronise on garbage; never seen in practice
                    break
                length = int(buf[:colon])
                end = colon + 1 + length
                if len(buf) < end + 1:
                    break
                payload, buf = buf[colon + 1:end], buf[end + 1:]
                self._dispatch(payload)
        with self._cond:
            self._cond.notify_all()

    def _dispatch(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        msg["_t"] = time.monotonic()
        with self._cond:
            if msg.get("event"):
                self._events.append(msg)
            elif msg.get("response"):
                self._responses[str(msg.get("token", ""))] = msg
            self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a ctrl_tcp command and return its text output; raise if it fails."""
        sock = self._sock
        if sock is None or not self.is_running:
            raise BaresipError(f"baresip {self.name} is not running")
        token = secrets.token_hex(6)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        with self._send_lock:
            sock.sendall(_netstring(body))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_running:
                    raise BaresipError(
                        f"baresip {self.name}: no response to {command!r} {params!r}"
                    )
                self._cond.wait(min(remaining, 0.2))
            response = self._responses.pop(token)
        if not response.get("ok", False):
            raise BaresipError(
                f"baresip {self.name}: {command!r} {params!r} failed: {response.get('data')!r}"
            )
        return str(response.get("data", ""))

    # ---------------------------------------------------------------- events

    @property
    def events(self) -> list[dict[str, Any]]:
        """A snapshot of every ctrl_tcp event received so far, oldest first."""
        with self._cond:
            return list(self._events)

    def mark(self) -> int:
        """Event count now; pass as `since=` to ignore events that came before."""
        with self._cond:
            return len(self._events)

    def wait_for_event(
        self, type: str, timeout: float = 10.0, *, since: int = 0
    ) -> dict[str, Any]:
        """Return the oldest not-yet-returned event of `type` (index >= since).

        Each event is handed out once, so two waits for CALL_ESTABLISHED in one test
        see two different calls. Raises BaresipError on timeout or if baresip died.
        """
        return self.wait_for_any((type,), timeout, since=since)

    def wait_for_any(
        self, types: Sequence[str], timeout: float = 10.0, *, since: int = 0
    ) -> dict[str, Any]:
        """Like wait_for_event, for whichever of `types` comes first (e.g. OK or FAIL)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self._events)):
                    if i not in self._consumed and self._events[i].get("type") in types:
                        self._consumed.add(i)
                        return self._events[i]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_running:
                    seen = [e.get("type") for e in self._events[since:]]
                    why = "timed out" if self.is_running else "baresip is not running"
                    raise BaresipError(
                        f"baresip {self.name}: {why} waiting {timeout} s for {list(types)}; "
                        f"events since {since}: {seen}\nlog tail:\n{self.log_text()[-3000:]}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def event_types(self) -> list[str]:
        """Types of all events so far, in order (handy in assertion messages)."""
        return [str(e.get("type")) for e in self.events]

    # ------------------------------------------------------------ phone verbs

    def dial(self, uri: str) -> None:
        """Place a call; follow with wait_for_event("CALL_ESTABLISHED")."""
        self.command("dial", uri)

    def accept(self) -> None:
        """Answer the current incoming call (answer_mode="manual")."""
        self.command("accept")

    def hangup(self) -> None:
        """Hang up (or reject, if still ringing) the current call."""
        self.command("hangup")

    def send_dtmf(self, digits: str, interval: float = 0.25) -> None:
        """Send digits one at a time with `sndcode` (RFC 4733 when negotiated)."""
        for i, digit in enumerate(digits):
            if digit.upper() not in "0123456789*#ABCD":
                raise ValueError(f"DTMF digit {digit!r}: expected 0-9 * # A-D")
            if i:
                time.sleep(interval)
            self.command("sndcode", digit)

    def list_calls(self) -> str:
        """Text of the `listcalls` command."""
        return self.command("listcalls")

    def reginfo(self) -> str:
        """Text of the `reginfo` command (registration status per account)."""
        return self.command("reginfo")

    def registration_state(self) -> str:
        """"OK", "ERR" or "zzz" (not yet / not registering) from `reginfo`.

        Polled rather than event-driven because the first REGISTER usually completes
        before the ctrl_tcp connection exists, so its REGISTER_OK event is never seen.
        """
        text = _ANSI.sub("", self.reginfo())
        for line in text.splitlines():
            fields = line.replace(">", " ").split()
            if fields and fields[0].startswith(f"sip:{self.user}@") and len(fields) > 1:
                return fields[1]
        raise BaresipError(f"baresip {self.name}: account missing from reginfo: {text!r}")

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until the account is registered; BaresipError on failure or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("type") == "REGISTER_FAIL":
                    raise BaresipError(f"baresip {self.name}: registration failed: {event}")
            state = self.registration_state()
            if state == "OK":
                return
            if state == "ERR":
                raise BaresipError(
                    f"baresip {self.name}: registration to {self.registrar} failed "
                    f"(reginfo ERR); log tail:\n{self.log_text()[-2000:]}"
                )
            if time.monotonic() >= deadline:
                raise BaresipError(
                    f"baresip {self.name}: not registered to {self.registrar} after "
                    f"{timeout} s (state {state!r})"
                )
            time.sleep(0.1)

    def received_dtmf(self) -> str:
        """Digits reported by CALL_DTMF_START events, in arrival order."""
        return "".join(
            str(e.get("param", "")) for e in self.events if e.get("type") == "CALL_DTMF_START"
        )

    # ------------------------------------------------------------ recordings

    def recordings(self, kind: Literal["dec", "enc"] = "dec") -> list[Path]:
        """WAV files sndfile wrote, oldest first: "dec" is what this phone heard."""
        return sorted(self.recdir.glob(f"dump-*-{kind}.wav"))

    def wait_recordings_closed(self, timeout: float = 5.0) -> list[Path]:
        """Wait until every call's WAV is finalised, then return the "dec" recordings.

        sndfile closes its files when a call's audio object is destroyed, which baresip
        logs as "audio: destroyed"; one such line per recorded call means all are done.
        """
        deadline = time.monotonic() + timeout
        while True:
            files = self.recordings("dec")
            if self.log_text().count("audio: destroyed") >= len(files) or not self.is_running:
                return files
            if time.monotonic() >= deadline:
                raise BaresipError(
                    f"baresip {self.name}: {len(files)} recordings still open after {timeout} s"
                )
            time.sleep(0.05)

    def last_heard(self, timeout: float = 5.0) -> Path:
        """The finalised "dec" WAV of the newest call: what this phone heard last."""
        files = self.wait_recordings_closed(timeout)
        if not files:
            raise BaresipError(f"baresip {self.name}: no recordings in {self.recdir}")
        return files[-1]

    def log_text(self) -> str:
        """baresip's combined stdout/stderr so far (verbose)."""
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

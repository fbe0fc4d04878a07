"""bench.sip's peers: Kamailio as a UAS-like responder, and the gateway daemon with
auto-answering simulated lines and sipp as its trunk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GATEWAY_RTP = (30000, 30999)
FIRST_NUMBER = 201
AUTO_ANSWER_MS = 100


KAMAILIO_UAS_CFG = """#!KAMAILIO
# bench/sip.py: Kamailio as a UAS-like responder for the INVITE->180 comparison.
# INVITE: a transaction (t_newtran), 180, then 200 with SDP; ACK absorbed; BYE and
# anything else answered 200 statelessly. No routing, no database, no logging per call.
debug=1
log_stderror=yes
children={children}
auto_aliases=no
disable_tcp=yes
dns=no
rev_dns=no
use_dns_cache=off
listen=udp:127.0.0.1:{port}
server_header="Server: bench-kamailio-uas"
mpath="{mpath}"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"

request_route {{
    if (is_method("ACK")) {{
        t_check_trans();
        exit;
    }}
    if (is_method("INVITE")) {{
        if (!t_newtran()) {{
            sl_reply_error();
            exit;
        }}
        append_to_reply("Contact: <sip:uas@127.0.0.1:{port}>\\r\\n");
        t_reply("180", "Ringing");
        set_reply_body("v=0\\r\\no=- 1 1 IN IP4 127.0.0.1\\r\\ns=-\\r\\nc=IN IP4 127.0.0.1\\r\\nt=0 0\\r\\nm=audio {rtp} RTP/AVP 0\\r\\na=rtpmap:0 PCMU/8000\\r\\n", "application/sdp");
        t_reply("200", "OK");
        exit;
    }}
    sl_send_reply("200", "OK");
}}
"""


class KamailioUas:
    """Kamailio running KAMAILIO_UAS_CFG on 127.0.0.1:`port` in the foreground."""

    def __init__(self, workdir: Path, port: int, rtp_port: int, children: int = 2) -> None:
        from tests.integration.peers.kamailio import _module_dir, kamailio_binary

        binary = kamailio_binary()
        if binary is None:
            raise RuntimeError("kamailio is not installed (apt-get install kamailio)")
        self.binary = binary
        self.port = port
        self.dir = workdir / "kamailio"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = self.dir / "kamailio.cfg"
        self.cfg.write_text(KAMAILIO_UAS_CFG.format(
            port=port, rtp=rtp_port, children=children, mpath=_module_dir()))
        self.children = children
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until it answers OPTIONS."""
        from tests.integration.peers import sip_probe

        log = open(self.dir / "kamailio.log", "ab")  # noqa: SIM115 (child owns it)
        self._proc = subprocess.Popen(
            [self.binary, "-f", str(self.cfg), "-DD", "-E", "-m", "64", "-M", "8",
             "-Y", str(self.dir), "-w", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self._proc.returncode}: "
                                   f"{(self.dir / 'kamailio.log').read_text()[-2000:]}")
            if sip_probe(self.port, timeout=0.3) is not None:
                return
        raise RuntimeError("kamailio did not answer OPTIONS within 15 s")

    def stop(self) -> None:
        """SIGTERM the process group and wait."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def gateway_config(sip_port: int, sipp_port: int, lines: int, state_dir: Path) -> str:
    """`lines` auto-answering simulated phones; the only trunk is sipp's address."""
    line_entries = "\n".join(
        f'  - name: "{i + 1}"\n'
        f"    backend: sim\n"
        f'    number: "{FIRST_NUMBER + i}"\n'
        f"    options: {{auto_answer_ms: {AUTO_ANSWER_MS}}}"
        for i in range(lines)
    )
    return f"""
gateway:
  name: bench-gw
  country: US
  state_dir: {state_dir}
  log_level: info
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: {GATEWAY_RTP[0]}-{GATEWAY_RTP[1]}
  codecs: [PCMU]
trunks:
  - name: sipp
    registrar: 127.0.0.1:{sipp_port}
    expires: 600
    # The bench measures the gateway, not the trusted trunk's rate limit (10 calls/s).
    rate_limit: {{requests_per_second: 10000, request_burst: 10000,
                 calls_per_second: 1000, call_burst: 1000}}
lines:
{line_entries}
dialplan:
  digit_map: "[2-9]xx"
  routes:
    - pattern: '2\\d\\d'
      to: local
"""


def bench_gateway(workdir: Path, config_text: str, log_level: str) -> Any:
    """A GatewayProcess whose daemon logs at `log_level` (the test helper forces debug,
    whose per-frame and per-message lines would be part of what is measured)."""
    from tests.integration.gateway_proc import GatewayProcess

    class _BenchGateway(GatewayProcess):
        def start(self, timeout: float = 60.0) -> None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config_path),
                 "--control", self.control_path, "--log-level", log_level],
                stdout=self._log, stderr=subprocess.STDOUT, env=env,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"branchline exited with {self._proc.returncode}:\n"
                                       f"{self.log_text()[-4000:]}")
                try:
                    self.request("status")
                    return
                except Exception:
                    time.sleep(0.1)
            raise RuntimeError(f"branchline did not answer on {self.control_path}")

        @property
        def pid(self) -> int | None:
            return self._proc.pid if self._proc is not None else None

    return _BenchGateway(workdir, config_text)


def write_users_csv(path: Path, lines: int) -> Path:
    """sipp's -inf file: the line numbers, taken in turn (SEQUENTIAL) as request-URI users."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{FIRST_NUMBER + i}\n" for i in range(lines)))
    return path


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (Linux /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None

"""bench.registrar's registrars: Kamailio (registrar + usrloc + auth, users in an htable)
and the Branchline daemon with its `sip_phones`, both on 127.0.0.1, optionally pinned to
one CPU, with their CPU time read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.registrar_sipp import Phone, pin

GATEWAY_RTP = (30000, 31999)

KAMAILIO_REGISTRAR_CFG = """#!KAMAILIO
# bench/registrar.py: Kamailio doing the registrar's job for the same phones.
# REGISTER: 401 digest challenge (qop=auth, nonce counts checked), the user's password from
# an htable filled at start, To user must be the authenticated user, save("location")
# (usrloc in memory). INVITE: 407 challenge, then lookup("location") and t_relay() to the
# callee's binding, record-routed so ACK and BYE pass through too. Nothing logged per
# request.
debug=1
log_stderror=yes
children={children}
auto_aliases=no
disable_tcp=yes
dns=no
rev_dns=no
use_dns_cache=off
dns_try_ipv6=no
listen=udp:127.0.0.1:{port}
server_header="Server: bench-kamailio-registrar"
mpath="{mpath}"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("htable", "htable", "users=>size=12;autoexpire=0;")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 60)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "max_contacts", 3)
modparam("auth", "nonce_count", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

event_route[htable:mod-init] {{
{users}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "Alive");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            route(RELAY);
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                route(RELAY);
            }}
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        t_check_trans();
        exit;
    }}
    if (t_precheck_trans()) {{
        t_check_trans();
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{
        route(REGISTRAR);
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    route(AUTH);
    record_route();
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    route(RELAY);
}}

route[REGISTRAR] {{
    if (!is_present_hf("Authorization")) {{
        www_challenge("{realm}", "1");
        exit;
    }}
    if ($sht(users=>$au) == $null) {{
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    if (!pv_www_authenticate("{realm}", "$sht(users=>$au)", "0")) {{
        www_challenge("{realm}", "1");
        exit;
    }}
    if ($au != $tU) {{
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    consume_credentials();
    if (!save("location")) {{
        sl_reply_error();
    }}
    exit;
}}

route[AUTH] {{
    if (!is_present_hf("Proxy-Authorization")) {{
        proxy_challenge("{realm}", "1");
        exit;
    }}
    if ($sht(users=>$au) == $null) {{
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    if (!pv_proxy_authenticate("{realm}", "$sht(users=>$au)", "0")) {{
        proxy_challenge("{realm}", "1");
        exit;
    }}
    consume_credentials();
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""


def kamailio_config(port: int, phones: Sequence[Phone], children: int, mpath: str) -> str:
    """The Kamailio registrar's config for these phones."""
    users = "\n".join(f'    $sht(users=>{p.user}) = "{p.password}";' for p in phones)
    return KAMAILIO_REGISTRAR_CFG.format(port=port, users=users, children=children,
                                         mpath=mpath, realm="127.0.0.1")


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU seconds of every live process in a process group (Linux /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] is the state (field 3 of stat); pgrp is field 5, utime/stime 14/15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class _Server:
    """A child process in its own session (its pid is its process group), logging to a file."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: Sequence[str], cpu: int | None,
               env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=pin(cpu), env=env, cwd=self.dir)

    @property
    def pid(self) -> int | None:
        """Main process id (= process group id) while running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def cpu_seconds(self) -> float | None:
        """CPU seconds of the whole group so far (Kamailio forks workers), None if stopped."""
        pid = self.pid
        return group_cpu_seconds(pid) if pid is not None else None

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


class KamailioRegistrar(_Server):
    """Kamailio with `kamailio_config` on 127.0.0.1:`port`, in the foreground."""

    def __init__(self, workdir: Path, port: int, phones: Sequence[Phone],
                 children: int = 1) -> None:
        super().__init__(workdir, "kamailio")
        from tests.integration.peers.kamailio import _module_dir, kamailio_binary

        binary = kamailio_binary()
        if binary is None:
            raise RuntimeError("kamailio is not installed (apt-get install kamailio)")
        self.binary = binary
        self.port = port
        self.children = children
        self.cfg = self.dir / "kamailio.cfg"
        self.cfg.write_text(kamailio_config(port, phones, children, _module_dir()))

    def start(self, cpu: int | None) -> None:
        """Start and wait until it answers OPTIONS."""
        from tests.integration.peers import sip_probe

        self._spawn([self.binary, "-f", str(self.cfg), "-DD", "-E", "-m", "64", "-M", "8",
                     "-Y", str(self.dir), "-w", str(self.dir)], cpu)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"kamailio exited during start-up: {self.log_tail()}")
            if sip_probe(self.port, timeout=0.3) is not None:
                return
        raise RuntimeError("kamailio did not answer OPTIONS within 15 s")


def gateway_config(sip_port: int, phones: Sequence[Phone], state_dir: Path) -> str:
    """The daemon with the bench's phones as `sip_phones` (MD5 digest only: sipp answers
    only the first challenge) and the dial plan routing their extensions to them."""
    entries = "\n".join(
        f'  - {{user: "{p.user}", password: "{p.password}", number: "{p.user}"}}'
        for p in phones)
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
security:
  digest_algorithms: [MD5]
  # 1,000 phones on one address (127.0.0.1): the per-source budget must not be the limit.
  rate_limit: {{requests_per_second: 10000, request_burst: 100000,
               calls_per_second: 10000, call_burst: 100000}}
registrar:
  min_expires: 60
  max_expires: 3600
  default_expires: 600
  max_contacts: 3
sip_phones:
{entries}
dialplan:
  digit_map: "xxxx"
  routes:
    - pattern: '\\d{{4}}'
      to: local
"""


class GatewayDaemon(_Server):
    """`branchline run` with `gateway_config`, log level info (debug would log every message
    and become part of what is measured)."""

    def __init__(self, workdir: Path, port: int, phones: Sequence[Phone]) -> None:
        super().__init__(workdir, "gateway")
        self.port = port
        self.config_path = self.dir / "branchline.yaml"
        self.config_path.write_text(gateway_config(port, phones, self.dir / "state"))
        self.control_path = str(self.dir / "control.sock")

    def request(self, cmd: str) -> object:
        from gateway.runtime.control import ControlClient

        return ControlClient(self.control_path, timeout=15.0).request(cmd)

    def start(self, cpu: int | None, timeout: float = 60.0) -> None:
        """Start and wait until the control socket answers `status`."""
        from gateway.runtime.control import ControlError

        self._spawn([sys.executable, "-m", "gateway.cli", "run", "--config",
                     str(self.config_path), "--control", self.control_path,
                     "--log-level", "info"], cpu, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"branchline exited during start-up: {self.log_tail(4000)}")
            try:
                self.request("status")
                return
            except (ControlError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"branchline did not answer on {self.control_path}")

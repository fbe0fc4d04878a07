"""Kamailio as a throw-away SIP trunk and registrar for integration tests.

Each instance writes its own config into a private run directory and runs Kamailio in
the foreground as a child process, listening on UDP 127.0.0.1:<port> only. There is no
database, no fifo and no ctl socket:

- users and passwords live in an htable filled from the generated config at start-up;
- REGISTER is challenged with 401 (digest), then saved in the in-memory usrloc;
- INVITE is routed by `lookup("location")`; an unknown or unregistered user gets 404;
- `auth_invite=True` challenges INVITE with 407 as well, `auth_message=True` MESSAGE;
- `record_route=True` keeps the trunk in the path of in-dialog requests.

Registration state is read back without an RPC socket: Kamailio answers a custom
`LOCATE sip:<user>@<domain>` request with 200 plus `X-Contact`/`X-Expires` headers
when the user is registered, and 404 when not (see `registered()` and `contact()`).

Every request the trunk receives, and every reply it sends or relays, is logged as one
`BLTRUNK` line, so tests can assert on what crossed the trunk (`events()`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from . import SipReply, sip_probe

if TYPE_CHECKING:
    from ..netns import Namespace

__all__ = ["KamailioError", "KamailioTrunk", "TrunkEvent", "kamailio_binary"]

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:%@-]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9._~+-]+$")
_EVENT_RE = re.compile(r"BLTRUNK (\w+) (.*)$")
_KV_RE = re.compile(r"(\w+)=(\S*)")


class KamailioError(RuntimeError):
    """Kamailio failed to check its config, start, answer or stop."""


@dataclass(frozen=True)
class TrunkEvent:
    """One BLTRUNK log line: `kind` is request, reply or relayed; `fields` its key=values."""

    kind: str
    fields: dict[str, str]

    @property
    def method(self) -> str:
        """SIP method the line is about (request method, or CSeq method of a reply)."""
        return self.fields.get("method", "")

    @property
    def code(self) -> int:
        """Status code for reply/relayed lines, 0 for requests."""
        value = self.fields.get("code", "0")
        return int(value) if value.isdigit() else 0


def kamailio_binary() -> str | None:
    """Path of the kamailio executable, or None when it is not installed."""
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None
    )


def _module_dir() -> str:
    """Where Debian put the modules (multiarch dir differs on amd64 and arm64)."""
    for candidate in sorted(glob.glob("/usr/lib/*/kamailio/modules")) + [
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ]:
        if os.path.isfile(os.path.join(candidate, "tm.so")):
            return candidate
    raise KamailioError("kamailio modules (tm.so) not found under /usr/lib/*/kamailio/modules")


def _reply(code: int, reason: str, method: str = "$rm") -> str:
    """Config snippet: log a BLTRUNK reply line, then send the stateless reply."""
    return (
        f'xlog("L_NOTICE", "BLTRUNK reply code={code} method={method} user=$tU au=$au '
        f'callid=$ci\\n"); sl_send_reply("{code}", "{reason}");'
    )


class KamailioTrunk:
    """A Kamailio registrar/proxy on 127.0.0.1:<port>, started and stopped per test."""

    def __init__(
        self,
        port: int,
        users: dict[str, str],
        *,
        domain: str = "127.0.0.1",
        record_route: bool = False,
        auth_invite: bool = False,
        auth_message: bool = False,
        qop: bool = False,
        tmpdir: Path | str | None = None,
        min_expires: int = 1,
        start_timeout: float = 10.0,
        netns: Namespace | None = None,
        extra_listen: Sequence[str] = (),
    ) -> None:
        for user, password in users.items():
            if not _SAFE_USER.match(user):
                raise ValueError(f"user name {user!r}: expected letters, digits and ._~+-")
            if not _SAFE_VALUE.match(password) or '"' in password:
                raise ValueError(f"password for {user!r}: expected URI-safe characters, no quotes")
        if not _SAFE_VALUE.match(domain):
            raise ValueError(f"domain {domain!r}: expected a host name or IP address")
        for address in extra_listen:
            if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", address):
                raise ValueError(f"extra_listen {address!r}: expected an IPv4 address")
        # In a network namespace (tests/integration/netns.py) Kamailio still listens on that
        # namespace's 127.0.0.1 (start-up and LOCATE probes come from a socket made inside
        # it) and also on `extra_listen`, e.g. the wan side of a veth pair.
        self.netns = netns
        self.extra_listen = tuple(extra_listen)
        self.port = port
        self.users = dict(users)
        self.domain = domain
        self.record_route = record_route
        self.auth_invite = auth_invite
        self.auth_message = auth_message
        self.qop = qop
        self.min_expires = min_expires
        self.start_timeout = start_timeout
        self._own_tmpdir = tmpdir is None
        base = Path(tmpdir) if tmpdir is not None else Path(tempfile.mkdtemp(prefix="kam-"))
        self.rundir = base / f"kamailio-{port}"
        self.cfg_path = self.rundir / "kamailio.cfg"
        self.log_path = self.rundir / "kamailio.log"
        self.pid_path = self.rundir / "kamailio.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    # ------------------------------------------------------------------ config

    @property
    def uri(self) -> str:
        """The trunk's own SIP URI, e.g. for an outbound proxy setting."""
        return f"sip:127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """Where a gateway reaches the trunk: the first `extra_listen`, else 127.0.0.1."""
        return self.extra_listen[0] if self.extra_listen else "127.0.0.1"

    @property
    def realm(self) -> str:
        """Digest realm used in both 401 and 407 challenges (the configured domain)."""
        return self.domain

    def config_text(self) -> str:
        """The full kamailio.cfg this trunk runs; exposed so a failing test can show it."""
        flags = "1" if self.qop else "0"
        realm = self.domain
        user_lines = "\n".join(
            f'    $sht(users=>{user}) = "{password}";' for user, password in self.users.items()
        )
        alias = "" if self.domain == "127.0.0.1" else f'alias="{self.domain}"\n'
        # Several listen sockets: pick the one the route to the destination leaves from
        # (mhomed), or relayed requests would go out over the veth from 127.0.0.1.
        listen = f"listen=udp:127.0.0.1:{self.port}\n" + "".join(
            f"listen=udp:{address}:{self.port}\n" for address in self.extra_listen
        ) + ("mhomed=1\n" if self.extra_listen else "")
        rr = "    record_route();\n" if self.record_route else ""
        invite_auth = "    if (is_method(\"INVITE\")) { route(AUTH_INVITE); }\n" if (
            self.auth_invite
        ) else ""
        if self.auth_message:
            invite_auth += "    if (is_method(\"MESSAGE\")) { route(AUTH_INVITE); }\n"
        return f"""#!KAMAILIO
# Generated by tests/integration/peers/kamailio.py for one test run.
debug=2
log_stderror=yes
log_prefix="{{$mt $hdr(CSeq) $ci}} "
memdbg=5
memlog=5
children=2
auto_aliases=no
disable_tcp=yes
dns=no
rev_dns=no
use_dns_cache=off
dns_try_ipv6=no
{listen}{alias}server_header="Server: branchline-test-trunk"
user_agent_header="User-Agent: branchline-test-trunk"

mpath="{_module_dir()}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("htable", "htable", "users=>size=4;autoexpire=0;")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {self.min_expires})
modparam("registrar", "default_expires", 3600)
modparam("rr", "append_fromtag", 1)
modparam("tm", "fr_timer", 10000)
modparam("tm", "fr_inv_timer", 60000)

event_route[htable:mod-init] {{
{user_lines}
}}

request_route {{
    xlog("L_NOTICE", "BLTRUNK request method=$rm ruri=$ru from=$fu to=$tu au=$au src=$si:$sp callid=$ci pai=$ai\\n");
    if (!mf_process_maxfwd_header("10")) {{
        {_reply(483, "Too Many Hops")}
        exit;
    }}
    if (is_method("LOCATE")) {{
        route(LOCATE);
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        {_reply(200, "Alive")}
        exit;
    }}
    if (has_totag()) {{
        route(WITHINDLG);
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{
            t_check_trans();
            exit;
        }}
        t_check_trans();
    }}
    if (is_method("REGISTER")) {{
        route(REGISTRAR);
    }}
{invite_auth}{rr}    if ($rU == $null) {{
        {_reply(484, "Address Incomplete")}
        exit;
    }}
    route(LOCATION);
}}

route[REGISTRAR] {{
    if ($au == $null) {{
        xlog("L_NOTICE", "BLTRUNK reply code=401 method=REGISTER user=$tU au=$au callid=$ci\\n");
        www_challenge("{realm}", "{flags}");
        exit;
    }}
    if ($sht(users=>$au) == $null) {{
        {_reply(403, "Unknown User", "REGISTER")}
        exit;
    }}
    if (!pv_www_authenticate("{realm}", "$sht(users=>$au)", "0")) {{
        xlog("L_NOTICE", "BLTRUNK reply code=401 method=REGISTER user=$tU au=$au callid=$ci\\n");
        www_challenge("{realm}", "{flags}");
        exit;
    }}
    if ($au != $tU) {{
        {_reply(403, "Auth User Mismatch", "REGISTER")}
        exit;
    }}
    consume_credentials();
    if (!save("location")) {{
        xlog("L_NOTICE", "BLTRUNK reply code=500 method=REGISTER user=$tU au=$au callid=$ci\\n");
        sl_reply_error();
        exit;
    }}
    xlog("L_NOTICE", "BLTRUNK reply code=200 method=REGISTER user=$tU au=$au callid=$ci\\n");
    exit;
}}

route[AUTH_INVITE] {{
    if ($au == $null) {{
        xlog("L_NOTICE", "BLTRUNK reply code=407 method=$rm user=$tU au=$au callid=$ci\\n");
        proxy_challenge("{realm}", "{flags}");
        exit;
    }}
    if ($sht(users=>$au) == $null) {{
        {_reply(403, "Unknown User")}
        exit;
    }}
    if (!pv_proxy_authenticate("{realm}", "$sht(users=>$au)", "0")) {{
        xlog("L_NOTICE", "BLTRUNK reply code=407 method=$rm user=$tU au=$au callid=$ci\\n");
        proxy_challenge("{realm}", "{flags}");
        exit;
    }}
    consume_credentials();
}}

route[LOCATE] {{
    if (reg_fetch_contacts("location", "$ru", "loc")) {{
        append_to_reply("X-Contact: $(ulc(loc=>addr))\\r\\nX-Expires: $(ulc(loc=>expires))\\r\\nX-Count: $(ulc(loc=>count))\\r\\n");
        sl_send_reply("200", "Registered");
    }} else {{
        sl_send_reply("404", "Not Registered");
    }}
    exit;
}}

route[WITHINDLG] {{
    if (loose_route()) {{
        route(RELAY);
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    {_reply(404, "Not Here")}
    exit;
}}

route[LOCATION] {{
    if (!lookup("location")) {{
        {_reply(404, "Not Found")}
        exit;
    }}
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        xlog("L_NOTICE", "BLTRUNK reply code=500 method=$rm user=$tU au=$au callid=$ci\\n");
        sl_reply_error();
    }}
    exit;
}}

onreply_route {{
    xlog("L_NOTICE", "BLTRUNK relayed code=$rs method=$rm src=$si:$sp callid=$ci\\n");
}}
"""

    def write_config(self) -> Path:
        """Write kamailio.cfg into the run dir (created if missing) and return its path."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.cfg_path.write_text(self.config_text())
        return self.cfg_path

    def check_config(self) -> None:
        """Run `kamailio -c` on the generated config; raise with Kamailio's output if bad."""
        binary = self._binary()
        self.write_config()
        result = subprocess.run(
            [binary, "-c", "-f", str(self.cfg_path), "-Y", str(self.rundir), "-m", "64",
             "-M", "8"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise KamailioError(
                f"kamailio -c rejected {self.cfg_path} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    # --------------------------------------------------------------- lifecycle

    @staticmethod
    def _binary() -> str:
        binary = kamailio_binary()
        if binary is None:
            raise KamailioError("kamailio is not installed (apt-get install kamailio)")
        return binary

    @property
    def is_running(self) -> bool:
        """True while the Kamailio main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Main process id while running, for diagnostics."""
        return self._proc.pid if self.is_running and self._proc is not None else None

    def start(self) -> None:
        """Start Kamailio and return once it answers an OPTIONS ping on its port."""
        if self.is_running:
            raise KamailioError(f"kamailio on port {self.port} is already running")
        binary = self._binary()
        self.write_config()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._log_offset = self.log_path.stat().st_size
        prefix = self.netns.prefix if self.netns is not None else []
        self._proc = subprocess.Popen(
            [
                *prefix, binary, "-f", str(self.cfg_path), "-DD", "-E",
                "-m", "64", "-M", "8",
                "-P", str(self.pid_path), "-Y", str(self.rundir), "-w", str(self.rundir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close_log()
                raise KamailioError(
                    f"kamailio exited with {code} during start-up; log:\n{self.log_text()}"
                )
            if sip_probe(self.port, timeout=0.3, netns=self.netns) is not None:
                return
        self.stop()
        raise KamailioError(
            f"kamailio did not answer OPTIONS on 127.0.0.1:{self.port} within "
            f"{self.start_timeout} s; log:\n{self.log_text()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM Kamailio and wait for it (and its children) to exit; idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Only our own session: the children Kamailio forked from this process.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=timeout)
        if proc is not None:
            # Children share the session; make sure none outlive the main process.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> None:
        """Stop and start again on the same port; registrations are lost (memory only)."""
        self.stop()
        self.start()

    def __enter__(self) -> KamailioTrunk:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- inspection

    def log_text(self, *, all_runs: bool = False) -> str:
        """Kamailio's stderr for the current (or last) run; all runs if `all_runs`."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        if not all_runs:
            data = data[self._log_offset:]
        return data.decode("utf-8", "replace")

    def events(self, kind: str | None = None, method: str | None = None) -> list[TrunkEvent]:
        """Parsed BLTRUNK lines of the current run, optionally filtered."""
        found: list[TrunkEvent] = []
        for line in self.log_text().splitlines():
            m = _EVENT_RE.search(line)
            if m is None:
                continue
            event = TrunkEvent(m.group(1), dict(_KV_RE.findall(m.group(2))))
            if kind is not None and event.kind != kind:
                continue
            if method is not None and event.method != method:
                continue
            found.append(event)
        return found

    def reply_codes(self, method: str, user: str | None = None) -> list[int]:
        """Status codes the trunk itself sent for `method` (e.g. REGISTER: [401, 200])."""
        return [
            e.code
            for e in self.events("reply", method)
            if user is None or e.fields.get("user") == user
        ]

    def locate(self, user: str) -> SipReply | None:
        """Ask the running trunk about `user` with a LOCATE request (None: no answer)."""
        if not self.is_running:
            raise KamailioError(f"kamailio on port {self.port} is not running")
        return sip_probe(
            self.port, method="LOCATE", ruri=f"sip:{user}@{self.domain}", timeout=2.0,
            netns=self.netns,
        )

    def registered(self, user: str) -> bool:
        """True when `user` has at least one live contact in the trunk's location table."""
        reply = self.locate(user)
        if reply is None:
            raise KamailioError(f"kamailio on port {self.port} did not answer LOCATE")
        return reply.status == 200

    def contact(self, user: str) -> str | None:
        """The contact URI `user` registered, or None when not registered."""
        reply = self.locate(user)
        if reply is None or reply.status != 200:
            return None
        return reply.header("x-contact")

    def wait_registered(self, user: str, timeout: float = 10.0) -> bool:
        """Poll until `user` is registered; returns False on timeout (never raises)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running and self.registered(user):
                return True
            time.sleep(0.1)
        return False

    def cleanup(self) -> None:
        """Stop and remove a run dir this object created itself."""
        self.stop()
        if self._own_tmpdir:
            shutil.rmtree(self.rundir.parent, ignore_errors=True)

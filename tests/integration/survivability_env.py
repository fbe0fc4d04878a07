"""The branch and its WAN for the survivability tests and bench/failover.

`Branch` holds one `WanPair` (tests/integration/netns.py) with Kamailio as the trunk inside
the wan namespace (listening on the wan end of the veth and on that namespace's 127.0.0.1)
and bob, a baresip phone registered to it that answers by itself with a 1000 Hz tone. The
gateway daemon runs inside the gw namespace (`Branch.gateway(...)`), with simulated analog
lines, the modem emulator on a pty, and, when asked, local SIP phones (baresip inside gw,
registered to the box on gw's 127.0.0.1).

The config keys are those of issue 8 (trunks[].health, ordered `to:` lists, sip_phones);
`gateway_yaml()` writes them. `trunk_health()` reads the trunk's health from
`branchline status`, and `HEALTH_LOG` matches the one log line each transition makes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hal.sim.modem import ModemEmulator

from .gateway_proc import GatewayProcess
from .netns import WanPair
from .peers.baresip import Baresip
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port, free_sip_port

LINE_USER, LINE_PASS = "gateway", "gateway-secret"
BOB = "300"
TRUNK_USERS = {
    LINE_USER: LINE_PASS,
    BOB: "bob-pass-300",
    "201": "alice-up-201",
    "202": "carol-up-202",
}
#: Local SIP phones: user -> (local digest password, tone they send).
PHONES = {"201": ("alice-local-pw", 1000), "202": ("carol-local-pw", 660)}
GSM_NUMBER = "0123456789"
FAR_HZ = 1000.0

#: `trunk main: up -> down (5 probes unanswered), detected in 1.52 s`
HEALTH_LOG = re.compile(
    r"trunk (?P<trunk>\S+): (?P<old>up|degraded|down) -> (?P<new>up|degraded|down) "
    r"\((?P<cause>.*)\), detected in (?P<secs>[\d.]+) s"
)

#: Health settings of the tests: detection in about 1.5 s, fail-back after 2 s of answers.
FAST_HEALTH = {"probe_interval": 0.25, "probe_timeout": 0.5, "misses": 5,
               "failback_after": 2.0}


def health_yaml(settings: dict[str, float] | None) -> str:
    if not settings:
        return ""
    lines = "".join(f"      {key}: {value}\n" for key, value in settings.items())
    return "    health:\n" + lines


@dataclass
class Branch:
    """The shared WAN: namespaces, Kamailio in wan, bob behind it."""

    pair: WanPair
    trunk: KamailioTrunk
    bob: Baresip
    tmp: Path
    gateways: list[GatewayProcess] = field(default_factory=list)
    phones: list[Baresip] = field(default_factory=list)

    @classmethod
    def start(cls, tmp: Path) -> Branch:
        pair = WanPair()
        pair.create()
        try:
            trunk = KamailioTrunk(free_port(), dict(TRUNK_USERS), tmpdir=tmp, netns=pair.wan,
                                  extra_listen=[pair.wan_ip])
            trunk.start()
            bob = Baresip(BOB, sip_port=free_sip_port(), ctrl_port=free_port(), tmpdir=tmp,
                          registrar=f"{pair.wan_ip}:{trunk.port}",
                          password=TRUNK_USERS[BOB], tone=int(FAR_HZ), answer_mode="auto",
                          netns=pair.wan, address=pair.wan_ip)
            bob.start()
            bob.wait_registered()
        except BaseException:
            pair.close()
            raise
        return cls(pair, trunk, bob, tmp)

    def close(self) -> None:
        for gw in self.gateways:
            gw.stop()
        for phone in self.phones:
            phone.stop()
        self.bob.stop()
        self.trunk.stop()
        self.pair.close()

    # ----------------------------------------------------------------- pieces

    def gateway(self, tmp: Path, yaml: str, name: str = "gw") -> GatewayProcess:
        """Start `branchline run` inside the gw namespace (stopped by `stop_test_peers`)."""
        gw = GatewayProcess(tmp, yaml, name=name, prefix=self.pair.gw.prefix)
        self.gateways.append(gw)
        gw.start()
        return gw

    def local_phone(self, tmp: Path, user: str, gw_port: int, **kwargs: Any) -> Baresip:
        """A baresip phone inside gw that registers to the box as `user`."""
        password, tone = PHONES[user]
        kwargs.setdefault("answer_mode", "auto")
        phone = Baresip(user, sip_port=free_sip_port(), ctrl_port=free_port(), tmpdir=tmp,
                        registrar=f"127.0.0.1:{gw_port}", password=password, tone=tone,
                        regint=60, netns=self.pair.gw, **kwargs)
        self.phones.append(phone)
        phone.start()
        return phone

    def stop_test_peers(self) -> list[GatewayProcess]:
        """End what one test started, put the WAN back; returns the gateways (for logs)."""
        gateways = list(self.gateways)
        for gw in self.gateways:
            gw.stop()
        for phone in self.phones:
            phone.stop()
        self.gateways.clear()
        self.phones.clear()
        self.pair.restore_all()
        for _ in range(2):  # a call the WAN cut may still be up at bob's end
            try:
                self.bob.hangup()
            except Exception:  # noqa: BLE001 - nothing to hang up
                break
        return gateways

    def gateway_yaml(self, tmp: Path, sip_port: int, emu: ModemEmulator | None, *,
                     health: dict[str, float] | None = None, phones: bool = False,
                     failover_timeout: float = 1.5, register_line: bool = True,
                     media_timeout: float = 30.0) -> str:
        """The box: lines 1 (101, registered on the trunk) and 2 (102), optional phones
        201/202 relayed to the trunk, 2xx/1xx local, everything else trunk then GSM."""
        account = (f"    trunk: {{name: main, username: {LINE_USER}, password: {LINE_PASS}}}\n"
                   if register_line else "")
        phone_yaml = ""
        if phones:
            phone_yaml = "sip_phones:\n" + "".join(
                f'  - user: "{user}"\n'
                f'    password: "{password}"\n'
                f"    trunk: {{name: main, username: \"{user}\", "
                f"password: {TRUNK_USERS[user]}}}\n"
                for user, (password, _tone) in PHONES.items()
            )
        modem_yaml = ""
        targets = "[trunk:main]"
        if emu is not None:
            targets = "[trunk:main, gsm:mobile]"
            modem_yaml = f"""modems:
  - name: gsm1
    profile: sim
    port: {emu.at_path}
    audio:
      type: serial-pcm
      pcm_port: {emu.pcm_path}
    group: mobile
    number: "+15550100"
    inbound: line:1
gsm_groups:
  - name: mobile
"""
        return f"""
gateway:
  name: branch-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 0.0.0.0:{sip_port}
  rtp_ports: 31000-31999
  codecs: [PCMU]
  media_timeout: {media_timeout}
security:
  digest_algorithms: [MD5]          # baresip 1.0 answers MD5 challenges only
trunks:
  - name: main
    registrar: {self.pair.wan_ip}:{self.trunk.port}
    expires: 60
    failover_timeout: {failover_timeout}
{health_yaml(health)}lines:
  - name: "1"
    backend: sim
    number: "101"
{account}  - name: "2"
    backend: sim
    number: "102"
{phone_yaml}{modem_yaml}dialplan:
  digit_map: "(1xx|2xx|3xx|0xxxxxxxxx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "2\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: {targets}
"""


# ---------------------------------------------------------------------- reading status


def trunk_health(gw: GatewayProcess, trunk: str = "main") -> dict[str, Any]:
    """The trunk's `health` from `branchline status` ({} when status has none)."""
    status = gw.status()
    for entry in status.get("trunks", []) or []:
        if isinstance(entry, dict) and entry.get("name") == trunk:
            health = entry.get("health")
            if isinstance(health, dict):
                return health
            if isinstance(health, str):
                return {"state": health}
    by_name = status.get("trunk_health")
    if isinstance(by_name, dict) and isinstance(by_name.get(trunk), dict):
        return dict(by_name[trunk])
    return {}


def health_state(gw: GatewayProcess, trunk: str = "main") -> str | None:
    state = trunk_health(gw, trunk).get("state")
    return str(state) if state is not None else None


def transitions(gw: GatewayProcess, trunk: str = "main") -> list[re.Match[str]]:
    """The health transition log lines of `trunk`, oldest first."""
    return [m for m in HEALTH_LOG.finditer(gw.log_text()) if m["trunk"] == trunk]


def wait_state(gw: GatewayProcess, state: str, timeout: float, interval: float = 0.02) -> float:
    """Seconds until the trunk's health reads `state` (AssertionError after `timeout`)."""
    start = time.monotonic()
    while not trunk_health(gw):
        if time.monotonic() - start > 3.0:
            raise AssertionError("`branchline status` shows no health for trunk main "
                                 f"(status keys: {sorted(gw.status())})")
        time.sleep(0.05)
    return time.monotonic() - start + gw.wait_until(f"trunk main health {state!r} (status: {trunk_health(gw)})",
                         lambda: health_state(gw) == state, timeout=timeout, interval=interval)


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def modem_up(gw: GatewayProcess) -> bool:
    return any(m.get("state") == "up" for m in gw.status().get("modems", []))


def phone_registered_at_box(gw: GatewayProcess, user: str) -> bool:
    """The box's status lists a live binding for local phone `user`."""
    for entry in gw.status().get("phones", []) or []:
        if isinstance(entry, dict) and str(entry.get("user")) == user:
            return bool(entry.get("contacts"))
    return False

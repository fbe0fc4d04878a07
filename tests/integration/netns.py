"""Network namespaces the survivability tests make themselves: a branch and its WAN.

`WanPair()` is a context manager. On entry it creates two namespaces with unique names,
`blgw-<pid>-<n>` (the branch: the gateway and the local phones) and `blwan-<pid>-<n>` (the
far side: Kamailio as the trunk), joined by a veth pair in a private /30:

```
   blgw-<pid>-<n>                              blwan-<pid>-<n>
   lo 127.0.0.1                                lo 127.0.0.1
   wan0 10.201.<n>.1/30  <====== veth ======>  lan0 10.201.<n>.2/30
   default via 10.201.<n>.2
```

Three ways to drop the WAN, each with its restore (`drop(kind)` / `restore(kind)` cycle them):

- `link_down()` / `link_up()`: the gateway's side of the veth goes down. The kernel removes
  the connected and default routes with it, so `link_up()` puts the default route back.
- `nft_drop()` / `nft_restore()`: an nft table on the wan namespace's input hook drops
  everything from the gateway, and one on the gateway's input hook drops everything from
  the wan side, so replies already on their way vanish too. The link and routes stay up:
  only probes and timeouts can tell.
- `blackhole()` / `unblackhole()`: `ip route add blackhole <wan ip>/32` in the gateway's
  namespace: sends fail with EINVAL at once, and the route lookup says "blackhole".

`loss(percent)` drops that share of the gateway's packets at random on the wan side's input
hook (nft `numgen random`), for the no-flapping test; `loss(0)` clears it.

Commands run inside a namespace with `ip netns exec` (`Namespace.prefix`, `run`, `popen`);
`Namespace.socket()` makes a socket that lives inside the namespace (the creating thread
enters it with setns(2) and leaves again), so the test process can talk to peers listening
on a namespace's own 127.0.0.1. On exit every process still in either namespace is killed
(SIGTERM, then SIGKILL) and both namespaces are deleted, also when the test failed; the
veth pair goes with them. Needs root, iproute2 and nft; `NetnsUnavailable` says what is
missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket as socketlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

__all__ = ["DROP_KINDS", "DropKind", "Namespace", "NetnsUnavailable", "WanPair", "netns_problem"]

DropKind = Literal["link", "nft", "blackhole"]
DROP_KINDS: tuple[DropKind, ...] = ("link", "nft", "blackhole")

_CLONE_NEWNET = 0x40000000
_NFT_TABLE = "bltest"
_counter = itertools.count(1)
_T = TypeVar("_T")


class NetnsUnavailable(RuntimeError):
    """This host cannot make network namespaces for the tests (not root, no ip/nft...)."""


def netns_problem() -> str | None:
    """Why namespaces cannot be used here, or None when they can (cheap; no side effects)."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / nftables)"
    if not os.path.exists("/proc/self/ns/net"):
        return "the kernel has no network namespaces (/proc/self/ns/net missing)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15,
                            check=False)
    if check and result.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.strip()}")
    return result


def sweep_stale() -> list[str]:
    """Delete namespaces left by test processes that died without cleaning up (SIGKILL):
    `blgw-<pid>-...` / `blwan-<pid>-...` whose pid is gone. Returns the names deleted."""
    result = _ip("netns", "list", check=False)
    removed: list[str] = []
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] not in ("blgw", "blwan") or not parts[1].isdigit():
            continue
        if os.path.exists(f"/proc/{parts[1]}"):
            continue
        Namespace(name).kill_all(grace=1.0)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


class Namespace:
    """One named network namespace (`ip netns`), made and deleted by its `WanPair`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    @property
    def prefix(self) -> list[str]:
        """Put before a command line to run it inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *args: str, check: bool = True, timeout: float = 15.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace; raise with its stderr when it fails."""
        result = subprocess.run([*self.prefix, *args], capture_output=True, text=True,
                                timeout=timeout, check=False, input=input)
        if check and result.returncode != 0:
            raise RuntimeError(f"[{self.name}] {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.strip()}")
        return result

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace (Popen keyword arguments pass through)."""
        return subprocess.Popen([*self.prefix, *args], **kwargs)

    def nft(self, script: str) -> None:
        """Load an nft script into this namespace's ruleset."""
        self.run("nft", "-f", "-", input=script)

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on a helper thread that has entered this namespace (setns), return its
        result. Sockets made inside stay in the namespace after the thread is gone."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.name}", "rb") as handle:
                    if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.name}: {os.strerror(err)}")
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=body, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        value: _T = box["value"]
        return value

    def socket(self, family: int = socketlib.AF_INET,
               kind: int = socketlib.SOCK_DGRAM) -> socketlib.socket:
        """A new socket that lives in this namespace (bind/connect it as usual)."""
        return self.call(lambda: socketlib.socket(family, kind))

    def connect_tcp(self, address: tuple[str, int], timeout: float) -> socketlib.socket:
        """A TCP connection made from inside the namespace (e.g. to baresip's ctrl_tcp)."""
        return self.call(lambda: socketlib.create_connection(address, timeout=timeout))

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one."""
        result = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in result.stdout.split() if p.isdigit()]

    def kill_all(self, grace: float = 3.0) -> list[int]:
        """SIGTERM every process in the namespace, SIGKILL what is left after `grace` s."""
        victims = self.pids()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            alive = self.pids()
            if not alive:
                break
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.05)
        return victims


class WanPair:
    """Two namespaces (gateway side, wan side) joined by a veth pair; see the module doc."""

    GW_IF = "wan0"
    WAN_IF = "lan0"

    def __init__(self, tag: str | None = None) -> None:
        problem = netns_problem()
        if problem is not None:
            raise NetnsUnavailable(problem)
        n = next(_counter)
        suffix = f"{os.getpid()}-{n}" if tag is None else f"{os.getpid()}-{n}-{tag}"
        self.gw = Namespace(f"blgw-{suffix}")
        self.wan = Namespace(f"blwan-{suffix}")
        octet = (os.getpid() + n) % 250 + 1
        self.gw_ip = f"10.201.{octet}.1"
        self.wan_ip = f"10.201.{octet}.2"
        self._created: list[Namespace] = []
        self._dropped: set[str] = set()

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> WanPair:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        """Make both namespaces, the veth pair, addresses, lo and the default route."""
        sweep_stale()
        for ns in (self.gw, self.wan):
            _ip("netns", "add", ns.name)
            self._created.append(ns)
        _ip("link", "add", self.GW_IF, "netns", self.gw.name, "type", "veth",
            "peer", "name", self.WAN_IF, "netns", self.wan.name)
        _ip("-n", self.gw.name, "addr", "add", f"{self.gw_ip}/30", "dev", self.GW_IF)
        _ip("-n", self.wan.name, "addr", "add", f"{self.wan_ip}/30", "dev", self.WAN_IF)
        for ns, ifname in ((self.gw, self.GW_IF), (self.wan, self.WAN_IF)):
            _ip("-n", ns.name, "link", "set", "lo", "up")
            _ip("-n", ns.name, "link", "set", ifname, "up")
        _ip("-n", self.gw.name, "route", "add", "default", "via", self.wan_ip)
        self._wait_reachable()

    def close(self) -> None:
        """Kill what runs inside, delete both namespaces (the veth goes with them)."""
        for ns in reversed(self._created):
            ns.kill_all()
        for ns in reversed(self._created):
            _ip("netns", "del", ns.name, check=False)
        self._created.clear()

    def _wait_reachable(self, timeout: float = 5.0) -> None:
        """Return once a UDP datagram from gw reaches wan over the veth (ARP done)."""
        receiver = self.wan.socket()
        sender = self.gw.socket()
        try:
            receiver.bind((self.wan_ip, 0))
            receiver.settimeout(0.1)
            port = receiver.getsockname()[1]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    sender.sendto(b"ping", (self.wan_ip, port))
                try:
                    if receiver.recv(16) == b"ping":
                        return
                except TimeoutError:
                    continue
            raise NetnsUnavailable(f"{self.gw_ip} cannot reach {self.wan_ip} over the veth")
        finally:
            receiver.close()
            sender.close()

    # --------------------------------------------------------------- WAN drops

    def link_down(self) -> None:
        """Take the gateway's veth end down (routes through it vanish with it)."""
        _ip("-n", self.gw.name, "link", "set", self.GW_IF, "down")
        self._dropped.add("link")

    def link_up(self) -> None:
        """Bring the veth end back and restore the default route the kernel removed."""
        _ip("-n", self.gw.name, "link", "set", self.GW_IF, "up")
        deadline = time.monotonic() + 5.0
        while self.operstate(self.GW_IF) != "UP" and time.monotonic() < deadline:
            time.sleep(0.02)
        _ip("-n", self.gw.name, "route", "replace", "default", "via", self.wan_ip)
        self._dropped.discard("link")

    def nft_drop(self, *, at_wan: bool = True, at_gw: bool = True) -> None:
        """Drop every packet from the gateway on the wan side's input hook (`at_wan`) and
        every packet from the wan side on the gateway's input hook (`at_gw`). With only
        `at_gw`, the trunk still receives (and logs) what the gateway sends, but its
        answers vanish: an INVITE times out although the trunk saw it."""
        if at_wan:
            self._nft_table(self.wan, f"ip saddr {self.gw_ip} counter drop")
        if at_gw:
            self._nft_table(self.gw, f"ip saddr {self.wan_ip} counter drop")
        self._dropped.add("nft")

    def nft_restore(self) -> None:
        """Remove the drop tables (and a `loss()` rule with them)."""
        for ns in (self.wan, self.gw):
            ns.run("nft", "delete", "table", "inet", _NFT_TABLE, check=False)
        self._dropped.discard("nft")

    def loss(self, percent: int) -> None:
        """Drop `percent` % of the gateway's packets at random on the wan input; 0 clears."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss {percent}: expected 0..100 (%)")
        self.wan.run("nft", "delete", "table", "inet", _NFT_TABLE, check=False)
        if percent:
            self._nft_table(self.wan, f"ip saddr {self.gw_ip} numgen random mod 100 < {percent} "
                                      "counter drop")

    def dropped_packets(self) -> int:
        """Packets the wan side's `loss()` rule has dropped so far (0 without one)."""
        result = self.wan.run("nft", "-j", "list", "table", "inet", _NFT_TABLE, check=False)
        if result.returncode != 0:
            return 0
        total = 0
        for item in json.loads(result.stdout).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"].get("packets", 0))
        return total

    def blackhole(self) -> None:
        """Add a blackhole route for the wan address in the gateway's namespace."""
        _ip("-n", self.gw.name, "route", "add", "blackhole", f"{self.wan_ip}/32")
        self._dropped.add("blackhole")

    def unblackhole(self) -> None:
        """Remove the blackhole route."""
        _ip("-n", self.gw.name, "route", "del", "blackhole", f"{self.wan_ip}/32", check=False)
        self._dropped.discard("blackhole")

    def drop(self, kind: DropKind) -> None:
        """Drop the WAN one of the three ways (`DROP_KINDS`)."""
        {"link": self.link_down, "nft": self.nft_drop, "blackhole": self.blackhole}[kind]()

    def restore(self, kind: DropKind) -> None:
        """Undo `drop(kind)`."""
        {"link": self.link_up, "nft": self.nft_restore, "blackhole": self.unblackhole}[kind]()

    def restore_all(self) -> None:
        """Undo every drop still in place (a test that failed half way)."""
        for kind in DROP_KINDS:
            if kind in self._dropped:
                self.restore(kind)
        self.loss(0)

    @property
    def dropped(self) -> frozenset[str]:
        """The drops in place now."""
        return frozenset(self._dropped)

    @contextlib.contextmanager
    def dropped_by(self, kind: DropKind) -> Iterator[None]:
        """`with pair.dropped_by("nft"): ...`: the WAN is down inside the block."""
        self.drop(kind)
        try:
            yield
        finally:
            self.restore(kind)

    # ---------------------------------------------------------------- helpers

    def operstate(self, ifname: str) -> str:
        """The gateway-side interface's operstate (UP, DOWN, LOWERLAYERDOWN...)."""
        result = _ip("-n", self.gw.name, "-j", "link", "show", ifname)
        entries = json.loads(result.stdout or "[]")
        return str(entries[0].get("operstate", "")) if entries else ""

    def _nft_table(self, ns: Namespace, rule: str) -> None:
        ns.nft(
            f"table inet {_NFT_TABLE} {{\n"
            f"  chain input {{\n"
            f"    type filter hook input priority -10; policy accept;\n"
            f"    {rule}\n"
            f"  }}\n"
            f"}}\n"
        )

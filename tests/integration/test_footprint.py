"""The daemon loads only what its config needs, and runs numpy's BLAS on one thread.

Both are read from the running daemon: its shared objects from /proc/PID/maps, its threads
from /proc/PID/task, and the optional libraries it imported from `status` ("process").
Figures (RSS, CPU) are bench/footprint.py's business; nothing here asserts on them.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

import pytest

from .dns_server import DnsTestServer
from .gateway_proc import GatewayProcess
from .peers.ports import free_port

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                  "GOTO_NUM_THREADS")

# Shared objects of the optional libraries: numpy's core, cryptography's Rust binding,
# cffi (cryptography and pylibsrtp both load it). dnspython is pure Python: only `status`
# can tell whether it was imported.
NUMPY_SO = "_multiarray_umath"
CRYPTO_SO = ("_rust.abi3.so", "_cffi_backend", "pylibsrtp")


def default_config(sip_port: int, state_dir: Path) -> str:
    """The embedded default config, on a free port and a private state directory."""
    text = resources.files("gateway.config").joinpath("default.yaml").read_text()
    assert "listen: 127.0.0.1:5060" in text, "the embedded default changed; update this test"
    text = text.replace("listen: 127.0.0.1:5060", f"listen: 127.0.0.1:{sip_port}")
    return text.replace("  log_level: info", f"  log_level: info\n  state_dir: {state_dir}")


def shared_objects(pid: int) -> set[str]:
    """File names of everything mapped into the process."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            names.add(os.path.basename(parts[5]))
    return names


def mapped(pid: int, fragment: str) -> list[str]:
    return sorted(name for name in shared_objects(pid) if fragment in name)


@pytest.fixture
def no_blas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon gets no BLAS thread setting from its environment: the code must pin it."""
    for name in BLAS_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_idle_default_config_loads_no_numpy_crypto_or_dns(tmp_path: Path, no_blas_env: None) -> None:
    gw = GatewayProcess(tmp_path, default_config(free_port(), tmp_path / "state"))
    gw.start()
    try:
        pid = gw.pid
        assert pid is not None
        time.sleep(1.0)  # 50 audio ticks: both idle lines and their phones have run
        assert mapped(pid, NUMPY_SO) == []
        for so in CRYPTO_SO:
            assert mapped(pid, so) == [], f"{so} loaded by an idle daemon with no trunk"
        process = gw.status()["process"]
        assert process["loaded"] == [], process
        assert process["rss_kib"] > 0

        # A handset goes off hook: dial tone needs numpy now, and its BLAS starts no thread.
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="1")  # in-band DTMF: the detector's numpy path runs
        gw.wait_until("the digit to register", lambda: gw.line("1")["state"] == "collecting")
        assert mapped(pid, NUMPY_SO), "dial tone and DTMF did not load numpy?"
        process = gw.status()["process"]
        assert "numpy" in process["loaded"]
        tasks = len(os.listdir(f"/proc/{pid}/task"))
        assert tasks == process["python_threads"], (
            f"{tasks} threads in /proc/{pid}/task but Python started "
            f"{process['python_threads']}: numpy's BLAS runs a thread pool"
        )
        assert process["native_threads"] == 0, process
        assert "cryptography" not in process["loaded"] and "dns" not in process["loaded"]
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def test_tls_trunk_with_srtp_and_a_host_name_loads_crypto_and_dns(tmp_path: Path) -> None:
    records = {("trunk.test", "A"): ["127.0.0.1"]}
    with DnsTestServer(records) as dns_server:
        host, port = dns_server.address
        config = f"""
gateway:
  name: tls-gw
  country: US
  state_dir: {tmp_path / 'state'}
sip:
  listen: 127.0.0.1:{free_port()}
  dns_servers: ["{host}:{port}"]
trunks:
  - name: main
    registrar: trunk.test
    transport: tls
    srtp: require
    keepalive: none
lines:
  - name: "1"
    backend: sim
    number: "101"
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "\\\\d+"
      to: trunk:main
"""
        gw = GatewayProcess(tmp_path, config)
        gw.start()
        try:
            pid = gw.pid
            assert pid is not None
            loaded = gw.status()["process"]["loaded"]
            assert "dns" in loaded, loaded
            assert "cryptography" in loaded or "pylibsrtp" in loaded, loaded
            assert any(mapped(pid, so) for so in CRYPTO_SO), sorted(shared_objects(pid))
            assert ("trunk.test", "A") in dns_server.queries
        finally:
            assert gw.stop() == 0, gw.log_text()[-3000:]

"""Fixtures that start real SIP peers (Kamailio, baresip) on 127.0.0.1 for one test.

Every process started here is stopped in a finalizer, also when the test fails or the
fixture itself raises. When a test fails, the peers' log tails are printed in the
teardown section of the report.

Missing binaries skip the test with the install hint, unless BRANCHLINE_REQUIRE_PEERS=1
(set by `tools/dev test` and CI), in which case they fail it: a CI run must never pass
by skipping its integration tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .peers.baresip import Baresip, baresip_binary
from .peers.kamailio import KamailioTrunk, kamailio_binary
from .peers.ports import free_port, free_sip_port, release

DEFAULT_USERS: dict[str, str] = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "gateway": "gateway-secret",
}

KamailioFactory = Callable[..., KamailioTrunk]
BaresipFactory = Callable[..., Baresip]

_INSTALL_HINT = "run `sudo bash tools/install-test-deps.sh`"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kamailio(**options): keyword arguments for the kamailio_trunk fixture "
        "(users=, record_route=, auth_invite=, auth_message=, qop=, domain=)",
    )


def require_binary(name: str, found: str | None) -> str:
    """Return the binary path, or skip (fail under BRANCHLINE_REQUIRE_PEERS=1)."""
    if found:
        return found
    missing(f"{name} is not installed; {_INSTALL_HINT}")


def missing(message: str) -> NoReturn:
    """Something a test needs is not here (a peer, data, a privilege): skip, or fail under
    BRANCHLINE_REQUIRE_PEERS=1."""
    if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
        pytest.fail(f"BRANCHLINE_REQUIRE_PEERS=1 but {message}", pytrace=False)
    pytest.skip(message)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Remember each phase's outcome on the item so fixtures can dump logs on failure."""
    report = yield
    setattr(item, f"_peers_rep_{report.when}", report)  # type: ignore[attr-defined]
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    for phase in ("setup", "call"):
        report = getattr(request.node, f"_peers_rep_{phase}", None)
        if report is not None and report.failed:
            return True
    return False


def _log_tail(title: str, text: str, limit: int = 6000) -> None:
    print(f"\n===== {title} (last {limit} chars) =====\n{text[-limit:]}")


@pytest.fixture
def kamailio_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[KamailioFactory]:
    """Start Kamailio trunks on fresh ports: factory(users=..., **KamailioTrunk kwargs)."""
    require_binary("kamailio", kamailio_binary())
    started: list[KamailioTrunk] = []

    def factory(users: dict[str, str] | None = None, **kwargs: Any) -> KamailioTrunk:
        port = kwargs.pop("port", None) or free_port()
        trunk = KamailioTrunk(
            port, dict(DEFAULT_USERS if users is None else users), tmpdir=tmp_path, **kwargs
        )
        started.append(trunk)
        trunk.start()
        return trunk

    yield factory
    failed = _test_failed(request)
    for trunk in started:
        trunk.stop()
        if failed:
            _log_tail(f"kamailio :{trunk.port} log", trunk.log_text(all_runs=True))
        release(trunk.port)


@pytest.fixture
def kamailio_trunk(
    request: pytest.FixtureRequest, kamailio_factory: KamailioFactory
) -> KamailioTrunk:
    """A running trunk with DEFAULT_USERS; tune it with @pytest.mark.kamailio(...)."""
    marker = request.node.get_closest_marker("kamailio")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    return kamailio_factory(**options)


@pytest.fixture
def baresip_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[BaresipFactory]:
    """Start baresip phones on fresh ports: factory(name, **Baresip kwargs).

    `trunk=<KamailioTrunk>` is a shortcut for registrar plus the DEFAULT_USERS (or the
    trunk's) password of `name`. Ports are allocated unless given.
    """
    require_binary("baresip", baresip_binary())
    started: list[Baresip] = []

    def factory(name: str, *, trunk: KamailioTrunk | None = None, **kwargs: Any) -> Baresip:
        if trunk is not None:
            kwargs.setdefault("registrar", f"127.0.0.1:{trunk.port}")
            user = kwargs.get("user", name)
            kwargs.setdefault("password", trunk.users.get(user))
        sip_port = kwargs.pop("sip_port", None) or free_sip_port()
        ctrl_port = kwargs.pop("ctrl_port", None) or free_port()
        phone = Baresip(
            name, sip_port=sip_port, ctrl_port=ctrl_port, tmpdir=tmp_path, **kwargs
        )
        started.append(phone)
        phone.start()
        return phone

    yield factory
    failed = _test_failed(request)
    for phone in started:
        phone.stop()
        if failed:
            _log_tail(f"baresip {phone.name} events", "\n".join(phone.event_types()))
            _log_tail(f"baresip {phone.name} log", phone.log_text())
        release(phone.sip_port, phone.sip_port + 1, phone.ctrl_port)


@pytest.fixture
def sox_binary() -> str:
    """Path of sox (used to make test WAVs); skips/fails like the peers when missing."""
    return require_binary("sox", shutil.which("sox"))

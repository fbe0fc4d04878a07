"""The suite-wide rule in tests/conftest.py: under BRANCHLINE_REQUIRE_PEERS=1 a skip fails."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()
_TESTS = '''
import pytest

@pytest.fixture
def peer():
    pytest.skip("kamailio is not installed")

def test_skips_in_body():
    pytest.skip("data missing")

def test_skips_in_fixture(peer):
    pass

@pytest.mark.skipif(True, reason="not on this platform: no audioop")
def test_platform():
    pass

@pytest.mark.xfail(reason="known")
def test_known():
    assert False
'''


def test_skips_fail_when_peers_are_required(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRANCHLINE_REQUIRE_PEERS", "1")
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*BRANCHLINE_REQUIRE_PEERS=1 forbids skips*"])


def test_skips_stay_skips_for_a_developer(pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRANCHLINE_REQUIRE_PEERS", raising=False)
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(_TESTS)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(skipped=3, xfailed=1)


def test_every_rfc4475_message_is_in_the_repository() -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "rfc4475"
    assert len(list(data.glob("*.dat"))) == 49

"""Suite-wide rule: under BRANCHLINE_REQUIRE_PEERS=1 (set by `tools/dev test` and CI) a skipped
test is a failed test.

A missing peer, missing data or a missing privilege must never let a CI run pass by skipping.
The one exception is a test that cannot apply to the Python it runs on (audioop is gone from
Python 3.13, for example): its reason starts with ``PLATFORM_SKIP``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: Prefix of a skip reason that names a Python or OS difference, not a missing peer or data.
PLATFORM_SKIP = "not on this platform:"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    report: pytest.TestReport = yield
    if (
        os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
        and isinstance(report.longrepr, tuple)
        and PLATFORM_SKIP not in str(report.longrepr[2])
    ):
        report.outcome = "failed"
        report.longrepr = f"BRANCHLINE_REQUIRE_PEERS=1 forbids skips: {report.longrepr[2]}"
    return report

"""bench.registrar's pure parts: the phones' CSV files, sipp's statistics turned into
counts, what makes a step clean, and the figure picked from a ladder."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.registrar import PeerResult, figure
from bench.registrar_peers import gateway_config, kamailio_config
from bench.registrar_sipp import (
    SippCounts,
    Step,
    call_pairs,
    calls_csv,
    counts_from_stats,
    failure_text,
    highest_clean_rate,
    make_phones,
    phones_csv,
)
from bench.sip_sipp import read_sipp_stats

# Header and rows as sipp 3.6 writes them with -trace_stat (cut to the columns read, plus
# a few neighbours; sipp ends every row with ';').
HEADER = ("StartTime;CurrentTime;TotalCallCreated;CurrentCall;SuccessfulCall(P);"
          "SuccessfulCall(C);FailedCall(P);FailedCall(C);FailedUnexpectedMessage(P);"
          "FailedUnexpectedMessage(C);FailedTimeoutOnRecv(P);FailedTimeoutOnRecv(C);"
          "Retransmissions(P);Retransmissions(C);")


def stat_file(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "uac_stat.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_counts_come_from_the_last_row_cumulative_columns(tmp_path: Path) -> None:
    path = stat_file(tmp_path,
                     "t0;t1;500;20;480;480;0;0;0;0;0;0;3;3;",
                     "t0;t2;1000;0;497;977;1;23;1;20;0;3;0;9;")
    counts = counts_from_stats(read_sipp_stats(path))
    assert (counts.created, counts.successful, counts.failed, counts.retransmissions) == (
        1000, 977, 23, 9)
    assert counts.failure_kinds == {"FailedUnexpectedMessage": 20, "FailedTimeoutOnRecv": 3}
    assert not counts.clean


def test_a_clean_run_and_what_spoils_it(tmp_path: Path) -> None:
    clean = counts_from_stats(read_sipp_stats(stat_file(
        tmp_path, "t0;t1;1000;0;1000;1000;0;0;0;0;0;0;0;0;")))
    assert clean.clean and clean.stats_found
    assert failure_text(clean) == "-"
    # sipp that wrote no statistics at all (died, bad option) is never clean.
    missing = counts_from_stats({})
    assert not missing.clean and "no sipp statistics" in failure_text(missing)
    # Nothing created is not a success either.
    assert not counts_from_stats({"TotalCallCreated": "0", "SuccessfulCall(C)": "0"}).clean


def test_unexpected_answers_are_counted_from_the_error_log() -> None:
    log = ("2026-12-06\t22:00:00.1\t1.1: Aborting call on unexpected message for Call-Id "
           "'1-2@127.0.0.1': while expecting '200' (index 9), received 'SIP/2.0 486 Busy Here\n"
           "Via: ...'\n") * 2
    counts = counts_from_stats({"TotalCallCreated": "2", "SuccessfulCall(C)": "0",
                                "FailedCall(C)": "2"}, log)
    assert counts.unexpected == {"expected 200, got 486 Busy Here": 2}
    assert "expected 200, got 486 Busy Here: 2" in failure_text(counts)


def ok(n: int) -> SippCounts:
    return SippCounts(created=n, successful=n, stats_found=True)


def test_a_step_is_clean_only_when_every_planned_run_succeeded_on_both_sides() -> None:
    assert Step("kamailio", "register", 100, 1000, 10.0, ok(1000)).clean
    # sipp stopped early (global timeout): fewer created than planned.
    assert not Step("kamailio", "register", 100, 1000, 10.0, ok(990)).clean
    # The called phones saw a failure the caller did not.
    uas = SippCounts(created=50, successful=49, failed=1, stats_found=True)
    assert not Step("gateway", "calls", 5, 50, 11.0, ok(50), uas=uas).clean
    assert Step("gateway", "calls", 5, 50, 11.0, ok(50), uas=ok(50)).clean
    # Calls: the last call's own length is not part of the rate.
    assert Step("gateway", "calls", 5, 50, 11.0, ok(50), uas=ok(50), tail_s=1.0).achieved == 5.0


def test_a_clean_step_that_fell_behind_counts_at_the_rate_it_completed() -> None:
    kept_up = Step("gateway", "re-register", 200, 1000, 5.02, ok(1000))
    assert kept_up.sustained == 200
    # Offered 400/s, but the last of 1,000 answers came after 3.2 s: 312.5/s.
    behind = Step("gateway", "re-register", 400, 1000, 3.2, ok(1000))
    assert behind.clean and behind.sustained == 312.5
    assert highest_clean_rate([kept_up, behind], ("re-register",)) == 312.5
    failed = Step("gateway", "re-register", 800, 1000, 9.8,
                  SippCounts(created=1000, successful=940, failed=60, stats_found=True))
    assert failed.sustained is None


def ladder(peer: str, *rungs: tuple[str, float, bool]) -> list[Step]:
    return [Step(peer, kind, rate, 10, 10 / rate,
                 ok(10) if good else SippCounts(created=10, successful=3, failed=7,
                                                stats_found=True))
            for kind, rate, good in rungs]


def test_the_figure_is_the_highest_clean_rung() -> None:
    steps = ladder("gateway", ("register", 100, True), ("re-register", 200, True),
                   ("re-register", 400, False), ("repair", 100, True),
                   ("calls", 10, True), ("calls", 25, False))
    assert highest_clean_rate(steps, ("register", "re-register")) == 200
    assert highest_clean_rate(steps, ("calls",)) == 10
    assert highest_clean_rate(steps[2:3], ("re-register",)) is None
    res = PeerResult("gateway", steps)
    assert figure(res, ("register", "re-register"), (100, 200, 400)) == "200"
    # The top rung tried was clean: the limit is above it, and the figure says so.
    top = PeerResult("kamailio", ladder("kamailio", ("calls", 10, True), ("calls", 25, True)))
    assert figure(top, ("calls",), (10, 25)) == "25+"


def test_a_ladder_that_completed_nothing_is_not_measured() -> None:
    nothing = Step("gateway", "calls", 5, 15, 3.0,
                   SippCounts(created=15, successful=0, failed=15, stats_found=True,
                              failure_kinds={"FailedUnexpectedMessage": 15}))
    text = figure(PeerResult("gateway", [nothing]), ("calls",), (5, 10))
    assert text.startswith("not measured: nothing completed") and "Unexpected" in text
    crashed = PeerResult("gateway", [], error="RuntimeError: branchline exited")
    assert figure(crashed, ("calls",), (5,)).startswith("not measured: RuntimeError")


def test_phones_have_their_own_passwords_and_callers_never_call_callers() -> None:
    phones = make_phones(1000)
    assert len({p.user for p in phones}) == len({p.password for p in phones}) == 1000
    assert all(len(p.password) >= 8 and p.password != p.user for p in phones)
    pairs = call_pairs(phones)
    assert len(pairs) == 500
    assert not {a.user for a, _ in pairs} & {b.user for _, b in pairs}
    with pytest.raises(ValueError):
        make_phones(7)


def test_csv_files_carry_each_phone_and_its_authentication_keyword() -> None:
    phones = make_phones(4)
    reg = phones_csv(phones).splitlines()
    assert reg[0] == "SEQUENTIAL" and len(reg) == 5
    user, password, keyword = reg[1].split(";")
    assert (user, password) == (phones[0].user, phones[0].password)
    assert keyword == f"[authentication username={user} password={password}]"
    calls = calls_csv(phones).splitlines()
    assert calls[1:] == [
        f"1000;1002;[authentication username=1000 password={phones[0].password}]",
        f"1001;1003;[authentication username=1001 password={phones[1].password}]",
    ]


def test_both_registrars_know_every_phone() -> None:
    phones = make_phones(6)
    kam = kamailio_config(5070, phones, 1, "/usr/lib/kamailio/modules")
    gw = gateway_config(5080, phones, Path("/tmp/state"))
    for p in phones:
        assert f'$sht(users=>{p.user}) = "{p.password}";' in kam
        assert f'user: "{p.user}", password: "{p.password}"' in gw
    assert "digest_algorithms: [MD5]" in gw

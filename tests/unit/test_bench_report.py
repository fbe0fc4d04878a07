"""bench.report's logic: goal checks, parsing each bench's output, the board projection, and a
failing bench becoming a FAILED row while the others still count."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.report_figures import (
    FAILED,
    GOALS,
    MET,
    MISSED,
    NOT_JUDGED,
    Row,
    judge,
    last_json,
    meets,
    rows_call_records,
    rows_failover,
    rows_footprint,
    rows_media,
    rows_registrar,
    rows_rtp,
    rows_sip,
    rows_sms_queue,
)
from bench.report_project import (
    BOARDS,
    RESULTS_FORMAT,
    board_table,
    host_figures,
    load_results,
    project,
    slowdown,
)

PI4 = next(b for b in BOARDS if b.key == "pi4")
PI3 = next(b for b in BOARDS if b.key == "pi3")


# ----------------------------------------------------------------------------- goals


@pytest.mark.parametrize(("goal", "value", "peer", "expected"), [
    ("cpu_per_call", 1.0, None, True),
    ("cpu_per_call", 1.01, None, False),
    ("detect_p99", 1.99, None, True),
    ("detect_p99", 2.0, None, False),  # strictly under 2 s
    ("registrations", 200, None, True),
    ("registrations", 199.9, None, False),
    ("pacing_drift", -49.9, None, True),
    ("pacing_drift", -50.0, None, False),  # |drift|, negative counts too
    ("pacing_p99", 2.0, 2.5, True),
    ("pacing_p99", 2.6, 2.5, False),
    ("pacing_p99", 2.6, None, None),  # no peer figure: cannot judge
])
def test_meets(goal: str, value: float, peer: float | None, expected: bool | None) -> None:
    assert meets(GOALS[goal], value, peer) is expected


def test_judge_marks() -> None:
    assert judge(Row("b", "f", 0.5, goal="cpu_per_call")).verdict == MET
    assert judge(Row("b", "f", 3.0, goal="cpu_per_call")).verdict == MISSED
    missing = judge(Row("b", "f", None, goal="cpu_per_call"))
    assert missing.verdict == MISSED and "no figure" in missing.note
    assert judge(Row("b", "f", 3.0)).verdict == ""  # no goal, no mark
    # --quick cannot reach 1,000 phones: not judged rather than falsely missed
    assert judge(Row("b", "f", 50, goal="bindings"), quick=True).verdict == NOT_JUDGED
    assert judge(Row("b", "f", 50, goal="bindings")).verdict == MISSED
    assert judge(Row("b", "f", None, verdict=FAILED, goal="bindings")).verdict == FAILED


def test_every_goal_names_its_source() -> None:
    for key, goal in GOALS.items():
        assert goal.source, key
        assert goal.op in {"<=", "<", ">=", "abs<", "<=peer"}, key


# ----------------------------------------------------------------------------- parsing


def test_last_json_line_and_indented_object() -> None:
    assert last_json('table\n{"a": 1}\n{"b": 2}\n') == {"b": 2}
    indented = "bench text\n" + json.dumps({"x": {"y": [1, 2]}}, indent=2) + "\n"
    assert last_json(indented) == {"x": {"y": [1, 2]}}
    with pytest.raises(ValueError):
        last_json("only a table\nno json here\n")
    with pytest.raises(ValueError):
        last_json('{"cut": ')


def _rtp(gw_p99: float, bs_p99: float, drift: float) -> dict[str, Any]:
    def stream(p99: float, d: float) -> dict[str, Any]:
        return {"p50_ms": 0.5, "p99_ms": p99, "max_ms": 4.0, "drift_ppm": d,
                "back_to_back": 0}
    return {"streams": {"gateway->baresip": stream(gw_p99, drift),
                        "baresip->gateway": stream(bs_p99, 1.0)}}


def test_rtp_rows_judge_p99_against_baresip_and_drift() -> None:
    rows = {r.figure: judge(r) for r in rows_rtp(_rtp(1.7, 3.5, -2.0))}
    assert rows["RTP pacing p99"].verdict == MET
    assert rows["RTP pacing p99"].peer == 3.5
    assert rows["RTP pacing drift"].verdict == MET
    rows = {r.figure: judge(r) for r in rows_rtp(_rtp(4.0, 3.5, 60.0))}
    assert rows["RTP pacing p99"].verdict == MISSED
    assert rows["RTP pacing drift"].verdict == MISSED


def test_media_rows() -> None:
    data = {"steps": [
        {"calls": 1, "up": 1, "gw_cpu_pct": 7.0, "gw_per_call": 7.0, "lost": 0, "late": 0,
         "p99_ms": 0.8, "passed": True},
        {"calls": 64, "up": 60, "gw_cpu_pct": 60.0, "gw_per_call": 1.0, "lost": 0,
         "late": 5, "p99_ms": 3.0, "passed": False}],
        "largest_passed": 1, "baresip_pct_per_call": 2.5, "calls_per_core": 100}
    rows = [judge(r) for r in rows_media(data)]
    cpu = [r for r in rows if r.goal == "cpu_per_call"]
    assert [r.gateway for r in cpu] == [7.0, 1.0]
    assert [r.verdict for r in cpu] == [MISSED, MET]
    assert all(r.peer == 2.5 for r in cpu)
    assert "only 60 of 64" in cpu[1].note and "late 5" in cpu[1].note
    # a step in which no call came up has no CPU-per-call figure (not the idle daemon's)
    none_up = {"steps": [{"calls": 1, "up": 0, "gw_cpu_pct": 1.5, "gw_per_call": 1.5}]}
    (row, *_) = rows_media(none_up)
    assert row.gateway is None and judge(row).verdict == MISSED
    most = next(r for r in rows if r.goal == "calls_per_core")
    assert most.gateway == 1 and most.verdict == MISSED


def test_footprint_rows_rss_per_call() -> None:
    data = {"registered": {"gateway_idle_rss_kib": 40 * 1024, "baresip_idle_rss_kib": 7 * 1024,
                           "gateway_registered_s": 0.4, "baresip_registered_s": 0.1},
            "calls": {"calls": 10, "idle_rss_kib": 40 * 1024, "calls_rss_kib": 60 * 1024}}
    rows = {r.figure: judge(r) for r in rows_footprint(data, 1.5)}
    assert rows["idle RSS, two registered lines"].gateway == 40.0
    assert rows["idle RSS, two registered lines"].verdict == MET  # <= 45 MB
    assert rows["RSS per call"].gateway == 2.0
    assert rows["RSS per call"].peer == 1.5
    assert rows["start to registered"].peer == 0.1


def test_sip_rows() -> None:
    data = {"gateway": {"latency": {"invite_180": {"p50_ms": 4.0, "p99_ms": 10.0}},
                        "max_clean_cps": 10, "steps": [{"rate": 5}, {"rate": 20}]},
            "kamailio": {"invite_180": {"p50_ms": 0.3, "p99_ms": 1.0}}}
    rows = {r.figure: r for r in rows_sip(data)}
    assert rows["INVITE->180 p99"].gateway == 10.0
    assert rows["INVITE->180 p99"].peer == 1.0
    assert rows["calls/s into the UAS, zero failures"].gateway == 10


def _registrar(gw_reg: float, gw_calls: float, bound: int) -> dict[str, Any]:
    def peer(reg: float, calls: float, n: int) -> dict[str, Any]:
        return {"registrations_per_s": reg, "calls_per_s": calls, "error": None, "steps": [
            {"kind": "register", "rate": 100, "uac": {"successful": n}, "clean": True,
             "cpu_pct": 20.0, "achieved_per_s": 100.0},
            {"kind": "re-register", "rate": 400, "uac": {"successful": n}, "clean": True,
             "cpu_pct": 80.0, "achieved_per_s": 320.0},
            {"kind": "calls", "rate": 50, "uac": {"successful": 1000}, "clean": True,
             "cpu_pct": 50.0, "achieved_per_s": 50.0}]}
    return {"peers": {"gateway": peer(gw_reg, gw_calls, bound),
                      "kamailio": peer(3200, 200, 1000)}}


def test_registrar_rows() -> None:
    rows = [judge(r) for r in rows_registrar(_registrar(320, 50, 1000))]
    assert [(r.gateway, r.verdict) for r in rows] == [(1000, MET), (320, MET), (50, MET)]
    assert rows[0].peer == 1000 and rows[1].peer == 3200
    assert "limit is above it" in rows[2].note  # clean at the highest call rate tried
    rows = [judge(r) for r in rows_registrar(_registrar(150, 25, 900))]
    assert [r.verdict for r in rows] == [MISSED, MISSED, MISSED]


def test_failover_rows() -> None:
    data = {"figures": {"rounds": 9, "detect_status": {"p50": 0.01, "p99": 2.4, "n": 9},
                        "gsm_call": {"p50": 0.8, "p99": 2.3, "n": 9},
                        "failback": {"p50": 5.0, "p99": 5.3, "n": 9},
                        "calls_lost": 1, "calls_placed": 18}}
    rows = {r.figure: judge(r) for r in rows_failover(data)}
    assert rows["failover detection p99"].verdict == MISSED
    assert rows["failover detection p50"].verdict == ""
    assert rows["fail-back p50"].gateway == 5.0
    assert rows["calls lost"].verdict == MISSED


def test_call_records_text_is_parsed_from_the_bench_own_format(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.call_records import show

    show("idle", [0.0007, 0.0009, 0.0012])
    show("recorder", [0.0006, 0.0010, 0.0030])
    show("inline", [0.001, 0.002, 0.005])
    text = capsys.readouterr().out
    (row,) = rows_call_records(text)
    assert row.gateway is not None and row.peer is not None
    assert row.gateway > row.peer  # recorder p99 ~3 ms, idle ~1.2 ms
    with pytest.raises(ValueError):
        rows_call_records("nothing useful")


def test_sms_queue_text() -> None:
    text = ("200 SMS, file system of /tmp\n"
            f"{'mode':8} {'store median':>13} {'store p95':>10} {'mark median':>12}\n"
            f"{'FULL':8} {0.33:10.2f} ms {0.5:7.2f} ms {0.27:9.2f} ms {0.4:6.2f} ms\n"
            f"{'NORMAL':8} {0.04:10.2f} ms {0.06:7.2f} ms {0.02:9.2f} ms {0.03:6.2f} ms\n")
    (row,) = rows_sms_queue(text)
    assert (row.gateway, row.peer) == (0.33, 0.04)


# ----------------------------------------------------------------------------- projection


def test_projection_arithmetic() -> None:
    host_hz = 3.0e9
    # Pi 4: clock ratio 3.0 / 1.5 = 2, per-clock ratio 0.33 -> 2 / 0.33 times the cycles' time
    assert slowdown(PI4, host_hz) == pytest.approx(2 / 0.33)
    assert project(1.0, "cpu", PI4, host_hz) == pytest.approx(6.0606, rel=1e-4)
    assert project(100.0, "rate", PI4, host_hz) == pytest.approx(16.5)
    # Pi 3: 3.0 / 1.2 = 2.5, per clock 0.15
    assert project(1.0, "cpu", PI3, host_hz) == pytest.approx(2.5 / 0.15)
    with pytest.raises(ValueError):
        project(1.0, "volts", PI4, host_hz)


def test_host_figures_from_cycles_per_operation() -> None:
    media = {"steps": [{"calls": 8, "up": 8, "gw_cpu_pct": 24.0},
                       {"calls": 64, "up": 64, "gw_cpu_pct": 64.0}]}
    sip = {"gateway": {"steps": [{"rate": 5, "clean": True, "daemon_cpu_pct": 20.0},
                                 {"rate": 10, "clean": True, "daemon_cpu_pct": 25.0},
                                 {"rate": 20, "clean": False, "daemon_cpu_pct": 90.0}]}}
    host = host_figures(media, _registrar(320, 50, 1000), None, sip)
    # the highest clean step: 10 calls/s at 25 % of a core -> 40 calls/s per core
    assert host["sip.uas_calls_per_s"] == pytest.approx(40.0)
    assert host["media.cpu_pct_per_call"] == pytest.approx(1.0)  # the largest step
    assert host["media.calls_per_core"] == pytest.approx(100.0)
    # re-register at 320/s took 80 % of a core: 0.0025 CPU s each -> 400/s per core
    assert host["registrar.registrations_per_s"] == pytest.approx(400.0)
    # 50 calls/s at 50 %: 0.01 CPU s a call -> 100/s
    assert host["registrar.calls_per_s"] == pytest.approx(100.0)


def test_board_results_file_replaces_the_projection(tmp_path: Path) -> None:
    (tmp_path / "pi4.json").write_text(json.dumps({
        "format": RESULTS_FORMAT, "board": "pi4", "figures": {"media.cpu_pct_per_call": 4.2}}))
    (tmp_path / "broken.json").write_text("{not json")
    results = load_results(tmp_path)
    assert "_error" in results["broken"]
    rows = board_table({"media.cpu_pct_per_call": 1.0}, 3.0e9, results)
    cpu = next(r for r in rows if r["key"] == "media.cpu_pct_per_call")
    assert cpu["boards"]["pi4"] == {"value": 4.2, "how": "measured"}
    assert cpu["boards"]["pi3"]["how"] == "projected"
    assert cpu["boards"]["pi3"]["value"] == pytest.approx(2.5 / 0.15)
    other = next(r for r in rows if r["key"] == "registrar.calls_per_s")
    assert other["boards"]["pi3"] == {"value": None, "how": "no figure"}


# ----------------------------------------------------------------------------- running


def _fake_runner(stdout: str, returncode: int = 0, stderr: str = "") -> Any:
    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)
    return run


def _spec(name: str) -> report.Spec:
    return next(s for s in report.SPECS if s.name == name)


def test_failing_bench_becomes_failed_row_and_others_still_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report.os, "geteuid", lambda: 0)
    broken = report.run_spec(_spec("sip"), True, tmp_path, _fake_runner(
        "half a table\n", 1, "Traceback ...\nRuntimeError: kamailio did not start"))
    good = report.run_spec(_spec("rtp_pacing"), True, tmp_path, _fake_runner(
        "table\n" + json.dumps(_rtp(1.0, 2.0, 1.0)) + "\n"))
    assert broken.error is not None and "kamailio did not start" in broken.error
    assert good.error is None
    rows = report.rows_for({"sip": broken, "rtp_pacing": good}, quick=True)
    sip_rows = [r for r in rows if r.bench == "sip"]
    assert [r.verdict for r in sip_rows] == [FAILED]
    assert "kamailio did not start" in sip_rows[0].note
    assert any(r.figure == "RTP pacing p99" and r.verdict == MET for r in rows)
    assert (tmp_path / "logs" / "sip.err").read_text().endswith("did not start")


def test_timeout_and_unreadable_output_are_failed_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report.os, "geteuid", lambda: 0)

    def too_slow(argv: list[str], **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    slow = report.run_spec(_spec("media"), True, tmp_path, too_slow)
    assert slow.error is not None and "timed out" in slow.error
    # JSON whose shape the parser does not know: FAILED, not a crash of the report
    odd = report.run_spec(_spec("media"), True, tmp_path, _fake_runner('{"steps": 5}\n'))
    rows = report.rows_for({"media": odd}, quick=False)
    assert [r.verdict for r in rows] == [FAILED]
    assert report.rows_for({"media": slow}, quick=False)[0].verdict == FAILED


def test_root_only_bench_without_root_is_failed_not_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report.os, "geteuid", lambda: 1000)

    def must_not_run(argv: list[str], **kwargs: Any) -> Any:
        raise AssertionError("ran a root-only bench without root")

    outcome = report.run_spec(_spec("failover"), False, tmp_path, must_not_run)
    assert outcome.error is not None and "root" in outcome.error
    # and one that needs no root runs
    ran = report.run_spec(_spec("sms_queue"), False, tmp_path, _fake_runner("FULL  0.3 ms\n"))
    assert ran.error is None


def test_failover_figures_come_from_its_json_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report.os, "geteuid", lambda: 0)
    spec = _spec("failover")
    argv = spec.argv(True, tmp_path)
    assert argv[-2:] == ["--json", str(tmp_path / "failover.json")]

    def writes_figures(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        Path(argv[-1]).write_text(json.dumps(
            {"figures": {"rounds": 3, "detect_status": {"p50": 0.1, "p99": 1.5}}}))
        return subprocess.CompletedProcess(argv, 0, "table only\n", "")

    outcome = report.run_spec(spec, True, tmp_path, writes_figures)
    rows = report.rows_for({"failover": outcome}, quick=True)
    assert next(r for r in rows if r.goal == "detect_p99").verdict == MET
    # the next run dies before writing: the previous run's file must not stand in for it
    died = report.run_spec(spec, True, tmp_path, _fake_runner("", 1, "netns: permission"))
    assert died.error is not None and "netns: permission" in died.error


def test_render_marks_missed_failed_and_projected(tmp_path: Path) -> None:
    rows = [judge(Row("media", "CPU per bridged call, 64 calls", 2.0, "% core",
                      goal="cpu_per_call")),
            Row("sip", "(bench failed)", None, verdict=FAILED, note="boom")]
    boards = board_table({"media.cpu_pct_per_call": 1.0}, 2.6e9, {})
    info = report.machine() | {"load_after": [0.1, 0.2, 0.3]}
    text = report.render(info, rows, boards, {}, False, 2.6e9)
    assert "<< MISSED" in text and "FAILED" in text and "boom" in text
    assert "PROJ" in text and "PROJECTED" in text
    assert "goals missed: 1" in text

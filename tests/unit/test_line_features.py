"""gateway.lines.features: star codes, forward/DND state, the incoming-call decision and
distinctive-ring names from Alert-Info."""

from __future__ import annotations

import pytest

from gateway.lines.features import (
    FeatureRequest,
    Forward,
    ForwardState,
    Refuse,
    Ring,
    StarCodes,
    decide_incoming,
    ring_name,
)
from gateway.routing.dialplan import DigitMap, MatchResult

CODES = StarCodes()


@pytest.mark.parametrize(
    ("digits", "request_"),
    [
        ("*725551234", FeatureRequest("forward_always", True, "5551234")),
        ("*725551234#", FeatureRequest("forward_always", True, "5551234")),
        ("*73", FeatureRequest("forward_always", False)),
        ("*902001", FeatureRequest("forward_busy", True, "2001")),
        ("*91", FeatureRequest("forward_busy", False)),
        ("*92+4930123", FeatureRequest("forward_no_answer", True, "+4930123")),
        ("*93", FeatureRequest("forward_no_answer", False)),
        ("*78", FeatureRequest("dnd", True)),
        ("*79", FeatureRequest("dnd", False)),
        ("*72", FeatureRequest("forward_always", True, None)),  # no number: refused
        ("*72#", FeatureRequest("forward_always", True, None)),
        ("5551234", None),
        ("*69", None),
    ],
)
def test_star_codes_parse(digits: str, request_: FeatureRequest | None) -> None:
    assert CODES.parse(digits) == request_


def test_configured_codes_replace_the_defaults() -> None:
    codes = StarCodes(dnd_on="*55", dnd_off="*56", forward_always_on="#21")
    assert codes.parse("*55") == FeatureRequest("dnd", True)
    assert codes.parse("*78") is None
    assert codes.parse("#21100") == FeatureRequest("forward_always", True, "100")


@pytest.mark.parametrize("kwargs", [{"dnd_on": "78"}, {"dnd_on": "*7"}, {"dnd_off": "*78"},
                                    {"forward_busy_on": "*7812"}])
def test_bad_or_overlapping_codes_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="star code"):
        StarCodes(**kwargs)


def test_codes_are_dialable_through_a_digit_map() -> None:
    m = DigitMap("(" + "|".join(("[2-9]xxxxxx", *CODES.digit_map_alternatives())) + ")")
    assert m.match("*73") is MatchResult.FULL
    assert m.match("*78") is MatchResult.FULL
    assert m.match("*72555") is MatchResult.PARTIAL  # waits the long timer, or '#'
    assert m.match("*72555#") is MatchResult.FULL
    assert m.matches_on_timeout("*725551234")


def test_state_follows_requests_and_round_trips() -> None:
    state = ForwardState()
    assert not state.active
    state = state.apply(FeatureRequest("forward_busy", True, "2001"))
    state = state.apply(FeatureRequest("dnd", True))
    state = state.apply(FeatureRequest("forward_always", True, None))  # incomplete: no change
    assert state == ForwardState(busy="2001", dnd=True)
    assert ForwardState.from_json(state.to_json()) == state
    state = state.apply(FeatureRequest("forward_busy", False))
    assert state.busy is None and state.active


@pytest.mark.parametrize("data", [[], {"always": 5}, {"dnd": "yes"}, {"x": 1},
                                  {"always": "12a"}, {"no_answer_after": 0}])
def test_bad_state_files_are_refused(data: object) -> None:
    with pytest.raises(ValueError, match="forward"):
        ForwardState.from_json(data)


@pytest.mark.parametrize(
    ("state", "busy", "decision"),
    [
        (ForwardState(), False, Ring()),
        (ForwardState(), True, Ring()),  # the line's own answer (486, call waiting)
        (ForwardState(always="100"), False, Forward("100", "always")),
        (ForwardState(always="100", dnd=True), True, Forward("100", "always")),
        (ForwardState(dnd=True), False, Refuse(486, "do not disturb")),
        (ForwardState(dnd=True, busy="200"), False, Forward("200", "dnd")),
        (ForwardState(busy="200"), True, Forward("200", "busy")),
        (ForwardState(busy="200"), False, Ring()),
        (ForwardState(no_answer="300", no_answer_after=12), False, Ring(12.0, "300")),
    ],
)
def test_incoming_decision(state: ForwardState, busy: bool,
                           decision: Ring | Forward | Refuse) -> None:
    assert decide_incoming(state, busy) == decision


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (None, None),
        ("", None),
        ("<http://127.0.0.1/Bellcore-dr2>", "dr2"),
        ("<http://127.0.0.1>;info=Bellcore-dr4", "dr4"),
        ("<http://127.0.0.1/>;info=alert-internal", "internal"),
        ("<http://x>;info=alert-external", "external"),
        ("<urn:alert:source:internal>", "internal"),
        ("<urn:alert:priority:high>", "priority"),
        ("<http://x/ring.wav>", None),
        ("<urn:alert:source:internal>, <http://x/Bellcore-dr3>", "internal"),
    ],
)
def test_ring_name_from_alert_info(header: str | None, name: str | None) -> None:
    assert ring_name(header) == name

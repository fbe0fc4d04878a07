"""Digit maps: ATA syntax parsing, match results and syntax errors with positions."""

from __future__ import annotations

import pytest

from gateway.routing.dialplan import DialPlanError, DigitMap, MatchResult

NO = MatchResult.NO_MATCH
PART = MatchResult.PARTIAL
FULL = MatchResult.FULL
EXT = MatchResult.FULL_MAY_EXTEND

US = DigitMap("(911|1xx|[2-8]xxxxxx|1[2-9]xxxxxxxxx|0|00|*xx)")


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("9", PART),
        ("91", PART),
        ("911", FULL),
        ("912", NO),
        ("1", PART),
        ("12", PART),
        ("123", EXT),  # 1xx is complete but 1[2-9]xxxxxxxxx could go on
        ("1234", PART),
        ("12125551234", FULL),
        ("121255512345", NO),
        ("5551234", FULL),
        ("555123", PART),
        ("55512345", NO),
        ("0", EXT),  # "0" is complete, "00" is longer
        ("00", FULL),
        ("000", NO),
        ("*", PART),
        ("*6", PART),
        ("*69", FULL),
        ("#", NO),
        ("A", NO),
    ],
)
def test_us_style_map(digits: str, expected: MatchResult) -> None:
    assert US.match(digits) is expected


def test_x_matches_digits_but_not_star_or_hash() -> None:
    m = DigitMap("1x")
    assert m.match("17") is FULL
    assert m.match("1*") is NO
    assert m.match("1#") is NO


def test_sets_and_ranges() -> None:
    m = DigitMap("[135][2-4*#]")
    assert [m.match(d) for d in ("12", "34", "5*", "5#")] == [FULL] * 4
    assert [m.match(d) for d in ("2", "15", "1x")] == [NO] * 3
    m2 = DigitMap("[1-35-7]")
    assert [d for d in "0123456789" if m2.match(d) is FULL] == list("123567")


def test_dot_repeats_previous_element_zero_or_more_times() -> None:
    m = DigitMap("01[2-9].#")
    assert m.match("01#") is FULL
    assert m.match("01222999#") is FULL
    assert m.match("0122") is PART
    assert m.match("0121") is NO


def test_timer_terminated_alternative_needs_the_timeout() -> None:
    m = DigitMap("(911|x.T)")
    assert m.match("55") is PART
    assert m.matches_on_timeout("55")
    assert m.match("911") is EXT  # 911 is complete, but x.T could still take more
    assert not m.matches_on_timeout("5#")


def test_timeout_match_only_for_complete_numbers() -> None:
    m = DigitMap("(1xxT|2xxx)")
    assert m.match("123") is PART
    assert m.matches_on_timeout("123")
    assert not m.matches_on_timeout("12")
    assert not m.matches_on_timeout("234")
    assert m.matches_on_timeout("2345")


def test_short_timer_letter_makes_complete_match_wait_short_timer() -> None:
    m = DigitMap("(1xxS|1xxxx)")
    assert m.match("123") is EXT
    assert m.match("12345") is FULL
    assert DigitMap("9xxS").match("911") is EXT


def test_long_timer_letter_is_like_t() -> None:
    assert DigitMap("9xxL").match("911") is PART
    assert DigitMap("9xxL").matches_on_timeout("911")


def test_outer_parentheses_spaces_and_case_are_optional() -> None:
    a = DigitMap("(911|x.T)")
    b = DigitMap(" 911 | X.t ")
    assert a == b
    assert [a.match(d) for d in ("9", "911", "5")] == [b.match(d) for d in ("9", "911", "5")]


def test_brief_example_map_parses() -> None:
    m = DigitMap("(911|1xx|[2-9]xxxxxx|1[2-9]xxxxxxxxx|0|00|*xx|x.T)")
    assert m.match("*12") is FULL
    assert m.match("911") is EXT
    assert m.match("#") is NO


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("", 0, "empty digit map"),
        ("   ", 0, "empty digit map"),
        ("(911", 4, "missing ')'"),
        ("911)", 3, "without a matching '('"),
        ("(9|)", 3, "empty alternative"),
        ("9||1", 2, "empty alternative"),
        ("[9-2]", 1, "runs backwards"),
        ("[2-]", 3, "after '-'"),
        ("[*-9]", 1, "range must start"),
        ("[12", 0, "missing ']'"),
        ("[]", 0, "empty '[]'"),
        ("[1a]", 2, "in '[...]'"),
        (".", 0, "'.' must follow"),
        ("x..", 2, "'.' must follow"),
        ("9T1", 2, "timer letter must end"),
        ("91a", 2, "unexpected 'a'"),
        ("((9))", 1, "nested"),
        ("(9)x", 3, "after ')'"),
        ("<9:>x.", 0, "unexpected '<'"),
    ],
)
def test_syntax_errors_carry_position(source: str, position: int, fragment: str) -> None:
    with pytest.raises(DialPlanError) as info:
        DigitMap(source)
    err = info.value
    assert err.position == position
    assert fragment in err.message
    assert err.source == source
    assert f"position {position}" in str(err)


def test_dial_plan_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        DigitMap("(")

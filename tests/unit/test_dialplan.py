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
        ("9T*", 2, "timer letter must end"),
        ("91a", 2, "unexpected 'a'"),
        ("((9))", 1, "nested"),
        ("(9)x", 3, "after ')'"),
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


# ---------------------------------------------------------------- <a:b> substitution


@pytest.mark.parametrize(
    ("source", "digits", "placed"),
    [
        ("<9:>xxxxxxx", "95551234", "5551234"),  # strip an outside-line 9
        ("<:1>[2-9]xxxxxxxxx", "2125551234", "12125551234"),  # prepend 1
        ("<00:011>x.", "004930123", "0114930123"),  # replace the international prefix
        ("<00:+>x.T", "4930", "4930"),  # the alternative does not accept it: unchanged
        ("(911|<9:>[2-9]xxxxxx|<9:1>[2-9]xxxxxxxxx)", "95551234", "5551234"),
        ("(911|<9:>[2-9]xxxxxx|<9:1>[2-9]xxxxxxxxx)", "92125551234", "12125551234"),
        ("(911|<9:>[2-9]xxxxxx)", "911", "911"),
        ("1xx<:#>", "123", "123#"),  # a trailing insert is a suffix
        ("*7<2:>x.T", "*725551234", "*75551234"),
    ],
)
def test_transform_applies_substitutions(source: str, digits: str, placed: str) -> None:
    m = DigitMap(source)
    assert m.transform(digits) == placed


def test_substitution_digits_still_have_to_be_dialled() -> None:
    m = DigitMap("<9:>xxxxxxx")
    assert m.match("5551234") is NO  # the 9 is required, only not sent
    assert m.match("9555123") is PART
    assert m.match("95551234") is FULL
    assert m.match("8555123") is NO


def test_timer_seconds_s0_dials_at_once_and_sx_sets_the_timer() -> None:
    m = DigitMap("(1xxS0|1xxxxxxx|2xxS3|x.T4)")
    assert m.match("123") is FULL  # would extend to 1xxxxxxx, but S0 says dial now
    assert m.match("234") is EXT
    assert m.timer_seconds("234") == 3.0
    assert m.timer_seconds("5") == 4.0
    assert m.timer_seconds("1234") == 4.0  # x.T4 accepts it too
    assert DigitMap("(1xx|2xxS)").timer_seconds("123") is None


@pytest.mark.parametrize(
    ("source", "position", "words"),
    [
        ("<9>xxx", 0, "':'"),
        ("<9:xxx", 0, "missing '>'"),
        ("1<a:>", 2, "before ':'"),
        ("1<9:x>", 4, "after ':'"),
        ("<:>1", 0, "empty"),
        ("<9:>.", 4, "'.' must follow"),
        ("1xxS0x", 5, "timer letter must end"),
        ("1xxS99", 4, "longer than 60"),
    ],
)
def test_bad_substitutions_and_timers_name_the_position(source: str, position: int,
                                                         words: str) -> None:
    with pytest.raises(DialPlanError) as err:
        DigitMap(source)
    assert err.value.position == position, str(err.value)
    assert words in str(err.value)

"""HookDecoder: raw hook edges with a fake clock in, OffHook/OnHook/Flash/PulseDigit out."""

from __future__ import annotations

import pytest

from gateway.dsp.pulse import (
    Flash,
    HookDecoder,
    HookEvent,
    HookSettings,
    OffHook,
    OnHook,
    PulseDigit,
)


def settle(dec: HookDecoder, until: float) -> list[HookEvent]:
    """Fire every timer up to `until`, the way an adapter would."""
    events: list[HookEvent] = []
    while (deadline := dec.get_timer()) is not None and deadline <= until:
        events.extend(dec.handle_timer(deadline))
    return events


def lifted(at: float = 0.0) -> tuple[HookDecoder, list[HookEvent]]:
    dec = HookDecoder()
    events = dec.hook(True, at)
    events += settle(dec, at + 0.05)
    return dec, events


def dial(
    dec: HookDecoder, start: float, pulses: int, brk: float = 0.060, make: float = 0.040
) -> tuple[list[HookEvent], float]:
    """Feed `pulses` break/make pairs starting at `start`; return events and the end time."""
    events: list[HookEvent] = []
    t = start
    for _ in range(pulses):
        events += dec.hook(False, t)
        t += brk
        events += dec.hook(True, t)
        t += make
    return events, t - make


def test_lifting_the_handset_reports_offhook_after_debounce() -> None:
    dec = HookDecoder()
    assert dec.hook(True, 1.0) == []
    assert dec.get_timer() == pytest.approx(1.01)
    assert dec.handle_timer(1.01) == [OffHook()]
    assert dec.offhook
    assert dec.get_timer() is None


def test_bounce_while_onhook_is_not_an_offhook() -> None:
    dec = HookDecoder()
    dec.hook(True, 1.0)
    assert dec.hook(False, 1.004) == []
    assert settle(dec, 5.0) == []
    assert not dec.offhook


@pytest.mark.parametrize(
    ("pulses", "digit"),
    [(1, "1"), (2, "2"), (5, "5"), (9, "9"), (10, "0")],
)
def test_pulse_train_gives_digit(pulses: int, digit: str) -> None:
    dec, _ = lifted()
    events, end = dial(dec, 1.0, pulses)
    assert events == []  # nothing until the inter-digit gap proves the digit is over
    assert settle(dec, end + 0.24) == []
    assert settle(dec, end + 0.26) == [PulseDigit(digit)]


def test_two_sixty_ms_breaks_are_digit_two_at_eight_and_twelve_pps() -> None:
    # 8 pps: 80 ms break / 45 ms make; 12 pps: 50 ms break / 33 ms make
    for brk, make in ((0.080, 0.045), (0.050, 0.033)):
        dec, _ = lifted()
        events, end = dial(dec, 1.0, 2, brk=brk, make=make)
        assert events + settle(dec, end + 1.0) == [PulseDigit("2")]


def test_consecutive_digits_are_split_by_the_gap() -> None:
    dec, _ = lifted()
    events, end = dial(dec, 1.0, 4)
    events2, end2 = dial(dec, end + 0.5, 1)  # the next pulse settles the previous digit
    events3, _ = dial(dec, end2 + 0.6, 10)
    all_events = events + events2 + events3 + settle(dec, 10.0)
    assert all_events == [PulseDigit("4"), PulseDigit("1"), PulseDigit("0")]


def test_more_than_ten_pulses_is_dropped() -> None:
    dec, _ = lifted()
    events, end = dial(dec, 1.0, 11)
    assert events + settle(dec, end + 1.0) == []


def test_contact_bounce_inside_a_pulse_does_not_add_pulses() -> None:
    dec, _ = lifted()
    events: list[HookEvent] = []
    # pulse 1, with a 3 ms bounce (make) in the middle of its break
    events += dec.hook(False, 1.000)
    events += dec.hook(True, 1.030)
    events += dec.hook(False, 1.033)
    events += dec.hook(True, 1.060)
    # pulse 2, with a 4 ms glitch (break) in the middle of the following make
    events += dec.hook(False, 1.100)
    events += dec.hook(True, 1.160)
    events += dec.hook(False, 1.180)
    events += dec.hook(True, 1.184)
    events += settle(dec, 2.0)
    assert events == [PulseDigit("2")]


@pytest.mark.parametrize("length", [0.1, 0.3, 0.85])
def test_break_inside_flash_window_is_flash(length: float) -> None:
    dec, _ = lifted()
    events = dec.hook(False, 2.0) + dec.hook(True, 2.0 + length) + settle(dec, 3.5)
    assert events == [Flash()]
    assert dec.offhook


def test_break_reaching_flash_max_is_hangup_reported_at_the_threshold() -> None:
    dec, _ = lifted()
    assert dec.hook(False, 2.0) == []
    assert dec.get_timer() == pytest.approx(2.9)
    assert dec.handle_timer(2.89) == []
    assert dec.handle_timer(2.9) == [OnHook()]
    assert not dec.offhook
    # lifting again is a new off-hook, not a flash
    assert dec.hook(True, 4.0) + settle(dec, 4.1) == [OffHook()]


def test_hangup_caught_up_lazily_by_the_next_edge() -> None:
    dec, _ = lifted()
    dec.hook(False, 2.0)
    # nobody called handle_timer; the next edge still sees the hang-up first
    assert dec.hook(True, 5.0) + settle(dec, 5.1) == [OnHook(), OffHook()]


def test_break_between_pulse_and_flash_is_ignored() -> None:
    dec = HookDecoder(HookSettings(pulse_break_max=0.1, flash_min=0.2))
    dec.hook(True, 0.0)
    settle(dec, 0.1)
    events = dec.hook(False, 1.0) + dec.hook(True, 1.15) + settle(dec, 3.0)
    assert events == []


def test_flash_in_the_middle_of_a_rotary_digit_spoils_the_digit() -> None:
    dec, _ = lifted()
    events, end = dial(dec, 1.0, 3)
    events += dec.hook(False, end + 0.05) + dec.hook(True, end + 0.45) + settle(dec, 5.0)
    assert events == [Flash()]


def test_hangup_in_the_middle_of_a_rotary_digit_gives_no_digit() -> None:
    dec, _ = lifted()
    events, end = dial(dec, 1.0, 3)
    events += dec.hook(False, end + 0.05) + settle(dec, 5.0)
    assert events == [OnHook()]


def test_custom_flash_window() -> None:
    dec = HookDecoder(HookSettings(flash_min=0.3, flash_max=1.2), offhook=True)
    assert dec.hook(False, 1.0) + dec.hook(True, 2.1) + settle(dec, 3.0) == [Flash()]
    assert dec.hook(False, 4.0) + settle(dec, 5.3) == [OnHook()]


def test_zero_debounce_reports_offhook_immediately() -> None:
    dec = HookDecoder(HookSettings(debounce=0.0))
    assert dec.hook(True, 0.5) == [OffHook()]


def test_repeated_level_is_ignored() -> None:
    dec, _ = lifted()
    assert dec.hook(True, 1.0) == []
    assert dec.get_timer() is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flash_min": 0.9, "flash_max": 0.9},
        {"pulse_break_max": 0.2, "flash_min": 0.1},
        {"debounce": 0.2},
        {"inter_digit_gap": 0.005},
    ],
)
def test_inconsistent_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="hook settings"):
        HookSettings(**kwargs)

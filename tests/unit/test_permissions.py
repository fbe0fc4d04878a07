"""Route-target permissions: who may call which numbers through GSM, FXO and trunks."""

from __future__ import annotations

import pytest

from gateway.security.permissions import (
    DEFAULT_DENIED_PREFIXES,
    Allowed,
    CallSource,
    Denied,
    Permissions,
    TargetPolicy,
)

KITCHEN = CallSource.line("kitchen")
OFFICE = CallSource.line("office")
PHONE = CallSource.local_user("101")
PRIMARY = CallSource.trunk("primary")
BACKUP = CallSource.trunk("backup")


def perms() -> Permissions:
    return Permissions(
        [
            TargetPolicy("gsm", sources=("kitchen", "local-users"), allow=("0044",), max_calls=1),
            TargetPolicy("fxo", sources=("kitchen", "office", "trunk:primary"), max_calls=2),
            TargetPolicy(
                "trunk:primary",
                sources=("any",),
                allow=("1",),
                deny=("1900", "1976"),
                default="deny",
            ),
            TargetPolicy("local", sources=("any",), deny=()),
        ]
    )


def test_allowed_call_carries_target_and_number() -> None:
    d = perms().check(KITCHEN, "5551234", "gsm")
    assert d == Allowed("gsm", "5551234")
    assert d.allowed


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        (KITCHEN, "gsm", True),
        (OFFICE, "gsm", False),  # line not listed
        (PHONE, "gsm", True),  # local-users
        (PRIMARY, "gsm", False),  # a trunk may not hairpin out through the SIM
        (PRIMARY, "fxo", True),  # but this one may use the PSTN line
        (BACKUP, "fxo", False),  # and another trunk may not
        (PHONE, "fxo", False),
        (BACKUP, "local", True),  # "any"
    ],
)
def test_source_classes(source: CallSource, target: str, ok: bool) -> None:
    d = perms().check(source, "5551234", target)
    assert d.allowed == ok
    if not ok:
        assert isinstance(d, Denied)
        assert (d.code, d.status) == ("source", 403)
        assert str(source) in d.reason


def test_a_line_name_does_not_match_a_local_user_or_trunk_of_that_name() -> None:
    p = Permissions([TargetPolicy("gsm", sources=("kitchen",))])
    assert not p.check(CallSource.local_user("kitchen"), "5551234", "gsm").allowed
    assert not p.check(CallSource.trunk("kitchen"), "5551234", "gsm").allowed


@pytest.mark.parametrize(
    ("number", "ok", "why"),
    [
        ("5551234", True, None),
        ("004420794601234", True, None),  # explicitly allowed country
        ("0033142345678", False, "prefix 00 denied"),  # other international
        ("01144207946", False, "prefix 011 denied"),
        ("+33142345678", False, "prefix + denied"),
        ("9005551234", False, "prefix 900 denied"),
        ("19005551234", False, "prefix 1900 denied"),
        ("09001234567", False, "prefix 0900 denied"),
    ],
)
def test_default_deny_list_with_an_allowed_exception(number: str, ok: bool, why: str) -> None:
    d = perms().check(KITCHEN, number, "gsm")
    assert d.allowed == ok
    if why is not None:
        assert isinstance(d, Denied) and d.code == "number"
        assert why in d.reason


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("12125551234", True),  # allowed by "1"
        ("19005551234", False),  # longer deny beats shorter allow
        ("19765551234", False),
        ("5551234", False),  # no prefix matches: default deny
        ("0044207946", False),  # deny list replaced, but default deny still applies
    ],
)
def test_longest_prefix_wins_and_default_applies(number: str, ok: bool) -> None:
    assert perms().check(PHONE, number, "trunk:primary").allowed == ok


def test_tie_between_allow_and_deny_goes_to_deny() -> None:
    p = Permissions([TargetPolicy("gsm", sources=("any",), allow=("900",), deny=("900",))])
    assert not p.check(KITCHEN, "9001", "gsm").allowed


def test_allowing_plus_form_needs_its_own_prefix() -> None:
    p = Permissions([TargetPolicy("gsm", sources=("any",), allow=("0044", "+44"))])
    assert p.check(KITCHEN, "+442079461234", "gsm").allowed
    assert not p.check(KITCHEN, "+332079461234", "gsm").allowed


def test_target_without_policy_is_denied() -> None:
    d = perms().check(KITCHEN, "5551234", "trunk:backup")
    assert isinstance(d, Denied)
    assert (d.code, d.status) == ("no-policy", 403)


def test_family_policy_covers_numbered_ports_unless_overridden() -> None:
    p = Permissions(
        [
            TargetPolicy("gsm", sources=("kitchen",)),
            TargetPolicy("gsm:2", sources=("office",)),
        ]
    )
    assert p.check(KITCHEN, "5551234", "gsm:1").allowed
    assert not p.check(OFFICE, "5551234", "gsm:1").allowed
    assert p.check(OFFICE, "5551234", "gsm:2").allowed
    assert not p.check(KITCHEN, "5551234", "gsm:2").allowed


@pytest.mark.parametrize("number", ["", "555 1234", "555-1234", "0044\u0660", "1" * 40, "++44"])
def test_malformed_numbers_are_refused(number: str) -> None:
    d = perms().check(KITCHEN, number, "local")
    assert isinstance(d, Denied)
    assert (d.code, d.status) == ("bad-number", 484)


def test_max_calls_counts_admitted_calls_until_released() -> None:
    p = perms()
    assert p.admit("c1", KITCHEN, "5551234", "fxo").allowed
    assert p.admit("c2", OFFICE, "5551235", "fxo").allowed
    assert p.active("fxo") == 2
    d = p.admit("c3", PRIMARY, "5551236", "fxo")
    assert isinstance(d, Denied)
    assert (d.code, d.status) == ("busy", 503)
    # check() agrees and changes nothing.
    assert not p.check(KITCHEN, "5551234", "fxo").allowed
    assert p.active("fxo") == 2
    assert p.release("c1") is True
    assert p.release("c1") is False  # safe twice
    assert p.active("fxo") == 1
    assert p.admit("c3", PRIMARY, "5551236", "fxo").allowed


def test_denied_calls_are_not_counted() -> None:
    p = perms()
    assert not p.admit("c1", OFFICE, "5551234", "gsm").allowed
    assert p.active("gsm") == 0
    assert p.admit("c2", KITCHEN, "5551234", "gsm").allowed
    assert p.active("gsm") == 1


def test_ports_of_a_family_share_the_family_limit() -> None:
    p = Permissions([TargetPolicy("gsm", sources=("any",), max_calls=1)])
    assert p.admit("a", KITCHEN, "5551234", "gsm:1").allowed
    assert p.check(KITCHEN, "5551234", "gsm:2").allowed is False
    assert p.active("gsm:2") == 1


def test_same_call_id_cannot_be_admitted_twice() -> None:
    p = perms()
    assert p.admit("c1", KITCHEN, "5551234", "fxo").allowed
    d = p.admit("c1", KITCHEN, "5551234", "fxo")
    assert isinstance(d, Denied) and d.code == "duplicate"
    assert p.active("fxo") == 1


def test_zero_max_calls_closes_a_target() -> None:
    p = Permissions([TargetPolicy("gsm", sources=("any",), max_calls=0)])
    assert not p.check(KITCHEN, "5551234", "gsm").allowed


def test_default_deny_list_is_applied_when_none_given() -> None:
    policy = TargetPolicy("gsm", sources=("any",))
    assert policy.deny == DEFAULT_DENIED_PREFIXES
    assert policy.number_rule("0049301234") == (False, "00")
    assert policy.number_rule("5551234") == (True, None)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TargetPolicy("", sources=("any",)), "target"),
        (lambda: TargetPolicy("gsm", sources="kitchen"), "lists"),  # type: ignore[arg-type]
        (lambda: TargetPolicy("gsm", sources=("trunk:Bad Name",)), "trunk:<name>"),
        (lambda: TargetPolicy("gsm", sources=("any",), deny=("9 00",)), "prefix"),
        (lambda: TargetPolicy("gsm", sources=("any",), default="maybe"), "default"),  # type: ignore[arg-type]
        (lambda: TargetPolicy("gsm", sources=("any",), max_calls=-1), "max_calls"),
        (
            lambda: Permissions(
                [TargetPolicy("gsm", sources=("any",)), TargetPolicy("gsm", sources=("any",))]
            ),
            "twice",
        ),
    ],
)
def test_bad_policies_are_refused_with_a_named_error(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]

"""The `registrar:` and `sip_phones:` sections, and the trunk account lines and phones share."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from yaml.nodes import Node, ScalarNode

from gateway.config import schema as s
from gateway.config import survivable as sv
from gateway.config._convert import (
    _NULL,
    _header_text,
    _int_range,
    _optional,
    _password_problem,
    _pattern,
    _suggest,
    _text,
    _value_node,
)
from gateway.config._reader import _NodeReader, _Seen
from gateway.config.schema import LineTrunk
from gateway.config.survivable import PhoneConfig, RegistrarSettings

_PASSWORD_EXPECTED = (
    f"at least {sv.PHONE_PASSWORD_MIN} characters, not a factory default or the user name"
)


class _PhoneReader(_NodeReader):
    """Section readers for local SIP phones (mixed into the full reader)."""

    def registrar(self, node: Node | None) -> RegistrarSettings | None:
        """The `registrar:` section: expiry limits and contacts per phone."""
        f = self.mapping(node, "registrar", sv.REGISTRAR_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        expires = _int_range(sv.REGISTRAR_EXPIRES_MIN, sv.REGISTRAR_EXPIRES_MAX)
        low = self.take(f, "min_expires", expires, sv.DEFAULT_MIN_EXPIRES)
        high = self.take(f, "max_expires", expires, sv.DEFAULT_MAX_EXPIRES)
        default = self.take(f, "default_expires", expires, sv.DEFAULT_DEFAULT_EXPIRES)
        contacts = self.take(
            f, "max_contacts", _int_range(sv.MAX_CONTACTS_MIN, sv.MAX_CONTACTS_MAX),
            sv.DEFAULT_MAX_CONTACTS,
        )
        if len(self.issues) > before:
            return None
        if low > high:
            key = "min_expires" if f.has("min_expires") else "max_expires"
            self.issue(f.node_of(key), f.child(key),
                       f"min_expires {low} is above max_expires {high}",
                       "min_expires <= default_expires <= max_expires")
        elif not low <= default <= high:
            key = "default_expires" if f.has("default_expires") else (
                "min_expires" if default < low else "max_expires")
            self.issue(f.node_of(key), f.child(key),
                       f"default_expires {default} is outside min_expires..max_expires "
                       f"({low}..{high})", "min_expires <= default_expires <= max_expires")
        if len(self.issues) > before:
            return None
        return RegistrarSettings(low, high, default, contacts)

    def sip_phones(
        self, node: Node | None, trunk_names: Collection[str], line_seen: _Seen
    ) -> tuple[list[PhoneConfig] | None, list[tuple[str, Node, str, str]]]:
        """The `sip_phones:` list, plus (number, node, path, who) of every phone extension.

        Users are unique; numbers are unique among phones and lines (`line_seen` holds the
        lines' numbers and trunk accounts, so a phone cannot reuse a line's account either).
        """
        items = self.sequence(node, "sip_phones")
        before = len(self.issues)
        users: dict[str, Node] = {}
        extensions: list[tuple[str, Node, str, str]] = []
        phones: list[PhoneConfig] = []
        for index, item in enumerate(items):
            phone = self.sip_phone(item, f"sip_phones[{index}]", trunk_names, users,
                                   line_seen, extensions)
            if phone is not None:
                phones.append(phone)
        if len(self.issues) > before:
            return None, extensions
        return phones, extensions

    def sip_phone(
        self,
        node: Node,
        path: str,
        trunk_names: Collection[str],
        users: dict[str, Node],
        seen: _Seen,
        extensions: list[tuple[str, Node, str, str]],
    ) -> PhoneConfig | None:
        """One local SIP phone."""
        f = self.mapping(node, path, sv.PHONE_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        user = self.require(
            f, "user",
            _pattern(sv.PHONE_USER_PATTERN, "letters, digits, '_', '.' and '-'"),
            "", "the phone's digest user name (its extension), e.g. '201'",
        )
        user_issues = len(self.issues)
        if user:
            self.unique(users, user, f.node_of("user"), f.child("user"), f"user {user!r}")
        user_ok = bool(user) and len(self.issues) == user_issues
        before_password = len(self.issues)
        password = self.require(f, "password", _text(nonempty=False), "", _PASSWORD_EXPECTED)
        if f.has("password") and len(self.issues) == before_password:
            problem = _phone_password_problem(password, user)
            if problem:
                self.issue(f.node_of("password"), f.child("password"), problem,
                           _PASSWORD_EXPECTED)
        before_number = len(self.issues)
        number = self.take(f, "number", _optional(_pattern(s.NUMBER_PATTERN, "digits only")),
                           None) or ""
        number_node, number_path = f.node_of("number"), f.child("number")
        if not number and user_ok and len(self.issues) == before_number:  # user = number
            number, number_node, number_path = user, f.node_of("user"), f.child("user")
            if not user.isdigit():
                self.issue(f.node, f.child("number"),
                           f"user {user!r} is not a number, so the phone needs one",
                           "number: the phone's extension, digits only")
                number = ""
        if number:
            self.unique(seen.numbers, number, number_node, number_path, f"number {number!r}")
            extensions.append((number, number_node, number_path, f"phone {user!r}"))
        display = self.take(f, "display_name", _optional(_header_text), None)
        account = None
        if f.has("trunk"):
            account = self.line_trunk(f.node_of("trunk"), f.child("trunk"), trunk_names)
            if account is not None:
                where = _value_node(f.node_of("trunk"), "username") or f.node_of("trunk")
                label = f"account {account.username!r} on trunk {account.name!r}"
                key = (account.name, account.username)
                self.unique(seen.accounts, key, where, f.child("trunk.username"), label)
        if len(self.issues) > before:
            return None
        return PhoneConfig(user, password, number, display, account)

    def unique(self, seen: dict[Any, Node], value: Any, node: Node, path: str,
               label: str) -> None:
        """Remember where `value` was written, or record an issue if it was already used."""
        if value in seen:
            first = seen[value].start_mark.line + 1
            self.issue(node, path, f"{label} is already used on line {first}", "a unique value")
        else:
            seen[value] = node

    def line_trunk(
        self, node: Node, path: str, trunk_names: Collection[str]
    ) -> LineTrunk | None:
        """An account on a trunk, for a line or a phone (null means it does not register)."""
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return None
        f = self.mapping(node, path, s.LINE_TRUNK_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.require(f, "name", _text(nonempty=True), "", "the name of a trunk")
        if name and name not in trunk_names:
            known = ", ".join(trunk_names) or "none are defined"
            self.issue(
                f.node_of("name"),
                f.child("name"),
                f"no trunk named {name!r}{_suggest(name, trunk_names)}",
                f"a name from trunks ({known})",
            )
        username = self.require(
            f,
            "username",
            _pattern(s.USERNAME_PATTERN, "a SIP user name without spaces, '@' or ':'"),
            "",
            "a SIP user name",
        )
        auth = self.take(
            f, "auth_username", _optional(_pattern(s.USERNAME_PATTERN, "a user name")), None
        )
        before_password = len(self.issues)
        password = (
            self.require(f, "password", _optional(_text(nonempty=False)), None, "a password") or ""
        )
        if f.has("password") and len(self.issues) == before_password:
            problem = _password_problem(password, username, auth)
            if problem:
                self.issue(
                    f.node_of("password"),
                    f.child("password"),
                    problem,
                    "a non-empty password that is not a factory default or the user name",
                )
        if len(self.issues) > before:
            return None
        return LineTrunk(name, username, password, auth)


def _phone_password_problem(password: str, user: str) -> str | None:
    """Why a local phone's digest password is refused, or None."""
    if len(password) < sv.PHONE_PASSWORD_MIN:
        return (f"password has {len(password)} characters; local phones need at least "
                f"{sv.PHONE_PASSWORD_MIN}")
    return _password_problem(password, user, None)

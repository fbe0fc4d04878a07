"""Comma-separated AT parameters, and the error every modem line parser raises.

Shared by the parsers in `gateway.modem.responses`; kept apart so each module stays short.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Field",
    "ResponseError",
    "body",
    "fields",
    "opt_int",
    "opt_str",
    "split_fields",
    "to_int",
]


class ResponseError(ValueError):
    """A modem line that could not be read; `line` is the offending text."""

    def __init__(self, line: str, expected: str) -> None:
        super().__init__(f"unreadable modem line {line!r}: expected {expected}")
        self.line = line
        self.expected = expected


@dataclass(frozen=True)
class Field:
    """One comma-separated parameter; `quoted` tells "1" (a string) from 1 (a number)."""

    text: str
    quoted: bool


def split_fields(line: str, body: str) -> list[Field]:
    """Split ``a,"b,c",d`` into fields, honouring double quotes; `line` is for errors."""
    fields: list[Field] = []
    i, n = 0, len(body)
    while True:
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] == '"':
            end = body.find('"', i + 1)
            if end < 0:
                raise ResponseError(line, "a closing double quote")
            fields.append(Field(body[i + 1 : end], True))
            i = end + 1
            while i < n and body[i] == " ":
                i += 1
            if i < n and body[i] != ",":
                raise ResponseError(line, "a comma after a quoted field")
        else:
            end = body.find(",", i)
            end = n if end < 0 else end
            text = body[i:end].strip()
            if '"' in text:
                raise ResponseError(line, "quotes only around whole fields")
            fields.append(Field(text, False))
            i = end
        if i >= n:
            return fields
        i += 1  # the comma


def body(line: str, name: str) -> str:
    text = line.strip()
    prefix = name + ":"
    if text.upper().startswith(prefix.upper()):
        return text[len(prefix) :].strip()
    if text.startswith("+"):
        raise ResponseError(line, f"a {name} line")
    return text


def to_int(line: str, field: Field, what: str, lo: int = 0, hi: int = 1 << 31) -> int:
    text = field.text
    if not text or not (text.isascii() and text.lstrip("-").isdigit()) or text.count("-") > 1:
        raise ResponseError(line, f"a number for {what}, got {text!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise ResponseError(line, f"{what} in {lo}..{hi}, got {value}")
    return value


def opt_int(
    line: str, fields: list[Field], i: int, what: str, lo: int = 0, hi: int = 1 << 31
) -> int | None:
    if i >= len(fields) or fields[i].text == "":
        return None
    return to_int(line, fields[i], what, lo, hi)


def opt_str(fields: list[Field], i: int) -> str | None:
    if i >= len(fields) or fields[i].text == "":
        return None
    return fields[i].text


def fields(line: str, name: str, least: int, most: int) -> list[Field]:
    found = split_fields(line, body(line, name))
    if not least <= len(found) <= most:
        raise ResponseError(line, f"{least} to {most} fields after {name}, got {len(found)}")
    return found

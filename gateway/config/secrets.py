"""`!secret <name>` values: read from the secrets file named by `gateway.secrets_file`.

The file is a YAML mapping of names to strings. It is refused unless it is a regular file of
mode 0600 (no group or other bits) owned by the process's effective user: a secrets file
anyone else can read or write is no secret. Each `!secret` node of the config tree is
replaced in place by a plain string node at the same position, so the section readers see
an ordinary value and their errors still carry the line and column of the `!secret`.
Messages never include a secret's value.
"""

from __future__ import annotations

import os
import re
import stat

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.issues import ConfigIssue
from gateway.config.service import SECRET_NAME_PATTERN, SECRET_TAG

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_PATH = "gateway.secrets_file"


class SecretsFileError(Exception):
    """The secrets file cannot be used; the message says why (never a secret's value)."""


def read_secrets_file(path: str) -> dict[str, str]:
    """The name -> value mapping of a secrets file, after the mode and owner checks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretsFileError(f"cannot open secrets file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretsFileError(f"secrets file {path} is not a regular file")
        euid = os.geteuid()
        if info.st_uid != euid:
            raise SecretsFileError(
                f"secrets file {path} is owned by uid {info.st_uid}, not by the service "
                f"user (uid {euid})"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SecretsFileError(
                f"secrets file {path} has mode {mode:04o}: group or others may read or "
                "change it (chmod 600)"
            )
        raw = handle.read()
    try:
        # Composed, not constructed: each value stays the text written, so `pin: 0042`
        # is "0042" (never the octal number 34) and `on` is "on", as in the config file.
        root = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SecretsFileError(f"secrets file {path} is not valid YAML{where}") from exc
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        return {}
    if not isinstance(root, MappingNode):
        raise SecretsFileError(f"secrets file {path} must be a mapping of name: value")
    out: dict[str, str] = {}
    for key_node, value_node in root.value:
        name = key_node.value if isinstance(key_node, ScalarNode) else None
        line = key_node.start_mark.line + 1
        if not isinstance(name, str) or not re.fullmatch(SECRET_NAME_PATTERN, name):
            raise SecretsFileError(f"secrets file {path}, line {line}: bad name (letters, "
                                   "digits, '_', '.', '-')")
        if name in out:
            raise SecretsFileError(f"secrets file {path}, line {line}: {name!r} is written "
                                   "twice")
        if not isinstance(value_node, ScalarNode) or value_node.tag == _NULL:
            raise SecretsFileError(f"secrets file {path}, line {line}: {name!r} must be a "
                                   "string")
        out[name] = str(value_node.value)
    return out


def resolve_secrets(
    root: Node | None,
) -> tuple[frozenset[str], list[ConfigIssue], set[tuple[int, int]]]:
    """Replace every `!secret NAME` node under `root` by its value, in place.

    Returns the secret values used (for redaction), the problems found, and the positions
    of the `!secret` values left unresolved (the loader drops the section readers' own
    complaints about those, which would only repeat the problem).
    """
    uses: list[tuple[Node, str]] = []
    _collect(root, "", uses, set())
    file_node = _secrets_file_node(root)
    issues: list[ConfigIssue] = []
    if file_node is None:
        for node, path in uses:
            issues.append(_issue(node, path, "a !secret value needs gateway.secrets_file",
                                 "gateway.secrets_file naming the secrets file"))
        return frozenset(), issues, _positions(uses)
    path = str(file_node.value)
    if not path.startswith("/"):
        return frozenset(), issues, _positions(uses)  # the gateway reader reports the path
    try:
        secrets = read_secrets_file(path)
    except SecretsFileError as exc:
        problem = _issue(file_node, _PATH, str(exc),
                         "a file of mode 0600 owned by the service user")
        return frozenset(), [problem], _positions(uses)
    used: set[str] = set()
    unresolved: list[tuple[Node, str]] = []
    for node, where in uses:
        if not isinstance(node, ScalarNode):
            issues.append(_issue(node, where, "!secret takes a name, not a list or mapping",
                                 "!secret <name>"))
            unresolved.append((node, where))
            continue
        name = str(node.value).strip()
        if name not in secrets:
            issues.append(_issue(node, where, f"secret {name!r} is not in {path}",
                                 "a name defined in the secrets file"))
            unresolved.append((node, where))
            continue
        node.tag, node.value, node.style = _STR, secrets[name], '"'
        used.add(secrets[name])
    return frozenset(used), issues, _positions(unresolved)


def _positions(uses: list[tuple[Node, str]]) -> set[tuple[int, int]]:
    return {(i.line, i.column) for i in (_issue(n, p, "", "") for n, p in uses)}


def mask(text: str, secrets: frozenset[str]) -> str:
    """`text` with every secret value in it replaced by '***'."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _issue(node: Node, path: str, message: str, expected: str) -> ConfigIssue:
    mark = node.start_mark
    if mark is None:
        return ConfigIssue(0, 0, path, message, expected)
    return ConfigIssue(mark.line + 1, mark.column + 1, path, message, expected)


def _secrets_file_node(root: Node | None) -> ScalarNode | None:
    gateway = _value(root, "gateway")
    node = _value(gateway, "secrets_file")
    if isinstance(node, ScalarNode) and node.tag == _STR and node.value:
        return node
    return None


def _value(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            found: Node = value_node
            return found
    return None


def _collect(node: Node | None, path: str, out: list[tuple[Node, str]], seen: set[int]) -> None:
    """Every node tagged !secret, with its dotted path (aliases visited once)."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if node.tag == SECRET_TAG:
        out.append((node, path or "(top level)"))
        return
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            _collect(value_node, f"{path}.{key}" if path else key, out, seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _collect(item, f"{path}[{index}]", out, seen)

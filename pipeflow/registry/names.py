"""Names in the registry, and the replay of an alias's events.

Model and alias names become path components of the store (``registry/<model>/aliases/...``),
so :func:`check_name` admits letters, digits, ``_ . -`` only; :func:`parse_ref` reads the
``NAME@ALIAS`` / ``NAME@VERSION`` references every command takes; :func:`alias_stack` replays an
alias's promotions and rollbacks into the stack of its holders; :func:`current_user` is who a
recorded event names (``$PIPEFLOW_USER``, else the login name).
"""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

from pipeflow.errors import InvalidName

__all__ = ["NAME", "alias_stack", "check_name", "current_user", "parse_ref"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(what: str, name: str) -> str:
    """Model and alias names become path components: letters, digits, ``_ . -`` only."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid {what} {name!r}: expected 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def current_user() -> str:
    user = os.environ.get("PIPEFLOW_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_ref(text: str) -> tuple[str, str | None]:
    """``NAME@ALIAS`` / ``NAME@3`` / ``NAME`` -> (name, alias-or-version-or-None)."""
    name, sep, which = text.partition("@")
    check_name("model name", name)
    if sep and not which:
        raise InvalidName(f"{text!r}: expected NAME@ALIAS or NAME@VERSION after '@'")
    return name, (which or None)


def alias_stack(events: list[dict[str, Any]]) -> list[int]:
    """Replay an alias's events: promotions push a version, rollbacks pop one."""
    stack: list[int] = []
    for event in events:
        if event["action"] == "rollback":
            if stack:
                stack.pop()
        elif not stack or stack[-1] != event["to_version"]:
            stack.append(int(event["to_version"]))
    return stack

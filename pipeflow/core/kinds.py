"""Artifact kinds: the types on stage ports, checked by the compiler.

A kind is a word, optionally with a subtype in brackets: ``table``, ``model``,
``model[classifier]``. An input of kind ``model`` accepts ``model[classifier]`` (a subtype is a
model), but an input of kind ``model[classifier]`` does not accept a plain ``model`` (it might be a
regressor). ``any`` on either side matches everything: it is what untyped ``python`` stages use.
"""

from __future__ import annotations

import re

ANY = "any"
KNOWN = ("any", "table", "model", "metrics", "report", "predictions", "endpoint", "object")
_KIND = re.compile(r"^[a-z][a-z0-9_]*(\[[a-z0-9_,]+\])?$")


def is_valid(kind: str) -> bool:
    return bool(_KIND.match(kind))


def base(kind: str) -> str:
    return kind.split("[", 1)[0]


def compatible(produced: str, accepted: str) -> bool:
    """Can an output of kind ``produced`` feed an input of kind ``accepted``?"""
    if ANY in (produced, accepted):
        return True
    if produced == accepted:
        return True
    # `model` accepts `model[classifier]`; the reverse is not safe.
    return "[" not in accepted and base(produced) == accepted

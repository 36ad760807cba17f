"""Checking request rows against a model version's signature, and flagging unusual inputs.

A *signature* (recorded by ``train``) lists the features with their dtype and role. A request row
must hold every feature, no other field, and values of the expected JSON type: numbers (finite;
``NaN``/``Infinity`` are refused) for numeric features, strings for text and categories, booleans
for boolean features; ``null`` is accepted for any feature (the model's preprocessing imputes it).
Each problem names the row, the field, what was expected and what came.

Inputs that pass but fall outside what the model saw in training are *flagged* per row, from the
version's reference profile (:mod:`pipeflow.governance.profile`): a number beyond the training range
by more than 10% of its span, a category never seen in training, empty text, or text longer than
the longest training text by half again. ``reject_unusual`` turns flags into 422 errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_NUMBER, _STRING, _BOOL = "number", "string", "boolean"


@dataclass
class Feature:
    name: str
    expect: str  # number | string | boolean
    role: str
    low: float | None = None
    high: float | None = None
    categories: frozenset[str] | None = None
    max_length: int | None = None


@dataclass
class Signature:
    features: list[Feature]
    classes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Signature:
        signature = record.get("signature") or {}
        reference = ((record.get("reference") or {}).get("features")) or {}
        features = []
        for spec in signature.get("features") or []:
            name, dtype = str(spec["name"]), str(spec.get("dtype", "object"))
            role = spec.get("role") or ("numeric" if _numeric(dtype) else "categorical")
            if dtype == "bool" or dtype == "boolean":
                expect = _BOOL
            elif _numeric(dtype):
                expect = _NUMBER
            else:
                expect = _STRING
            feature = Feature(name, expect, role)
            ref = reference.get(name) or {}
            if expect == _NUMBER and "min" in ref and "max" in ref:
                span = float(ref["max"]) - float(ref["min"])
                margin = 0.1 * span if span > 0 else max(abs(float(ref["max"])) * 0.1, 1.0)
                feature.low, feature.high = float(ref["min"]) - margin, float(ref["max"]) + margin
            if role == "categorical" and ref.get("categories") and not ref.get("other"):
                feature.categories = frozenset(ref["categories"])
            if role == "text" and (ref.get("length") or {}).get("max") is not None:
                feature.max_length = int(ref["length"]["max"] * 1.5) + 10
            features.append(feature)
        return cls(features, [str(c) for c in signature.get("classes") or []])

    def _clean(self, rows: list[Any]) -> bool:
        """The fast path: every row a dict with exactly the features, every column of the right
        JSON types, finite and within what training saw. Column by column with C-level ``map``
        and ``set`` instead of a Python loop per value; anything else goes the slow way, which
        names each problem and flag."""
        names = self._name_set
        if not all(type(r) is dict and r.keys() == names for r in rows):
            return False
        return all(_clean_column(f, [r[f.name] for r in rows]) for f in self.features)

    @property
    def _name_set(self) -> set[str]:
        cached = self.__dict__.get("_names_cache")
        if cached is None:
            cached = self.__dict__["_names_cache"] = set(self.names)
        return cached

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one row (for the OpenAPI document)."""
        props = {
            f.name: {"type": [f.expect, "null"], "description": f"{f.role} feature"}
            for f in self.features
        }
        return {
            "type": "object",
            "properties": props,
            "required": self.names,
            "additionalProperties": False,
        }

    def check(
        self, rows: list[Any], *, reject_unusual: bool = False
    ) -> tuple[list[dict[str, Any]], list[list[str]]]:
        """(problems, flags per row). No problems means every row can be given to the model."""
        if self._clean(rows):
            return [], [[] for _ in rows]
        problems: list[dict[str, Any]] = []
        flags: list[list[str]] = []
        names = set(self.names)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                problems.append(
                    _problem(i, None, "an object of feature values", type(row).__name__)
                )
                flags.append([])
                continue
            for key in row.keys() - names:
                problems.append(
                    _problem(
                        i, key, f"no such field (features: {', '.join(self.names)})", "a value"
                    )
                )
            row_flags: list[str] = []
            for f in self.features:
                if f.name not in row:
                    problems.append(
                        _problem(i, f.name, f"a {f.expect} (field is required)", "nothing")
                    )
                    continue
                value = row[f.name]
                if value is None:
                    continue
                if f.expect == _NUMBER:
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        problems.append(_problem(i, f.name, "a number", _kind(value)))
                        continue
                    if not math.isfinite(value):
                        problems.append(_problem(i, f.name, "a finite number", str(value)))
                        continue
                    if f.low is not None and not (f.low <= value <= f.high):  # type: ignore[operator]
                        row_flags.append(f"{f.name}: {value:g} is outside the training range")
                elif f.expect == _BOOL:
                    if not isinstance(value, bool):
                        problems.append(_problem(i, f.name, "true or false", _kind(value)))
                else:
                    if not isinstance(value, str):
                        problems.append(_problem(i, f.name, "a string", _kind(value)))
                        continue
                    if f.categories is not None and value not in f.categories:
                        row_flags.append(
                            f"{f.name}: category {value[:40]!r} was not seen in training"
                        )
                    elif f.role == "text":
                        if not value.strip():
                            row_flags.append(f"{f.name}: empty text")
                        elif f.max_length is not None and len(value) > f.max_length:
                            row_flags.append(
                                f"{f.name}: text of {len(value)} characters is longer than any in training"
                            )
            flags.append(row_flags)
            if reject_unusual and row_flags:
                for text in row_flags:
                    field_name = text.split(":", 1)[0]
                    problems.append(
                        _problem(i, field_name, "a value like those seen in training", text)
                    )
        return problems, flags


def _clean_column(f: Feature, column: list[Any]) -> bool:
    types = set(map(type, column))
    if f.expect == _NUMBER:
        if not types <= _NUMBER_TYPES:
            return False
        numbers = [v for v in column if v is not None] if _NONE in types else column
        if float in types and not all(map(math.isfinite, numbers)):
            return False
        within = f.low is None or not numbers or f.low <= min(numbers) <= max(numbers) <= f.high  # type: ignore[operator]
        return within
    if f.expect == _BOOL:
        return types <= _BOOL_TYPES
    if not types <= _STRING_TYPES:
        return False
    strings = [v for v in column if v is not None] if _NONE in types else column
    if f.categories is not None:
        return set(strings) <= f.categories
    if f.role == "text":
        limit = f.max_length
        return all(v.strip() and (limit is None or len(v) <= limit) for v in strings)
    return True


_NONE = type(None)
_NUMBER_TYPES = frozenset({int, float, _NONE})
_BOOL_TYPES = frozenset({bool, _NONE})
_STRING_TYPES = frozenset({str, _NONE})


def _numeric(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float"))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _problem(row: int, name: str | None, expected: str, got: str) -> dict[str, Any]:
    return {"row": row, "field": name, "expected": expected, "got": got}

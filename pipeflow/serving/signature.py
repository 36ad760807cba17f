"""Checking request rows against a model version's signature, and flagging unusual inputs.

A *signature* (recorded by ``train``) lists the features with their dtype and role. A request row
must hold every feature, no other field, and values of the expected JSON type: numbers for numeric
features, strings for text and categories, booleans for boolean features; ``null`` is accepted for
any feature (the model's preprocessing imputes it). Numbers must be finite and within the float32
range (|x| <= 3.4e38): ``NaN``/``Infinity`` are refused, and so is ``1e308``, which float32 models
(XGBoost) read as infinity and which overflows float64 preprocessing (a scaler dividing by a
spread below 1), so the model would raise on a request that passed validation, a 500. Each problem
names the row, the field, what was expected and what came.

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

    def _fast(self, rows: list[Any]) -> list[list[str]] | None:
        """The fast path: every row a dict with exactly the features, every column of the right
        JSON types and finite. Column by column with C-level ``map``, ``set``, ``min`` and ``max``
        instead of a Python loop per value; only a column holding unusual values is walked, to
        flag its rows. None means "not clean": the slow path then names each problem."""
        names = self._name_set
        if not all(type(r) is dict and r.keys() == names for r in rows):
            return None
        flags: list[list[str]] = [[] for _ in rows]
        for f in self.features:
            column = [r[f.name] for r in rows]
            unusual = _column_flags(f, column)
            if unusual is None:
                return None
            for i, text in unusual:
                flags[i].append(text)
        return flags

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
        fast = self._fast(rows)
        if fast is not None and not (reject_unusual and any(fast)):
            return [], fast
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
                    if not _finite(value):
                        problems.append(_problem(i, f.name, "a finite number", _short(value)))
                        continue
                    if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
                        problems.append(
                            _problem(i, f.name, "a number within +-3.4e38", _short(value))
                        )
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


def _column_flags(f: Feature, column: list[Any]) -> list[tuple[int, str]] | None:
    """Flags of one clean column as (row, text), the same texts as the slow path; None if the
    column holds a value the slow path must refuse."""
    types = set(map(type, column))
    if f.expect == _NUMBER:
        if not types <= _NUMBER_TYPES:
            return None
        numbers = [v for v in column if v is not None] if _NONE in types else column
        try:
            if float in types and not all(map(math.isfinite, numbers)):
                return None
        except OverflowError:  # an integer beyond float range: the slow path names it
            return None
        if not numbers:
            return []
        low, high = min(numbers), max(numbers)
        if not -_FLOAT32_MAX <= low <= high <= _FLOAT32_MAX:
            return None  # the slow path names it
        if f.low is None or f.low <= low <= high <= f.high:  # type: ignore[operator]
            return []
        return [
            (i, f"{f.name}: {v:g} is outside the training range")
            for i, v in enumerate(column)
            if v is not None and not f.low <= v <= f.high  # type: ignore[operator]
        ]
    if f.expect == _BOOL:
        return [] if types <= _BOOL_TYPES else None
    if not types <= _STRING_TYPES:
        return None
    strings = [v for v in column if v is not None] if _NONE in types else column
    if f.categories is not None:
        if set(strings) <= f.categories:
            return []
        return [
            (i, f"{f.name}: category {v[:40]!r} was not seen in training")
            for i, v in enumerate(column)
            if v is not None and v not in f.categories
        ]
    if f.role == "text":
        limit = f.max_length
        if all(v.strip() and (limit is None or len(v) <= limit) for v in strings):
            return []
        out = []
        for i, v in enumerate(column):
            if v is None:
                continue
            if not v.strip():
                out.append((i, f"{f.name}: empty text"))
            elif limit is not None and len(v) > limit:
                out.append(
                    (i, f"{f.name}: text of {len(v)} characters is longer than any in training")
                )
        return out
    return []


_NONE = type(None)
_NUMBER_TYPES = frozenset({int, float, _NONE})
_BOOL_TYPES = frozenset({bool, _NONE})
_STRING_TYPES = frozenset({str, _NONE})
_FLOAT32_MAX = 3.4028234663852886e38


def _finite(value: int | float) -> bool:
    """A number a float can hold: not NaN or infinite, and no integer beyond float range
    (``math.isfinite(10**400)`` raises OverflowError instead of answering)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any) -> str:
    text = (
        str(value) if not isinstance(value, int) or value.bit_length() < 1000 else "a huge integer"
    )
    return text if len(text) <= 40 else text[:37] + "..."


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

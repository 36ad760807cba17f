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

A version with per-group decision thresholds (``mitigation``: :mod:`pipeflow.governance.thresholds`)
picks each row's threshold by its sensitive attribute: when that is not a feature, the signature
has it as one more required field (role ``sensitive``), so a row without it is refused naming it.
"""

from __future__ import annotations

import itertools
import math
import operator
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
class Columns:
    """Checked rows as columns: the numeric features as one float64 matrix (a row per request row,
    ``None`` read as NaN), the other features as lists. :meth:`frame` makes the model's DataFrame
    with the numbers in one block, as ``DataFrame.from_records`` would, several times faster."""

    names: list[str]  # every feature, in signature order
    numeric: list[str]  # the matrix's columns
    matrix: Any  # numpy (rows, len(numeric)) float64, or None without numeric features
    others: dict[str, list[Any]]

    @staticmethod
    def frame(parts: list[Columns]) -> Any:
        """One DataFrame of several requests' columns (all from the same signature)."""
        import numpy as np
        import pandas as pd

        first = parts[0]
        if first.matrix is not None:
            matrix = first.matrix if len(parts) == 1 else np.vstack([p.matrix for p in parts])
            frame = pd.DataFrame(matrix, columns=first.numeric, copy=False)
        else:
            frame = pd.DataFrame(
                index=pd.RangeIndex(sum(len(p.others[first.names[0]]) for p in parts))
            )
        for name in first.others:
            frame[name] = (
                first.others[name]
                if len(parts) == 1
                else [v for p in parts for v in p.others[name]]
            )
        return frame if list(frame.columns) == first.names else frame[first.names]


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
        group = record.get("mitigation") or {}  # per-group thresholds read the group from rows
        if group.get("attribute") and group["attribute"] not in {f.name for f in features}:
            expect = group.get("dtype") if group.get("dtype") in (_NUMBER, _BOOL) else _STRING
            features.append(Feature(str(group["attribute"]), expect, "sensitive"))
        return cls(features, [str(c) for c in signature.get("classes") or []])

    def described(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded signature as serving describes it: with the fields this signature adds
        to it (the sensitive attribute per-group thresholds read), so a caller who builds rows
        from the description sends every field the server requires."""
        recorded = record.get("signature")
        if not recorded:
            return recorded
        known = {str(f["name"]) for f in recorded.get("features") or []}
        dtypes = {_NUMBER: "float64", _BOOL: "bool", _STRING: "object"}
        added = [
            {"name": f.name, "dtype": dtypes[f.expect], "role": f.role}
            for f in self.features
            if f.name not in known
        ]
        return (
            {**recorded, "features": [*recorded.get("features", []), *added]} if added else recorded
        )

    def _fast(
        self, rows: list[Any], text: bytes | None = None
    ) -> tuple[list[list[str]], Columns] | None:
        """The fast path: every row a dict with exactly the features, every column of the right
        JSON types and finite. Returns the flags per row and the rows' columns (:class:`Columns`),
        or None for "not clean": the slow path then names each problem.

        Column by column with C-level ``map``, ``set``, ``min``/``max`` and numpy instead of a
        Python loop per value; only a column holding unusual values is walked, to flag its rows.
        The numeric values' types are looked at one by one unless ``text`` proves them
        (:func:`_plain_numbers`).
        """
        import numpy as np

        width = len(self.features)
        if not rows or set(map(type, rows)) != {dict} or set(map(len, rows)) != {width}:
            return None
        matrix, nones = None, 0
        try:  # every row of the right size and every feature present: exactly the features
            numeric, getter = self.numeric_getter
            block = list(map(getter, rows)) if numeric else []
            others = [
                (at, f, [r[f.name] for r in rows])
                for at, f in enumerate(self.features)
                if f.expect != _NUMBER
            ]
        except KeyError:
            return None
        if numeric:
            if len(numeric) == 1:
                block = [(v,) for v in block]
            if not _plain_numbers(text, self.names, len(rows), others) and not (
                set(map(type, itertools.chain.from_iterable(block))) <= _NUMBER_TYPES
            ):
                return None
            try:
                matrix = np.array(block, dtype=np.float64)
            except (OverflowError, ValueError, TypeError):  # an integer beyond float range, a
                return None  # list or an object (proved by text): the slow path names it
            if matrix.shape != (len(rows), len(numeric)):  # lists of one number each
                return None
            nones = sum(t.count(None) for t in block) if np.isnan(matrix).any() else 0
        return self.checked_columns(len(rows), numeric, matrix, nones, others)

    def checked_columns(
        self,
        n: int,
        numeric: list[int],
        matrix: Any,
        nones: int,
        others: list[tuple[int, Feature, list[Any]]],
    ) -> tuple[list[list[str]], Columns] | None:
        """The checks of the fast paths (rows, :meth:`check_table`, a body decoded into columns by
        :mod:`pipeflow.serving.columnar`) on columns: ``matrix`` the numeric features
        (``numeric``: their indexes, :attr:`numeric_getter`; ``nones`` of its NaNs were nulls),
        ``others`` the other features' (index, feature, values). Flags per row and the columns,
        or None: not clean (the row-by-row check then names each problem)."""
        import numpy as np

        unusual: dict[int, list[tuple[int, str]]] = {}  # feature index -> (row, flag)
        others_data: dict[str, list[Any]] = {}
        if numeric:
            nans = int(np.isnan(matrix).sum())
            # None reads as NaN; a NaN that was not a None came from the request (the fallback
            # JSON parser reads NaN), and so does an infinity: the slow path names them
            if (nans and nans != nones) or np.isinf(matrix).any():
                return None
            if nans:
                low, high = np.fmin.reduce(matrix, axis=0), np.fmax.reduce(matrix, axis=0)
            else:
                low, high = matrix.min(axis=0), matrix.max(axis=0)
            if (np.abs(low) > _FLOAT32_MAX).any() or (np.abs(high) > _FLOAT32_MAX).any():
                return None  # the slow path names it (all-None columns give NaN: not > max)
            columns = matrix.T
            for j, at in enumerate(numeric):
                f = self.features[at]
                column = columns[j]
                if f.low is not None and not (f.low <= low[j] and high[j] <= f.high):  # type: ignore[operator]
                    outside = np.flatnonzero((column < f.low) | (column > f.high))  # NaN: neither
                    unusual[at] = [
                        (i, f"{f.name}: {float(column[i]):g} is outside the training range")
                        for i in outside.tolist()
                    ]
        for at, f, values in others:
            found = _column_flags(f, values)
            if found is None:
                return None
            unusual[at] = found
            others_data[f.name] = values
        clean: list[str] = []  # the flags of every row without any: one list, never changed
        flags = [clean] * n
        for at in sorted(unusual):  # in feature order, as the slow path lists them
            for i, text in unusual[at]:
                if flags[i] is clean:
                    flags[i] = [text]
                else:
                    flags[i].append(text)
        names = [self.features[at].name for at in numeric]
        return flags, Columns(self.names, names, matrix, others_data)

    def check_table(
        self, table: Any, *, reject_unusual: bool = False
    ) -> tuple[list[dict[str, Any]], list[list[str]], Columns | None]:
        """:meth:`check_columns` of an Arrow table's rows, column by column: numbers straight
        from the Arrow arrays into the float64 matrix (nulls as NaN). A table that is not clean
        (a column missing or extra, of another type, a NaN) is checked row by row, so each
        problem is named as for a JSON body."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        names = table.column_names
        if sorted(names) == sorted(self.names) and table.num_rows:
            numeric, _ = self.numeric_getter
            arrays = []
            for at in numeric:
                column = table.column(self.features[at].name)
                kind = column.type
                if not (
                    pa.types.is_integer(kind)
                    or pa.types.is_floating(kind)
                    or pa.types.is_null(kind)
                ):
                    arrays = None
                    break
                arrays.append(
                    pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
                )
            if arrays is not None:
                nones = sum(table.column(self.features[at].name).null_count for at in numeric)
                matrix = np.column_stack(arrays) if arrays else None
                others = [
                    (at, f, table.column(f.name).to_pylist())
                    for at, f in enumerate(self.features)
                    if f.expect != _NUMBER
                ]
                fast = self.checked_columns(table.num_rows, numeric, matrix, nones, others)
                if fast is not None and not (reject_unusual and any(fast[0])):
                    return [], fast[0], fast[1]
        return self.check_columns(table.to_pylist(), reject_unusual=reject_unusual)

    @property
    def numeric_getter(self) -> tuple[list[int], Any]:
        """(indexes of the numeric features, an itemgetter of their values from a row)."""
        cached = self.__dict__.get("_numeric_cache")
        if cached is None:
            at = [i for i, f in enumerate(self.features) if f.expect == _NUMBER]
            getter = operator.itemgetter(*[self.features[i].name for i in at]) if at else None
            cached = self.__dict__["_numeric_cache"] = (at, getter)
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

    def check_columns(
        self, rows: list[Any], *, reject_unusual: bool = False, text: bytes | None = None
    ) -> tuple[list[dict[str, Any]], list[list[str]], Columns | None]:
        """(problems, flags per row, columns). No problems means every row can be given to the
        model; the columns are the rows' values ready for a DataFrame when the fast path took them
        (else None: build the frame from the rows). ``text``: the JSON the rows were parsed from,
        when the rows are that JSON's own objects (a row, or an array of rows; keys may have been
        taken out since), which can spare the fast path a look at every number's type."""
        fast = self._fast(rows, text)
        if fast is not None and not (reject_unusual and any(fast[0])):
            return [], fast[0], fast[1]
        problems, flags = self._slow(rows, reject_unusual)
        return problems, flags, None

    def _slow(
        self, rows: list[Any], reject_unusual: bool
    ) -> tuple[list[dict[str, Any]], list[list[str]]]:
        """Row by row, value by value: names every problem (the fast path only says "clean")."""
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


def _plain_numbers(
    text: bytes | None, names: list[str], n: int, others: list[tuple[int, Feature, list[Any]]]
) -> bool:
    """Whether ``text``, the JSON that ``n`` rows of exactly the features ``names`` were parsed
    from, proves that no numeric feature's value is a boolean or a string, without looking at
    each value (``others``: the other features' columns).

    Without a backslash, every string in the text is two of its quotes, its characters as they
    are. The rows' keys and the other features' strings were each read from a string of its
    own; so when the quotes are exactly twice as many, those are all the text's strings, and no
    numeric value was read from one. Outside strings, an ``r`` can only be in ``true`` and an
    ``s`` only in ``false``: when the text holds no more of either than those strings, no value
    is a boolean. (A list or an object among the numbers is refused by numpy.) Three byte counts
    with numpy, where looking at 30,000 values' types takes a Python call each."""
    if text is None or b"\\" in text:
        return False
    import numpy as np

    strings, parts = n * len(names), []
    for _, _, values in others:
        if not set(map(type, values)) <= _STRING_TYPES:
            return False  # booleans, or what _column_flags refuses anyway
        strings += len(values) - values.count(None)
        parts.append("".join(filter(None, values)))
    data = np.frombuffer(text, np.uint8)
    if int(np.count_nonzero(data == 34)) != 2 * strings:  # '"'
        return False
    keys, inside = "".join(names), "".join(parts)
    return all(  # true, false
        int(np.count_nonzero(data == ord(c))) == n * keys.count(c) + inside.count(c) for c in "rs"
    )


def _column_flags(f: Feature, column: list[Any]) -> list[tuple[int, str]] | None:
    """Flags of one clean boolean, categorical or text column as (row, text), the same texts as
    the slow path; None if the column holds a value the slow path must refuse."""
    types = set(map(type, column))
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

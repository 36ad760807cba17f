"""The checks of the ``validate`` stage: their declaration (:class:`Check`) and the engine that
runs them over a table, builds each finding with the rows it concerns, and draws the report.

Kept apart from :mod:`pipeflow.stages.validate` (the stage: its config, ports and the run that
ties checks, expectations and the per-row verdict together) because the engine is most of the
code and changes for other reasons (a new check kind, a faster path for wide tables).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeflow.core.stage import StageConfig

ValueType = Literal["int", "float", "number", "string", "bool", "datetime"]


class Check(StageConfig):
    """One short-form check; several rules may share one ``column``."""

    column: str | None = Field(None, description="the column the column rules apply to")
    not_null: bool = Field(False, description="no missing or empty values")
    type: ValueType | None = Field(None, description="every non-null value converts to this type")
    range: tuple[float | None, float | None] | None = Field(
        None, description="[min, max], inclusive; null for open"
    )
    allowed: list[Any] | None = Field(
        None, description="the only values allowed (nulls are left to not_null)"
    )
    regex: str | None = Field(None, description="non-null values must match (re.search)")
    unique: bool = Field(False, description="no value appears twice (later copies fail)")
    row_count: tuple[int | None, int | None] | None = Field(
        None, description="[min, max] rows in the table"
    )
    duplicate_rows: bool | None = Field(
        None, description="false: a row equal to an earlier row fails"
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> Check:
        column_rules = (
            self.not_null
            or self.unique
            or any(v is not None for v in (self.type, self.range, self.allowed, self.regex))
        )
        if column_rules and not self.column:
            raise ValueError(
                "column rules (not_null, type, range, allowed, regex, unique) need `column:`"
            )
        if not column_rules and self.row_count is None and self.duplicate_rows is None:
            raise ValueError(
                "a check needs at least one rule: not_null, type, range, allowed, regex, unique, row_count or duplicate_rows"
            )
        return self


class _Inline:
    """The executor of small tables: each call runs at once, in this thread."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, items: Any) -> Any:
        return map(fn, items)

    def submit(self, fn: Any) -> Any:
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(fn())
        return future


def thread_pool(rows: int, checks: int) -> Any:
    """Threads for the checks of a large table: regex, ``isin``, hashing and numpy masks run in
    pyarrow / numpy without the GIL, so two cores check two columns at once. Small tables (and
    one-check configs) run inline: a pool would cost more than it saves."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = min(os.cpu_count() or 1, 4, checks)
    if rows < 50_000 or workers < 2:
        return _Inline()
    return ThreadPoolExecutor(workers, thread_name_prefix="pipeflow-validate")


def cost(check: Check) -> int:
    """A rough rank of what a check costs per row: regexes, then string lookups, then numbers."""
    return (
        4 * (check.regex is not None)
        + 2 * (check.allowed is not None or check.duplicate_rows is False)
        + bool(check.type or check.unique)
    )


class _Finding:
    """What one check found: failing rows with a message each, or a table-level verdict."""

    def __init__(
        self,
        name: str,
        rows: Any = None,
        messages: Any = None,
        table_failed: bool = False,
        detail: str | None = None,
    ) -> None:
        self.name = name
        self.rows = rows  # ascending row positions (row level), or None (table level)
        self.messages = messages  # a pyarrow large_string array, one message per row
        self.table_failed = table_failed
        self.detail = detail

    def result(self) -> dict[str, Any]:
        if self.rows is None:
            return {
                "check": self.name,
                "success": not self.table_failed,
                "level": "table",
                "detail": self.detail if self.table_failed else None,
            }
        return {
            "check": self.name,
            "success": len(self.rows) == 0,
            "level": "row",
            "failed_rows": int(len(self.rows)),
            "examples": [_short(m) for m in self.messages[:5].to_pylist()],
        }


def _table(name: str, failed: bool, detail: str) -> _Finding:
    return _Finding(name, table_failed=failed, detail=detail)


def _rows(name: str, rows: Any, *parts: Any) -> _Finding:
    """A row-level finding whose messages join ``parts``: strings said of every row, or arrays
    with one string per row (the rows' values, as :meth:`Column.texts` shows them)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = np.asarray(rows, dtype=np.int64)
    if not any(isinstance(p, pa.Array) for p in parts):
        messages = pa.repeat(pa.scalar("".join(parts), _text()), len(rows))
    else:
        args = [p if isinstance(p, pa.Array) else pa.scalar(p, _text()) for p in parts]
        messages = pc.binary_join_element_wise(*args, pa.scalar("", _text()))
    return _Finding(name, rows, messages)


def joined_reasons(findings: list[_Finding]) -> Any:
    """One reason per failing row, in row order: its messages in check order, joined by '; '."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    found = [f for f in findings if f.rows is not None and len(f.rows)]
    if not found:
        return pa.array([], _text())
    rows = np.concatenate([f.rows for f in found])
    messages = pa.concat_arrays([f.messages for f in found])
    order = np.argsort(rows, kind="stable")  # by row; within a row, check order
    ordered = rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    offsets = pa.array(np.r_[starts, len(ordered)], pa.int64())
    lists = pa.LargeListArray.from_arrays(offsets, messages.take(pa.array(order)))
    return pc.binary_join(lists, pa.scalar("; ", _text()))


def html_report(stage: str, report: dict[str, Any]) -> bytes:
    from pipeflow import reports as r

    rows = [
        [
            c["check"],
            c["level"],
            "passed" if c["success"] else "FAILED",
            c.get("failed_rows", "-"),
            "; ".join(c.get("examples") or ([c["detail"]] if c.get("detail") else [])),
        ]
        for c in report["checks"]
    ]
    return r.page(
        f"Validation: {stage}",
        [
            r.kpis(
                {
                    "rows": report["rows"],
                    "rows failed": report["rows_failed"],
                    "on failure": report["on_failure"],
                }
            ),
            "<h2>Checks</h2>"
            + r.table(["check", "level", "result", "rows failed", "examples"], rows),
            r.raw_json(report),
        ],
    )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SHOW = 80  # a value is shown as its repr, cut to this many characters
# strings whose repr is the string in single quotes: printable ASCII but ' and \
_PLAIN_ASCII = r"^[ -&(-\[\]-~]*$"


def _text() -> Any:
    import pyarrow as pa

    return pa.large_string()


def _show(value: Any) -> str:
    return _short(repr(value), _SHOW)


def _put(texts: Any, positions: Any, values: list[str]) -> Any:
    """``texts`` with the strings at ``positions`` (ascending) replaced by ``values``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = np.zeros(len(texts), dtype=bool)
    mask[positions] = True
    return pc.replace_with_mask(texts, pa.array(mask), pa.array(values, _text()))


def _arrow_strings(series: Any) -> Any:
    """The pyarrow strings behind a pyarrow-backed string column (pandas 3's default ``str``,
    ``string[pyarrow]``, ``ArrowDtype(string)``), as one chunked array; None for any other."""
    import pyarrow as pa

    if not hasattr(series.array, "__arrow_array__"):
        return None
    dtype = series.dtype
    if getattr(dtype, "storage", None) != "pyarrow" and not hasattr(dtype, "pyarrow_dtype"):
        return None  # a numpy-backed extension array (nullable Int64, string[python], ...)
    values = series.array.__arrow_array__()
    if not isinstance(values, pa.ChunkedArray):
        values = pa.chunked_array([values])
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    return values.cast(_text())


class Column:
    """A checked column: its values, which of them are missing (null, or a blank string), and how
    a failing value is shown in a message. Rules other than ``not_null`` leave missing values to
    ``not_null``; they ask which of their failing rows are missing, not which of all rows."""

    def __init__(self, series: Any) -> None:
        import pandas as pd

        self.series = series
        self.text_like = series.dtype == object or pd.api.types.is_string_dtype(series)
        self.arrow = _arrow_strings(series)
        self._missing: Any = None

    @property
    def missing(self) -> Any:
        """A boolean mask of every row: null or blank."""
        if self._missing is None:
            self._missing = self._missing_at(None)
        return self._missing

    def present(self, rows: Any) -> Any:
        """The positions among ``rows`` that hold a value."""
        missing = self._missing[rows] if self._missing is not None else self._missing_at(rows)
        return rows[~missing]

    def _missing_at(self, rows: Any) -> Any:
        import pyarrow.compute as pc

        if self.arrow is not None:
            values = self.arrow if rows is None else self.arrow.take(rows)
            blank = pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))
            return pc.fill_null(blank, True).to_numpy()
        series = self.series if rows is None else self.series.iloc[rows]
        missing = series.isna().to_numpy()
        if self.text_like:
            missing = missing | series.astype("string").str.strip().eq("").fillna(False).to_numpy()
        return missing

    def texts(self, rows: Any) -> Any:
        """The values at ``rows`` as messages show them: their repr, cut to 80 characters."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.arrow is not None:
            values = self.arrow.take(rows).combine_chunks()
            quote = pa.scalar("'", _text())
            shown = pc.binary_join_element_wise(quote, values, quote, pa.scalar("", _text()))
            # repr puts anything but printable ASCII without quotes or backslashes differently
            plain = pc.fill_null(pc.match_substring_regex(values, _PLAIN_ASCII), False)
            odd = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
            if len(odd):
                shown = _put(shown, odd, [_show(v) for v in values.take(odd).to_pylist()])
            long = np.flatnonzero(
                pc.greater(pc.utf8_length(shown), _SHOW).to_numpy(zero_copy_only=False)
            )
            if len(long):
                shown = _put(shown, long, [_short(v, _SHOW) for v in shown.take(long).to_pylist()])
            return shown
        values = self.series.iloc[rows]
        kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else "O"
        if kind in "iub":
            return pa.array(values.to_numpy().astype(str), _text())
        if kind == "f":  # numpy prints a float64 as repr does
            return pa.array(values.to_numpy(dtype=np.float64).astype(str), _text())
        return pa.array([_show(v) for v in values.to_numpy(dtype=object)], _text())


def run_check(check: Check, frame: Any, columns: dict[str, Column]) -> list[_Finding]:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    found: list[_Finding] = []
    if check.row_count is not None:
        low, high = check.row_count
        n = len(frame)
        bad = (low is not None and n < low) or (high is not None and n > high)
        found.append(
            _table(
                f"row_count {list(check.row_count)}",
                bool(bad),
                f"{n} rows, expected between {low} and {high}",
            )
        )
    if check.duplicate_rows is False:
        hashed = pd.util.hash_pandas_object(frame.astype("string"), index=False)
        rows = np.flatnonzero(hashed.duplicated().to_numpy())
        found.append(_rows("duplicate_rows", rows, "the same row appears earlier"))
    if not check.column:
        return found
    col = check.column
    if col not in columns:
        found.append(
            _table(
                f"{col}: exists",
                True,
                f"column '{col}' not found (columns: {', '.join(map(str, frame.columns))})",
            )
        )
        return found
    column = columns[col]
    series = column.series
    if check.not_null:
        rows = np.flatnonzero(column.missing)
        found.append(_rows(f"{col}: not_null", rows, f"{col}: missing or empty"))
    if check.type is not None:
        rows = column.present(np.flatnonzero(~_converts(series, check.type)))
        found.append(
            _rows(
                f"{col}: type {check.type}",
                rows,
                f"{col}: ",
                column.texts(rows),
                f" is not {_article(check.type)}",
            )
        )
    if check.range is not None:
        low, high = check.range
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        out = np.isnan(numbers)
        if low is not None:
            out |= numbers < low
        if high is not None:
            out |= numbers > high
        rows = column.present(np.flatnonzero(out))
        failing = numbers[rows]
        why = np.full(len(rows), 2)  # 0 not a number, 1 below, 2 above
        if low is not None:
            why[failing < low] = 1
        why[np.isnan(failing)] = 0
        says = pa.array([" is not a number", f" below {low}", f" above {high}"], _text())
        found.append(
            _rows(
                f"{col}: range [{low}, {high}]",
                rows,
                f"{col}: ",
                column.texts(rows),
                says.take(pa.array(why)),
            )
        )
    # string rules on a pyarrow string column go straight to pyarrow; anything else as text
    text = (
        series
        if column.arrow is not None or (check.allowed is None and check.regex is None)
        else series.astype("string")
    )
    if check.allowed is not None:
        allowed = {str(v) for v in check.allowed}
        ok = text.isin(allowed).fillna(False).to_numpy(dtype=bool)
        rows = column.present(np.flatnonzero(~ok))
        found.append(_rows(f"{col}: allowed", rows, f"{col}: ", column.texts(rows), " not allowed"))
    if check.regex is not None:
        matched = text.str.contains(check.regex, regex=True, na=False).to_numpy(dtype=bool)
        rows = column.present(np.flatnonzero(~matched))
        found.append(
            _rows(
                f"{col}: regex",
                rows,
                f"{col}: ",
                column.texts(rows),
                f" does not match {check.regex}",
            )
        )
    if check.unique:
        rows = column.present(np.flatnonzero(series.duplicated(keep="first").to_numpy()))
        found.append(
            _rows(f"{col}: unique", rows, f"{col}: ", column.texts(rows), " appears earlier")
        )
    return found


def _article(kind: str) -> str:
    return {
        "int": "a whole number",
        "float": "a number",
        "number": "a number",
        "string": "a string",
        "bool": "a boolean",
        "datetime": "a date",
    }[kind]


def _converts(series: Any, kind: ValueType) -> Any:
    """Which values convert to ``kind`` (nulls count as converting: not_null judges them)."""
    import numpy as np
    import pandas as pd

    if kind == "string":
        return series.map(
            lambda v: (
                isinstance(v, str)
                or v is None
                or v is pd.NA
                or (isinstance(v, float) and np.isnan(v))
            )
        ).to_numpy(dtype=bool)
    if kind == "bool":
        words = {"true", "false", "yes", "no", "y", "n", "t", "f", "1", "0"}
        return (
            series.isna()
            | series.astype("string").str.strip().str.lower().isin(words).fillna(False)
        ).to_numpy(dtype=bool)
    if kind == "datetime":
        return (
            series.isna() | pd.to_datetime(series, errors="coerce", format="mixed").notna()
        ).to_numpy(dtype=bool)
    numbers = pd.to_numeric(series, errors="coerce")
    ok = series.isna() | (numbers.notna() & np.isfinite(numbers.astype(float)))
    if kind == "int":
        ok = ok & (series.isna() | (numbers == numbers.round()))
    return ok.to_numpy(dtype=bool)


def run_expectations(expectations: list[dict[str, dict[str, Any]]], frame: Any) -> list[_Finding]:
    """Run Great Expectations 1.x expectations on the frame (an ephemeral, in-memory context)."""
    import logging

    import numpy as np

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("pipeflow").add_dataframe_asset("data")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame}
    )
    found: list[_Finding] = []
    for item in expectations:
        name, kwargs = next(iter(item.items()))
        cls = getattr(gx.expectations, "".join(part.capitalize() for part in name.split("_")), None)
        if cls is None:
            raise ValueError(f"unknown Great Expectations expectation '{name}'")
        try:
            expectation = cls(**kwargs)
        except Exception as err:  # pydantic errors from GX: name the expectation
            raise ValueError(f"{name}: bad arguments: {err}") from None
        result = batch.validate(expectation, result_format="COMPLETE")
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise ValueError(
                f"{name} could not run: {result.exception_info.get('exception_message')}"
            )
        details = result.result or {}
        unexpected = details.get("unexpected_index_list")
        label = f"{name} {kwargs}"
        if unexpected is None:
            found.append(
                _table(label, not result.success, f"observed {details.get('observed_value')!r}")
            )
            continue
        rows = np.unique(np.asarray(unexpected, dtype=np.int64))
        column = kwargs.get("column")
        if column in frame.columns:
            texts = Column(frame[column]).texts(rows)
            found.append(_rows(label, rows, f"{column}: ", texts, f" fails {name}"))
        else:  # a multi-column expectation: no one value to show
            found.append(_rows(label, rows, f"{column}: None fails {name}"))
    return found

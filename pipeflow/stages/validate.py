"""The ``validate`` stage: data-quality checks, with bad rows quarantined instead of lost.

::

    checked:
      type: validate
      inputs: {data: raw}
      with:
        on_failure: quarantine          # fail | warn | quarantine
        checks:                         # the common checks, vectorised in pandas
          - {column: claim_id, not_null: true, unique: true, regex: "^C\\d{3}-\\d{6}$"}
          - {column: amount, type: float, range: [0, 250000]}
          - {column: category, allowed: [collision, theft, fire]}
          - {row_count: [100, 10000000]}
          - {duplicate_rows: false}
        expectations:                   # any Great Expectations 1.x expectation, by name
          - expect_column_value_lengths_to_be_between: {column: description, min_value: 1, max_value: 5000}

Why two lists: the short ``checks`` cover what nearly every table needs and run as a handful of
vectorised pandas operations (GX computes the same through its metric engine at several times the
cost, plus seconds of import), while ``expectations`` reach the whole GX catalogue for the rest.
Both feed one report and one per-row verdict.

``on_failure``:

- ``fail``: any failed check fails the stage, naming every check that failed;
- ``warn``: all rows pass on, the report says what failed;
- ``quarantine``: rows that fail a row-level check go to ``rejected`` with a ``reason`` naming
  every check they failed (``amount: 'n/a' is not a number; category: 'flood' not allowed``); the
  rest go to ``valid``. Nothing is silently dropped: ``valid`` + ``rejected`` = the input. A
  table-level failure (row count, a non-row GX expectation) cannot be quarantined and fails the
  stage.

A check never crashes on bad values: strings in a numeric range check, NaN and inf, empty and
1 MB strings, control characters and injection-looking text are just values that pass or fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeflow.core.stage import Port, Stage, StageContext

ValueType = Literal["int", "float", "number", "string", "bool", "datetime"]


class Check(BaseModel):
    """One short-form check; several rules may share one ``column``."""

    model_config = ConfigDict(extra="forbid")

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


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_failure: Literal["fail", "warn", "quarantine"] = Field(
        "fail", description="what a failed check does"
    )
    checks: list[Check] = Field(default_factory=list, description="short-form checks (vectorised)")
    expectations: list[dict[str, dict[str, Any]]] = Field(
        default_factory=list,
        description="Great Expectations expectations: [{expect_...: {kwargs}}]",
    )

    @field_validator("expectations")
    @classmethod
    def _one_name_each(
        cls, value: list[dict[str, dict[str, Any]]]
    ) -> list[dict[str, dict[str, Any]]]:
        for item in value:
            if len(item) != 1:
                raise ValueError("each expectation is one mapping entry: {expect_name: {kwargs}}")
            name = next(iter(item))
            if not re.fullmatch(r"expect_[a-z0-9_]+", name):
                raise ValueError(f"'{name}' is not an expectation name (expect_...)")
        return value

    @model_validator(mode="after")
    def _something(self) -> ValidateConfig:
        if not self.checks and not self.expectations:
            raise ValueError("give at least one check or expectation")
        return self


class ValidateStage(Stage):
    """Check a table; pass valid rows on and quarantine bad ones with a reason."""

    version: ClassVar[str] = "1"
    Config = ValidateConfig
    inputs: ClassVar[Mapping[str, Port]] = {"data": Port("table", description="the table to check")}
    outputs: ClassVar[Mapping[str, Port]] = {
        "valid": Port(
            "table", description="rows that passed (all rows unless on_failure is quarantine)"
        ),
        "rejected": Port("table", description="quarantined rows with a `reason` column"),
        "report": Port("report", description="what was checked and what failed (JSON)"),
        "html": Port("report", description="the same as a readable, self-contained HTML page"),
    }
    default_port = "valid"
    description = (
        "Check a table (short checks + any Great Expectations expectation); quarantine bad rows."
    )

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        import numpy as np
        import pandas as pd

        config: ValidateConfig = self.config  # type: ignore[assignment]
        data = inputs["data"]
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"input 'data' must be a table, got {type(data).__name__}")
        frame = data.reset_index(drop=True)
        n = len(frame)
        failed = np.zeros(n, dtype=bool)
        pieces: list[tuple[Any, list[str]]] = []  # (failing rows, their messages) per check
        results: list[dict[str, Any]] = []
        table_failures: list[str] = []

        def record(name: str, bad: Any, describe: Any, values: Any = None) -> None:
            """``bad``: a boolean mask of failing rows (or a bool for a table-level check)."""
            if isinstance(bad, bool | np.bool_):
                results.append(
                    {
                        "check": name,
                        "success": not bad,
                        "level": "table",
                        "detail": describe if bad else None,
                    }
                )
                if bad:
                    table_failures.append(f"{name}: {describe}")
                return
            rows = np.flatnonzero(bad)
            # only failing rows are described: their values are fetched in one go
            failing = (
                values.iloc[rows].to_numpy(dtype=object)
                if values is not None
                else [None] * len(rows)
            )
            messages = [describe(i, v) for i, v in zip(rows, failing, strict=True)]
            results.append(
                {
                    "check": name,
                    "success": len(rows) == 0,
                    "level": "row",
                    "failed_rows": int(len(rows)),
                    "examples": [_short(m) for m in messages[:5]],
                }
            )
            if len(rows):
                failed[rows] = True
                pieces.append((rows, messages))

        for check in config.checks:
            _run_check(check, frame, record)
        if config.expectations:
            _run_expectations(config.expectations, frame, record)

        report = {
            "rows": n,
            "rows_failed": int(failed.sum()),
            "success": not table_failures and not failed.any(),
            "on_failure": config.on_failure,
            "checks": results,
        }
        summary = "; ".join(
            table_failures
            + [
                f"{r['check']}: {r['failed_rows']} row(s) failed, e.g. {r['examples'][0]}"
                for r in results
                if r["level"] == "row" and not r["success"]
            ]
        )
        if table_failures and config.on_failure != "warn":
            raise ValueError(f"validation failed: {summary}")
        if config.on_failure == "fail" and failed.any():
            raise ValueError(f"validation failed: {summary}")
        if not report["success"]:
            ctx.logger.warning("validation: %s", summary)
        if config.on_failure == "quarantine":
            rejected = data[failed].copy()
            rejected["reason"] = _reasons(pieces, np.flatnonzero(failed))
            return {
                "valid": data[~failed],
                "rejected": rejected,
                "report": report,
                "html": _html(ctx.stage, report),
            }
        empty = data.iloc[0:0].copy()
        empty["reason"] = pd.Series(dtype="string")
        return {
            "valid": data,
            "rejected": empty,
            "report": report,
            "html": _html(ctx.stage, report),
        }


def _reasons(pieces: list[tuple[Any, list[str]]], rows: Any) -> list[str]:
    """One reason per failing row (``rows``, ascending): its messages in check order, '; '."""
    import numpy as np

    if not pieces:
        return []
    all_rows = np.concatenate([r for r, _ in pieces])
    all_messages = [m for _, msgs in pieces for m in msgs]
    order = np.argsort(all_rows, kind="stable")  # by row; within a row, check order
    ordered = all_rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    messages = [all_messages[i] for i in order]
    assert np.array_equal(ordered[starts], rows)
    return ["; ".join(messages[a:b]) for a, b in zip(starts, ends, strict=True)]


def _html(stage: str, report: dict[str, Any]) -> bytes:
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


def _show(value: Any) -> str:
    return _short(repr(value), 80)


def _run_check(check: Check, frame: Any, record: Any) -> None:
    import numpy as np
    import pandas as pd

    if check.row_count is not None:
        low, high = check.row_count
        n = len(frame)
        bad = (low is not None and n < low) or (high is not None and n > high)
        record(
            f"row_count {list(check.row_count)}",
            bool(bad),
            f"{n} rows, expected between {low} and {high}",
        )
    if check.duplicate_rows is False:
        hashed = pd.util.hash_pandas_object(frame.astype("string"), index=False)
        dup = hashed.duplicated().to_numpy()
        record("duplicate_rows", dup, lambda i, v: "the same row appears earlier")
    if not check.column:
        return
    col = check.column
    if col not in frame.columns:
        record(
            f"{col}: exists",
            True,
            f"column '{col}' not found (columns: {', '.join(map(str, frame.columns))})",
        )
        return
    series = frame[col]
    null = series.isna().to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        null = null | series.astype("string").str.strip().eq("").fillna(False).to_numpy()
    if check.not_null:
        record(f"{col}: not_null", null, lambda i, v: f"{col}: missing or empty", values=series)
    present = ~null
    if check.type is not None:
        ok = _converts(series, check.type)
        record(
            f"{col}: type {check.type}",
            present & ~ok,
            lambda i, v: f"{col}: {_show(v)} is not {_article(check.type)}",
            values=series,
        )
    if check.range is not None:
        low, high = check.range
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        not_number = present & np.isnan(numbers)
        below = (
            present & ~not_number & (numbers < low)
            if low is not None
            else np.zeros(len(frame), bool)
        )
        above = (
            present & ~not_number & (numbers > high)
            if high is not None
            else np.zeros(len(frame), bool)
        )

        def why(i: int, v: Any) -> str:
            if not_number[i]:
                return f"{col}: {_show(v)} is not a number"
            return (
                f"{col}: {_show(v)} below {low}" if below[i] else f"{col}: {_show(v)} above {high}"
            )

        record(f"{col}: range [{low}, {high}]", not_number | below | above, why, values=series)
    if check.allowed is not None:
        allowed = {str(v) for v in check.allowed}
        bad = present & ~series.astype("string").isin(allowed).fillna(False).to_numpy()
        record(f"{col}: allowed", bad, lambda i, v: f"{col}: {_show(v)} not allowed", values=series)
    if check.regex is not None:
        matched = series.astype("string").str.contains(check.regex, regex=True, na=False).to_numpy()
        record(
            f"{col}: regex",
            present & ~matched,
            lambda i, v: f"{col}: {_show(v)} does not match {check.regex}",
            values=series,
        )
    if check.unique:
        dup = series.duplicated(keep="first").to_numpy() & present
        record(
            f"{col}: unique", dup, lambda i, v: f"{col}: {_show(v)} appears earlier", values=series
        )


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


def _run_expectations(
    expectations: list[dict[str, dict[str, Any]]], frame: Any, record: Any
) -> None:
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
        rows = details.get("unexpected_index_list")
        label = f"{name} {kwargs}"
        if rows is None:
            record(label, not result.success, f"observed {details.get('observed_value')!r}")
            continue
        bad = np.zeros(len(frame), dtype=bool)
        bad[np.asarray(rows, dtype=int)] = True
        column = kwargs.get("column")
        record(
            label,
            bad,
            lambda i, v, name=name, column=column: f"{column}: {_show(v)} fails {name}",
            values=frame[column] if column in frame.columns else None,
        )

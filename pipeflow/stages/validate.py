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

from pydantic import Field, field_validator, model_validator

from pipeflow.core.stage import Port, Stage, StageConfig, StageContext
from pipeflow.stages.checks import (
    Check,
    Column,
    cost,
    html_report,
    joined_reasons,
    run_check,
    run_expectations,
    thread_pool,
)


class ValidateConfig(StageConfig):
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


class ValidateStage(Stage[ValidateConfig]):
    """Check a table; pass valid rows on and quarantine bad ones with a reason."""

    version: ClassVar[str] = "1"
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

        config = self.config
        data = inputs["data"]
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"input 'data' must be a table, got {type(data).__name__}")
        frame = data.reset_index(drop=True)
        n = len(frame)
        # the columns the checks name, taken from the frame here (the checks may run in threads)
        columns = {
            c.column: Column(frame[c.column])
            for c in config.checks
            if c.column and c.column in frame.columns
        }
        with thread_pool(n, len(config.checks)) as pool:
            # the costly checks (regexes scan every string) start first, so that the threads
            # end together; the findings keep the checks' order
            order = sorted(range(len(config.checks)), key=lambda i: -cost(config.checks[i]))
            done = dict(
                zip(
                    order,
                    pool.map(lambda i: run_check(config.checks[i], frame, columns), order),
                    strict=True,
                )
            )
            findings = [f for i in range(len(config.checks)) for f in done[i]]
            if config.expectations:
                findings += run_expectations(config.expectations, frame)

            failed = np.zeros(n, dtype=bool)
            for f in findings:
                if f.rows is not None:
                    failed[f.rows] = True
            results = [f.result() for f in findings]
            table_failures = [f"{f.name}: {f.detail}" for f in findings if f.table_failed]
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
                # a worker joins the reasons (pyarrow) while this thread selects the rows: the
                # selections allocate a table's worth of numpy memory, which a worker thread's
                # malloc arena would first have to fault in
                joined = pool.submit(lambda: joined_reasons(findings))
                valid = data[~failed]
                rejected = data[failed].copy()
                reasons = joined.result()
                reason = reasons.to_pandas()  # a Series of the dtype pandas gives text
                reason.index = rejected.index
                rejected["reason"] = reason
                return {
                    "valid": valid,
                    "rejected": rejected,
                    "report": report,
                    "html": html_report(ctx.stage, report),
                }
        empty = data.iloc[0:0].copy()
        empty["reason"] = pd.Series(dtype="string")
        return {
            "valid": data,
            "rejected": empty,
            "report": report,
            "html": html_report(ctx.stage, report),
        }

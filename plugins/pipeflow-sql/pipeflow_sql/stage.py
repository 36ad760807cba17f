"""The ``sql`` stage: run one read-only SQL query over the stage's input tables.

::

    by_category:
      type: sql
      inputs: {claims: clean}          # each input becomes a table of that name
      with:
        query: |
          select category, count(*) as n, round(avg(amount), 2) as mean_amount
          from claims group by category order by category
        params: {min_amount: 100}      # bound as :min_amount, never spliced into the text

Inputs are pandas DataFrames (kind ``table``); they are loaded into a private in-memory SQLite
database and the query's result is the ``out`` table. The query may only read: an authorizer
refuses anything that would write, attach a file or change a pragma, so a spec can't touch the
disk through this stage. Results are deterministic as long as the query orders its rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeflow.core.stage import Port, Stage, StageContext

_READ_ONLY = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


class SqlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        description="one SELECT (or WITH ... SELECT) statement over the input tables"
    )
    params: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="named parameters, bound as :name"
    )

    @field_validator("query")
    @classmethod
    def _one_select(cls, value: str) -> str:
        text = value.strip().rstrip(";").strip()
        if not text:
            raise ValueError("the query is empty")
        if ";" in text and sqlite3.complete_statement(text.split(";", 1)[0] + ";"):
            raise ValueError("only one statement is allowed")
        first = text.split(None, 1)[0].lower()
        if first not in ("select", "with"):
            raise ValueError(
                f"the query must be a SELECT (or WITH ... SELECT), not {first.upper()}"
            )
        return text


class SqlStage(Stage[SqlConfig]):
    """Run a read-only SQL query over the input tables (SQLite, in memory)."""

    version: ClassVar[str] = "1"
    extra_inputs = Port("table", description="each input is a table named after its port")
    outputs: ClassVar[Mapping[str, Port]] = {"out": Port("table", description="the query's result")}
    description = "Run a read-only SQL query over the input tables (SQLite, in memory)."

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        import pandas as pd

        config = self.config
        with sqlite3.connect(":memory:") as conn:
            for name, frame in inputs.items():
                if not isinstance(frame, pd.DataFrame):
                    raise TypeError(
                        f"input '{name}' must be a table (pandas DataFrame), got {type(frame).__name__}"
                    )
                frame.to_sql(name, conn, index=False)
            conn.set_authorizer(_authorize)
            try:
                result = pd.read_sql_query(config.query, conn, params=config.params or None)
            except (pd.errors.DatabaseError, sqlite3.Error) as err:
                tables = ", ".join(sorted(inputs)) or "none"
                raise ValueError(
                    f"SQL query failed: {_cause(err)} (input tables: {tables})"
                ) from None
        return {"out": result}


def _authorize(action: int, *_: Any) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ONLY else sqlite3.SQLITE_DENY


def _cause(err: Exception) -> str:
    text = str(err)
    # pandas wraps sqlite errors as "Execution failed on sql '<query>': <reason>"
    return text.rsplit("': ", 1)[-1] if text.startswith("Execution failed") else text

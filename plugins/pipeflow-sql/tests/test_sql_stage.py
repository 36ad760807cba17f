"""The sql plugin: stage contract, real queries, read-only guard, and its use from a spec."""

from __future__ import annotations

import pandas as pd
import pydantic
import pytest
from pipeflow_sql import SqlStage

from pipeflow.core.stage import StageContext
from pipeflow.errors import SpecError
from pipeflow.testing import StageContract, write_spec


class TestSqlStageContract(StageContract):
    stage_cls = SqlStage
    entry_point = "sql"
    config = {"query": "select k, sum(v) as total from t group by k order by k"}
    sample_inputs = {"t": pd.DataFrame({"k": ["b", "a", "b"], "v": [1, 2, 3]})}


def _run(query: str, params: dict | None = None, **tables: pd.DataFrame) -> pd.DataFrame:
    stage = SqlStage(SqlStage.Config(query=query, params=params or {}))
    ctx = StageContext(run_id="t", stage="q", params={}, base_dir=None)  # type: ignore[arg-type]
    return stage.run(ctx, dict(tables))["out"]


def test_joins_two_inputs_and_binds_params() -> None:
    claims = pd.DataFrame(
        {"id": [1, 2, 3], "amount": [50.0, 500.0, 900.0], "pol": ["p1", "p2", "p1"]}
    )
    policies = pd.DataFrame({"pol": ["p1", "p2"], "holder": ["ann", "bob"]})
    out = _run(
        "select p.holder, sum(c.amount) as total from claims c join policies p using (pol) "
        "where c.amount >= :min group by p.holder order by p.holder",
        {"min": 100},
        claims=claims,
        policies=policies,
    )
    assert out.to_dict("records") == [
        {"holder": "ann", "total": 900.0},
        {"holder": "bob", "total": 500.0},
    ]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", "empty"),
        ("delete from t", "must be a SELECT"),
        ("select 1; drop table t", "only one statement"),
    ],
)
def test_config_refuses_non_select_queries(query: str, expected: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=expected):
        SqlStage.Config(query=query)


def test_semicolon_inside_a_string_is_not_a_second_statement() -> None:
    out = _run("select ';' as s from t", t=pd.DataFrame({"a": [1]}))
    assert out["s"].tolist() == [";"]


def test_query_cannot_reach_pragmas_or_the_file_system() -> None:
    # pragma table-valued functions (and anything that is not a plain read) are refused
    with pytest.raises(ValueError, match="not authorized"):
        _run("select * from pragma_table_info('t')", t=pd.DataFrame({"a": [1]}))


def test_unknown_table_error_lists_the_inputs() -> None:
    with pytest.raises(ValueError, match=r"no such table: nope \(input tables: t\)"):
        _run("select * from nope", t=pd.DataFrame({"a": [1]}))


def test_non_table_input_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="input 't' must be a table"):
        _run("select 1", t=[1, 2, 3])  # type: ignore[arg-type]


def test_spec_using_sql_stage_runs_and_caches(tmp_path) -> None:
    from pipeflow.runner.session import run

    spec = write_spec(
        tmp_path,
        """
        pipeline: sql-demo
        stages:
          rows:
            type: python
            with: {function: "steps:rows", outputs: {out: table}}
          totals:
            type: sql
            inputs: {t: rows}
            with: {query: "select k, sum(v) as total from t group by k order by k"}
        """,
        {
            "steps.py": """
            import pandas as pd
            def rows():
                return pd.DataFrame({"k": ["x", "y", "x"], "v": [1, 2, 3]})
        """
        },
    )
    first = run(spec)
    assert str(first.state) == "done"
    assert first.load("totals").to_dict("records") == [
        {"k": "x", "total": 4},
        {"k": "y", "total": 2},
    ]
    second = run(spec)
    assert str(second.stages["totals"].state) == "cached"


def test_kind_mismatch_into_sql_stage_names_both_sides(tmp_path) -> None:
    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.spec import load

    spec = write_spec(
        tmp_path,
        """
        pipeline: sql-bad
        stages:
          m:
            type: python
            with: {function: "steps:f", outputs: {out: model}}
          q:
            type: sql
            inputs: {t: m}
            with: {query: "select * from t"}
        """,
        {"steps.py": "def f():\n    return 1\n"},
    )
    with pytest.raises(SpecError) as info:
        compile_pipeline(load(spec))
    text = str(info.value)
    assert "'m'" in text and "'q'" in text and "model" in text and "table" in text
    assert "pipeline.yaml:" in text

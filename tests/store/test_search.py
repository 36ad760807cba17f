"""``runs list --where``: the expressions it reads, and a mistake named by its column (the SQL the
conditions become is tested on both databases in tests/store/test_metadata.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.errors import UsageError
from pipeflow.store.search import Condition, parse_where, where_sql


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.accuracy > 0.9", [Condition("metrics", "accuracy", ">", 0.9)]),
        ("metrics.accuracy>0.9", [Condition("metrics", "accuracy", ">", 0.9)]),
        ("metrics.loss <= 1e-3", [Condition("metrics", "loss", "<=", 0.001)]),
        ("metrics.delta >= -2", [Condition("metrics", "delta", ">=", -2.0)]),
        ("metrics.r2 == .5", [Condition("metrics", "r2", "=", 0.5)]),
        ("metrics.val.loss != 3", [Condition("metrics", "val.loss", "!=", 3.0)]),
        ("metrics.train/loss < 1", [Condition("metrics", "train/loss", "<", 1.0)]),
        ("metrics.`val loss` < 1", [Condition("metrics", "val loss", "<", 1.0)]),
        ("params.optimizer = 'adam'", [Condition("params", "optimizer", "=", "adam")]),
        ('params.optimizer != "sgd"', [Condition("params", "optimizer", "!=", "sgd")]),
        ("params.seed = 7", [Condition("params", "seed", "=", "7")]),
        ("tags.team = 'fraud'", [Condition("tags", "team", "=", "fraud")]),
        ("tags.reviewed", [Condition("tags", "reviewed")]),
        (
            "METRICS.accuracy > 0.9 AND tags.reviewed and params.x = ''",
            [
                Condition("metrics", "accuracy", ">", 0.9),
                Condition("tags", "reviewed"),
                Condition("params", "x", "=", ""),
            ],
        ),
    ],
)
def test_expressions_parse_into_conditions(text: str, expected: list[Condition]) -> None:
    assert parse_where(text) == expected


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", 1, "empty expression"),
        ("accuracy > 0.9", 1, "expected metrics.NAME, params.NAME or tags.NAME, got 'accuracy'"),
        ("metric.accuracy > 0.9", 1, "got 'metric'"),
        ("metrics accuracy > 1", 9, "expected '.' and a name after 'metrics'"),
        ("metrics. > 1", 10, "expected a name after 'metrics.'"),
        ("metrics.accuracy >> 0.9", 19, "metrics.accuracy compares with a number, got '>'"),
        ("metrics.accuracy > 'high'", 20, "compares with a number, got \"'high'\""),
        ("metrics.accuracy 0.9", 18, "expected a comparison (< <= > >= = !=)"),
        ("metrics.accuracy >", 19, "expected a value after >"),
        ("params.lr > 0.1", 11, "params are text: compare them with = or !=, not >"),
        ("params.opt = adam", 14, "expected a quoted value ('...'), got 'adam'"),
        ("tags.team = 'fraud", 13, "a string needs its closing quote"),
        ("metrics.a > 1 or metrics.b > 2", 15, "only 'and' joins conditions"),
        ("metrics.a > 1 metrics.b > 2", 15, "expected 'and' or the end, got 'metrics'"),
        ("metrics.a > 1 and", 18, "expected a condition after 'and'"),
        ("metrics.a > 1; DROP TABLE runs", 14, "unexpected character ';'"),
    ],
)
def test_a_bad_expression_names_the_column_of_the_problem(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        parse_where(text)
    error = str(caught.value)
    first, shown, caret = error.splitlines()
    assert message in first and first.endswith(f"(column {column})"), error
    assert shown == f"  {text}"
    assert caret == " " * (column + 1) + "^"  # under the column, below the expression


def test_values_and_names_become_parameters_never_sql() -> None:
    conditions = parse_where("""metrics.`x'; --` > 1 and tags.t = "'; DROP TABLE runs; --" """)
    sql, args = where_sql(conditions)
    assert "DROP" not in sql and "--" not in sql
    assert args == ("x'; --", 1.0, "t", "'; DROP TABLE runs; --")


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("metricsparamtgs.`'\" <>=!0123456789-e and")), max_size=40
    )
)
def test_any_text_either_parses_or_is_a_usage_error(text: str) -> None:
    try:
        conditions = parse_where(text)
    except UsageError as err:
        assert "(column " in str(err).splitlines()[0]
        return
    assert conditions and all(c.kind in ("metrics", "params", "tags") for c in conditions)
    where_sql(conditions)

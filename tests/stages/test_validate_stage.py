"""validate: short checks and GX expectations, quarantine that loses nothing, hostile values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.core.stage import StageContext
from pipeflow.stages.validate import ValidateStage
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.testing import StageContract, write_spec

CLAIMS = pd.DataFrame(
    {
        "claim_id": ["C1", "C2", "C2", None, "bad", "C6"],
        "amount": ["12.5", "n/a", "-5", "1e9", "inf", "300"],
        "category": ["fire", "theft", "flood", "fire", "", "theft"],
    }
)
CHECKS = [
    {"column": "claim_id", "not_null": True, "unique": True, "regex": r"^C\d+$"},
    {"column": "amount", "range": [0, 1000]},
    {"column": "category", "allowed": ["fire", "theft"]},
]


class TestValidateContract(StageContract):
    stage_cls = ValidateStage
    entry_point = "validate"
    config = {"on_failure": "quarantine", "checks": CHECKS}
    sample_inputs = {"data": CLAIMS}


def validate(data: pd.DataFrame = CLAIMS, **config) -> dict:
    stage = ValidateStage(ValidateStage.Config(**{"checks": CHECKS, **config}))
    return dict(stage.run(StageContext("r", "checked", {}, base_dir=None), {"data": data}))  # type: ignore[arg-type]


def test_quarantine_splits_rows_and_names_every_failed_check() -> None:
    out = validate(on_failure="quarantine")
    assert out["valid"]["claim_id"].tolist() == ["C1", "C6"]
    reasons = dict(zip(out["rejected"]["amount"], out["rejected"]["reason"], strict=True))
    assert reasons["n/a"] == "amount: 'n/a' is not a number"
    assert (
        reasons["-5"]
        == "claim_id: 'C2' appears earlier; amount: '-5' below 0.0; category: 'flood' not allowed"
    )
    assert reasons["1e9"] == "claim_id: missing or empty; amount: '1e9' above 1000.0"
    assert (
        "claim_id: 'bad' does not match" in reasons["inf"]
        and "amount: 'inf' above 1000.0" in reasons["inf"]
    )
    # nothing lost: every input row is in exactly one output
    assert len(out["valid"]) + len(out["rejected"]) == len(CLAIMS)
    assert out["report"]["rows_failed"] == 4 and out["report"]["success"] is False


def test_fail_mode_names_each_failing_check_and_warn_passes_everything() -> None:
    with pytest.raises(
        ValueError, match=r"validation failed: .*amount: range \[0.0, 1000.0\]: 4 row\(s\) failed"
    ):
        validate(on_failure="fail")
    out = validate(on_failure="warn")
    assert (
        len(out["valid"]) == len(CLAIMS)
        and out["rejected"].empty
        and out["report"]["success"] is False
    )


def test_table_level_failures_cannot_be_quarantined() -> None:
    with pytest.raises(ValueError, match="row_count"):
        validate(on_failure="quarantine", checks=[{"row_count": [100, None]}])


def test_types_duplicates_and_missing_columns() -> None:
    data = pd.DataFrame({"n": ["1", "2.5", "x", None], "flag": ["yes", "no", "maybe", "t"]})
    out = validate(
        data,
        on_failure="quarantine",
        checks=[
            {"column": "n", "type": "int"},
            {"column": "flag", "type": "bool"},
            {"duplicate_rows": False},
        ],
    )
    assert out["rejected"]["reason"].tolist() == [
        "n: '2.5' is not a whole number",
        "n: 'x' is not a whole number; flag: 'maybe' is not a boolean",
    ]
    with pytest.raises(ValueError, match="column 'nope' not found"):
        validate(data, checks=[{"column": "nope", "not_null": True}])


def test_great_expectations_by_name_quarantines_rows() -> None:
    out = validate(
        on_failure="quarantine",
        checks=[],
        expectations=[
            {
                "expect_column_values_to_be_in_set": {
                    "column": "category",
                    "value_set": ["fire", "theft"],
                }
            }
        ],
    )
    assert sorted(out["rejected"]["category"]) == ["", "flood"]
    assert "fails expect_column_values_to_be_in_set" in out["rejected"]["reason"].iloc[0]
    with pytest.raises(
        ValueError, match="unknown Great Expectations expectation 'expect_the_moon'"
    ):
        validate(checks=[], expectations=[{"expect_the_moon": {}}])


@pytest.mark.parametrize(
    "config, message",
    [
        ({"checks": [{"not_null": True}]}, "need `column:`"),
        ({"checks": [{"column": "a", "regex": "("}]}, "not a valid regular expression"),
        ({"checks": [], "expectations": []}, "at least one check"),
        ({"checks": [{"column": "a"}]}, "at least one rule"),
        ({"expectations": [{"not_an_expectation": {}}]}, "is not an expectation name"),
    ],
)
def test_config_errors_are_clear(config: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        ValidateStage.Config(**config)


hostile = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.text(max_size=50),
    st.sampled_from(
        [
            "",
            " ",
            "\x00\x1b[31m",
            "'; DROP TABLE claims;--",
            "<script>alert(1)</script>",
            "ümlaut ☃",
            "x" * 100_000,
        ]
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(hostile, hostile), min_size=1, max_size=20))
def test_hostile_values_never_crash_and_nothing_is_lost(tmp_path_factory, rows) -> None:
    data = pd.DataFrame(rows, columns=["a", "b"])
    out = validate(
        data,
        on_failure="quarantine",
        checks=[
            {"column": "a", "not_null": True, "type": "float", "range": [0, 10], "unique": True},
            {"column": "b", "allowed": ["x"], "regex": "^[a-z]+$"},
            {"duplicate_rows": False},
        ],
    )
    assert len(out["valid"]) + len(out["rejected"]) == len(data)
    assert out["rejected"]["reason"].map(len).gt(0).all()
    store = ArtifactStore(str(tmp_path_factory.mktemp("s")))
    for port in ("valid", "rejected", "report", "html"):
        store.load(store.save(out[port]))  # whatever came in can be stored


def test_validate_in_a_pipeline_with_a_mixed_type_column(tmp_path) -> None:
    import pipeflow

    spec = write_spec(
        tmp_path,
        """
        pipeline: v
        stages:
          raw: {type: python, with: {function: "steps:raw", outputs: {out: table}}}
          checked:
            type: validate
            inputs: {data: raw}
            with:
              on_failure: quarantine
              checks: [{column: amount, not_null: true, range: [0, 100]}]
          kept:
            type: python
            inputs: {t: checked}
            with: {function: "steps:count", input_kinds: {t: table}}
        """,
        {
            "steps.py": "import pandas as pd\ndef raw():\n    return pd.DataFrame({'amount': [5, 'n/a', -1, None, 50.5]})\ndef count(t):\n    return len(t)\n"
        },
    )
    report = pipeflow.run(spec)
    assert str(report.state) == "done", report.stages["checked"].error
    assert report.load("kept") == 2
    assert report.load("checked", "rejected")["reason"].tolist() == [
        "amount: 'n/a' is not a number",
        "amount: '-1' below 0.0",  # the mixed column was stored as text
        "amount: missing or empty",
    ]
    assert np.isclose(report.load("checked", "report")["rows_failed"], 3)


shown_values = st.one_of(
    st.text(max_size=120),  # quotes, backslashes, control and non-ASCII characters, long ones
    st.sampled_from(["plain", "it's", 'say "hi"', "back\\slash", "tab\there", "x" * 81, "ü" * 90]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(shown_values, min_size=1, max_size=30))
def test_a_string_value_is_shown_as_its_repr_cut_to_80(values) -> None:
    from pipeflow.stages.checks import Column as _Column
    from pipeflow.stages.checks import _show

    rows = np.arange(len(values))
    for series in (pd.Series(values, dtype="string[pyarrow]"), pd.Series(values, dtype=object)):
        assert _Column(series).texts(rows).to_pylist() == [_show(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=30),
)
def test_a_number_is_shown_as_its_repr(floats, ints) -> None:
    from pipeflow.stages.checks import Column as _Column
    from pipeflow.stages.checks import _show

    for values in (floats, ints):
        series = pd.Series(values)
        assert series.dtype.kind in "if"
        rows = np.arange(len(values))
        assert _Column(series).texts(rows).to_pylist() == [_show(v) for v in values]


def test_a_large_table_is_checked_in_threads_with_the_same_result_as_a_small_one() -> None:
    """Above 50,000 rows the checks run in a thread pool; the verdicts and reasons (in check
    order within a row) are those of the same rows checked 1,000 at a time, inline."""
    rng = np.random.default_rng(3)
    n = 60_000
    data = pd.DataFrame(
        {
            "claim_id": np.where(rng.random(n) < 0.01, "bad", "C1"),
            "amount": rng.uniform(-10, 1100, n).astype(str).astype(object),
            "category": rng.choice(["fire", "theft", "flood", "", None], n),
        }
    )
    data.loc[rng.random(n) < 0.01, "amount"] = "n/a"
    checks = [
        {"column": "claim_id", "not_null": True, "regex": r"^C\d+$"},
        {"column": "amount", "range": [0, 1000]},
        {"column": "category", "not_null": True, "allowed": ["fire", "theft"]},
        {"duplicate_rows": False},
    ]
    whole = validate(data, on_failure="quarantine", checks=checks)
    assert len(whole["valid"]) + len(whole["rejected"]) == n > len(whole["valid"]) > 0
    parts = [
        validate(data.iloc[i : i + 1000], on_failure="quarantine", checks=checks[:3])
        for i in range(0, n, 1000)
    ]
    # duplicate_rows looks across the whole table (and is the last check): leave its message out
    rejected = whole["rejected"]
    reasons = rejected["reason"].str.replace(r"(; )?the same row appears earlier$", "", regex=True)
    expected = pd.concat([p["rejected"] for p in parts])
    assert rejected.index[reasons != ""].tolist() == expected.index.tolist()
    assert reasons[reasons != ""].tolist() == expected["reason"].tolist()
    assert {"claim_id: 'bad' does not match ^C\\d+$", "category: missing or empty"} <= {
        m for r in whole["rejected"]["reason"] for m in r.split("; ")
    }

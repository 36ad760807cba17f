"""The signature check's fast column path against its slow row-by-row path.

The server validates clean requests column by column (numpy for numbers) and builds the model's
DataFrame from those columns; anything unusual goes row by row. Whatever the rows, both must
agree: same verdict, same flags in the same order, and the columns must make the same DataFrame
as ``DataFrame.from_records`` of the rows.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.registry.signature import Columns, Signature, _plain_numbers

RECORD = {
    "signature": {
        "features": [
            {"name": "age", "dtype": "int64", "role": "numeric"},
            {"name": "amount", "dtype": "float64", "role": "numeric"},
            {"name": "region", "dtype": "object", "role": "categorical"},
            {"name": "score", "dtype": "float64", "role": "numeric"},
            {"name": "note", "dtype": "object", "role": "text"},
            {"name": "urgent", "dtype": "bool", "role": "categorical"},
        ]
    },
    "reference": {
        "features": {
            "age": {"min": 18, "max": 90},
            "amount": {"min": 0.0, "max": 5000.0},
            "region": {"categories": ["north", "south"]},
            "note": {"length": {"max": 20}},
            # "score" has no reference: never flagged
        }
    },
}
SIGNATURE = Signature.from_record(RECORD)
NAMES = SIGNATURE.names

numbers = st.one_of(
    st.integers(-200, 10_000),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from([1e39, -1e39, 10**400, math.nan, math.inf]),  # refused by both paths
)
values = {
    "age": numbers,
    "amount": numbers,
    "score": numbers,
    "region": st.sampled_from(["north", "south", "west", ""]),
    "note": st.sampled_from(["hello", "", "   ", "x" * 60]),
    "urgent": st.booleans(),
}
anything = st.one_of(
    st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(), max_size=2)
)


@st.composite
def row(draw: st.DrawFn, clean: bool) -> dict:
    out = {}
    for name in NAMES:
        pick = draw(st.integers(0, 19))
        if pick == 0:
            out[name] = None
        elif pick == 1 and not clean:
            out[name] = draw(anything)
        elif pick == 2 and not clean:
            continue  # a missing field
        else:
            out[name] = draw(values[name])
    if not clean and draw(st.integers(0, 9)) == 0:
        out["extra"] = 1
    return out


def slow(rows: list) -> tuple[list, list]:
    return SIGNATURE._slow(rows, False)


def frame_of_rows(rows: list) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=NAMES)
    for f in SIGNATURE.features:
        if f.expect == "number":
            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce").astype("float64")
    return frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_and_slow_paths_agree_on_any_rows(data: st.DataObject) -> None:
    clean = data.draw(st.booleans())
    rows = data.draw(st.lists(row(clean), min_size=1, max_size=30))
    problems, flags, columns = SIGNATURE.check_columns(rows)
    want_problems, want_flags = slow(rows)
    assert problems == want_problems
    assert flags == want_flags
    if columns is not None:  # the fast path took them: they make the same frame
        assert not problems
        pd.testing.assert_frame_equal(
            Columns.frame([columns]), frame_of_rows(rows), check_dtype=False
        )


def test_clean_rows_take_the_fast_path_and_flag_in_feature_order() -> None:
    rows = [
        {"age": 30, "amount": 10.5, "region": "north", "score": 1, "note": "ok", "urgent": True},
        {"age": 200, "amount": None, "region": "west", "score": 2.5, "note": "", "urgent": False},
    ]
    problems, flags, columns = SIGNATURE.check_columns(rows)
    assert problems == [] and columns is not None
    assert flags == [
        [],
        [
            "age: 200 is outside the training range",
            "region: category 'west' was not seen in training",
            "note: empty text",
        ],
    ]
    frame = Columns.frame([columns, columns])
    assert list(frame.columns) == NAMES
    assert frame["age"].tolist() == [30.0, 200.0, 30.0, 200.0]
    assert math.isnan(frame["amount"].iloc[1])
    assert frame["region"].tolist() == ["north", "west", "north", "west"]


@pytest.mark.parametrize(
    "bad, field, expected",
    [
        (True, "age", "a number"),  # a boolean is not a number, though numpy would take it
        ("12", "age", "a number"),  # nor is a numeric string
        (math.nan, "age", "a finite number"),  # what the fallback JSON parser reads
        (10**400, "age", "a finite number"),
        (1e39, "age", "a number within +-3.4e38"),
    ],
)
def test_values_numpy_would_convert_are_refused(bad: object, field: str, expected: str) -> None:
    row = {"age": 1, "amount": 1.0, "region": "north", "score": 1, "note": "n", "urgent": True}
    problems, _, columns = SIGNATURE.check_columns([row, {**row, field: bad}])
    assert columns is None
    assert [(p["row"], p["field"], p["expected"]) for p in problems] == [(1, field, expected)]


@pytest.mark.parametrize(
    "features, row",
    [
        ([{"name": "x", "dtype": "float64"}], {"x": 1.5}),
        ([{"name": "t", "dtype": "object", "role": "text"}], {"t": "a claim"}),
        (
            [{"name": "t", "dtype": "object", "role": "text"}, {"name": "c", "dtype": "object"}],
            {"t": "a claim", "c": "home"},
        ),
    ],
)
def test_signatures_of_only_numbers_or_only_strings_make_the_same_frame(
    features: list, row: dict
) -> None:
    signature = Signature.from_record({"signature": {"features": features}})
    rows = [row, dict.fromkeys(row), row]
    problems, flags, columns = signature.check_columns(rows)
    assert problems == [] and flags == [[], [], []] and columns is not None
    want = pd.DataFrame.from_records(rows, columns=signature.names)
    for f in signature.features:
        if f.expect == "number":
            want[f.name] = want[f.name].astype("float64")
    pd.testing.assert_frame_equal(
        Columns.frame([columns, columns]),
        pd.concat([want, want], ignore_index=True),
        check_dtype=False,
    )


# a signature without booleans: a JSON body of its rows can vouch for the numbers' types
PLAIN = Signature.from_record(
    {
        "signature": {
            "features": [f for f in RECORD["signature"]["features"] if f["name"] != "urgent"]
        },
        "reference": RECORD["reference"],
    }
)
tricky = st.one_of(
    st.none(), st.booleans(), st.sampled_from(["12", "1e3", "north", 'a"b', "x\\y"]),
    st.lists(st.integers(), max_size=2), st.lists(st.integers(), min_size=1, max_size=1),
    st.dictionaries(st.sampled_from(["k", "age"]), st.integers(), max_size=1),
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_json_text_of_the_rows_gives_the_same_answer_as_looking_at_every_value(
    data: st.DataObject,
) -> None:
    """``check_columns(rows, text=body)``, where ``body`` is the JSON the rows were read from,
    answers exactly as without it: same problems, flags and columns (the text only spares the
    look at every number's type when it proves there is neither a boolean nor a string)."""
    signature = data.draw(st.sampled_from([PLAIN, PLAIN, SIGNATURE]))
    finite = st.one_of(st.none(), st.integers(-200, 10_000), st.floats(-1e4, 1e4))
    rows = [
        {
            k: data.draw(finite if k in ("age", "amount", "score") else values[k])
            for k in signature.names
        }
        for _ in range(data.draw(st.integers(1, 6)))
    ]
    odd, column = data.draw(tricky), data.draw(st.sampled_from(signature.names))
    mode = data.draw(st.sampled_from(["clean", "one", "column", "extra"]))
    if mode == "one":  # one odd value
        rows[data.draw(st.integers(0, len(rows) - 1))][column] = odd
    elif mode == "column":  # every row the same odd value in one column
        for r in rows:
            r[column] = odd
    elif mode == "extra":
        rows[0]["extra"] = odd
    body = json.dumps(rows if len(rows) > 1 else rows[0]).encode()
    parsed = json.loads(body)
    rows = parsed if isinstance(parsed, list) else [parsed]
    problems, flags, columns = signature.check_columns(rows, text=body)
    want_problems, want_flags, want_columns = signature.check_columns(rows)
    assert (problems, flags) == (want_problems, want_flags)
    assert (columns is None) == (want_columns is None)
    if columns is not None:
        pd.testing.assert_frame_equal(Columns.frame([columns]), Columns.frame([want_columns]))


def test_a_plain_json_body_of_rows_proves_its_numbers_and_a_string_among_them_does_not() -> None:
    good = {"age": 30, "amount": 10.5, "region": "north", "score": None, "note": "ok"}
    others = [(i, f) for i, f in enumerate(PLAIN.features) if f.expect != "number"]

    def columns_of(rows: list) -> list:
        return [(i, f, [r[f.name] for r in rows]) for i, f in others]

    rows = [good, {**good, "region": None}]
    assert _plain_numbers(json.dumps(rows).encode(), PLAIN.names, 2, columns_of(rows))
    rows = [good, {**good, "age": "30"}]  # a string where a number belongs
    assert not _plain_numbers(json.dumps(rows).encode(), PLAIN.names, 2, columns_of(rows))
    rows = [good, {**good, "score": True}]
    assert not _plain_numbers(json.dumps(rows).encode(), PLAIN.names, 2, columns_of(rows))
    problems, _, columns = PLAIN.check_columns(
        rows := [good, {**good, "age": [30]}], text=json.dumps(rows).encode()
    )
    assert columns is None and problems[0]["field"] == "age"
    listed = [
        {k: [v or 2.0] if k in ("age", "amount", "score") else v for k, v in good.items()}
    ] * 2
    problems, _, columns = PLAIN.check_columns(listed, text=json.dumps(listed).encode())
    assert columns is None and [p["field"] for p in problems[:3]] == ["age", "amount", "score"]

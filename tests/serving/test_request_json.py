"""A key twice in one object of a JSON request is refused (422 naming the key) on every JSON route
of a real ``pipeflow serve``, as the spec loader refuses duplicate YAML keys, instead of the last
value silently winning. The fast check that proves a body has none (counting colons, see
:func:`pipeflow.serving.jsonbody._unique_keys`) is exact: property-tested against bodies with
colons and ``\\u003a`` escapes inside strings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import PREDICT, sample_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.errors import BadRequest
from pipeflow.serving.jsonbody import _row_pairs, _unique_keys
from pipeflow.store.journal import loads


def _with_duplicate(obj: dict[str, Any], key: str, value: Any) -> str:
    """``obj`` as JSON text with ``key`` written a second time (first) before its own entry."""
    return "{" + json.dumps(key) + ": " + json.dumps(value) + ", " + json.dumps(obj)[1:]


def test_every_json_route_refuses_a_key_twice_naming_it(serve, tumours) -> None:
    s = serve("tumours@production")
    good = sample_rows(tumours, 1)[0]
    names = list(good)
    tensors = [
        {
            "name": n,
            "shape": [1],
            "datatype": "BYTES" if isinstance(good[n], str) else "FP64",
            "data": [good[n]],
        }
        for n in names
    ]
    cases = {
        PREDICT: ("[" + _with_duplicate(good, "mean_radius", 99.0) + "]", "mean_radius"),
        "/v1/models/tumours/feedback": (
            _with_duplicate({"id": "x-1", "outcome": "benign"}, "outcome", "malignant"),
            "outcome",
        ),
        "/v2/models/tumours/infer": (
            _with_duplicate({"id": "r-1", "inputs": tensors}, "id", "r-0"),
            "id",
        ),
        "/invocations": (
            _with_duplicate({"dataframe_records": [good]}, "dataframe_records", []),
            "dataframe_records",
        ),
    }
    headers = {"content-type": "application/json"}
    with s.client() as c:
        for route, (body, key) in cases.items():
            r = c.post(route, content=body, headers=headers)
            assert r.status_code == 422, (route, r.text)
            error = r.json()["error"]
            if route.startswith("/v2/"):  # the Open Inference Protocol's error: one string
                assert isinstance(error, str) and f"duplicate key '{key}'" in error, error
                continue
            assert error["type"] == "duplicate_key" and f"duplicate key '{key}'" in error["message"]
            assert error["fields"][0]["field"] == key
        # the same key in two different objects is fine, and so is an escape in a string
        escaped = json.dumps([good, good]).replace('"size_band"', '"\\u0073ize_band"')
        r = c.post(PREDICT, content=escaped, headers=headers)
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 2


_keys = st.text(alphabet='ab:\\"', max_size=3)
_scalars = st.one_of(st.integers(-5, 5), st.text(alphabet='x:\\"\u00e9', max_size=4))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_keys, inner), max_size=4),  # an object as pairs, keys may repeat
    ),
    max_leaves=12,
)


def _write(value: Any, escape_colons: bool) -> str:
    """JSON text of ``value``, where a list of pairs is an object written pair by pair (so a key
    can appear twice); colons in strings optionally written as ``\\u003a``."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        inner = ", ".join(
            f"{_write(k, escape_colons)}: {_write(v, escape_colons)}" for k, v in value
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_write(v, escape_colons) for v in value) + "]"
    text = json.dumps(value)
    return text.replace(":", "\\u003a") if escape_colons and isinstance(value, str) else text


def _repeats(value: Any) -> bool:
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        keys = [k for k, _ in value]
        return len(set(keys)) < len(keys) or any(_repeats(v) for _, v in value)
    return isinstance(value, list) and any(_repeats(v) for v in value)


@settings(max_examples=400, deadline=None)
@given(_values, st.booleans())
def test_the_fast_check_refuses_exactly_the_bodies_with_a_repeated_key(value, escape) -> None:
    refused_exactly_when_a_key_repeats(value, escape)


def refused_exactly_when_a_key_repeats(value: Any, escape: bool) -> None:
    body = _write(value, escape).encode()
    parsed = loads(body)
    if _repeats(value):
        with pytest.raises(BadRequest) as err:
            _unique_keys(body, parsed)
        assert err.value.status == 422 and err.value.kind == "duplicate_key"
    else:
        assert _unique_keys(body, parsed) == parsed


_row = st.lists(st.tuples(_keys, _values), max_size=4)  # an object as pairs, keys may repeat
_bodies = st.one_of(
    _row,
    st.lists(_row, max_size=4),  # an array of rows
    st.builds(lambda rows, extra: [("rows", rows), *extra], st.lists(_row, max_size=3),
              st.lists(st.tuples(_keys, _scalars), max_size=2)),  # {"rows": [...], ...}
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_bodies, st.booleans())
def test_the_row_count_shortcut_refuses_exactly_the_predict_bodies_with_a_repeated_key(
    value, escape
) -> None:
    """Predict-shaped bodies (a row, rows, ``{"rows": ...}``), where the check counts the rows'
    pairs instead of writing the body again (:func:`pipeflow.serving.jsonbody._row_pairs`)."""
    refused_exactly_when_a_key_repeats(value, escape)


def test_a_flat_body_of_rows_is_proved_free_of_repeats_by_its_row_count() -> None:
    rows = [{"a": 1.5, "b": "x", "c": None}, {"a": 2, "b": "y", "c": True}]
    body = json.dumps(rows).encode()
    assert _row_pairs(loads(body)) == body.count(b":") == 6
    assert _row_pairs(loads(json.dumps({"rows": rows, "explain": True}))) == 8
    assert _row_pairs([1, {"a": 1}]) == -1 and _row_pairs("text") == -1
    twice = b'[{"a": 1, "a": 2, "b": "x"}]'  # orjson keeps 2 pairs of the 3 written
    assert _row_pairs(loads(twice)) == 2 != twice.count(b":")
    with pytest.raises(BadRequest):
        _unique_keys(twice, loads(twice))

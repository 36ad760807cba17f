"""A native predict body decoded straight into columns (:mod:`pipeflow.serving.columnar`) is
answered, flagged and audited exactly as the general path (parse the JSON, check the rows) would:
property-tested body by body against the general path, and on a real ``pipeflow serve`` against
the same body sent with a leading space (which the decoder leaves to the general path). What the
decoder declines, the general path refuses or answers, naming the row and field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from helpers import PREDICT, sample_rows
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeflow.errors import BadRequest
from pipeflow.registry.signature import Signature
from pipeflow.serving.batcher import Pending, inputs_of
from pipeflow.serving.columnar import decode
from pipeflow.serving.jsonbody import parse_json
from pipeflow.serving.protocols.native import explain_option, rows_from_native
from pipeflow.store import journal
from pipeflow.store.journal import dumps

SIGNATURE = Signature.from_record(
    {
        "signature": {
            "features": [
                {"name": "a", "dtype": "float64"},
                {"name": "b count", "dtype": "int64"},  # a name that is no identifier
                {"name": "band", "dtype": "object", "role": "categorical"},
                {"name": "note", "dtype": "object", "role": "text"},
                {"name": "ok", "dtype": "bool"},
            ]
        },
        "reference": {
            "features": {
                "a": {"min": 0.0, "max": 10.0},
                "band": {"categories": ["x", "y", "a:b"]},
                "note": {"length": {"max": 4}},
            }
        },
    }
)
NAMES = SIGNATURE.names

numbers = st.one_of(
    st.floats(-20, 20),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([None, -0.0, 0, 1e39, 3.4e38, -3.5e38, 1e-320, math.nan, math.inf]),
)
strings = st.one_of(st.sampled_from([None, "x", "y", "z", "a:b", "", "  "]), st.text(max_size=8))
booleans = st.one_of(st.none(), st.booleans())
wild = {"a": numbers, "b count": numbers, "band": strings, "note": strings, "ok": booleans}
# values the decoder takes: finite numbers within float32's range, strings without a colon
tame_numbers = st.one_of(
    st.floats(-20, 20),
    st.integers(-(2**70), 2**70),
    st.floats(-3.4e38, 3.4e38),
    st.sampled_from([None, -0.0, 0, 1e-320, 2**53 + 1, 2**64 - 1]),
)
tame_strings = st.one_of(
    st.sampled_from([None, "x", "y", "z", "", "  "]),
    st.text(st.characters(exclude_characters=":", exclude_categories=["Cs"]), max_size=20),
)
tame = {
    "a": tame_numbers,
    "b count": tame_numbers,
    "band": tame_strings,
    "note": tame_strings,
    "ok": booleans,
}
odd = st.one_of(
    st.booleans(), st.text(max_size=3), st.integers(0, 3), st.lists(st.integers(), max_size=2)
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Bodies of rows, most of them clean, some with a value of another type, a field missing,
    extra or twice, keys in another order; written compactly or spaced; some not an array."""
    rows = []
    clean = draw(st.sampled_from([tame, tame, wild]))
    for _ in range(draw(st.integers(0, 6))):
        pairs = [(k, draw(clean[k])) for k in NAMES]
        if draw(st.integers(0, 9)) == 0:
            pairs[draw(st.integers(0, 4))] = (NAMES[draw(st.integers(0, 4))], draw(odd))
        if draw(st.integers(0, 19)) == 0:
            pairs.pop(draw(st.integers(0, len(pairs) - 1)))
        if draw(st.integers(0, 19)) == 0:
            pairs.append((draw(st.sampled_from([*NAMES, "extra"])), draw(wild["a"])))
        if draw(st.booleans()):
            pairs = draw(st.permutations(pairs))
        rows.append(pairs)
    comma, colon = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    text = (
        "["
        + comma.join(
            "{" + comma.join(json.dumps(k) + colon + json.dumps(v) for k, v in row) + "}"
            for row in rows
        )
        + "]"
    )
    shape = draw(st.integers(0, 19))
    if shape == 0:
        text = text[1:-1] if len(rows) == 1 else text  # one row, as an object
    elif shape == 1:
        text = text + " x"  # not JSON
    elif shape <= 5:  # the rows with the explain option, in either order, sometimes odd
        explain = draw(st.sampled_from(["false", "false", "true", "0", '"no"']))
        pairs = [f'"rows"{colon}{text}', f'"explain"{colon}{explain}']
        if draw(st.booleans()):
            pairs.reverse()
        if draw(st.integers(0, 9)) == 0:
            pairs.append(draw(st.sampled_from([f'"explain"{colon}false', f'"x"{colon}1'])))
        text = "{" + comma.join(pairs) + "}"
    return text.encode()


def _general(body: bytes, reject_unusual: bool) -> Any:
    """What the general path makes of ``body``: a refusal, or (rows, problems, flags, columns)."""
    try:
        payload, explain = explain_option({}, parse_json(body), NAMES)
        rows = rows_from_native(payload)
    except BadRequest as err:
        return err
    if explain:
        return "explained"  # the rows are read for more than the model: never decoded
    return (rows, *SIGNATURE.check_columns(rows, reject_unusual=reject_unusual, text=body))


def _same_matrix(one: Any, other: Any) -> bool:
    if one is None or other is None:
        return one is None and other is None
    return (
        one.shape == other.shape
        and (
            np.ascontiguousarray(one).view(np.uint64) == np.ascontiguousarray(other).view(np.uint64)
        ).all()
    )


def _audit(rows: Any, flags: list[list[str]], data: Any) -> bytes:
    """The inputs and flags of the request's audit record, as written."""
    item = Pending(rows, NAMES, data, flags, "", "v1", 0.0, None, False)  # type: ignore[arg-type]
    return dumps({"inputs": inputs_of(item), "flags": flags if any(flags) else None})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.booleans())
def test_a_decoded_body_gives_the_general_paths_columns_flags_and_audit_record(
    body: bytes, reject_unusual: bool
) -> None:
    general = _general(body, reject_unusual)
    decoded = decode(body, SIGNATURE, max_rows=5, reject_unusual=reject_unusual)
    event(
        "general path"
        if decoded is None
        else "decoded, {rows, explain}"
        if decoded.wrapped
        else "decoded"
    )
    if decoded is None:
        return
    assert isinstance(general, tuple), (body, general)
    rows, problems, flags, data = general
    assert problems == [] and data is not None
    assert len(decoded) == len(rows) and decoded.rows == rows
    assert decoded.flags == flags
    got = decoded.data
    assert (got.names, got.numeric, got.others) == (data.names, data.numeric, data.others)
    assert _same_matrix(got.matrix, data.matrix), (got.matrix, data.matrix)
    assert _audit(decoded, decoded.flags, got) == _audit(rows, flags, data)


def test_clean_bodies_are_decoded_with_their_nulls_flags_and_integers() -> None:
    rows = [
        {"a": 1, "b count": 2**60 + 1, "band": "x", "note": "hi", "ok": True},
        {"a": None, "b count": -0.0, "band": None, "note": None, "ok": None},
        {"a": 11.5, "b count": 3.0, "band": "q", "note": "  ", "ok": False},  # three flags
    ]
    for text in (json.dumps(rows), json.dumps(rows, separators=(",", ":"))):
        body = text.encode()
        decoded = decode(body, SIGNATURE, max_rows=5, reject_unusual=False)
        assert decoded is not None
        _, problems, flags, data = _general(body, False)
        assert decoded.flags == flags == [[], [], [
            "a: 11.5 is outside the training range",
            "band: category 'q' was not seen in training",
            "note: empty text",
        ]]  # fmt: skip
        assert _same_matrix(decoded.data.matrix, data.matrix)
        assert math.isnan(decoded.data.matrix[1, 0]) and decoded.data.matrix[0, 1] == 2**60
        assert _audit(decoded, decoded.flags, decoded.data) == _audit(rows, flags, data)
    # the same rows the decoder leaves to the general path: unusual under --reject-unusual,
    # more than --max-rows, a key twice, and anything that is not an array of exactly the rows
    body = json.dumps(rows).encode()
    assert decode(body, SIGNATURE, max_rows=5, reject_unusual=True) is None
    assert decode(body, SIGNATURE, max_rows=2, reject_unusual=False) is None
    assert decode(b"[" + body[2:], SIGNATURE, max_rows=5, reject_unusual=False) is None
    twice = body.replace(b'{"a": 1,', b'{"a": 1, "a": 1,', 1)
    assert decode(twice, SIGNATURE, max_rows=5, reject_unusual=False) is None
    assert isinstance(_general(twice, False), BadRequest)
    for other in (b" " + body, json.dumps(rows[0]).encode(), json.dumps({"rows": rows}).encode()):
        assert decode(other, SIGNATURE, max_rows=5, reject_unusual=False) is None
    # the rows with "explain": false are decoded as the bare array; true is for the general path
    wrapped = json.dumps({"rows": rows, "explain": False}).encode()
    decoded = decode(wrapped, SIGNATURE, max_rows=5, reject_unusual=False)
    assert decoded is not None and decoded.rows == rows and decoded.flags == flags
    assert _same_matrix(decoded.data.matrix, data.matrix)
    explained = json.dumps({"explain": True, "rows": rows}).encode()
    assert decode(explained, SIGNATURE, max_rows=5, reject_unusual=False) is None


def test_a_served_array_of_rows_is_answered_flagged_refused_and_audited_as_the_general_path(
    serve, tumours: Path, own_store: Path
) -> None:
    rows = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in sample_rows(tumours, 60)
    ]
    rows[3] = {**rows[3], "mean_radius": 1e4}  # far outside the training range: flagged
    rows[5] = {**rows[5], "mean_texture": None, "size_band": "enormous"}  # null, unseen category
    body = json.dumps(rows).encode()
    s = serve("tumours@production", store=own_store)
    headers = {"content-type": "application/json"}
    with s.client() as c:
        # the leading space: not an array to the decoder, which leaves it to the general path;
        # the rows with "explain": false are decoded as the bare array is
        wrapped = b'{"rows": ' + body + b', "explain": false}'
        answers = [
            c.post(PREDICT, content=b, headers=headers) for b in (body, b" " + body, wrapped)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
        fast, slow, rows_key = ([{k: v for k, v in p.items() if k != "id"}
                                 for p in a.json()["predictions"]] for a in answers)  # fmt: skip
        assert fast == slow == rows_key and len(fast) == 60
        assert "flags" in fast[3] and len(fast[5]["flags"]) == 1
        # what the decoder declines is refused by the general path, naming row and field
        bad = [dict(r) for r in rows]
        bad[12]["mean_area"] = "12"
        r = c.post(PREDICT, content=json.dumps(bad), headers=headers)
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0] == {
            "row": 12, "field": "mean_area", "expected": "a number", "got": "a string",
        }  # fmt: skip
        r = c.post(PREDICT, content=body.replace(b"NaN", b"x").replace(b"null", b"NaN", 1),
                   headers=headers)  # fmt: skip
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["expected"] == (
            "a finite number"
        )
    records = [r for _, r in journal.Follower(own_store / "audit", "predictions").new()]
    assert len(records) == 3
    same = ("rows", "model", "version", "route", "inputs", "output", "probabilities", "flags")
    first, second, third = ({k: r[k] for k in same} for r in records)
    assert first == second == third and first["inputs"]["mean_texture"][5] is None

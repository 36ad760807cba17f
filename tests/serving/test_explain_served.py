"""Explanations on a real `pipeflow serve` (the tumours model: a logistic regression behind
pipeflow's scaling and one-hot preprocessing): ``?explain=true``, ``"explain": true`` in the body
and a table body with ``?explain=true`` answer each row with contributions per input column that
add up to the served model's own margin; the request's audit record holds them and
``pipeflow lineage ID`` shows them; requests without explain answer exactly as before; a bad
value is a 422 naming the parameter."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from helpers import PREDICT, pipeflow, sample_rows

from pipeflow.governance.importance import final_estimator
from pipeflow.registry import Registry
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}


def margins(store: Path, rows: list[dict[str, Any]]) -> Any:
    """The production model's decision_function on ``rows``, computed here, not by the server."""
    model, record = Registry(ArtifactStore(str(store))).load_model("tumours", "production")
    features = [f["name"] for f in record["signature"]["features"]]
    prepare, estimator = final_estimator(model)
    frame = pd.DataFrame.from_records(rows, columns=features)
    return estimator.decision_function(prepare.transform(frame)), features, list(model.classes_)


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "predictions": [{**p, "id": None} for p in body["predictions"]]}


def test_explain_answers_audits_and_shows_contributions_that_add_up_to_the_margin(
    serve, tumours: Path, own_store: Path
) -> None:
    rows = sample_rows(tumours, 6)
    s = serve("tumours@production", store=own_store)
    with s.client() as c:
        plain = c.post(PREDICT, json=rows)
        again = c.post(PREDICT, json=rows)
        explained = c.post(f"{PREDICT}?explain=true", json=rows)
        one = c.post(PREDICT, json={**rows[0], "explain": True})
        several = c.post(PREDICT, json={"rows": rows[:2], "explain": True})
        sink = io.BytesIO()
        table = pa.Table.from_pylist(rows)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        arrow = c.post(f"{PREDICT}?explain=true", content=sink.getvalue(), headers=ARROW)
        bad = c.post(f"{PREDICT}?explain=maybe", json=rows)
        bad_body = c.post(PREDICT, json={**rows[0], "explain": "yes"})
        disagree = c.post(f"{PREDICT}?explain=false", json={**rows[0], "explain": True})
        document = c.get("/openapi.json").json()
    for r in (plain, again, explained, one, several, arrow):
        assert r.status_code == 200, r.text
    # without explain: the answer it always was, no explanation anywhere
    assert without_ids(plain.json()) == without_ids(again.json())
    assert all(set(p) == {"id", "prediction", "probabilities"} for p in plain.json()["predictions"])

    expected, features, classes = margins(own_store, rows)
    answered = explained.json()["predictions"]
    for p, margin in zip(answered, expected, strict=True):
        e = p["explanation"]
        assert (e["method"], e["output"], e["class"]) == ("linear", "margin", classes[1])
        assert list(e["contributions"]) == features  # one per input column, size_band included
        assert abs(e["base"] + sum(e["contributions"].values()) - margin) < 1e-6
    # the explanation is all that is added
    stripped = [{k: v for k, v in p.items() if k != "explanation"} for p in answered]
    assert without_ids({**explained.json(), "predictions": stripped}) == without_ids(plain.json())
    for body in (one.json(), several.json(), arrow.json()):
        for p, q in zip(body["predictions"], answered, strict=False):
            assert p["explanation"]["contributions"] == q["explanation"]["contributions"]
    assert len(several.json()["predictions"]) == 2 and len(arrow.json()["predictions"]) == 6

    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "explain"
    assert "query parameter 'explain': expected true or false, got 'maybe'" in bad.text
    assert (
        bad_body.status_code == 422 and bad_body.json()["error"]["fields"][0]["field"] == "explain"
    )
    assert disagree.status_code == 422 and "disagree" in disagree.text
    # the OpenAPI document says so too: the query parameter and the body with rows and explain
    operation = document["paths"]["/v1/models/{name}/predict"]["post"]
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == ["explain"]
    bodies = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert bodies[2]["required"] == ["rows", "explain"]

    # audited: the request's one record holds the explanations as columns; the plain one none
    raw = [
        json.loads(line)
        for segment in audit.segments(own_store / "audit", "predictions")
        for line in segment.lines()
    ]
    by_first = {r["id"]: r for r in raw}
    assert "explanation" not in by_first[plain.json()["predictions"][0]["id"]]
    record = by_first[answered[0]["id"]]["explanation"]
    assert record["method"] == "linear" and len(record["base"]) == 6
    assert record["contributions"]["mean_radius"] == [
        p["explanation"]["contributions"]["mean_radius"] for p in answered
    ]
    read = {r["id"]: r for r in audit.read(own_store / "audit", "predictions")}
    assert read[answered[3]["id"]]["explanation"] == answered[3]["explanation"]
    assert "explanation" not in read[plain.json()["predictions"][3]["id"]]

    # and shown with the prediction's lineage
    pid = answered[2]["id"]
    shown = pipeflow(["lineage", pid, "--store", str(own_store), "--json"], cwd=tumours)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["prediction"]["explanation"] == answered[2]["explanation"]
    text = pipeflow(["lineage", pid, "--store", str(own_store)], cwd=tumours)
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if "explanation" in x)
    assert f"explanation (linear, margin of class '{classes[1]}'): base " in line
    top = max(answered[2]["explanation"]["contributions"].items(), key=lambda kv: abs(kv[1]))
    assert f"; {top[0]} {top[1]:+.4g}" in line  # the largest contribution first
    assert np.isfinite(answered[2]["explanation"]["base"])


def test_a_model_that_cannot_be_explained_answers_422_naming_explain_and_still_predicts(
    serve, tumours: Path, own_store: Path
) -> None:
    """A forest (no exact method) registered without a training profile: the kernel method
    has no background to draw from."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    registry = Registry(ArtifactStore(str(own_store)))
    first = registry.version("tumours", 1)
    features = [f["name"] for f in first["signature"]["features"]]
    frame = pd.read_csv(tumours / "data.csv")
    forest = make_pipeline(
        make_column_transformer(
            ("passthrough", [f for f in features if f != "size_band"]),
            (OneHotEncoder(handle_unknown="ignore"), ["size_band"]),
        ),
        RandomForestClassifier(10, random_state=0),
    ).fit(frame[features], frame["diagnosis"])
    version = registry.register(
        "tumours", registry.store.save(forest, "model"), signature=first["signature"]
    )["version"]
    s = serve(f"tumours@{version}", store=own_store)
    rows = sample_rows(tumours, 2)
    with s.client() as c:
        refused = c.post(f"{PREDICT}?explain=true", json=rows)
        refused_again = c.post(PREDICT, json={"rows": rows, "explain": True})
        plain = c.post(PREDICT, json=rows)
    assert refused.status_code == refused_again.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["fields"][0]["field"] == "explain"
    assert (
        f"tumours@{version}: RandomForestClassifier has no exact explanation method"
        in (error["message"])
    )
    assert "no training profile" in error["message"]
    assert plain.status_code == 200 and len(plain.json()["predictions"]) == 2
    ids = {r["id"] for r in audit.read(own_store / "audit", "predictions")}
    assert {p["id"] for p in plain.json()["predictions"]} <= ids  # nothing refused was audited
    assert len(ids) == 2

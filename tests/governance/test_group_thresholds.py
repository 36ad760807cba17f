"""Bias mitigation by per-group decision thresholds, end to end: a real pipeline chooses them on
generated loans whose ``south`` group has a shifted score distribution, the registry records them,
and every place the version predicts applies them (a real ``pipeflow serve``, ``pipeflow predict``,
the ``predict`` stage); the card and ``models show`` give the before/after numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error, pipeflow, pipeflow_ok, start_server

from pipeflow.governance import bias_metrics
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

LIMIT = 0.1
PIPELINE = """\
pipeline: loans
stages:
  raw:
    type: ingest
    with: {path: data.csv}
  split:
    type: split
    inputs: {data: raw}
    with: {method: stratified, by: approved, test_size: 0.5, seed: 7}
  model:
    type: train
    inputs: {train: split.train}
    with:
      estimator: sklearn.linear_model.LogisticRegression
      target: approved
      features: [income, debt]       # region is not a feature: requests carry it for the threshold
  scores:
    type: evaluate
    inputs: {model: model, data: split.test}
    with: {target: approved}
  promote:
    type: promote
    inputs: {model: model, metrics: scores, info: model.info, data: split.test}
    with:
      name: loans
      alias: production
      importance: false
      bias:
        sensitive: region
        max: {demographic_parity_difference: LIMIT}
        mitigate: {method: group_thresholds, objective: demographic_parity, validation: 0.5}
""".replace("LIMIT", str(LIMIT))


def loans(n: int, seed: int) -> pd.DataFrame:
    """Loan applications: the south's incomes are lower, so its scores are shifted down and the
    model approves it far less often (a real demographic disparity)."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south"], n, p=[0.6, 0.4])
    income = rng.normal(np.where(region == "north", 55.0, 40.0), 10.0).round(2)
    debt = rng.normal(20.0, 5.0, n).round(2)
    logit = 0.15 * (income - 47.0) - 0.1 * (debt - 20.0)
    approved = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"income": income, "debt": debt, "region": region, "approved": approved})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("loans")
    loans(3000, seed=1).to_csv(where / "data.csv", index=False)
    (where / "pipeline.yaml").write_text(PIPELINE)
    pipeflow_ok(["run", "pipeline.yaml", "--quiet"], cwd=where, timeout=300)
    return where


@pytest.fixture(scope="module")
def version(project: Path) -> tuple[Any, dict[str, Any]]:
    return Registry(ArtifactStore(str(project / ".pipeflow"))).servable("loans", "production")


def by_hand(model: Any, record: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """The mitigated labels computed here from predict_proba and the recorded thresholds."""
    m = record["mitigation"]
    proba = model.predict_proba(rows[["income", "debt"]])
    classes = [str(c) for c in model.classes_]
    yes = proba[:, classes.index(m["positive"])]
    cut = np.asarray([m["thresholds"].get(g, m["default"]) for g in rows["region"]])
    other = classes[1 - classes.index(m["positive"])]
    return np.where(yes >= cut, m["positive"], other)


def fresh_rows(n: int = 4000) -> pd.DataFrame:
    """Applications from the same population the pipeline never saw."""
    return loans(n, seed=99)


def plain_and_mitigated(version: tuple[Any, dict[str, Any]], rows: pd.DataFrame) -> tuple:
    model, record = version
    return np.asarray(model.predict(rows[["income", "debt"]])), by_hand(model, record, rows)


def some_rows_the_thresholds_change(version: tuple[Any, dict[str, Any]]) -> pd.DataFrame:
    """Twelve fresh rows of both regions, half of them answered differently once mitigated."""
    rows = fresh_rows(400)
    plain, mitigated = plain_and_mitigated(version, rows)
    changed = rows[plain != mitigated].head(6)
    kept = rows[plain == mitigated].head(6)
    return pd.concat([changed, kept]).drop(columns=["approved"]).reset_index(drop=True)


def test_thresholds_bring_demographic_parity_under_the_limit_on_rows_that_did_not_choose_them(
    version,
) -> None:
    model, record = version
    m = record["mitigation"]
    assert m["method"] == "group_thresholds" and m["attribute"] == "region"
    assert m["positive"] == "yes" and m["met"] is True
    assert m["thresholds"]["south"] < m["thresholds"]["north"]  # the shifted group's is lower
    assert m["rows"]["validation"] + m["rows"]["held_out"] == 1500
    # the record's held-out numbers: far over the limit before, under it after
    assert m["before"]["demographic_parity_difference"] > 3 * LIMIT
    assert m["after"]["demographic_parity_difference"] < LIMIT
    # the bias gate judged the mitigated predictions, and passed
    assert record["bias"]["demographic_parity_difference"] == pytest.approx(
        m["after"]["demographic_parity_difference"]
    )
    assert [(g["kind"], g["passed"]) for g in record["gates"]] == [("bias", True)]
    # rows from the same population that nobody saw: thresholded here, by hand
    rows = fresh_rows()
    plain, mitigated = plain_and_mitigated(version, rows)
    before = bias_metrics(rows["approved"], plain, rows["region"], attribute="region")
    after = bias_metrics(rows["approved"], mitigated, rows["region"], attribute="region")
    assert before["demographic_parity_difference"] > 3 * LIMIT
    assert after["demographic_parity_difference"] < LIMIT
    accuracy = float(np.mean(mitigated == rows["approved"].to_numpy()))
    assert accuracy == pytest.approx(m["after"]["accuracy"], abs=0.05)


def test_every_served_route_answers_with_the_thresholds(project, version) -> None:
    rows = some_rows_the_thresholds_change(version)
    model, record = version
    expected = by_hand(model, record, rows).tolist()
    records = rows.to_dict(orient="records")
    s = start_server(project, "loans@production")
    try:
        with s.client() as c:
            native = c.post("/v1/models/loans/predict", json=records)
            assert native.status_code == 200, native.text
            assert [p["prediction"] for p in native.json()["predictions"]] == expected
            mlflow = c.post("/invocations", json={"dataframe_records": records})
            assert mlflow.status_code == 200, mlflow.text
            assert mlflow.json()["predictions"] == expected
            tensors = [
                {
                    "name": name,
                    "shape": [len(rows)],
                    "datatype": "BYTES" if name == "region" else "FP64",
                    "data": rows[name].tolist(),
                }
                for name in rows.columns
            ]
            v2 = c.post("/v2/models/loans/infer", json={"inputs": tensors})
            assert v2.status_code == 200, v2.text
            outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
            assert outputs["predict"] == expected
            # the attribute picks the threshold, so a row must carry it, and the description says so
            described = c.get("/v1/models/loans").json()["signature"]["features"]
            assert [f["name"] for f in described][-1:] == ["region"], described
            assert described[-1]["role"] == "sensitive"
            missing = c.post("/v1/models/loans/predict", json=[{"income": 50.0, "debt": 20.0}])
            assert missing.status_code == 422 and "region" in missing.text, missing.text
            # a group not seen when choosing gets the plain 0.5 boundary: the model's own answer
            west = rows.assign(region="west")
            unseen = c.post("/v1/models/loans/predict", json=west.to_dict(orient="records"))
            assert unseen.status_code == 200, unseen.text
            plain = model.predict(rows[["income", "debt"]]).tolist()
            assert [p["prediction"] for p in unseen.json()["predictions"]] == plain
            # an explanation covers the model's inputs, not the column that picks the threshold
            explained = c.post("/v1/models/loans/predict?explain=true", json=records[:2])
            assert explained.status_code == 200, explained.text
            margins = model.decision_function(rows[["income", "debt"]].head(2))
            for answer, margin in zip(explained.json()["predictions"], margins, strict=True):
                e = answer["explanation"]
                assert set(e["contributions"]) == {"income", "debt"}, e
                assert e["base"] + sum(e["contributions"].values()) == pytest.approx(margin)
    finally:
        s.stop()


def test_batch_predict_applies_the_thresholds_and_needs_the_group_column(
    project, version, tmp_path
) -> None:
    rows = some_rows_the_thresholds_change(version)
    model, record = version
    rows.to_csv(tmp_path / "in.csv", index=False)
    pipeflow_ok(
        ["predict", "loans@production", "-i", tmp_path / "in.csv", "-o", tmp_path / "out.csv"],
        cwd=project,
    )
    scored = pd.read_csv(tmp_path / "out.csv")
    assert scored["prediction"].tolist() == by_hand(model, record, rows).tolist()
    assert scored["proba_yes"].to_numpy() == pytest.approx(
        model.predict_proba(rows[["income", "debt"]])[:, 1]
    )
    rows.drop(columns=["region"]).to_csv(tmp_path / "no_region.csv", index=False)
    refused = pipeflow(
        ["predict", "loans@production", "-i", tmp_path / "no_region.csv", "-o", tmp_path / "x.csv"],
        cwd=project,
    )
    assert refused.returncode != 0
    error = one_line_error(refused.stderr)
    assert "region" in error and "threshold" in error, error
    assert not (tmp_path / "x.csv").exists()


def test_the_predict_stage_applies_the_thresholds(project, version) -> None:
    rows = some_rows_the_thresholds_change(version)
    model, record = version
    rows.to_csv(project / "incoming.csv", index=False)
    (project / "score.yaml").write_text(
        "pipeline: loans-scoring\n"
        "stages:\n"
        "  incoming: {type: ingest, with: {path: incoming.csv}}\n"
        "  scored: {type: predict, inputs: {data: incoming}, with: {model: loans@production}}\n"
    )
    pipeflow_ok(["run", "score.yaml", "--quiet"], cwd=project, timeout=300)
    out = pipeflow_ok(
        [
            "runs",
            "output",
            "latest",
            "scored.predictions",
            "--format",
            "json",
            "--spec",
            "score.yaml",
        ],
        cwd=project,
    )
    predicted = [r["prediction"] for r in json.loads(out.stdout)]
    assert predicted == by_hand(model, record, rows).tolist()


def test_the_card_and_models_show_give_the_numbers_before_and_after(project, version) -> None:
    from pipeflow.governance import render_card

    _, record = version
    m = record["mitigation"]
    markdown, html = render_card(record)
    section = markdown.split("## Bias mitigation", 1)[1].split("\n## ", 1)[0]
    assert "| north |" in section and "| south |" in section
    dp = next(line for line in section.splitlines() if "demographic_parity_difference" in line)
    assert f"{m['before']['demographic_parity_difference']:.4g}"[:4] in dp
    assert f"{m['after']['demographic_parity_difference']:.4g}"[:4] in dp
    assert b"Bias mitigation" in html
    shown = pipeflow_ok(["models", "show", "loans"], cwd=project)
    assert "bias mitigation" in shown.stdout and "south" in shown.stdout
    as_json = json.loads(pipeflow_ok(["models", "show", "loans", "--json"], cwd=project).stdout)
    assert as_json["versions"][0]["mitigation"]["thresholds"] == m["thresholds"]


def test_mitigation_refuses_what_is_not_a_binary_classifier_naming_the_field() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from pipeflow.governance import mitigate

    rows = loans(300, seed=3)
    X, groups = rows[["income", "debt"]], rows["region"].to_numpy()
    three = np.where(rows["income"] > 55, "high", np.where(rows["income"] > 40, "mid", "low"))
    common = {"attribute": "region", "objective": "demographic_parity", "validation": 0.5}
    common |= {"tolerance": 0.02, "min_rows": 10}
    with pytest.raises(
        ValueError,
        match=r"^bias\.mitigate: .*binary classifier; this model has 3 classes \(high, low, mid\)",
    ):
        mitigate(LogisticRegression().fit(X, three), X, three, groups, **common)
    with pytest.raises(
        ValueError, match=r"^bias\.mitigate: .*binary classifier; this model is a regressor"
    ):
        mitigate(LinearRegression().fit(X, rows["debt"]), X, rows["debt"], groups, **common)
    binary = LogisticRegression().fit(X, rows["approved"])
    with pytest.raises(
        ValueError,
        match=r"^bias\.mitigate\.positive: 'maybe' is not a class of the model \(classes: no, yes\)",
    ):
        mitigate(binary, X, rows["approved"], groups, positive="maybe", **common)
    with pytest.raises(ValueError, match=r"^bias\.mitigate\.validation: .* both need rows"):
        mitigate(binary, X.head(1), rows["approved"].head(1), groups[:1], **common)


@pytest.mark.parametrize(
    ("mitigate", "field", "expected"),
    [
        (
            "{method: group_thresholds, objective: parity}",
            "with.bias.mitigate.objective",
            "'demographic_parity'",
        ),
        (
            "{method: group_thresholds, validation: 1.5}",
            "with.bias.mitigate.validation",
            "less than 1",
        ),
        ("{method: reweighing}", "with.bias.mitigate.method", "'group_thresholds'"),
        (
            "{objective: demographic_parity}",
            "with.bias.mitigate.method",
            "missing required key 'method'",
        ),
    ],
)
def test_bad_mitigation_declarations_name_the_file_line_and_field(
    tmp_path, mitigate, field, expected
) -> None:
    spec = PIPELINE.replace(
        "{method: group_thresholds, objective: demographic_parity, validation: 0.5}", mitigate
    )
    (tmp_path / "pipeline.yaml").write_text(spec)
    checked = pipeflow(["check", "pipeline.yaml"], cwd=tmp_path)
    assert checked.returncode == 2
    error = one_line_error(checked.stderr)
    assert error.startswith("error: pipeline.yaml:31:") and f"field '{field}'" in error, error
    assert expected in error, error


@pytest.mark.parametrize("fmt", ["onnx", "mlflow"])
def test_exports_that_would_drop_the_thresholds_are_refused(project, tmp_path, fmt) -> None:
    refused = pipeflow(
        ["models", "export", "loans@production", "--format", fmt, "--output", tmp_path / "out"],
        cwd=project,
    )
    assert refused.returncode == 2
    error = one_line_error(refused.stderr)
    assert "per-group decision thresholds" in error and "'region'" in error, error
    assert not (tmp_path / "out").exists()


def tpr_range(y: Any, predicted: Any, groups: Any, positive: str = "yes") -> float:
    rates = [
        float(np.mean(predicted[(groups == g) & (y == positive)] == positive))
        for g in np.unique(groups)
    ]
    return max(rates) - min(rates)


@pytest.mark.parametrize("objective", ["true_positive_rate_parity", "equalized_odds"])
def test_the_tpr_objectives_narrow_their_own_difference_and_are_deterministic(objective) -> None:
    from sklearn.linear_model import LogisticRegression

    from pipeflow.governance import GroupThresholds, mitigate

    train, evaluation, fresh = loans(3000, seed=4), loans(3000, seed=5), loans(4000, seed=6)
    features = ["income", "debt"]
    model = LogisticRegression().fit(train[features], train["approved"])
    args = (model, evaluation[features], evaluation["approved"], evaluation["region"].to_numpy())
    kw = {"attribute": "region", "objective": objective, "validation": 0.5}
    kw |= {"tolerance": 0.02, "min_rows": 30}
    bias, record = mitigate(*args, **kw)
    assert mitigate(*args, **kw) == (bias, record)  # same rows, same seed: same thresholds
    measured = "equalized_odds_difference"
    assert record["after"][measured] < record["before"][measured] / 2
    thresholds = GroupThresholds.from_record({"mitigation": record})
    assert thresholds is not None
    y, groups = fresh["approved"].to_numpy(), fresh["region"].to_numpy()
    plain = model.predict(fresh[features])
    mitigated = thresholds.apply(model.predict_proba(fresh[features]), model.classes_, groups)
    assert tpr_range(y, mitigated, groups) < tpr_range(y, plain, groups) / 2


def test_a_mitigated_canary_beside_a_plain_version_checks_rows_against_its_own_signature(
    project, version, tmp_path
) -> None:
    """The plain model serves, the mitigated one is its canary: rows carrying the group are
    answered by each version its own way; rows without it are refused only by the canary, which
    needs it, naming the field (not a failed answer)."""
    where = tmp_path / "loans"
    shutil.copytree(project, where)
    mitigate = next(line for line in PIPELINE.splitlines(keepends=True) if "mitigate:" in line)
    plain_spec = PIPELINE.replace(mitigate, "")
    (where / "plain.yaml").write_text(plain_spec)
    run = pipeflow(["run", "plain.yaml", "--quiet"], cwd=where, timeout=300)
    assert "loans@2 registered but not promoted" in run.stdout + run.stderr  # fails its bias gate
    model, record = version
    rows = some_rows_the_thresholds_change(version)
    mitigated, plain = (
        by_hand(model, record, rows).tolist(),
        model.predict(rows[["income", "debt"]]).tolist(),
    )
    s = start_server(where, "loans@2", "--canary", "loans@production", "--weight", "0.5",
                     "--route-by", "header:X-User")  # fmt: skip
    answered: dict[int, str] = {}
    try:
        with s.client() as c:
            for user in (f"u{k}" for k in range(40)):
                r = c.post("/v1/models/loans/predict", json=rows.to_dict(orient="records"),
                           headers={"X-User": user})  # fmt: skip
                assert r.status_code == 200, r.text
                body = r.json()
                got = [p["prediction"] for p in body["predictions"]]
                assert got == (mitigated if body["version"] == 1 else plain), body["version"]
                bare = c.post("/v1/models/loans/predict", json=[{"income": 50.0, "debt": 20.0}],
                              headers={"X-User": user})  # fmt: skip
                if body["version"] == 1:
                    assert bare.status_code == 422 and "region" in bare.text, bare.text
                else:
                    assert bare.status_code == 200, bare.text
                answered[body["version"]] = user
    finally:
        s.stop()
    assert set(answered) == {1, 2}  # 40 users at 50 %: both versions answered

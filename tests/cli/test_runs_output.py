"""`pipeflow runs output`: read a stage's output of a recorded run back from the store."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest
from helpers import pipeflow, pipeflow_ok

from pipeflow.testing import write_spec

SPEC = """
    pipeline: out
    stages:
      rows:
        type: python
        with: {function: "steps:rows", outputs: {good: table, bad: table}}
      summary:
        type: python
        inputs: {good: rows.good}
        with: {function: "steps:summary"}
"""
STEPS = """
    import pandas as pd
    def rows():
        return {"good": pd.DataFrame({"id": range(30), "v": [i * 1.5 for i in range(30)]}),
                "bad": pd.DataFrame({"id": [99], "reason": ["negative amount"]})}
    def summary(good):
        return {"n": len(good), "total": float(good["v"].sum())}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = write_spec(tmp_path_factory.mktemp("out"), SPEC, {"steps.py": STEPS})
    pipeflow_ok(["run", spec])
    return spec


def _out(spec: Path, *args: str) -> subprocess.CompletedProcess:
    return pipeflow(["runs", "output", *args, "--spec", spec], timeout=60)


def test_json_output_round_trips(project: Path) -> None:
    done = _out(project, "latest", "summary")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"n": 30, "total": sum(i * 1.5 for i in range(30))}


def test_table_as_csv_has_every_row(project: Path) -> None:
    done = _out(project, "latest", "rows.good", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 30 and rows[29] == {"id": "29", "v": "43.5"}


def test_table_as_text_is_truncated_and_says_its_size(project: Path) -> None:
    done = _out(project, "latest", "rows.good", "--rows", "4")
    assert done.returncode == 0, done.stderr
    assert "[30 rows x 2 columns]" in done.stdout and "..." in done.stdout


@pytest.mark.parametrize(
    "target, message",
    [
        ("rows", "stage 'rows' has several outputs (bad, good): write 'rows.<port>'"),
        ("rows.ugly", "has no output 'ugly'"),
        ("nope", "no outputs of stage 'nope'"),
    ],
)
def test_bad_targets_are_usage_errors(project: Path, target: str, message: str) -> None:
    done = _out(project, "latest", target)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_compare_shows_params_and_metrics_side_by_side(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: cmp
        params: {k: 2}
        stages:
          score:
            type: python
            with: {function: "steps:score", kwargs: {k: "${params.k}"}, outputs: {out: metrics}}
        """,
        {
            "steps.py": "def score(k):\n    return {'accuracy': 1 - 1 / (k + 1), 'detail': {'n': k * 10}}\n"
        },
    )
    for k in (2, 4):
        pipeflow_ok(["run", spec, "--set", f"params.k={k}"])
    from pipeflow import load, open_store

    store, db = open_store(load(spec))
    ids = [r["id"] for r in db.runs(limit=2)][::-1]
    db.close()
    done = pipeflow(["runs", "compare", *ids, "--spec", spec, "--json"], timeout=60)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert rows["param k"] == [2, 4]
    assert rows["score.out.accuracy"] == pytest.approx([2 / 3, 4 / 5])
    assert rows["score.out.detail.n"] == [20, 40]
    one = pipeflow(["runs", "compare", ids[0], "--spec", spec], timeout=60)
    assert one.returncode == 2 and "at least two runs" in one.stderr


def test_a_bare_stage_name_means_the_output_a_spec_input_would_take(tmp_path: Path) -> None:
    """``model`` alone is train's ``model`` output (its default), as in ``inputs: {m: model}``,
    though train also has ``info``."""
    spec = write_spec(
        tmp_path,
        """
        pipeline: bare
        stages:
          rows:
            type: python
            with: {function: "steps:rows", outputs: {good: table, bad: table}}
          model:
            type: train
            inputs: {train: rows.good}
            with: {estimator: sklearn.linear_model.LinearRegression, target: v}
        """,
        {"steps.py": STEPS},
    )
    pipeflow_ok(["run", spec])
    done = _out(spec, "latest", "model")
    assert done.returncode == 0, done.stderr
    assert "LinearRegression" in done.stdout
    info = _out(spec, "latest", "model.info")
    assert info.returncode == 0 and json.loads(info.stdout)["target"] == "v"


OTHER = """
pipeline: other
stages:
  summary:
    type: python
    with: {function: "steps:rows", outputs: {good: table, bad: table}}
"""


def test_latest_with_a_spec_means_that_pipelines_latest_run_in_a_shared_store(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    other = tmp_path / "other.yaml"  # beside it: the same store and metadata database
    other.write_text(OTHER)
    pipeflow_ok(["run", spec])
    pipeflow_ok(["run", other])  # the store's newest run is now the other pipeline's

    done = _out(spec, "latest", "summary")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 30
    shown = pipeflow(["runs", "show", "last", "--spec", spec, "--json"], timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["pipeline"] == "out"
    theirs = pipeflow(["runs", "show", "latest", "--spec", other, "--json"], timeout=60)
    assert json.loads(theirs.stdout)["run"]["pipeline"] == "other"

"""``pipeflow check`` finds what would fail minutes into a run, without running anything: a
missing function of a ``python`` stage, a missing input file, an estimator class or parameter that
does not exist, a gate on a metric the evaluation never produces. Each is one located line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import pipeflow

from pipeflow.testing import write_spec

STEPS = """
    import os

    def load():
        return {"x": [1, 2, 3]}

    def train_model(data):
        return data

    if os.environ.get("NEVER"):
        def rare():
            pass
"""

ML = """
    pipeline: ml
    stages:
      data: {type: ingest, with: {path: rows.csv}}
      split: {type: split, inputs: {data: data}, with: {test_size: 0.25, seed: 1}}
      model:
        type: train
        inputs: {train: split.train}
        with:
          estimator: sklearn.linear_model.LogisticRegression
          params: {C: 1.0, max_iter: 200}
          target: y
      scores:
        type: evaluate
        inputs: {model: model, data: split.test}
        with: {target: y, min: {accuracy: 0.5}}
      promote:
        type: promote
        inputs: {model: model, metrics: scores.metrics}
        with:
          name: m
          alias: production
          gates: {accuracy: ">= 0.5", per_class.a.recall: ">= 0.1"}
          champion: {metric: f1_macro}
"""


def _check(spec: Path) -> tuple[int, list[str]]:
    proc = pipeflow(["check", spec])
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.fixture
def ml(tmp_path: Path) -> Path:
    spec = write_spec(tmp_path, ML)
    (tmp_path / "rows.csv").write_text("a,y\n1,p\n2,q\n")
    return spec


def test_a_sound_spec_still_checks_ok(ml: Path) -> None:
    proc = pipeflow(["check", ml])
    assert proc.returncode == 0 and proc.stdout.startswith("ok: "), proc.stderr


def test_a_function_the_module_does_not_define_is_named_with_its_line(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: p
        stages:
          a: {type: python, with: {function: "steps:load"}}
          b: {type: python, inputs: {data: a}, with: {function: "steps:trian_model"}}
          c: {type: python, with: {function: "steps:rare"}}
          d: {type: python, with: {function: "stepz:load"}}
          e: {type: python, with: {function: "os:getcwd"}}
        """,
        {"steps.py": STEPS},
    )
    code, lines = _check(spec)
    assert code == 2
    (b,) = [ln for ln in lines if "stage 'b'" in ln]
    assert f"{spec}:5:" in b
    assert "has no function 'trian_model'; did you mean 'train_model'?" in b
    (d,) = [ln for ln in lines if "stage 'd'" in ln]
    assert "no module 'stepz'" in d and f"{spec}:7:" in d
    assert not [
        ln for ln in lines if "stage 'c'" in ln or "stage 'e'" in ln
    ]  # defined, or installed


def test_a_missing_input_file_is_named(ml: Path) -> None:
    (ml.parent / "rows.csv").unlink()
    code, lines = _check(ml)
    assert code == 2 and any(
        f"stage 'data', field 'path': no file at {ml.parent / 'rows.csv'}" in ln for ln in lines
    ), lines


def test_a_misspelt_estimator_class_or_parameter_is_named(ml: Path) -> None:
    text = ml.read_text()
    ml.write_text(text.replace("LogisticRegression", "LogisticRegresion"))
    code, lines = _check(ml)
    assert code == 2
    assert any(
        "field 'estimator': sklearn.linear_model has no estimator class 'LogisticRegresion'; "
        "did you mean 'LogisticRegression'?" in ln
        for ln in lines
    ), lines
    ml.write_text(text.replace("max_iter: 200", "max_iters: 200"))
    code, lines = _check(ml)
    assert code == 2
    (line,) = lines
    assert "field 'params.max_iters': LogisticRegression has no parameter 'max_iters'" in line
    assert "did you mean 'max_iter'?" in line and line.startswith(f"error: {ml}:11:")


def test_gates_on_metrics_the_evaluation_never_produces_are_named(ml: Path) -> None:
    text = ml.read_text()
    ml.write_text(
        text.replace('accuracy: ">= 0.5"', 'acuracy: ">= 0.5"')
        .replace("metric: f1_macro", "metric: f1")
        .replace("min: {accuracy: 0.5}", "min: {acc: 0.5}")
    )
    code, lines = _check(ml)
    assert code == 2
    text = "\n".join(lines)
    assert "field 'gates.acuracy': metric 'acuracy' is not one stage 'scores' produces" in text
    assert "did you mean 'accuracy'?" in text
    assert "field 'champion.metric': metric 'f1' is not one" in text
    assert (
        "stage 'scores', field 'min.acc': metric 'acc' is not one an evaluate stage produces"
        in text
    )
    assert "per_class" not in text.split("produces")[0]  # a dotted path into a known metric is fine


def test_check_of_python_stages_still_imports_no_ml_library(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: p
        stages:
          a: {type: python, with: {function: "steps:load"}}
        """,
        {"steps.py": STEPS},
    )
    code = (
        f"import sys; from pipeflow.cli import main; main(['check', {str(spec)!r}]);"
        " print(sorted(m for m in ('sklearn', 'pandas', 'xgboost', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr

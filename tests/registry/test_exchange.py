"""``pipeflow models export`` (MLflow, ONNX) and ``pipeflow models import`` (MLflow), for real:
the MLflow directory is loaded and served by MLflow itself in its own venv (skipped, with the
reason, where none is found), ONNX files are run by onnxruntime."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import free_port, kill_group, pipeflow

from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

HERE = Path(__file__).resolve().parents[2]


def mlflow_python() -> str | None:
    """A Python that imports mlflow: ``$PIPEFLOW_PEERS_PYTHON``, else ``benchmarks/peers/.venv``
    (MLflow's pins conflict with pipeflow's environment, so it lives in a venv of its own)."""
    for candidate in (
        os.environ.get("PIPEFLOW_PEERS_PYTHON"),
        str(HERE / "benchmarks" / "peers" / ".venv" / "bin" / "python"),
    ):
        if candidate and Path(candidate).exists():
            done = subprocess.run([candidate, "-c", "import mlflow"], capture_output=True)
            if done.returncode == 0:
                return candidate
    return None


MLFLOW_ENV = {
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",  # MLflow 3 asks this of skops models too
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}
needs_mlflow = pytest.mark.skipif(
    mlflow_python() is None,
    reason="no Python with mlflow: set $PIPEFLOW_PEERS_PYTHON or create benchmarks/peers/.venv "
    "(python -m venv; pip install mlflow scikit-learn skops)",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    return tumours_v1(tmp_path_factory.mktemp("exchange") / "tumours")


@pytest.fixture(scope="module")
def exported(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mlflow") / "tumours"
    done = pipeflow(
        ["models", "export", "tumours@production", "--format", "mlflow", "-o", out], cwd=project
    )
    assert done.returncode == 0, done.stderr
    return out


def rows(project: Path, n: int = 40) -> pd.DataFrame:
    return pd.read_csv(project / "data.csv").drop(columns=["diagnosis"]).head(n)


def registry(project: Path) -> Registry:
    return Registry(ArtifactStore(str(project / ".pipeflow")))


def test_mlflow_export_writes_the_registered_file_and_a_column_signature(
    project: Path, exported: Path
) -> None:
    meta = yaml.safe_load((exported / "MLmodel").read_text())
    sk = meta["flavors"]["sklearn"]
    assert sk["serialization_format"] == "skops" and sk["pickled_model"] == "model.skops"
    assert meta["flavors"]["python_function"]["loader_module"] == "mlflow.sklearn"
    record = registry(project).resolve("tumours", "production")
    digest = hashlib.sha256((exported / "model.skops").read_bytes()).hexdigest()
    assert digest == record["model"]["digest"]
    assert sk["skops_trusted_types"] == sorted(record["trusted_types"])
    inputs = json.loads(meta["signature"]["inputs"])
    assert {"type": "string", "name": "size_band", "required": True} in inputs
    assert {"type": "double", "name": "mean_radius", "required": True} in inputs
    assert (exported / "code" / "pipeflow" / "models.py").is_file()  # as_strings, for MLflow
    assert "scikit-learn==" in (exported / "requirements.txt").read_text()


@needs_mlflow
def test_mlflow_loads_and_serves_the_export_with_pipeflows_predictions(
    project: Path, exported: Path, tmp_path: Path
) -> None:
    import httpx

    python = mlflow_python()
    assert python is not None
    sample = rows(project)
    sample.to_csv(tmp_path / "rows.csv", index=False)
    model, _ = registry(project).load_model("tumours", "production")
    expected = [str(v) for v in model.predict(sample)]
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(json.dumps([str(v) for v in m.predict(pd.read_csv(sys.argv[2]))]))\n"
    )
    # MLflow's environment alone: no pipeflow on the path (the export ships pipeflow.models)
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin", "HOME": str(tmp_path), **MLFLOW_ENV}
    done = subprocess.run(
        [python, "-c", script, str(exported), str(tmp_path / "rows.csv")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [python, "-m", "mlflow", "models", "serve", "-m", str(exported), "--env-manager",
         "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        body = {"dataframe_split": json.loads(sample.to_json(orient="split", index=False))}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert [str(v) for v in answer.json()["predictions"]] == expected
    finally:
        kill_group(proc)


def test_export_then_import_gives_the_same_model_and_records_where_it_came_from(
    project: Path, exported: Path
) -> None:
    done = pipeflow(
        ["models", "import", exported, "--name", "tumours-mlflow", "--alias", "staging"],
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    assert "tumours-mlflow@staging -> v1" in done.stdout
    reg = registry(project)
    imported, record = reg.load_model("tumours-mlflow", "staging")
    original, source = reg.load_model("tumours", "production")
    sample = rows(project)
    assert (imported.predict(sample) == original.predict(sample)).all()
    assert np.array_equal(imported.predict_proba(sample), original.predict_proba(sample))
    assert record["signature"]["classes"] == ["benign", "malignant"]
    assert [f["name"] for f in record["signature"]["features"]] == [
        f["name"] for f in source["signature"]["features"]
    ]
    files = record["imported"]["files"]
    assert files["model.skops"] == hashlib.sha256((exported / "MLmodel").parent.joinpath(
        "model.skops").read_bytes()).hexdigest()  # fmt: skip
    assert "MLmodel" in files and record["imported"]["from"] == str(exported.resolve())
    lineage = pipeflow(["lineage", "tumours-mlflow@1"], cwd=project)
    assert lineage.returncode == 0 and f"imported from {exported.resolve()}" in lineage.stdout


def new_store(where: Path) -> Path:
    """An empty pipeflow store at ``where`` (``--store`` wants one that exists)."""
    ArtifactStore(str(where)).save(b"", "bytes")
    return where


def write_mlmodel(root: Path, flavors: dict, inputs: list | None = None) -> None:
    meta: dict = {"flavors": flavors, "run_id": "0123abcd"}
    if inputs is not None:
        meta["signature"] = {"inputs": json.dumps(inputs), "outputs": None}
    (root / "MLmodel").write_text(yaml.safe_dump(meta))


@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle"])
def test_a_pickled_sklearn_model_is_refused_naming_the_file(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.pkl").write_bytes(b"\x80\x04N.")  # pickle of None: never opened
    write_mlmodel(root, {"sklearn": {"pickled_model": "model.pkl", "serialization_format": fmt}})
    done = pipeflow(
        ["models", "import", root, "--name", "m", "--store", new_store(tmp_path / "store")]
    )
    assert done.returncode != 0
    assert f"refusing to import {root / 'model.pkl'}" in done.stderr
    assert f"serialization_format is '{fmt}'" in done.stderr and "runs code" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "store" / "registry" / "m").exists()


def test_a_custom_pyfunc_model_is_refused_as_cloudpickle(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    (root / "python_model.pkl").write_bytes(b"\x80\x04N.")
    write_mlmodel(root, {"python_function": {"python_model": "python_model.pkl",
                                             "loader_module": "mlflow.pyfunc.model"}})  # fmt: skip
    done = pipeflow(
        ["models", "import", root, "--name", "m", "--store", new_store(tmp_path / "store")]
    )
    assert done.returncode != 0
    assert f"refusing to import {root / 'python_model.pkl'}" in done.stderr
    assert "cloudpickle" in done.stderr


def test_a_skops_file_with_a_type_off_the_allow_list_is_refused_by_name(tmp_path: Path) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    root = tmp_path / "model"
    root.mkdir()
    (root / "model.skops").write_bytes(skops.io.dumps(FunctionTransformer(func=os.system)))
    write_mlmodel(
        root, {"sklearn": {"pickled_model": "model.skops", "serialization_format": "skops"}}
    )
    done = pipeflow(
        ["models", "import", root, "--name", "m", "--store", new_store(tmp_path / "store")]
    )
    assert done.returncode != 0
    assert "outside pipeflow's allow-list" in done.stderr
    assert "system" in done.stderr.split("allow-list")[-1]


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_an_xgboost_model_directory_is_imported_with_its_signature(
    tmp_path: Path, fmt: str
) -> None:
    import xgboost

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X.a - X.c > 0).astype(int)
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    root = tmp_path / "model"
    root.mkdir()
    model.save_model(str(root / f"model.{fmt}"))
    inputs = [{"type": "double", "name": n, "required": True} for n in "abc"]
    write_mlmodel(root, {"xgboost": {"data": f"model.{fmt}", "model_format": fmt,
                                     "model_class": "xgboost.sklearn.XGBClassifier"}},
                  inputs)  # fmt: skip
    store = new_store(tmp_path / "store")
    done = pipeflow(["models", "import", root, "--name", "xgb", "--store", store])
    assert done.returncode == 0, done.stderr
    loaded, record = Registry(ArtifactStore(str(store))).load_model("xgb")
    assert np.allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=0, atol=1e-7)
    assert record["signature"]["features"] == [
        {"name": n, "dtype": "float64", "role": "numeric"} for n in "abc"
    ]
    assert record["imported"]["flavour"] == "xgboost"
    assert record["imported"]["run_id"] == "0123abcd"


# ------------------------------------------------------------------------------------ ONNX


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_onnx = pytest.mark.skipif(
    not (_has("skl2onnx") and _has("onnxruntime") and _has("onnxmltools")),
    reason="skl2onnx, onnxruntime and onnxmltools are not installed (pip install 'pipeflow[onnx]')",
)


@needs_onnx
def test_onnx_export_is_checked_against_the_pipeline_on_held_out_rows(
    project: Path, tmp_path: Path
) -> None:
    import onnxruntime

    out = tmp_path / "onnx"
    done = pipeflow(
        ["models", "export", "tumours@production", "--format", "onnx", "-o", out], cwd=project
    )
    assert done.returncode == 0, done.stderr
    check = json.loads((out / "check.json").read_text())
    assert check["passed"] and check["source"] == "the evaluation table"
    assert check["labels_differing"] == 0 and check["max_probability_difference"] <= 1e-6
    # the file itself, run here: the same labels as the pipeline on rows it never saw in training
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    sample = rows(project)
    feeds = {
        name: sample[[name]].to_numpy(np.float32)
        if how == "float"
        else sample[[name]].astype(str).to_numpy(object)
        for name, how in check["inputs"].items()
    }
    labels = session.run(["label"], feeds)[0]
    model, _ = registry(project).load_model("tumours", "production")
    assert list(labels) == list(model.predict(sample))


def _register(store: Path, name: str, model: object, features: list[dict]) -> None:
    reg = Registry(ArtifactStore(str(store)))
    reg.register(name, reg.store.save(model, "model"), task="classification",
                 signature={"features": features, "classes": []})  # fmt: skip


@needs_onnx
def test_onnx_export_of_an_xgboost_pipeline_and_a_text_pipeline(tmp_path: Path) -> None:
    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeflow.models import NumericColumns, as_strings, flatten

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    trees = Pipeline([("prepare", NumericColumns(list("abcd"))),
                      ("model", xgboost.XGBClassifier(n_estimators=20, max_depth=3))])  # fmt: skip
    trees.fit(X, (X.a + X.b > 0).astype(int))
    T = pd.DataFrame({"t": ["good day", "bad day", "good night", None] * 30, "n": X.a[:120]})
    text = make_pipeline(FunctionTransformer(as_strings, feature_names_out="one-to-one"),
                         SimpleImputer(strategy="constant", fill_value=""),
                         FunctionTransformer(flatten, feature_names_out="one-to-one"),
                         TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True))  # fmt: skip
    words = Pipeline([
        ("prepare", ColumnTransformer([("text_t", text, ["t"]), ("numeric", "passthrough", ["n"])],
                                      sparse_threshold=1.0)),
        ("model", LogisticRegression()),
    ]).fit(T, ["p", "n", "p", "n"] * 30)  # fmt: skip
    store = tmp_path / "store"
    _register(store, "trees", trees, [{"name": c, "dtype": "float64", "role": "numeric"}
                                      for c in "abcd"])  # fmt: skip
    _register(store, "words", words, [{"name": "t", "dtype": "object", "role": "text"},
                                      {"name": "n", "dtype": "float64", "role": "numeric"}])  # fmt: skip
    X.iloc[200:].to_csv(tmp_path / "trees.csv", index=False)
    T.to_csv(tmp_path / "words.csv", index=False)
    for name in ("trees", "words"):
        out = tmp_path / name
        done = pipeflow(["models", "export", f"{name}@1", "--format", "onnx", "-o", out,
                         "--data", tmp_path / f"{name}.csv", "--store", store])  # fmt: skip
        assert done.returncode == 0, done.stderr
        check = json.loads((out / "check.json").read_text())
        assert check["passed"] and check["labels_differing"] == 0, check


@needs_onnx
def test_onnx_export_refuses_a_step_without_a_converter_by_name(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeflow.models import days_since_epoch

    frame = pd.DataFrame({"when": pd.date_range("2026-01-01", periods=30).astype(str)})
    model = Pipeline([("dates", FunctionTransformer(days_since_epoch)),
                      ("model", LinearRegression())]).fit(frame, np.arange(30.0))  # fmt: skip
    store = tmp_path / "store"
    _register(store, "days", model, [{"name": "when", "dtype": "object", "role": "categorical"}])
    frame.to_csv(tmp_path / "days.csv", index=False)
    done = pipeflow(["models", "export", "days@1", "--format", "onnx", "-o", tmp_path / "out",
                     "--data", tmp_path / "days.csv", "--store", store])  # fmt: skip
    assert done.returncode != 0
    assert "step 'dates' (FunctionTransformer (pipeflow.models.days_since_epoch))" in done.stderr
    assert "no ONNX converter" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "model.onnx").exists()

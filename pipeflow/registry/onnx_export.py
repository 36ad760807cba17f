"""``pipeflow models export --format onnx``: a version's pipeline as ONNX, its predictions checked.

The fitted pipeline is converted with skl2onnx (xgboost's estimators through onnxmltools'
converter), one ONNX input per feature, ``[N, 1]`` each: ``float`` for numbers (onnxruntime's
``Imputer`` has no double kernel, so numbers are float32 inside the graph), ``string`` for
categories and text. pipeflow's column helpers have ONNX equivalents by construction and are
rewritten on a copy before converting: ``as_strings`` and ``flatten`` (strings are strings in
ONNX) are dropped, the string imputer's missing value becomes ``""`` (ONNX strings have no NaN:
send a missing category as ``""``), and ``NumericColumns`` (a tree ensemble's numbers as they are)
becomes a single ``input`` of ``[N, n_features]`` floats in signature order. Any other step
skl2onnx cannot convert is refused, naming the step and its class.

The export is only kept as checked: onnxruntime scores the held-out rows (the version's
evaluation table in the store, else ``--data CSV``) and its labels must equal the pipeline's,
its probabilities (or regression values, relative to their size) within ``TOLERANCE``. The
result is written beside the model (``check.json``); a failed check leaves both files for
inspection and is an error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pipeflow.errors import RegistryError, UsageError

__all__ = ["TOLERANCE", "export_onnx"]

TOLERANCE = 1e-6


def _held_out(store: Any, record: dict[str, Any], data: str | None) -> tuple[Any, str]:
    import pandas as pd

    from pipeflow.store import codecs

    digest = (record.get("data") or {}).get("evaluation")
    if data:
        try:
            frame, source = pd.read_csv(data), data
        except (OSError, ValueError) as err:
            raise UsageError(f"--data {data}: cannot read it as CSV: {err}") from None
    elif digest and store.has(digest):
        frame, source = codecs.decode("parquet", store.get(digest)), "the evaluation table"
    else:
        raise UsageError(
            f"{record['name']}@{record['version']} has no evaluation table in the store: pass "
            "--data CSV with held-out rows to check the ONNX model's predictions on"
        )
    names = [f["name"] for f in (record.get("signature") or {}).get("features") or []]
    missing = [n for n in names if n not in frame.columns]
    if not names or missing:
        raise UsageError(
            f"the held-out rows ({source}) lack the features "
            f"{', '.join(missing) or '(the version records no signature)'}"
        )
    return frame[names].reset_index(drop=True), source


def _rewrite(model: Any) -> tuple[Any, bool]:
    """A copy with pipeflow's helpers replaced by what ONNX does anyway (module docstring);
    and whether the numbers come in as one matrix (``NumericColumns`` first)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeflow import models

    model = copy.deepcopy(model)
    matrix = False

    def walk(est: Any) -> None:
        nonlocal matrix
        if isinstance(est, Pipeline):
            steps = []
            for name, step in est.steps:
                if isinstance(step, FunctionTransformer) and step.func in (
                    models.as_strings,
                    models.flatten,
                ):
                    continue
                if isinstance(step, models.NumericColumns) and not steps:
                    matrix = True
                    continue
                if isinstance(step, SimpleImputer) and isinstance(step.fill_value, str):
                    step.missing_values = ""
                walk(step)
                steps.append((name, step))
            est.steps = steps
        for attr in ("transformers_",):
            for item in getattr(est, attr, None) or []:
                if not isinstance(item[1], str):
                    walk(item[1])

    walk(model)
    return model, matrix


def _steps(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every step of a pipeline, nested ones included, as (path, estimator)."""
    out = []
    for name, step in getattr(model, "steps", None) or []:
        out.append((f"{prefix}{name}", step))
        out += _steps(step, f"{prefix}{name}.")
    for name, step, _ in getattr(model, "transformers_", None) or []:
        if not isinstance(step, str):
            out.append((f"{prefix}{name}", step))
            out += _steps(step, f"{prefix}{name}.")
    return out


def _register_xgboost() -> None:
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )  # fmt: skip


def _convert(model: Any, record: dict[str, Any], label: str) -> tuple[Any, dict[str, str]]:
    """The ONNX graph and, per ONNX input, how to feed it (``float``, ``string``, ``matrix``)."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError:
        raise UsageError(
            "ONNX export needs skl2onnx and onnxruntime: pip install 'pipeflow[onnx]'"
        ) from None
    features = (record.get("signature") or {}).get("features") or []
    converted, matrix = _rewrite(model)
    steps = _steps(converted) or [("model", converted)]
    xgb = any(type(s).__module__.startswith("xgboost") for _, s in steps)
    if xgb:
        _register_xgboost()
    for path, step in steps:
        if type(step).__module__.startswith("pipeflow.") or (
            type(step).__name__ == "FunctionTransformer" and step.func is not None
        ):
            what = getattr(step, "func", None)
            named = f" ({what.__module__}.{what.__name__})" if callable(what) else ""
            raise RegistryError(
                f"cannot export {label} to ONNX: step '{path}' ({type(step).__name__}{named}) "
                "has no ONNX converter"
            )
    feeds: dict[str, str] = {}
    if matrix:
        types = [("input", FloatTensorType([None, len(features)]))]
        feeds["input"] = "matrix"
    else:
        types = []
        for f in features:
            role, dtype = f.get("role"), str(f.get("dtype"))
            if role == "date" or dtype.startswith(("datetime", "bool")):
                raise RegistryError(
                    f"cannot export {label} to ONNX: feature '{f['name']}' ({dtype}, {role}) has "
                    "no ONNX input type pipeflow maps (numbers, categories and text do)"
                )
            numeric = role == "numeric"
            types.append((f["name"], (FloatTensorType if numeric else StringTensorType)([None, 1])))
            feeds[f["name"]] = "float" if numeric else "string"
    final = steps[-1][1] if hasattr(converted, "steps") else converted
    options: dict[int, dict[str, Any]] = {}
    if hasattr(final, "predict_proba"):
        options[id(final)] = {"zipmap": False}
    for _, step in steps:  # lower-casing with the C locale: no language pack needed
        if type(step).__name__ == "TfidfVectorizer":
            options[id(step)] = {"locale": "C"}
    # onnxmltools' xgboost converter writes the ai.onnx.ml domain at version 3
    opset = {"": 17, "ai.onnx.ml": 3} if xgb else None
    try:
        graph = to_onnx(converted, initial_types=types, options=options, target_opset=opset)
    except Exception as err:  # skl2onnx names the class it has no converter or shape for
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        culprit = next(
            (f" at step '{p}' ({type(s).__name__})" for p, s in steps if type(s).__name__ in text),
            "",
        )
        raise RegistryError(f"cannot export {label} to ONNX{culprit}: {text}") from None
    return graph, feeds


def _inputs(rows: Any, feeds: dict[str, str]) -> dict[str, Any]:
    import numpy as np

    out = {}
    for name, how in feeds.items():
        if how == "matrix":
            out[name] = rows.to_numpy(dtype=np.float32, na_value=np.nan)
        elif how == "float":
            out[name] = rows[[name]].to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            column = rows[name].astype(object)
            out[name] = column.where(column.notna(), "").astype(str).to_numpy(object)[:, None]
    return out


def check(model: Any, graph: Any, rows: Any, feeds: dict[str, str]) -> dict[str, Any]:
    """Score ``rows`` with the pipeline and with onnxruntime; compare (module docstring)."""
    import numpy as np
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(
            graph.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, _inputs(rows, feeds))
    except Exception as err:  # onnxruntime.capi...Fail and friends
        raise RegistryError(f"onnxruntime cannot run the converted model: {err}") from None
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, outputs, strict=True))
    result: dict[str, Any] = {"rows": len(rows), "tolerance": TOLERANCE, "outputs": names}
    expected = np.asarray(model.predict(rows))
    if "probabilities" in got:  # a classifier: labels equal, probabilities within TOLERANCE
        labels = np.asarray(got["label"]).reshape(-1)
        differ = int((labels.astype(str) != expected.astype(str)).sum())
        diff = float(np.abs(got["probabilities"] - model.predict_proba(rows)).max(initial=0.0))
        result |= {"labels_differing": differ, "max_probability_difference": diff}
        result["passed"] = differ == 0 and diff <= TOLERANCE
        result["summary"] = (
            f"{differ} label(s) differ, probabilities within {diff:.2e} (tolerance {TOLERANCE:g})"
        )
    else:  # a regressor: values within TOLERANCE of their size (float32 inside the graph)
        values = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        scale = np.maximum(1.0, np.abs(expected.astype(np.float64)))
        diff = float((np.abs(values - expected) / scale).max(initial=0.0))
        result |= {"max_relative_difference": diff, "passed": diff <= TOLERANCE}
        result["summary"] = f"values within {diff:.2e} relative (tolerance {TOLERANCE:g})"
    return result


def export_onnx(
    store: Any, record: dict[str, Any], out: Path, *, data: str | None = None
) -> dict[str, Any]:
    """Write ``model.onnx`` and ``check.json`` of a version record to the directory ``out``."""
    from pipeflow.registry.loading import load_version_model

    label = f"{record.get('name')}@{record.get('version')}"
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty: name a new directory")
    model = load_version_model(store, record)
    rows, source = _held_out(store, record, data)
    graph, feeds = _convert(model, record, label)
    result = check(model, graph, rows, feeds)
    result |= {"source": source, "model": label, "inputs": feeds}
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(graph.SerializeToString())
    (out / "check.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    if not result["passed"]:
        raise RegistryError(
            f"{label}: the ONNX model's predictions differ from the pipeline's on {len(rows)} "
            f"held-out rows ({source}): {result['summary']}; {out} keeps both files to inspect"
        )
    return {
        "file": str(out / "model.onnx"),
        "check_file": str(out / "check.json"),
        "check": result,
    }

"""Moving models between pipeflow's registry and MLflow's model directory format.

**Export** (:func:`export_mlflow`) writes an MLflow model directory by hand, without importing
MLflow (whose pins conflict with pipeflow's environment): ``MLmodel`` (YAML) with the ``sklearn``
flavour in skops format (``serialization_format: skops``, the registered file byte for byte,
``skops_trusted_types`` = the types recorded when pipeflow registered it) and the
``python_function`` flavour loading it through ``mlflow.sklearn``; the signature as MLflow's
column schema; ``requirements.txt``, ``python_env.yaml`` and ``conda.yaml`` naming the versions of
this environment. What pipeflow serves is the whole fitted ``sklearn.pipeline.Pipeline``
(preprocessing and estimator, xgboost's included), so that is what is exported. A pipeline that
holds pipeflow's own column helpers (:mod:`pipeflow.models`: ``as_strings``, ``flatten``,
``NumericColumns`` ...) ships that one module as MLflow *code* (``code/pipeflow/models.py``,
which imports only scikit-learn, numpy and pandas): MLflow puts ``code/`` on ``sys.path`` before
loading, so the directory needs no pipeflow installed. MLflow 3 refuses to deserialize any model,
skops included, unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true`` (its own policy; the skops
allow-list it uses is the one written here).

**Import** (:func:`import_mlflow`) reads ``MLmodel`` and registers a new version, only from a
flavour pipeflow can load without running code from the files:

- ``sklearn`` with ``serialization_format: skops``: every type in the file must be on pipeflow's
  allow-list (:data:`pipeflow.store.codecs.TRUSTED`); the others are named and refused before
  anything is loaded;
- ``xgboost`` with a JSON or UBJ model file (``model_format: json|ubj``, or ``xgb`` holding one
  of them): xgboost's own format, read by xgboost into its scikit-learn class
  (``model_class``, which must be one of ``xgboost.sklearn``'s).

Pickle and cloudpickle (``serialization_format: pickle``, a ``python_model`` of a custom pyfunc,
any other flavour) are refused naming the file and why: unpickling runs code from the file. Every
file of the directory is hashed (SHA-256) into the record's ``imported`` entry with the directory,
the MLflow run id, model uuid and version, so the version's lineage says where it came from. The
signature is mapped from MLflow's column schema (``double`` -> ``float64``, ``long`` -> ``int64``,
``string`` -> ``object``, ...); a tensor schema has no column names, so a model without a column
schema is refused unless xgboost recorded its feature names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

from pipeflow.errors import RegistryError, UsageError

__all__ = ["export_mlflow", "import_mlflow", "mlflow_schema", "pipeflow_signature"]

#: pipeflow signature dtype (numpy/pandas) prefix -> MLflow column type
_TO_MLFLOW = (
    ("float32", "float"),
    ("float", "double"),
    ("Float32", "float"),
    ("Float", "double"),
    ("int32", "integer"),
    ("Int32", "integer"),
    ("int", "long"),
    ("Int", "long"),
    ("uint", "long"),
    ("UInt", "long"),
    ("bool", "boolean"),
    ("datetime", "datetime"),
)
#: MLflow column type -> pipeflow signature dtype
_FROM_MLFLOW = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
    "datetime": "datetime64[ns]",
}
#: MLflow flavours that are pickles by construction
_PICKLED_FLAVOURS = ("python_model", "cloudpickle", "pickle")


# ------------------------------------------------------------------------------- signatures


def mlflow_schema(record: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """MLflow's input and output column schema of a version record's signature."""
    signature = record.get("signature") or {}
    inputs = []
    for feature in signature.get("features") or []:
        dtype = str(feature.get("dtype", "object"))
        kind = next((t for prefix, t in _TO_MLFLOW if dtype.startswith(prefix)), "string")
        inputs.append({"type": kind, "name": str(feature["name"]), "required": True})
    if record.get("task") == "regression":
        out = "double"
    else:
        classes = [str(c) for c in signature.get("classes") or []]
        out = "long" if classes and all(c.lstrip("-").isdigit() for c in classes) else "string"
    return inputs, [{"type": out, "required": True}]


def pipeflow_signature(inputs: Any, where: str) -> list[dict[str, Any]]:
    """pipeflow's signature features of MLflow's input schema (a list of column specs)."""
    features = []
    for n, spec in enumerate(inputs):
        if not isinstance(spec, dict) or spec.get("type") == "tensor" or "name" not in spec:
            raise RegistryError(
                f"{where}: signature input {n} is {json.dumps(spec)[:80]}: pipeflow needs named "
                "columns (an MLflow column schema), not tensors"
            )
        kind = spec.get("type")
        if kind not in _FROM_MLFLOW:
            raise RegistryError(
                f"{where}: signature column '{spec['name']}' has type {kind!r}; pipeflow reads "
                f"{', '.join(_FROM_MLFLOW)}"
            )
        dtype = _FROM_MLFLOW[kind]
        role = "categorical" if dtype in ("object", "bool") else "numeric"
        role = "date" if dtype.startswith("datetime") else role
        features.append({"name": str(spec["name"]), "dtype": dtype, "role": role})
    return features


# ----------------------------------------------------------------------------------- export


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


def _uses_pipeflow_models(trusted: list[str]) -> bool:
    return any(t.startswith("pipeflow.models.") for t in trusted)


def export_mlflow(store: Any, record: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the MLflow model directory of a version record to ``out`` (which must not exist,
    or be empty); returns a summary (files, flavour, whether pipeflow code was shipped)."""
    import yaml

    from pipeflow.registry.records import model_ref

    where = f"{record.get('name')}@{record.get('version')}"
    ref = model_ref(store, record, where)
    if ref.codec != "skops":
        raise RegistryError(
            f"cannot export {where} to MLflow: its model is stored as {ref.codec!r}, not a "
            "scikit-learn model (skops)"
        )
    data = store.get(ref.digest)  # hash-checked
    trusted = sorted(record.get("trusted_types") or [])
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty: name a new directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.skops").write_bytes(data)
    shipped = _uses_pipeflow_models(trusted)
    if shipped:  # the module that defines them, alone: it imports only scikit-learn
        import pipeflow.models

        code = out / "code" / "pipeflow"
        code.mkdir(parents=True)
        (code / "__init__.py").write_text(
            '"""pipeflow\'s model helpers, shipped with an exported MLflow model."""\n'
        )
        (code / "models.py").write_text(Path(pipeflow.models.__file__).read_text())
    packages = ["mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops"]
    if any(t.startswith("xgboost.") for t in trusted):
        packages.append("xgboost")
    pinned = _versions(*packages)
    mlflow = pinned.pop("mlflow", "3.0")  # MLflow is not in pipeflow's environment: >= 3.0
    requirements = [f"mlflow>={mlflow}", *(f"{p}=={v}" for p, v in sorted(pinned.items()))]
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = platform.python_version()
    (out / "python_env.yaml").write_text(
        yaml.safe_dump(
            {
                "python": python,
                "build_dependencies": ["pip", "setuptools", "wheel"],
                "dependencies": ["-r requirements.txt"],
            },
            sort_keys=False,
        )
    )
    (out / "conda.yaml").write_text(
        yaml.safe_dump(
            {
                "channels": ["conda-forge"],
                "dependencies": [f"python={python}", "pip", {"pip": requirements}],
                "name": "mlflow-env",
            },
            sort_keys=False,
        )
    )
    inputs, outputs = mlflow_schema(record)
    sklearn_version = _versions("scikit-learn").get("scikit-learn", "unknown")
    mlmodel = {
        "flavors": {
            "python_function": {
                "code": "code" if shipped else None,
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.sklearn",
                "model_path": "model.skops",
                "predict_fn": "predict",
                "python_version": python,
            },
            "sklearn": {
                "code": "code" if shipped else None,
                "pickled_model": "model.skops",
                "serialization_format": "skops",
                "sklearn_version": sklearn_version,
                "skops_trusted_types": trusted,
            },
        },
        "metadata": {
            "pipeflow_model": where,
            "pipeflow_digest": ref.digest,
            "pipeflow_run_id": (record.get("run") or {}).get("run_id"),
        },
        "model_size_bytes": len(data),
        "model_uuid": uuid.uuid4().hex,
        "signature": {
            "inputs": json.dumps(inputs),
            "outputs": json.dumps(outputs),
            "params": None,
        },
        "utc_time_created": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime()),
    }
    (out / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    return {
        "directory": str(out),
        "flavour": "sklearn (skops)",
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
        "code_shipped": shipped,
    }


# ----------------------------------------------------------------------------------- import


def _inside(root: Path, name: Any, key: str, mlmodel: Path) -> Path:
    """``root/name`` for a file the MLmodel names, refused if it leaves ``root`` or is absent."""
    if not isinstance(name, str) or not name:
        raise RegistryError(f"{mlmodel}: {key} is {name!r}: expected the model file's name")
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise RegistryError(f"{mlmodel}: {key} {name!r} points outside {root}")
    if not path.is_file():
        raise RegistryError(f"{mlmodel}: {key} names {name!r}, which is not a file in {root}")
    return path


def _hash_files(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:  # written by whoever loaded the model's code
            continue
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        out[str(path.relative_to(root))] = digest.hexdigest()
    return out


def read_mlmodel(root: Path) -> dict[str, Any]:
    """The parsed ``MLmodel`` of an MLflow model directory (a RegistryError naming the file)."""
    import yaml

    mlmodel = root / "MLmodel"
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (expected an MLflow model directory)")
    if not mlmodel.is_file():
        raise RegistryError(f"{root} has no MLmodel file: not an MLflow model directory")
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RegistryError(f"{mlmodel}: not readable YAML: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise RegistryError(f"{mlmodel}: expected a mapping with a 'flavors' mapping")
    return meta


def _load_skops(root: Path, mlmodel: Path, conf: dict[str, Any]) -> Any:
    from pipeflow.registry.loading import load_skops
    from pipeflow.store import codecs

    fmt = conf.get("serialization_format", "pickle")
    name = conf.get("pickled_model")
    if fmt != "skops":
        shown = name if isinstance(name, str) else "its model file"
        raise RegistryError(
            f"refusing to import {root / str(shown)}: {mlmodel} says flavors.sklearn."
            f"serialization_format is {fmt!r}; loading a {fmt} file runs code from it. "
            "Re-log the model with mlflow.sklearn.log_model(..., serialization_format='skops')"
        )
    path = _inside(root, name, "flavors.sklearn.pickled_model", mlmodel)
    return load_skops(
        path.read_bytes(),
        lambda found: [t for t in found if t.startswith(codecs.TRUSTED)],
        refusing=f"refusing to import {path}",
        refused_as=f"it holds types outside pipeflow's allow-list ({', '.join(codecs.TRUSTED)})",
        failed=f"cannot load {path}",
    )


def _load_xgboost(root: Path, mlmodel: Path, conf: dict[str, Any]) -> Any:
    import xgboost

    path = _inside(root, conf.get("data"), "flavors.xgboost.data", mlmodel)
    fmt = str(conf.get("model_format") or "xgb")
    data = path.read_bytes()
    if fmt == "xgb":  # xgboost picks the format itself: JSON text or UBJ ('{' then a marker)
        if data[:1] == b"{" and data[1:2] in (b'"', b"\n", b" ", b"}"):
            fmt = "json"
        elif data[:1] == b"{":
            fmt = "ubj"
    if fmt not in ("json", "ubj"):
        raise RegistryError(
            f"refusing to import {path}: {mlmodel} says flavors.xgboost.model_format is "
            f"{conf.get('model_format')!r} and the file is neither JSON nor UBJ; pipeflow reads "
            "xgboost's JSON and UBJ formats (mlflow.xgboost.log_model(..., model_format='json'))"
        )
    model_class = str(conf.get("model_class") or "xgboost.core.Booster")
    module, _, name = model_class.rpartition(".")
    if module == "xgboost.core" and name == "Booster":
        kind = _booster_kind(data, path)
        cls = xgboost.XGBClassifier if kind == "classifier" else xgboost.XGBRegressor
    elif module == "xgboost.sklearn" and name.startswith("XGB") and hasattr(xgboost, name):
        cls = getattr(xgboost, name)
    else:
        raise RegistryError(
            f"refusing to import {path}: {mlmodel} says flavors.xgboost.model_class is "
            f"{model_class!r}; pipeflow reads xgboost.core.Booster and xgboost.sklearn's classes"
        )
    model = cls()
    try:
        model.load_model(bytearray(data))
    except Exception as err:  # xgboost.core.XGBoostError: a damaged file
        raise RegistryError(f"cannot load {path} as {fmt}: {err}") from None
    return model


def _booster_kind(data: bytes, path: Path) -> str:
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(data))
    except Exception as err:
        raise RegistryError(f"cannot load {path}: {err}") from None
    config = json.loads(booster.save_config())
    objective = str(config["learner"]["objective"]["name"])
    return "classifier" if objective.startswith(("binary:", "multi:")) else "regressor"


def import_mlflow(registry: Any, root: Path, name: str, *, description: str = "") -> dict[str, Any]:
    """Register the model of the MLflow model directory ``root`` as the next version of
    ``name`` (see the module docstring); returns the version record."""
    from pipeflow.registry.names import check_name

    check_name("model name", name)
    root = root.resolve()
    meta = read_mlmodel(root)
    mlmodel = root / "MLmodel"
    flavors = meta["flavors"]
    pyfunc = flavors.get("python_function") or {}
    if "sklearn" in flavors and isinstance(flavors["sklearn"], dict):
        model, flavour = _load_skops(root, mlmodel, flavors["sklearn"]), "sklearn"
    elif "xgboost" in flavors and isinstance(flavors["xgboost"], dict):
        model, flavour = _load_xgboost(root, mlmodel, flavors["xgboost"]), "xgboost"
    else:
        pickled = isinstance(pyfunc, dict) and any(k in pyfunc for k in _PICKLED_FLAVOURS)
        file = root / str(pyfunc.get("python_model", "python_model.pkl")) if pickled else mlmodel
        why = (
            "a custom python_function model is a cloudpickle, and loading it runs code from it"
            if pickled
            else f"its flavours are {', '.join(map(str, flavors)) or 'none'}"
        )
        raise RegistryError(
            f"refusing to import {file}: {why}; pipeflow imports the sklearn flavour saved with "
            "skops and the xgboost flavour saved as JSON or UBJ"
        )
    features, classes = _signature(meta, mlmodel, model)
    ref = registry.store.save(model, "model")  # skops, its stable bytes: loaded as pipeflow's
    if ref.codec != "skops":
        raise RegistryError(f"{root}: the loaded model is not a scikit-learn estimator")
    task = "classification" if hasattr(model, "classes_") or classes else "regression"
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    record = registry.register(
        name,
        ref,
        description=description or f"imported from the MLflow model {root}",
        estimator=f"{type(final).__module__}.{type(final).__qualname__}",
        task=task,
        target=None,
        signature={"features": features, "classes": classes},
        params={},
        metrics={},
        gates=[],
        data={},
        run={"run_id": None, "pipeline": None, "stage": "import"},
        imported={
            "from": str(root),
            "format": "mlflow",
            "flavour": flavour,
            "run_id": meta.get("run_id"),
            "model_uuid": meta.get("model_uuid"),
            "mlflow_version": meta.get("mlflow_version"),
            "utc_time_created": meta.get("utc_time_created"),
            "files": _hash_files(root),
            "time": time.time(),
            "user": os.environ.get("USER"),
        },
    )
    return record


def _signature(meta: dict[str, Any], mlmodel: Path, model: Any) -> tuple[list[Any], list[str]]:
    signature = meta.get("signature") if isinstance(meta.get("signature"), dict) else {}
    raw = signature.get("inputs") if signature else None
    classes = [str(c) for c in getattr(model, "classes_", [])]
    if raw:
        try:
            inputs = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as err:
            raise RegistryError(f"{mlmodel}: signature.inputs is not JSON: {err}") from None
        if not isinstance(inputs, list):
            raise RegistryError(f"{mlmodel}: signature.inputs: expected a list of columns")
        if inputs and not (isinstance(inputs[0], dict) and inputs[0].get("type") == "tensor"):
            return pipeflow_signature(inputs, str(mlmodel)), classes
    names = getattr(model, "feature_names_in_", None)
    if names is None and hasattr(model, "get_booster"):
        names = model.get_booster().feature_names
    if names is None or not len(names):
        raise RegistryError(
            f"{mlmodel}: no column signature and the model records no feature names; pipeflow "
            "needs named input columns (log the model with an MLflow signature of columns)"
        )
    return [{"name": str(n), "dtype": "float64", "role": "numeric"} for n in names], classes

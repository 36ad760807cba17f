"""The Open Inference Protocol (KServe v2 REST): ``/v2``, ``/v2/health/*``, ``/v2/models/{name}``,
``/v2/models/{name}/ready`` and ``/v2/models/{name}/infer``.

A request's ``inputs`` are tensors (``name``, ``shape``, ``datatype``, ``data``; data flat or nested
as the shape): one 1-D tensor per feature, named as the feature, or a single 2-D tensor whose
columns are the features in signature order. Every tensor is checked (keys, datatype, shape,
number of values) before its values become rows. The answer holds the tensors ``predict``,
``prediction_id`` (for feedback) and, for a classifier with probabilities, ``predict_proba``
(rows x classes); the request's ``id`` is echoed. The model metadata names each feature as a
1-D input of its type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeflow.errors import BadRequest

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle

_V2_TYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}


def rows_from_v2(payload: Any, names: list[str]) -> list[Any]:
    """Open Inference Protocol (KServe v2) request tensors as rows: one 1-D tensor per feature,
    or a single 2-D tensor whose columns are the features in signature order."""
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("inputs"), list)
        or not payload["inputs"]
    ):
        raise BadRequest(
            422, "invalid_request", "expected an object with a non-empty 'inputs' list of tensors"
        )
    tensors = payload["inputs"]
    for i, t in enumerate(tensors):
        if not isinstance(t, dict) or not {"name", "shape", "datatype", "data"} <= t.keys():
            raise BadRequest(
                422,
                "invalid_request",
                f"inputs[{i}] must have name, shape, datatype and data",
                [
                    {
                        "row": None,
                        "field": f"inputs[{i}]",
                        "expected": "name, shape, datatype, data",
                        "got": "missing keys",
                    }
                ],
            )
        if not isinstance(t["datatype"], str) or t["datatype"] not in _V2_TYPES:
            raise BadRequest(
                422,
                "invalid_request",
                f"inputs[{i}].datatype {t['datatype']!r} is not an Open Inference Protocol type",
                [
                    {
                        "row": None,
                        "field": f"inputs[{i}].datatype",
                        "expected": "one of " + ", ".join(sorted(_V2_TYPES)),
                        "got": str(t["datatype"]),
                    }
                ],
            )
        if not isinstance(t["shape"], list) or not all(
            isinstance(d, int) and d >= 0 for d in t["shape"]
        ):
            raise BadRequest(
                422, "invalid_request", f"inputs[{i}].shape must be a list of non-negative integers"
            )
    if len(tensors) == 1 and len(tensors[0]["shape"]) == 2 and tensors[0]["name"] not in names:
        t = tensors[0]
        n, d = t["shape"]
        flat = _flatten(t["data"])
        if d != len(names) or len(flat) != n * d:
            raise BadRequest(
                422,
                "invalid_request",
                f"a 2-D input needs shape [rows, {len(names)}] (features: {', '.join(names)}) and rows x {len(names)} values",
            )
        return [dict(zip(names, flat[i * d : (i + 1) * d], strict=True)) for i in range(n)]
    columns: dict[str, list[Any]] = {}
    for t in tensors:
        flat = _flatten(t["data"])
        expected = 1
        for dim in t["shape"]:
            expected *= dim
        if len(flat) != expected:
            raise BadRequest(
                422,
                "invalid_request",
                f"input '{t['name']}' has {len(flat)} values for shape {t['shape']}",
                [
                    {
                        "row": None,
                        "field": t["name"],
                        "expected": f"{expected} values",
                        "got": str(len(flat)),
                    }
                ],
            )
        columns[str(t["name"])] = flat
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise BadRequest(
            422, "invalid_request", "every input tensor must hold the same number of rows"
        )
    n = lengths.pop()
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(422, "invalid_request", "tensor data must be a list")
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative: deep nesting cannot overflow the Python stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def v2_datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def metadata_body(h: Handle) -> dict[str, Any]:
    """The model metadata of ``GET /v2/models/{name}``: inputs from the signature, outputs from
    the model."""
    kinds = {"number": "FP64", "string": "BYTES", "boolean": "BOOL"}
    outputs = [{"name": "predict", "datatype": "BYTES" if h.classes else "FP64", "shape": [-1]}]
    if h.proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(h.classes)]})
    return {
        "name": h.name,
        "versions": [str(h.version)],
        "platform": "pipeflow",
        "inputs": [
            {"name": f.name, "datatype": kinds[f.expect], "shape": [-1]}
            for f in h.signature.features
        ],
        "outputs": outputs,
    }


def infer_body(payload: Any, handle: Handle, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``/infer``: the output tensors, and the request's ``id`` when it has one."""
    predictions = [r["prediction"] for r in results]
    outputs = [
        {
            "name": "predict",
            "datatype": v2_datatype(predictions),
            "shape": [len(predictions)],
            "data": predictions,
        },
        {
            "name": "prediction_id",
            "datatype": "BYTES",
            "shape": [len(results)],
            "data": [r["id"] for r in results],
        },
    ]
    if handle.proba:
        flat = [p for r in results for p in r["probabilities"].values()]
        outputs.append(
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [len(results), len(handle.classes)],
                "data": flat,
            }
        )
    body = {"model_name": handle.name, "model_version": str(handle.version), "outputs": outputs}
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        body["id"] = payload["id"]
    return body

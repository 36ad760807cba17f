"""The Open Inference Protocol (KServe v2 REST): ``/v2``, ``/v2/health/*``, and per model
``/v2/models/{name}[/versions/{version}]``, ``.../ready`` and ``.../infer``.

A request's ``inputs`` are tensors (``name``, ``shape``, ``datatype``, ``data``; data flat or nested
as the shape): one 1-D tensor per feature, named as the feature, or a single 2-D tensor whose
columns are the features in signature order. Every tensor is checked (keys, datatype, shape,
number of values, parameters) before its values become rows. The answer holds the tensors
``predict``, ``prediction_id`` (for feedback) and, for a classifier with probabilities,
``predict_proba`` (rows x classes); the request's ``id`` is echoed. ``outputs`` selects which, in
the order asked; a name the model has not is refused (400) naming the ones it has. The model
metadata names each feature as a 1-D input of its type, and the versions served (the primary's,
and the canary's while it is on probation) as those a client may ask for by path.

**The binary tensor data extension** (KServe's and Triton's ``binary_tensor_data``; the Python
clients of both send binary inputs by default). A body with binary data is the JSON request
followed by the raw tensor bytes, the length of the JSON part in the ``Inference-Header-Content-
Length`` header (:func:`split_body`); each binary input names its byte count in
``parameters.binary_data_size`` and its bytes follow in input order (:func:`attach_binary`):
little-endian, row-major, no padding; ``BOOL`` one byte 0/1; ``BYTES`` each element a 4-byte
little-endian unsigned length and then its bytes (UTF-8 text here: features are text, not blobs).
The decoded values become the tensor's ``data``, so binary and JSON requests go through the same
checks afterwards. An output is answered in binary when its ``parameters.binary_data`` is true, or
else when the request's ``parameters.binary_data_output`` is (:func:`infer_answer`): then the
answer is the JSON object, without those outputs' ``data``, followed by their bytes in output
order, with the header and ``Content-Type: application/octet-stream``. As in Triton, the header,
not the content type, says that a body is binary.

Anything else the protocol's parameters could ask for (Triton's classification extension,
sequences, priorities) is refused with 400 naming the parameter and those supported: a request
is answered as asked or not at all. Seldon MLServer's ``content_type`` hint is accepted where it
names what is done here anyway (``np``, ``pd``, ``str``), refused otherwise (``base64``...). The v2 routes answer errors in the protocol's form,
``{"error": "<message>"}`` (:func:`pipeflow.serving.routes.v2_failure`).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from pipeflow.errors import BadRequest
from pipeflow.store.journal import dumps

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle

#: the header that gives the length of the JSON part of a body with binary tensor data
HEADER = "Inference-Header-Content-Length"

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
#: numpy's little-endian type of each fixed-size datatype (BOOL and BYTES are read by hand)
_NUMPY = {
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
INPUT_PARAMETERS = ("binary_data_size", "content_type")
OUTPUT_PARAMETERS = ("binary_data",)
REQUEST_PARAMETERS = ("binary_data_output", "content_type")
#: Seldon MLServer's codec hints that name what is done here anyway (a column per tensor or a
#: matrix, text as UTF-8): accepted; another (``base64``, ``datetime``...) would mean values
#: this server does not decode, so it is refused
CONTENT_TYPES = ("np", "pd", "str")
#: what the extensions' parameters we do not implement are for, to say so when refusing them
_NOT_IMPLEMENTED = {
    "classification": "Triton's classification extension; ask for the predict_proba output",
    "shared_memory_region": "the shared-memory extension",
    "sequence_id": "stateful sequences",
    "sequence_start": "stateful sequences",
    "sequence_end": "stateful sequences",
    "priority": "request priorities",
    "timeout": "request timeouts",
}


def _bad(message: str, status: int = 400, kind: str = "invalid_request") -> BadRequest:
    return BadRequest(status, kind, message)


def _unsupported(where: str, key: str, supported: tuple[str, ...]) -> BadRequest:
    why = f" ({_NOT_IMPLEMENTED[key]})" if key in _NOT_IMPLEMENTED else ""
    return _bad(
        f"{where} parameter '{key}' is not supported{why}; supported: {', '.join(supported)}",
        kind="unsupported",
    )


def _parameters(value: Any, where: str, supported: tuple[str, ...]) -> dict[str, Any]:
    """A ``parameters`` object, checked: an object of supported keys only, and a
    ``content_type`` only of :data:`CONTENT_TYPES`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{where}.parameters must be an object")
    for key in value:
        if key not in supported:
            raise _unsupported(where, key, supported)
    if "content_type" in value and value["content_type"] not in CONTENT_TYPES:
        raise _bad(
            f"{where} parameter content_type {value['content_type']!r} is not decoded here "
            f"(accepted: {', '.join(CONTENT_TYPES)}: text as UTF-8, numbers as their datatype)",
            kind="unsupported",
        )
    return value


# -------------------------------------------------------------------------- binary request body


def split_body(body: bytes, header: str) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a body whose JSON part is ``header`` bytes long."""
    text = header.strip()
    if not (text.isascii() and text.isdigit()):
        raise _bad(f"{HEADER} must be the byte length of the JSON part of the body, got {header!r}")
    length = int(text)
    if length > len(body):
        raise _bad(f"{HEADER} is {length} but the body has only {len(body)} bytes")
    return body[:length], body[length:]


def attach_binary(payload: Any, binary: bytes) -> Any:
    """``payload`` with each binary input's ``data`` decoded from ``binary`` (the bytes after the
    JSON part), in input order; 400 when the sizes do not add up to exactly those bytes."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        if binary:
            raise _bad(f"{len(binary)} bytes follow the JSON but it has no 'inputs' list")
        return payload  # rows_from_v2 names what is wrong
    offset, inputs = 0, []
    for i, t in enumerate(payload["inputs"]):
        params = t.get("parameters") if isinstance(t, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            inputs.append(t)
            continue
        name = _check_tensor(i, t, binary=True)
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _bad(
                f"input '{name}': parameters.binary_data_size must be a byte count, got {size!r}"
            )
        if "data" in t:
            raise _bad(f"input '{name}' has both 'data' and parameters.binary_data_size; send one")
        if offset + size > len(binary):
            raise _bad(
                f"input '{name}' declares {size} bytes of binary data but only "
                f"{len(binary) - offset} remain after the JSON part ({HEADER})"
            )
        chunk = binary[offset : offset + size]
        offset += size
        rest = {k: v for k, v in params.items() if k != "binary_data_size"}
        inputs.append({**t, "parameters": rest, "data": decode_tensor(name, t, chunk)})
    if offset != len(binary):
        raise _bad(
            f"{len(binary) - offset} bytes after the JSON part belong to no input "
            f"(the inputs' binary_data_size add up to {offset}; {HEADER} may be wrong)"
        )
    return {**payload, "inputs": inputs}


def _count(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def decode_tensor(name: str, tensor: dict[str, Any], chunk: bytes) -> list[Any]:
    """The values of a binary tensor, flat, as Python values."""
    datatype, count = tensor["datatype"], _count(tensor["shape"])
    if datatype == "BYTES":
        values: list[Any] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk) or len(values) == count:
                raise _bad(
                    f"input '{name}': BYTES data must be {count} elements, each a 4-byte "
                    f"little-endian length and its bytes; byte {pos} of {len(chunk)} is past them"
                )
            (n,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + n > len(chunk):
                raise _bad(
                    f"input '{name}': element {len(values)} claims {n} bytes but "
                    f"{len(chunk) - pos} remain"
                )
            try:
                values.append(chunk[pos : pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise _bad(f"input '{name}': element {len(values)} is not UTF-8 text") from None
            pos += n
        if len(values) != count:
            raise _bad(
                f"input '{name}' holds {len(values)} BYTES elements for shape {tensor['shape']}"
            )
        return values
    itemsize = 1 if datatype == "BOOL" else int(_NUMPY[datatype][2])
    if len(chunk) != count * itemsize:
        raise _bad(
            f"input '{name}' has {len(chunk)} bytes of binary data; shape {tensor['shape']} of "
            f"{datatype} needs {count * itemsize}"
        )
    if datatype == "BOOL":
        if chunk.strip(b"\x00\x01"):
            raise _bad(f"input '{name}': BOOL elements must be the bytes 0 or 1")
        return [b == 1 for b in chunk]
    import numpy as np

    return np.frombuffer(chunk, dtype=_NUMPY[datatype]).tolist()  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- request checks


def _check_tensor(i: int, t: Any, *, binary: bool = False) -> str:
    """The name of request input ``i``, once its keys, datatype, shape and parameters are
    checked (``data`` is not required of a binary input)."""
    params = t.get("parameters") if isinstance(t, dict) else None
    if not binary and isinstance(params, dict) and "binary_data_size" in params:
        raise _bad(
            f"inputs[{i}] has parameters.binary_data_size but the request has no {HEADER} "
            "header: binary tensor data needs it (the byte length of the JSON part)"
        )
    required = {"name", "shape", "datatype"} | (set() if binary else {"data"})
    if not isinstance(t, dict) or not required <= t.keys():
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
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in t["shape"]
    ):
        raise BadRequest(
            422, "invalid_request", f"inputs[{i}].shape must be a list of non-negative integers"
        )
    _parameters(params, f"inputs[{i}]", INPUT_PARAMETERS)
    return str(t["name"])


def check_request(payload: Any, handle: Handle) -> None:
    """The request-level ``parameters`` and the ``outputs`` asked for, checked against what this
    server and ``handle``'s model can answer (before anything is scored)."""
    if not isinstance(payload, dict):
        return  # rows_from_v2 names what is wrong
    params = _parameters(payload.get("parameters"), "the request", REQUEST_PARAMETERS)
    if not isinstance(params.get("binary_data_output", False), bool):
        raise _bad("parameters.binary_data_output must be true or false")
    outputs = payload.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise _bad("'outputs' must be a list of {name, parameters} objects")
    available = output_names(handle)
    seen: set[str] = set()
    for j, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise _bad(f"outputs[{j}] must be an object with a 'name'")
        name = o["name"]
        if name not in available:
            raise _bad(f"no output named '{name}' (this model's outputs: {', '.join(available)})")
        if name in seen:
            raise _bad(f"output '{name}' is asked for twice")
        seen.add(name)
        params = _parameters(o.get("parameters"), f"output '{name}'", OUTPUT_PARAMETERS)
        if not isinstance(params.get("binary_data", False), bool):
            raise _bad(f"output '{name}': parameters.binary_data must be true or false")


def _check_data(tensor: dict[str, Any], flat: list[Any]) -> None:
    """422 when a JSON tensor's values are not of its declared datatype (``null`` passes: the
    signature decides whether a feature may be missing)."""
    datatype = tensor["datatype"]
    if datatype == "BYTES":
        ok: Any = lambda v: isinstance(v, str)  # noqa: E731
    elif datatype == "BOOL":
        ok = lambda v: isinstance(v, bool)  # noqa: E731
    else:
        ok = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    bad = next((v for v in flat if v is not None and not ok(v)), None)
    if bad is not None:
        raise BadRequest(
            422,
            "invalid_request",
            f"input '{tensor['name']}' is {datatype} but holds {str(bad)[:40]!r} "
            f"({type(bad).__name__})",
            [{"field": f"{tensor['name']}.data", "expected": datatype, "got": str(bad)[:40]}],
        )


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
        _check_tensor(i, t)
    if len(tensors) == 1 and len(tensors[0]["shape"]) == 2 and tensors[0]["name"] not in names:
        t = tensors[0]
        n, d = t["shape"]
        flat = _flatten(t["data"])
        _check_data(t, flat)
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
        _check_data(t, flat)
        expected = _count(t["shape"])
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
    if not any(isinstance(item, list) for item in data):
        return data  # already flat (binary inputs always are)
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative: deep nesting cannot overflow the Python stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


# ------------------------------------------------------------------------------------ answers


def v2_datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def output_names(h: Handle) -> list[str]:
    """The outputs a request may ask for, in the order they are answered by default."""
    return ["predict", "prediction_id"] + (["predict_proba"] if h.proba else [])


def metadata_body(h: Handle, versions: list[int]) -> dict[str, Any]:
    """The model metadata of ``GET /v2/models/{name}[/versions/{version}]``: inputs from
    ``h``'s signature, outputs from its model, and the ``versions`` served."""
    kinds = {"number": "FP64", "string": "BYTES", "boolean": "BOOL"}
    outputs = [
        {"name": "predict", "datatype": v2_datatype(h.classes) if h.classes else "FP64",
         "shape": [-1]},
        {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]},
    ]  # fmt: skip
    if h.proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(h.classes)]})
    return {
        "name": h.name,
        "versions": [str(v) for v in versions],
        "platform": "pipeflow",
        "inputs": [
            {"name": f.name, "datatype": kinds[f.expect], "shape": [-1]}
            for f in h.signature.features
        ],
        "outputs": outputs,
    }


def infer_body(payload: Any, handle: Handle, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``/infer`` as JSON: the output tensors asked for (all by default), and the
    request's ``id`` when it has one."""
    predictions = [r["prediction"] for r in results]
    tensors = {
        "predict": {
            "name": "predict",
            "datatype": v2_datatype(predictions),
            "shape": [len(predictions)],
            "data": predictions,
        },
        "prediction_id": {
            "name": "prediction_id",
            "datatype": "BYTES",
            "shape": [len(results)],
            "data": [r["id"] for r in results],
        },
    }
    if handle.proba:
        tensors["predict_proba"] = {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": [len(results), len(handle.classes)],
            "data": [p for r in results for p in r["probabilities"].values()],
        }
    asked = payload.get("outputs") if isinstance(payload, dict) else None
    names = [o["name"] for o in asked] if asked else list(tensors)
    body = {
        "model_name": handle.name,
        "model_version": str(handle.version),
        "outputs": [tensors[n] for n in names],
    }
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        body["id"] = payload["id"]
    return body


def binary_outputs(payload: Any) -> set[str]:
    """The outputs to answer as binary data: those with ``parameters.binary_data`` true, and
    with the request's ``parameters.binary_data_output`` true every output not saying false."""
    if not isinstance(payload, dict):
        return set()
    default = bool((payload.get("parameters") or {}).get("binary_data_output", False))
    asked = payload.get("outputs") or []
    said = {o["name"]: (o.get("parameters") or {}).get("binary_data") for o in asked}
    everything = ("predict", "prediction_id", "predict_proba")
    return {n for n in everything if (default if said.get(n) is None else said[n])}


def encode_tensor(datatype: str, values: list[Any]) -> bytes:
    """A tensor's values as the extension's bytes (little-endian, row-major)."""
    if datatype == "BYTES":
        parts = []
        for v in values:
            raw = v.encode("utf-8") if isinstance(v, str) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    if datatype == "BOOL":
        return bytes(1 if v else 0 for v in values)
    import numpy as np

    return np.asarray(values, dtype=_NUMPY[datatype]).tobytes()  # type: ignore[no-any-return]


def infer_answer(
    payload: Any, handle: Handle, results: list[dict[str, Any]]
) -> tuple[bytes, int | None]:
    """The bytes of the answer to ``/infer`` and, when some outputs are binary, the length of
    its JSON part (the ``Inference-Header-Content-Length`` of the answer); else None."""
    body = infer_body(payload, handle, results)
    binary = binary_outputs(payload)
    if not binary & {o["name"] for o in body["outputs"]}:
        return dumps(body), None
    chunks = []
    for o in body["outputs"]:
        if o["name"] in binary:
            raw = encode_tensor(o["datatype"], o.pop("data"))
            o["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = dumps(body)
    return header + b"".join(chunks), len(header)

"""MLflow's scoring-server protocol: ``POST /invocations`` (with ``GET /ping``).

The two content types of MLflow's server (``mlflow.pyfunc.scoring_server``), UTF-8 only:

- ``application/json``: a body holds exactly one of ``dataframe_split`` (``{columns, data}``;
  without ``columns`` the values are in signature order), ``dataframe_records`` (a list of row
  objects), ``instances`` or ``inputs`` (a list of row objects or of value lists in signature
  order; ``inputs`` may also be an object of equal-length columns), and optionally ``params``;
- ``text/csv``: a header row naming the columns, then one line per row, read as MLflow reads it
  with ``pandas.read_csv`` (:func:`payload_from_csv`): numbers for numeric features, ``True`` /
  ``False`` for boolean ones, and pandas' missing-value markers (an empty cell, ``NA``, ``NaN``,
  ``null``...) as missing. It becomes the ``dataframe_split`` it stands for.

The answer is MLflow's ``{"predictions": [...]}``, with the prediction ids alongside in ``ids``
for feedback. MLflow answers probabilities when the model's ``predict`` gives them: a
scikit-learn model logged with ``pyfunc_predict_fn="predict_proba"``, or a pyfunc model whose
``predict`` reads ``params`` (MLflow's documented example chooses the method with
``params={"predict_method": "predict_proba"}``). A served pipeflow model is one model for every
client, so the choice is the request's: ``"params": {"predict_method": "predict_proba"}`` answers
each row's class probabilities as a list in the order of ``classes``, which the answer adds
(:func:`check_params`); ``"predict"`` (the default) answers the labels. Any other parameter is
refused (422) naming those supported.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from pipeflow.errors import BadRequest

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle


def rows_from_columns(columns: Any, data: Any, names: list[str]) -> list[Any]:
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise BadRequest(422, "invalid_request", "'data' must be a list of rows (lists of values)")
    if columns is None:
        columns = names
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest(422, "invalid_request", "'columns' must be a list of column names")
    rows = []
    for i, r in enumerate(data):
        if len(r) != len(columns):
            raise BadRequest(
                422,
                "invalid_request",
                f"row {i} has {len(r)} values for {len(columns)} columns",
                [
                    {
                        "row": i,
                        "field": None,
                        "expected": f"{len(columns)} values",
                        "got": f"{len(r)}",
                    }
                ],
            )
        rows.append(dict(zip(columns, r, strict=True)))
    return rows


def rows_from_mlflow(payload: Any, names: list[str]) -> list[Any]:
    """MLflow scoring-server payloads (``dataframe_split``, ``dataframe_records``, ``instances``,
    ``inputs``) as rows."""
    if not isinstance(payload, dict):
        raise BadRequest(
            422,
            "invalid_request",
            "expected an object with one of: dataframe_split, dataframe_records, instances, inputs",
        )
    keys = [
        k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload
    ]
    if len(keys) != 1:
        raise BadRequest(
            422,
            "invalid_request",
            "expected exactly one of: dataframe_split, dataframe_records, instances, inputs"
            + (f" (got {', '.join(keys)})" if keys else ""),
        )
    key, value = keys[0], payload[keys[0]]
    if key == "dataframe_split":
        if not isinstance(value, dict):
            raise BadRequest(
                422, "invalid_request", "dataframe_split must be an object with columns and data"
            )
        return rows_from_columns(value.get("columns"), value.get("data"), names)
    if key == "inputs" and isinstance(value, dict):  # columnar: {"col": [values]}
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise BadRequest(
                422,
                "invalid_request",
                "'inputs' as an object must map each column to a list of equal length",
            )
        n = lengths.pop()
        return [{k: v[i] for k, v in value.items()} for i in range(n)]
    if not isinstance(value, list):
        raise BadRequest(422, "invalid_request", f"'{key}' must be a list of rows")
    if value and all(isinstance(r, list) for r in value):
        return rows_from_columns(None, value, names)
    return value


#: the cells ``pandas.read_csv`` reads as missing by default (its ``STR_NA_VALUES``)
NA_VALUES = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip
_TRUE, _FALSE = frozenset(["True", "TRUE", "true"]), frozenset(["False", "FALSE", "false"])


def _cell(text: str, kind: str | None) -> Any:
    """A CSV cell as the value ``pandas.read_csv`` gives a column of that kind: a number, a
    boolean, text, or None (missing). A cell that is not of its column's kind stays text, for
    the signature check to name."""
    if text in NA_VALUES:
        return None
    if kind == "number":
        if "_" in text or not text.isascii():  # Python reads 1_000 and "١٢"; pandas does not
            return text
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "boolean":
        return True if text in _TRUE else False if text in _FALSE else text
    return text


def payload_from_csv(body: bytes, kinds: dict[str, str]) -> dict[str, Any]:
    """A ``text/csv`` body (header row first) as the ``dataframe_split`` payload it stands for;
    ``kinds``: each feature's kind (number, string, boolean). 400 for CSV that cannot be read,
    422 naming the line for a row of the wrong length or a header that names no feature."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadRequest(400, "malformed_csv", f"the CSV is not UTF-8: {err}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        lines = [(reader.line_num, row) for row in reader if row]
    except csv.Error as err:
        raise BadRequest(
            400, "malformed_csv", f"malformed CSV: line {reader.line_num}: {err}"
        ) from None
    if not lines:
        raise BadRequest(
            422, "invalid_request", "the CSV is empty: expected a header row, then rows"
        )
    _, header = lines[0]
    features = ", ".join(kinds)
    if not set(header) & kinds.keys():
        raise BadRequest(
            422,
            "invalid_request",
            f"the first CSV line must be a header row naming the columns (features: {features}); "
            f"it names none of them",
        )
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise BadRequest(
            422, "invalid_request", f"the CSV header names {', '.join(twice)} more than once"
        )
    column_kinds = [kinds.get(c) for c in header]
    data = []
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise BadRequest(
                422,
                "invalid_request",
                f"CSV line {line} has {len(row)} values for {len(header)} columns",
                [
                    {
                        "row": len(data),
                        "field": None,
                        "expected": f"{len(header)} values",
                        "got": f"{len(row)}",
                    }
                ],
            )
        data.append([_cell(v, k) for v, k in zip(row, column_kinds, strict=True)])
    return {"dataframe_split": {"columns": header, "data": data}}


PREDICT_METHODS = ("predict", "predict_proba")


def check_params(payload: Any, handle: Handle) -> None:
    """MLflow's ``params``, checked before anything is scored: only ``predict_method``, one of
    :data:`PREDICT_METHODS`, and ``predict_proba`` only for a model with probabilities."""
    if not isinstance(payload, dict) or payload.get("params") is None:
        return
    params = payload["params"]
    if not isinstance(params, dict):
        raise BadRequest(422, "invalid_request", "'params' must be an object")
    for key in params:
        if key != "predict_method":
            raise BadRequest(
                422,
                "invalid_request",
                f"params.{key} is not supported (supported: predict_method)",
            )
    method = params.get("predict_method", "predict")
    if method not in PREDICT_METHODS:
        raise BadRequest(
            422,
            "invalid_request",
            f"params.predict_method {method!r} is not supported "
            f"(supported: {', '.join(PREDICT_METHODS)})",
        )
    if method == "predict_proba" and not handle.proba:
        raise BadRequest(
            422,
            "invalid_request",
            f"params.predict_method 'predict_proba': the model {handle.label} has no class "
            "probabilities",
        )


def invocations_body(payload: Any, handle: Handle, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``/invocations``: the predictions (labels, or with ``predict_proba`` each
    row's probabilities in the order of ``classes``), and their ids for feedback."""
    params = payload.get("params") if isinstance(payload, dict) else None
    if isinstance(params, dict) and params.get("predict_method") == "predict_proba":
        return {
            "predictions": [list(r["probabilities"].values()) for r in results],
            "classes": handle.classes,
            "ids": [r["id"] for r in results],
        }
    return {"predictions": [r["prediction"] for r in results], "ids": [r["id"] for r in results]}

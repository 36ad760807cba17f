"""MLflow's scoring-server protocol: ``POST /invocations`` (with ``GET /ping``).

A body holds exactly one of ``dataframe_split`` (``{columns, data}``; without ``columns`` the
values are in signature order), ``dataframe_records`` (a list of row objects), ``instances`` or
``inputs`` (a list of row objects or of value lists in signature order; ``inputs`` may also be an
object of equal-length columns). The answer is MLflow's ``{"predictions": [...]}``, with the
prediction ids alongside in ``ids`` for feedback.
"""

from __future__ import annotations

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


def invocations_body(payload: Any, handle: Handle, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``/invocations``: the predictions, and their ids for feedback."""
    return {"predictions": [r["prediction"] for r in results], "ids": [r["id"] for r in results]}

"""pipeflow's own protocol: ``/v1/models/{name}/predict`` and ``/v1/models/{name}/feedback``.

A predict body is one row (a JSON object of feature values) or an array of them; the answer gives
each row its prediction id, its prediction, the class probabilities when the model has them, and
the flags of unusual inputs. The ids are what feedback refers to: a feedback body is
``{id, outcome}`` or an array of them, checked here in full before anything is recorded (an
outcome goes to the audit log as it came, so it must be JSON the log can write). An item may
carry ``attributes``: a flat object of short values (``{"region": "north"}``) recorded with the
outcome, e.g. a sensitive attribute that is not a model input, which monitoring's live bias
reads (:mod:`pipeflow.monitoring.kpis`).

Explanations (:mod:`pipeflow.governance.explain`) are asked for with ``?explain=true`` (any
predict body, tables too) or ``"explain": true`` in a JSON body: in a one-row object beside the
features, or ``{"rows": [...], "explain": true}`` for several (when the model has no feature of
that name). Each row's answer then carries ``explanation``: ``method``, ``output``, ``base`` and
``contributions`` (``{feature: value}``), plus ``class`` (classifiers) and ``evaluations``
(the kernel method's cost per row). A value other than true or false is a 422 naming the
parameter; a request without either is answered exactly as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeflow.errors import BadRequest
from pipeflow.serving.columnar import Decoded
from pipeflow.store.journal import dumps

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle

# the JSON Schema of one feedback item, a component of the OpenAPI document
FEEDBACK_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "outcome": {},
        "attributes": {
            "type": "object",
            "maxProperties": 32,
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
        },
    },
    "required": ["id", "outcome"],
    "additionalProperties": False,
}


def rows_from_native(payload: Any) -> list[Any]:
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list | Decoded):  # Decoded: already the rows' columns
        return payload  # type: ignore[return-value]
    raise BadRequest(422, "invalid_request", "expected a JSON object (one row) or an array of rows")


#: the ``explain`` query parameter in the OpenAPI document
EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "answer each row with its explanation: contributions per input column that "
    "add up, with base, to the model's margin",
}


def predict_schema(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a predict body whose rows are ``row``: a row, a list of rows, or
    ``{"rows": [...], "explain": true}``."""
    rows = {"type": "array", "items": row}
    explained = {
        "type": "object",
        "properties": {"rows": rows, "explain": {"type": "boolean"}},
        "required": ["rows", "explain"],
        "additionalProperties": False,
    }
    return {"oneOf": [row, rows, explained]}


#: what ``?explain=`` takes (any case)
EXPLAIN_VALUES = {"true": True, "1": True, "false": False, "0": False}


def explain_query(params: Any) -> bool | None:
    """The ``explain`` query parameter (None: not given); 422 naming it for another value."""
    value = params.get("explain")
    if value is None:
        return None
    found = EXPLAIN_VALUES.get(value.strip().lower())
    if found is None:
        raise BadRequest(
            422,
            "validation_error",
            f"query parameter 'explain': expected true or false, got {value[:40]!r}",
            [{"field": "explain", "expected": "true or false", "got": repr(value[:40])}],
        )
    return found


def explain_option(params: Any, payload: Any, names: list[str]) -> tuple[Any, bool]:
    """(the body without its ``explain`` field, whether explanations are asked for): from the
    query (``params``) and the body (see the module docstring); 422 naming ``explain`` for a
    value that is not a boolean, or when query and body disagree."""
    asked = explain_query(params)
    if isinstance(payload, dict) and "explain" in payload and "explain" not in names:
        payload = dict(payload)
        value = payload.pop("explain")
        if not isinstance(value, bool):
            raise BadRequest(
                422,
                "validation_error",
                f"field 'explain': expected true or false, got {dumps(value)[:40].decode()}",
                [{"field": "explain", "expected": "true or false", "got": repr(value)[:40]}],
            )
        if asked is not None and asked != value:
            raise BadRequest(
                422,
                "validation_error",
                f'?explain={str(asked).lower()} and "explain": {str(value).lower()} disagree',
                [{"field": "explain", "expected": "one answer", "got": "two"}],
            )
        asked = value
        if "rows" in payload and "rows" not in names and len(payload) == 1:
            payload = payload["rows"]
    return payload, bool(asked)


def predict_body(payload: Any, handle: Handle, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to a predict request: the model and version that answered, and the results."""
    return {"model": handle.name, "version": handle.version, "predictions": results}


#: the longest text outcome: a class label, never a document
MAX_OUTCOME = 200
#: the most attributes one feedback item may carry, and the longest name of one
MAX_ATTRIBUTES, MAX_ATTRIBUTE_NAME = 32, 64


def _is_label(value: Any) -> bool:
    """A scalar a model can predict: text (short), a number or a boolean; never a structure."""
    if isinstance(value, str):
        return len(value) <= MAX_OUTCOME
    return isinstance(value, int | float | bool)


def feedback_items(payload: Any) -> list[Any]:
    """The ``{id, outcome}`` items of a feedback body; 422 naming every problem."""
    items = payload if isinstance(payload, list) else [payload]
    problems = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(
                {
                    "row": i,
                    "field": None,
                    "expected": "an object with id and outcome",
                    "got": type(item).__name__,
                }
            )
            continue
        pid = item.get("id")
        if (
            not isinstance(pid, str)
            or not pid
            or len(pid) > 64
            or not all(c.isalnum() or c in "-_" for c in pid)
        ):
            problems.append(
                {
                    "row": i,
                    "field": "id",
                    "expected": "a prediction id (letters, digits, - or _)",
                    "got": repr(pid)[:80],
                }
            )
        if "outcome" not in item:
            problems.append(
                {
                    "row": i,
                    "field": "outcome",
                    "expected": "the true outcome",
                    "got": "nothing",
                }
            )
        elif not _is_label(item["outcome"]):
            problems.append(
                {
                    "row": i,
                    "field": "outcome",
                    "expected": f"a class label or a number (text of at most {MAX_OUTCOME} characters)",
                    "got": repr(item["outcome"])[:80],
                }
            )
        else:
            try:  # it goes to the audit log as it came; orjson nests 254 levels at most
                dumps({"outcome": item["outcome"]})  # nested as in the record
            except TypeError as err:
                problems.append(
                    {
                        "row": i,
                        "field": "outcome",
                        "expected": "a JSON value the audit log can hold",
                        "got": str(err),
                    }
                )
        if "attributes" in item:
            problems += _attribute_problems(i, item["attributes"])
        extra = item.keys() - {"id", "outcome", "attributes"}
        for key in extra:
            problems.append(
                {
                    "row": i,
                    "field": key,
                    "expected": "no such field (id, outcome, attributes)",
                    "got": "a value",
                }
            )
    if problems or not items:
        raise BadRequest(
            422, "validation_error", "feedback needs {id, outcome} per prediction", problems
        )
    return items


def _attribute_problems(row: int, attributes: Any) -> list[dict[str, Any]]:
    """What is wrong with a feedback item's ``attributes``: a flat object of at most
    :data:`MAX_ATTRIBUTES` names (letters, digits, ``_ . -``) to short text, numbers, booleans or
    null."""
    if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES:
        return [
            {
                "row": row,
                "field": "attributes",
                "expected": f"an object of at most {MAX_ATTRIBUTES} name: value pairs",
                "got": type(attributes).__name__
                if not isinstance(attributes, dict)
                else f"{len(attributes)} pairs",
            }
        ]
    problems = []
    for name, value in attributes.items():
        if not (
            0 < len(name) <= MAX_ATTRIBUTE_NAME and all(c.isalnum() or c in "_.-" for c in name)
        ):
            problems.append(
                {
                    "row": row,
                    "field": "attributes",
                    "expected": f"names of letters, digits, _ . - (at most {MAX_ATTRIBUTE_NAME})",
                    "got": repr(name)[:80],
                }
            )
        elif value is not None and not _is_label(value):
            problems.append(
                {
                    "row": row,
                    "field": f"attributes.{name}",
                    "expected": f"text of at most {MAX_OUTCOME} characters, a number, a "
                    "boolean or null",
                    "got": repr(value)[:80],
                }
            )
    return problems

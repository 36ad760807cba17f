"""Every JSON request body is parsed here, once: :func:`parse_json`.

orjson reads the body; what it refuses (``NaN``, ``Infinity``: the signature check names the
field) the standard parser reads, or words the error (400 ``malformed_json``). A key twice in one
object is refused (422 ``duplicate_key`` naming it), as the spec loader refuses duplicate YAML
keys, where orjson, like most parsers, would silently keep the last value: :func:`_unique_keys`
proves there is none without a second parse on the hot path (by counting colons), and only
otherwise parses again with a hook that sees every pair.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pipeflow.errors import BadRequest
from pipeflow.store.journal import dumps, loads


def parse_json(body: bytes, hint: str = "") -> Any:
    """``body`` as JSON (400 ``malformed_json`` saying why, and ``hint`` when it is not JSON):
    every JSON request body is decoded here, once."""
    try:
        return _unique_keys(body, loads(body))
    except ValueError:
        pass  # orjson refuses NaN/Infinity: the standard parser reads them, so the
        # signature check can name the field, and words the error if the JSON is broken
    try:
        value = json.loads(body, parse_int=_json_int, object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise BadRequest(400, "malformed_json", "the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(400, "malformed_json", f"malformed JSON: {err}{hint}") from None
    try:  # what orjson refused may also be what it cannot write (audit log, error replies)
        dumps(value)
    except TypeError as err:  # a lone surrogate escape ("\ud800"), or nesting orjson refuses
        raise BadRequest(400, "malformed_json", f"unusable JSON: {err}") from None
    return value


def _unique_keys(body: bytes, value: Any) -> Any:
    """``value`` (``body`` as orjson parsed it), or 422 if an object in ``body`` repeats a key:
    orjson, like most parsers, silently keeps the last value, as the spec loader refuses to.

    The hot path proves there is none without a second parse: outside strings, a ``:`` in JSON
    only ever follows a key, so ``body`` holds (pairs written) + (colons inside strings) colons,
    and ``value`` written back holds (pairs kept) + (colons inside the strings kept). Without a
    backslash (no ``\\u003a`` escapes) the strings are the same bytes, so the two counts are
    equal exactly when no pair was dropped. Otherwise the standard parser, with a hook that
    sees every pair, decides and names the key (a few times slower; benchmarked in
    docs/serving.md).

    Before writing anything, the rows of a predict body (an object, an array of objects, or
    ``{"rows": [...], ...}``) are counted (:func:`_row_pairs`): the body's colons are (pairs
    written) + (colons inside strings) >= (pairs kept) >= (pairs kept in the rows and the outer
    object), so when the body's colons equal that last count, no pair was dropped. That is every
    flat predict body whose strings hold no colon, for the price of ``len`` per row instead of
    writing the whole body again."""
    colons = count_colons(body)
    if colons == _row_pairs(value):
        return value
    try:  # orjson writes 255 levels of nesting where it reads 1,024: then the slow path
        written: bytes | None = dumps(value)
    except TypeError:
        written = None
    if written is not None and b"\\" not in body and colons == count_colons(written):
        return value
    # what orjson read and this parser cannot: orjson's reading stands
    with contextlib.suppress(ValueError, RecursionError):
        json.loads(body, parse_int=_json_int, object_pairs_hook=_refuse_duplicates)
    return value


def _row_pairs(value: Any) -> int:
    """The pairs of ``value``'s outer object or objects: of an object (with those of its
    ``rows``, an array of objects), or of an array of objects; -1 for anything else. A lower
    bound of the pairs kept: nested objects are not counted."""
    if type(value) is dict:
        rows = value.get("rows")
        if type(rows) is list and _all_objects(rows):
            return len(value) + sum(map(len, rows))
        return len(value)
    if type(value) is list and value and _all_objects(value):
        return sum(map(len, value))
    return -1


def _all_objects(items: list[Any]) -> bool:
    return not items or set(map(type, items)) == {dict}


def count_colons(data: bytes) -> int:
    if len(data) < 4096:
        return data.count(b":")
    import numpy as np  # a vectorised count: bytes.count is a byte-at-a-time loop

    return int(np.count_nonzero(np.frombuffer(data, np.uint8) == 58))


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise BadRequest(
            422,
            "duplicate_key",
            f"duplicate key {key!r} in a JSON object: each key may appear once",
            [{"field": key, "expected": "each key once in an object", "got": "the key twice"}],
        )
    return found


def _json_int(text: str) -> int | float:
    """Integers as orjson reads them: beyond 64 bits they become floats (so a 400-digit number
    is ``inf``, refused by the signature as not finite, not an integer no float can hold)."""
    if len(text) < 19:
        return int(text)
    value = float(text)
    if -(2**63) <= value < 2**64:
        number = int(text)
        if -(2**63) <= number < 2**64:
            return number
    return value

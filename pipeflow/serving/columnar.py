"""A native predict body of clean rows, decoded straight into the model's columns.

The usual large request is a JSON array of row objects holding exactly the features, numbers
for the numeric ones. The general path (:func:`pipeflow.serving.jsonbody.parse_json`, then
:meth:`pipeflow.registry.signature.Signature.check_columns`) builds a dict per row and a Python
object per value, only to gather the values back into one float64 matrix: on 1000-row requests a
quarter of the server's CPU. :func:`decode` instead has msgspec decode the body into one
*struct* per row, typed by the signature (``float | None`` per numeric feature, ``str | None``
or ``bool | None`` for the others, no other field: the types the signature accepts), whose
numeric fields (the struct's first: each row's ``msgspec.structs.astuple`` starts with them) go
into the matrix in one ``numpy.fromiter`` pass. Struct objects are not tracked by the garbage
collector, and no key is allocated per row. The same array under ``rows`` of a body that also
says ``"explain": false`` (``{"rows": [...], "explain": false}``, the native protocol's other
form, when neither key is a feature) is decoded the same way, inside a struct of those two
fields; ``"explain": true`` leaves the body to the general path (the rows are read for more
than the model), and so does a request with the ``explain`` query parameter.

It answers only what it can answer exactly as the general path would, and otherwise says so
(None), and the body takes the general path from the start, which names each problem:

- anything msgspec refuses (not an array of objects or that wrapper, a missing or extra field,
  a value of another type, ``NaN``, a number beyond float range, malformed JSON, a lone
  surrogate);
- a key twice in one row (or in the wrapper), which msgspec, like orjson, would silently keep
  the last value of (the general path refuses it, 422 ``duplicate_key``): the body's colons are
  (pairs written) + (colons inside strings), and they are counted against (rows x features),
  the pairs kept, plus the wrapper's two; any difference, a repeated key or a colon in a
  string, leaves the body to the general path;
- no rows, or more than ``--max-rows``; rows that are not clean by the signature's own column
  checks (:meth:`~pipeflow.registry.signature.Signature.checked_columns`: non-finite numbers,
  beyond float32, strings the column flags refuse); unusual rows under ``--reject-unusual``.

The matrix, the other columns and the flags come out of the same
:meth:`~pipeflow.registry.signature.Signature.checked_columns` as the general path's, so the
answers, the unusual-input flags and the audit records are the same; the property tests in
tests/serving/test_columnar.py compare both paths body by body. The rows as dicts are made only
when something asks for them (the shadow, which builds its own frame from the rows): then from
the body, as the general path reads it.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeflow.serving.jsonbody import count_colons
from pipeflow.store.journal import loads

if TYPE_CHECKING:
    from pipeflow.registry.signature import Columns, Signature


class Decoded(Sequence[Any]):
    """The rows of a body :func:`decode` took: their flags and columns, checked against
    ``signature``; the rows as dicts only when asked for (its length is free)."""

    def __init__(
        self,
        body: bytes,
        n: int,
        signature: Signature,
        flags: list[list[str]],
        data: Columns,
        wrapped: bool = False,
    ):
        self.body, self.n, self.signature = body, n, signature
        self.flags, self.data = flags, data
        self.wrapped = wrapped  # the body is {"rows": [...], "explain": false}
        self._rows: list[dict[str, Any]] | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            value = loads(self.body)
            self._rows = value["rows"] if self.wrapped else value
        return self._rows

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


def decode(
    body: bytes, signature: Signature, *, max_rows: int, reject_unusual: bool
) -> Decoded | None:
    """The rows of ``body`` decoded into ``signature``'s columns, or None: the general path
    answers it (see the module docstring)."""
    first = body[:1]
    # {"rows": [...], "explain": ...} where neither key is a feature (else it is one row)
    wrapped = first == b"{" and not WRAPPER.intersection(signature.names)
    if first != b"[" and not wrapped:
        return None  # one row, leading whitespace: the general path
    decoder = _decoder(tuple((f.name, f.expect) for f in signature.features), wrapped)
    if decoder is None:
        return None
    import msgspec

    try:
        value = decoder.decode(body)
    except msgspec.DecodeError:  # ValidationError too
        return None
    if wrapped and value.explain:
        return None  # explanations: the rows are read for more than the model
    structs = value.rows if wrapped else value
    n, width = len(structs), len(signature.features)
    # the wrapper's two keys are two colons more
    if not 0 < n <= max_rows or count_colons(body) != n * width + 2 * wrapped:
        return None
    numeric, _ = signature.numeric_getter
    # each row's values as a tuple, the numeric features' first (the struct's field order): a
    # C loop over the struct's slots, less than half the time of an attrgetter of its fields
    rows = list(map(msgspec.structs.astuple, structs))
    del structs
    matrix, nones = None, 0
    if numeric:
        matrix, nones = _matrix(rows, len(numeric), width)
    others = [
        (at, f, list(map(operator.itemgetter(len(numeric) + j), rows)))
        for j, (at, f) in enumerate(_others(signature))
    ]
    checked = signature.checked_columns(n, numeric, matrix, nones, others)
    if checked is None or (reject_unusual and any(checked[0])):
        return None
    return Decoded(body, n, signature, checked[0], checked[1], wrapped)


def _others(signature: Signature) -> list[tuple[int, Any]]:
    """(index, feature) of the features that are not numbers, in signature order."""
    return [(at, f) for at, f in enumerate(signature.features) if f.expect != "number"]


def _matrix(rows: list[tuple[Any, ...]], k: int, width: int) -> tuple[Any, int]:
    """The first ``k`` values of each row (the numeric features') as a (rows, k) float64 matrix,
    nulls as NaN (``numpy.fromiter`` reads None as NaN), and how many nulls: every NaN, as
    msgspec never reads a NaN from JSON."""
    import numpy as np

    n = len(rows)
    if k == width:  # numbers only: every value of every row
        values: Any = itertools.chain.from_iterable(rows)
    elif k == 1:
        values = map(operator.itemgetter(0), rows)
    else:
        values = itertools.chain.from_iterable(map(operator.itemgetter(slice(0, k)), rows))
    matrix = np.fromiter(values, np.float64, count=n * k).reshape(n, k)
    return matrix, int(np.count_nonzero(np.isnan(matrix)))


def _field(at: int) -> str:
    """The struct attribute of the feature at index ``at`` (features are renamed: a feature's
    name need not be a Python identifier)."""
    return f"f{at}"


#: the keys of a body that holds its rows with the explain option (``{"rows": [...],
#: "explain": false}``, :func:`pipeflow.serving.protocols.native.explain_option`)
WRAPPER = frozenset({"rows", "explain"})


@functools.lru_cache(maxsize=64)
def _decoder(features: tuple[tuple[str, str], ...], wrapped: bool = False) -> Any:
    """A msgspec decoder of an array of rows of exactly ``features`` ((name, expect) in
    signature order), each of the JSON type the signature accepts or null (``wrapped``: of an
    object of exactly that array as ``rows`` and a boolean ``explain``); None without msgspec
    (the general path then answers every body)."""
    try:
        import msgspec
    except ImportError:  # pragma: no cover - msgspec is a dependency; keep working without it
        return None
    kinds = {"number": float, "string": str, "boolean": bool}
    # the numeric features first, then the others, each in signature order: a row's tuple of
    # values (msgspec.structs.astuple) starts with the matrix's row
    order = sorted(enumerate(features), key=lambda feature: feature[1][1] != "number")
    fields = [(_field(at), kinds[expect] | None) for at, (_, expect) in order]
    row = msgspec.defstruct(
        "Row",
        fields,  # type: ignore[arg-type]
        rename={_field(at): name for at, (name, _) in enumerate(features)},
        forbid_unknown_fields=True,
        gc=False,
    )
    if not wrapped:
        return msgspec.json.Decoder(list[row])  # type: ignore[valid-type]
    body = msgspec.defstruct(
        "Body",
        [("rows", list[row]), ("explain", bool)],  # type: ignore[valid-type]
        forbid_unknown_fields=True,
        gc=False,
    )
    return msgspec.json.Decoder(body)

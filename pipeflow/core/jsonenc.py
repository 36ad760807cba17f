"""JSON encoders made once, for the text a run writes per stage: digests, manifests, records.

``json.dumps(value, sort_keys=True)`` builds a ``JSONEncoder`` per call, and even a kept
encoder's ``encode`` builds its C encoder again on every call (with a fresh table of the
containers being encoded, to find cycles). For the small values a run encodes several times a
stage (a config, a stage's input digests, a manifest) that set-up costs about as much as the
encoding. :func:`encoder` makes the C encoder once and calls it directly: the same text as
``json.JSONEncoder(**options).encode``, to the byte (the C encoder is what ``encode`` runs).

Only for values pipeflow builds itself, which hold no cycles: the C encoder is made without a
cycle check (a shared table would be left holding entries by an encoding that failed half-way,
and one per call is the cost this saves), so a value that contained itself would end in
``RecursionError`` instead of ``ValueError``. A stage's output (user data) goes through
``JSONEncoder.encode``, as before (:mod:`pipeflow.store.codecs`).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def encoder(**options: Any) -> Callable[[Any], str]:
    """``json.JSONEncoder(**options).encode`` (no ``indent``), made once; see the docstring."""
    enc = json.JSONEncoder(**options, check_circular=False)
    make = json.encoder.c_make_encoder
    if make is None or enc.indent is not None:  # pragma: no cover - CPython has the C encoder
        return enc.encode
    text = (
        json.encoder.encode_basestring_ascii if enc.ensure_ascii else json.encoder.encode_basestring
    )
    c_encode = make(
        None,
        enc.default,
        text,
        enc.indent,
        enc.key_separator,
        enc.item_separator,
        enc.sort_keys,
        enc.skipkeys,
        enc.allow_nan,
    )

    def encode(value: Any) -> str:
        if isinstance(value, str):  # what JSONEncoder.encode does for a bare string
            return text(value)
        return "".join(c_encode(value, 0))

    return encode


#: ``json.dumps(value, sort_keys=True)``: stage records' columns, manifests (a few a stage)
dumps_sorted = encoder(sort_keys=True)

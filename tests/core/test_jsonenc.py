"""The encoders made once write what ``json.JSONEncoder(...).encode`` writes, byte for byte:
digests, cache keys, manifests and stage records stay what stores already hold."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeflow.core.hashing import digest_json, stage_key
from pipeflow.core.jsonenc import dumps_sorted, encoder

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=20,
)

_OPTIONS: list[dict[str, Any]] = [
    {"sort_keys": True},
    {"sort_keys": True, "separators": (",", ":"), "default": str},
    {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
    {},
]


@given(_values)
def test_every_option_set_writes_what_json_writes(value: Any) -> None:
    for options in _OPTIONS:
        assert encoder(**options)(value) == json.JSONEncoder(**options).encode(value)
    assert dumps_sorted(value) == json.dumps(value, sort_keys=True)


def test_default_is_called_for_values_json_cannot_write() -> None:
    canonical = encoder(sort_keys=True, separators=(",", ":"), default=str)
    value = {"path": Path("/tmp/x"), "n": Decimal("1.5"), "nested": [{"b": 1, "a": math.pi}]}
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def test_a_value_json_cannot_write_fails_as_json_fails_and_the_next_one_is_written() -> None:
    try:
        json.dumps({"a": object()}, sort_keys=True)
    except TypeError as err:
        expected = str(err)
    try:
        dumps_sorted({"a": [object()]})
    except TypeError as err:
        assert str(err) == expected
    else:  # pragma: no cover
        raise AssertionError("no TypeError")
    shared = {"x": 1}
    assert dumps_sorted([shared, shared]) == '[{"x": 1}, {"x": 1}]'


def test_digests_and_cache_keys_are_those_of_canonical_json() -> None:
    import hashlib

    config = {"function": "noop:noop", "kwargs": {"i": 5}, "outputs": ["out"], "ü": 1.5}
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    assert digest_json(config) == hashlib.sha256(canonical.encode()).hexdigest()
    # what main's json.JSONEncoder made of this key (a store's keys must not move)
    key = stage_key("python", "1", "c" * 64, "f" * 64, {"x": "a" * 64, "b": "b" * 64})
    assert key == "ff2ef05fd577b9e569fb1c9908cb7c2c64082fb30075a1ea15812361afea1332"

"""Codecs: stage outputs to bytes and back without pickle, deterministically."""

from __future__ import annotations

import datetime as dt
import operator

import numpy as np
import pandas as pd
import pytest

from pipeflow.store import codecs
from pipeflow.store.codecs import UnsupportedOutput


def _round_trip(obj: object) -> tuple[str, object]:
    codec, data = codecs.encode(obj)
    assert isinstance(data, bytes)
    return codec, codecs.decode(codec, data)


def test_bytes_and_bytearray() -> None:
    assert _round_trip(b"\x00\xffraw") == ("bytes", b"\x00\xffraw")
    assert _round_trip(bytearray(b"abc")) == ("bytes", b"abc")


def test_dataframe_round_trips_through_parquet_with_dtypes_and_index() -> None:
    frame = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [0.5, None, 2.5],
            "s": ["a", "b", None],
            "b": [True, False, True],
            "t": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "c": pd.Categorical(["x", "y", "x"]),
        },
        index=pd.Index([10, 20, 30], name="row"),
    )
    codec, back = _round_trip(frame)
    assert codec == "parquet"
    pd.testing.assert_frame_equal(back, frame)


@pytest.mark.parametrize("threaded_from", [0, 1 << 40], ids=["arrow-threads", "this-thread"])
def test_a_table_decodes_the_same_on_arrows_threads_and_on_the_calling_thread(
    threaded_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.random(50_000), "k": rng.integers(0, 9, 50_000), "s": ["a", "bb"] * 25_000},
        index=pd.RangeIndex(7, 50_007, name="row"),
    )
    monkeypatch.setattr(codecs, "THREADED_PARQUET", threaded_from)
    codec, back = _round_trip(frame)
    pd.testing.assert_frame_equal(back, frame)


def test_a_small_table_decodes_without_starting_arrows_thread_pools(tmp_path) -> None:
    """A process that started Arrow's pools can abort as it exits (apache/arrow#34314): reading a
    small stage output (``pipeflow runs output``, a cached run) must not start them."""
    import subprocess
    import sys

    codec, data = codecs.encode(pd.DataFrame({"id": range(30), "v": [i * 1.5 for i in range(30)]}))
    (tmp_path / "t.parquet").write_bytes(data)
    script = (
        "import os, sys\n"
        "import pandas, pyarrow, pyarrow.parquet\n"
        "from pipeflow.store import codecs\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "frame = codecs.decode('parquet', open(sys.argv[1], 'rb').read())\n"
        "print(before, len(os.listdir('/proc/self/task')), len(frame))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "t.parquet")],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after, rows = map(int, out.stdout.split())
    assert rows == 30 and after == before, out.stdout


def test_empty_dataframe_round_trips() -> None:
    frame = pd.DataFrame({"a": pd.Series([], dtype="int64")})
    codec, back = _round_trip(frame)
    assert codec == "parquet"
    pd.testing.assert_frame_equal(back, frame)


def test_dataframe_encoding_is_deterministic() -> None:
    frame = pd.DataFrame({"a": range(100), "b": [str(i) for i in range(100)]})
    assert codecs.encode(frame) == codecs.encode(frame.copy())


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.linspace(0, 1, 7),
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.zeros((0, 3)),
        np.array(3.5),
    ],
)
def test_numpy_arrays_round_trip_with_dtype_and_shape(array: np.ndarray) -> None:
    codec, back = _round_trip(array)
    assert codec == "npy"
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_object_arrays_are_refused() -> None:
    with pytest.raises(UnsupportedOutput, match="dtype=object cannot be stored safely"):
        codecs.encode(np.array([{"a": 1}, None], dtype=object))


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -7, 2.5, "", "héllo ✓", [1, "a", None], {"b": 1, "a": [True, {"z": None}]}],
)
def test_json_values_round_trip(value: object) -> None:
    codec, back = _round_trip(value)
    assert codec == "json"
    assert back == value


def test_json_encoding_is_canonical() -> None:
    assert codecs.encode({"b": 1, "a": 2}) == codecs.encode({"a": 2, "b": 1})
    assert codecs.encode({"a": "é"})[1] == '{"a":"é"}'.encode()


@pytest.mark.parametrize(
    "value, type_name",
    [
        (object(), "builtins.object"),
        ({1, 2}, "builtins.set"),
        (dt.date(2024, 1, 1), "datetime.date"),
        ({"ok": 1, "bad": lambda: 0}, "builtins.dict"),
    ],
)
def test_unsupported_outputs_are_a_clear_error(value: object, type_name: str) -> None:
    with pytest.raises(UnsupportedOutput) as info:
        codecs.encode(value)
    message = str(info.value)
    assert f"cannot store a {type_name}" in message
    assert "pandas DataFrames (Parquet), numpy arrays (.npy), bytes and JSON values" in message


def test_unknown_codec_on_decode() -> None:
    with pytest.raises(ValueError, match="unknown codec 'pickle'; known: bytes, parquet"):
        codecs.decode("pickle", b"")


def test_sklearn_model_round_trips_through_skops_deterministically() -> None:
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    codec, data = codecs.encode(model)
    assert codec == "skops"
    assert codecs.encode(model)[1] == data  # same model, same bytes: stable cache keys
    back = codecs.decode(codec, data)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_model_with_untrusted_types_is_refused_on_load() -> None:
    from sklearn.preprocessing import FunctionTransformer

    codec, data = codecs.encode(FunctionTransformer(func=operator.neg))
    assert codec == "skops"
    with pytest.raises(UnsupportedOutput, match="untrusted types: _operator.neg"):
        codecs.decode(codec, data)

"""How stage outputs become bytes in the store, and back, without pickle.

Each codec is chosen by the object's type, encodes deterministically (the same value gives the same
bytes, so the content hash, and with it the cache, is stable) and decodes without running code
from the file:

==========  =====================================  ===========================================
codec       objects                                 format
==========  =====================================  ===========================================
bytes       bytes, bytearray                        raw
parquet     pandas.DataFrame                        Parquet via pyarrow (index kept; a column
                                                    mixing types is stored as text)
npy         numpy.ndarray (not object dtype)        .npy, ``allow_pickle=False``
json        None, bool, int, float, str, list, dict canonical JSON (sorted keys)
skops       scikit-learn estimators and pipelines   skops (zip of JSON + arrays), ids, order and
            (xgboost's sklearn models included)     timestamps fixed (same bytes in any process)
==========  =====================================  ===========================================

pandas, pyarrow, numpy and skops are imported only when such an object is met (skops through
:func:`pipeflow.store.skops_import.skops_io`, which spares it importing all of scikit-learn).

Models are never pickled: skops stores an estimator as a schema of its attributes, and loading
refuses any type outside scikit-learn, numpy, scipy and xgboost's model classes (``TRUSTED``), so
a tampered file cannot make pipeflow run code. (xgboost's booster inside is its own binary model
format.) The artifact's content hash is checked before any of that, on every read.
"""

from __future__ import annotations

import io
import json
from typing import Any

from pipeflow.errors import UnsupportedOutput

__all__ = ["UnsupportedOutput", "decode", "encode"]

CODECS = ("bytes", "parquet", "npy", "json", "skops")
#: a stored Parquet table this large (bytes) is decoded on Arrow's thread pools (see decode)
THREADED_PARQUET = 8 << 20
#: module prefixes (or exact type names) a stored model may contain
TRUSTED = (
    "sklearn.",
    "numpy.",
    "scipy.",
    "xgboost.core.Booster",
    "xgboost.sklearn.",
    "pipeflow.models.",
)


def _is(obj: Any, module: str, name: str) -> bool:
    cls = type(obj)
    return cls.__name__ == name and cls.__module__.split(".")[0] == module


#: the json codec's canonical form, its encoder made once (``json.dumps`` with options makes one
#: per call, and a run of small stages encodes an output a stage); encoding keeps no state
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode(obj: Any) -> tuple[str, bytes]:
    """Pick a codec for ``obj`` and encode it; raises :class:`UnsupportedOutput`."""
    if isinstance(obj, bytes | bytearray):
        return "bytes", bytes(obj)
    if _is(obj, "pandas", "DataFrame"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        try:
            table = pa.Table.from_pandas(obj, preserve_index=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid, OverflowError):
            table = pa.Table.from_pandas(_text_for_mixed_columns(obj), preserve_index=True)
        pq.write_table(table, buf, compression="zstd")
        return "parquet", buf.getvalue()
    if _is(obj, "numpy", "ndarray"):
        import numpy as np

        if obj.dtype == object:
            raise UnsupportedOutput(
                "numpy arrays of dtype=object cannot be stored safely (they need pickle)"
            )
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return "npy", buf.getvalue()
    if _is_estimator(obj):
        from pipeflow.store.skops_import import skops_io

        return "skops", _stable_zip(skops_io().dumps(obj))
    try:
        text = _CANONICAL.encode(obj)
    except (TypeError, ValueError) as err:
        raise UnsupportedOutput(
            f"cannot store a {type(obj).__module__}.{type(obj).__qualname__}: pipeflow stores pandas DataFrames "
            f"(Parquet), numpy arrays (.npy), bytes and JSON values (dict, list, str, numbers, bool, None) ({err})"
        ) from None
    return "json", text.encode("utf-8")


def decode(codec: str, data: bytes) -> Any:
    if codec == "bytes":
        return data
    if codec == "json":
        return json.loads(data.decode("utf-8"))
    if codec == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Arrow's thread pools only for a table worth them: a process that started them can abort
        # as it exits ("terminate called without an active exception": a pool thread still
        # joinable while C++ statics are destroyed, apache/arrow#34314), here about one exit in
        # 300 to 700; a small table decodes as fast on this thread and starts no pool
        # (``read_table`` would: its dataset reader starts one whatever ``use_threads`` says)
        threads = len(data) >= THREADED_PARQUET
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=threads)
        return table.to_pandas(use_threads=threads)
    if codec == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if codec == "skops":
        from pipeflow.store.skops_import import skops_io

        skops = skops_io()
        untrusted = skops.get_untrusted_types(data=data)
        refused = [t for t in untrusted if not t.startswith(TRUSTED)]
        if refused:
            raise UnsupportedOutput(
                f"refusing to load a model containing untrusted types: {', '.join(refused)}"
            )
        return skops.loads(data, trusted=untrusted)
    raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")


def _text_for_mixed_columns(frame: Any) -> Any:
    """Parquet columns have one type; a column mixing them (``["12", "n/a", -5]``, typical of
    raw data) is stored as text, nulls kept, rather than failing the stage."""
    import pyarrow as pa

    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        try:
            pa.array(frame[column], from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid, OverflowError):
            series = frame[column]
            frame[column] = series.where(series.isna(), series.astype(str))
    return frame


def _is_estimator(obj: Any) -> bool:
    """A scikit-learn style estimator (sklearn's own, or xgboost's sklearn wrappers)."""
    module = type(obj).__module__.split(".")[0]
    if type(obj).__module__ == "pipeflow.models":
        return True
    return module in ("sklearn", "xgboost") and hasattr(obj, "get_params") and hasattr(obj, "fit")


#: attributes whose stored value is run-dependent and carries no model state, per class module
#: prefix: scikit-learn's text vectorizers remember ``id(self.stop_words)`` in ``_stop_words_id``
#: only to skip re-checking the stop words, so it is stored as ``None`` (what a fresh estimator has,
#: and what a model loaded in another process amounts to anyway: the id never matches there)
_RUN_DEPENDENT = {"sklearn.feature_extraction.": ("_stop_words_id",)}


def _stable_zip(data: bytes) -> bytes:
    """Rewrite a skops zip so the same model always gives the same bytes (and content hash), in
    any process, for the cache, early cutoff and registry dedup: fixed timestamps and order; the
    object ids skops writes (``__id__`` and array file names, from ``id()`` or ``uuid4()``)
    renumbered in order of appearance in the schema with its keys sorted (the order skops writes
    attributes in follows the object's ``__dict__``, which differs once a model was loaded), with
    every JSON primitive given its own id (whether two
    equal numbers or strings are one object is an interpreter detail, and meaningless for
    immutable values); and run-dependent attributes (:data:`_RUN_DEPENDENT`) set to ``None``."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as src:
        files = {name: src.read(name) for name in src.namelist()}
    ids: dict[int, int] = {}
    names: dict[str, str] = {}
    counter = iter(range(1 << 62))

    def new_id(old: int) -> int:
        if old not in ids:
            ids[old] = next(counter)
        return ids[old]

    def renumber(node: Any) -> Any:
        if isinstance(node, dict):
            node = _sorted_dict_node(_blank_run_dependent(node))
            out = {}
            for key, value in sorted(node.items()):
                if key == "__id__" and isinstance(value, int):
                    if node.get("__loader__") == "JsonNode":
                        out[key] = next(counter)
                    else:
                        out[key] = new_id(value)
                elif key == "file" and isinstance(value, str) and value in files:
                    suffix = value.rsplit(".", 1)[-1] if "." in value else "bin"
                    out[key] = names.setdefault(value, f"f{len(names)}.{suffix}")
                else:
                    out[key] = renumber(value)
            return out
        if isinstance(node, list):
            return [renumber(v) for v in node]
        return node

    schema = renumber(json.loads(files["schema.json"]))
    renamed = {"schema.json": json.dumps(schema, indent=2, sort_keys=True).encode()}
    for name, content in files.items():
        if name != "schema.json":
            renamed[names.get(name, name)] = content
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(renamed):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, renamed[name])
    return out.getvalue()


def _sorted_dict_node(node: dict[str, Any]) -> dict[str, Any]:
    """A skops dict node with its entries in key order: its ``key_types`` list is matched to the
    entries by position, so it is reordered with them (the schema is written with sorted keys)."""
    content, key_types = node.get("content"), node.get("key_types")
    if node.get("__loader__") != "DictNode" or not isinstance(content, dict):
        return node
    types = key_types.get("content") if isinstance(key_types, dict) else None
    if not isinstance(types, list) or len(types) != len(content):
        return node
    entries = sorted(zip(content.items(), types, strict=True), key=lambda e: e[0][0])
    return {
        **node,
        "content": dict(item for item, _ in entries),
        "key_types": {**key_types, "content": [t for _, t in entries]},
    }


def _blank_run_dependent(node: dict[str, Any]) -> dict[str, Any]:
    """For an object node of a class listed in :data:`_RUN_DEPENDENT`, the node with those
    attributes stored as JSON ``null``; any other node unchanged."""
    module = node.get("__module__")
    if node.get("__loader__") != "ObjectNode" or not isinstance(module, str):
        return node
    names = [
        n for prefix, attrs in _RUN_DEPENDENT.items() if module.startswith(prefix) for n in attrs
    ]
    state = node.get("content")
    attrs = state.get("content") if isinstance(state, dict) else None
    if not names or not isinstance(attrs, dict):
        return node
    changed = dict(attrs)
    for name in names:
        value = changed.get(name)
        if isinstance(value, dict) and value.get("__loader__") == "JsonNode":
            changed[name] = {**value, "content": "null"}
    return {**node, "content": {**state, "content": changed}}

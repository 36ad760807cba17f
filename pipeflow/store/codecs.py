"""How stage outputs become bytes in the store, and back, without pickle.

Each codec is chosen by the object's type, encodes deterministically (the same value gives the same
bytes, so the content hash, and with it the cache, is stable) and decodes without running code
from the file:

==========  =====================================  ===========================================
codec       objects                                 format
==========  =====================================  ===========================================
bytes       bytes, bytearray                        raw
parquet     pandas.DataFrame                        Parquet via pyarrow (index kept)
npy         numpy.ndarray (not object dtype)        .npy, ``allow_pickle=False``
json        None, bool, int, float, str, list, dict canonical JSON (sorted keys)
==========  =====================================  ===========================================

pandas, pyarrow and numpy are imported only when such an object is met.
"""

from __future__ import annotations

import io
import json
from typing import Any

CODECS = ("bytes", "parquet", "npy", "json")


class UnsupportedOutput(TypeError):
    """The object has no safe codec."""


def _is(obj: Any, module: str, name: str) -> bool:
    cls = type(obj)
    return cls.__name__ == name and cls.__module__.split(".")[0] == module


def encode(obj: Any) -> tuple[str, bytes]:
    """Pick a codec for ``obj`` and encode it; raises :class:`UnsupportedOutput`."""
    if isinstance(obj, bytes | bytearray):
        return "bytes", bytes(obj)
    if _is(obj, "pandas", "DataFrame"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        table = pa.Table.from_pandas(obj, preserve_index=True)
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
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
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
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pandas()
    if codec == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")

"""The ``ingest`` stage: read a table from a file or any fsspec URL, as a versioned dataset.

::

    raw:
      type: ingest
      with:
        path: data/claims.csv              # beside the spec, or s3://..., memory://..., https://...
        format: csv                        # csv | parquet | json | jsonl | excel; default: from the suffix
        columns: {amount: float, submitted: datetime, region: category}
        read_options: {sep: ";"}           # passed to the pandas reader

Why the source's content is part of the cache key: a dataset is identified by what is in it, not
by its name, so replacing ``claims.csv`` re-runs the pipeline from here, and the fingerprint is
recorded with every run (``code_digest`` of the stage run): which data a model was trained on is
always known. Local files are hashed (memoised by size and mtime); for remote files the store's
own checksum (ETag, md5, size + mtime) is used, so nothing is downloaded just to plan.

Declared ``columns`` are enforced: a value that does not convert is an error naming the column,
the row and the value, never a silent NaN. Everything else is read as the reader infers it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from pipeflow.core.stage import CheckContext, Keywords, Port, Stage, StageConfig, StageContext

Format = Literal["csv", "parquet", "json", "jsonl", "excel"]
ColumnType = Literal["string", "int", "float", "bool", "datetime", "category"]
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "excel",
    ".xls": "excel",
}


class IngestConfig(StageConfig):
    path: str = Field(min_length=1, description="file path (relative to the spec) or fsspec URL")
    format: Format | None = Field(
        None, description="csv, parquet, json, jsonl or excel; default from the suffix"
    )
    columns: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="declared column types, enforced: string, int, float, bool, datetime, category",
    )
    read_options: Keywords = Field(description="keyword arguments for the pandas reader")
    storage_options: Keywords = Field(description="fsspec options (credentials, ...)")


class IngestStage(Stage[IngestConfig]):
    """Read a table (CSV, Parquet, JSON/JSONL, Excel) from a path or fsspec URL."""

    version: ClassVar[str] = "1"
    outputs: ClassVar[Mapping[str, Port]] = {"out": Port("table", description="the table read")}
    description = "Read a table (CSV, Parquet, JSON/JSONL, Excel) from a path or any fsspec URL."

    @classmethod
    def fingerprint(cls, config: IngestConfig, base_dir: Path) -> str:  # type: ignore[override]
        return source_fingerprint(
            _url(config.path, base_dir),
            json.dumps(config.storage_options, sort_keys=True, default=str),
        )

    @classmethod
    def check_config(cls, config: BaseModel, ctx: CheckContext) -> list[tuple[str, str]]:
        """A local file must be there (a URL is left to the run: it may need credentials)."""
        assert isinstance(config, IngestConfig)
        url = _url(config.path, ctx.base_dir)
        if "://" in url and not url.startswith("file://"):
            return []
        path = url.removeprefix("file://")
        if os.path.exists(path):
            return []
        return [("path", f"no file at {path}")]

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        config = self.config
        url = _url(config.path, ctx.base_dir)
        fmt = config.format or _format_of(config.path)
        frame = _read(url, fmt, config.read_options, config.storage_options)
        missing = [c for c in config.columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{config.path}: declared column(s) {', '.join(missing)} not found (columns: {', '.join(map(str, frame.columns))})"
            )
        for column, kind in config.columns.items():
            frame[column] = _convert(frame[column], kind, column, config.path)
        ctx.logger.info(
            "ingested %s: %d rows x %d columns", config.path, len(frame), len(frame.columns)
        )
        return {"out": frame}


def _url(path: str, base_dir: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str(Path(base_dir) / path)


def _format_of(path: str) -> Format:
    suffix = Path(path.split("?", 1)[0]).suffix.lower()
    if suffix in (".gz", ".bz2", ".zst", ".xz"):
        suffix = Path(path.split("?", 1)[0][: -len(suffix)]).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; set `format:` (csv, parquet, json, jsonl, excel)"
        ) from None


def _read(url: str, fmt: Format, options: dict[str, Any], storage_options: dict[str, Any]) -> Any:
    import pandas as pd

    kwargs = dict(options)
    if "://" in url and storage_options:
        kwargs.setdefault("storage_options", storage_options)
    try:
        if fmt == "csv":
            if url.endswith(".tsv"):
                kwargs.setdefault("sep", "\t")
            return pd.read_csv(url, **kwargs)
        if fmt == "parquet":
            return pd.read_parquet(url, **kwargs)
        if fmt == "json":
            return pd.read_json(url, **kwargs)
        if fmt == "jsonl":
            return pd.read_json(url, lines=True, **kwargs)
        return pd.read_excel(url, **kwargs)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {url}") from None
    except ImportError as err:
        raise ImportError(f"reading {fmt} from {url} needs an extra package: {err}") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {url} as {fmt}: {err}") from None


def _convert(series: Any, kind: ColumnType, column: str, path: str) -> Any:
    import pandas as pd

    if kind == "string":
        return series.astype("string")
    if kind == "category":
        return series.astype("category")
    if kind == "bool":
        mapping = {
            "true": True,
            "false": False,
            "yes": True,
            "no": False,
            "y": True,
            "n": False,
            "t": True,
            "f": False,
            "1": True,
            "0": False,
        }
        lowered = series.astype("string").str.strip().str.lower()
        converted = lowered.map(mapping)
        bad = series.notna() & converted.isna()
        _refuse(series, bad, column, path, "a boolean (true/false, yes/no, t/f, 1/0)")
        return converted.astype("boolean")
    if kind == "datetime":
        converted = pd.to_datetime(series, errors="coerce", format="mixed")
        expected = "a date or time"
    else:
        converted = pd.to_numeric(series, errors="coerce")
        expected = "a number"
    bad = series.notna() & converted.isna()
    _refuse(series, bad, column, path, expected)
    if kind == "int":
        fractional = converted.notna() & (converted != converted.round())
        _refuse(series, fractional, column, path, "a whole number")
        return converted.astype("Int64")
    if kind == "float":
        return converted.astype("float64")
    return converted


def _refuse(series: Any, bad: Any, column: str, path: str, expected: str) -> None:
    if bad.any():
        index = bad.idxmax()
        raise ValueError(
            f"{path}: column '{column}' row {index}: {series[index]!r} is not {expected} "
            f"({int(bad.sum())} such value(s) in the column; read it as string and clean it in a transform stage)"
        )


def source_fingerprint(url: str, options: str = "") -> str:
    """Content fingerprint of a data source (see the module docstring)."""
    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        try:
            st = path.stat()
        except OSError:
            return f"missing:{url}"  # the run reports the missing file; planning must not fail
        return _file_sha256(path, st.st_mtime_ns, st.st_size)
    import fsspec

    try:
        fs, inner = fsspec.core.url_to_fs(url, **json.loads(options or "{}"))
        info = fs.info(inner)
    except Exception as err:  # unreachable remote: plan anyway, the run will say why
        return f"unreachable:{url}:{type(err).__name__}"
    keys = (
        "ETag",
        "etag",
        "md5",
        "checksum",
        "size",
        "mtime",
        "LastModified",
        "last_modified",
        "created",
    )
    stable = {k: str(info[k]) for k in keys if k in info}
    return hashlib.sha256(json.dumps({"url": url, **stable}, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _file_sha256(path: Path, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

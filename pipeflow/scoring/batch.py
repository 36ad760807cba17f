"""Batch inference: score a CSV or Parquet file with a registered model, on Dask.

Policy, and why:

- **Partitions of about ``partition_rows`` rows.** CSV is split by bytes, the block size estimated
  from the first 256 KiB of the file. Parquet row groups are grouped up to about that many rows
  (never across files); a larger row group is one partition, split further once read. A
  ``.csv.gz`` cannot be split (gzip has no random access): one partition per file.
- **The model is loaded once per worker, never pickled per partition.** Threads share the object
  loaded here. A process pool receives a small holder that pickles as its registry record and is
  loaded from the store (hash-checked, like every registry load) once per process. A distributed
  cluster gets the object scattered to every worker once, so workers need not reach the store.
- **The signature decides the features.** Every feature recorded with the version must be a column
  of the input, checked before any row is scored, and the error names the missing columns and the
  file. CSV feature columns are read with their signature's types (numbers as float64, labels as
  text), so a block whose first rows look like integers cannot change a column's type mid-file;
  the id column of a CSV is read as text, so it is passed through exactly as written.
- **Output in input order, one file.** Partitions are scored in parallel; this process writes
  each one as soon as it and those before it are scored (writing overlaps with scoring): one
  Parquet file (never a dataset directory) or one CSV (``.csv``, ``.csv.gz``), with
  ``prediction_id`` = ``<batch>-<row>``, rows numbered from 0 across the whole input (the offsets
  are running sums as partitions are written: no extra pass to count rows). Memory: a local
  scheduler keeps every scored partition in this process until the job ends, a cluster keeps
  each on its worker until written; the scored columns only, never the input. (How partitions
  stream in order from either: :meth:`pipeflow.execute.cluster.Scheduler.in_order`.)
- **Atomic output.** The file is written under a hidden temporary name beside the output and
  renamed when complete, so the final name never holds half a file (an older file there is
  replaced only by a complete one); a failed job removes its temporary file and is not audited.
  Local renames are atomic; on object stores the rename is a copy, still never exposing a
  partial object under the final name.
- **Audit.** With an audit folder, one ``batches`` record per job (see
  :mod:`pipeflow.store.journal`): the batch id, model version, input and output with their
  sha256 fingerprints (of the file's bytes, or of the sorted per-file digests of a directory or
  glob), rows, duration and user. The same record is returned.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeflow.errors import PipeflowError, UsageError
from pipeflow.execute import cluster

if TYPE_CHECKING:
    import pandas as pd

    from pipeflow.registry import Registry

#: schedulers named by a string; anything else is a Client or a scheduler address
LOCAL_SCHEDULERS = cluster.LOCAL_KINDS
RESERVED = ("prediction_id", "prediction")
_SAMPLE_BYTES = 256 * 1024


def predict_file(
    registry: Registry,
    name: str,
    which: str | int | None,
    input_path: str,
    output_path: str,
    *,
    audit_folder: str | os.PathLike[str] | None = None,
    id_column: str | None = None,
    partition_rows: int = 100_000,
    scheduler: Any = "threads",
    storage_options: dict[str, Any] | None = None,
    probabilities: bool = True,
) -> dict[str, Any]:
    """Score ``input_path`` with ``name@which`` and write ``output_path``; returns the summary
    (the audit record): ``id``, ``time``, ``model``, ``version``, ``ref``, ``input``,
    ``input_fingerprint``, ``output``, ``output_fingerprint``, ``rows``, ``partitions``,
    ``duration_s``, ``user``.

    ``scheduler``: ``"sync"``, ``"threads"``, ``"processes"``, ``"distributed"`` (a LocalCluster
    for this job, sized as every LocalCluster pipeflow starts: :mod:`pipeflow.execute.cluster`),
    a scheduler address (``tcp://host:8786``) or a ``distributed.Client``.
    ``storage_options`` apply to both the input and the output URL.
    """
    from concurrent.futures import ThreadPoolExecutor

    from pipeflow.registry import current_user, load_version_model

    started, clock = time.time(), time.perf_counter()
    if partition_rows < 1:
        raise UsageError(f"partition_rows must be at least 1, got {partition_rows}")
    options = dict(storage_options or {})
    source = _Source.open(input_path, options)
    out_format = _output_format(output_path)
    if id_column is not None and id_column in RESERVED:
        raise UsageError(f"id column {id_column!r} clashes with an output column")
    record = registry.resolve(name, which)
    label = f"{name}@{record['version']}"
    model = load_version_model(registry.store, record)
    features = signature_features(record, model)
    missing = [
        c for c in [*features, *([id_column] if id_column else [])] if c not in source.columns
    ]
    if missing:
        what = "id column" if missing == [id_column] else f"feature column(s) required by {label}"
        raise UsageError(
            f"{input_path}: missing {what}: {_with_hints(missing, source.columns)} "
            f"(columns found: {_listing(source.columns)})"
        )
    batch_id = "b" + secrets.token_hex(4)  # a letter first: "1305603e-0" reads back as a number
    out_fs, out_path = _output_target(output_path, options, source)
    holder = ModelHolder(model, registry.store.ref, record)
    stop = threading.Event()
    pool = ThreadPoolExecutor(1, thread_name_prefix="pipeflow-fingerprint")
    try:  # hashing the input overlaps with scoring it
        input_fingerprint = pool.submit(source.fingerprint, stop)
        ddf = source.frame(features, id_column, record, partition_rows)
        spec = _ScoreSpec(tuple(features), id_column, probabilities, datetime_features(record))
        with cluster.connect(**_where(scheduler)) as sched:
            # threads share the holder's model, a process pool loads it once per process (see
            # ModelHolder), a cluster gets the model scattered once to every worker
            model_arg = holder if sched.client is None else sched.share(holder.model)
            scored = ddf.map_partitions(
                _score_partition, model_arg, spec, meta=_meta(holder.model, ddf, spec)
            )
            parts = scored.to_delayed()
            rows, output_fingerprint = _write(
                sched.in_order(parts, thread="pipeflow-batch"),
                out_fs,
                out_path,
                out_format,
                batch_id,
                source=input_path,
            )
        summary = {
            "id": batch_id,
            "time": started,
            "model": name,
            "version": record["version"],
            "ref": f"{name}@{which}" if which is not None else name,
            "input": source.url,
            "input_fingerprint": input_fingerprint.result(),
            "output": output_path if "://" in output_path else os.path.abspath(output_path),
            "output_fingerprint": output_fingerprint,
            "rows": rows,
            "partitions": len(parts),
            "duration_s": round(time.perf_counter() - clock, 6),
            "user": current_user(),
        }
    finally:
        stop.set()  # a failed job does not wait for the hash of a large input
        pool.shutdown(wait=False)
    if audit_folder is not None:
        from pipeflow.store.journal import AuditLog

        log = AuditLog(audit_folder, "batches")
        try:
            log.append([summary])
        finally:
            log.close()
    return summary


# ------------------------------------------------------------------------------------ scoring


def signature_features(record: dict[str, Any], model: Any = None) -> list[str]:
    """The feature columns a version was trained on, in training order: its signature, else the
    fitted model's ``feature_names_in_``."""
    features = [f["name"] for f in (record.get("signature") or {}).get("features") or []]
    if not features and model is not None:
        features = [str(c) for c in getattr(model, "feature_names_in_", [])]
    if not features:
        raise UsageError(
            f"{record.get('name')}@{record.get('version')} has no recorded signature: "
            "cannot tell which columns are its features"
        )
    return features


def score_frame(
    model: Any,
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    id_column: str | None = None,
    probabilities: bool = True,
    datetimes: Sequence[str] = (),
) -> pd.DataFrame:
    """Score ``frame``: columns ``id_column`` (if given), ``prediction`` and, for classifiers
    with ``probabilities``, ``proba_<class>`` per class; same index and row order as ``frame``.

    The predictions are exactly ``model.predict(frame[features])``. A scikit-learn pipeline is
    run through its transforms once and both ``predict`` and ``predict_proba`` of its final step
    are called on the result (what ``Pipeline.predict`` does), instead of transforming twice.
    """
    import numpy as np
    import pandas as pd

    X = _missing_as_nan(frame[list(features)])
    for column in datetimes:
        if column in X.columns and not pd.api.types.is_datetime64_any_dtype(X[column]):
            X = X.assign(**{column: pd.to_datetime(X[column])})
    final, Xt = (model, X) if frame.empty else _final_step(model, X, probabilities)
    classes = getattr(final, "classes_", None)
    out: dict[str, Any] = {}
    if id_column is not None:
        out[id_column] = frame[id_column]
    if frame.empty:  # estimators refuse 0 rows; an empty partition scores to an empty frame
        predicted = np.asarray(classes)[:0] if classes is not None else np.empty(0)
    else:
        predicted = final.predict(Xt)
    # labels stay an object array: pandas' conversion of a million of them to its string dtype
    # costs more than the classifier's predict (Arrow converts them when writing)
    out["prediction"] = (
        pd.Series(predicted, index=frame.index, dtype=object)
        if getattr(getattr(predicted, "dtype", None), "kind", "") == "O"
        else predicted
    )
    if probabilities and classes is not None and hasattr(final, "predict_proba"):
        proba = final.predict_proba(Xt) if not frame.empty else np.empty((0, len(classes)))
        for i, label in enumerate(classes):
            out[f"proba_{label}"] = proba[:, i]
    return pd.DataFrame(out, index=frame.index)


def _missing_as_nan(X: pd.DataFrame) -> pd.DataFrame:
    """String columns with a missing value as objects with NaN for it. CSV text is read as
    pandas' (Arrow) strings, whose missing value is pd.NA, and models trained before their text
    pipeline learnt to take pd.NA fail on it ("boolean value of NA is ambiguous")."""
    import pandas as pd

    from pipeflow.models import as_strings

    changed = {
        column: as_strings(X[column])
        for column in X.columns
        if isinstance(X[column].dtype, pd.StringDtype) and X[column].hasnans
    }
    return X.assign(**changed) if changed else X


def _final_step(model: Any, X: Any, probabilities: bool) -> tuple[Any, Any]:
    """(final estimator, transformed X) of a plain scikit-learn pipeline whose probabilities are
    wanted; (model, X) otherwise."""
    from sklearn.pipeline import Pipeline

    if not probabilities or type(model) is not Pipeline or len(model.steps) < 2:
        return model, X
    final = model.steps[-1][1]
    if not hasattr(final, "predict_proba"):
        return model, X
    return final, model[:-1].transform(X)


class _ScoreSpec(NamedTuple):
    """What a partition needs besides the model (small; pickled with each task)."""

    features: tuple[str, ...]
    id_column: str | None
    probabilities: bool
    datetimes: tuple[str, ...]


def _score_partition(
    part: pd.DataFrame, model: Any, spec: _ScoreSpec, partition_info: Any = None
) -> pd.DataFrame:
    try:
        return score_frame(
            model.model if isinstance(model, ModelHolder) else model,
            part,
            spec.features,
            id_column=spec.id_column,
            probabilities=spec.probabilities,
            datetimes=spec.datetimes,
        )
    except Exception as err:
        number = (partition_info or {}).get("number")
        where = f"partition {number}" if number is not None else "a partition"
        raise ValueError(f"scoring {where} failed: {type(err).__name__}: {err}") from err


def _meta(model: Any, ddf: Any, spec: _ScoreSpec) -> pd.DataFrame:
    """The empty frame Dask is told each scored partition looks like."""
    import numpy as np
    import pandas as pd

    classes = getattr(model, "classes_", None)
    columns: dict[str, Any] = {}
    if spec.id_column is not None:
        columns[spec.id_column] = pd.Series([], dtype=ddf.dtypes[spec.id_column])
    columns["prediction"] = np.asarray(classes)[:0] if classes is not None else np.empty(0)
    if spec.probabilities and classes is not None and hasattr(model, "predict_proba"):
        for label in classes:
            columns[f"proba_{label}"] = np.empty(0)
    return pd.DataFrame(columns)


def datetime_features(record: dict[str, Any]) -> tuple[str, ...]:
    """Features recorded as datetimes (CSV gives them as text: converted before scoring)."""
    return tuple(
        f["name"]
        for f in (record.get("signature") or {}).get("features") or []
        if str(f.get("dtype", "")).startswith("datetime")
    )


class ModelHolder:
    """A loaded model that pickles as its registry record: a process that unpickles it loads
    the model from the store once (cached per process), so a process pool never receives the
    model itself with every task. Within one process it is just the object."""

    def __init__(self, model: Any, store_ref: Any, record: dict[str, Any]):
        self.model = model
        self.store_ref = store_ref
        self.record = record
        self.digest = str(record["model"]["digest"])

    def __reduce__(self) -> Any:
        if str(self.store_ref.root).startswith("memory://"):  # another process cannot see it
            return (ModelHolder, (self.model, self.store_ref, self.record))
        record_json = json.dumps(self.record, sort_keys=True, default=str)
        return (_holder_from_store, (self.store_ref, self.digest, record_json))

    def __dask_tokenize__(self) -> Any:
        return ("pipeflow-model", self.digest)


@functools.lru_cache(maxsize=4)
def _holder_from_store(store_ref: Any, digest: str, record_json: str) -> ModelHolder:
    from pipeflow.registry import load_version_model

    record = json.loads(record_json)
    return ModelHolder(load_version_model(store_ref.open(), record), store_ref, record)


# ---------------------------------------------------------------------------------- schedulers


def _where(scheduler: Any) -> dict[str, Any]:
    """:func:`pipeflow.execute.cluster.connect`'s arguments for ``predict_file``'s ``scheduler``."""
    s = scheduler
    if isinstance(s, str) and s in LOCAL_SCHEDULERS:
        return {"kind": s}
    if isinstance(s, str) and s == "distributed":
        return {"kind": "distributed"}
    if isinstance(s, str) and ":" in s:
        return {"kind": "distributed", "address": s}
    if cluster.is_client(s):
        return {"kind": "distributed", "client": s}
    raise UsageError(
        f"unknown scheduler {s!r}: expected one of {', '.join(LOCAL_SCHEDULERS)}, "
        "'distributed', a scheduler address or a distributed.Client"
    )


# ------------------------------------------------------------------------------------- input


class _Source:
    """The input: its format, files, columns, fingerprint and Dask dataframe."""

    def __init__(self, url: str, fs: Any, paths: list[str], fmt: str, options: dict[str, Any]):
        self.url, self.fs, self.paths, self.format, self.options = url, fs, paths, fmt, options
        self.compressed = fmt == "csv" and any(p.endswith(".gz") for p in paths)
        self._columns: list[str] | None = None

    @classmethod
    def open(cls, url: str, options: dict[str, Any]) -> _Source:
        url, fs, path = _filesystem(url, options, "input")
        lower = path.lower().rstrip("/")
        if any(ch in path for ch in "*?["):
            paths = sorted(fs.glob(path))
            fmt = "csv" if all(_is_csv(p) for p in paths) else "parquet"
        elif fs.isdir(path):
            paths = sorted(
                p
                for p in fs.find(path)
                if not posixpath.basename(p).startswith((".", "_"))  # as Dask skips them
            )
            fmt = "csv" if paths and all(_is_csv(p) for p in paths) else "parquet"
        elif fs.isfile(path):
            paths = [path]
            if _is_csv(lower):
                fmt = "csv"
            elif lower.endswith((".parquet", ".pq")):
                fmt = "parquet"
            else:
                raise UsageError(
                    f"input {url}: unknown format; expected .csv, .csv.gz, .parquet, .pq "
                    "or a directory of Parquet files"
                )
        else:
            raise UsageError(f"input {url} not found")
        if not paths:
            raise UsageError(f"input {url}: no files found")
        return cls(url, fs, paths, fmt, options)

    @property
    def target(self) -> Any:
        """What dask reads: the one file, or the list of files (in sorted order)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        urls = [p if protocol in ("file", "local") else f"{protocol}://{p}" for p in self.paths]
        return urls[0] if len(urls) == 1 else urls

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            try:
                self._columns = [str(c) for c in self._read().columns]
            except (ValueError, OSError) as err:  # pandas', pyarrow's, codecs' parse errors
                raise UsageError(
                    f"input {self.url}: cannot read it as {'CSV' if self.format == 'csv' else 'Parquet'}: {_reason(err)}"
                ) from None
        return self._columns

    def _read(self, **kwargs: Any) -> Any:
        if self.format == "parquet":
            return cluster.read_parquet(self.target, storage_options=self.options or None, **kwargs)
        blocksize = kwargs.pop("blocksize", "64MB")
        return cluster.read_csv(
            self.target,
            blocksize=None if self.compressed else blocksize,
            storage_options=self.options or None,
            **({"compression": "gzip"} if self.compressed else {}),
            **kwargs,
        )

    def frame(
        self,
        features: Sequence[str],
        id_column: str | None,
        record: dict[str, Any],
        partition_rows: int,
    ) -> Any:
        """The Dask dataframe of the needed columns, in partitions of about partition_rows."""
        wanted = list(dict.fromkeys([*([id_column] if id_column else []), *features]))
        if self.format == "csv":
            dtypes = _csv_dtypes(record, id_column)
            try:  # Dask reads a sample with these types now, to learn the columns' types
                ddf = self._read(
                    blocksize=self._blocksize(partition_rows), usecols=wanted, dtype=dtypes
                )
            except ValueError as err:
                raise UsageError(
                    f"input {self.url}: {self._not_a_number(dtypes) or _reason(err)}"
                ) from None
            return ddf[wanted]
        groups = self._row_groups()
        largest = max(groups, default=0)
        if largest >= partition_rows:  # one row group a partition, split further after reading
            ddf = self._read(columns=wanted, split_row_groups=True)
            wanted_parts = math.ceil(sum(groups) / partition_rows)
            if wanted_parts > ddf.npartitions * 1.5:
                ddf = ddf.repartition(npartitions=wanted_parts)
            return ddf
        per_part = max(1, round(partition_rows / largest)) if largest else True
        return self._read(columns=wanted, split_row_groups=per_part)

    def _not_a_number(self, dtypes: dict[str, Any]) -> str | None:
        """Where the first file's opening rows hold text in a column the model reads as numbers."""
        import pandas as pd

        numbers = [c for c, t in dtypes.items() if t == "float64"]
        try:
            with self.fs.open(self.paths[0], "rb") as fh:
                head = pd.read_csv(
                    fh,
                    usecols=lambda c: c in numbers,
                    dtype=str,
                    nrows=100_000,
                    compression="gzip" if self.compressed else None,
                )
        except (ValueError, OSError):
            return None
        for column in head.columns:
            text = head[column]
            bad = pd.to_numeric(text, errors="coerce").isna() & text.notna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                return (
                    f"column '{column}' holds {text.iloc[row]!r} on line {row + 2} of "
                    f"{posixpath.basename(self.paths[0])}, where the model reads a number"
                )
        return None

    def _blocksize(self, partition_rows: int) -> int | None:
        if self.compressed:
            return None
        with self.fs.open(self.paths[0], "rb") as fh:
            sample = fh.read(_SAMPLE_BYTES)
        lines = sample.count(b"\n")
        per_row = len(sample) / max(1, lines)
        return max(1024, int(per_row * partition_rows))

    def _row_groups(self) -> list[int]:
        """Rows of every row group of every file (from the footers only)."""
        import pyarrow.parquet as pq

        rows = []
        for path in self.paths:
            with self.fs.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                rows += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return rows

    def fingerprint(self, stop: threading.Event | None = None) -> str:
        """sha256 of the file's bytes; of several files, of their sorted sha256s."""
        digests = [_sha256(self.fs, p, stop) for p in self.paths]
        if len(digests) == 1:
            return digests[0]
        return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def _reason(err: BaseException) -> str:
    """The library's own words, on one line (Dask wraps them in "An error occurred while
    calling the read_csv method ... Original Message: ...")."""
    text = str(err)
    if "Original Message:" in text:
        text = text.split("Original Message:", 1)[1]
    text = " ".join(text.split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz"))


def _csv_dtypes(record: dict[str, Any], id_column: str | None) -> dict[str, Any]:
    """Types for CSV columns from the signature (see the module docstring)."""
    out: dict[str, Any] = {}
    for feature in (record.get("signature") or {}).get("features") or []:
        dtype = str(feature.get("dtype", ""))
        role = feature.get("role")
        if dtype.startswith(("float", "int", "uint")) or (role == "numeric" and not dtype):
            out[feature["name"]] = "float64"
        elif role in ("categorical", "text") and not dtype.startswith(("bool", "category")):
            out[feature["name"]] = str
    if id_column is not None and id_column not in out:
        out[id_column] = str
    return out


def _sha256(fs: Any, path: str, stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            if stop is not None and stop.is_set():
                return ""
            digest.update(chunk)
    return digest.hexdigest()


def _with_hints(missing: Sequence[str], columns: Sequence[str]) -> str:
    import difflib

    named = []
    for column in missing:
        close = difflib.get_close_matches(column, columns, n=1)
        named.append(f"{column} (did you mean {close[0]}?)" if close else column)
    return ", ".join(named)


def _listing(columns: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


# ------------------------------------------------------------------------------------ output


def _output_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".csv.gz"):
        return "csv.gz"
    raise UsageError(f"output {path}: unknown format; expected .parquet, .pq, .csv or .csv.gz")


def _filesystem(url: str, options: dict[str, Any], what: str) -> tuple[str, Any, str]:
    """(URL, fsspec filesystem, path) of an input or output; a local path made absolute."""
    import fsspec

    if "://" not in url:
        url = os.path.abspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as err:
        raise UsageError(f"cannot open {what} {url!r}: {err}") from None
    return url, fs, path


def _output_target(url: str, options: dict[str, Any], source: _Source) -> tuple[Any, str]:
    url, fs, path = _filesystem(url, options, "output")
    if path in source.paths or path.rstrip("/") == source.url.rstrip("/"):
        raise UsageError(f"output {url} is the input: choose another output path")
    if fs.isdir(path):
        raise UsageError(f"output {url} is a directory: give a file name")
    parent = posixpath.dirname(path) if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs, path


def _write(
    parts: Iterator[pd.DataFrame],
    fs: Any,
    path: str,
    fmt: str,
    batch_id: str,
    *,
    source: str,
) -> tuple[int, str]:
    """Write the scored partitions in order to a temporary file, then rename it to ``path``."""
    folder, base = posixpath.split(path)
    tmp = posixpath.join(folder, f".{base}.{batch_id}.tmp")
    rows = 0
    gzip = fmt == "csv.gz"
    try:
        with fs.open(tmp, "wb", **({"compression": "gzip"} if gzip else {})) as raw:
            # the bytes are hashed as they are written, instead of reading the file back; a
            # gzip stream is hashed after, from the file (its compressed bytes are the file's)
            fh = raw if gzip else _HashingSink(raw)
            writer = _TableWriter(fh, fmt)
            try:
                for frame in parts:
                    writer.write(_with_ids(frame, batch_id, rows))
                    rows += len(frame)
                writer.close()
            except Exception as err:
                writer.abandon()
                message = " ".join(str(err).split())  # one line: the CLI prints it as is
                if "could not convert string to float" in message:
                    message += " (a numeric feature holds text: CSV features are read with the types of the model's signature)"
                raise PipeflowError(
                    f"batch prediction of {source} failed, nothing written: "
                    f"{type(err).__name__}: {message}"
                ) from err
            except BaseException:
                writer.abandon()
                raise
        digest = _sha256(fs, tmp) if gzip else fh.hexdigest()  # type: ignore[union-attr]
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    finally:
        if hasattr(parts, "close"):  # stop computing partitions nobody will write
            parts.close()
    return rows, digest


def _with_ids(frame: pd.DataFrame, batch_id: str, offset: int) -> Any:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    return table.add_column(0, "prediction_id", _ids(batch_id, offset, len(frame)))


def _ids(batch_id: str, start: int, n: int) -> Any:
    """``f"{batch_id}-{i}"`` for ``i`` in ``start .. start + n - 1``, as an Arrow string array
    whose bytes are written by numpy (a million ids in ~10 ms, a tenth of casting the numbers to
    strings and joining them in Arrow). The numbers are consecutive, so the ids of each digit
    count fill one contiguous stretch of the data buffer."""
    import numpy as np
    import pyarrow as pa

    prefix = np.frombuffer(f"{batch_id}-".encode(), dtype=np.uint8)
    offsets = np.zeros(n + 1, dtype=np.int32)  # a partition's ids stay far below 2 GiB
    pieces, at, low = [], 0, start
    while low < start + n:
        digits = len(str(low))
        high = min(start + n, 10**digits)  # the numbers of this many digits
        numbers = np.arange(low, high, dtype=np.int64)
        scale = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
        block = np.empty((len(numbers), len(prefix) + digits), dtype=np.uint8)
        block[:, : len(prefix)] = prefix
        block[:, len(prefix) :] = (numbers[:, None] // scale) % 10 + ord("0")
        pieces.append(block.reshape(-1))
        offsets[at + 1 : at + len(numbers) + 1] = offsets[at] + block.shape[1] * np.arange(
            1, len(numbers) + 1, dtype=np.int32
        )
        at, low = at + len(numbers), high
    data = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


class _HashingSink:
    """A write-only file that passes its bytes on and hashes them (sha256) on the way."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return int(self.inner.write(data))

    def tell(self) -> int:
        return int(self.inner.tell())

    def flush(self) -> None:
        self.inner.flush()

    @property
    def closed(self) -> bool:
        return bool(self.inner.closed)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:  # the writers close their sink; the file is closed by its owner
        self.inner.flush()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class _TableWriter:
    """Arrow tables to one Parquet or CSV stream, every table cast to the first one's schema."""

    def __init__(self, sink: Any, fmt: str):
        self.sink, self.format = sink, fmt
        self.schema: Any = None
        self.writer: Any = None

    def write(self, table: Any) -> None:
        if self.writer is None:
            self.schema = table.schema
            self.writer = self._open(table.schema)
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        if table.num_rows:
            self.writer.write_table(table)

    def _open(self, schema: Any) -> Any:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            # ids are all distinct: a dictionary would only cost time
            dictionary = [n for n in schema.names if n != "prediction_id"]
            return pq.ParquetWriter(self.sink, schema, use_dictionary=dictionary)
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(
            self.sink, schema, write_options=pcsv.WriteOptions(quoting_style="needed")
        )

    def abandon(self) -> None:
        """Close without caring for the result (the temporary file is about to be removed)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def close(self) -> None:
        if self.writer is None:  # no partition at all: still a valid, empty file
            import pyarrow as pa

            self.writer = self._open(pa.schema([("prediction_id", pa.string())]))
        self.writer.close()


__all__ = ["ModelHolder", "predict_file", "score_frame", "signature_features"]

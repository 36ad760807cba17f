"""Batch inference: score a CSV or Parquet file with a registered model, in this process or on
Dask.

Policy, and why:

- **In this process when Dask would add only its cost.** On the ``sync`` and ``threads``
  schedulers (the CLI's default), a Parquet input (but hive-partitioned directories) and a CSV
  that is one partition anyway (one file of at most one block, or a ``.csv.gz``) are scored
  without Dask: importing ``dask.dataframe`` alone took 1.5-2 s of the 4-7 s a 178-row CSV used to
  take. Parquet streams: a reader thread reads row groups and makes the very partitions Dask
  would make (:func:`pipeflow.scoring.files.parquet_plan`; a row group split in pieces is decoded
  a batch at a time, so scoring starts after one piece, not the whole group), two threads score
  them (two partitions at once: numpy, BLAS and xgboost release the GIL; ``scoring_threads``)
  and a writer thread adds the ids and writes them in order, so reading and writing overlap
  scoring and the output is the same bytes from one scoring thread or two (tested); a
  one-partition CSV is read whole with pandas, as Dask would read its one block, so text in a
  numeric column is refused with its line wherever it is. The output is byte for byte what the Dask path writes
  (tested). Everything else (a CSV of several blocks, ``processes``, a cluster) runs on Dask.

- **Partitions of about ``partition_rows`` rows.** CSV is split by bytes, the block size estimated
  from the first 256 KiB of the file. Parquet row groups are grouped up to about that many rows
  (never across files); a larger row group is one partition, split further once read. A
  ``.csv.gz`` cannot be split (gzip has no random access): one partition per file.
- **The model is loaded once per worker, never pickled per partition; the signature decides the
  features** (:mod:`pipeflow.scoring.model`). CSV feature columns are read with their
  signature's types (numbers as float64, labels as text), so a block whose first rows look like
  integers cannot change a column's type mid-file; the id column of a CSV is read as text, so it
  is passed through exactly as written (:mod:`pipeflow.scoring.files`). A version with per-group
  decision thresholds (:mod:`pipeflow.governance.thresholds`) also needs its group column, which
  is read too and picks each row's threshold.
- **The output's floats are written with plain encoding** (decided in issue 20, item 4):
  dictionary encoding only for strings and other low-cardinality columns
  (:func:`pipeflow.scoring.arrow.dictionary_columns`). Probabilities are all but all distinct,
  and a dictionary of them cost 0.23 CPU-s per million rows and made the file 16% larger; the
  values and the schema are unchanged, only their Parquet encoding.
- **One model call per partition where it suffices**: labels are read from ``predict_proba``
  where ``predict`` is its argmax (logistic regression, xgboost, pipelines ending in them; see
  :func:`pipeflow.scoring.model.score_frame`), the same labels ``predict`` gives.
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
  glob; a local Parquet input is hashed by the reader as it reads it, one pass over its bytes,
  anything else on a thread of its own while it is scored), rows, duration and user (and
  ``explain``, the method, when asked); and where it was
  scored: ``device``, ``workers``,
  ``resources`` and ``notes`` (:mod:`pipeflow.scoring.device`). The same record is returned.
- **Worker resources** (``resources={"GPU": 1}``): on a cluster the scoring tasks go only to
  workers offering them, and ``GPU`` asks for scoring on ``cuda`` with a CPU fallback; a local
  scheduler scores in this process (or its pool) as the worker offering them
  (:mod:`pipeflow.scoring.device`).
- **Explanations** (``explain=True``, ``pipeflow predict --explain``): the explanation columns
  of :mod:`pipeflow.scoring.model` on both paths; the explainer is built here once and travels
  with each task (it holds no model). The kernel method costs its ``evaluations`` per row.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeflow.errors import NonFiniteInput, UsageError
from pipeflow.execute import cluster
from pipeflow.governance.thresholds import GroupThresholds
from pipeflow.scoring.device import (
    Placement,
    check_offered,
    check_resources,
    resource_text,
    score_on_worker,
    scoring_model,
    wanted_device,
)
from pipeflow.scoring.files import (
    Source,
    listing,
    output_format,
    output_target,
    with_hints,
    write_output,
)
from pipeflow.scoring.model import (
    ModelHolder,
    ScoreSpec,
    datetime_features,
    score_frame,
    score_partition,
    signature_features,
)

if TYPE_CHECKING:
    from pipeflow.registry import Registry

#: schedulers named by a string; anything else is a Client or a scheduler address
LOCAL_SCHEDULERS = cluster.LOCAL_KINDS
#: schedulers whose work may be done in this process without Dask (see the module docstring)
IN_PROCESS = ("sync", "threads")
RESERVED = ("prediction_id", "prediction")


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
    resources: dict[str, float] | None = None,
    explain: bool = False,
    scoring_threads: int | None = None,
) -> dict[str, Any]:
    """Score ``input_path`` with ``name@which`` and write ``output_path``; returns the summary
    (the audit record): ``id``, ``time``, ``model``, ``version``, ``ref``, ``input``,
    ``input_fingerprint``, ``output``, ``output_fingerprint``, ``rows``, ``partitions``,
    ``duration_s``, ``user``, ``device``, ``workers``, ``resources``, ``notes``.

    ``scheduler``: ``"sync"``, ``"threads"``, ``"processes"``, ``"distributed"`` (a LocalCluster
    for this job, sized as every LocalCluster pipeflow starts:
    :mod:`pipeflow.execute.cluster.clusters`), a scheduler address (``tcp://host:8786``) or a
    ``distributed.Client``.
    ``storage_options`` apply to both the input and the output URL. ``resources``: Dask worker
    resources every scoring task asks for (``{"GPU": 1}``: scored on ``cuda`` where usable; see
    :mod:`pipeflow.scoring.device`). ``explain``: add each
    row's explanation (:mod:`pipeflow.governance.explain`) as ``explain_base`` and
    ``contrib_<feature>`` columns (and ``explain_class`` for classifiers). ``scoring_threads``:
    how many partitions an input scored in this process has scored at once (default: two where
    the machine has two cores or more; the output is the same, byte for byte).
    """
    from concurrent.futures import ThreadPoolExecutor

    from pipeflow.registry import current_user

    started, clock = time.time(), time.perf_counter()
    if partition_rows < 1:
        raise UsageError(f"partition_rows must be at least 1, got {partition_rows}")
    threads = _scoring_threads(scoring_threads)
    wanted = check_resources(resources)
    placement = Placement(wanted)
    options = dict(storage_options or {})
    source = Source.open(input_path, options)
    out_format = output_format(output_path)
    if id_column is not None and id_column in RESERVED:
        raise UsageError(f"id column {id_column!r} clashes with an output column")
    model, record = registry.servable(name, which)  # an archived version scores nothing
    label = f"{name}@{record['version']}"
    features = signature_features(record, model)
    spec = ScoreSpec(
        tuple(features),
        id_column,
        probabilities,
        datetime_features(record),
        GroupThresholds.from_record(record),
    )
    missing = [
        c for c in [*spec.columns, *([id_column] if id_column else [])] if c not in source.columns
    ]
    if missing:
        what = "id column" if missing == [id_column] else f"feature column(s) required by {label}"
        group = spec.thresholds.attribute if spec.thresholds is not None else None
        if group in missing and group not in features:
            what = (
                f"column(s) required by {label} ('{group}' picks each row's decision "
                "threshold: the version has per-group thresholds)"
            )
        raise UsageError(
            f"{input_path}: missing {what}: {with_hints(missing, source.columns)} "
            f"(columns found: {listing(source.columns)})"
        )
    batch_id = "b" + secrets.token_hex(4)  # a letter first: "1305603e-0" reads back as a number
    out_fs, out_path = output_target(output_path, options, source)
    holder = ModelHolder(model, registry.store.ref, record)
    stop = threading.Event()
    pool = ThreadPoolExecutor(1, thread_name_prefix="pipeflow-fingerprint")
    if explain:
        from pipeflow.governance.explain import explainer_for

        spec = spec._replace(explainer=explainer_for(model, record, features))
    kind = _where(scheduler).kind
    here = kind in IN_PROCESS and source.in_process(partition_rows)
    if wanted and kind in LOCAL_SCHEDULERS:
        pool_of = "" if here or kind != "processes" else "'s pool"
        placement.note(
            f"the {kind} scheduler has no workers to route resources {resource_text(wanted)} "
            f"to: scored in this process{pool_of} as the worker offering them"
        )
    try:  # hashing the input overlaps with scoring it (read once: as it is read, if local)
        once = here and source.hashed_while_read
        input_fingerprint = None if once else pool.submit(source.fingerprint, stop)
        if here:
            model, device, note = scoring_model(holder.model, holder.digest, wanted_device(wanted))
            rows, output_fingerprint, partitions = _score_here(
                source, input_path, model, spec, record, partition_rows,
                out_fs, out_path, out_format, batch_id, threads,
            )  # fmt: skip
            placement.add(
                {"worker": f"pid {os.getpid()}", "device": device, "note": note}, partitions
            )
        else:
            rows, output_fingerprint, partitions = _score_on_dask(
                source, input_path, holder, spec, record, partition_rows, scheduler,
                out_fs, out_path, out_format, batch_id, placement,
            )  # fmt: skip
        summary = {
            "id": batch_id,
            "time": started,
            "model": name,
            "version": record["version"],
            "ref": f"{name}@{which}" if which is not None else name,
            "input": source.url,
            "input_fingerprint": (
                source.fingerprint() if input_fingerprint is None else input_fingerprint.result()
            ),
            "output": output_path if "://" in output_path else os.path.abspath(output_path),
            "output_fingerprint": output_fingerprint,
            "rows": rows,
            "partitions": partitions,
            "duration_s": round(time.perf_counter() - clock, 6),
            "user": current_user(),
            **placement.summary(),
        }
        if spec.explainer is not None:
            summary["explain"] = spec.explainer.method
    finally:
        stop.set()  # a failed job does not wait for the hash of a large input
        pool.shutdown(wait=False)
    if audit_folder is not None:  # a remote store's spool ships the segment at once
        from pipeflow.store.shipping import append_and_ship

        append_and_ship(registry.store, "audit", "batches", [summary], local=audit_folder)
    return summary


def _score_here(
    source: Source,
    input_path: str,
    model: Any,
    spec: ScoreSpec,
    record: dict[str, Any],
    partition_rows: int,
    out_fs: Any,
    out_path: str,
    out_format: str,
    batch_id: str,
    threads: int = 1,
) -> tuple[int, str, int]:
    """Score in this process, no Dask: (rows, output fingerprint, partitions). Parquet is read
    by a reader thread, a partition at a time (the partitions Dask would make), scored on
    ``threads`` threads (:func:`score_ahead`) and written by a writer thread, in order; a
    one-partition CSV is read whole, then scored."""
    if source.format == "csv":
        frames: Iterator[Any] = iter([source.read_whole_csv(spec.columns, spec.id_column, record)])
    else:
        frames = read_ahead(source.parquet_parts(spec.columns, spec.id_column, partition_rows))
    scored = [0]

    def score(frame: Any, number: int) -> Any:
        return score_partition(frame, model, spec, {"number": number})

    def counted() -> Iterator[Any]:
        for frame in score_ahead(frames, score, threads):
            yield frame
            scored[0] += 1

    try:
        rows, digest = write_output(
            counted(), out_fs, out_path, out_format, batch_id, source=input_path, overlap=True
        )
    except NonFiniteInput as err:  # refused by a partition: say where
        where = source.first_non_finite(err.column)
        raise NonFiniteInput(err.column, err.value, where, source.url) from None
    return rows, digest, scored[0]


def _score_on_dask(
    source: Source,
    input_path: str,
    holder: ModelHolder,
    spec: ScoreSpec,
    record: dict[str, Any],
    partition_rows: int,
    scheduler: Any,
    out_fs: Any,
    out_path: str,
    out_format: str,
    batch_id: str,
    placement: Placement,
) -> tuple[int, str, int]:
    """Score on Dask: (rows, output fingerprint, partitions); where each partition was scored
    is added to ``placement``."""
    ddf = source.frame(list(spec.columns), spec.id_column, record, partition_rows)
    resources = placement.resources
    want = wanted_device(resources)
    with cluster.connect(_where(scheduler)) as sched:
        if sched.client is not None:
            check_offered(sched.client, resources)  # before anything is sent
        # threads share the holder's model, a process pool loads it once per process (see
        # ModelHolder), a cluster gets the model scattered once to every worker
        model_arg = holder if sched.client is None else sched.share(holder.model)
        score = cluster.delayed(score_on_worker, pure=False)
        parts = [
            score(part, model_arg, spec, number, holder.digest, want)
            for number, part in enumerate(ddf.to_delayed())
        ]

        def scored() -> Iterator[Any]:
            stream = sched.in_order(parts, thread="pipeflow-batch", resources=resources or None)
            with contextlib.closing(stream):
                for frame, where in stream:
                    placement.add(where)
                    yield frame

        try:
            rows, output_fingerprint = write_output(
                scored(),
                out_fs,
                out_path,
                out_format,
                batch_id,
                source=input_path,
            )
        except NonFiniteInput as err:  # refused up front by every partition: say where
            where = source.first_non_finite(err.column)
            raise NonFiniteInput(err.column, err.value, where, source.url) from None
    return rows, output_fingerprint, len(parts)


def score_ahead(
    frames: Iterator[Any], score: Any, threads: int, thread: str = "pipeflow-batch-score"
) -> Iterator[Any]:
    """``score(frame, number)`` of each of ``frames``, in their order, up to ``threads`` of them
    at once on threads of their own (one: on this thread). The first error, in order, is
    raised here; closing the generator cancels what has not started, waits for what has, and
    closes ``frames`` (which stops :func:`read_ahead`'s reader)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    try:
        if threads <= 1:
            for number, frame in enumerate(frames):
                yield score(frame, number)
            return
        pool = ThreadPoolExecutor(threads, thread_name_prefix=thread)
        pending: deque[Any] = deque()
        try:
            for number, frame in enumerate(frames):
                pending.append(pool.submit(score, frame, number))
                del frame  # held by its task only: scored columns, not the input, are kept
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if hasattr(frames, "close"):
            frames.close()  # stops the reader


def read_ahead(
    items: Iterator[Any], depth: int = 2, thread: str = "pipeflow-batch-read"
) -> Iterator[Any]:
    """``items``, produced on a thread of their own up to ``depth`` ahead of the consumer; an
    error there is raised here, in order. Closing the generator stops the thread (it finishes
    the item in hand, then closes ``items``)."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as err:  # handed to the consumer, raised there
            put("error", err)
        finally:
            if hasattr(items, "close"):
                items.close()

    worker = threading.Thread(target=produce, name=thread, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


# ---------------------------------------------------------------------------------- schedulers


def _scoring_threads(wanted: int | None) -> int:
    """Partitions scored at once in this process: ``wanted``, else two on a machine of two
    cores or more (see the module docstring)."""
    if wanted is not None:
        if wanted < 1:
            raise UsageError(f"scoring_threads must be at least 1, got {wanted}")
        return wanted
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _where(scheduler: Any) -> cluster.Target:
    """The scheduler (:class:`pipeflow.execute.cluster.Target`) ``predict_file``'s ``scheduler``
    names."""
    s = scheduler
    if isinstance(s, str) and s in LOCAL_SCHEDULERS:
        return cluster.Target(s)
    if isinstance(s, str) and s == "distributed":
        return cluster.Target("distributed")
    if isinstance(s, str) and ":" in s:
        return cluster.Target("distributed", address=s)
    if cluster.is_client(s):
        return cluster.Target("distributed", client=s)
    raise UsageError(
        f"unknown scheduler {s!r}: expected one of {', '.join(LOCAL_SCHEDULERS)}, "
        "'distributed', a scheduler address or a distributed.Client"
    )


__all__ = ["ModelHolder", "predict_file", "score_frame", "signature_features"]

"""Batch inference end to end: a real registry (the tumours project trained and promoted by a real
run), files scored through Dask, the audit trail, the CLI, the ``predict`` stage and a cluster."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from helpers import pipeflow, tumour_table

from pipeflow.errors import NonFiniteInput, PipeflowError, UsageError
from pipeflow.registry import Registry
from pipeflow.scoring.batch import predict_file
from pipeflow.stages.predict import PredictStage
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.testing import StageContract

SPEC = Path(__file__).with_name("predict_spec.yaml")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    """The tumours project after one run: tumours v1, production -> v1; plus patients.csv, the
    same rows without the diagnosis and with a text id (leading zeros)."""
    where = tumours_v1(tmp_path_factory.mktemp("batch") / "tumours")
    frame = tumour_table()
    patients = frame.drop(columns=["diagnosis"])
    patients.insert(0, "patient_id", [f"P{i:05d}" for i in range(len(patients))])
    patients.to_csv(where / "patients.csv", index=False)
    return where


@pytest.fixture(scope="module")
def registry(project: Path) -> Registry:
    return Registry(ArtifactStore(str(project / ".pipeflow")))


def expected(registry: Registry, frame: pd.DataFrame) -> tuple[Any, Any]:
    """What calling the production model directly gives: (predictions, probabilities)."""
    model, record = registry.load_model("tumours", "production")
    X = frame[[f["name"] for f in record["signature"]["features"]]]
    return model.predict(X), model.predict_proba(X)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -------------------------------------------------------------------------------- the function


def test_csv_in_parquet_out_matches_direct_predict_in_input_order(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    source = project / "patients.csv"
    out = tmp_path / "scored.parquet"
    summary = predict_file(
        registry,
        "tumours",
        "production",
        str(source),
        str(out),
        audit_folder=tmp_path / "audit",
        id_column="patient_id",
        partition_rows=100,
        scheduler="threads",
    )
    frame = pd.read_csv(source, dtype={"patient_id": str})
    scored = pd.read_parquet(out)
    predictions, proba = expected(registry, frame)
    assert summary["partitions"] > 1  # really split, and still in order
    assert list(scored.columns) == [
        "prediction_id",
        "patient_id",
        "prediction",
        "proba_benign",
        "proba_malignant",
    ]
    assert scored["patient_id"].tolist() == frame["patient_id"].tolist()  # leading zeros kept
    assert scored["prediction"].tolist() == list(predictions)
    assert scored[["proba_benign", "proba_malignant"]].to_numpy() == pytest.approx(proba)
    ids = scored["prediction_id"].tolist()
    assert len(set(ids)) == len(frame)
    assert ids == [f"{summary['id']}-{i}" for i in range(len(frame))]

    records = list(audit.read(tmp_path / "audit", "batches"))
    assert records == [summary]
    record = records[0]
    assert record["rows"] == len(frame)
    assert (record["model"], record["version"]) == ("tumours", 1)
    assert record["input_fingerprint"] == sha256(source)
    assert record["output_fingerprint"] == sha256(out)
    assert record["input"] == str(source) and record["output"] == str(out)
    assert record["duration_s"] > 0 and record["user"]


def test_parquet_directory_in_csv_out_matches_direct_predict(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv", dtype={"patient_id": str})
    folder = tmp_path / "patients"
    folder.mkdir()
    for i, start in enumerate(range(0, len(frame), 200)):  # three files, read in name order
        frame.iloc[start : start + 200].to_parquet(folder / f"part-{i}.parquet", index=False)
    out = tmp_path / "scored.csv"
    summary = predict_file(
        registry,
        "tumours",
        "1",
        str(folder),
        str(out),
        id_column="patient_id",
        partition_rows=100,
        scheduler="sync",
    )
    scored = pd.read_csv(out, dtype={"patient_id": str})
    predictions, proba = expected(registry, frame)
    assert summary["rows"] == len(frame) and summary["partitions"] >= 3
    assert scored["patient_id"].tolist() == frame["patient_id"].tolist()
    assert scored["prediction"].tolist() == list(predictions)
    assert scored[["proba_benign", "proba_malignant"]].to_numpy() == pytest.approx(proba)
    assert scored["prediction_id"].is_unique
    digests = sorted(sha256(p) for p in folder.iterdir())
    assert summary["input_fingerprint"] == hashlib.sha256("\n".join(digests).encode()).hexdigest()
    assert summary["output_fingerprint"] == sha256(out)


def test_single_parquet_file_is_split_into_partitions_of_about_partition_rows(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv")
    source = tmp_path / "patients.parquet"
    frame.to_parquet(source, index=False)  # one row group
    out = tmp_path / "scored.csv.gz"
    summary = predict_file(
        registry, "tumours", "production", str(source), str(out), partition_rows=100
    )
    assert summary["partitions"] == 6
    scored = pd.read_csv(out)
    assert scored["prediction"].tolist() == list(expected(registry, frame)[0])
    assert summary["output_fingerprint"] == sha256(out)  # of the compressed file's bytes


def test_gzipped_csv_and_an_empty_input_are_scored(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv")
    source = tmp_path / "patients.csv.gz"
    frame.to_csv(source, index=False)
    summary = predict_file(
        registry, "tumours", "production", str(source), str(tmp_path / "out.parquet")
    )
    assert summary["rows"] == 569 and summary["input_fingerprint"] == sha256(source)
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert scored["prediction"].tolist() == list(expected(registry, frame)[0])

    empty = tmp_path / "empty.csv"
    frame.head(0).to_csv(empty, index=False)
    summary = predict_file(
        registry, "tumours", "production", str(empty), str(tmp_path / "empty.parquet")
    )
    assert summary["rows"] == 0
    assert list(pd.read_parquet(tmp_path / "empty.parquet").columns) == [
        "prediction_id",
        "prediction",
        "proba_benign",
        "proba_malignant",
    ]


def test_a_process_pool_scores_the_same(project: Path, registry: Registry, tmp_path: Path) -> None:
    source = project / "patients.csv"
    out = tmp_path / "scored.parquet"
    predict_file(
        registry, "tumours", "production", str(source), str(out), partition_rows=200,
        scheduler="processes",
    )  # fmt: skip
    scored = pd.read_parquet(out)
    assert scored["prediction"].tolist() == list(expected(registry, pd.read_csv(source))[0])


def test_a_missing_feature_is_named_with_the_file_before_any_scoring(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv").drop(columns=["worst_area", "size_band"])
    source = tmp_path / "partial.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scored.parquet"
    with pytest.raises(UsageError) as info:
        predict_file(registry, "tumours", "production", str(source), str(out))
    message = str(info.value)
    assert "worst_area" in message and "size_band" in message and str(source) in message
    assert "tumours@1" in message
    assert not out.exists()


def test_a_failing_partition_leaves_no_output_at_all(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv")
    frame["mean_radius"] = frame["mean_radius"].astype(str)
    frame.loc[500, "mean_radius"] = "not a number"  # in the last partition: others finish first
    for source in (tmp_path / "broken.csv", tmp_path / "broken.parquet"):
        if source.suffix == ".csv":
            frame.to_csv(source, index=False)
        else:
            frame.to_parquet(source, index=False)
        out = tmp_path / "scored.parquet"
        out_before = tmp_path / "kept.csv"
        out_before.write_text("previous output\n")
        for target in (out, out_before):
            with pytest.raises(PipeflowError) as info:
                predict_file(
                    registry,
                    "tumours",
                    "production",
                    str(source),
                    str(target),
                    audit_folder=tmp_path / "audit",
                    partition_rows=100,
                )
            assert "not a number" in str(info.value) and "nothing written" in str(info.value)
        assert not out.exists()
        assert out_before.read_text() == "previous output\n"  # an older output is left alone
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert list(audit.read(tmp_path / "audit", "batches")) == []  # failed jobs are not audited


def test_a_failing_write_stops_the_scoring_and_leaves_nothing(
    project: Path, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from pipeflow.scoring import files

    real, calls = files._with_ids, []

    def disk_full(frame: Any, batch_id: str, offset: int) -> Any:
        calls.append(offset)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(frame, batch_id, offset)

    monkeypatch.setattr(files, "_with_ids", disk_full)
    out = tmp_path / "scored.parquet"
    with pytest.raises(PipeflowError, match="No space left"):
        predict_file(
            registry,
            "tumours",
            "production",
            str(project / "patients.csv"),
            str(out),
            partition_rows=50,
        )
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeflow-batch")]


def test_a_failing_write_of_a_parquet_input_scored_in_process_leaves_nothing(
    project: Path, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process path: the writer thread's error is raised on this thread, the reader and
    writer threads end, the temporary file goes."""
    import threading

    from pipeflow.scoring import files

    source = tmp_path / "in" / "patients.parquet"
    source.parent.mkdir()
    pd.read_csv(project / "patients.csv").to_parquet(source, index=False)
    real, calls = files._with_ids, []

    def disk_full(frame: Any, batch_id: str, offset: int) -> Any:
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(frame, batch_id, offset)

    monkeypatch.setattr(files, "_with_ids", disk_full)
    out = tmp_path / "out" / "scored.parquet"
    with pytest.raises(PipeflowError, match="No space left"):
        predict_file(registry, "tumours", "production", str(source), str(out), partition_rows=50)
    # the third partition's write fails; one more may be on its way when it does (overlap)
    assert len(calls) >= 3 and list(out.parent.iterdir()) == []
    for thread in [t for t in threading.enumerate() if t.name.startswith("pipeflow-batch")]:
        thread.join(10)  # told to stop: ending, not stuck (a busy machine may take a moment)
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeflow-batch")]


# ------------------------------------------------- in this process, or on Dask: the same bytes


@pytest.fixture
def fixed_batch_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every job gets batch id ``b0123abcd`` (ids are in the output), so two jobs' output
    files can be compared byte for byte."""
    from pipeflow.scoring import batch

    monkeypatch.setattr(batch.secrets, "token_hex", lambda n: "0123abcd")
    return "b0123abcd"


@pytest.fixture(scope="module")
def dask_process_pool() -> Iterator[Any]:
    """One process pool, built as Dask's ``processes`` scheduler builds its own for each job
    (its context, its worker initializer, its hash seed), shared by the module's byte-for-byte
    comparisons: each job started two fresh processes importing pandas, scikit-learn and the
    model (most of a comparison's time), and the graph each job computes is the same whichever
    pool runs it. test_a_process_pool_scores_the_same keeps a pool of the job's own."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from dask.multiprocessing import CPU_COUNT, get_context, initialize_worker_process

    with pytest.MonkeyPatch.context() as patch:
        if os.environ.get("PYTHONHASHSEED") in (None, "0"):  # as dask.multiprocessing.get does
            patch.setenv("PYTHONHASHSEED", "6640")
        pool = ProcessPoolExecutor(
            CPU_COUNT,
            mp_context=get_context(),
            initializer=partial(initialize_worker_process, user_initializer=None),
        )
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def on_the_shared_pool(dask_process_pool: Any) -> Iterator[None]:
    """Dask's ``processes`` scheduler uses :func:`dask_process_pool` (``pool`` in Dask's
    config: what ``dask.multiprocessing.get`` takes instead of starting one)."""
    import dask

    with dask.config.set(pool=dask_process_pool):
        yield


def both_ways(
    registry: Registry, source: Path, tmp_path: Path, suffix: str, **kw: Any
) -> tuple[dict, dict, bytes, bytes]:
    """Score ``source`` in this process (threads) and on Dask (a process pool: the module's
    shared one, see :func:`on_the_shared_pool`): both summaries and both outputs' bytes."""
    here, dask = tmp_path / f"here{suffix}", tmp_path / f"dask{suffix}"
    a = predict_file(registry, "tumours", "production", str(source), str(here), **kw)
    b = predict_file(
        registry, "tumours", "production", str(source), str(dask), scheduler="processes", **kw
    )
    return a, b, here.read_bytes(), dask.read_bytes()


def parquet_source(frame: pd.DataFrame, tmp_path: Path, layout: dict) -> Path:
    """``frame`` as Parquet in ``layout``: one file with ``row_group_size`` rows per group, or
    (``files``) a directory of files of 200 rows each."""
    if "files" not in layout:
        source = tmp_path / "patients.parquet"
        frame.to_parquet(source, index=False, row_group_size=layout["row_group_size"])
        return source
    source = tmp_path / "patients"
    source.mkdir()
    for i, start in enumerate(range(0, len(frame), 200)):
        frame.iloc[start : start + 200].to_parquet(
            source / f"part-{i}.parquet", index=False, row_group_size=layout["row_group_size"]
        )
    return source


@pytest.mark.parametrize(
    ("layout", "partition_rows", "parts"),
    [
        ({"row_group_size": None}, 100, 6),  # one row group of 569, split in 6 as Dask does
        ({"row_group_size": 300}, 50, 12),  # two row groups, repartitioned to more: 6 + 6
        ({"row_group_size": 40}, 100, 8),  # small row groups, two to a partition
        ({"files": 3, "row_group_size": 70}, 100, 9),  # a directory: never across files
        ({"row_group_size": 100}, 1000, 1),  # all six row groups in one partition
    ],
)
def test_parquet_scored_in_process_writes_the_bytes_dask_writes(
    project: Path,
    registry: Registry,
    tmp_path: Path,
    fixed_batch_id: str,
    on_the_shared_pool: None,
    layout: dict,
    partition_rows: int,
    parts: int,
) -> None:
    frame = pd.read_csv(project / "patients.csv", dtype={"patient_id": str})
    source = parquet_source(frame, tmp_path, layout)
    for suffix in (".parquet", ".csv"):
        here, dask, ours, theirs = both_ways(
            registry, source, tmp_path, suffix, id_column="patient_id",
            partition_rows=partition_rows,
        )  # fmt: skip
        assert ours == theirs
        assert here["partitions"] == dask["partitions"] == parts
        assert here["output_fingerprint"] == dask["output_fingerprint"]
    scored = pd.read_parquet(tmp_path / "here.parquet")
    assert scored["patient_id"].tolist() == frame["patient_id"].tolist()
    assert scored["prediction"].tolist() == list(expected(registry, frame)[0])
    assert scored["prediction_id"].tolist() == [f"{fixed_batch_id}-{i}" for i in range(569)]


@pytest.mark.parametrize(
    ("layout", "partition_rows"),
    [
        ({"row_group_size": None}, 100),  # one row group decoded a batch at a time, 6 pieces
        ({"row_group_size": 40}, 100),  # small row groups, two to a partition
        ({"files": 3, "row_group_size": 70}, 100),  # a directory: each file hashed as read
    ],
)
def test_one_and_two_scoring_threads_write_the_same_bytes_and_hash_the_input_as_read(
    project: Path,
    registry: Registry,
    tmp_path: Path,
    fixed_batch_id: str,
    layout: dict,
    partition_rows: int,
) -> None:
    frame = pd.read_csv(project / "patients.csv", dtype={"patient_id": str})
    source = parquet_source(frame, tmp_path, layout)
    if source.is_dir():  # a directory's fingerprint: the sorted digests of its files
        files = sorted(source.iterdir())
        wanted = hashlib.sha256("\n".join(sorted(sha256(f) for f in files)).encode()).hexdigest()
    else:
        wanted = sha256(source)
    summaries, outputs = [], []
    for threads in (1, 2):
        out = tmp_path / f"scored-{threads}.parquet"
        summaries.append(
            predict_file(
                registry, "tumours", "production", str(source), str(out),
                id_column="patient_id", partition_rows=partition_rows, scoring_threads=threads,
            )
        )  # fmt: skip
        outputs.append(out.read_bytes())
    one, two = summaries
    assert outputs[0] == outputs[1]
    assert one["output_fingerprint"] == two["output_fingerprint"]
    assert one["input_fingerprint"] == two["input_fingerprint"] == wanted
    assert one["partitions"] == two["partitions"] > 1
    scored = pd.read_parquet(tmp_path / "scored-2.parquet")
    assert scored["patient_id"].tolist() == frame["patient_id"].tolist()
    assert scored["prediction"].tolist() == list(expected(registry, frame)[0])
    assert scored["prediction_id"].tolist() == [f"{fixed_batch_id}-{i}" for i in range(569)]


def test_scoring_threads_below_one_are_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="scoring_threads must be at least 1, got 0"):
        predict_file(
            registry, "tumours", "production", "in.parquet", str(tmp_path / "o.parquet"),
            scoring_threads=0,
        )  # fmt: skip


@pytest.mark.parametrize("name", ["patients.csv", "patients.csv.gz"])
def test_a_one_partition_csv_scored_in_process_writes_the_bytes_dask_writes(
    project: Path,
    registry: Registry,
    tmp_path: Path,
    fixed_batch_id: str,
    on_the_shared_pool: None,
    name: str,
) -> None:
    source = tmp_path / name
    pd.read_csv(project / "patients.csv", dtype={"patient_id": str}).to_csv(source, index=False)
    for suffix in (".parquet", ".csv"):
        here, dask, ours, theirs = both_ways(
            registry, source, tmp_path, suffix, id_column="patient_id"
        )
        assert ours == theirs and here["partitions"] == dask["partitions"] == 1
        assert here["rows"] == 569


def test_a_one_partition_job_starts_no_dask(project: Path, tmp_path: Path) -> None:
    """The 178-row CSV and a small Parquet file are scored without importing dask.dataframe
    (its import is most of what a small job used to wait for); a CSV of more than one
    partition is still scored on Dask. The two small jobs run one after the other in one
    process, each checked as it ends (a process of its own adds nothing to that check: it is
    the import of scikit-learn and the model that a process costs); the third in another."""
    import subprocess
    import sys

    frame = pd.read_csv(project / "patients.csv")
    frame.head(178).to_csv(tmp_path / "small.csv", index=False)
    frame.to_parquet(tmp_path / "small.parquet", index=False)
    script = """
import sys
from pipeflow.registry import Registry
from pipeflow.scoring.batch import predict_file
from pipeflow.store.artifacts import ArtifactStore
registry = Registry(ArtifactStore(sys.argv[1]))
for source, partition_rows in zip(sys.argv[3::2], sys.argv[4::2]):
    summary = predict_file(registry, "tumours", "production", source, sys.argv[2],
                           partition_rows=int(partition_rows))
    print(summary["rows"], summary["partitions"], "dask.dataframe" in sys.modules)
"""
    for jobs, said in (
        ((("small.csv", 100_000), ("small.parquet", 100)), ["178 1 False", "569 6 False"]),
        ((("small.csv", 50),), ["178 3 True"]),  # three blocks: on Dask
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, str(project / ".pipeflow"), str(tmp_path / "out.parquet"),
             *(str(arg) for source, rows in jobs for arg in (tmp_path / source, rows))],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[-1 - len(said) : -1] == said


def test_text_deep_in_a_one_partition_csv_is_named_with_its_line(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    """Read whole, a one-partition CSV's text in a numeric column is refused before anything is
    scored, naming the column, the value and the line, wherever it is."""
    frame = pd.read_csv(project / "patients.csv").astype({"mean_radius": object})
    frame.loc[300, "mean_radius"] = "12,5"
    frame.to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(UsageError) as info:
        predict_file(
            registry, "tumours", "production", str(tmp_path / "typo.csv"),
            str(tmp_path / "out.csv"),
        )  # fmt: skip
    assert str(info.value) == (
        f"input {tmp_path / 'typo.csv'}: column 'mean_radius' holds '12,5' on line 302 of "
        "typo.csv, where the model reads a number"
    )
    assert not (tmp_path / "out.csv").exists()


def test_unknown_formats_and_missing_inputs_are_usage_errors(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    source = str(project / "patients.csv")
    with pytest.raises(UsageError, match="unknown format"):
        predict_file(registry, "tumours", "production", source, str(tmp_path / "out.xlsx"))
    with pytest.raises(UsageError, match="not found"):
        predict_file(
            registry, "tumours", "production", str(tmp_path / "none.csv"), str(tmp_path / "o.csv")
        )
    with pytest.raises(UsageError, match="is the input"):
        predict_file(registry, "tumours", "production", source, source)


# ------------------------------------------------------------------------------------- the CLI


def test_cli_scores_a_file_and_audits_it_in_the_store(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.parquet"
    before = len(list(audit.read(project / ".pipeflow" / "audit", "batches")))
    done = pipeflow(
        [
            "predict",
            "tumours@production",
            "--input",
            "patients.csv",
            "--output",
            str(out),
            "--id-column",
            "patient_id",
            "--partition-rows",
            "150",
        ],
        cwd=project,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "569 rows with tumours@1" in done.stdout and "rows/s" in done.stdout
    assert len(pd.read_parquet(out)) == 569
    records = list(audit.read(project / ".pipeflow" / "audit", "batches"))
    assert len(records) == before + 1
    ours = [r for r in records if r["output"] == str(out)]
    assert len(ours) == 1 and ours[0]["output_fingerprint"] == sha256(out)
    assert ours[0]["rows"] == 569 and ours[0]["ref"] == "tumours@production"


def test_cli_missing_feature_exits_2_with_one_line_naming_it(project: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(project / "patients.csv").drop(columns=["mean_texture"])
    frame.to_csv(tmp_path / "partial.csv", index=False)
    done = pipeflow(
        [
            "predict",
            "tumours@production",
            "--input",
            str(tmp_path / "partial.csv"),
            "--output",
            str(tmp_path / "out.csv"),
        ],
        cwd=project,
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "mean_texture" in done.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.csv", b"", "cannot read it as CSV: No columns to parse from file"),
        ("latin1.csv", b"mean_radius\n\xe9\xa6\n", "cannot read it as CSV: 'utf-8' codec"),
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n", "Expected 2 fields in line 3, saw 4"),
        ("notes.parquet", b"not a parquet file", "cannot read it as Parquet: "),
    ],
)
def test_cli_an_unreadable_input_exits_2_naming_it(
    project: Path, tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "out.csv"
    done = pipeflow(
        ["predict", "tumours@production", "--input", str(bad), "--output", str(out)],
        cwd=project,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: input {bad}: ") and reason in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "internal error" not in done.stderr
    assert not out.exists()


def test_cli_text_in_a_numeric_feature_exits_2_naming_column_line_and_value(
    project: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv").head(5).astype({"mean_radius": object})
    frame.loc[2, "mean_radius"] = "12,5"
    frame.to_csv(tmp_path / "typo.csv", index=False)
    out = tmp_path / "out.csv"
    done = pipeflow(
        ["predict", "tumours@production", "-i", str(tmp_path / "typo.csv"), "-o", str(out)],
        cwd=project,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: input {tmp_path / 'typo.csv'}: column 'mean_radius' holds '12,5' on line 4 of "
        "typo.csv, where the model reads a number\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("written", ["inf", "-inf", "1e400"])
def test_cli_a_non_finite_number_exits_2_naming_column_line_and_value(
    project: Path, tmp_path: Path, written: str
) -> None:
    """One inf (or a number beyond float range) is refused like text in a numeric column: exit 2,
    the column and the line, nothing written; not a failed job with scikit-learn's words."""
    lines = (project / "patients.csv").read_text().splitlines()[:8]
    at = lines[0].split(",").index("mean_area")
    cells = lines[5].split(",")
    cells[at] = written
    lines[5] = ",".join(cells)
    (tmp_path / "wide.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    done = pipeflow(
        ["predict", "tumours@production", "-i", str(tmp_path / "wide.csv"), "-o", str(out)],
        cwd=project,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    value = "-inf" if written == "-inf" else "inf"
    assert done.stderr == (
        f"error: input {tmp_path / 'wide.csv'}: column 'mean_area' holds {value} on line 6 of "
        "wide.csv, where the model needs a finite number (inf, -inf and numbers beyond "
        "±1.8e308 cannot be scored)\n"
    )
    assert not out.exists()


def test_a_non_finite_number_in_parquet_names_its_row(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    frame = pd.read_csv(project / "patients.csv", dtype={"patient_id": str}).head(30)
    frame.loc[17, "mean_radius"] = float("inf")
    frame.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(NonFiniteInput, match=r"'mean_radius' holds inf in row 18 of rows.parquet"):
        predict_file(
            registry,
            "tumours",
            "production",
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "out.parquet"),
            partition_rows=10,
        )
    assert not (tmp_path / "out.parquet").exists()


def test_missing_text_in_pandas_strings_is_scored_by_a_model_that_cannot_take_pd_na() -> None:
    """A text pipeline as models were trained before it took pd.NA (imputer first): batch
    scoring hands it NaN, not pd.NA, for an empty CSV cell."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeflow.models import flatten
    from pipeflow.scoring.model import ScoreSpec, score_frame

    text = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=""),
        FunctionTransformer(flatten),
        TfidfVectorizer(),
    )
    model = make_pipeline(ColumnTransformer([("t", text, ["note"])]), LogisticRegression())
    notes = ["pipe burst in the kitchen", "car stolen overnight"] * 20
    model.fit(pd.DataFrame({"note": notes}), ["water", "theft"] * 20)
    frame = pd.DataFrame(
        {"note": pd.array(["car stolen", None, "pipe burst"], dtype="string[pyarrow]")}
    )
    scored = score_frame(model, frame, ScoreSpec(("note",)))
    expected = model.predict(pd.DataFrame({"note": ["car stolen", np.nan, "pipe burst"]}))
    assert scored["prediction"].tolist() == expected.tolist()


# ----------------------------------------------------------------------------------- the stage


def test_spec_with_a_predict_stage_scores_with_the_alias_holder(
    project: Path, registry: Registry
) -> None:
    from pipeflow.runner.session import run

    spec = project / SPEC.name
    shutil.copy(SPEC, spec)
    report = run(spec)
    assert report.ok, [report.stages[n].error for n in report.failed]
    scored = report.load("scored")
    info = report.load("scored", "info")
    frame = pd.read_csv(project / "patients.csv")
    predictions, proba = expected(registry, frame)
    assert scored["patient_id"].tolist() == frame["patient_id"].tolist()
    assert scored["prediction"].tolist() == list(predictions)
    assert scored[["proba_benign", "proba_malignant"]].to_numpy() == pytest.approx(proba)
    assert scored["prediction_id"].tolist() == [f"{info['batch_id']}-{i}" for i in range(569)]
    assert (info["model"], info["version"], info["rows"]) == ("tumours", 1, 569)
    assert info["ref"] == "tumours@production"

    # unchanged data and alias: reused; the alias moves: scored again by the new holder
    assert run(spec).stages["scored"].state.value == "cached"
    from sklearn.linear_model import LogisticRegression

    source = registry.load_model("tumours", 1)[0]
    other = LogisticRegression(C=0.01, max_iter=5000)
    training = pd.read_csv(project / "data.csv")
    labels = training.pop("diagnosis")
    refit = type(source)(steps=[*source.steps[:-1], ("model", other)]).fit(training, labels)
    v1 = registry.version("tumours", 1)
    v2 = registry.register(
        "tumours", registry.store.save(refit, "model"), signature=v1.get("signature") or {}
    )
    registry.move_alias("tumours", "production", v2["version"])
    moved = run(spec)
    assert moved.stages["scored"].state.value == "done"
    assert moved.load("scored", "info")["version"] == v2["version"]


def tiny_store(root: Path) -> ArtifactStore:
    """A store whose registry holds ``tiny`` v1 (production): a two-feature classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    store = ArtifactStore(str(root))
    registry = Registry(store)
    if "tiny" not in registry.models():
        X = pd.DataFrame({"a": [0.0, 1, 2, 3, 4, 5], "b": [1.0, 0, 1, 0, 1, 0]})
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, list("nnnyyy"))
        signature = {
            "features": [{"name": c, "dtype": "float64", "role": "numeric"} for c in "ab"],
            "classes": ["n", "y"],
        }
        record = registry.register("tiny", store.save(model, "model"), signature=signature)
        registry.move_alias("tiny", "production", record["version"])
    return store


class TestPredictContract(StageContract):
    stage_cls = PredictStage
    config: ClassVar[dict[str, Any]] = {"model": "tiny@production", "id_column": "key"}
    sample_inputs: ClassVar[dict[str, Any]] = {
        "data": pd.DataFrame({"key": ["k1", "k2", "k3"], "b": [0.0, 1, 0], "a": [0.5, 2.5, 4.5]})
    }
    entry_point = "predict"

    def _run(self, tmp_path: Path) -> Any:
        from pipeflow.core.stage import StageContext

        ctx = StageContext(
            run_id="contract",
            stage="contract",
            params={},
            base_dir=tmp_path,
            store=tiny_store(tmp_path / "registry"),
        )
        return self.stage_cls(self._config()).run(ctx, dict(self.sample_inputs))

    def test_predictions_and_info_name_the_version(self, tmp_path: Path) -> None:
        out = self._run(tmp_path)
        assert list(out["predictions"].columns) == [
            "prediction_id",
            "key",
            "prediction",
            "proba_n",
            "proba_y",
        ]
        model, _ = Registry(tiny_store(tmp_path / "registry")).load_model("tiny", "production")
        data = self.sample_inputs["data"]
        assert out["predictions"]["prediction"].tolist() == list(model.predict(data[["a", "b"]]))
        assert out["info"]["version"] == 1 and out["info"]["rows"] == 3

    def test_a_missing_feature_fails_naming_it(self, tmp_path: Path) -> None:
        ctx_inputs = {"data": self.sample_inputs["data"].drop(columns=["a"])}
        from pipeflow.core.stage import StageContext

        ctx = StageContext(
            run_id="r", stage="s", params={}, base_dir=tmp_path, store=tiny_store(tmp_path / "r")
        )
        with pytest.raises(ValueError, match=r"lacks column\(s\) a needed by tiny@1"):
            self.stage_cls(self._config()).run(ctx, ctx_inputs)

    def test_config_refuses_a_bad_model_reference(self) -> None:
        import pydantic

        with pytest.raises(pydantic.ValidationError):
            PredictStage.Config.model_validate({"model": "tiny@"})


# --------------------------------------------------------------------------------- the cluster


@pytest.mark.cluster
def test_a_local_cluster_scores_the_same_by_client_and_by_address(
    project: Path, registry: Registry, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    source = project / "patients.csv"
    frame = pd.read_csv(source, dtype={"patient_id": str})
    predictions = list(expected(registry, frame)[0])
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        out = tmp_path / "scored.parquet"
        summary = predict_file(
            registry,
            "tumours",
            "production",
            str(source),
            str(out),
            id_column="patient_id",
            partition_rows=50,
            scheduler=client,
        )
        assert summary["partitions"] > 2
        scored = pd.read_parquet(out)
        assert scored["prediction"].tolist() == predictions
        assert scored["patient_id"].tolist() == frame["patient_id"].tolist()
        # by address too (as `pipeflow predict --executor distributed --address` does)
        again = tmp_path / "again.csv"
        predict_file(
            registry, "tumours", "production", str(source), str(again),
            scheduler=cluster.scheduler_address, partition_rows=50,
        )  # fmt: skip
        assert pd.read_csv(again)["prediction"].tolist() == predictions
        assert json.loads(json.dumps(summary))  # the summary is plain JSON


@pytest.mark.parametrize(
    "start, n", [(0, 0), (0, 1), (0, 12), (995, 20), (99_990, 30), (7, 250_000)]
)
def test_prediction_ids_written_by_numpy_are_the_batch_and_the_row_number(
    start: int, n: int
) -> None:
    from pipeflow.scoring.files import _ids

    ids = _ids("b1a2", start, n)
    ids.validate(full=True)
    assert ids.to_pylist() == [f"b1a2-{i}" for i in range(start, start + n)]

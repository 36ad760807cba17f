"""Batch scoring with worker resources (``--resources GPU=1``): the partitions go only to the
workers offering them, an xgboost model is scored on a cuda copy there, and a worker without
usable CUDA scores on the CPU, writing the very bytes plain scoring writes.

No GPU is needed: every process here is told ``CUDA_VISIBLE_DEVICES=-1``, so the cuda path falls
back to the CPU deterministically (on a GPU host too). ``benchmarks/gpu_check.py --scoring``
measures the GPU path on a device.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import DASK, cli_env, free_port, kill_group, one_line_error, pipeflow

from pipeflow.errors import UsageError
from pipeflow.registry import Registry
from pipeflow.scoring import device
from pipeflow.scoring.batch import predict_file
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore

HIDDEN = {"CUDA_VISIBLE_DEVICES": "-1"}


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process sees no CUDA device, and decides the device afresh in each test."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    device.cuda_usable.cache_clear()
    device._CHOSEN.clear()
    yield
    device.cuda_usable.cache_clear()
    device._CHOSEN.clear()


@pytest.fixture
def fixed_batch_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every job gets batch id ``b0123abcd``, so two outputs compare byte for byte."""
    from pipeflow.scoring import batch

    monkeypatch.setattr(batch.secrets, "token_hex", lambda n: "0123abcd")
    return "b0123abcd"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    """A store whose registry holds ``xgb`` (StandardScaler + XGBClassifier) and ``linear``
    (StandardScaler + LogisticRegression), both on features a-d, and ``rows.parquet`` beside it:
    2,000 rows with a text id ``key``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    root = tmp_path_factory.mktemp("gpuscore")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] * X["c"] > 0).astype(int)
    store = ArtifactStore(str(root / "store"))
    registry = Registry(store)
    signature = {"features": [{"name": c, "dtype": "float64", "role": "numeric"} for c in "abcd"]}
    for name, final in [
        ("xgb", XGBClassifier(n_estimators=20, max_depth=4, tree_method="hist")),
        ("linear", LogisticRegression()),
    ]:
        model = make_pipeline(StandardScaler(), final).fit(X, y)
        registry.register(name, store.save(model, "model"), signature=signature)
    X.insert(0, "key", [f"k{i:05d}" for i in range(len(X))])
    X.to_parquet(root / "rows.parquet", row_group_size=250)
    return store


def rows(store: ArtifactStore) -> Path:
    return Path(store.url).parent / "rows.parquet"


def model_file(store: ArtifactStore, name: str) -> Path:
    """The stored model file of ``name`` v1 (``objects/ab/cdef...``, named by its sha256)."""
    digest = Registry(store).version(name, 1)["model"]["digest"]
    path = Path(store.url) / "objects" / digest[:2] / digest[2:]
    assert path.is_file(), path
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ resource text


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("GPU=1", {"GPU": 1.0}),
        ("GPU=2,MEM=4e9", {"GPU": 2.0, "MEM": 4e9}),
        (" GPU=0.5 ", {"GPU": 0.5}),
    ],
)
def test_resources_are_read_as_dask_worker_takes_them(text: str, parsed: dict) -> None:
    assert device.parse_resources(text) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("GPU", "'GPU' is not NAME=NUMBER"),
        ("GPU=one", "'GPU=one' is not NAME=NUMBER"),
        ("GPU=0", "GPU=0.0: expected a number above 0"),
        ("", "expected NAME=NUMBER"),
    ],
)
def test_bad_resource_text_is_a_usage_error_saying_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(UsageError, match="--resources") as caught:
        device.parse_resources(text)
    assert says in str(caught.value)


def test_cli_bad_resources_exit_2_with_one_line(store: ArtifactStore, tmp_path: Path) -> None:
    proc = pipeflow(
        ["predict", "xgb@1", "-i", rows(store), "-o", tmp_path / "out.parquet",
         "--store", store.url, "--resources", "GPU:1"],
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "'GPU:1' is not NAME=NUMBER" in one_line_error(proc.stderr)
    assert not (tmp_path / "out.parquet").exists()


# -------------------------------------------------------------------------------- the device


def test_the_cuda_copy_is_a_copy_and_the_loaded_model_stays_on_the_cpu(
    store: ArtifactStore,
) -> None:
    model, _ = Registry(store).load_model("xgb", 1)
    twin = device.on_cuda(model)
    assert device.xgboost_step(twin).get_params()["device"] == "cuda"
    assert device.xgboost_step(model).get_params()["device"] in (None, "cpu")
    assert device.xgboost_step(twin) is not device.xgboost_step(model)


def test_the_xgboost_step_is_found_bare_in_a_pipeline_and_label_decoded() -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier, XGBRegressor

    from pipeflow.models import LabelDecodedClassifier

    bare = XGBRegressor(n_estimators=2)
    assert device.xgboost_step(bare) is bare
    inner = XGBClassifier(n_estimators=2)
    pipe = make_pipeline(StandardScaler(), inner)
    assert device.xgboost_step(pipe) is inner
    assert device.xgboost_step(LabelDecodedClassifier(pipe, ["n", "y"])) is inner
    assert device.xgboost_step(make_pipeline(StandardScaler(), LinearRegression())) is None
    twin = device.on_cuda(LabelDecodedClassifier(pipe, ["n", "y"]))
    assert device.xgboost_step(twin).get_params()["device"] == "cuda"
    assert inner.get_params()["device"] is None
    with pytest.raises(ValueError, match="no xgboost estimator"):
        device.on_cuda(LinearRegression())


def test_hidden_devices_mean_no_usable_cuda_with_the_reason() -> None:
    usable, why = device.cuda_usable()
    assert not usable
    assert "CUDA_VISIBLE_DEVICES='-1'" in why or "without CUDA" in why


def test_cpu_fallback_writes_the_bytes_plain_scoring_writes_and_leaves_the_model_file(
    store: ArtifactStore, tmp_path: Path, fixed_batch_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(store)
    before = sha256(model_file(store, "xgb"))
    plain = predict_file(
        registry, "xgb", 1, str(rows(store)), str(tmp_path / "plain.parquet"),
        id_column="key", partition_rows=500,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="pipeflow.scoring.device"):
        gpu = predict_file(
            registry, "xgb", 1, str(rows(store)), str(tmp_path / "gpu.parquet"),
            id_column="key", partition_rows=500, resources={"GPU": 1},
            audit_folder=tmp_path / "audit",
        )  # fmt: skip
    assert (tmp_path / "gpu.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    assert gpu["output_fingerprint"] == plain["output_fingerprint"]
    assert sha256(model_file(store, "xgb")) == before
    assert plain["device"] == "cpu" and plain["resources"] == {} and plain["notes"] == []
    assert gpu["device"] == "cpu" and gpu["resources"] == {"GPU": 1.0}
    assert any("no usable CUDA" in n for n in gpu["notes"]), gpu["notes"]
    assert any("threads scheduler has no workers to route" in n for n in gpu["notes"])
    assert [r.getMessage() for r in caplog.records if "no usable CUDA" in r.getMessage()]
    (record,) = audit.read(tmp_path / "audit", "batches")
    assert record["device"] == "cpu" and record["resources"] == {"GPU": 1.0}
    assert sum(w["partitions"] for w in record["workers"].values()) == gpu["partitions"] == 4


def test_one_warning_per_process_however_many_jobs(
    store: ArtifactStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(store)
    with caplog.at_level("WARNING", logger="pipeflow.scoring.device"):
        for i in range(3):
            predict_file(
                registry, "xgb", 1, str(rows(store)), str(tmp_path / f"{i}.parquet"),
                partition_rows=500, resources={"GPU": 1},
            )  # fmt: skip
    assert len([r for r in caplog.records if "no usable CUDA" in r.getMessage()]) == 1


def test_a_model_that_is_not_xgboost_scores_on_the_cpu_and_says_so(
    store: ArtifactStore, tmp_path: Path
) -> None:
    summary = predict_file(
        Registry(store), "linear", 1, str(rows(store)), str(tmp_path / "out.csv"),
        resources={"GPU": 1},
    )  # fmt: skip
    assert summary["device"] == "cpu"
    assert any("Pipeline is not an xgboost model" in n for n in summary["notes"])


def test_a_bad_resource_mapping_is_refused_before_scoring(
    store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="GPU='1': expected a number above 0"):
        predict_file(
            Registry(store), "xgb", 1, str(rows(store)), str(tmp_path / "out.csv"),
            resources={"GPU": "1"},
        )  # fmt: skip
    assert not (tmp_path / "out.csv").exists()


def test_cli_prints_the_device_and_why_not_cuda(store: ArtifactStore, tmp_path: Path) -> None:
    proc = pipeflow(
        ["predict", "xgb@1", "-i", rows(store), "-o", tmp_path / "out.parquet",
         "--store", store.url, "--resources", "GPU=1", "--partition-rows", "1000"],
        env={**cli_env(), **HIDDEN},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "predicted 2,000 rows with xgb@1" in proc.stdout
    assert "scored on cpu by pid " in proc.stdout and "(2 partitions, cpu)" in proc.stdout
    assert "note: pid " in proc.stdout and "no usable CUDA" in proc.stdout


def test_the_predict_stage_with_gpu_resources_falls_back_and_records_the_device(
    store: ArtifactStore, tmp_path: Path
) -> None:
    from pipeflow.core.stage import StageContext
    from pipeflow.stages.predict import PredictStage

    data = pd.read_parquet(rows(store))
    outs = []
    for resources in ({}, {"GPU": 1.0}):
        ctx = StageContext(
            run_id="r", stage="s", params={}, base_dir=tmp_path, store=store, resources=resources
        )
        outs.append(PredictStage(PredictStage.Config(model="xgb@1")).run(ctx, {"data": data}))
    plain, gpu = outs
    assert plain["info"]["device"] == gpu["info"]["device"] == "cpu"
    pd.testing.assert_frame_equal(plain["predictions"], gpu["predictions"])


# --------------------------------------------------------------------------------- a cluster


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, one started with
    ``--resources GPU=1``; the workers see no CUDA device (``CUDA_VISIBLE_DEVICES=-1``)."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str]) -> None:
        with open(logs / f"{name}.log", "wb") as fh:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**cli_env(), **HIDDEN},
                )  # fmt: skip
            )

    worker = [DASK, "worker", address, "--host", "127.0.0.1", "--no-dashboard", "--nthreads", "1"]
    try:
        start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                            "--no-dashboard"])  # fmt: skip
        start("cpu-worker", [*worker, "--name", "cpu-worker"])
        start("gpu-worker", [*worker, "--name", "gpu-worker", "--resources", "GPU=1"])
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
            workers = client.scheduler_info(n_workers=-1)["workers"]
        gpu = [a for a, w in workers.items() if w.get("resources", {}).get("GPU")]
        assert len(gpu) == 1 and len(workers) == 2, workers
        yield {"address": address, "gpu": gpu[0], "cpu": next(a for a in workers if a != gpu[0])}
    finally:
        for proc in reversed(procs):
            kill_group(proc)


@pytest.mark.cluster
def test_partitions_go_only_to_the_worker_offering_the_gpu(
    store: ArtifactStore, tmp_path: Path, fixed_batch_id: str, gpu_cluster: dict[str, str]
) -> None:
    registry = Registry(store)
    before = sha256(model_file(store, "xgb"))
    kw: dict[str, Any] = {"id_column": "key", "partition_rows": 250}
    predict_file(registry, "xgb", 1, str(rows(store)), str(tmp_path / "plain.parquet"), **kw)
    summary = predict_file(
        registry, "xgb", 1, str(rows(store)), str(tmp_path / "gpu.parquet"),
        scheduler=gpu_cluster["address"], resources={"GPU": 1},
        audit_folder=tmp_path / "audit", **kw,
    )  # fmt: skip
    assert summary["partitions"] == 8
    assert list(summary["workers"]) == [gpu_cluster["gpu"]], summary["workers"]
    assert summary["workers"][gpu_cluster["gpu"]] == {"partitions": 8, "device": "cpu"}
    assert summary["notes"] and all(n.startswith(gpu_cluster["gpu"]) for n in summary["notes"])
    assert "no usable CUDA" in summary["notes"][0]
    (record,) = audit.read(tmp_path / "audit", "batches")
    assert list(record["workers"]) == [gpu_cluster["gpu"]] and record["device"] == "cpu"
    # the fallback wrote what plain scoring writes; the stored model is untouched
    assert (tmp_path / "gpu.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    assert sha256(model_file(store, "xgb")) == before


@pytest.mark.cluster
def test_no_worker_offering_the_resources_is_refused_naming_them_and_the_offers(
    store: ArtifactStore, tmp_path: Path, gpu_cluster: dict[str, str]
) -> None:
    with pytest.raises(UsageError) as caught:
        predict_file(
            Registry(store), "xgb", 1, str(rows(store)), str(tmp_path / "out.parquet"),
            scheduler=gpu_cluster["address"], resources={"GPU": 2},
        )  # fmt: skip
    message = str(caught.value)
    assert "no worker of the cluster offers resources GPU=2" in message
    assert f"{gpu_cluster['gpu']} GPU=1;" in message or f"{gpu_cluster['gpu']} GPU=1)" in message
    assert f"{gpu_cluster['cpu']} nothing" in message
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.cluster
def test_cli_on_the_cluster_names_the_gpu_worker(
    store: ArtifactStore, tmp_path: Path, gpu_cluster: dict[str, str]
) -> None:
    proc = pipeflow(
        ["predict", "xgb@1", "-i", rows(store), "-o", tmp_path / "out.csv",
         "--store", store.url, "--executor", "distributed", "--address", gpu_cluster["address"],
         "--resources", "GPU=1", "--partition-rows", "500"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"scored on cpu by {gpu_cluster['gpu']} (4 partitions, cpu)" in proc.stdout
    refused = pipeflow(
        ["predict", "xgb@1", "-i", rows(store), "-o", tmp_path / "no.csv",
         "--store", store.url, "--executor", "distributed", "--address", gpu_cluster["address"],
         "--resources", "TPU=1"],
    )  # fmt: skip
    assert refused.returncode == 2
    assert "no worker of the cluster offers resources TPU=1" in one_line_error(refused.stderr)

"""GPU check: xgboost's ``device: cuda`` through pipeflow, on a machine with an NVIDIA GPU.

    python benchmarks/gpu_check.py [--rows N] [--out DIR] [--scoring] [--score-rows N]

1. ``XGBClassifier.fit`` on N x 28 numbers (hist, 50 trees, depth 6) on every CPU core vs with
   ``device="cuda"``, in the same run (best of two each): the time ratio, and both models'
   accuracy on held-out rows.
2. ``pipeflow.run`` of a spec whose ``train`` stage asks for ``resources: {GPU: 1}``, on a Dask
   LocalCluster whose one worker offers ``GPU=1`` (run first, so that the GPU memory this process
   holds afterwards is the stage's): the stage must record ``device: cuda``, the stored model
   (skops, loaded back through the store) must be set to predict on the CPU and predict there
   what it predicts on the GPU.
   Then the same stage with ``distributed: always`` (``xgboost.dask`` on that worker), timed
   against the stage in one piece run again (warm); and a
   ``tune`` stage with ``resources: {GPU: 1}`` (its trials run on the GPU, in the stage).
3. The ``train`` stage alone (no Dask, no store) against the bare cuda fit, with a profile.
4. Batch scoring (``--scoring``: this section alone): ``--score-rows`` rows (10,000,000; 28
   float32 features, generated, one Parquet file) scored by ``pipeflow predict --executor
   distributed --address`` with an XGBClassifier (300 trees, depth 8, stored CPU-ready): on a
   LocalCluster of 2 worker processes of 1 thread (the 2-core CPU throughput), then with
   ``--resources GPU=1`` on a LocalCluster whose one worker offers ``GPU=1``, in the same run.
   PASS when the GPU job scored on ``cuda`` (its audit record says so) at least 5x the CPU
   rows/s, with the same predicted labels (and the largest probability difference reported),
   and the stored model file unchanged. ``--scoring --force --score-rows 20000`` runs it on a
   machine without a GPU (the GPU job then falls back to the CPU: a MISS, by design).

Prints one JSON object; ``ok`` is false where a check failed. With ``--out`` it also writes the
stored model there (``gpu-model.bin``, ``gpu-model.json``: its ref, 1,000 rows and what it
predicted for them), for ``--verify DIR`` on a machine without a GPU.
Without a GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ml  # noqa: E402  (train_arrays, XGB_PARAMS)

SPEC = """\
pipeline: gpu-check
stages:
  data:
    type: python
    with: {{function: "gpu_steps:table", kwargs: {{rows: {rows}}}, outputs: {{out: table}}}}
  split:
    type: split
    inputs: {{data: data}}
    with: {{test_size: 0.2, seed: 0}}
  model:
    type: train
    inputs: {{train: split.train}}
    resources: {{GPU: 1}}
    with:
      estimator: xgboost.XGBClassifier
      params: {{n_estimators: 50, tree_method: hist, max_depth: 6}}
      task: classification
      target: label
  scores:
    type: evaluate
    inputs: {{model: model, data: split.test}}
    with: {{target: label}}
  tuned:
    type: tune
    inputs: {{train: split.train}}
    resources: {{GPU: 1}}
    with:
      estimator: xgboost.XGBClassifier
      params: {{n_estimators: 50, tree_method: hist}}
      space: {{max_depth: [4, 6]}}
      cv: 2
      target: label
"""

STEPS = """\
import numpy as np
import pandas as pd


def table(rows):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 28))
    w = rng.normal(size=28)
    logit = X @ w + 0.5 * np.sin(3 * X[:, 0]) * X[:, 1]
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(28)])
    frame["label"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return frame
"""


def nvidia_smi(query: str) -> str | None:
    """``nvidia-smi --query-gpu=QUERY`` for the first GPU, or None where there is none."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


def gpu_memory_used_mib() -> int | None:
    used = nvidia_smi("memory.used")
    return int(used) if used and used.isdigit() else None


def fit_times(rows: int) -> dict[str, Any]:
    import numpy as np
    import xgboost

    X, y = bench_ml.train_arrays(rows + 100_000)
    X_test, y_test = X[rows:], y[rows:]
    X, y = X[:rows], y[:rows]
    params = {k: v for k, v in bench_ml.XGB_PARAMS.items() if k != "n_jobs"}
    result: dict[str, Any] = {"rows": rows, "cpu_threads": os.cpu_count()}
    for device in ("cpu", "cuda", "cpu", "cuda"):  # alternating, best of two
        t0 = time.perf_counter()
        model = xgboost.XGBClassifier(**params, device=device).fit(X, y)
        elapsed = time.perf_counter() - t0
        result[f"{device}_s"] = min(result.get(f"{device}_s", elapsed), elapsed)
        model.set_params(device="cpu")
        result[f"{device}_accuracy"] = float(np.mean(model.predict(X_test) == y_test))
    result["cuda_vs_cpu_time"] = result["cuda_s"] / result["cpu_s"]
    # how the rows are laid out changes how xgboost reads them: the train stage hands a table of
    # numbers over as a column-major view of the frame's block (pipeflow.models.NumericColumns)
    import pandas as pd

    layouts = {
        "C": X,
        "F": np.asfortranarray(X),
        "DataFrame": pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]),
    }
    result["cuda_s_by_layout"] = {}
    for name, data in layouts.items():
        t0 = time.perf_counter()
        xgboost.XGBClassifier(**params, device="cuda").fit(data, y)
        result["cuda_s_by_layout"][name] = time.perf_counter() - t0
    return result


def stage_alone(rows: int) -> dict[str, Any]:
    """The train stage run directly (no Dask) with GPU resources: its time against the bare
    cuda fit, and where it goes (cProfile's top entries by cumulative time)."""
    import cProfile
    import io
    import pstats

    import numpy as np
    import pandas as pd

    from pipeflow.core.stage import StageContext
    from pipeflow.stages.train import TrainStage

    X, y = bench_ml.train_arrays(rows)
    table = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    table["label"] = np.where(y == 1, "yes", "no")
    params = {k: v for k, v in bench_ml.XGB_PARAMS.items() if k != "n_jobs"}
    stage = TrainStage(
        TrainStage.Config(
            estimator="xgboost.XGBClassifier", params=params, target="label", task="classification"
        )
    )
    context = StageContext("r", "model", {}, Path("."), resources={"GPU": 1})
    stage.run(context, {"train": table})  # warm-up
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    out = stage.run(context, {"train": table})
    profiler.disable()
    stage_s = time.perf_counter() - t0
    import xgboost

    t0 = time.perf_counter()
    xgboost.XGBClassifier(**params, device="cuda").fit(X, y)
    fit_s = time.perf_counter() - t0
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    return {
        "rows": rows,
        "device": out["info"]["device"],
        "stage_s": stage_s,
        "bare_cuda_fit_s": fit_s,
        "stage_vs_fit_time": stage_s / fit_s,
        "profile": [line for line in text.getvalue().splitlines() if "(" in line][:24],
    }


def pipeline_on_gpu_worker(rows: int, out: Path | None) -> dict[str, Any]:
    import numpy as np
    from distributed import LocalCluster

    import pipeflow

    # the train stage's own line: "trained ... on N rows in S s (train score ...)"
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("pipeflow.stage").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="pipeflow-gpu-") as tmp:
        folder = Path(tmp)
        (folder / "pipeline.yaml").write_text(SPEC.format(rows=rows))
        (folder / "gpu_steps.py").write_text(STEPS)
        sys.path.insert(0, str(folder))  # the in-process worker imports gpu_steps
        with LocalCluster(
            n_workers=1,
            threads_per_worker=4,
            processes=False,
            resources={"GPU": 1},
            dashboard_address=None,
        ) as cluster:
            memory_before = gpu_memory_used_mib()
            t0 = time.perf_counter()
            report = pipeflow.run(
                folder / "pipeline.yaml", executor="distributed", address=cluster.scheduler_address
            )
            run_s = time.perf_counter() - t0
            memory_after = gpu_memory_used_mib()
            # the same stage through xgboost.dask (distributed: always) on the one GPU worker
            t0 = time.perf_counter()
            spread = pipeflow.run(
                folder / "pipeline.yaml",
                executor="distributed",
                address=cluster.scheduler_address,
                overrides=["stages.model.with.distributed=always"],
            )
            spread_s = time.perf_counter() - t0
            # and in one piece again, warm (the first run's GPU stage pays a start-up), for the
            # ratio of the two
            warm = pipeflow.run(
                folder / "pipeline.yaml",
                executor="distributed",
                address=cluster.scheduler_address,
                only="model",
                force=True,
            )
        result: dict[str, Any] = {
            "state": str(report.state),
            "run_s": run_s,
            # nothing in this process used the GPU before the run: what it holds now, the stage
            # took (xgboost's CUDA context and memory pool)
            "gpu_memory_mib_before_after": [memory_before, memory_after],
            "stages": {
                n: {"state": str(s.state), "error": s.error, "duration_s": s.duration}
                for n, s in report.stages.items()
            },
        }
        if not report.ok:
            return result
        info = report.load("model", "info")
        model = report.load("model", "model")
        xgb = _find_xgboost(model)
        config = json.loads(xgb.get_booster().save_config())
        test = report.load("split", "test")
        X = test.drop(columns=["label"])
        on_cpu = model.predict(X)  # as stored: predicts on the CPU
        sample = X.head(1000)
        check = {
            "ref": report.stages["model"].outputs["model"].to_dict(),
            "rows": sample.to_dict("list"),
            "predictions": model.predict(sample).tolist(),
            "proba": model.predict_proba(sample).tolist(),
        }
        xgb.set_params(device="cuda")
        on_gpu = model.predict(X)
        result.update(
            recorded_device=info.get("device"),
            recorded_params_device=info["params"].get("device"),
            stored_booster_device=config["learner"]["generic_param"].get("device"),
            same_predictions_cpu_gpu=bool(np.array_equal(on_gpu, on_cpu)),
            test_accuracy=float(np.mean(on_cpu == test["label"].to_numpy())),
            evaluate_accuracy=report.load("scores", "metrics").get("accuracy"),
        )
        tuned = report.load("tuned", "info")
        trials = report.load("tuned", "trials")
        result["tune"] = {
            "duration_s": report.stages["tuned"].duration,
            "device": tuned.get("device"),
            "trials": len(trials),
            "trial_errors": int(trials["error"].notna().sum()) if "error" in trials else 0,
            "stored_device": _find_xgboost(report.load("tuned", "model")).get_params()["device"],
        }
        result["xgboost_dask"] = {
            "state": str(spread.state),
            "run_s": spread_s,
            "error": spread.stages["model"].error,
        }
        if spread.ok:
            spread_info = spread.load("model", "info")
            model_s = spread.stages["model"].duration
            one_piece_s = warm.stages["model"].duration if warm.ok else None
            result["xgboost_dask"].update(
                model_s=model_s,
                one_piece_model_s=one_piece_s,
                vs_one_piece_time=model_s / one_piece_s if model_s and one_piece_s else None,
                distributed=spread_info.get("distributed"),
                device=spread_info.get("device"),
                evaluate_accuracy=spread.load("scores", "metrics").get("accuracy"),
            )
        if out is not None:  # the model's stored bytes, and what it predicted on the GPU
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu-model.bin").write_bytes(report.store.get(check["ref"]["digest"]))
            (out / "gpu-model.json").write_text(json.dumps(check))
    return result


def scoring_table(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """``rows`` x 28 float32 features ``f0``..``f27`` (and a ``label`` column for training) in
    one Parquet file, written a row group of ``chunk`` rows at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    w = rng.normal(size=28)
    writer = None
    try:
        for start in range(0, rows, chunk):
            X = rng.normal(size=(min(chunk, rows - start), 28)).astype(np.float32)
            logit = X @ w + 0.5 * np.sin(3 * X[:, 0]) * X[:, 1]
            columns = {f"f{i}": X[:, i] for i in range(28)}
            columns["label"] = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(np.int8)
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def batch_scoring(rows: int) -> dict[str, Any]:
    """Section 4 of the module docstring: one JSON-able result."""
    import hashlib
    import subprocess

    import numpy as np
    import pandas as pd
    from distributed import LocalCluster
    from xgboost import XGBClassifier

    from pipeflow.registry import Registry
    from pipeflow.scoring.device import cuda_usable
    from pipeflow.store import journal
    from pipeflow.store.artifacts import ArtifactStore

    repo = str(Path(__file__).resolve().parent.parent)  # workers and the CLI import this pipeflow
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    usable, why = cuda_usable()
    result: dict[str, Any] = {"rows": rows, "cuda_here": usable, "cuda_why": why}
    with tempfile.TemporaryDirectory(prefix="pipeflow-gpu-scoring-") as tmp:
        folder = Path(tmp)
        data = folder / "rows.parquet"
        t0 = time.perf_counter()
        scoring_table(data, rows)
        result["generate_s"] = time.perf_counter() - t0
        train = pd.read_parquet(data).head(min(rows, 500_000))
        features = [f"f{i}" for i in range(28)]
        model = XGBClassifier(
            n_estimators=300, max_depth=8, tree_method="hist", device="cuda" if usable else "cpu"
        )
        t0 = time.perf_counter()
        model.fit(train[features], train["label"])
        result["train_s"] = time.perf_counter() - t0
        model.set_params(device="cpu")  # stored CPU-ready, as the train stage stores it
        store = ArtifactStore(str(folder / "store"))
        registry = Registry(store)
        signature = {"features": [{"name": f, "dtype": "float32"} for f in features]}
        digest = registry.register("scorer", store.save(model, "model"), signature=signature)[
            "model"
        ]["digest"]
        stored = Path(store.url) / "objects" / digest[:2] / digest[2:]
        before = hashlib.sha256(stored.read_bytes()).hexdigest()

        def predict(cluster: Any, out: str, *extra: str) -> dict[str, Any]:
            argv = [sys.executable, "-m", "pipeflow", "predict", "scorer@1", "-i", str(data)]
            argv += ["-o", str(folder / out), "--store", store.url, "--executor", "distributed"]
            argv += ["--address", cluster.scheduler_address, "--partition-rows", "1000000"]
            argv += ["--audit-dir", str(folder / out.replace(".", "-")), *extra]
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
            (record,) = journal.read(folder / out.replace(".", "-"), "batches")
            return {
                "rows_per_s": record["rows"] / record["duration_s"],
                "duration_s": record["duration_s"],
                "device": record["device"],
                "workers": record["workers"],
                "notes": record["notes"],
                "stdout": proc.stdout.strip().splitlines(),
            }

        cluster_args = {"threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
        with LocalCluster(n_workers=2, **cluster_args) as cpu_cluster:
            result["cpu_2_cores"] = predict(cpu_cluster, "cpu.parquet")
        with LocalCluster(n_workers=1, resources={"GPU": 1}, **cluster_args) as gpu_cluster:
            memory_before = gpu_memory_used_mib()
            result["gpu"] = predict(gpu_cluster, "gpu.parquet", "--resources", "GPU=1")
            result["gpu"]["gpu_memory_mib_before_after"] = [memory_before, gpu_memory_used_mib()]
        cpu = pd.read_parquet(folder / "cpu.parquet")
        gpu = pd.read_parquet(folder / "gpu.parquet")
        proba = [c for c in cpu.columns if c.startswith("proba_")]
        result["same_predictions"] = bool(
            len(cpu) == len(gpu) == rows and np.array_equal(cpu["prediction"], gpu["prediction"])
        )
        result["proba_max_abs_diff"] = float(
            np.max(np.abs(cpu[proba].to_numpy() - gpu[proba].to_numpy()), initial=0.0)
        )
        result["model_file_unchanged"] = hashlib.sha256(stored.read_bytes()).hexdigest() == before
    ratio = result["gpu"]["rows_per_s"] / result["cpu_2_cores"]["rows_per_s"]
    result["gpu_vs_cpu_2_cores"] = ratio
    result["pass"] = bool(
        result["gpu"]["device"] == "cuda"
        and ratio >= 5
        and result["same_predictions"]
        and result["model_file_unchanged"]
    )
    result["verdict"] = "PASS" if result["pass"] else "MISS"
    return result


def verify(folder: Path) -> dict[str, Any]:
    """Load the model ``--out`` wrote through a store, here (no GPU needed), and compare."""
    import warnings

    import numpy as np
    import pandas as pd

    from pipeflow.store.artifacts import ArtifactRef, ArtifactStore

    check = json.loads((folder / "gpu-model.json").read_text())
    ref = ArtifactRef.from_dict(check["ref"])
    with tempfile.TemporaryDirectory(prefix="pipeflow-gpu-verify-") as tmp:
        store = ArtifactStore(tmp)
        digest = store.put((folder / "gpu-model.bin").read_bytes())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = store.load(ref)
            rows = pd.DataFrame(check["rows"])
            predictions = model.predict(rows)
            proba = model.predict_proba(rows)
    return {
        "digest_matches": digest == ref.digest,
        "same_predictions": bool(np.array_equal(predictions, np.asarray(check["predictions"]))),
        "proba_max_abs_diff": float(np.max(np.abs(proba - np.asarray(check["proba"])))),
        "device_param": _find_xgboost(model).get_params().get("device"),
        "warnings": sorted({str(w.message)[:160] for w in caught}),
    }


def _find_xgboost(model: Any) -> Any:
    """The XGBClassifier inside the stage's model (pipelines and label decoding around it)."""
    seen = [model]
    while seen:
        obj = seen.pop()
        if hasattr(obj, "get_booster"):
            return obj
        seen.extend(step for _, step in getattr(obj, "steps", []))
        seen.extend(v for v in (getattr(obj, "pipeline", None),) if v is not None)
    raise LookupError(f"no xgboost model inside {type(model).__name__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--verify", type=Path, default=None, help="check a model --out wrote, on this machine"
    )
    parser.add_argument(
        "--force", action="store_true", help="run without a GPU too (a dry run of the script)"
    )
    parser.add_argument("--scoring", action="store_true", help="only the batch-scoring section (4)")
    parser.add_argument(
        "--score-rows", type=int, default=10_000_000, help="rows the batch-scoring section scores"
    )
    args = parser.parse_args()
    if args.verify is not None:
        result = verify(args.verify)
        result["ok"] = bool(
            result["digest_matches"]
            and result["same_predictions"]
            and result["proba_max_abs_diff"] < 1e-6
        )
        print(json.dumps(result, indent=1))
        return 0 if result["ok"] else 1
    gpu = nvidia_smi("name,memory.total")
    if gpu is None and not args.force:
        print(json.dumps({"gpu": None, "ok": False, "why": "nvidia-smi found no GPU"}))
        return 2
    import xgboost

    result: dict[str, Any] = {
        "gpu": gpu,
        "xgboost": xgboost.__version__,
        "xgboost_cuda": xgboost.build_info().get("USE_CUDA"),
    }
    if args.scoring:
        result["scoring"] = batch_scoring(args.score_rows)
        result["ok"] = result["scoring"]["pass"]
        print(json.dumps(result, indent=1, default=str))
        return 0 if result["ok"] else 1
    result["pipeline"] = run = pipeline_on_gpu_worker(args.rows, args.out)  # first: see above
    result["fit"] = fit_times(args.rows)
    result["stage_alone"] = stage_alone(args.rows)
    result["scoring"] = batch_scoring(args.score_rows)
    before, after = run.get("gpu_memory_mib_before_after") or (None, None)
    result["ok"] = bool(
        run.get("recorded_device") == "cuda"
        and (args.force or (before is not None and after is not None and after - before >= 100))
        and run.get("stored_booster_device") == "cpu"
        and run.get("same_predictions_cpu_gpu")
        and (run.get("xgboost_dask") or {}).get("device") == "cuda"
        and run.get("tune", {}).get("device") == "cuda"
        and run.get("tune", {}).get("stored_device") == "cpu"
        and run.get("tune", {}).get("trial_errors") == 0
        and result["scoring"]["pass"]
    )
    print(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

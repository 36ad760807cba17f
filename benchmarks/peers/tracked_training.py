"""Tracked training: pipeflow's ``train`` stage with its outputs stored vs an MLflow-tracked script.

What an MLflow user runs to train and keep an xgboost model (the lean form: no autolog, the
requirements given rather than inferred, a signature from 100 rows):

    with mlflow.start_run():
        model = XGBClassifier(**params).fit(X, y)
        mlflow.log_params(params)
        mlflow.log_metric("train_accuracy", model.score(X_sample, y_sample))
        mlflow.xgboost.log_model(model, name="model", signature=..., pip_requirements=[...])

against what pipeflow does for a ``train`` stage: the stage (column preparation, label encoding,
fit, training score on the same 50,000-row sample, reference profile, signature) and the store's
save of both outputs (the model with skops, the training record as JSON), content-addressed and
hashed. The same 1,000,000 x 28 array, the same xgboost parameters (hist, 50 trees, depth 6,
2 threads), alternating repeats, best of each. Both sides start from data in memory.

Run by the Python that has MLflow (``benchmarks/peers/.venv``, see docs/benchmarks.md); prints one
JSON object. ``ml.py`` runs it and makes the row; alone: ``python tracked_training.py [--rows N]
[--repeat K]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, for bench_ml

import bench_ml  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")

    import mlflow
    import mlflow.xgboost
    import numpy as np
    import pandas as pd
    import xgboost
    from mlflow.models import infer_signature

    from pipeflow.stages.train import TrainStage, _sample
    from pipeflow.store.artifacts import ArtifactStore

    X, y = bench_ml.train_arrays(args.rows)
    columns = [f"f{i}" for i in range(X.shape[1])]
    table = pd.DataFrame(X, columns=columns)
    table["label"] = np.where(y == 1, "yes", "no")
    params = bench_ml.XGB_PARAMS
    stage = TrainStage(
        TrainStage.Config(
            estimator="xgboost.XGBClassifier", params=params, target="label", task="classification"
        )
    )
    context = bench_ml.ctx()
    rows = _sample(pd.DataFrame(X), pd.Series(y))[0].index.to_numpy()  # the stage's score sample

    with tempfile.TemporaryDirectory(prefix="pipeflow-peers-tracked-") as name:
        root = Path(name)
        # MLflow's recommended backend (its file store is in maintenance mode); the first use
        # creates the database, before the timing starts
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        # with a database backend MLflow's artifacts default to ./mlruns in the working directory
        mlflow.create_experiment("tracked-training", artifact_location=(root / "mlruns").as_uri())
        mlflow.set_experiment("tracked-training")
        store = ArtifactStore(str(root / "store"))
        kept: dict[str, int] = {}

        def tracked() -> None:
            with mlflow.start_run():
                model = xgboost.XGBClassifier(**params).fit(X, y)
                mlflow.log_params(params)
                mlflow.log_metric("train_accuracy", model.score(X[rows], y[rows]))
                mlflow.xgboost.log_model(
                    model,
                    name="model",
                    signature=infer_signature(X[:100], model.predict(X[:100])),
                    pip_requirements=[f"xgboost=={xgboost.__version__}"],
                )

        def autologged() -> None:
            mlflow.xgboost.autolog(silent=True)
            try:
                with mlflow.start_run():
                    xgboost.XGBClassifier(**params).fit(X, y)
            finally:
                mlflow.xgboost.autolog(disable=True)

        def ours() -> None:
            out = stage.run(context, {"train": table})
            model = store.save(out["model"], kind="model[classifier]")
            store.save(out["info"], kind="metrics")
            kept["model_bytes"] = model.size

        t_mlflow, t_ours = bench_ml.best_pair(tracked, ours, args.repeat)
        t_autolog = bench_ml.best(autologged, args.repeat)
        runs = len(mlflow.search_runs(experiment_names=["tracked-training"]))
    print(
        json.dumps(
            {
                "rows": args.rows,
                "mlflow_s": t_mlflow,
                "pipeflow_s": t_ours,
                "ratio": t_ours / t_mlflow,
                "mlflow_autolog_s": t_autolog,
                "autolog_ratio": t_ours / t_autolog,
                "mlflow_runs": runs,
                "model_bytes": kept.get("model_bytes"),
                "mlflow": mlflow.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

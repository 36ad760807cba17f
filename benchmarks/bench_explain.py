"""Explanations per prediction: what ``explain`` costs per row, for each method, against the plain
prediction of the same rows measured in the same run.

Data: the breast-cancer table of the tests (``pipeflow.testing.tumour_table``: 30 numeric
features and the ``size_band`` category), 31 input columns. Three fitted pipelines, each a
ColumnTransformer (numbers scaled or passed through, ``size_band`` one-hot) and a classifier:

- ``linear``: LogisticRegression (``coef × (x − mean)``);
- ``xgboost``: XGBClassifier, 100 trees of depth 6 (``pred_contribs``);
- ``kernel``: RandomForestClassifier, 100 trees (KernelSHAP: 31 columns, so 256 sampled
  coalitions × 10 background rows = 2,560 model evaluations per row).

Per method: ``plain`` = ``predict`` + ``predict_proba`` of ``--rows`` rows (what a served answer
holds), ``explain`` = the same plus :meth:`pipeflow.governance.explain.Explainer.explain` of them
(what ``?explain=true`` adds; the server builds the explainer once, outside the timing here too).
Best of ``--repeat``, alternating; printed per row and as the ratio explain / plain. The kernel
method is timed on ``--kernel-rows`` rows (it is about a thousand times the work).

Usage: ``python benchmarks/bench_explain.py [--rows N] [--kernel-rows N] [--repeat N]``. Nothing
is asserted: the figures are for a person to read (they go to docs/serving.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_pair(plain: Callable[[], object], explain: Callable[[], object], repeat: int) -> tuple:
    """Best wall seconds of each, alternating (noise only ever adds time)."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, call in enumerate((plain, explain)):
            started = time.perf_counter()
            call()
            best[i] = min(best[i], time.perf_counter() - started)
    return best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--kernel-rows", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pipeflow.governance.explain import explainer_for
    from pipeflow.governance.profile import reference_profile
    from pipeflow.models import LabelDecodedClassifier
    from pipeflow.testing import tumour_table

    frame = tumour_table()
    y = frame.pop("diagnosis")
    numeric = [c for c in frame.columns if c != "size_band"]
    roles = {c: "numeric" for c in numeric} | {"size_band": "categorical"}
    record = {
        "name": "tumours",
        "version": 1,
        "signature": {
            "features": [
                {"name": c, "dtype": str(frame[c].dtype), "role": roles[c]} for c in frame.columns
            ]
        },
        "reference": reference_profile(frame, roles),
    }

    def prepare(scale: bool) -> ColumnTransformer:
        return ColumnTransformer(
            [
                ("numeric", StandardScaler() if scale else "passthrough", numeric),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), ["size_band"]),
            ]
        )

    models = {
        "linear": Pipeline(
            [("prepare", prepare(True)), ("model", LogisticRegression(max_iter=5000))]
        ).fit(frame, y),
        "xgboost": LabelDecodedClassifier(
            Pipeline(
                [
                    ("prepare", prepare(False)),
                    ("model", xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1)),
                ]
            )
        ).fit(frame, y),
        "kernel": Pipeline(
            [
                ("prepare", prepare(False)),
                ("model", RandomForestClassifier(100, random_state=0, n_jobs=1)),
            ]
        ).fit(frame, y),
    }
    print(
        f"bench_explain: {len(frame.columns)} input columns, best of {args.repeat}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'method':<8} {'rows':>5} {'plain ms/row':>13} {'explain ms/row':>15} "
        f"{'overhead ms/row':>16} {'ratio':>8} {'evaluations/row':>16}"
    )
    for method, model in models.items():
        explainer = explainer_for(model, record, list(frame.columns))
        assert explainer.method == method, (explainer.method, method)
        n = args.kernel_rows if method == "kernel" else args.rows
        rows = frame.sample(n, random_state=0).reset_index(drop=True)

        def plain(model=model, rows=rows) -> None:
            model.predict(rows)
            model.predict_proba(rows)

        def explain(model=model, rows=rows, explainer=explainer) -> None:
            model.predict(rows)
            model.predict_proba(rows)
            explainer.explain(model, rows)

        a, b = best_pair(plain, explain, args.repeat)
        evaluations = explainer.evaluations
        print(
            f"{method:<8} {n:>5} {a / n * 1000:>13.3f} {b / n * 1000:>15.3f} "
            f"{(b - a) / n * 1000:>16.3f} {b / a:>7.1f}x {evaluations or '-':>16}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

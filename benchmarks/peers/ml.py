"""Validation and training against the code a Kedro node or an MLflow-tracked script would run.

Neither Kedro nor MLflow has a validate or a train step of its own: a Kedro user writes the checks
as pandas in a node, an MLflow user calls ``XGBClassifier.fit`` and logs the result. So the
baseline of these rows is that hand-written code, measured alone (the peer's own overhead on top,
node dispatch or a tracking call, is left out: the baseline is the peer's lower bound, and "ahead"
means a time ratio <= 1.0x). Both rows reuse ``benchmarks/bench_ml.py``:

- **validation**: pipeflow's ``validate`` stage (12 short-form checks, ``on_failure: quarantine``,
  1,000,000 rows x 12 columns, ~1% bad values per column) vs ``bench_ml.plain_validate``, the same
  12 checks as vectorised pandas masks. pipeflow also writes a reason per rejected row and the
  report's examples. The house target in benchmarks/README.md is <= 2x.
- **training**: pipeflow's ``train`` stage with ``xgboost.XGBClassifier`` (hist, 50 trees, depth 6,
  2 threads) on 1,000,000 x 28 vs ``XGBClassifier(...).fit(X, y)`` on the same array. The stage
  also builds the column transformer, encodes labels and scores the fit. House target <= 1.1x.

Best of the repeats, the two alternating. Usage: ``python benchmarks/peers/ml.py [--quick]
[--rows N] [--json out.json]``; ``--quick`` is 100,000 rows (training at that size is too short to
mean much on a noisy machine).
"""

from __future__ import annotations

import sys
import time

from _common import Row, finish, parser, sibling


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, help="rows for both (default 1,000,000; --quick 100,000)")
    args = p.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)
    repeat = 2 if args.quick else 3
    bench_ml = sibling("bench_ml")
    started = time.perf_counter()

    v = bench_ml.bench_validate(n, repeat)
    t = bench_ml.bench_train(n, max(2, repeat - 1))
    rows = [
        Row(
            "validation",
            f"validate {n:,} x 12, 12 checks, quarantine",
            "hand-written pandas checks (a Kedro node's body)",
            f"{v['plain_pandas_s']:.3f} s",
            f"{v['pipeflow_s']:.3f} s ({v['rows_rejected']:,} rows rejected)",
            v["ratio"],
            "ahead: <= 1.0x time (house target <= 2x)",
            v["ratio"] <= 1.0,
            data=v,
        ),
        Row(
            "training",
            f"train xgboost {n:,} x 28, 50 trees, 2 threads",
            "XGBClassifier.fit (an MLflow-tracked script's body)",
            f"{t['plain_xgboost_s']:.2f} s",
            f"{t['pipeflow_s']:.2f} s",
            t["ratio"],
            "ahead: <= 1.0x time (house target <= 1.1x)",
            t["ratio"] <= 1.0,
            data=t,
        ),
    ]
    return finish(
        f"validation and training: pipeflow stages vs hand-written code, best of {repeat}",
        rows,
        args.json,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    sys.exit(main())

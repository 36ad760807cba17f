"""Run every peer benchmark and write docs/benchmarks.md with the results table.

Each script (``orchestration.py``, ``serving.py``, ``ml.py``) runs in its own process, one after
the other, so none inherits another's imports, threads or heap; each writes its rows as JSON, and
this gathers them into one table: row, baseline figure, pipeflow figure, ratio, target ("pipeflow
ahead of Kedro and MLflow on every row") and PASS / MISS / info / skip.

Usage::

    .venv/bin/python benchmarks/peers/run_all.py [--quick] [--rows N] [--out docs/benchmarks.md]
        [--dir DIR [--only serving.py ...]]

``--quick`` is a smoke run (small sizes) and does not overwrite the docs unless ``--out`` is
given. ``--dir`` keeps each script's JSON; with ``--only``, just the scripts named run again and
the others' rows come from their JSON there (to redo one script without the rest; ``--only``
naming none rebuilds the page), the page saying when and under what load each part ran. The page is generated down to the ``HAND_WRITTEN`` marker; what follows it (sections on
other benchmarks, written by hand) is kept. Like every benchmark here it never fails on a missed
target; it exits 1 only if a script itself broke (and still writes what the others measured).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import HERE, REPO, Row, markdown_table, peer_python, text_table

SCRIPTS = ("orchestration.py", "serving.py", "ml.py")
COMMAND = ".venv/bin/python benchmarks/peers/run_all.py"
# the page is generated down to this line; what follows it is written by hand and kept
HAND_WRITTEN = "<!-- Written by hand from here on: run_all.py keeps this part. -->"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("pipeflow", "kedro", "dask", "pandas", "scikit-learn", "xgboost", "uvicorn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    for module, variable, venv in (
        ("mlflow", "PIPEFLOW_PEERS_PYTHON", ".venv"),
        ("bentoml", "PIPEFLOW_BENTOML_PYTHON", ".venv-bentoml"),
    ):
        python, found = peer_python(module, variable, venv)
        if python:
            where = Path(python)
            shown = where.relative_to(REPO) if where.is_relative_to(REPO) else where
            out[module] = f"{found} (from {shown})"
        else:
            out[module] = "not installed"
    return out


def run_script(script: str, quick: bool, rows: int | None, out: Path) -> tuple[list[Row], str]:
    """Run one script, streaming its output; returns its rows and, if it broke, why."""
    cmd = [sys.executable, str(HERE / script), "--json", str(out)]
    if quick:
        cmd.append("--quick")
    if rows and script == "ml.py":
        cmd += ["--rows", str(rows)]
    print(f"\n=== {script} ===", flush=True)
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0 or not out.exists():
        return [], f"{script} exited {done.returncode}"
    return read_rows(out)


def read_rows(out: Path) -> tuple[list[Row], str]:
    """The rows of an earlier run of a script (``--only`` runs the others), or why there are none."""
    if not out.exists():
        return [], f"{out.name}: no earlier JSON in {out.parent} (run without --only first)"
    return [Row(**r) for r in json.loads(out.read_text())["rows"]], ""


def provenance(where: Path, reused: list[str]) -> str:
    """Where the rows of the scripts ``--only`` did not rerun came from: their JSON's run."""
    said = []
    for script in reused:
        try:
            data = json.loads((where / f"{script}.json").read_text())
        except (OSError, ValueError):
            continue
        load = data.get("load_end")
        said.append(
            f"{script} from an earlier run ({data.get('finished', 'time not recorded')}, "
            f"{data.get('elapsed_s', 0):.0f} s"
            + (f", load average {load:.1f} at its end" if isinstance(load, float) else "")
            + (f"; {data['load_note']}" if data.get("load_note") else "")
            + ")"
        )
    return ("; rows of " + "; ".join(said)) if said else ""


def write_doc(
    path: Path,
    rows: list[Row],
    broken: list[str],
    info: dict[str, Any],
) -> None:
    v = info["versions"]
    missed = [r.row for r in rows if r.ok is False]
    skips = [r for r in rows if r.skipped]
    lines = [
        "# Benchmarks against peers",
        "",
        "<!-- Generated by benchmarks/peers/run_all.py: edit that script, not this file. -->",
        "",
        "pipeflow measured against the tools people would otherwise use: Kedro for orchestration,",
        "the minimal FastAPI app, MLflow and BentoML for serving, for validation and training",
        "the hand-written pandas and xgboost code a Kedro node or an MLflow-tracked script runs,",
        "and scikit-learn's GridSearchCV and Optuna for tuning.",
        "Every figure and its baseline come from the same run, alternating repeats, best of the",
        "repeats; compare ratios between runs, not absolute figures. The target of every row is",
        "**pipeflow ahead of the peer**: a time or p99 ratio <= 1.0x, a throughput ratio >= 1.0x;",
        "the serving rows ask for more (issues 6 and 20): 1000-row requests >= 2x the minimal",
        "app's rows/s, >= 1.5x the faster MLflow configuration's and >= 1.3x BentoML's; single rows",
        ">= 2x the faster MLflow's req/s, and with a cheap model (a bare LogisticRegression)",
        ">= 2x the minimal app's, p99 no worse. Each serving row names the model's own cost of",
        "one `predict` call: micro-batching pays where that cost dominates. The tuning row asks",
        "for 0.6x GridSearchCV's time with the same best params and score. `info` rows have no",
        "target.",
        "",
        f"Regenerate (the run below took {info['elapsed_s']:.0f} s):",
        "",
        "```",
        f"{COMMAND}{' --quick' if info['quick'] else ''}"
        + (f" --rows {info['rows']}" if info["rows"] else ""),
        "```",
        "",
        "## Results",
        "",
        f"{info['date']}, {info['machine']}. {info['elapsed']}",
        "",
        markdown_table(rows),
        "",
        f"{len(missed)} row(s) missed the target"
        + (": " + "; ".join(missed) + "." if missed else "."),
    ]
    if skips or broken:
        lines += ["", "Skipped or broken:", ""]
        lines += [f"- {r.row} ({r.baseline}): {r.skipped}" for r in skips]
        lines += [f"- {b}" for b in broken]
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "## What each row measures",
        "",
        "- **Orchestration** (`benchmarks/peers/orchestration.py`): 1000 no-op steps as a chain and",
        "  as a fan-out (1 -> 998 -> 1), from nothing to the last result. pipeflow:",
        '  `pipeflow.run(spec, executor="threads")`, first run of a generated YAML spec (load,',
        "  compile, plan, run, store every output, record every stage; `.pipeflow/` deleted before",
        "  each repeat, untimed). Kedro: building 1000 `node`s and the `Pipeline`, then",
        "  `SequentialRunner().run(pipeline, DataCatalog())` with in-memory datasets, Kedro's logger",
        "  at WARNING (its default rich INFO logging writes five lines per node and costs several",
        "  times more). Plain Dask: `dask.delayed` per step, `dask.compute(..., scheduler='threads')`,",
        "  the floor under any Dask-based orchestrator. Figures are per stage (total / 1000).",
        "- **Serving** (`benchmarks/peers/serving.py`): the tumours model (scikit-learn pipeline) that",
        "  `pipeflow serve tumours@production` serves, against: the minimal FastAPI app",
        "  (`benchmarks/bench_serving.py`'s: JSON body -> DataFrame -> `predict`); the same model",
        "  logged with `mlflow.sklearn.log_model` (skops) to a `file://` tracking folder twice, with an",
        "  inferred signature and without one, each served by `mlflow models serve --env-manager local",
        "  --workers 1`, access log off; and `bentoml serve` of a service calling the same model with",
        "  adaptive batching (`@bentoml.api(batchable=True)`, one worker). A second model, `cheap`, a",
        "  bare LogisticRegression on the 30 numeric features, is served by pipeflow and the minimal",
        "  app. pipeflow serve runs with its defaults (signature validation, unusual-input flags,",
        "  micro-batching, the audit log written before each answer; it also returns probabilities",
        "  and an id per row). The load generator (a raw asyncio HTTP/1.1 client, one keep-alive",
        "  connection per concurrent client) runs on the same cores; every server must answer the",
        "  same predictions for 50 rows first. The per-call cost is `model.predict` on one row,",
        "  median of 300 calls in the benchmark's process.",
        "- **Validation** and **training** (`benchmarks/peers/ml.py`, reusing `benchmarks/bench_ml.py`):",
        "  Kedro and MLflow have no such step; the baseline is the hand-written code their users run",
        "  (12 pandas masks; `XGBClassifier.fit` on a numpy array), without the peer's own overhead,",
        "  so it is the peer's lower bound. pipeflow's `validate` also writes a reason per rejected",
        "  row and a report (its checks run in threads on large tables); `train` also encodes labels,",
        "  scores the fit on 50,000 rows and profiles the training data for drift monitoring.",
        "- **Tracked training** (`benchmarks/peers/tracked_training.py`, run by MLflow's Python):",
        "  the `train` stage plus storing its outputs (skops model, JSON record, hashed) vs the same",
        "  `XGBClassifier.fit` in an MLflow run that logs params, the training score and the model",
        "  (`mlflow.xgboost.log_model`, requirements given, signature from 100 rows; SQLite tracking",
        "  in a temporary folder), and vs the fit under `mlflow.xgboost.autolog()`.",
        "- **Tuning** (`benchmarks/peers/ml.py`, reusing `bench_ml.bench_tune`): the `tune` stage",
        "  over a 12-point xgboost grid (max_depth 4/6/8 x learning_rate 0.1/0.3 x n_estimators",
        "  50/100), 3-fold stratified CV, 200,000 x 28, vs `GridSearchCV(XGBClassifier(), grid,",
        "  cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=-1).fit(X, y)`; both refit",
        "  the best on every row, and both must pick the same params with the same score (1e-9).",
        "  Optuna: `TPESampler(seed=0)` (the default sampler), 12 trials over the same values, each",
        "  `cross_val_score(n_jobs=-1)` on the same folds, then the refit: time and best score.",
        "",
        "## Environment",
        "",
        "`pip install -e '.[bench]'` installs the peers (kedro, mlflow, optuna). MLflow pins `pyarrow<26`,",
        "`python-dateutil<3` and `importlib-metadata<10`, which would downgrade packages pipeflow's",
        "own environment uses; the run above kept `.venv` as it is and put MLflow in",
        "`benchmarks/peers/.venv`, a venv layered over `.venv`: it sees `.venv`'s packages, and",
        "its own copies (MLflow's dependencies at the versions MLflow wants) shadow them only there:",
        "",
        "```",
        ".venv/bin/pip install kedro optuna",
        ".venv/bin/python -m venv benchmarks/peers/.venv",
        "echo \"import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')\" \\",
        "  > benchmarks/peers/.venv/lib/python3.11/site-packages/zz_pipeflow_venv.pth",
        "benchmarks/peers/.venv/bin/pip install mlflow",
        "```",
        "",
        "BentoML likewise, in `benchmarks/peers/.venv-bentoml` (`python -m venv`, the same `.pth`",
        "line, `pip install bentoml`). The scripts look for MLflow in `$PIPEFLOW_PEERS_PYTHON`, then",
        "`benchmarks/peers/.venv`, for BentoML in `$PIPEFLOW_BENTOML_PYTHON`, then",
        "`benchmarks/peers/.venv-bentoml`, then the running Python; a peer that is missing gives",
        "`skip` rows with the reason. `make bench-peers` installs httpx and kedro and runs the table.",
        "The load test of `pipeflow serve` (a minute at concurrency 32, RSS and audit checks) is",
        "separate: `.venv/bin/python benchmarks/load_serving.py`, and `tests/load/` (marked slow).",
        "One serving scenario against chosen peers, with each server's CPU per request (less",
        "sensitive to a busy machine than its rate): `.venv/bin/python benchmarks/peers/serving.py",
        '--scenario "tumours 1000" --peer mlflow-nosignature --peer bentoml --repeats 3`.',
        "",
    ]
    path.write_text("\n".join(lines + kept_blocks(path) + kept_part(path)))


def kept_blocks(path: Path) -> list[str]:
    """Sections other scripts write into this page (``bench_batch.py --docs``: between
    ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``) before the hand-written end, as they are."""
    import re

    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    at = text.find(HAND_WRITTEN)
    found = re.finditer(
        r"<!-- (\w+):start -->.*?<!-- \1:end -->", text[: at if at >= 0 else None], re.S
    )
    return [line for block in found for line in (block.group(0), "")]


def kept_part(path: Path) -> list[str]:
    """The hand-written end of the page, from the ``HAND_WRITTEN`` line on (none: nothing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    at = text.find(HAND_WRITTEN)
    return [] if at < 0 else [text[at:].rstrip("\n"), ""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--rows", type=int, help="rows for validation and training (ml.py --rows)")
    p.add_argument("--out", type=Path, help="the doc to write (default docs/benchmarks.md)")
    p.add_argument(
        "--dir", type=Path, help="keep each script's JSON here (default: a temporary folder)"
    )
    p.add_argument(
        "--only",
        nargs="*",
        choices=SCRIPTS,
        help="run only these scripts (none: just rebuild the page); the others' rows are read "
        "from --dir's earlier JSON",
    )
    args = p.parse_args()
    if args.only is not None and not args.dir:
        p.error("--only needs --dir: the folder holding the other scripts' earlier JSON")
    out = args.out or (None if args.quick else REPO / "docs" / "benchmarks.md")

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    broken: list[str] = []
    with contextlib.ExitStack() as stack:
        where = args.dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeflow-peers-"))
        )
        where.mkdir(parents=True, exist_ok=True)
        for script in SCRIPTS:
            out_json = where / f"{script}.json"
            if args.only is not None and script not in args.only:
                got, why = read_rows(out_json)
            else:
                got, why = run_script(script, args.quick, args.rows, out_json)
            rows += got
            if why:
                broken.append(why)
    elapsed = time.perf_counter() - started
    if args.only is not None:  # the page's parts ran at different times: their own durations
        elapsed = sum(
            json.loads((where / f"{s}.json").read_text()).get("elapsed_s", 0.0)
            for s in SCRIPTS
            if (where / f"{s}.json").exists()
        )
    load_after = os.getloadavg()[0]

    print(f"\n=== all ({elapsed:.0f} s) ===\n")
    print(text_table(rows))
    for b in broken:
        print(f"BROKEN  {b}")
    if out:
        machine = (
            f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB, "
            f"{platform.system()} {platform.release()}; a shared VM, noisy"
            + (
                f": load average {load_before:.1f} before the run and {load_after:.1f} after"
                + (f" (this run: {', '.join(args.only)})" if args.only else "")
                if args.only is None or args.only
                else ""
            )
            + (
                provenance(where, [s for s in SCRIPTS if s not in args.only])
                if args.only is not None
                else ""
            )
        )
        write_doc(
            out,
            rows,
            broken,
            {
                "date": datetime.date.today().isoformat(),
                "machine": machine,
                "elapsed": f"The whole run took {elapsed:.0f} s.",
                "elapsed_s": elapsed,
                "quick": args.quick,
                "rows": args.rows,
                "versions": versions(),
            },
        )
        print(f"\nwrote {out}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

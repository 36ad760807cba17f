"""Drift sensitivity, false alarms, time and memory: pipeflow's default rule against Evidently's
``DataDriftPreset`` defaults, on the same generated tables.

30 features: 20 continuous (normal, various means and sds), 5 low-cardinality counts (Poisson), 5
binary flags. 10 are shifted in the current table: 6 continuous mean shifts of 0.10 to 0.30 sd,
2 count shifts (Poisson rate +10%), 2 flag-rate changes (0.30 -> 0.35, 0.10 -> 0.13); the other 20
are drawn from the reference's distributions. Reference and current have the same row count.

The tables are written once to Parquet; each tool then runs in a process of its own (Evidently
in its own virtual environment: it pins versions pipeflow's does not take), reading them back,
so its figures are its own: wall time of the comparison (reading and imports excluded), and peak
memory as
the process's resident set sampled every 5 ms during the comparison, above the resident set
just before it (the loaded tables). pipeflow: ``pipeflow.monitoring.drift.compare_tables`` with
the default ``DriftPolicy`` (what ``pipeflow drift REF CUR`` runs). Evidently: ``Report([
DataDriftPreset()]).run(current, reference)``, a column drifted when its method's value passes
the method's threshold (Evidently's defaults: above 1,000 rows Wasserstein distance (normed) >=
0.1 for numeric columns with more than 5 values, Jensen-Shannon distance >= 0.1 for the others).

    python benchmarks/bench_drift_peer.py                       # 100,000 and 1,000,000 rows
    python benchmarks/bench_drift_peer.py --rows 100000

Evidently's interpreter: ``$PIPEFLOW_EVIDENTLY_PYTHON``, else
``benchmarks/peers/.venv-evidently/bin/python``; without one its rows are skipped with the reason.
Set it up with ``python -m venv benchmarks/peers/.venv-evidently &&
benchmarks/peers/.venv-evidently/bin/pip install evidently "pandas<3"`` (Evidently 0.7 imports a
pandas function pandas 3 removed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIFTED = ["num_0", "num_1", "num_2", "num_3", "num_4", "num_5", "count_0", "count_1"]
SHIFTED += ["flag_0", "flag_1"]


def make_tables(rows: int, seed: int = 0) -> tuple[object, object]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ref: dict[str, object] = {}
    cur: dict[str, object] = {}
    mean_shift = [0.10, 0.14, 0.18, 0.22, 0.26, 0.30]
    for i in range(20):
        mean, sd = float(i), 1.0 + i / 10
        ref[f"num_{i}"] = rng.normal(mean, sd, rows)
        move = mean_shift[i] * sd if i < len(mean_shift) else 0.0
        cur[f"num_{i}"] = rng.normal(mean + move, sd, rows)
    for i in range(5):
        lam = 2.0 + i
        ref[f"count_{i}"] = rng.poisson(lam, rows)
        cur[f"count_{i}"] = rng.poisson(lam * 1.1 if i < 2 else lam, rows)
    rates = [0.30, 0.10, 0.20, 0.40, 0.50]
    new_rates = [0.35, 0.13, 0.20, 0.40, 0.50]
    for i in range(5):
        ref[f"flag_{i}"] = (rng.random(rows) < rates[i]).astype("int64")
        cur[f"flag_{i}"] = (rng.random(rows) < new_rates[i]).astype("int64")
    return pd.DataFrame(ref), pd.DataFrame(cur)


class PeakRss:
    """Resident set size sampled every 5 ms on a thread: the peak above the starting size."""

    def __init__(self) -> None:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def run_pipeflow(ref: object, cur: object) -> tuple[list[str], dict[str, str]]:
    from pipeflow.monitoring.drift import compare_tables

    report = compare_tables(ref, cur)
    rules = {n: f["rule"] for n, f in report["features"].items()}
    return report["drifted_features"], rules


def run_evidently(ref: object, cur: object) -> tuple[list[str], dict[str, str]]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    drifted, rules = [], {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config") or {}
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        column, method, limit = config["column"], config["method"], config["threshold"]
        value = float(metric["value"])
        hit = value < limit if "p_value" in method or "test" in method.lower() else value >= limit
        rules[column] = f"{method} {value:.4g} vs {limit:g}"
        if hit:
            drifted.append(column)
    return drifted, rules


def worker(tool: str, folder: str) -> None:
    import pandas as pd

    ref = pd.read_parquet(Path(folder) / "reference.parquet")
    cur = pd.read_parquet(Path(folder) / "current.parquet")
    run = run_pipeflow if tool == "pipeflow" else run_evidently
    # imports are not timed (either tool's)
    if tool == "pipeflow":
        import scipy.stats  # noqa: F401

        import pipeflow.monitoring.drift  # noqa: F401
    else:
        import evidently.presets  # noqa: F401
    with PeakRss() as memory:
        started = time.perf_counter()
        drifted, rules = run(ref, cur)
        seconds = time.perf_counter() - started
    if tool == "evidently":
        import evidently

        version = evidently.__version__
    else:
        import pipeflow

        version = pipeflow.__version__
    print(
        json.dumps(
            {
                "drifted": drifted,
                "rules": rules,
                "seconds": seconds,
                "peak_mb": (memory.peak - memory.start) / 2**20,
                "version": version,
            }
        )
    )


def evidently_python() -> tuple[str | None, str]:
    given = os.environ.get("PIPEFLOW_EVIDENTLY_PYTHON")
    path = given or str(HERE / "peers" / ".venv-evidently" / "bin" / "python")
    if not Path(path).exists():
        return None, f"no interpreter at {path} (set PIPEFLOW_EVIDENTLY_PYTHON)"
    probe = subprocess.run(
        [path, "-c", "import evidently.presets"], capture_output=True, text=True, timeout=300
    )
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{path} cannot import evidently: {last}"
    return path, ""


def measure(python: str, tool: str, folder: str) -> dict[str, object]:
    env = dict(os.environ)
    if tool == "evidently":
        env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [python, __file__, "--worker", tool, folder],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if proc.returncode:
        raise SystemExit(f"{tool} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, action="append", help="repeatable (default 100k, 1M)")
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="print every column's rule")
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    python, why = evidently_python()
    load = os.getloadavg()[0]
    print(
        f"drift peers: 30 features (20 continuous, 5 counts, 5 flags), 10 shifted; load {load:.1f}"
    )
    stable = 20
    for rows in args.rows or [100_000, 1_000_000]:
        with tempfile.TemporaryDirectory(prefix="pipeflow-drift-peer-") as folder:
            ref, cur = make_tables(rows)
            ref.to_parquet(Path(folder) / "reference.parquet")
            cur.to_parquet(Path(folder) / "current.parquet")
            del ref, cur
            results = {"pipeflow": measure(sys.executable, "pipeflow", folder)}
            if python:
                results["evidently"] = measure(python, "evidently", folder)
        print(f"\n{rows:,} rows x 30 columns, reference and current")
        for tool, r in results.items():
            found = [c for c in r["drifted"] if c in SHIFTED]
            false = [c for c in r["drifted"] if c not in SHIFTED]
            missed = [c for c in SHIFTED if c not in r["drifted"]]
            print(
                f"  {tool:9} {r['version']:8} detected {len(found):2} of 10 shifted, "
                f"false alarms {len(false)} of {stable}, {r['seconds']:7.2f} s, "
                f"peak +{r['peak_mb']:,.0f} MB"
                + (f"  (missed: {', '.join(missed)})" if missed else "")
                + (f"  (false: {', '.join(false)})" if false else "")
            )
            if args.verbose:
                for column in SHIFTED:
                    print(f"      {column}: {r['rules'].get(column)}")
        if "evidently" in results:
            ratio = results["evidently"]["seconds"] / results["pipeflow"]["seconds"]
            mem = results["pipeflow"]["peak_mb"] / max(results["evidently"]["peak_mb"], 1e-9)
            print(f"  pipeflow is {ratio:.1f}x faster; its peak memory is {mem:.2f}x Evidently's")
        else:
            print(f"  evidently skipped: {why}")


if __name__ == "__main__":
    main()

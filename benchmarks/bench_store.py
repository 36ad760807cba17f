"""Team-store performance: SQLite vs PostgreSQL metadata, a local store vs an S3 endpoint.

Every figure is a ratio against a baseline measured in the same run (see bench_core.py for why),
with repeats interleaved and the best reported. The servers are real and local: a throwaway
PostgreSQL cluster (Debian's initdb + pg_ctl) and moto's S3 server, both on 127.0.0.1, started
by this script (tests/servers.py) — a real team's server is a network hop away, so these are
the database's own costs, not the network's.

1. Metadata writes: stage records per second, recorded as a run records them (start the run,
   batches of 50 stage results with outputs and lineage, finish), PostgreSQL vs SQLite. Info.
2. Per-stage overhead of a 1000-stage chain's first run on the threads executor, above plain
   ``dask.threaded.get`` of the same no-op graph, with the history in PostgreSQL vs in SQLite.
   Target: PostgreSQL <= 1.5x SQLite's overhead.
3. ``runs list`` at 10,000 recorded runs (5 stages each): the query of the newest 20 in process,
   for both databases. Target: < 100 ms. (As a command it also pays Python's start-up and
   pipeflow's imports, shown for information.)
4. The 1000-stage chain's per-stage overhead with the artifact store on moto S3 vs on the local
   disk (both with SQLite metadata). Info: it measures moto's speed as much as pipeflow's.
5. Decoding a stored table (``store.codecs.decode`` of a Parquet object) on the calling thread vs
   on Arrow's thread pools, at sizes around ``codecs.THREADED_PARQUET`` (8 MB): below it the
   store decodes on the calling thread, because a process that started the pools can abort as it
   exits (apache/arrow#34314); the row shows what that costs a small table and what the pools
   win on a large one. Info.

Usage: ``python benchmarks/bench_store.py [--quick] [--json out.json]``. It never fails on a
missed target: it prints MISS and the figures, and exits 0 unless the benchmark itself breaks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_core import PIPEFLOW, Row, interleaved, plain_graph, report, write_spec  # noqa: E402
from servers import postgres_server, s3_server  # noqa: E402


def _fake_digest(i: int) -> str:
    return f"{i:064x}"


def record_run(db: Any, run_id: str, n_stages: int, batch: int = 50) -> None:
    """Write one run as the runner would: start, stage results in batches, finish."""
    from pipeflow.store.artifacts import ArtifactRef

    names = [f"s{i}" for i in range(n_stages)]
    db.start_run(
        run_id,
        "bench",
        spec_path="/bench/pipeline.yaml",
        spec_digest="0" * 64,
        executor="threads",
        params={"n": n_stages},
        overrides=[],
        stages=[(n, "python") for n in names],
    )
    rows = []
    base = uuid.UUID(run_id).int % 10**12
    for i, name in enumerate(names):
        out = ArtifactRef(_fake_digest(base * 10**4 + i), "json", "any", 8)
        rows.append(
            {
                "stage": name,
                "type": "python",
                "state": "done",
                "key": _fake_digest(i),
                "reason": "first run of this stage",
                "started": time.time(),
                "ended": time.time(),
                "attempts": 1,
                "config_digest": _fake_digest(1),
                "config": {"function": "noop:noop", "kwargs": {"i": i}},
                "code_digest": _fake_digest(2),
                "input_digests": {},
                "seq": i,
                "outputs": {"out": out},
                "lineage": {"x": (names[i - 1], "out", _fake_digest(i - 1))} if i else {},
            }
        )
        if len(rows) == batch:
            db.record_stages(run_id, rows)
            rows = []
    if rows:
        db.record_stages(run_id, rows)
    db.finish_run(run_id, "done")


def bench_writes(sqlite_path: Path, pg_url: str, n_stages: int, repeat: int) -> Row:
    from pipeflow.store.database import open_metadata

    dbs = {"sqlite": open_metadata(sqlite_path), "postgres": open_metadata(pg_url)}
    try:
        t = interleaved(
            {
                name: (lambda db=db: record_run(db, str(uuid.uuid4()), n_stages))
                for name, db in dbs.items()
            },
            repeat,
        )
    finally:
        for db in dbs.values():
            db.close()
    pg, lite = n_stages / t["postgres"].best, n_stages / t["sqlite"].best
    return Row(
        figure=f"metadata writes, {n_stages}-stage runs",
        pipeflow=f"{pg:,.0f} stages/s PostgreSQL",
        baseline=f"{lite:,.0f} stages/s SQLite",
        ratio=lite / pg,
        verdict=f"{1000 / pg:.3f} ms/stage vs {1000 / lite:.3f} (info)",
        ok=None,
        data={"postgres_stages_per_s": pg, "sqlite_stages_per_s": lite},
    )


def chain_first_run(folder: Path, n: int, env: dict[str, str]) -> Any:
    """A callable running the chain's first run with ``env`` applied (store and metadata)."""
    import pipeflow

    spec = write_spec(folder, n, "chain")

    def setup() -> None:
        shutil.rmtree(folder / ".pipeflow", ignore_errors=True)

    def go() -> None:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        # a fresh store each time: a new S3 prefix / a new PostgreSQL-recorded run
        try:
            report = pipeflow.run(spec, executor="threads")
            assert report.ok and len(report.ran) == n, (
                f"benchmark pipeline did not run fully: ran {len(report.ran)}, "
                f"failed {report.failed[:2]}"
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return setup, go


def bench_overhead(
    tmp: Path, n: int, repeat: int, cases: dict[str, dict[str, str]], s3_root: str | None = None
) -> dict[str, float]:
    """ms/stage above plain Dask for each case (env applied around the run)."""
    import dask.threaded

    graph = plain_graph(n, "chain")
    keys = list(graph)
    runs, setups = {}, {}
    for name, env in cases.items():
        setups[name], runs[name] = chain_first_run(tmp / name, n, env)
    if s3_root:  # each S3 run needs an empty prefix, as a local one gets an empty folder
        counter = iter(range(10**6))

        def fresh_prefix(name: str = "s3") -> None:
            cases[name]["PIPEFLOW_STORE__ROOT"] = f"{s3_root}/run{next(counter)}"

        setups["s3"] = fresh_prefix
    t = interleaved({"dask": lambda: dask.threaded.get(graph, keys), **runs}, repeat, setup=setups)
    plain = t["dask"].best * 1000 / n
    return {name: t[name].best * 1000 / n - plain for name in runs} | {"dask": plain}


def bench_runs_list(sqlite_path: Path, pg_url: str, n_runs: int, repeat: int) -> list[Row]:
    from pipeflow.store.database import open_metadata

    rows = []
    for name, location in (("SQLite", sqlite_path), ("PostgreSQL", pg_url)):
        with open_metadata(location) as db:
            have = db.query("SELECT COUNT(*) FROM runs")[0][0]
            for _ in range(n_runs - have):
                record_run(db, str(uuid.uuid4()), 5, batch=5)
            t = interleaved({"list": lambda db=db: db.runs(limit=20)}, repeat)["list"]
        cmd = interleaved(
            {
                "command": lambda loc=location: subprocess.run(
                    [PIPEFLOW, "runs", "list", "--db", str(loc)], check=True, capture_output=True
                ),
                "python": lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
            },
            max(2, repeat // 3),
        )
        ms = t.best * 1000
        rows.append(
            Row(
                figure=f"runs list, {n_runs:,} runs, {name}",
                pipeflow=f"{ms:.1f} ms query",
                baseline=f"{cmd['command'].best:.2f} s command",
                ratio=t.best / cmd["command"].best,
                verdict=f"{ms:.1f} ms (< 100); command {cmd['command'].best - cmd['python'].best:.2f} s above python -c pass",
                ok=ms < 100,
                data={"query_ms": ms, "command_s": cmd["command"].best},
            )
        )
    return rows


def bench_decode(repeat: int, sizes_mb: tuple[float, ...] = (1, 4, 8, 16, 64)) -> list[Row]:
    """Row 5: a stored table of about each size decoded as the store does it and with the other
    choice of threads, best of ``repeat`` taken in turns."""
    import numpy as np
    import pandas as pd

    from pipeflow.store import codecs

    rows = []
    threshold = codecs.THREADED_PARQUET
    rng = np.random.default_rng(0)
    try:
        for mb in sizes_mb:
            n = int(mb * (1 << 20) / (8 * 8))  # 8 float64 columns, random: they barely compress
            frame = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"c{i}" for i in range(8)])
            _, data = codecs.encode(frame)

            def decode(limit: int, data: bytes = data) -> object:
                codecs.THREADED_PARQUET = limit
                return codecs.decode("parquet", data)

            times = interleaved({"off": lambda: decode(1 << 62), "on": lambda: decode(0)}, repeat)
            off, on = times["off"].best, times["on"].best
            store_way = "pools" if len(data) >= threshold else "this thread"
            rows.append(
                Row(
                    figure=f"decode a stored table of {len(data) / 1e6:.1f} MB (store: {store_way})",
                    pipeflow=f"{off * 1e3:.1f} ms this thread",
                    baseline=f"{on * 1e3:.1f} ms Arrow's pools",
                    ratio=off / on,
                    verdict=f"{off / on:.2f}x the pools' time on this thread (info)",
                    ok=None,
                    data={"bytes": len(data), "thread_s": off, "pools_s": on},
                )
            )
    finally:
        codecs.THREADED_PARQUET = threshold
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    n, n_runs, repeat = (200, 1000, 2) if args.quick else (1000, 10_000, 5)

    t0 = time.perf_counter()
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="pipeflow-bench-") as name,
        postgres_server() as pg,
        s3_server() as s3,
    ):
        tmp = Path(name)
        os.environ.update(s3.env)
        rows.extend(bench_decode(max(5, repeat)))
        rows.append(bench_writes(tmp / "writes.db", pg.database("writes"), 1000, repeat))

        history = pg.database("history")
        overhead = bench_overhead(
            tmp,
            n,
            repeat,
            {"sqlite": {}, "postgres": {"PIPEFLOW_STORE__METADATA": history}},
        )
        pg_over, lite_over = overhead["postgres"], overhead["sqlite"]
        rows.append(
            Row(
                figure=f"{n}-stage chain, 1st run, threads, overhead",
                pipeflow=f"+{pg_over:.3f} ms/stage PostgreSQL",
                baseline=f"+{lite_over:.3f} ms/stage SQLite",
                ratio=pg_over / lite_over,
                verdict=f"{pg_over / lite_over:.2f}x SQLite's (<= 1.5)",
                ok=pg_over / lite_over <= 1.5,
                data=overhead,
            )
        )
        rows.extend(bench_runs_list(tmp / "list.db", pg.database("list"), n_runs, repeat))

        bucket = s3.bucket("bench")
        s3_over = bench_overhead(
            tmp, n, max(2, repeat - 2), {"local": {}, "s3": {}}, s3_root=bucket
        )
        rows.append(
            Row(
                figure=f"{n}-stage chain, 1st run, threads, overhead",
                pipeflow=f"+{s3_over['s3']:.3f} ms/stage moto S3",
                baseline=f"+{s3_over['local']:.3f} ms/stage local disk",
                ratio=s3_over["s3"] / s3_over["local"],
                verdict="info (moto's own speed counts)",
                ok=None,
                data=s3_over,
            )
        )
    report(rows, "pipeflow store benchmarks", repeat, t0, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

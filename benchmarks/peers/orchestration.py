"""Orchestration against peers: pipeflow, Kedro's SequentialRunner and plain ``dask.delayed``.

The same DAG of 1000 no-op steps, as a chain and as a fan-out (1 -> 998 -> 1), three ways, each
timed from nothing to the last result:

- **pipeflow**: ``pipeflow.run(spec, executor="threads")`` of the generated spec of 1000 ``python``
  stages (``bench_core.write_spec``), first run: load the YAML, compile, plan, run, store every
  output and record every stage. ``.pipeflow/`` is deleted before each repeat, untimed.
- **Kedro**: ``Pipeline`` of 1000 ``node(noop, ...)`` with ``MemoryDataset`` outputs, run by
  ``SequentialRunner().run(pipeline, DataCatalog())``; building the nodes and the pipeline is timed
  too, as pipeflow's load and compile are. Kedro's logger is set to WARNING: with its default rich
  INFO logging (five lines per node) it costs several times more, and the comparison would be with
  its console.
- **plain Dask**: ``dask.delayed(noop)`` for each step, then ``dask.compute(last,
  scheduler="threads")``: the floor any Dask-based orchestrator sits on.

Per-stage cost is the total over the number of steps; the Kedro rows are the target (pipeflow
ahead: a time ratio <= 1.0x), the Dask rows are information. Repeats alternate (Kedro, Dask,
pipeflow, ...) after one untimed warm-up each; the best is reported (noise only adds time).

Usage: ``python benchmarks/peers/orchestration.py [--quick] [--json out.json]``; ``--quick`` is 200
steps and 2 repeats.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, finish, parser, sibling, skipped


def noop(*upstream: Any) -> int:
    return 0


def _deps(i: int, n: int, shape: str) -> list[int]:
    if i == 0:
        return []
    if shape == "chain":
        return [i - 1]
    return [0] if i < n - 1 else list(range(1, n - 1))


def kedro_run(n: int, shape: str) -> None:
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner

    nodes = [
        node(
            noop,
            [f"d{d}" for d in _deps(i, n, shape)] or None,
            f"d{i}",
            name=f"s{i}",
        )
        for i in range(n)
    ]
    outputs = SequentialRunner().run(Pipeline(nodes), DataCatalog())
    assert f"d{n - 1}" in outputs, outputs


def dask_run(n: int, shape: str) -> None:
    import dask

    steps: list[Any] = []
    for i in range(n):
        steps.append(dask.delayed(noop)(i, *[steps[d] for d in _deps(i, n, shape)]))
    (result,) = dask.compute(steps[-1], scheduler="threads")
    assert result == 0


def first_run(core: Any, spec: Path) -> tuple[Any, Any]:
    """``bench_core.first_run`` (delete ``.pipeflow/`` untimed, then run), also forgetting the
    store objects this process shares per store root: a store remembers the folders it has made,
    and after the folder is deleted under it a second run in the same process fails to take its
    run lock ("cannot write .../locks/...lock: No such file or directory")."""
    from pipeflow.store import artifacts

    remove, go = core.first_run(spec, "threads")

    def setup() -> None:
        remove()
        cache_clear = getattr(getattr(artifacts, "_open", None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()

    return setup, go


def bench_shape(tmp: Path, n: int, shape: str, repeat: int, kedro: str | None) -> list[Row]:
    core = sibling("bench_core")
    spec = core.write_spec(tmp / f"{shape}-{n}", n, shape)
    setup, ours = first_run(core, spec)
    cases = {"dask": lambda: dask_run(n, shape), "pipeflow": ours}
    if kedro:
        cases = {"kedro": lambda: kedro_run(n, shape), **cases}
    t = core.interleaved(cases, repeat, setup={"pipeflow": setup})
    ms = {name: timing.best * 1000 / n for name, timing in t.items()}
    what = f"{n} no-op stages, {shape}, per stage"
    rows = []
    if kedro:
        rows.append(
            Row(
                "orchestration",
                what,
                f"Kedro {kedro} SequentialRunner",
                f"{ms['kedro']:.3f} ms",
                f"{ms['pipeflow']:.3f} ms",
                ms["pipeflow"] / ms["kedro"],
                "ahead of Kedro: <= 1.0x time",
                ms["pipeflow"] <= ms["kedro"],
                data={k: v.times for k, v in t.items()},
            )
        )
    else:
        rows.append(
            skipped(
                "orchestration",
                what,
                "Kedro SequentialRunner",
                "ahead of Kedro: <= 1.0x time",
                "kedro is not installed (pip install -e '.[bench]')",
            )
        )
    rows.append(
        Row(
            "orchestration",
            what,
            "plain dask.delayed, threads",
            f"{ms['dask']:.3f} ms",
            f"{ms['pipeflow']:.3f} ms (+{ms['pipeflow'] - ms['dask']:.3f})",
            ms["pipeflow"] / ms["dask"],
            "info (the Dask floor)",
            None,
        )
    )
    return rows


def kedro_version() -> str | None:
    try:
        import kedro
        import kedro.io
        import kedro.pipeline
        import kedro.runner  # noqa: F401  (importing these configures Kedro's logging)
    except ImportError:
        return None
    logging.getLogger("kedro").setLevel(logging.WARNING)
    return str(kedro.__version__)


def main() -> int:
    args = parser(__doc__).parse_args()
    n, repeat = (200, 2) if args.quick else (1000, 5)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    started = time.perf_counter()
    kedro = kedro_version()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="pipeflow-peers-orchestration-") as name:
        for shape in ("chain", "fan"):
            rows.extend(bench_shape(Path(name), n, shape, repeat, kedro))
    return finish(
        f"orchestration: pipeflow vs Kedro vs dask.delayed, best of {repeat}",
        rows,
        args.json,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    sys.exit(main())

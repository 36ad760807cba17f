"""Drift without sampling at cluster scale: a reference of R rows x C columns against a live window
of the same size, partition by partition on a Dask LocalCluster (pipeflow.monitoring.scale).

The data is generated inside the workers, chunk by chunk (never materialised whole: 10M x 1000
float64 is 80 GB), 10% of the live columns shifted. Figures: wall time, values per second, and
the cluster's efficiency against the same per-partition work done in one process on one chunk,
measured in the same run (the baseline).

    python benchmarks/bench_drift_scale.py                       # 10,000,000 x 1,000 (minutes)
    python benchmarks/bench_drift_scale.py --rows 1000000 --cols 200
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cols", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per partition")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    import dask.array as da
    import numpy as np
    from distributed import Client, LocalCluster

    from pipeflow.governance.profile import numeric_entry
    from pipeflow.monitoring.scale import _live_pass, _range, _reference_pass, compare_numeric

    shifted = max(1, args.cols // 10)
    reference = da.random.default_rng(1).normal(
        0.0, 1.0, size=(args.rows, args.cols), chunks=(args.chunk, args.cols)
    )
    live = da.random.default_rng(2).normal(
        0.0, 1.0, size=(args.rows, args.cols), chunks=(args.chunk, args.cols)
    )
    shift = np.zeros(args.cols)
    shift[:shifted] = 0.5
    live = live + shift

    # baseline: the per-partition work (generate; range and reference pass; the live pass against
    # the profile's entries) for one chunk of each table in this process
    rng = np.random.default_rng(0)
    rng.normal(0.0, 1.0, size=(1000, args.cols))  # warm
    sample = rng.normal(0.0, 1.0, size=(20_000, args.cols))
    entries = [{"role": "numeric", **numeric_entry(sample[:, j])} for j in range(args.cols)]
    t0 = time.perf_counter()
    block = rng.normal(0.0, 1.0, size=(args.chunk, args.cols))  # a reference chunk
    span = _range(block)
    _reference_pass(block, span[0], span[1], 1024)
    block = rng.normal(0.0, 1.0, size=(args.chunk, args.cols)) + 0.1  # a live chunk
    _live_pass(block, entries)
    one = time.perf_counter() - t0
    del block
    pairs = -(-args.rows // args.chunk)
    serial_estimate = one * pairs

    memory = f"{max(2, int(20 / args.workers))}GiB"
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster),
    ):
        t1 = time.perf_counter()
        result = compare_numeric(reference, live)
        wall = time.perf_counter() - t1
    found = [c for c, r in result.items() if r["drifted"]]
    expected = {f"c{i}" for i in range(shifted)}
    values = 2 * args.rows * args.cols
    print(
        f"drift at scale: reference {args.rows:,} x {args.cols:,} vs live {args.rows:,} x {args.cols:,}, "
        f"{args.chunk:,}-row partitions, {args.workers} workers x 1 thread"
    )
    print(
        f"  wall {wall:.1f} s ({wall / 60:.1f} min), {values / wall / 1e6:.0f} M values/s, no sampling"
    )
    print(
        f"  baseline (same per-partition work in one process): {one:.2f} s per chunk pair -> "
        f"{serial_estimate:.0f} s serial estimate; cluster speed-up {serial_estimate / wall:.2f}x "
        f"on {args.workers} workers (efficiency {serial_estimate / wall / args.workers:.0%})"
    )
    print(
        f"  drifted columns found: {len(found)} (expected {len(expected)}; "
        f"{'all found, none extra' if set(found) == expected else 'MISMATCH'})"
    )


if __name__ == "__main__":
    main()

"""The in-process Parquet reader of batch scoring (pipeflow.scoring.arrow.read_partitions) and
Arrow's thread pools: a small input is read without starting them (a process that started them
can abort as it exits, apache/arrow#34314), a large one on them, the same frames either way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, sys
import fsspec, pandas, pyarrow, pyarrow.parquet
from pipeflow.scoring import arrow
from pipeflow.store import codecs
codecs.THREADED_PARQUET = int(sys.argv[2])
arrow.THREADED_PARQUET = codecs.THREADED_PARQUET
fs = fsspec.filesystem("file")
meta = pyarrow.parquet.ParquetFile(sys.argv[1]).metadata
groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
plan = arrow.parquet_plan([groups], 700)
before = len(os.listdir("/proc/self/task"))
digests = {}
frames = list(arrow.read_partitions(fs, [sys.argv[1]], plan, ["x", "s"], digests))
after = len(os.listdir("/proc/self/task"))
whole = pandas.concat(frames)
print(before, after, len(frames), len(whole), round(float(whole["x"].sum()), 6), digests[0][:12])
"""


def _read(path: Path, threaded_from: int) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(threaded_from)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("arrow") / "in.parquet"
    table = pa.table({"x": rng.random(3000), "s": [f"r{i % 7}" for i in range(3000)]})
    pq.write_table(table, path, row_group_size=1000)
    return path


def test_a_small_input_is_read_without_starting_arrows_thread_pools(small: Path) -> None:
    before, after, *_ = _read(small, 8 << 20)
    assert after == before


def test_the_frames_are_the_same_on_arrows_threads_and_on_the_calling_thread(
    small: Path,
) -> None:
    one = _read(small, 8 << 20)
    pooled = _read(small, 0)
    assert pooled[2:] == one[2:]  # partitions, rows, the sum of x, the file's digest
    assert int(one[3]) == 3000 and int(one[2]) >= 2
    assert int(pooled[1]) > int(pooled[0])  # the pools did start: the check above can fail

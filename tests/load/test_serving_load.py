"""A minute of ``pipeflow serve`` at the machine's limit: no errors, no leak, a complete audit log.

The drive is ``benchmarks/load_serving.py`` (32 keep-alive connections in a closed loop, one-row
requests with every tenth carrying 100 rows, the server's RSS sampled every second), after a
prefill of 400,000 predictions that brings the server to its steady memory (it keeps the last
200,000 prediction ids for feedback: RSS climbs until that map is full, by design). Only
correctness is asserted; throughput and latency are printed for a person to read, never compared
with a number, because this machine's speed varies from run to run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
DURATION_S = 60.0
CONCURRENCY = 32
PREFILL_ROWS = 400_000


def load_serving() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load_serving", BENCHMARKS / "load_serving.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_serving"] = module
    spec.loader.exec_module(module)
    return module


def test_a_minute_at_full_load_answers_everything_keeps_memory_flat_and_audits_every_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ls = load_serving()
    store = ls.bench_serving.build_project(tmp_path)
    mix = ls.make_mix(ls.bench_serving.request_rows(store.parent), batch_rows=100, batch_every=10)
    server = ls.bench_serving.start_pipeflow(store.parent, store)
    try:
        acknowledged = ls.warm_up(server, mix)
        pre = ls.prefill(server, mix, PREFILL_ROWS, CONCURRENCY)
        run = ls.drive(server, mix, DURATION_S, CONCURRENCY)
    finally:
        server.stop()
    acknowledged += pre.ids + run.ids
    audited = ls.audit_ids(store)
    results = ls.checks(run, audited, acknowledged)

    with capsys.disabled():  # the figures are this test's report: show them without -s
        print(
            f"\nprefill: {pre.rows_ok:,} rows in {pre.duration_s:.1f} s, RSS "
            f"{pre.rss[0][1] * 1024 / 1e6:.0f} -> {pre.rss[-1][1] * 1024 / 1e6:.0f} MB"
        )
        print(ls.summary(run))
        for ok, text in results:
            print(f"  {'ok  ' if ok else 'FAIL'}  {text}")

    assert run.duration_s >= DURATION_S
    assert pre.errors == 0 and run.errors == 0, pre.failures + run.failures
    assert sorted(set(run.rows)) == [1, 100]  # both kinds of request were sent
    memory = run.memory()
    assert memory["ok"], f"RSS grew {memory['growth_mb']:+.1f} MB ({memory['growth_pct']:+.1f}%)"
    assert len(audited) == len(acknowledged) == 101 + pre.rows_ok + run.rows_ok  # warm-up: 1 + 100
    assert sorted(audited) == sorted(acknowledged)

"""Several runs at once on one store and one metadata database; a store that lives in memory.

The processes are real ``pipeflow run`` commands started together. They share a stage whose
result does not depend on their parameters, so they race to write the same object and manifest;
the SQLite file must end up holding every run and every stage record, uncorrupted.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from helpers import PIPEFLOW, calls, cli_env, kill_group

from pipeflow.runner.session import run
from pipeflow.spec.load import load
from pipeflow.store.artifacts import ArtifactRef
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

STEPS = """
    import time
    from pathlib import Path

    def _called(name):
        with open(Path(__file__).with_name("calls.log"), "a") as fh:
            fh.write(name + "\\n")

    def shared(size):
        _called("shared")
        time.sleep(0.2)
        return list(range(size))

    def seeded(seed):
        _called("seeded")
        time.sleep(0.2)
        return seed * 1000

    def combine(xs, s):
        _called("combine")
        time.sleep(0.1)
        return s + sum(xs)

    def label(v, seed):
        return f"seed={seed} value={v}"
"""

SPEC = """
    pipeline: busy
    params: {seed: 0}
    stages:
      shared: {type: python, with: {function: "steps:shared", kwargs: {size: 10}}}
      seeded: {type: python, with: {function: "steps:seeded", kwargs: {seed: "${params.seed}"}}}
      combined: {type: python, inputs: {xs: shared, s: seeded}, with: {function: "steps:combine"}}
      labelled: {type: python, inputs: {v: combined}, with: {function: "steps:label", kwargs: {seed: "${params.seed}"}}}
"""


def test_concurrent_runs_on_one_store_all_succeed_and_are_all_recorded(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    seeds = [1, 2, 3]
    procs = []
    try:
        for seed in seeds:
            procs.append(
                subprocess.Popen(
                    [PIPEFLOW, "run", str(spec), "--set", f"params.seed={seed}", "--quiet"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=cli_env(),
                    start_new_session=True,
                )
            )
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
        assert "database is locked" not in err

    store, db = open_store(load(spec))
    try:
        assert db.integrity_check() == "ok"
        runs = db.runs(limit=10)
        assert len(runs) == 3
        assert {r["state"] for r in runs} == {"done"}
        by_seed = {db.params(r["id"])["seed"]: r for r in runs}
        assert sorted(by_seed) == seeds
        for seed, r in by_seed.items():
            stages = {s["stage"]: s for s in db.stage_runs(r["id"])}
            assert set(stages) == {"shared", "seeded", "combined", "labelled"}
            assert {s["state"] for s in stages.values()} <= {"done", "cached"}, dict(stages)
            assert stages["seeded"]["state"] == "done", "each seed is new: it must really run"
            outputs = {(o["stage"], o["port"]): o for o in db.outputs(r["id"])}
            assert len(outputs) == 4
            label = store.load(ArtifactRef.from_dict(dict(outputs[("labelled", "out")])))
            assert label == f"seed={seed} value={seed * 1000 + 45}"
            assert {e["dst_stage"] for e in db.lineage(r["id"])} == {"combined", "labelled"}
    finally:
        db.close()
    # each seed ran its own stage once; the shared stage ran at most once per process
    log = calls(tmp_path)
    assert log.count("seeded") == 3 and log.count("combine") == 3
    assert 1 <= log.count("shared") <= 3

    # afterwards, every seed is fully cached
    again = run(spec, overrides=["params.seed=2"])
    assert all(str(o.state) == "cached" for o in again.stages.values())


def test_a_run_started_while_another_holds_the_database_waits_and_succeeds(tmp_path: Path) -> None:
    """A writer holding the SQLite lock for a while delays a run; it does not fail it."""
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    assert run(spec).ok  # creates the database
    store, db = open_store(load(spec))
    proc = None
    try:
        db._conn.execute("BEGIN IMMEDIATE")  # hold the write lock as a slow writer would
        proc = subprocess.Popen(
            [PIPEFLOW, "run", str(spec), "--set", "params.seed=9", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            start_new_session=True,
        )
        time.sleep(1.5)
        assert proc.poll() is None, "the run must wait for the lock, not give up"
        db._conn.execute("COMMIT")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
    finally:
        if db._conn.in_transaction:
            db._conn.execute("ROLLBACK")
        db.close()
        if proc is not None:
            kill_group(proc)
    _, db = open_store(load(spec))
    try:
        assert len(db.runs()) == 2 and all(r["state"] == "done" for r in db.runs())
    finally:
        db.close()


def test_a_memory_store_root_works_within_one_process(tmp_path: Path) -> None:
    import fsspec

    root = f"memory://pipeflow-it-{uuid.uuid4().hex[:8]}"
    spec = write_spec(
        tmp_path,
        SPEC.replace("params: {seed: 0}", f"params: {{seed: 4}}\n    store: {{root: '{root}'}}"),
        {"steps.py": STEPS},
    )
    first = run(spec)
    assert first.ok, {n: o.error for n, o in first.stages.items()}
    assert first.load("labelled") == "seed=4 value=4045"

    fs = fsspec.filesystem("memory")
    base = root.removeprefix("memory://")
    objects = fs.find(f"/{base}/objects")
    assert len(objects) >= 4, objects
    assert not (tmp_path / ".pipeflow" / "objects").exists(), (
        "artifacts go to the memory store, not beside the spec"
    )
    assert (tmp_path / ".pipeflow" / "pipeflow.db").is_file(), (
        "metadata stays in SQLite beside the spec"
    )

    second = run(spec)
    assert all(str(o.state) == "cached" for o in second.stages.values())
    assert second.load("labelled") == "seed=4 value=4045"
    assert calls(tmp_path).count("shared") == 1

"""Many writers at once on one store: 20 ``pipeflow run`` processes, and 4 racing promotions.

The runs differ by a parameter (so each is its own resolved spec and the run lock lets them all
go) but share a stage whose result does not depend on it, so they also race to write the same
object and manifest. The promotions move one alias to four different versions at the same moment;
the registry claims each event number with an exclusive create, so the history must come out as a
straight chain, each move starting from the previous one's version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import PIPEFLOW, assert_store_sound, cli_env, hard_kill

from pipeflow.registry import Registry, alias_stack
from pipeflow.spec.load import load
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.check import check_store
from pipeflow.store.database import open_metadata
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

pytestmark = pytest.mark.slow

STEPS = """
    def shared():
        return list(range(1000))

    def seeded(seed):
        return {"seed": seed, "square": seed * seed}

    def combine(xs, s):
        return sum(xs) + s["square"]
"""

SPEC = """
    pipeline: crowd
    params: {seed: 0}
    stages:
      shared: {type: python, with: {function: "steps:shared"}}
      seeded: {type: python, with: {function: "steps:seeded", kwargs: {seed: "${params.seed}"}}}
      combined: {type: python, inputs: {xs: shared, s: seeded}, with: {function: "steps:combine"}}
"""

RUNS = 20


def _start_all(argvs: list[list[str]]) -> list[tuple[int, str, str]]:
    procs = []
    try:
        for argv in argvs:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=cli_env(),
                    start_new_session=True,
                )
            )
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            hard_kill(p)
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def test_twenty_runs_started_at_once_are_all_recorded_on_a_sound_store(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    results = _start_all(
        [[PIPEFLOW, "run", str(spec), "--set", f"params.seed={i}", "-q"] for i in range(RUNS)]
    )
    for code, out, err in results:
        assert code == 0, f"exit {code}\n{out}\n{err}"
        assert "database is locked" not in err + out
        assert "already running" not in err

    store, db = open_store(load(spec))
    try:
        assert check_store(store, db) == []
        runs = db.runs(limit=100)
        assert len(runs) == RUNS and {r["state"] for r in runs} == {"done"}
        assert sorted(db.params(r["id"])["seed"] for r in runs) == list(range(RUNS))
        for r in runs:
            stages = {s["stage"]: s["state"] for s in db.stage_runs(r["id"])}
            assert stages.keys() == {"shared", "seeded", "combined"}
            assert stages["seeded"] == "done" and stages["combined"] == "done", stages
            assert len(db.outputs(r["id"])) == 3
    finally:
        db.close()


def test_four_promotions_racing_for_one_alias_leave_a_straight_history(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ArtifactStore(str(root))
    registry = Registry(store)
    for i in range(1, 5):
        ref = store.save({"model": "linear", "weights": [i, i + 1]}, "model")
        assert registry.register("scorer", ref, metrics={"accuracy": 0.8 + i / 100})["version"] == i
    open_metadata(root / "pipeflow.db").close()  # promotions need none; the store check does

    argvs = [
        [
            PIPEFLOW,
            "models",
            "promote",
            "scorer",
            str(v),
            "--to",
            "production",
            "--store",
            str(root),
        ]
        for v in range(1, 5)
    ]
    results = _start_all(argvs)
    for code, out, err in results:
        assert code == 0, f"exit {code}\n{out}\n{err}"
        assert out.startswith("scorer@production -> v"), out

    history = registry.history("scorer", "production")
    assert [e["seq"] for e in history] == [1, 2, 3, 4]
    assert history[0]["from_version"] is None
    for before, after in zip(history, history[1:], strict=False):
        assert after["from_version"] == before["to_version"], history
    assert sorted(e["to_version"] for e in history) == [1, 2, 3, 4]
    assert alias_stack(history) == [e["to_version"] for e in history]
    assert registry.holder("scorer", "production") == history[-1]["to_version"]
    # what each command printed matches the event it wrote
    printed = sorted(out.strip() for _, out, _ in results)
    expected = sorted(
        f"scorer@production -> v{e['to_version']} (was {'v' + str(e['from_version']) if e['from_version'] else 'unset'})"
        for e in history
    )
    assert printed == expected
    db = open_metadata(root / "pipeflow.db")
    try:
        assert check_store(store, db) == []
    finally:
        db.close()


def test_pipeflow_store_check_from_the_command_line_passes_a_fresh_store(tmp_path: Path) -> None:
    """The helper every fault test ends with agrees with the real command."""
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    proc = subprocess.run(
        [PIPEFLOW, "run", str(spec), "-q"], capture_output=True, text=True, env=cli_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert_store_sound(spec)
    check = subprocess.run(
        [PIPEFLOW, "store", "check", "--spec", str(spec)],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert check.returncode == 0 and check.stdout.startswith("ok: store "), check

"""A team's store under load: several client machines on one PostgreSQL history and one S3 store.

Each client is a process with its own working directory and its own copy of the spec (as a
laptop or a CI runner would have), sharing nothing with the others but the two servers (the
``postgres`` and ``s3`` fixtures: a real PostgreSQL and moto's S3 server, both on 127.0.0.1),
named by ``$PIPEFLOW_STORE__METADATA`` and ``$PIPEFLOW_STORE__ROOT`` as docs/howto-team.md says.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import PIPEFLOW, cli_env, hard_kill, kill_group, pipeflow_ok, start, wait_until

from pipeflow.spec.load import load
from pipeflow.store.check import check_store
from pipeflow.store.database import open_metadata
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

pytestmark = pytest.mark.slow

STEPS = """
    import time
    from pathlib import Path

    # each stage lasts longer than ArtifactStore.durable_after_s: its result's manifest is written
    # at once (shorter ones are batched for a quarter second, and a kill may lose them)
    def shared():
        time.sleep(0.06)
        return list(range(1000))

    def seeded(seed):
        time.sleep(0.06)
        return {"seed": seed, "square": seed * seed}

    def combine(xs, s):
        time.sleep(0.06)
        return sum(xs) + s["square"]

    def held(x, flag):
        deadline = time.monotonic() + 90
        while Path(flag).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return x
"""

SPEC = """
    pipeline: crowd
    params: {seed: 0}
    stages:
      shared: {type: python, with: {function: "steps:shared"}}
      seeded: {type: python, with: {function: "steps:seeded", kwargs: {seed: "${params.seed}"}}}
      combined: {type: python, inputs: {xs: shared, s: seeded}, with: {function: "steps:combine"}}
"""

CLIENTS, RUNS_EACH = 4, 5


@pytest.fixture
def team(postgres, s3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a machine of the team: a fresh database and bucket (this process gets
    the S3 endpoint too, to check the store afterwards)."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return cli_env(
        PIPEFLOW_STORE__METADATA=postgres.database(),
        PIPEFLOW_STORE__ROOT=f"{s3.bucket()}/team",
        **s3.env,
    )


def test_twenty_runs_from_four_clients_are_each_recorded_once_on_a_sound_store(
    team: dict[str, str], tmp_path: Path
) -> None:
    clients = [
        write_spec(tmp_path / f"client{c}", SPEC, {"steps.py": STEPS}) for c in range(CLIENTS)
    ]
    procs = []
    try:
        for c, spec in enumerate(clients):
            seeds = [c * RUNS_EACH + i for i in range(RUNS_EACH)]
            script = "; ".join(
                f"{shlex.quote(PIPEFLOW)} run pipeline.yaml -q --set params.seed={s} || exit 1"
                for s in seeds
            )
            procs.append(
                subprocess.Popen(
                    ["sh", "-c", script],
                    cwd=spec.parent,
                    env=team,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            hard_kill(p)
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
        assert "error" not in err.lower(), err
    for spec in clients:  # nothing written on the clients' own disks
        assert sorted(p.name for p in spec.parent.iterdir()) == ["pipeline.yaml", "steps.py"]

    loaded = load(
        clients[0],
        [
            f"store.metadata={team['PIPEFLOW_STORE__METADATA']}",
            f"store.root={team['PIPEFLOW_STORE__ROOT']}",
        ],
    )
    store, db = open_store(loaded)
    try:
        runs = db.runs(limit=100)
        assert len(runs) == CLIENTS * RUNS_EACH and {r["state"] for r in runs} == {"done"}
        assert sorted(db.params(r["id"])["seed"] for r in runs) == list(range(CLIENTS * RUNS_EACH))
        assert db.query("SELECT COUNT(*) FROM stage_runs")[0][0] == 3 * CLIENTS * RUNS_EACH
        for r in runs:
            assert {s["stage"] for s in db.stage_runs(r["id"])} == {"shared", "seeded", "combined"}
            assert len(db.outputs(r["id"])) == 3
        # the shared stage ran once, then every other run found it in the store
        shared = db.query(
            "SELECT state, COUNT(*) AS n FROM stage_runs WHERE stage = 'shared' GROUP BY state"
        )
        counted = {row["state"]: row["n"] for row in shared}
        assert sum(counted.values()) == CLIENTS * RUNS_EACH and counted.get("cached", 0) >= 1
        assert check_store(store, db) == []
    finally:
        db.close()


def test_a_client_killed_mid_run_leaves_a_sound_team_store_and_the_rerun_reuses_what_finished(
    team: dict[str, str], tmp_path: Path
) -> None:
    flag = tmp_path / "hold"
    spec = write_spec(
        tmp_path / "laptop",
        SPEC
        + f'      waits: {{type: python, inputs: {{x: combined}}, with: {{function: "steps:held", kwargs: {{flag: "{flag}"}}}}}}\n',
        {"steps.py": STEPS},
    )
    flag.touch()
    log = tmp_path / "run.log"
    proc = start([PIPEFLOW, "run", spec], log, env=team)
    try:

        def recorded() -> bool:  # the stages before the held one, as the history has them
            with open_metadata(team["PIPEFLOW_STORE__METADATA"]) as db:
                run = db.find_run("latest")
                states = {s["stage"]: s["state"] for s in db.stage_runs(run["id"])} if run else {}
            return all(states.get(s) == "done" for s in ("shared", "seeded", "combined"))

        wait_until(recorded, 60, "the stages before the held one to be recorded", proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        kill_group(proc)
    flag.unlink()

    again = pipeflow_ok(["run", spec], env=team, timeout=120)
    lines = {
        ln.split()[1]: ln.split()[2] for ln in again.stdout.splitlines() if ln.strip()[:1] in "✓↺"
    }
    assert lines == {
        "shared": "cached",
        "seeded": "cached",
        "combined": "cached",
        "waits": "done",
    }, again.stdout
    listed = pipeflow_ok(["runs", "list", "--spec", spec], env=team).stdout
    assert " interrupted " in listed and " done " in listed, listed
    checked = pipeflow_ok(["store", "check", "--spec", spec], env=team)
    assert checked.stdout.startswith("ok: store s3://"), checked.stdout

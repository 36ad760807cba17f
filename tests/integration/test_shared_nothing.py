"""Dask workers that share nothing with the client but the S3 store (and, through the client,
PostgreSQL): real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, one worker
offering ``GPU=1``, started in an empty working folder of their own with only the S3 variables in
their environment (no database URL, no spec folder on their path). Where the test may (root, as
here and in CI), each runs in its own mount namespace with an empty tmpfs over pytest's temporary
root, where every client folder lives: the workers could not read the spec's folder even if they
knew where it is, and the spec's code reaches them only through the store
(:mod:`pipeflow.execute.bundle`). (Running them as another user would not do: the interpreter
lives under root's home.)

- The claims flagship on ``s3://`` + PostgreSQL on that cluster gives the same artifact digest for
  every stage output as the same spec on a local store with threads, the same promotion (version
  and model digest), and ``pipeflow store check`` is clean.
- A worker SIGKILLed while it runs a stage: the run finishes on the other worker, the rerun reuses
  every stage, and the store and PostgreSQL pass the check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DASK,
    PIPEFLOW,
    cli_env,
    free_port,
    kill_group,
    pipeflow,
    pipeflow_ok,
    stage_lines,
    start,
    wait_until,
)

from pipeflow.execute.bundle import CACHE_ENV
from pipeflow.testing import write_spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLAIMS = Path(__file__).resolve().parents[2] / "specs" / "claims"


@dataclass
class BareCluster:
    """A scheduler and two workers that know nothing of the client but the S3 endpoint."""

    address: str
    hidden: list[str]  # the argv prefix its processes run under (see _hidden)
    home: Path  # the workers' own folder: working directory, code cache, Dask's scratch space
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)  # worker name -> address

    @property
    def code_cache(self) -> Path:
        return self.home / "code"

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")


def _worker_env(s3_env: dict[str, str], home: Path) -> dict[str, str]:
    """Only what a worker machine would have: PATH, the Python path that holds pipeflow (as an
    installed package would be), a home, and the S3 endpoint and credentials."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **s3_env}
    if os.environ.get("PYTHONPATH"):  # pipeflow from a worktree: its package, no spec folder
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    # the client's choice of BLAS kernels (OPENBLAS_CORETYPE=Haswell on this project's VMs): left
    # to itself OpenBLAS picks the CPU's own (SkylakeX where there is AVX-512), whose sums round
    # otherwise, and the model's bytes differ from the local run's; a worker machine is set up
    # like the client's as far as numerics go, or no run anywhere could match another's bytes
    env.update({k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "MKL_", "OMP_"))})
    env[CACHE_ENV] = str(home / "code")
    env["DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"] = "20s"
    return env


def _hidden(folder: Path) -> list[str]:
    """An argv prefix that runs a command with ``folder`` hidden under an empty tmpfs (its own
    mount namespace); empty where this cannot be done (not root, no ``unshare``)."""
    prefix = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(folder)]
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return []
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    return prefix if probe.returncode == 0 else []


@contextlib.contextmanager
def bare_cluster(s3_env: dict[str, str], hide: Path) -> Iterator[BareCluster]:
    """Scheduler and workers started in a folder of their own, with ``hide`` (the folder of
    every client's files) out of their sight where :func:`_hidden` can do it."""
    home = Path(tempfile.mkdtemp(prefix="pipeflow-bare-worker-"))
    for sub in ("cwd", "code", "scratch"):
        (home / sub).mkdir()
    prefix = _hidden(hide)
    port = free_port()
    cluster = BareCluster(f"tcp://127.0.0.1:{port}", prefix, home)
    env = _worker_env(s3_env, home)

    def spawn(name: str, argv: list[str]) -> None:
        with open(home / f"{name}.log", "wb") as log:
            cluster.procs[name] = subprocess.Popen(
                [*prefix, *argv],
                cwd=home / "cwd",
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    worker = [
        DASK,
        "worker",
        cluster.address,
        "--host",
        "127.0.0.1",
        "--no-dashboard",
        "--no-nanny",
        "--nthreads",
        "2",
        "--local-directory",
        str(home / "scratch"),
    ]
    try:
        spawn(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        )
        spawn("cpu-worker", [*worker, "--name", "cpu-worker"])
        spawn("gpu-worker", [*worker, "--name", "gpu-worker", "--resources", "GPU=1"])
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(cluster.address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                    workers = client.scheduler_info(n_workers=-1)["workers"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(cluster.log("scheduler")) from None
                time.sleep(0.2)
        cluster.addresses = {w["name"]: a for a, w in workers.items()}
        yield cluster
    finally:
        for proc in reversed(list(cluster.procs.values())):
            kill_group(proc)
        shutil.rmtree(home, ignore_errors=True)


def _team_env(postgres: Any, s3: Any) -> dict[str, str]:
    return cli_env(
        PIPEFLOW_STORE__METADATA=postgres.database(),
        PIPEFLOW_STORE__ROOT=f"{s3.bucket()}/team",
        **s3.env,
    )


def _assert_unreadable_by_workers(cluster: BareCluster, path: Path) -> None:
    assert path.is_file()
    if cluster.hidden:
        probe = subprocess.run([*cluster.hidden, "test", "-e", str(path)], check=False)
        assert probe.returncode == 1, f"the workers can see {path}"


def _shown(spec: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = pipeflow_ok(["runs", "show", "latest", "--json", "--spec", spec], env=env).stdout
    return json.loads(out)


def _promotion(shown: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """``models show --json`` without what records the occasion (time, host, user, run)."""
    model = json.loads(shown.stdout)
    occasion = {"created", "time", "host", "user", "run", "run_id", "reason"}
    return {
        "aliases": model["aliases"],
        "versions": [{k: v for k, v in m.items() if k not in occasion} for m in model["versions"]],
        "history": [{k: v for k, v in h.items() if k not in occasion} for h in model["history"]],
    }


def _digests(shown: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(o["stage"], o["port"]): o["digest"] for o in shown["outputs"]}


N_CLAIMS = "3000"  # the smallest batch whose model still passes every promotion gate


def test_the_claims_flagship_on_bare_workers_gives_the_bytes_and_promotion_of_a_local_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, postgres: Any, s3: Any
) -> None:
    local = tmp_path / "local"
    client = tmp_path / "client"
    for folder in (local, client):
        folder.mkdir()
        for name in ("pipeline.yaml", "steps.py", "loop.py"):
            shutil.copy(CLAIMS / name, folder / name)
    team = _team_env(postgres, s3)
    args = ["run", "pipeline.yaml", "--set", f"params.n_claims={N_CLAIMS}"]

    with bare_cluster(s3.env, tmp_path_factory.getbasetemp()) as cluster:
        _assert_unreadable_by_workers(cluster, client / "steps.py")
        on_cluster = pipeflow(
            [
                *args,
                "--set",
                "stages.model.resources.GPU=1",  # not in the cache key: the same digests
                "--executor",
                "distributed",
                "--address",
                cluster.address,
            ],
            cwd=client,
            env=team,
            timeout=300,
        )
        remote = _shown(client / "pipeline.yaml", team)
        failed = {s["stage"]: s["error"] for s in remote["stages"] if s["state"] != "done"}
        assert on_cluster.returncode == 0 and not failed, on_cluster.stdout + on_cluster.stderr
        assert sorted(os.listdir(cluster.home / "cwd")) == [], (
            "workers wrote nothing where they run"
        )
        bundles = sorted(os.listdir(cluster.code_cache))
    pipeflow_ok(args, cwd=local, timeout=300)
    here = _shown(local / "pipeline.yaml")

    stages = {s["stage"]: s for s in remote["stages"]}
    assert {s["state"] for n, s in stages.items() if n != "drift"} == {"done"}
    assert set(cluster.addresses.values()) >= {s["worker"] for s in stages.values()}
    assert stages["model"]["worker"] == cluster.addresses["gpu-worker"]
    assert len(bundles) == 1 and not bundles[0].startswith("."), bundles

    # every output but those of promote (a registry entry records when, where and in which run
    # it was made: compared through the registry below) and drift (it reads the live traffic)
    remote_digests, local_digests = _digests(remote), _digests(here)
    compared = {k for k in local_digests if k[0] not in ("promote", "drift")}
    assert len(compared) == 15 and compared <= set(remote_digests)
    assert {k: remote_digests[k] for k in compared} == {k: local_digests[k] for k in compared}

    remote_model, local_model = (
        _promotion(
            pipeflow_ok(["models", "show", "claims-categoriser", "--json", "--spec", spec], env=env)
        )
        for spec, env in ((client / "pipeline.yaml", team), (local / "pipeline.yaml", None))
    )
    assert remote_model["aliases"] == {"production": 1}
    assert remote_model["versions"][0]["model"]["digest"] == remote_digests[("model", "model")]
    assert remote_model == local_model

    checked = pipeflow_ok(["store", "check", "--spec", client / "pipeline.yaml"], env=team)
    assert checked.stdout.startswith("ok: store s3://"), checked.stdout


KILL_STEPS = """
    import os
    import time

    import s3fs

    def shared():
        return list(range(1000))

    def seeded(seed):
        return {"seed": seed, "square": seed * seed}

    def combine(xs, s):
        return sum(xs) + s["square"]

    def held(x, flag, seen):
        # tell the test which worker process holds this stage, then wait while the flag exists;
        # both in S3: the only thing the test shares with these workers
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.pipe(f"{seen}/{os.getpid()}", b"")
        deadline = time.monotonic() + 120
        while fs.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.1)
            fs.invalidate_cache()
        return x + 1

    def after(x):
        return x * 2
"""

KILL_SPEC = """
    pipeline: bare-kill
    stages:
      shared: {{type: python, with: {{function: "steps:shared"}}}}
      seeded: {{type: python, with: {{function: "steps:seeded", kwargs: {{seed: 3}}}}}}
      combined: {{type: python, inputs: {{xs: shared, s: seeded}}, with: {{function: "steps:combine"}}}}
      held:
        type: python
        inputs: {{x: combined}}
        with: {{function: "steps:held", kwargs: {{flag: "{flag}", seen: "{seen}"}}}}
      after: {{type: python, inputs: {{x: held}}, with: {{function: "steps:after"}}}}
"""


def test_a_bare_worker_killed_mid_stage_leaves_a_sound_team_store_and_the_rerun_reuses_it_all(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, postgres: Any, s3: Any
) -> None:
    team = _team_env(postgres, s3)
    control = f"{team['PIPEFLOW_STORE__ROOT'].split('/team')[0]}/control"
    flag, seen = f"{control}/hold", f"{control}/seen"
    spec = write_spec(
        tmp_path / "client", KILL_SPEC.format(flag=flag, seen=seen), {"steps.py": KILL_STEPS}
    )
    fs = s3.filesystem()
    fs.pipe(flag, b"")

    def holders() -> list[int]:
        fs.invalidate_cache()
        return sorted(int(p.rsplit("/", 1)[1]) for p in fs.ls(seen)) if fs.exists(seen) else []

    log = tmp_path / "run.log"
    with bare_cluster(s3.env, tmp_path_factory.getbasetemp()) as cluster:
        _assert_unreadable_by_workers(cluster, spec)
        argv = [PIPEFLOW, "run", spec, "--executor", "distributed", "--address", cluster.address]
        proc = start(argv, log, env=team)
        try:
            wait_until(lambda: holders(), 120, "the held stage to start on a worker", proc, log)
            (victim,) = holders()
            name = next(n for n, p in cluster.procs.items() if p.pid == victim)
            survivor = next(a for n, a in cluster.addresses.items() if n != name)
            os.killpg(victim, signal.SIGKILL)
            cluster.procs[name].wait(timeout=10)
            wait_until(lambda: len(holders()) == 2, 120, "the held stage to start again", proc, log)
            fs.rm(flag)
            assert proc.wait(timeout=120) == 0, log.read_text()
        finally:
            kill_group(proc)
        shown = _shown(spec, team)
        stages = {s["stage"]: s for s in shown["stages"]}
        assert shown["run"]["state"] == "done", log.read_text()
        assert {s["state"] for s in stages.values()} == {"done"}
        assert stages["held"]["worker"] == survivor and stages["after"]["worker"] == survivor

        again = pipeflow_ok(
            ["run", spec, "--executor", "distributed", "--address", cluster.address], env=team
        )
    assert {n: state for n, (state, _) in stage_lines(again.stdout).items()} == dict.fromkeys(
        ("shared", "seeded", "combined", "held", "after"), "cached"
    ), again.stdout
    checked = pipeflow_ok(["store", "check", "--spec", spec], env=team)
    assert checked.stdout.startswith("ok: store s3://"), checked.stdout

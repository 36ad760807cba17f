"""``pipeflow run --executor distributed --address`` against a real ``dask scheduler`` and workers.

The cluster is started from the ``dask`` command line (as a user would on a cluster): one scheduler
and two workers on 127.0.0.1, one of them offering ``GPU=1``. A stage that asks for ``GPU: 1`` must
land on that worker; one that asks for more than any worker offers must fail at once, naming the
resource, instead of waiting forever for a worker that will never come.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import DASK, PIPEFLOW, cli_env, free_port, kill_group, pipeflow, show_run

from pipeflow.spec.load import load
from pipeflow.store.artifacts import ArtifactRef
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

pytestmark = pytest.mark.cluster

STEPS = """
    import os

    def const(value):
        return value

    def on_worker(x, tag, ctx):
        from distributed import get_worker

        return {"address": get_worker().address, "pid": os.getpid(), "tag": tag, "resources": dict(ctx.resources)}
"""

GPU_SPEC = """
    pipeline: gpu-placement
    stages:
      prep: {type: python, with: {function: "steps:const", kwargs: {value: 1}}}
      cpu_side: {type: python, inputs: {x: prep}, with: {function: "steps:on_worker", kwargs: {tag: cpu}}}
      gpu_a: {type: python, inputs: {x: prep}, resources: {GPU: 1}, with: {function: "steps:on_worker", kwargs: {tag: a}}}
      gpu_b: {type: python, inputs: {x: gpu_a}, resources: {GPU: 1}, with: {function: "steps:on_worker", kwargs: {tag: b}}}
      gpu_c: {type: python, inputs: {x: prep}, resources: {GPU: 1}, with: {function: "steps:on_worker", kwargs: {tag: c}}}
"""

GREEDY_SPEC = """
    pipeline: gpu-greedy
    stages:
      prep: {type: python, with: {function: "steps:const", kwargs: {value: 2}}}
      huge: {type: python, inputs: {x: prep}, resources: {GPU: 5}, with: {function: "steps:on_worker", kwargs: {tag: huge}}}
      after: {type: python, inputs: {x: huge}, with: {function: "steps:on_worker", kwargs: {tag: after}}}
"""


@dataclass
class DaskCluster:
    address: str
    gpu_worker: str
    cpu_worker: str


def _wait_for_port(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(
        f"dask scheduler did not listen on {port} within {timeout}s:\n{log.read_text()}"
    )


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = logs / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=cli_env()
            )
        procs.append(proc)
        return proc

    worker = [
        DASK,
        "worker",
        address,
        "--host",
        "127.0.0.1",
        "--no-dashboard",
        "--nthreads",
        "1",
        "--no-nanny",
    ]
    try:
        sched = start(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        )
        _wait_for_port(port, sched, logs / "scheduler.log")
        start("cpu-worker", [*worker, "--name", "cpu-worker"])
        start("gpu-worker", [*worker, "--name", "gpu-worker", "--resources", "GPU=1"])
        with Client(address, timeout="20s") as client:
            client.wait_for_workers(2, timeout=60)
            workers = client.scheduler_info(n_workers=-1)["workers"]
        gpu = [a for a, w in workers.items() if w.get("resources", {}).get("GPU")]
        cpu = [a for a, w in workers.items() if not w.get("resources", {}).get("GPU")]
        assert len(gpu) == 1 and len(cpu) == 1, workers
        yield DaskCluster(address, gpu[0], cpu[0])
    finally:
        for proc in reversed(procs):
            kill_group(proc)


def _load_output(spec: Path, row: dict) -> object:
    store, db = open_store(load(spec))
    db.close()
    return store.load(ArtifactRef.from_dict(row))


def test_gpu_stages_run_on_the_worker_that_offers_gpu(
    tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    spec = write_spec(tmp_path, GPU_SPEC, {"steps.py": STEPS})
    proc = pipeflow(
        ["run", spec, "--executor", "distributed", "--address", dask_cluster.address], timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    shown = show_run(spec)
    assert shown["run"]["state"] == "done"
    assert shown["run"]["executor"] == f"distributed({dask_cluster.address})"
    stages = shown["by_stage"]
    for name in ("gpu_a", "gpu_b", "gpu_c"):
        assert stages[name]["state"] == "done"
        assert stages[name]["worker"] == dask_cluster.gpu_worker, (name, stages[name]["worker"])
    # every stage records a real worker of this cluster
    assert stages["cpu_side"]["worker"] in (dask_cluster.gpu_worker, dask_cluster.cpu_worker)

    outputs = {(o["stage"], o["port"]): o for o in shown["outputs"]}
    for name, tag in (("gpu_a", "a"), ("gpu_b", "b"), ("gpu_c", "c")):
        value = _load_output(spec, outputs[(name, "out")])
        assert value["address"] == dask_cluster.gpu_worker
        assert value["tag"] == tag
        assert value["resources"] == {"GPU": 1.0}, "ctx.resources says what the stage asked for"


def test_a_stage_demanding_more_gpus_than_any_worker_has_fails_fast(
    tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    spec = write_spec(tmp_path, GREEDY_SPEC, {"steps.py": STEPS})
    t0 = time.monotonic()
    proc = pipeflow(
        ["run", spec, "--executor", "distributed", "--address", dask_cluster.address], timeout=120
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s: a stage no worker can run must not wait for one"
    assert "stage 'huge' failed" in proc.stdout
    assert "needs worker resources {'GPU': 5.0}" in proc.stdout, proc.stdout
    assert "no worker of the cluster offers them" in proc.stdout
    assert "'GPU': 1" in proc.stdout, "the message says what the workers do offer"

    stages = show_run(spec)["by_stage"]
    assert stages["prep"]["state"] == "done"
    assert stages["huge"]["state"] == "failed"
    assert "GPU" in stages["huge"]["error"]
    assert stages["after"]["state"] == "skipped"
    assert "huge" in stages["after"]["reason"]


def test_workers_run_the_edited_code_and_the_address_can_come_from_the_environment(
    tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    """Workers outlive runs: after steps.py changes they must run the new code, not the module
    they imported for the previous run. ``PIPEFLOW_DASK_ADDRESS`` stands in for ``--address``."""
    spec = write_spec(tmp_path, GPU_SPEC, {"steps.py": STEPS})
    args = ["run", spec, "--executor", "distributed", "--address", dask_cluster.address]
    first = pipeflow(args, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr

    steps = tmp_path / "steps.py"
    steps.write_text(steps.read_text().replace('"tag": tag,', '"tag": tag + "-v2",'))
    env = {**cli_env(), "PIPEFLOW_DASK_ADDRESS": dask_cluster.address}
    second = subprocess.run(
        [PIPEFLOW, "run", str(spec), "--executor", "distributed"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    shown = show_run(spec)
    assert shown["run"]["executor"] == f"distributed({dask_cluster.address})"
    stages = shown["by_stage"]
    assert stages["prep"]["state"] == "done", "prep's code is in steps.py too"
    assert stages["gpu_a"]["state"] == "done"
    outputs = {(o["stage"], o["port"]): o for o in shown["outputs"]}
    assert _load_output(spec, outputs[("gpu_a", "out")])["tag"] == "a-v2"
    assert _load_output(spec, outputs[("cpu_side", "out")])["tag"] == "cpu-v2"

"""``executor: {kind: distributed, cluster: MODULE:ATTR, options, adapt}`` through the real CLI.

The factory is ``distributed:LocalCluster`` (the one cluster manager that runs here; dask-kubernetes
and dask-jobqueue take the same route) or a subclass of it beside the spec that writes down what
pipeflow did with it (``adapt`` and its bounds, ``close``). That adaptivity engaged is shown by
what Dask did, not by what pipeflow asked: a cluster started with one worker ran the stages on
two. Dask's adaptive timings come from Dask's own configuration, as a user would set them
(``DASK_DISTRIBUTED__ADAPTIVE__...``), so scaling up takes a tenth of a second, not five.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    PIPEFLOW,
    cli_env,
    one_line_error,
    pipeflow,
    processes,
    show_run,
    start,
    wait_until,
)

from pipeflow.testing import write_spec

pytestmark = pytest.mark.cluster

STEPS = """
    import os
    import time
    from pathlib import Path

    def nap(tag, seconds):
        from distributed import get_worker

        Path(__file__).with_name(f"started-{tag}").touch()
        time.sleep(seconds)
        return {"tag": tag, "worker": get_worker().address, "pid": os.getpid()}
"""

RECORDING = """
    import json
    from distributed import LocalCluster

    class RecordingCluster(LocalCluster):
        '''A LocalCluster that writes down what was done with it, one JSON line per event.'''

        def __init__(self, record, **options):
            self._record = record
            super().__init__(**options)
            self._note(event="started", workers=len(self.scheduler_info["workers"]))

        def _note(self, **what):
            with open(self._record, "a") as fh:
                fh.write(json.dumps(what) + "\\n")

        def adapt(self, **kwargs):
            adaptive = super().adapt(**kwargs)
            self._note(event="adapt", minimum=adaptive.minimum, maximum=adaptive.maximum)
            return adaptive

        def close(self, *args, **kwargs):
            self._note(event="close")
            return super().close(*args, **kwargs)
"""

LOCAL = "{n_workers: 1, processes: true, threads_per_worker: 1, dashboard_address: ':0'}"


def _spec(
    tmp_path: Path, cluster: str, options: str, adapt: str, stages: int, seconds: float
) -> Path:
    """``stages`` independent stages that each sleep ``seconds`` on the cluster ``cluster``."""
    lines = [
        "pipeline: factory",
        "executor:",
        "  kind: distributed",
        f'  cluster: "{cluster}"',
        f"  options: {options}",
        f"  {adapt}",
        "stages:",
    ]
    for i in range(stages):
        kwargs = f"{{tag: s{i}, seconds: {seconds}}}"
        lines.append(f"  s{i}: {{type: python, with: {{function: 'steps:nap', kwargs: {kwargs}}}}}")
    return write_spec(
        tmp_path, "\n".join(lines) + "\n", {"steps.py": STEPS, "recording.py": RECORDING}
    )


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


#: Dask's adaptive loop, as fast as a test wants it: ask every 100 ms, aim for 0.1 s of work per
#: worker (so two waiting stages want two workers), and never scale down within the test
FAST_ADAPT = {
    "DASK_DISTRIBUTED__ADAPTIVE__INTERVAL": "100ms",
    "DASK_DISTRIBUTED__ADAPTIVE__TARGET_DURATION": "0.1s",
    "DASK_DISTRIBUTED__ADAPTIVE__WAIT_COUNT": "1000",
}


def test_an_adaptive_local_cluster_from_a_factory_grows_to_run_stages_on_two_workers(
    tmp_path: Path,
) -> None:
    spec = _spec(
        tmp_path, "distributed:LocalCluster", LOCAL, "adapt: {minimum: 1, maximum: 2}", 4, 2.0
    )
    proc = pipeflow(["run", spec, "--quiet"], env=cli_env(**FAST_ADAPT), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = show_run(spec)
    assert shown["run"]["executor"] == "distributed(distributed:LocalCluster, adapt 1-2)"
    workers = {s["worker"] for s in shown["stages"]}
    # n_workers: 1, so a second worker can only come from adapt(minimum=1, maximum=2)
    assert len(workers) == 2, workers
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)


def test_the_factory_gets_its_options_and_bounds_and_the_cluster_is_closed_after_a_failure(
    tmp_path: Path,
) -> None:
    record = tmp_path / "cluster.jsonl"
    options = f"{{record: '{record}', n_workers: 1, processes: false, dashboard_address: ':0'}}"
    spec = _spec(
        tmp_path, "recording:RecordingCluster", options, "adapt: {minimum: 1, maximum: 3}", 1, 0
    )
    # the stage fails (its kwargs are wrong): the run fails, the cluster is still closed
    proc = pipeflow(
        ["run", spec, "--set", "stages.s0.with.kwargs.bogus=1"], env=cli_env(), timeout=120
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    events = _records(record)
    assert events[0] == {"event": "started", "workers": 1}
    assert {"event": "adapt", "minimum": 1, "maximum": 3} in events
    assert events[-1] == {"event": "close"}


def test_ctrl_c_during_a_run_closes_the_cluster_the_factory_started(tmp_path: Path) -> None:
    record = tmp_path / "cluster.jsonl"
    # a worker process: closing the cluster ends it, napping stage and all (a worker thread in
    # this process would make the close wait ~30 s for Dask's own timeout)
    options = f"{{record: '{record}', n_workers: 1, processes: true, dashboard_address: ':0'}}"
    spec = _spec(tmp_path, "recording:RecordingCluster", options, "", 1, 60)
    log = tmp_path / "run.log"
    with processes() as procs:
        # Ctrl-C acts in the run: tests/conftest.py gives the session Python's SIGINT handler
        # even where it was started with SIGINT ignored (children would inherit that)
        proc = start([PIPEFLOW, "run", spec], log)
        procs.append(proc)
        wait_until(lambda: (tmp_path / "started-s0").exists(), 60, "the stage to start", proc, log)
        os.kill(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 130, log.read_text()
    assert "interrupted" in log.read_text()
    assert _records(record)[-1] == {"event": "close"}, log.read_text()


@pytest.mark.parametrize(
    ("cluster", "adapt", "says"),
    [
        (
            "dask_kubernetes.operator:KubeCluster",
            "",
            "error: pipeline.yaml:4:12: executor.cluster: cannot import dask_kubernetes.operator "
            "for cluster dask_kubernetes.operator:KubeCluster: no module named 'dask_kubernetes'; "
            "install it where pipeflow runs (pip install dask-kubernetes)",
        ),
        (
            "distributed:no_such_cluster",
            "",
            "error: pipeline.yaml:4:12: executor.cluster: module distributed has no attribute "
            "'no_such_cluster' (distributed:no_such_cluster)",
        ),
        (
            "distributed:__version__",
            "",
            "error: pipeline.yaml:4:12: executor.cluster: distributed:__version__ is a str, not a "
            "callable that returns a Dask cluster",
        ),
        (
            "collections:OrderedDict",
            "adapt: {maximum: 2}",
            "error: pipeline.yaml:6:10: executor.adapt: cluster collections:OrderedDict has no "
            "adapt(), so it cannot scale itself: remove adapt and size it with its options",
        ),
    ],
)
def test_a_factory_that_cannot_be_used_is_one_error_line_and_exit_2(
    tmp_path: Path, cluster: str, adapt: str, says: str
) -> None:
    spec = _spec(tmp_path, cluster, "{}", adapt, 1, 0)
    t0 = time.monotonic()
    proc = pipeflow(["run", spec.name], cwd=tmp_path, env=cli_env(), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert one_line_error(proc.stderr) == says
    assert time.monotonic() - t0 < 30
    assert not list((tmp_path / ".pipeflow").glob("objects/*")), "nothing ran"


def test_cluster_on_the_command_line_names_the_flag_and_the_package(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "distributed:LocalCluster", LOCAL, "", 1, 0)
    proc = pipeflow(
        ["run", spec, "--executor", "distributed", "--cluster", "dask_jobqueue:SLURMCluster"],
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert one_line_error(proc.stderr) == (
        "error: --cluster: cannot import dask_jobqueue for cluster dask_jobqueue:SLURMCluster: "
        "no module named 'dask_jobqueue'; install it where pipeflow runs (pip install dask-jobqueue)"
    )
    both = pipeflow(
        ["run", spec, "--cluster", "distributed:LocalCluster", "--address", "tcp://127.0.0.1:1"],
        env=cli_env(),
        timeout=60,
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr

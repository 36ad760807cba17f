"""Every Dask scheduler honours the executor contract: sync, threads, processes, distributed.

The contract tests come from :class:`pipeflow.testing.ExecutorContract`; each class here only says
how to build its executor. The distributed ones share one in-process ``LocalCluster`` per module
(starting a cluster costs more than every test that uses it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeflow.errors import SpecError
from pipeflow.execute.dask_executor import DaskExecutor
from pipeflow.runner.session import run
from pipeflow.testing import ExecutorContract, write_spec

WHERE_STEPS = """
    import os
    import threading

    def where(ctx, tag):
        return {"pid": os.getpid(), "thread": threading.get_ident(), "stage": ctx.stage, "tag": tag}

    def pair(a, b):
        return [a, b]
"""

WHERE_SPEC = """
    pipeline: where
    stages:
      left: {type: python, with: {function: "steps:where", kwargs: {tag: left}}}
      right: {type: python, with: {function: "steps:where", kwargs: {tag: right}}}
      both: {type: python, inputs: {a: left, b: right}, with: {function: "steps:pair"}}
"""


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",  # its HTTP server (always started) on a free port, not 8787
        protocol="tcp",
        host="127.0.0.1",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster_client(local_cluster: Any) -> Iterator[Any]:
    import distributed

    with distributed.Client(local_cluster) as client:
        yield client


class TestSyncExecutor(ExecutorContract):
    def make_executor(self) -> DaskExecutor:
        return DaskExecutor("sync")

    def test_runs_every_stage_in_the_calling_process_and_thread(self, tmp_path: Path) -> None:
        import threading

        spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
        report = run(spec, executor=self.make_executor())
        assert report.ok
        for name in ("left", "right"):
            value = report.load(name)
            assert value["pid"] == os.getpid()
            assert value["thread"] == threading.get_ident()
            assert value["stage"] == name


class TestThreadsExecutor(ExecutorContract):
    def make_executor(self) -> DaskExecutor:
        return DaskExecutor("threads", workers=2)

    def test_runs_in_this_process_and_records_host_and_pid_as_worker(self, tmp_path: Path) -> None:
        spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
        report = run(spec, executor=self.make_executor())
        assert report.ok
        assert report.load("left")["pid"] == os.getpid()
        assert report.stages["left"].worker is not None
        assert report.stages["left"].worker.endswith(f":{os.getpid()}")


@pytest.mark.cluster
class TestProcessesExecutor(ExecutorContract):
    def make_executor(self) -> DaskExecutor:
        return DaskExecutor("processes", workers=2)

    def test_stages_run_in_worker_processes_not_the_client(self, tmp_path: Path) -> None:
        spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
        report = run(spec, executor=self.make_executor())
        assert report.ok, {n: o.error for n, o in report.stages.items()}
        pids = {report.load(n)["pid"] for n in ("left", "right")}
        assert os.getpid() not in pids
        # what was recorded is the process that actually ran the stage
        for name in ("left", "right"):
            assert report.stages[name].worker.endswith(f":{report.load(name)['pid']}")
        assert report.load("both") == [report.load("left"), report.load("right")]


@pytest.mark.cluster
class TestDistributedExecutor(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _client(self, cluster_client: Any) -> None:
        self.client = cluster_client

    def make_executor(self) -> DaskExecutor:
        return DaskExecutor("distributed", client=self.client)

    def test_records_the_dask_worker_address_that_ran_each_stage(self, tmp_path: Path) -> None:
        spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
        report = run(spec, executor=self.make_executor())
        assert report.ok, {n: o.error for n, o in report.stages.items()}
        addresses = set(self.client.scheduler_info(n_workers=-1)["workers"])
        for name in ("left", "right", "both"):
            assert report.stages[name].worker in addresses

    def test_a_stage_asking_for_resources_no_worker_offers_fails_at_once(
        self, tmp_path: Path
    ) -> None:
        spec = write_spec(
            tmp_path,
            """
            pipeline: greedy
            stages:
              cheap: {type: python, with: {function: "steps:pair", kwargs: {a: 1, b: 2}}}
              greedy:
                type: python
                inputs: {a: cheap}
                resources: {GPU: 1}
                with: {function: "steps:pair", kwargs: {b: 3}}
            """,
            {"steps.py": WHERE_STEPS},
        )
        report = run(spec, executor=self.make_executor())
        assert report.stages["cheap"].state == "done"
        assert report.stages["greedy"].state == "failed"
        error = report.stages["greedy"].error or ""
        assert "GPU" in error and "no worker" in error, error

    def test_a_result_landing_before_its_upstream_is_reported_after_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """as_completed gives a cluster's results in batches, in no set order within one (a
        result that is quicker to fetch lands first): every result of a run, really computed,
        handed over in reverse, still reaches ``on_event`` after its upstream stages'."""
        from pipeflow.execute import cluster

        real = cluster.completed

        def reversed_batch(futures: Any) -> Any:
            return reversed(list(real(futures)))

        monkeypatch.setattr(cluster, "completed", reversed_batch)
        spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
        seen: list[tuple[str, str]] = []
        report = run(spec, executor=self.make_executor(),
                     on_event=lambda name, state, _: seen.append((name, str(state))))  # fmt: skip
        assert report.ok
        finished = [name for name, state in seen if state == "done"]
        assert finished.index("both") > max(finished.index("left"), finished.index("right"))
        assert seen.index(("both", "running")) < seen.index(("both", "done"))


@pytest.mark.cluster
def test_distributed_executor_reaches_a_scheduler_by_address(
    tmp_path: Path, local_cluster: Any
) -> None:
    """``address=`` (what ``--address`` sets) connects a fresh client to a running scheduler."""
    spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
    ex = DaskExecutor("distributed", address=local_cluster.scheduler_address)
    assert ex.name == f"distributed({local_cluster.scheduler_address})"
    report = run(spec, executor=ex)
    assert report.ok, {n: o.error for n, o in report.stages.items()}
    assert report.load("both")[0]["stage"] == "left"


@pytest.mark.cluster
def test_a_kind_given_beside_an_executor_override_is_the_kind_the_override_is_checked_for(
    tmp_path: Path, local_cluster: Any
) -> None:
    """``--executor distributed --set executor.address=...`` on a spec of the threads executor
    runs on that scheduler: the spec does not refuse the address for the spec's own kind."""
    spec = write_spec(tmp_path, WHERE_SPEC, {"steps.py": WHERE_STEPS})
    address = local_cluster.scheduler_address
    report = run(spec, executor="distributed", overrides=[f"executor.address={address}"])
    assert report.ok, {n: o.error for n, o in report.stages.items()}
    assert report.stages["left"].worker in local_cluster.scheduler_info["workers"]
    with pytest.raises(SpecError, match="only used by kind 'distributed'"):  # the spec's kind
        run(spec, overrides=[f"executor.address={address}"])


@pytest.mark.cluster
def test_distributed_without_an_address_starts_a_local_cluster_of_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPEFLOW_DASK_ADDRESS", raising=False)
    spec = write_spec(
        tmp_path,
        WHERE_SPEC.replace(
            "pipeline: where", "pipeline: where\n    executor: {kind: distributed, workers: 1}"
        ),
        {"steps.py": WHERE_STEPS},
    )
    report = run(spec)
    assert report.ok, {n: o.error for n, o in report.stages.items()}
    assert report.load("left")["pid"] != os.getpid(), "LocalCluster workers are processes"
    assert report.stages["left"].worker.startswith("tcp://127.0.0.1:")

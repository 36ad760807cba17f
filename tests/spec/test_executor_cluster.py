"""``executor.cluster`` / ``options`` / ``adapt``: checked when the spec loads, each problem at the
line of the field that is wrong (the factory itself is imported only when a run starts)."""

from __future__ import annotations

import pytest

from pipeflow.errors import SpecError
from pipeflow.spec import loads


def _spec(executor: str) -> str:
    return f"pipeline: x\nexecutor:\n{executor}stages: {{a: {{type: python}}}}\n"


def _problem(executor: str) -> tuple[str, str]:
    with pytest.raises(SpecError) as info:
        loads(_spec(executor), "spec.yaml")
    problems = info.value.problems
    assert len(problems) == 1, problems
    return str(problems[0].location), f"{problems[0].field}: {problems[0].message}"


def test_a_cluster_factory_with_options_and_adapt_loads_without_importing_it() -> None:
    spec = loads(
        _spec(
            "  kind: distributed\n"
            "  cluster: dask_kubernetes.operator:KubeCluster\n"  # not installed here
            "  options: {name: train, n_workers: 2}\n"
            "  adapt: {maximum: 8}\n"
        ),
        "spec.yaml",
    ).spec.executor
    assert spec.cluster == "dask_kubernetes.operator:KubeCluster"
    assert spec.options == {"name": "train", "n_workers": 2}
    assert (spec.adapt.minimum, spec.adapt.maximum) == (1, 8)


@pytest.mark.parametrize(
    ("executor", "where", "says"),
    [
        (
            "  kind: distributed\n  cluster: dask_jobqueue.SLURMCluster\n",
            "spec.yaml:4:12",
            "executor.cluster: expected 'module:attribute'",
        ),
        (
            "  kind: threads\n  cluster: 'dask_jobqueue:SLURMCluster'\n",
            "spec.yaml:4:12",
            "executor.cluster: cluster is only used by kind 'distributed' (kind is 'threads')",
        ),
        (
            "  kind: distributed\n  address: tcp://h:8786\n  cluster: 'a:b'\n",
            "spec.yaml:5:12",
            "executor.cluster: address and cluster are exclusive",
        ),
        (
            "  kind: distributed\n  options: {n_workers: 2}\n",
            "spec.yaml:4:12",
            "executor.options: options are the keyword arguments of a cluster factory",
        ),
        (
            "  kind: distributed\n  workers: 3\n  cluster: 'a:b'\n",
            "spec.yaml:5:12",
            "executor.cluster: workers size pipeflow's own LocalCluster",
        ),
        (
            "  kind: distributed\n  cluster: 'a:b'\n  adapt: {minimum: 4, maximum: 2}\n",
            "spec.yaml:5:10",
            "executor.adapt: minimum (4) is above maximum (2)",
        ),
        (
            "  kind: distributed\n  cluster: 'a:b'\n  adapt: {minimum: 0, maximum: 2}\n",
            "spec.yaml:5:20",
            "executor.adapt.minimum: Input should be greater than or equal to 1",
        ),
        (
            "  kind: distributed\n  address: tcp://h:8786\n  adapt: {maximum: 2}\n",
            "spec.yaml:5:10",
            "executor.adapt: adapt scales a cluster pipeflow starts",
        ),
        (
            "  kind: processes\n  adapt: {maximum: 2}\n",
            "spec.yaml:4:10",
            "executor.adapt: adapt is only used by kind 'distributed'",
        ),
    ],
)
def test_a_bad_cluster_setting_is_named_at_its_line(executor: str, where: str, says: str) -> None:
    location, message = _problem(executor)
    assert location == where, message
    assert message.startswith(says), message

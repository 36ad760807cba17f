"""The registry side of the serving fleet: a guarded rollback happens once however many replicas
ask, blocks the version it removed until a person forces it back, and fleet events form one
straight chain with one record per decision."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipeflow.errors import GateFailed
from pipeflow.registry import Registry, alias_stack
from pipeflow.store.artifacts import ArtifactStore

X = np.random.default_rng(0).normal(size=(60, 3))
Y = (X[:, 0] > 0).astype(int)
GUARD = {"limits": {"min_accuracy": 0.9}, "measurements": {"accuracy": 0.1, "labelled": 40}}


def _two_versions(root: str) -> Registry:
    store = ArtifactStore(root)
    reg = Registry(store)
    for c in (1.0, 2.0):
        ref = store.save(LogisticRegression(C=c).fit(X, Y), "model")
        record = reg.register("m", ref, metrics={"accuracy": 0.9})
        reg.move_alias("m", "production", record["version"])
    return reg


def _replica_rolls_back(root: str, barrier, results) -> None:  # noqa: ANN001 (multiprocessing)
    reg = Registry(ArtifactStore(root))
    barrier.wait()
    event = reg.rollback("m", "production", reason="guard", only_from=2, guard=GUARD)
    results.put(None if event is None else event["seq"])


def test_of_three_replicas_rolling_back_at_once_one_writes_and_the_others_do_nothing(
    tmp_path: Path,
) -> None:
    root = str(tmp_path / "store")
    _two_versions(root)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_replica_rolls_back, args=(root, barrier, results)) for _ in "abc"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    outcomes = sorted((results.get(timeout=5) for _ in procs), key=lambda s: s is None)
    assert outcomes == [3, None, None]
    reg = Registry(ArtifactStore(root))
    history = reg.history("m", "production")
    assert alias_stack(history) == [1]
    assert [e["action"] for e in history] == ["promote", "promote", "rollback"]
    assert history[-1]["guard"] == GUARD and history[-1]["from_version"] == 2


def test_a_version_the_guard_rolled_back_is_refused_until_a_person_forces_it(tmp_path) -> None:
    reg = _two_versions(str(tmp_path / "store"))
    reg.rollback("m", "production", reason="guard: live accuracy 0.1 < 0.9", guard=GUARD)
    assert reg.blocked("m", "production", 2)["seq"] == 3
    assert reg.blocked("m", "staging", 2) is None  # only from the alias it failed on
    with pytest.raises(GateFailed) as refused:
        reg.move_alias("m", "production", 2, reason="try again")
    message = str(refused.value)
    assert "m@2 was rolled back from 'production' by the serving guard" in message
    assert "live accuracy 0.1 < 0.9" in message and "--force" in message
    assert refused.value.gates[0]["kind"] == "rollback" and not refused.value.gates[0]["passed"]
    assert reg.holder("m", "production") == 1  # untouched
    forced = reg.move_alias("m", "production", 2, reason="fixed upstream", force=True)
    assert forced["force"] is True and reg.blocked("m", "production", 2) is None
    # a rollback a person asks for (no guard) blocks nothing
    reg.rollback("m", "production", reason="by hand")
    assert reg.move_alias("m", "production", 2)["to_version"] == 2


def test_a_rollback_only_from_a_version_that_no_longer_holds_the_alias_writes_nothing(
    tmp_path,
) -> None:
    reg = _two_versions(str(tmp_path / "store"))
    assert reg.rollback("m", "production", only_from=1, guard=GUARD) is None
    assert len(reg.history("m", "production")) == 2


def test_fleet_events_are_numbered_and_a_decision_already_recorded_is_not_repeated(
    tmp_path,
) -> None:
    reg = _two_versions(str(tmp_path / "store"))
    assert reg.fleet_events("m") == []

    def same(events: list[dict]) -> bool:
        return any(e["event"] == "canary_withdrawn" and e["version"] == 2 for e in events)

    first = reg.record_fleet_event("m", {"event": "canary_withdrawn", "version": 2}, unless=same)
    again = reg.record_fleet_event("m", {"event": "canary_withdrawn", "version": 2}, unless=same)
    other = reg.record_fleet_event("m", {"event": "canary_withdrawn", "version": 1})
    assert first["seq"] == 1 and again is None and other["seq"] == 2
    assert [e["seq"] for e in reg.fleet_events("m")] == [1, 2]
    assert [e["seq"] for e in reg.fleet_events("m", after=1)] == [2]
    assert (tmp_path / "store" / "registry" / "m" / "fleet" / "2.json").is_file()

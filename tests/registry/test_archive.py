"""Archived versions (``pipeflow models archive``): kept and readable, never promoted, rolled
back onto or served until restored; the archive's history is a chain of events, never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeflow.errors import ArchivedVersion, GateFailed, RegistryError
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """``m`` with versions 1..3 (stored JSON "models": enough for the registry's bookkeeping)."""
    store = ArtifactStore(str(tmp_path / "store"))
    reg = Registry(store)
    for n in (1, 2, 3):
        reg.register("m", store.save({"model": n}, "model"))
    return reg


def test_an_archived_version_is_kept_readable_and_listed(registry: Registry) -> None:
    event = registry.archive("m", 2, reason="superseded", user="ann")
    assert event["action"] == "archive" and event["seq"] == 1
    assert set(registry.archived("m")) == {2}
    model, record = registry.load_model("m", 2)  # kept: still loads for inspection
    assert model == {"model": 2} and record["version"] == 2
    with pytest.raises(ArchivedVersion, match=r"m@2 is archived \(by ann at .*: superseded\)"):
        registry.servable("m", 2)
    assert registry.servable("m", 3)[1]["version"] == 3


def test_promotion_to_an_archived_version_fails_its_archived_gate(registry: Registry) -> None:
    registry.archive("m", 2)
    with pytest.raises(GateFailed, match="m@2 not promoted to 'production': it is archived") as err:
        registry.move_alias("m", "production", 2)
    assert [g["kind"] for g in err.value.gates] == ["archived"]
    assert registry.aliases("m") == {}


def test_a_version_holding_an_alias_cannot_be_archived(registry: Registry) -> None:
    registry.move_alias("m", "production", 1)
    registry.move_alias("m", "staging", 1)
    with pytest.raises(RegistryError, match="m@1 holds alias 'production', 'staging'"):
        registry.archive("m", 1)
    assert registry.archive_events("m") == []


def test_rollback_onto_an_archived_version_is_refused(registry: Registry) -> None:
    registry.move_alias("m", "production", 1)
    registry.move_alias("m", "production", 2)
    registry.archive("m", 1)
    with pytest.raises(ArchivedVersion, match="cannot roll 'm@production' back to v1"):
        registry.rollback("m", "production")
    assert registry.holder("m", "production") == 2


def test_restore_undoes_archive_and_both_stay_in_the_history(registry: Registry) -> None:
    registry.archive("m", 3)
    with pytest.raises(RegistryError, match="m@3 is archived"):
        registry.archive("m", 3)
    registry.restore("m", 3, reason="needed again")
    assert registry.archived("m") == {}
    assert [e["action"] for e in registry.archive_events("m")] == ["archive", "restore"]
    registry.move_alias("m", "production", 3)
    assert registry.holder("m", "production") == 3
    with pytest.raises(RegistryError, match="m@2 is not archived: nothing to restore"):
        registry.restore("m", 2)


def test_archiving_an_unknown_version_names_the_known_ones(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"model 'm' has no version 9 \(versions: 1, 2, 3\)"):
        registry.archive("m", 9)

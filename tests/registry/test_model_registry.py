"""The model registry: versions, alias history as a stack, races, and refusing bad model files."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, pipeflow
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from pipeflow.errors import GateFailed, RegistryError
from pipeflow.registry import Registry, alias_stack, parse_ref
from pipeflow.registry.gates import (
    champion_gate,
    describe_failures,
    parse_gate,
    threshold_gates,
)
from pipeflow.store.artifacts import ArtifactStore

X = np.random.default_rng(0).normal(size=(60, 3))
Y = (X[:, 0] > 0).astype(int)


def fitted(c: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=c).fit(X, Y)


def add(
    store: ArtifactStore, registry: Registry, c: float, accuracy: float, name: str = "m"
) -> dict:
    ref = store.save(fitted(c), "model")
    return registry.register(name, ref, metrics={"accuracy": accuracy})


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


def test_the_same_model_with_a_changed_declaration_is_a_new_version_carrying_it(store) -> None:
    reg = Registry(store)
    ref = store.save(fitted(1.0), "model")
    declared = ("mitigation", "business")
    cost = {"cost": {"1": {"0": 5.0}}, "value_per_correct": np.float64(0.25)}
    v1 = reg.register("m", ref, declared=declared, business=cost)
    again = reg.register("m", ref, declared=declared, business=dict(cost))
    dearer = {**cost, "cost": {"1": {"0": 9.0}}}
    v2 = reg.register("m", ref, declared=declared, business=dearer)
    thresholds = {"attribute": "region", "thresholds": {"north": 0.4}}
    v3 = reg.register("m", ref, declared=declared, business=dearer, mitigation=thresholds)
    assert (v1["version"], again["version"], again["existing"]) == (1, 1, True)
    assert (v2["version"], v3["version"]) == (2, 3) and "existing" not in v3
    assert reg.version("m", 2)["business"]["cost"] == {"1": {"0": 9.0}}
    assert reg.version("m", 3)["mitigation"] == thresholds
    assert {v["model"]["digest"] for v in reg.versions("m")} == {ref.digest}  # one file
    # undeclared fields (metrics, run) never split a version: a re-run stays one version
    rerun = reg.register(
        "m",
        ref,
        declared=declared,
        business=dearer,
        mitigation=thresholds,
        metrics={"accuracy": 0.5},
    )
    assert rerun["version"] == 3 and rerun["existing"] is True


def test_versions_are_numbered_and_the_same_model_is_not_registered_twice(store) -> None:
    reg = Registry(store)
    v1 = add(store, reg, 1.0, 0.9)
    v2 = add(store, reg, 2.0, 0.91)
    again = add(store, reg, 1.0, 0.9)
    assert (v1["version"], v2["version"]) == (1, 2)
    assert again["version"] == 1 and again["existing"] is True
    assert [v["version"] for v in reg.versions("m")] == [1, 2]
    assert reg.models() == ["m"]
    assert (
        v1["trusted_types"] == []
    )  # a plain LogisticRegression needs nothing beyond skops' defaults
    model, record = reg.load_model("m", 2)
    assert record["version"] == 2 and model.C == 2.0


def test_rollback_after_two_promotions_restores_the_previous_holder(store) -> None:
    reg = Registry(store)
    for c in (1.0, 2.0, 3.0):
        add(store, reg, c, 0.9)
    reg.move_alias("m", "production", 1, reason="first")
    reg.move_alias("m", "production", 2, reason="better")
    assert reg.holder("m", "production") == 2
    event = reg.rollback("m", "production", reason="complaints")
    assert (event["from_version"], event["to_version"]) == (2, 1)
    assert reg.holder("m", "production") == 1
    assert reg.resolve("m", "production")["version"] == 1
    with pytest.raises(RegistryError, match="no earlier holder"):
        reg.rollback("m", "production")
    history = reg.history("m", "production")
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
    ]
    assert [e["reason"] for e in history] == ["first", "better", "complaints"]
    assert all(e["user"] and e["time"] for e in history)


def test_alias_stack_replays_pushes_and_pops() -> None:
    events = [
        {"action": "promote", "to_version": 1},
        {"action": "promote", "to_version": 2},
        {"action": "promote", "to_version": 2},  # re-promoting the holder changes nothing
        {"action": "promote", "to_version": 3},
        {"action": "rollback", "to_version": 2},
    ]
    assert alias_stack(events) == [1, 2]


def test_unknown_names_and_traversal_are_refused_with_clear_errors(store) -> None:
    reg = Registry(store)
    add(store, reg, 1.0, 0.9, name="claims")
    with pytest.raises(RegistryError, match="did you mean 'claims'"):
        reg.resolve("claim")
    with pytest.raises(RegistryError, match="has no version 7"):
        reg.resolve("claims", 7)
    with pytest.raises(RegistryError, match="has no alias 'production'"):
        reg.resolve("claims", "production")
    for bad in ("../evil", "a/b", "", ".hidden", "x" * 101):
        with pytest.raises(RegistryError, match="invalid model name"):
            reg.versions(bad)
    with pytest.raises(RegistryError, match="invalid alias"):
        reg.move_alias("claims", "../../etc", 1)
    assert not (Path(store.root).parent / "etc").exists()
    assert parse_ref("claims@production") == ("claims", "production")
    with pytest.raises(RegistryError):
        parse_ref("claims@")


def _object_path(store: ArtifactStore, record: dict) -> Path:
    return Path(store.object_path(record["model"]["digest"]))


def test_tampered_or_truncated_model_files_are_refused(store) -> None:
    reg = Registry(store)
    record = add(store, reg, 1.0, 0.9)
    path = _object_path(store, record)
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(RegistryError, match="refusing to load model m@1.*corrupt"):
        reg.load_model("m", 1)
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))
    with pytest.raises(RegistryError, match="corrupt"):
        reg.load_model("m", 1)
    path.write_bytes(original)
    assert reg.load_model("m", 1)[0].C == 1.0


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ({"codec": "pickle"}, "codec 'pickle', which pipeflow does not read (known codecs: bytes,"),
        (None, "its 'model' entry is not a digest, codec, kind and size"),
    ],
    ids=["unknown-codec", "no-model-entry"],
)
def test_a_version_record_edited_to_what_no_codec_reads_is_a_registry_error_naming_it(
    store: ArtifactStore, tmp_path: Path, model: dict | None, said: str
) -> None:
    reg = Registry(store)
    add(store, reg, 1.0, 0.9)
    file = Path(store.path("registry/m/versions/1.json"))
    record = json.loads(file.read_text())
    record["model"] = None if model is None else {**record["model"], **model}
    file.write_text(json.dumps(record))
    with pytest.raises(RegistryError) as err:
        reg.load_model("m", 1)
    assert str(err.value).startswith(f"refusing to load model m@1: {file}: ") and said in str(
        err.value
    )

    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c\n1,2,3\n")
    cli = pipeflow(
        ["predict", "m@1", "-i", rows, "-o", tmp_path / "out.csv", "--store", store.root]
    )
    assert cli.returncode == 1 and str(file) in one_line_error(cli.stderr)


class Smuggled:
    """A type outside pipeflow's allow-list: loading it would mean trusting the file."""


def _with_foreign_type(data: bytes) -> bytes:
    """A skops file whose schema names a type pipeflow does not trust."""
    src = zipfile.ZipFile(io.BytesIO(data))
    files = {n: src.read(n) for n in src.namelist()}
    schema = json.loads(files["schema.json"])
    schema["__class__"] = "Smuggled"
    schema["__module__"] = __name__
    files["schema.json"] = json.dumps(schema).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name, content in files.items():
            dst.writestr(name, content)
    return out.getvalue()


def test_a_model_file_cannot_trust_its_own_types(store) -> None:
    reg = Registry(store)
    record = add(store, reg, 1.0, 0.9)
    crafted = _with_foreign_type(store.get(record["model"]["digest"]))
    digest = store.put(crafted)
    # the attacker also rewrites the version record to point at the crafted file and trust it
    entry = Path(store.root) / "registry" / "m" / "versions" / "1.json"
    forged = json.loads(entry.read_text())
    forged["model"]["digest"] = digest
    forged["model"]["size"] = len(crafted)
    forged["trusted_types"] = [f"{__name__}.Smuggled"]
    entry.write_text(json.dumps(forged))
    with pytest.raises(RegistryError, match="not recorded when it was registered|Smuggled"):
        reg.load_model("m", 1)
    # and such a file is never registered in the first place
    from pipeflow.store.artifacts import ArtifactRef

    with pytest.raises(RegistryError, match="outside pipeflow's allow-list"):
        reg.register("other", ArtifactRef(digest, "skops", "model", len(crafted)))
    assert hashlib.sha256(crafted).hexdigest() == digest


def test_a_tree_model_records_the_types_it_needs(store) -> None:
    reg = Registry(store)
    ref = store.save(DecisionTreeClassifier(max_depth=2).fit(X, Y), "model")
    record = reg.register("tree", ref)
    assert all(t.startswith("sklearn.") for t in record["trusted_types"])
    assert reg.load_model("tree")[0].get_depth() <= 2


def test_gates_parse_compare_and_name_both_numbers() -> None:
    assert parse_gate("accuracy", ">= 0.94") == (">=", 0.94)
    assert parse_gate("rmse", "<1e3") == ("<", 1000.0)
    assert parse_gate("accuracy", 0.9) == (">=", 0.9)
    for bad in ("about 0.9", ">= x", True, "=> 0.9"):
        with pytest.raises(ValueError, match="expected a comparison"):
            parse_gate("accuracy", bad)
    metrics = {"accuracy": 0.93, "rmse": 4.0, "slices": {"region": {"north": {"accuracy": 0.8}}}}
    gates = threshold_gates(
        metrics, {"accuracy": ">= 0.94", "slices.region.north.accuracy": "> 0.7", "f1": 0.5}
    )
    assert [g["passed"] for g in gates] == [False, True, False]
    message = describe_failures(gates)
    assert "accuracy is 0.93, needed >= 0.94" in message and "'f1' was not recorded" in message
    # champion: accuracy higher is better, rmse lower is better
    worse = champion_gate(
        {"accuracy": 0.90}, {"accuracy": 0.95}, metric="accuracy", margin=0.02, holder="v1"
    )
    assert not worse["passed"] and worse["threshold"] == pytest.approx(0.93)
    within = champion_gate({"rmse": 4.1}, {"rmse": 4.0}, metric="rmse", margin=0.2, holder="v1")
    assert within["passed"] and within["op"] == "<="
    first = champion_gate({"accuracy": 0.5}, None, metric="accuracy", margin=0.0, holder=None)
    assert first["passed"] and "no current holder" in first["detail"]


def test_a_failed_gate_check_leaves_the_alias_untouched(store) -> None:
    reg = Registry(store)
    add(store, reg, 1.0, 0.95)
    add(store, reg, 2.0, 0.80)
    reg.move_alias("m", "production", 1)

    def champion(holder):
        gate = champion_gate(
            reg.version("m", 2)["metrics"],
            reg.version("m", holder)["metrics"],
            metric="accuracy",
            margin=0.01,
            holder=f"v{holder}",
        )
        if not gate["passed"]:
            raise GateFailed(describe_failures([gate]), [gate])
        return [gate]

    with pytest.raises(GateFailed, match="accuracy is 0.8, needed >= 0.94"):
        reg.move_alias("m", "production", 2, check=champion)
    assert reg.holder("m", "production") == 1
    assert len(reg.history("m", "production")) == 1


def _promote_worker(root: str, c: float, barrier) -> None:
    store = ArtifactStore(root)
    reg = Registry(store)
    record = reg.register("m", store.save(fitted(c), "model"), metrics={"accuracy": 0.9})
    barrier.wait()
    reg.move_alias("m", "production", record["version"], reason=f"C={c}")


def test_concurrent_promotions_leave_a_straight_history(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_promote_worker, args=(root, c, barrier)) for c in (1, 2, 3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = Registry(ArtifactStore(root))
    assert [v["version"] for v in reg.versions("m")] == [1, 2, 3, 4]
    history = reg.history("m", "production")
    assert [e["seq"] for e in history] == [1, 2, 3, 4]
    assert history[0]["from_version"] is None
    for before, after in zip(history, history[1:], strict=False):
        assert after["from_version"] == before["to_version"]  # a straight chain
    assert sorted(e["to_version"] for e in history) == [1, 2, 3, 4]
    assert reg.holder("m", "production") == history[-1]["to_version"]


def test_exclusive_create_survives_the_store_being_deleted_in_between(tmp_path: Path) -> None:
    import shutil

    store = ArtifactStore(str(tmp_path / "store"))
    assert store.create_exclusive("registry/m/versions/1.json", b"{}")
    shutil.rmtree(tmp_path / "store")  # a notebook user deletes the store between two runs
    assert store.create_exclusive("registry/m/versions/1.json", b"{}")
    assert not store.create_exclusive("registry/m/versions/1.json", b"{}")
